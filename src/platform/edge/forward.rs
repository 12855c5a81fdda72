//! The forwarding loop: the outbound request (headers, body), the failover plan's attempts, and the answer streamed back to the client.

use std::cell::RefCell;
use std::time::Duration;

use futures_util::future::{select, Either};
use js_sys::futures::JsFuture;
use wasm_bindgen::{JsCast, JsValue};
use worker::*;

use crate::platform::edge::incoming::Incoming;
use crate::platform::edge::report::Reporter;
use crate::platform::{
    cancel_body, error_response, fetch_url, now_ms, refuses_connections, Deadline, FetchFailure,
};
use crate::policy::rng::SplitMix64;
use crate::policy::telemetry::answers::Source;
use crate::policy::telemetry::record::FailedAttempt;
use crate::policy::traffic::affinity;
use crate::policy::traffic::attempts::{Answer, Step};
use crate::policy::traffic::body_watch::BodyWatch;
use crate::policy::traffic::decision::Route;
use crate::policy::traffic::failover::{AttemptResult, FailoverPlan};
use crate::policy::traffic::forwarding::{
    backend_url, connection_tokens, forwarded_for, path_and_query, HOP_BY_HOP, LOOP_GUARD_HEADER,
};
use crate::policy::traffic::retry::REPLAY_BODY_CAP;
use crate::policy::traffic::rules::{HeaderOps, RuleAnswer, RuleEffects};

/// A watched response body of known length up to this size is read in whole before it is
/// answered: its outcome is then known at once (no stream to pump, nothing to settle later).
const RESPONSE_BUFFER_CAP: f64 = 64.0 * 1024.0;

thread_local! {
    static RNG: RefCell<SplitMix64> = RefCell::new(SplitMix64(now_ms()));
    /// Which answers' bodies are watched (sampled per backend; see [`BodyWatch`]).
    static WATCH: RefCell<BodyWatch> = RefCell::new(BodyWatch::default());
    /// Request headers never forwarded, made into a JS array once rather than per request.
    static ALWAYS_DROPPED: js_sys::Array = HOP_BY_HOP
        .iter()
        .chain(&["host", "expect"])
        .map(|h| JsValue::from_str(h))
        .collect();
}

/// Set on every forwarded request: a request that arrives carrying it has come back through a
/// backend that points at the balancer itself, and is answered 508 instead of forwarded again.
pub const HOP_HEADER: &str = LOOP_GUARD_HEADER;

/// A watched body of `backend` broke off: watch its next answers (see [`BodyWatch::broke`]).
pub fn body_broke(backend: &str) {
    WATCH.with(|w| w.borrow_mut().broke(backend));
}

/// The request body in a form that can be sent once or, when buffered, many times.
enum Body {
    None,
    Buffered(Vec<u8>),
    /// The client's stream, piped through a native stream so that a failure of the client's own
    /// side (it hung up mid-upload) can be told from a backend's; `client_failed` settles to
    /// true when the client's stream errored.
    Stream {
        readable: Option<web_sys::ReadableStream>,
        client_failed: js_sys::Promise,
        /// The upload's progress, for the fetch's deadline (see `fb_watch_upload`).
        progress: JsValue,
    },
}

impl Body {
    fn replayable(&self) -> bool {
        !matches!(self, Body::Stream { .. })
    }

    /// The body for the next attempt; a stream can be handed out once only.
    fn take(&mut self) -> Option<JsValue> {
        match self {
            Body::None => None,
            Body::Buffered(bytes) => Some(js_sys::Uint8Array::from(bytes.as_slice()).into()),
            Body::Stream { readable, .. } => readable.take().map(Into::into),
        }
    }

    /// How a streamed upload is moving, for the fetch's deadline (None: nothing streams).
    fn progress(&self) -> Option<&JsValue> {
        match self {
            Body::Stream { progress, .. } => Some(progress),
            _ => None,
        }
    }

    /// After a lost connection: did the client's upload fail (rather than the backend)? The
    /// pipe settles as soon as either side fails (the client's error comes first when it is the
    /// cause), so a short bound keeps a dead backend's 503 prompt.
    async fn client_failed(&self) -> bool {
        let Body::Stream { client_failed, .. } = self else {
            return false;
        };
        let settled = JsFuture::from(client_failed.clone());
        let timer = Delay::from(Duration::from_millis(250));
        futures_util::pin_mut!(settled);
        futures_util::pin_mut!(timer);
        match select(settled, timer).await {
            Either::Left((Ok(v), _)) => v.as_bool().unwrap_or(false),
            _ => false,
        }
    }
}

