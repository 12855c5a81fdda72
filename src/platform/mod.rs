//! Platform glue: the Worker's fetch entry point, shared helpers for env and outbound fetch.

pub mod admin;
pub mod edge;
pub mod object;
pub mod relay;
pub mod store;

use std::time::Duration;

use futures_util::future::{select, Either};
use worker::*;

use crate::policy::health::regions::Region;

use crate::policy::access::prefix::{self, Reserved};
use crate::policy::control::config::Deployment;
use crate::policy::traffic::forwarding::{host_and_path, UrlParts};

/// The Durable Object namespace binding that holds one object per hostname.
pub const BALANCER_BINDING: &str = "BALANCER";

/// Takes the runtime's own Request: a workers-rs Request reads `request.cf` on construction,
/// which the balanced path needs only for geo steering (measured: ~50 µs a request).
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> Result<web_sys::Response> {
    let url = req.url();
    let (host, path) = host_and_path(&url);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let path = path.to_string();
    let own_host = admin::routes::is_admin_host(&host, &env);
    // The prefix is served on the Worker's own hostnames and on the balanced hostnames the
    // operator listed; everywhere else every path, variants included, goes to the backends.
    let reserved = if own_host || admin::routes::prefix_enabled(&host, &env) {
        prefix::classify(&path)
    } else {
        Reserved::Outside
    };
    let result = if let Reserved::Exact(rest) = reserved {
        admin::routes::handle(req.into(), &env, rest)
            .await
            .map(Into::into)
    } else if reserved == Reserved::Variant {
        error_response(
            404,
            &format!(
                "path: {path:?} is a variant spelling of the reserved prefix; the admin surface is only at {}/ (exact spelling)",
                prefix::RESERVED_PREFIX
            ),
            None,
        )
        .map(Into::into)
    } else if own_host {
        admin::routes::handle(req.into(), &env, &path)
            .await
            .map(Into::into)
    } else if let Some(r) = store::registry::unserved(&env, &host).await {
        // Answered here: an unknown hostname must not create a Durable Object.
        error_response(r.status, &r.message, r.retry_after_s).map(Into::into)
    } else {
        edge::balance::balance(req, &env, &ctx, &host).await
    };
    // An error must never become the runtime's exception page, nor show a client what went
    // wrong inside (a storage or runtime message): that goes to the log.
    result.or_else(|e| {
        console_error!("{host}{path}: {e}");
        error_response(
            502,
            "FlowBalance internal error; the detail is in the Worker's log",
            None,
        )
        .map(Into::into)
    })
}

/// The Durable Object of a balanced hostname.
pub fn object_stub(env: &Env, host: &str) -> Result<Stub> {
    object_stub_at(env, host, store::registry::location_hint(env, host))
}

/// The hostname's object, created (when it does not exist yet) near `hint`: Cloudflare applies a
/// location hint only when it creates the object, and ignores it afterwards.
pub fn object_stub_at(env: &Env, host: &str, hint: Option<Region>) -> Result<Stub> {
    let ns = env.durable_object(BALANCER_BINDING)?;
    match hint {
        Some(region) => ns.get_by_name_with_location_hint(host, region.as_str()),
        None => ns.id_from_name(host)?.get_stub(),
    }
}

/// The clock in ms: `Date.now()`, without the Date object workers-rs's `Date::now()` makes.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// 32 bytes from the runtime's CSPRNG (zeros only if the runtime had none, which workerd always has).
pub fn random_bytes() -> [u8; 32] {
    use worker::wasm_bindgen::JsCast;
    let mut buf = [0u8; 32];
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    if let Ok(crypto) = scope.crypto() {
        let _ = crypto.get_random_values_with_u8_array(&mut buf);
    }
    buf
}

/// A JSON error body with a message a client can act on.
pub fn error_response(status: u16, message: &str, retry_after_s: Option<u64>) -> Result<Response> {
    let body = serde_json::json!({ "error": message, "status": status });
    let mut resp = Response::from_json(&body)?.with_status(status);
    if let Some(s) = retry_after_s {
        resp.headers_mut().set("retry-after", &s.to_string())?;
    }
    Ok(resp)
}

/// What configs are checked against here: the admin hostname and the hostnames balanced by
/// DEFAULT_BACKENDS (`registered` adds those created through the API).
pub fn deployment(env: &Env, registered: Vec<String>) -> Deployment {
    let mut ctx = store::registry::defaults(env).deployment.clone();
    ctx.balanced.extend(registered);
    ctx
}

/// A string binding (a `[vars]` entry, a `.dev.vars` value or a secret); empty counts as unset.
pub fn env_string(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Why an outbound fetch produced no response.
#[derive(Debug, Clone)]
pub enum FetchFailure {
    Timeout,
    Network(String),
    /// An interim (1xx) or out-of-range status: no final answer a client can be given.
    InvalidStatus(u16),
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::Timeout => write!(f, "timed out"),
            FetchFailure::Network(m) => write!(f, "{m}"),
            FetchFailure::InvalidStatus(s) => {
                write!(f, "invalid status {s} (not a final HTTP status)")
            }
        }
    }
}

/// How far a fetch's deadline reaches.
#[derive(Clone, Copy, Debug)]
pub enum Deadline<'a> {
    /// The response headers; the response body then streams unbounded (a client's download
    /// takes as long as it takes), and the timer does nothing once the headers are in. With a
    /// streamed upload's progress (`fb_watch_upload`), the wait counts from the upload's last
    /// movement instead: an upload that keeps moving, or waits on the client, never times
    /// out; one the backend stops taking does, as does a backend that sends no headers within
    /// the timeout of the upload's end.
    Headers(Option<&'a wasm_bindgen::JsValue>),
    /// The whole exchange, body included: FlowBalance's own calls (probes, webhooks, DNS,
    /// sign-in), whose bodies it reads itself and must not wait on forever.
    Whole,
}

