//! The balanced request path: ask the hostname's Durable Object for a decision, forward to the backend, fail over, report outcomes.

use std::cell::RefCell;
use std::collections::HashMap;

use wasm_bindgen::JsValue;
use worker::url;
use worker::*;

use crate::platform::requestlog::{self, LogRow};
use crate::platform::{
    error_response, fetch_with_timeout, object_stub, refuses_connections, FetchFailure,
};
use crate::policy::affinity;
use crate::policy::decision::{Outcome, Route, Verdict};
use crate::policy::forwarding::{
    backend_url, connection_tokens, forwarded_for, host_and_path, path_and_query, HOP_BY_HOP,
};
use crate::policy::retry::{
    backoff_ms, is_failure_status, is_idempotent, may_retry, status_means_unreached, Failure,
    REPLAY_BODY_CAP,
};
use crate::policy::rng::SplitMix64;

/// Successes not yet reported for one hostname.
#[derive(Default)]
struct SuccessTally {
    /// Per backend URL: (successful requests, summed latency in ms).
    by_url: HashMap<String, (u32, u64)>,
    count: u32,
    since_ms: u64,
}

/// Successes are sent with a decision once this many have piled up or this much time passed:
/// one small JSON message per batch instead of per request.
const SUCCESS_BATCH: u32 = 32;
const SUCCESS_BATCH_MS: u64 = 250;

impl SuccessTally {
    fn into_outcomes(self) -> Vec<Outcome> {
        self.by_url
            .into_iter()
            .map(|(url, (count, latency_sum))| Outcome {
                url,
                failure: None,
                latency_ms: latency_sum / u64::from(count.max(1)),
                trial: false,
                retry: false,
                count,
            })
            .collect()
    }
}

/// Takes the hostname's pending successes: all of them when `force`, else only a due batch.
fn take_successes(host: &str, force: bool) -> Vec<Outcome> {
    let now = Date::now().as_millis();
    PENDING_OK.with(|p| {
        let mut p = p.borrow_mut();
        let due = p.get(host).is_some_and(|t| {
            force || t.count >= SUCCESS_BATCH || now.saturating_sub(t.since_ms) >= SUCCESS_BATCH_MS
        });
        if due {
            p.remove(host)
                .map(SuccessTally::into_outcomes)
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    })
}

thread_local! {
    /// Successful outcomes per hostname, batched here and carried on the next decision request,
    /// so a healthy request costs no extra Durable Object round trip.
    static PENDING_OK: RefCell<HashMap<String, SuccessTally>> = RefCell::new(HashMap::new());
    /// The request header that keys header affinity, per hostname, as the last decision said.
    static AFFINITY_HEADER: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    static RNG: RefCell<SplitMix64> = RefCell::new(SplitMix64(Date::now().as_millis()));
}

/// The request body in a form that can be sent once or, when buffered, many times.
enum Body {
    None,
    Buffered(Vec<u8>),
    Stream(Option<web_sys::ReadableStream>),
}

impl Body {
    fn replayable(&self) -> bool {
        !matches!(self, Body::Stream(_))
    }

    /// The body for the next attempt; a stream can be handed out once only.
    fn take(&mut self) -> Option<JsValue> {
        match self {
            Body::None => None,
            Body::Buffered(bytes) => Some(js_sys::Uint8Array::from(bytes.as_slice()).into()),
            Body::Stream(s) => s.take().map(Into::into),
        }
    }
}

pub async fn balance(mut req: Request, env: &Env, ctx: &Context, host: &str) -> Result<Response> {
    let stub = object_stub(env, host)?;
    let verdict = decide(&stub, &req, host).await?;
    let route = match verdict {
        Verdict::Route(route) => route,
        Verdict::Reject(r) => return error_response(r.status, &r.message, r.retry_after_s),
    };
    let method = req.inner().method();
    let body = read_body(&mut req, &method).await?;
    let url = req.inner().url();
    let https = url.starts_with("https:");
    let headers = outbound_headers(&req, host, https)?;
    let pq = path_and_query(&url).to_string();
    let started = Date::now().as_millis();
    let path = host_and_path(&url).1.to_string();
    let log_method = method.clone();
    let (resp, backend, attempts) = forward(ForwardCtx {
        env,
        https,
        ctx,
        host,
        method,
        pq,
        headers,
        body,
        route,
    })
    .await?;
    requestlog::record(
        env,
        ctx,
        LogRow {
            ts_ms: started,
            hostname: host.to_string(),
            method: log_method,
            path,
            status: resp.status_code(),
            backend,
            attempts: attempts as u32,
            latency_ms: Date::now().as_millis().saturating_sub(started),
        },
    );
    Ok(resp)
}

struct ForwardCtx<'a> {
    env: &'a Env,
    https: bool,
    ctx: &'a Context,
    host: &'a str,
    method: String,
    pq: String,
    headers: web_sys::Headers,
    body: Body,
    route: Route,
}