/// The request as it goes to a backend: read once, sent on each attempt.
pub struct Outbound {
    pub method: String,
    /// The path and query, appended to each backend's URL.
    pub pq: String,
    pub headers: web_sys::Headers,
    body: Body,
    pub https: bool,
}

impl Outbound {
    /// Reads the client's body (buffered when small, else streamed) and builds the forwarded
    /// headers.
    /// `rules`: what the service's traffic rules did to the request (path rewrite, header edits).
    pub async fn new(
        req: &web_sys::Request,
        incoming: &Incoming,
        host: &str,
        rules: Option<&RuleEffects>,
    ) -> Result<Self> {
        let url = &incoming.url;
        let body = read_body(req, &incoming.method, incoming.content_length.as_deref()).await?;
        let https = url.starts_with("https:");
        let headers = outbound_headers(
            req,
            incoming,
            host,
            https,
            rules.map(|r| &r.request_headers),
        );
        let pq = path_and_query(url);
        let pq = match rules.and_then(|r| r.path.as_deref()) {
            Some(path) => match pq.split_once('?') {
                Some((_, query)) => format!("{path}?{query}"),
                None => path.to_string(),
            },
            None => pq.to_string(),
        };
        Ok(Self {
            method: incoming.method.clone(),
            pq,
            headers,
            body,
            https,
        })
    }
}

/// What a forwarded request ended with.
pub struct Forwarded {
    pub resp: web_sys::Response,
    /// The backend whose answer (or broken body) the client got.
    pub backend: Option<String>,
    pub attempts: u32,
    /// Whether the client got a backend's own answer or one FlowBalance made.
    pub source: Source,
    /// The attempts that failed, each charged to its backend in the request log.
    pub failed: Vec<FailedAttempt>,
}