/// Fetches with a deadline for the whole exchange (see [`Deadline::Whole`]).
/// Calls the runtime's `fetch` directly and checks the status before anything else: workers-rs
/// panics (taking the whole instance down) on a Response whose status is outside 200..=599.
/// The timer lives inside the runtime: no Rust closure per request.
pub async fn fetch_raw(
    req: &web_sys::Request,
    timeout_ms: u64,
) -> std::result::Result<web_sys::Response, FetchFailure> {
    settle(fb_fetch(
        req.as_ref(),
        None,
        None,
        None,
        timeout_ms as f64,
        true,
        None,
    ))
    .await
}

/// [`fetch_raw`] of `url` with `method`, `headers` and `body`, redirects not followed, with
/// `deadline`: one call into the runtime builds the request, arms the timeout and fetches (no
/// Request object made in between, no RequestInit built field by field).
pub async fn fetch_url(
    url: &str,
    method: &str,
    headers: &web_sys::Headers,
    body: Option<wasm_bindgen::JsValue>,
    timeout_ms: u64,
    deadline: Deadline<'_>,
) -> std::result::Result<web_sys::Response, FetchFailure> {
    let (whole, progress) = match deadline {
        Deadline::Headers(progress) => (false, progress),
        Deadline::Whole => (true, None),
    };
    settle(fb_fetch(
        &wasm_bindgen::JsValue::from_str(url),
        Some(method.to_string()),
        Some(headers),
        body,
        timeout_ms as f64,
        whole,
        progress,
    ))
    .await
}

async fn settle(fetched: js_sys::Promise) -> std::result::Result<web_sys::Response, FetchFailure> {
    use wasm_bindgen::JsCast;
    match js_sys::futures::JsFuture::from(fetched).await {
        Ok(v) => {
            let resp: web_sys::Response = v.unchecked_into();
            let status = resp.status();
            if (200..=599).contains(&status) {
                Ok(resp)
            } else {
                cancel_body(&resp);
                Err(FetchFailure::InvalidStatus(status))
            }
        }
        // `fb_fetch` rejects with null when its deadline passed.
        Err(e) if e.is_null() => Err(FetchFailure::Timeout),
        Err(e) => Err(FetchFailure::Network(js_message(&e))),
    }
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
// `whole`: the deadline covers the body too (AbortSignal.timeout); otherwise only the response
// headers: once they are in, the timer is left to fire as a no-op rather than cleared
// (`clearTimeout` cost about 15 µs a request; the runtime drops a request's timers with it).
// `upload`: a streamed upload's progress; the deadline then counts from its last movement, and
// not while it waits on the client.
export function fb_fetch(input, method, headers, body, ms, whole, upload) {
  let signal;
  let settled = false;
  if (whole) {
    signal = AbortSignal.timeout(ms);
  } else {
    const controller = new AbortController();
    signal = controller.signal;
    const check = () => {
      if (settled) return;
      const left = upload === undefined ? 0 : upload.client && !upload.done ? ms : upload.at + ms - Date.now();
      if (left > 0) setTimeout(check, left);
      else controller.abort();
    };
    setTimeout(check, ms);
  }
  const init = method === undefined ? { signal } : { method, headers, body, redirect: "manual", signal };
  return fetch(input, init).then(
    (resp) => {
      settled = true;
      return resp;
    },
    (e) => {
      settled = true;
      throw signal.aborted ? null : e;
    },
  );
}
"#)]
extern "C" {
    /// `fetch(input, init)` with a deadline; rejects with null when the deadline passed.
    fn fb_fetch(
        input: &wasm_bindgen::JsValue,
        method: Option<String>,
        headers: Option<&web_sys::Headers>,
        body: Option<wasm_bindgen::JsValue>,
        ms: f64,
        whole: bool,
        upload: Option<&wasm_bindgen::JsValue>,
    ) -> js_sys::Promise;
}

/// Lets go of a response body nobody will read, so the connection is not held open for it.
pub fn cancel_body(resp: &web_sys::Response) {
    if let Some(body) = resp.body() {
        let _ = body.cancel();
    }
}

/// The message of a thrown JS value.
pub fn js_message(e: &wasm_bindgen::JsValue) -> String {
    use wasm_bindgen::JsCast;
    match e.dyn_ref::<js_sys::Error>() {
        Some(err) => String::from(err.message()),
        None => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    }
}

/// [`fetch_raw`] as a workers-rs Response (safe to build: the status was checked).
pub async fn fetch_with_timeout(
    req: Request,
    timeout_ms: u64,
) -> std::result::Result<Response, FetchFailure> {
    fetch_raw(req.inner(), timeout_ms).await.map(Response::from)
}

/// True when the backend actively refuses a TCP connection within `timeout_ms`.
pub async fn refuses_connections(backend_url: &str, timeout_ms: u64) -> bool {
    let url = UrlParts::of(backend_url);
    let port = url.port_or_default();
    let host = url
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let Ok(mut socket) = Socket::builder().connect(host, port) else {
        return true;
    };
    let refused = {
        let opened = socket.opened();
        let timer = Delay::from(Duration::from_millis(timeout_ms));
        futures_util::pin_mut!(opened);
        futures_util::pin_mut!(timer);
        // A timeout is not a refusal: the backend may just be slow to accept.
        matches!(select(opened, timer).await, Either::Left((Err(_), _)))
    };
    let _ = socket.close().await;
    refused
}