/// Forwards with failover; returns the response and the backend that produced it (if any) and how many attempts were made.
async fn forward(mut f: ForwardCtx<'_>) -> Result<(Response, Option<String>, usize)> {
    let mut conn_left = f.route.conn_retries;
    let mut resp_left = f.route.retries;
    let mut reports: Vec<Outcome> = Vec::new();
    let mut last_failure = String::new();
    let attempts = f.route.attempts.clone();
    for (n, attempt) in attempts.iter().enumerate() {
        let has_next = n + 1 < attempts.len();
        let started = Date::now().as_millis();
        let outbound = build_request(&attempt.url, &f.pq, &f.method, &f.headers, f.body.take())?;
        let result = fetch_with_timeout(outbound, f.route.timeout_ms).await;
        let latency_ms = Date::now().as_millis().saturating_sub(started);
        let outcome = |failure: Option<String>| Outcome {
            url: attempt.url.clone(),
            failure,
            latency_ms,
            trial: attempt.trial,
            retry: n > 0,
            count: 1,
        };
        let failure = match &result {
            Ok(resp) if status_means_unreached(resp.status_code()) => Failure::Connect,
            Ok(resp) if is_failure_status(resp.status_code()) => {
                Failure::Status(resp.status_code())
            }
            Ok(_) => {
                let resp = result.map_err(|e| Error::RustError(e.to_string()))?;
                record_success(f.host, outcome(None), &mut reports);
                flush_reports(f.env, f.ctx, f.host, reports);
                let resp = finish(resp, &f.route, attempt.pin.as_deref(), f.https)?;
                return Ok((resp, Some(attempt.url.clone()), n + 1));
            }
            Err(FetchFailure::Timeout) => Failure::Timeout,
            Err(FetchFailure::Network(_)) => {
                classify_lost_connection(&f.method, &attempt.url, &f.body).await
            }
        };
        last_failure = match &result {
            Err(FetchFailure::Network(msg)) => format!("{}: {msg}", describe(&failure)),
            _ => describe(&failure),
        };
        reports.push(outcome(Some(last_failure.clone())));
        let budget = if matches!(failure, Failure::Connect) {
            &mut conn_left
        } else {
            &mut resp_left
        };
        let retry = has_next
            && *budget > 0
            && f.body.replayable()
            && may_retry(&f.method, &failure, f.body.replayable());
        if !retry {
            flush_reports(f.env, f.ctx, f.host, reports);
            return match result {
                // The backend answered: its own error page is the most faithful reply.
                Ok(resp) => Ok((
                    finish(resp, &f.route, attempt.pin.as_deref(), f.https)?,
                    Some(attempt.url.clone()),
                    n + 1,
                )),
                Err(_) => Ok((
                    all_failed(f.host, n + 1, &last_failure, f.route.panic)?,
                    None,
                    n + 1,
                )),
            };
        }
        *budget -= 1;
        let wait = RNG.with(|r| {
            backoff_ms(
                n as u32 + 1,
                &failure,
                f.route.immediate_failover,
                &mut *r.borrow_mut(),
            )
        });
        if wait > 0 {
            Delay::from(std::time::Duration::from_millis(wait)).await;
        }
    }
    flush_reports(f.env, f.ctx, f.host, reports);
    let resp = all_failed(f.host, attempts.len(), &last_failure, f.route.panic)?;
    Ok((resp, None, attempts.len()))
}

fn all_failed(host: &str, tried: usize, last: &str, panic: bool) -> Result<Response> {
    let mode = if panic {
        " (all backends were marked unhealthy; tried anyway)"
    } else {
        ""
    };
    error_response(
        503,
        &format!(
            "no backend of \"{host}\" could answer: {tried} attempt(s) failed, last: {last}{mode}"
        ),
        Some(5),
    )
}