/// Drives the request's [`FailoverPlan`]: performs the attempts and checks it asks for, then
/// answers as it says. Outcomes go to `report` as they become known: failures once the plan
/// answers, the answering attempt once its body has gone through.
pub async fn forward(report: &Reporter<'_>, mut out: Outbound, route: Route) -> Result<Forwarded> {
    let host = report.host;
    let mut plan = FailoverPlan::new(&route, host, &out.method, out.body.replayable());
    // The latest response with a final status: the plan may answer with it.
    let mut answered: Option<(usize, web_sys::Response)> = None;
    let mut step = plan.start();
    let answer = loop {
        step = match step {
            Step::Try {
                index,
                url,
                wait_ms,
                ..
            } => {
                if wait_ms > 0 {
                    Delay::from(Duration::from_millis(wait_ms)).await;
                }
                let started = now_ms();
                let fetched = fetch_url(
                    &backend_url(&url, &out.pq),
                    &out.method,
                    &out.headers,
                    out.body.take(),
                    route.timeout_ms,
                    Deadline::Headers(out.body.progress()),
                )
                .await;
                let latency_ms = now_ms().saturating_sub(started);
                let result = match fetched {
                    Ok(resp) => {
                        let status = resp.status();
                        if let Some((_, earlier)) = answered.replace((index, resp)) {
                            cancel_body(&earlier);
                        }
                        AttemptResult::Answered(status)
                    }
                    Err(FetchFailure::InvalidStatus(s)) => AttemptResult::Invalid(s),
                    Err(FetchFailure::Timeout) => AttemptResult::Timeout,
                    Err(FetchFailure::Network(_)) if out.body.client_failed().await => {
                        AttemptResult::ClientAborted
                    }
                    Err(FetchFailure::Network(msg)) => AttemptResult::Lost(msg),
                };
                RNG.with(|r| plan.on_result(index, result, latency_ms, &mut *r.borrow_mut()))
            }
            Step::CheckRefused(url) => {
                let refused = refuses_connections(&url, 1000).await;
                RNG.with(|r| plan.on_refused_check(refused, &mut *r.borrow_mut()))
            }
            Step::Answer(answer) => break answer,
        };
    };
    let tries = plan.tries();
    let mut outcomes = plan.take_outcomes();
    let failed: Vec<FailedAttempt> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| FailedAttempt {
            backend: o.url.clone(),
            status: o.status,
            latency_ms: o.latency_ms,
        })
        .collect();
    let ticket = route.ticket;
    match answer {
        Answer::Backend(index) => {
            let (Some((_, resp)), Some(attempt)) = (
                answered.filter(|(i, _)| *i == index),
                route.attempts.get(index),
            ) else {
                return Err(Error::RustError(
                    "failover plan answered with a response it was never given".into(),
                ));
            };
            // A success counts once its body has streamed through; failures are final already.
            let success = match outcomes.last() {
                Some(o) if o.failure.is_none() => outcomes.pop(),
                _ => None,
            };
            // An unwatched body goes straight through; its success counts at its headers.
            let watch = success.is_some()
                && WATCH.with(|w| {
                    w.borrow_mut()
                        .watch(&attempt.url, attempt.trial, route.ticket.is_some())
                });
            report.flush(outcomes);
            let cookie = match (&route.cookie, attempt.pin.as_deref()) {
                (Some(spec), Some(value)) => Some(affinity::set_cookie(
                    &spec.name, value, spec.ttl_s, out.https,
                )),
                _ => None,
            };
            let edits = route
                .rules
                .as_ref()
                .map(|r| header_edits(&r.response_headers))
                .unwrap_or_default();
            let mut parts = fb_respond(&resp, cookie, watch, RESPONSE_BUFFER_CAP, &edits);
            if let Some(read) = parts.dyn_ref::<js_sys::Promise>() {
                parts = JsFuture::from(read.clone()).await?;
            }
            let parts: js_sys::Array = parts.unchecked_into();
            let done = parts.get(1);
            let url = attempt.url.clone();
            if success.is_none() || !done.is_instance_of::<js_sys::Promise>() {
                // The answer is complete now; a streamed body completes in `Reporter::body_streamed`.
                report.complete(ticket);
            }
            match (success, done.as_string()) {
                (None, _) => {}
                (Some(outcome), Some(broken)) if broken.is_empty() => report.body_done(outcome, ""),
                (Some(outcome), Some(broken)) => {
                    report.body_done(outcome, &broken);
                    let message = format!(
                        "backend {url} of \"{host}\" broke its response body off: {broken}"
                    );
                    return Ok(Forwarded {
                        resp: error_response(502, &message, None)?.into(),
                        backend: Some(url),
                        attempts: tries,
                        source: Source::Flowbalance,
                        failed,
                    });
                }
                (Some(outcome), None) if done.is_undefined() => report.body_done(outcome, ""),
                (Some(outcome), None) => {
                    report.body_streamed(outcome, ticket, done.unchecked_into())
                }
            }
            Ok(Forwarded {
                resp: parts.get(0).unchecked_into(),
                backend: Some(url),
                attempts: tries,
                source: Source::Backend,
                failed,
            })
        }
        Answer::Failed {
            status,
            message,
            retry_after_s,
        } => {
            if let Some((_, resp)) = answered {
                cancel_body(&resp);
            }
            report.complete(ticket);
            report.flush(outcomes);
            Ok(Forwarded {
                resp: error_response(status, &message, retry_after_s)?.into(),
                backend: None,
                attempts: tries,
                source: Source::Flowbalance,
                failed,
            })
        }
    }
}

async fn read_body(
    req: &web_sys::Request,
    method: &str,
    content_length: Option<&str>,
) -> Result<Body> {
    if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
        return Ok(Body::None);
    }
    let length: Option<usize> = content_length.and_then(|v| v.trim().parse().ok());
    match length {
        Some(0) => Ok(Body::None),
        // Small bodies are buffered so a request refused at connect can be replayed elsewhere.
        Some(n) if n <= REPLAY_BODY_CAP => {
            let bytes = JsFuture::from(req.array_buffer()?).await?;
            Ok(Body::Buffered(js_sys::Uint8Array::new(&bytes).to_vec()))
        }
        _ => match req.body() {
            None => Ok(Body::None),
            Some(stream) => {
                let parts = fb_watch_upload(&stream, length.map(|n| n as f64));
                Ok(Body::Stream {
                    readable: Some(parts.get(0).unchecked_into()),
                    client_failed: parts.get(1).unchecked_into(),
                    progress: parts.get(2),
                })
            }
        },
    }
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
export function fb_forward_headers(incoming, always, drop, set) {
  const out = new Headers(incoming);
  for (const name of always) out.delete(name);
  if (drop !== "") for (const name of drop.split("\n")) out.delete(name);
  const pairs = set.split("\n");
  for (let i = 0; i + 1 < pairs.length; i += 2) out.set(pairs[i], pairs[i + 1]);
  return out;
}

// Pipes the client's upload through a native stream (keeping its length); the promise says
// whether the client's side failed. The third element is the upload's progress, which the
// fetch's deadline reads: when it last moved (`at`), whether it waits on the client, and done.
export function fb_watch_upload(body, length) {
  const t = length === undefined ? new IdentityTransformStream() : new FixedLengthStream(length);
  const progress = { at: Date.now(), client: false, done: false };
  return [t.readable, pump(body, t.writable, progress).then((m) => m !== ""), progress];
}

// The response the client gets: a null body where HTTP wants none, the affinity cookie if any,
// and, when `watch` (a sampled success, see `BodyWatch`), a way to know the body arrived whole.
// A small body of known length is read in whole (one native read, no stream to pump, the
// outcome known before answering): then a Promise of [Response or null, "" or why the backend
// broke it off]. Otherwise [Response, undefined | Promise<"" or the backend's error>] with the
// body pumped through a native stream. With nothing to change, the backend's own Response goes
// back as it is.
export function fb_respond(resp, cookie, watch, bufferCap, edited) {
  const edits = edited === "" ? [] : edited.split("\n");
  const status = resp.status;
  let body = resp.body;
  let done;
  if (body !== null && (status === 204 || status === 205 || status === 304)) {
    body.cancel().catch(() => {});
    body = null;
  } else if (watch && body !== null) {
    const len = resp.headers.get("content-length");
    const enc = resp.headers.get("content-encoding");
    const sized = len !== null && /^[0-9]+$/.test(len) && (enc === null || enc === "identity");
    if (sized && Number(len) <= bufferCap) return buffered(resp, cookie, edits);
    const t = sized ? new FixedLengthStream(Number(len)) : new IdentityTransformStream();
    done = pump(body, t.writable);
    body = t.readable;
  } else if (cookie === undefined && edits.length === 0) {
    return [resp, undefined];
  }
  return [rebuilt(resp, body, cookie, edits), done];
}

async function buffered(resp, cookie, edits) {
  try {
    return [rebuilt(resp, await resp.arrayBuffer(), cookie, edits), ""];
  } catch (e) {
    return [null, String((e && e.message) || e || "stream error")];
  }
}