fn describe(f: &Failure) -> String {
    match f {
        Failure::Connect => "connection failed".to_string(),
        Failure::Timeout => "timeout or connection lost".to_string(),
        Failure::Status(s) => format!("status {s}"),
    }
}

/// workerd reports a refused connection and one reset mid-request alike ("Network connection
/// lost"). Idempotent requests retry either way; for others, a backend that refuses a fresh TCP
/// connection right now did not take the request, while one that accepts it may have.
async fn classify_lost_connection(method: &str, url: &str, body: &Body) -> Failure {
    if is_idempotent(method) {
        return Failure::Connect;
    }
    if !body.replayable() {
        return Failure::Timeout; // cannot be resent anyway; no need to find out
    }
    if refuses_connections(url, 1000).await {
        Failure::Connect
    } else {
        Failure::Timeout
    }
}

/// Asks the hostname's Durable Object where this request goes. The facts travel in the URL
/// query (one string, no Headers object) and batched success reports ride along.
async fn decide(stub: &Stub, req: &Request, host: &str) -> Result<Verdict> {
    let incoming = req.headers();
    let mut query = format!("https://balancer/decide?h={}", enc(host));
    if let Some(ip) = incoming.get("cf-connecting-ip")? {
        query.push_str(&format!("&ip={}", enc(&ip)));
    }
    if let Some(cf) = req.cf() {
        if let Some(c) = cf.country() {
            query.push_str(&format!("&co={}", enc(&c)));
        }
        if let Some(c) = cf.continent() {
            query.push_str(&format!("&ct={}", enc(&c)));
        }
    }
    if let Some(cookie) = incoming.get("cookie")? {
        // The Worker does not know the service's cookie name; the DO picks its cookie out.
        query.push_str(&format!("&ck={}", enc(&cookie)));
    }
    let key_header = AFFINITY_HEADER.with(|a| a.borrow().get(host).cloned());
    let sent_key = key_header.is_some();
    if let Some(value) = key_header.and_then(|name| incoming.get(&name).ok().flatten()) {
        query.push_str(&format!("&k={}", enc(&value)));
    }
    let outcomes = take_successes(host, false);
    let base_len = query.len();
    if !outcomes.is_empty() {
        query.push_str(&format!("&ok={}", enc(&serde_json::to_string(&outcomes)?)));
    }
    let mut resp = stub.fetch_with_str(&query).await?;
    let mut verdict: Verdict = serde_json::from_str(&resp.text().await?)?;
    // Header affinity, first request of this instance: the header name was not known yet, so ask
    // once more with the key rather than let this client land on an arbitrary backend.
    if let Verdict::Route(Route {
        affinity_header: Some(name),
        ..
    }) = &verdict
    {
        if let (false, Some(value)) = (sent_key, incoming.get(name)?) {
            query.truncate(base_len);
            query.push_str(&format!("&k={}", enc(&value)));
            let mut again = stub.fetch_with_str(&query).await?;
            verdict = serde_json::from_str(&again.text().await?)?;
        }
    }
    if let Verdict::Route(route) = &verdict {
        // Header affinity: remember which request header keys this hostname's clients.
        AFFINITY_HEADER.with(|a| {
            let mut a = a.borrow_mut();
            match &route.affinity_header {
                Some(name) if a.get(host) != Some(name) => {
                    a.insert(host.to_string(), name.clone());
                }
                None if a.contains_key(host) => {
                    a.remove(host);
                }
                _ => {}
            }
        });
    }
    Ok(verdict)
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn record_success(host: &str, outcome: Outcome, reports: &mut Vec<Outcome>) {
    if outcome.trial || outcome.retry {
        // A trial decides a breaker, and a retry spends budget: report those at once.
        reports.push(outcome);
        return;
    }
    PENDING_OK.with(|p| {
        let mut p = p.borrow_mut();
        let tally = p.entry(host.to_string()).or_insert_with(|| SuccessTally {
            since_ms: Date::now().as_millis(),
            ..Default::default()
        });
        let entry = tally.by_url.entry(outcome.url).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += outcome.latency_ms;
        tally.count += 1;
    });
}

/// Failures and trials go to the Durable Object after the response, off the client's path.
fn flush_reports(env: &Env, ctx: &Context, host: &str, mut reports: Vec<Outcome>) {
    if reports.is_empty() {
        return;
    }
    // Earlier successes go first, so "consecutive failures" in the DO means consecutive.
    let mut earlier = take_successes(host, true);
    earlier.append(&mut reports);
    let reports = earlier;
    let Ok(body) = serde_json::to_string(&reports) else {
        return;
    };
    let host = host.to_string();
    let Ok(stub) = object_stub(env, &host) else {
        return;
    };
    ctx.wait_until(async move {
        let h = Headers::new();
        let _ = h.set("x-fb-host", &host);
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(h)
            .with_body(Some(JsValue::from_str(&body)));
        if let Ok(req) = Request::new_with_init("https://balancer/report", &init) {
            if let Err(e) = stub.fetch_with_request(req).await {
                console_error!("reporting outcomes for {host} failed: {e}");
            }
        }
    });
}

async fn read_body(req: &mut Request, method: &str) -> Result<Body> {
    if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
        return Ok(Body::None);
    }
    let length: Option<usize> = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.trim().parse().ok());
    match length {
        Some(0) => Ok(Body::None),
        // Small bodies are buffered so a request refused at connect can be replayed elsewhere.
        Some(n) if n <= REPLAY_BODY_CAP => Ok(Body::Buffered(req.bytes().await?)),
        _ => Ok(Body::Stream(req.inner().body())),
    }
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = "
export function fb_forward_headers(incoming, drop, set) {
  const out = new Headers(incoming);
  for (const name of drop) out.delete(name);
  for (let i = 0; i + 1 < set.length; i += 2) out.set(set[i], set[i + 1]);
  return out;
}")]
extern "C" {
    /// Copies headers, deletes `drop`, sets the `[name, value, ...]` pairs: one call into the
    /// runtime instead of one per header operation (measured: ~10% of throughput).
    fn fb_forward_headers(
        incoming: &web_sys::Headers,
        drop: Vec<String>,
        set: Vec<String>,
    ) -> web_sys::Headers;
}