// `edits`: traffic rules' response header changes as [op, name, value, ...] ("s" set, "r" remove;
// `fb_respond` gets them joined by newlines).
function rebuilt(resp, body, cookie, edits) {
  const out = new Response(body, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
  for (let i = 0; i + 2 < edits.length; i += 3) {
    if (edits[i] === "s") out.headers.set(edits[i + 1], edits[i + 2]);
    else out.headers.delete(edits[i + 1]);
  }
  if (cookie !== undefined) out.headers.append("set-cookie", cookie);
  return out;
}

// Copies `src` into `dst`; settles to "" when done or when the reading side went away, and to
// the error message when `src` itself failed. (pipeTo cannot tell the two apart: it rejects
// either way and keeps the source locked.)
// `progress` (optional): updated as the copy moves (see `fb_watch_upload`).
async function pump(src, dst, progress) {
  const reader = src.getReader();
  const writer = dst.getWriter();
  const moved = (client) => {
    if (progress !== undefined) {
      progress.at = Date.now();
      progress.client = client;
    }
  };
  try {
    for (;;) {
      let chunk;
      moved(true);
      try {
        chunk = await reader.read();
      } catch (e) {
        writer.abort(e).catch(() => {});
        return String((e && e.message) || e || "stream error");
      }
      moved(false);
      if (chunk.done) {
        await writer.close().catch(() => {});
        return "";
      }
      try {
        await writer.write(chunk.value);
      } catch {
        reader.cancel().catch(() => {});
        return "";
      }
    }
  } finally {
    moved(false);
    if (progress !== undefined) progress.done = true;
  }
}
"#)]
extern "C" {
    /// Copies headers, deletes `drop`, sets the `name, value, ...` pairs: one call into the
    /// runtime instead of one per header operation (measured: ~10% of throughput). `drop` and
    /// `set` are joined by newlines (one string each to cross; names and values hold none).
    fn fb_forward_headers(
        incoming: &web_sys::Headers,
        always: &js_sys::Array,
        drop: &str,
        set: &str,
    ) -> web_sys::Headers;

    /// `[readable, Promise<bool: the client's stream failed>]`.
    fn fb_watch_upload(body: &web_sys::ReadableStream, length: Option<f64>) -> js_sys::Array;

    /// `[Response, Promise<string: "" or why the backend broke the body off> | undefined]`, or
    /// for a small body read in whole a Promise of `[Response | null, string]`.
    fn fb_respond(
        resp: &web_sys::Response,
        cookie: Option<String>,
        watch: bool,
        buffer_cap: f64,
        edits: &str,
    ) -> JsValue;
}

/// The client's headers minus `Host`, `Expect` and hop-by-hop ones (incl. those `Connection`
/// names), plus X-Forwarded-* and the hop marker. `Expect` is answered (or not) by the hop that
/// reads it: forwarded, it makes backends send `100 Continue`, which no client asked us for.
fn outbound_headers(
    req: &web_sys::Request,
    incoming: &Incoming,
    host: &str,
    https: bool,
    rules: Option<&HeaderOps>,
) -> web_sys::Headers {
    let mut drop = connection_tokens(incoming.connection.as_deref());
    let proto = if https { "https" } else { "http" };
    let mut set = vec![
        "x-forwarded-proto".to_string(),
        proto.to_string(),
        "x-forwarded-host".to_string(),
        host.to_string(),
        HOP_HEADER.to_string(),
        "1".to_string(),
    ];
    if let Some(ip) = &incoming.client_ip {
        set.push("x-forwarded-for".to_string());
        set.push(forwarded_for(incoming.forwarded_for.as_deref(), ip));
    }
    // Traffic rules' edits come last, so a rule's value wins over ours; a header a rule removes
    // is not added back (validation keeps rules off the loop guard and hop-by-hop headers).
    if let Some(ops) = rules {
        drop.extend(ops.remove.iter().cloned());
        let mut kept = Vec::with_capacity(set.len());
        for pair in set.chunks(2) {
            if !ops.remove.iter().any(|r| r.eq_ignore_ascii_case(&pair[0])) {
                kept.extend_from_slice(pair);
            }
        }
        set = kept;
        for (name, value) in &ops.set {
            set.push(name.clone());
            set.push(value.clone());
        }
    }
    let (drop, set) = (drop.join("\n"), set.join("\n"));
    ALWAYS_DROPPED.with(|always| fb_forward_headers(&req.headers(), always, &drop, &set))
}

/// Response header changes as `fb_respond` takes them: `op, name, value, ...` joined by
/// newlines (one string to cross into the runtime; names and values hold no newline).
fn header_edits(ops: &HeaderOps) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(3 * (ops.set.len() + ops.remove.len()));
    for name in &ops.remove {
        parts.extend(["r", name.as_str(), ""]);
    }
    for (name, value) in &ops.set {
        parts.extend(["s", name.as_str(), value.as_str()]);
    }
    parts.join("\n")
}

/// The answer of a traffic rule's `respond` or `redirect`: no backend is asked.
pub fn rule_response(answer: &RuleAnswer) -> Result<web_sys::Response> {
    let headers = Headers::new();
    // 204, 205 and 304 carry no body: the runtime refuses to build one with a body.
    let body = match answer.status {
        204 | 205 | 304 => "",
        _ => answer.body.as_str(),
    };
    if !body.is_empty() {
        let kind = answer
            .content_type
            .as_deref()
            .unwrap_or("text/plain; charset=utf-8");
        headers.set("content-type", kind)?;
    }
    if let Some(location) = &answer.location {
        headers.set("location", location)?;
    }
    for name in &answer.response_headers.remove {
        headers.delete(name)?;
    }
    for (name, value) in &answer.response_headers.set {
        headers.set(name, value)?;
    }
    let resp = if body.is_empty() {
        Response::empty()?
    } else {
        Response::ok(body)?
    };
    Ok(resp.with_status(answer.status).with_headers(headers).into())
}

pub(super) fn build_request(
    backend: &str,
    pq: &str,
    method: &str,
    headers: &web_sys::Headers,
    body: Option<JsValue>,
) -> Result<web_sys::Request> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_headers(headers.as_ref());
    init.set_redirect(web_sys::RequestRedirect::Manual);
    if let Some(b) = body {
        init.set_body(&b);
    }
    Ok(web_sys::Request::new_with_str_and_init(
        &backend_url(backend, pq),
        &init,
    )?)
}