/// The client's headers minus `Host` and hop-by-hop ones (incl. those `Connection` names), plus X-Forwarded-*.
fn outbound_headers(req: &Request, host: &str, https: bool) -> Result<web_sys::Headers> {
    let incoming = req.headers();
    let mut drop: Vec<String> = HOP_BY_HOP.iter().map(|h| h.to_string()).collect();
    drop.extend(connection_tokens(incoming.get("connection")?.as_deref()));
    drop.push("host".to_string());
    let proto = if https { "https" } else { "http" };
    let mut set = vec![
        "x-forwarded-proto".to_string(),
        proto.to_string(),
        "x-forwarded-host".to_string(),
        host.to_string(),
    ];
    if let Some(ip) = incoming.get("cf-connecting-ip")? {
        set.push("x-forwarded-for".to_string());
        set.push(forwarded_for(
            incoming.get("x-forwarded-for")?.as_deref(),
            &ip,
        ));
    }
    Ok(fb_forward_headers(&incoming.0, drop, set))
}

fn build_request(
    backend: &str,
    pq: &str,
    method: &str,
    headers: &web_sys::Headers,
    body: Option<JsValue>,
) -> Result<Request> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_headers(headers.as_ref());
    init.set_redirect(web_sys::RequestRedirect::Manual);
    if let Some(b) = body {
        init.set_body(&b);
    }
    let r = web_sys::Request::new_with_str_and_init(&backend_url(backend, pq), &init)?;
    Ok(r.into())
}

/// Streams the backend's response back; adds the affinity cookie when the client is (re-)pinned.
fn finish(resp: Response, route: &Route, pin: Option<&str>, https: bool) -> Result<Response> {
    let (Some(spec), Some(value)) = (&route.cookie, pin) else {
        return Ok(resp);
    };
    // The backend's headers are immutable; a copy keeps every Set-Cookie and takes one more.
    let headers = Headers(web_sys::Headers::new_with_headers(&resp.headers().0)?);
    headers.append(
        "set-cookie",
        &affinity::set_cookie(&spec.name, value, spec.ttl_s, https),
    )?;
    let status = resp.status_code();
    let (_, body) = resp.into_parts();
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .body(body))
}
