//! The balanced request path: ask the hostname's Durable Object for a decision, drive the failover plan's attempts, stream the answer back, report outcomes.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::future::{select, Either};
use js_sys::futures::JsFuture;
use wasm_bindgen::{JsCast, JsValue};
use worker::*;

use crate::platform::edge::lease;
use crate::platform::edge::websocket;
use crate::platform::object::tail as tail_route;
use crate::platform::store::requestlog::{self, FailedAttempt, LogRow};
use crate::platform::{
    cancel_body, error_response, fetch_url, now_ms, object_stub, refuses_connections, FetchFailure,
};
use crate::policy::rng::SplitMix64;
use crate::policy::telemetry::metrics::{self, Answered, Source};
use crate::policy::telemetry::tail::{self, RequestLine};
use crate::policy::traffic::affinity;
use crate::policy::traffic::decision::{DecideRequest, Outcome, ReportRequest, Route, Verdict};
use crate::policy::traffic::facts::RequestFacts;
use crate::policy::traffic::failover::{Answer, AttemptResult, FailoverPlan, Step};
use crate::policy::traffic::forwarding::{
    backend_url, connection_tokens, forwarded_for, host_and_path, path_and_query, HOP_BY_HOP,
};
use crate::policy::traffic::retry::REPLAY_BODY_CAP;

/// Successes not yet reported for one hostname.
#[derive(Default)]
struct SuccessTally {
    /// Per backend URL, status and latency bucket: (successful requests, summed latency in ms).
    /// Keyed by bucket so the metrics histogram stays exact while a batch carries only a mean.
    by_url: HashMap<(String, Option<u16>, usize), (u32, u64)>,
    count: u32,
    since_ms: u64,
}

/// Successes are sent with a decision once this many have piled up or this much time passed:
/// one small JSON message per batch instead of per request.
const SUCCESS_BATCH: u32 = 32;
const SUCCESS_BATCH_MS: u64 = 250;

/// Finished requests' tickets wait about this long for a decision to carry them before they are
/// sent on their own: under load the next decision carries them at no cost, and an idle
/// isolate still lets the object's outstanding counts fall within a few tens of milliseconds.
const DONE_FLUSH_MS: u64 = 20;

/// A successful response body of known length up to this size is read in whole before it is
/// answered: its outcome is then known at once (no stream to watch, nothing to settle later).
const RESPONSE_BUFFER_CAP: f64 = 64.0 * 1024.0;

impl SuccessTally {
    fn into_outcomes(self) -> Vec<Outcome> {
        self.by_url
            .into_iter()
            .map(|((url, status, _), (count, latency_sum))| Outcome {
                url,
                failure: None,
                latency_ms: latency_sum / u64::from(count.max(1)),
                trial: false,
                retry: false,
                count,
                status,
                retry_reason: None,
            })
            .collect()
    }
}

/// Takes the hostname's pending successes: all of them when `force`, else only a due batch.
pub(super) fn take_successes(host: &str, force: bool) -> Vec<Outcome> {
    let now = now_ms();
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

/// Tickets of this isolate's finished requests not yet sent, per hostname.
#[derive(Default)]
struct PendingDone {
    tickets: Vec<u64>,
    /// A flush timer is running for this hostname.
    timer: bool,
    /// When a decision last carried tickets: while decisions flow, the timer sends nothing.
    carried_ms: u64,
}

/// A timer gives way to flowing decisions at most this many times before it sends what is
/// left anyway (a `wait_until` must end; one small report per ~0.5 s under steady load).
const DONE_FLUSH_ROUNDS: u32 = 25;

/// A request counted as outstanding (its route carried `ticket`) has finished: its response
/// went out whole, failed, or (for a WebSocket) the connection closed. The ticket rides on this
/// isolate's next decision for `host`; if no decision comes within [`DONE_FLUSH_MS`], a timer
/// sends it in a report of its own.
pub fn complete(env: &Env, ctx: &Context, host: &str, ticket: Option<u64>) {
    let Some(ticket) = ticket else {
        return;
    };
    let arm = DONE.with(|d| {
        let mut d = d.borrow_mut();
        let p = d.entry(host.to_string()).or_default();
        p.tickets.push(ticket);
        !std::mem::replace(&mut p.timer, true)
    });
    if arm {
        let env = env.clone();
        let host = host.to_string();
        ctx.wait_until(async move {
            for round in 1..=DONE_FLUSH_ROUNDS {
                Delay::from(Duration::from_millis(DONE_FLUSH_MS)).await;
                let due = DONE.with(|d| {
                    let mut d = d.borrow_mut();
                    let p = d.get_mut(&host)?;
                    let idle = now_ms().saturating_sub(p.carried_ms) >= DONE_FLUSH_MS;
                    if p.tickets.is_empty() || idle || round == DONE_FLUSH_ROUNDS {
                        p.timer = false;
                        return Some(std::mem::take(&mut p.tickets));
                    }
                    None // decisions are flowing: they carry these
                });
                if let Some(done) = due {
                    if !done.is_empty() {
                        send_reports(&env, &host, Vec::new(), done).await;
                    }
                    return;
                }
            }
        });
    }
}

/// Responses given to one hostname's clients, not yet sent to its object.
#[derive(Default)]
struct PendingAnswers {
    tally: BTreeMap<(u16, Source), u32>,
    /// A flush timer is running for this hostname.
    timer: bool,
    /// When a message to the object last carried the tally.
    carried_ms: u64,
}

/// Answers not carried by a decision or report within this long go in a report of their own.
const ANSWER_FLUSH_MS: u64 = 1000;

/// Counts a response given to a client of `host` for `flowbalance_responses_total`. The tally
/// rides on this isolate's next decision or report for the hostname; a timer sends what no
/// message carried once the hostname has been quiet for [`ANSWER_FLUSH_MS`] (or after
/// [`DONE_FLUSH_ROUNDS`] of them under steady traffic).
pub fn count_answer(env: &Env, ctx: &Context, host: &str, code: u16, source: Source) {
    let arm = ANSWERED.with(|a| {
        let mut a = a.borrow_mut();
        let p = a.entry(host.to_string()).or_default();
        *p.tally.entry((code, source)).or_default() += 1;
        !std::mem::replace(&mut p.timer, true)
    });
    if !arm {
        return;
    }
    let env = env.clone();
    let host = host.to_string();
    ctx.wait_until(async move {
        for round in 1..=DONE_FLUSH_ROUNDS {
            Delay::from(Duration::from_millis(ANSWER_FLUSH_MS)).await;
            // Ok(true): send now; Ok(false): nothing left; Err: messages are flowing, look again.
            let due = ANSWERED.with(|a| {
                let mut a = a.borrow_mut();
                let Some(p) = a.get_mut(&host) else {
                    return Ok(false);
                };
                let idle = now_ms().saturating_sub(p.carried_ms) >= ANSWER_FLUSH_MS;
                if p.tally.is_empty() || idle || round == DONE_FLUSH_ROUNDS {
                    p.timer = false;
                    return Ok(!p.tally.is_empty());
                }
                Err(())
            });
            match due {
                Ok(true) => return send_reports(&env, &host, Vec::new(), Vec::new()).await,
                Ok(false) => return,
                Err(()) => {}
            }
        }
    });
}

/// The answers to carry on a message to the object now.
fn take_answered(host: &str) -> Vec<Answered> {
    ANSWERED.with(|a| {
        let mut a = a.borrow_mut();
        let Some(p) = a.get_mut(host) else {
            return Vec::new();
        };
        p.carried_ms = now_ms();
        std::mem::take(&mut p.tally)
            .into_iter()
            .map(|((code, source), count)| Answered {
                code,
                source,
                count,
            })
            .collect()
    })
}

/// The tickets to carry on a message to the object now.
fn take_done(host: &str) -> Vec<u64> {
    DONE.with(|d| {
        let mut d = d.borrow_mut();
        let Some(p) = d.get_mut(host) else {
            return Vec::new();
        };
        p.carried_ms = now_ms();
        std::mem::take(&mut p.tickets)
    })
}

thread_local! {
    /// Finished requests' tickets per hostname (see [`complete`]).
    static DONE: RefCell<HashMap<String, PendingDone>> = RefCell::new(HashMap::new());
    /// Responses given to clients per hostname, carried like successes (see [`count_answer`]).
    static ANSWERED: RefCell<HashMap<String, PendingAnswers>> = RefCell::new(HashMap::new());
    /// Successful outcomes per hostname, batched here and carried on the next decision request,
    /// so a healthy request costs no extra Durable Object round trip.
    static PENDING_OK: RefCell<HashMap<String, SuccessTally>> = RefCell::new(HashMap::new());
    /// The request header that keys header affinity, per hostname, as the last decision said.
    static AFFINITY_HEADER: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    /// Whether a hostname's decisions use the client's geography, as the last decision said
    /// (unknown: read it).
    static GEO: RefCell<HashMap<String, bool>> = RefCell::new(HashMap::new());
    static RNG: RefCell<SplitMix64> = RefCell::new(SplitMix64(now_ms()));
    /// Request headers never forwarded, made into a JS array once rather than per request.
    static ALWAYS_DROPPED: js_sys::Array = HOP_BY_HOP
        .iter()
        .chain(&["host", "expect"])
        .map(|h| JsValue::from_str(h))
        .collect();
}

/// Set on every forwarded request: a request that arrives carrying it has come back through a
/// backend that points at the balancer itself, and is answered 508 instead of forwarded again.
pub const HOP_HEADER: &str = "x-flowbalance-hop";

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

/// What the balanced path reads of the client's request, in one call into the runtime
/// (one string, rather than a crossing and a string copy per header).
struct Incoming {
    method: String,
    url: String,
    hop: bool,
    upgrade: Option<String>,
    client_ip: Option<String>,
    cookies: Option<String>,
    connection: Option<String>,
    forwarded_for: Option<String>,
    content_length: Option<String>,
    /// The value of the header that keys header affinity (when its name was asked for).
    affinity_key: Option<String>,
    /// `request.cf`'s country and continent, read only when `geo` was asked for: building the
    /// cf object costs about as much as the rest of this together.
    country: Option<String>,
    continent: Option<String>,
    geo: bool,
}

impl Incoming {
    fn read(req: &web_sys::Request, key_header: Option<&str>, geo: bool) -> Self {
        let text = fb_incoming(req, key_header, geo);
        let mut lines = text.split('\n');
        let method = lines.next().unwrap_or("GET").to_string();
        let url = lines.next().unwrap_or_default().to_string();
        // Each later line is "" (absent) or "=" and the value.
        let mut next = || {
            lines
                .next()
                .and_then(|l| l.strip_prefix('='))
                .map(str::to_string)
        };
        Self {
            method,
            url,
            hop: next().is_some(),
            upgrade: next(),
            client_ip: next(),
            cookies: next(),
            connection: next(),
            forwarded_for: next(),
            content_length: next(),
            affinity_key: next(),
            country: next(),
            continent: next(),
            geo,
        }
    }
}

/// Answers with the runtime's own Response: the backend's goes back untouched when nothing in
/// it changes (a workers-rs Response would be rebuilt on the way out).
pub async fn balance(
    req: web_sys::Request,
    env: &Env,
    ctx: &Context,
    host: &str,
) -> Result<web_sys::Response> {
    // What to read of the request: under a lease its config says; otherwise as the object's
    // last decision for this hostname said.
    let leased = lease::needs(host);
    let holding = leased.is_some();
    let (key_header, geo) = leased.unwrap_or_else(|| {
        (
            AFFINITY_HEADER.with(|a| a.borrow().get(host).cloned()),
            GEO.with(|g| g.borrow().get(host).copied().unwrap_or(true)),
        )
    });
    let mut incoming = Incoming::read(&req, key_header.as_deref(), geo);
    if incoming.hop {
        count_answer(env, ctx, host, 508, Source::Flowbalance);
        return error_response(
            508,
            &format!(
                "loop detected: this request for \"{host}\" was already forwarded by FlowBalance \
                 (it carries {HOP_HEADER}); a backend of \"{host}\" points back at the balancer"
            ),
            None,
        )
        .map(Into::into);
    }
    // Lease mode: decided here while this isolate holds a usable lease for the hostname.
    let local = holding
        .then(|| {
            let facts = RequestFacts {
                client_ip: incoming.client_ip.clone(),
                country: incoming.country.clone(),
                continent: incoming.continent.clone(),
                cookies: incoming.cookies.clone(),
                affinity_header: incoming.affinity_key.clone(),
                streamed_body: streams_body(&req, &incoming),
            };
            lease::decide_local(host, &facts)
        })
        .flatten();
    let (verdict, tailing) = match local {
        Some(local) => local,
        None => decide(env, &req, &mut incoming, key_header, host).await?,
    };
    lease::background(env, ctx, host);
    let route = match verdict {
        Verdict::Route(route) => route,
        Verdict::Reject(r) => {
            if let Some(why) = tailing {
                let line = RequestLine {
                    ts_ms: now_ms(),
                    method: incoming.method,
                    path: tail::bounded_path(host_and_path(&incoming.url).1),
                    status: r.status,
                    backend: None,
                    attempts: 0,
                    latency_ms: 0,
                    why,
                };
                tail_route::report_line(env, ctx, host, line);
            }
            count_answer(env, ctx, host, r.status, Source::Flowbalance);
            return error_response(r.status, &r.message, r.retry_after_s).map(Into::into);
        }
    };
    let Incoming {
        method,
        url,
        upgrade,
        ..
    } = &incoming;
    let body = read_body(&req, method, incoming.content_length.as_deref()).await?;
    let https = url.starts_with("https:");
    let headers = outbound_headers(&req, &incoming, host, https);
    let pq = path_and_query(url).to_string();
    let started = now_ms();
    let path = host_and_path(url).1.to_string();
    let Forwarded {
        resp,
        backend,
        attempts,
        source,
        failed,
    } = if websocket::is_upgrade(upgrade.as_deref()) {
        let (resp, backend, attempts) =
            websocket::forward(env, ctx, host, https, &pq, headers, route).await?;
        let source = if backend.is_some() {
            Source::Backend
        } else {
            Source::Flowbalance
        };
        Forwarded {
            resp,
            backend,
            attempts,
            source,
            failed: Vec::new(),
        }
    } else {
        forward(ForwardCtx {
            env,
            https,
            ctx,
            host,
            method: method.clone(),
            pq,
            headers,
            body,
            route,
        })
        .await?
    };
    count_answer(env, ctx, host, resp.status(), source);
    let row = LogRow {
        ts_ms: started,
        hostname: host.to_string(),
        method: incoming.method,
        path,
        status: resp.status(),
        backend,
        attempts,
        latency_ms: now_ms().saturating_sub(started),
        failed,
    };
    // Only while a tail listens (the decision said why): its line goes to the object.
    if let Some(why) = tailing {
        let line = RequestLine {
            ts_ms: row.ts_ms,
            method: row.method.clone(),
            path: tail::bounded_path(&row.path),
            status: row.status,
            backend: row.backend.clone(),
            attempts: row.attempts,
            latency_ms: row.latency_ms,
            why: tail::answered_why(&why, row.attempts),
        };
        tail_route::report_line(env, ctx, host, line);
    }
    requestlog::record(env, ctx, row);
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

/// What a forwarded request ended with.
struct Forwarded {
    resp: web_sys::Response,
    /// The backend whose answer (or broken body) the client got.
    backend: Option<String>,
    attempts: u32,
    /// Whether the client got a backend's own answer or one FlowBalance made.
    source: Source,
    /// The attempts that failed, each charged to its backend in the request log.
    failed: Vec<FailedAttempt>,
}

/// Drives the request's [`FailoverPlan`]: performs the attempts and checks it asks for, then
/// answers as it says.
async fn forward(mut f: ForwardCtx<'_>) -> Result<Forwarded> {
    let mut plan = FailoverPlan::new(&f.route, f.host, &f.method, f.body.replayable());
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
                    &backend_url(&url, &f.pq),
                    &f.method,
                    &f.headers,
                    f.body.take(),
                    f.route.timeout_ms,
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
                    Err(FetchFailure::Network(_)) if f.body.client_failed().await => {
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
    let ticket = f.route.ticket;
    match answer {
        Answer::Backend(index) => {
            let (Some((_, resp)), Some(attempt)) = (
                answered.filter(|(i, _)| *i == index),
                f.route.attempts.get(index),
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
            flush_reports(f.env, f.ctx, f.host, outcomes);
            let cookie = match (&f.route.cookie, attempt.pin.as_deref()) {
                (Some(spec), Some(value)) => {
                    Some(affinity::set_cookie(&spec.name, value, spec.ttl_s, f.https))
                }
                _ => None,
            };
            let mut parts = fb_respond(&resp, cookie, success.is_some(), RESPONSE_BUFFER_CAP);
            if let Some(read) = parts.dyn_ref::<js_sys::Promise>() {
                parts = JsFuture::from(read.clone()).await?;
            }
            let parts: js_sys::Array = parts.unchecked_into();
            let done = parts.get(1);
            let url = attempt.url.clone();
            if success.is_none() || !done.is_instance_of::<js_sys::Promise>() {
                // The answer is complete now; a streamed body completes in `watch_body`.
                complete(f.env, f.ctx, f.host, ticket);
            }
            match (success, done.as_string()) {
                (None, _) => {}
                (Some(outcome), Some(broken)) if broken.is_empty() => {
                    flush_reports(f.env, f.ctx, f.host, body_reports(f.host, outcome, ""))
                }
                (Some(outcome), Some(broken)) => {
                    flush_reports(f.env, f.ctx, f.host, body_reports(f.host, outcome, &broken));
                    let message = format!(
                        "backend {url} of \"{}\" broke its response body off: {broken}",
                        f.host
                    );
                    return Ok(Forwarded {
                        resp: error_response(502, &message, None)?.into(),
                        backend: Some(url),
                        attempts: tries,
                        source: Source::Flowbalance,
                        failed,
                    });
                }
                (Some(outcome), None) if done.is_undefined() => {
                    flush_reports(f.env, f.ctx, f.host, body_reports(f.host, outcome, ""))
                }
                (Some(outcome), None) => watch_body(
                    f.env,
                    f.ctx,
                    f.host,
                    (outcome, ticket),
                    done.unchecked_into(),
                ),
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
            complete(f.env, f.ctx, f.host, ticket);
            flush_reports(f.env, f.ctx, f.host, outcomes);
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

/// Reports the answering attempt once its body has streamed: a success, or a failure when the
/// backend broke the body off (a client hanging up is not the backend's doing).
/// The request's ticket, if counted, completes then too.
fn watch_body(
    env: &Env,
    ctx: &Context,
    host: &str,
    (outcome, ticket): (Outcome, Option<u64>),
    done: js_sys::Promise,
) {
    let env = env.clone();
    let host = host.to_string();
    let finished: Vec<u64> = ticket.into_iter().collect();
    ctx.wait_until(async move {
        let broken = JsFuture::from(done)
            .await
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let reports = body_reports(&host, outcome, &broken);
        // The ticket goes with the reports, or alone, at once.
        if !reports.is_empty() || !finished.is_empty() {
            send_reports(&env, &host, reports, finished).await;
        }
    });
}

/// What is due once the answering attempt's body has gone through (`broken`: "" or why the
/// backend broke it off): nothing for a success that waits in the batch, else the reports to
/// send now, earlier successes first so "consecutive failures" in the object stays true.
fn body_reports(host: &str, mut outcome: Outcome, broken: &str) -> Vec<Outcome> {
    if broken.is_empty() {
        return batch_success(host, outcome).into_iter().collect();
    }
    outcome.failure = Some(format!("response body broken off: {broken}"));
    let mut reports = take_successes(host, true);
    reports.push(outcome);
    reports
}

/// Asks the hostname's Durable Object where this request goes. The message travels in the URL
/// query: a plain URL string is the cheapest request to build (no Headers, no body to stream and
/// await in the object). Batched success reports ride along. Also returns why the object chose,
/// which it says only while a tail listens.
async fn decide(
    env: &Env,
    req: &web_sys::Request,
    incoming: &mut Incoming,
    key_header: Option<String>,
    host: &str,
) -> Result<(Verdict, Option<String>)> {
    let mut msg = DecideRequest {
        host: host.to_string(),
        client_ip: incoming.client_ip.clone(),
        country: incoming.country.take(),
        continent: incoming.continent.take(),
        cookies: incoming.cookies.take(),
        affinity_key: incoming.affinity_key.take(),
        streamed_body: streams_body(req, incoming),
        successes: take_successes(host, false),
        done: take_done(host),
        answered: take_answered(host),
    };
    let (mut verdict, mut tailing) = ask(env, &msg).await?;
    // First request of this instance (or the first after a config change) for a hostname whose
    // decisions need what was not sent: the affinity header's value (its name was not known
    // yet) or the client's geography. Ask once more with it rather than let this client land on
    // an arbitrary backend.
    if let Verdict::Route(Route {
        affinity_header,
        geo,
        ticket,
        ..
    }) = &verdict
    {
        let need_key = affinity_header.is_some() && key_header.is_none();
        let need_geo = *geo && !incoming.geo;
        let more = (need_key || need_geo)
            .then(|| Incoming::read(req, affinity_header.as_deref(), *geo))
            .filter(|more| need_geo || more.affinity_key.is_some());
        if let Some(more) = more {
            // Already applied by the first ask; the first ask's own ticket is given back, as
            // its route is dropped.
            msg.successes.clear();
            msg.answered.clear();
            msg.done = ticket.iter().copied().collect();
            msg.affinity_key = more.affinity_key;
            msg.country = more.country;
            msg.continent = more.continent;
            (verdict, tailing) = ask(env, &msg).await?;
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
        // Geo steering: read the client's geography only for hostnames that use it.
        GEO.with(|g| {
            if g.borrow().get(host) != Some(&route.geo) {
                g.borrow_mut().insert(host.to_string(), route.geo);
            }
        });
    }
    Ok((verdict, tailing))
}

/// One decision round trip: the stub, the fetch and reading the reply's text are one call into
/// the runtime (workers-rs would wrap the reply and read it as a byte stream, chunk by chunk).
async fn ask(env: &Env, msg: &DecideRequest) -> Result<(Verdict, Option<String>)> {
    // A lease that comes back counts from here (lease mode).
    let sent_ms = now_ms();
    let reply = JsFuture::from(fb_ask(env.as_ref(), &msg.host, &msg.to_query())).await?;
    let text = reply.as_string().unwrap_or_default();
    let (reply, leased) = crate::policy::traffic::lease::detach(&text);
    lease::adopt_text(&msg.host, leased, sent_ms);
    let (json, why) = tail::split_reply(reply);
    Ok((serde_json::from_str(json)?, why.map(str::to_string)))
}

/// Queues a success for the next decision, or hands it back when it must be reported now.
fn batch_success(host: &str, outcome: Outcome) -> Option<Outcome> {
    if outcome.trial || outcome.retry {
        // A trial decides a breaker, and a retry spends budget: report those at once.
        return Some(outcome);
    }
    PENDING_OK.with(|p| {
        let mut p = p.borrow_mut();
        let tally = p.entry(host.to_string()).or_insert_with(|| SuccessTally {
            since_ms: now_ms(),
            ..Default::default()
        });
        let key = (
            outcome.url,
            outcome.status,
            metrics::bucket_of(outcome.latency_ms),
        );
        let entry = tally.by_url.entry(key).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += outcome.latency_ms;
        tally.count += 1;
    });
    None
}

/// Failures and trials go to the Durable Object after the response, off the client's path.
pub(super) fn flush_reports(env: &Env, ctx: &Context, host: &str, reports: Vec<Outcome>) {
    if reports.is_empty() {
        return;
    }
    // Earlier successes go first, so "consecutive failures" in the DO means consecutive.
    let mut all = take_successes(host, true);
    all.extend(reports);
    let done = take_done(host);
    let env = env.clone();
    let host = host.to_string();
    ctx.wait_until(async move { send_reports(&env, &host, all, done).await });
}

/// Sends outcomes and finished requests' tickets to the object (`POST /report`).
pub async fn send_reports(env: &Env, host: &str, outcomes: Vec<Outcome>, done: Vec<u64>) {
    // Lease mode: failures eject the backend here at once, and the reply is a fresh lease.
    if done.is_empty() && !outcomes.is_empty() && lease::holding(host) {
        return lease::report(env, host, outcomes).await;
    }
    let msg = ReportRequest {
        host: host.to_string(),
        outcomes,
        done,
        answered: take_answered(host),
    };
    let Ok(body) = serde_json::to_string(&msg) else {
        return;
    };
    let Ok(stub) = object_stub(env, host) else {
        return;
    };
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    if let Ok(req) = Request::new_with_init("https://balancer/report", &init) {
        if let Err(e) = stub.fetch_with_request(req).await {
            console_error!("reporting outcomes for {host} failed: {e}");
        }
    }
}

/// Whether the request's body will stream to the backend rather than be buffered (see
/// [`read_body`]): such a request cannot be replayed on another backend.
fn streams_body(req: &web_sys::Request, incoming: &Incoming) -> bool {
    let method = incoming.method.as_str();
    if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
        return false;
    }
    match incoming
        .content_length
        .as_deref()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(n) => n > REPLAY_BODY_CAP,
        None => req.body().is_some(),
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
                })
            }
        },
    }
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
// The request facts the balanced path needs, as lines: method, URL, then per header "" when
// absent or "=value" (a header value holds no newline), then cf's country and continent.
export function fb_incoming(req, keyHeader, geo) {
  const h = req.headers;
  const v = (x) => (x === null || x === undefined ? "" : "=" + x);
  let out = `${req.method}\n${req.url}\n${v(h.get("x-flowbalance-hop"))}\n${v(h.get("upgrade"))}\n${v(h.get("cf-connecting-ip"))}\n${v(h.get("cookie"))}\n${v(h.get("connection"))}\n${v(h.get("x-forwarded-for"))}\n${v(h.get("content-length"))}\n${v(keyHeader === undefined ? null : h.get(keyHeader))}`;
  if (geo) {
    const cf = req.cf;
    out += `\n${v(cf && cf.country)}\n${v(cf && cf.continent)}`;
  }
  return out;
}

// GET /decide?query to the hostname's object; resolves to the reply's text.
export function fb_ask(env, host, query) {
  const ns = env.BALANCER;
  return ns
    .get(ns.idFromName(host))
    .fetch(`https://balancer/decide?${query}`)
    .then((r) => r.text());
}

export function fb_forward_headers(incoming, always, drop, set) {
  const out = new Headers(incoming);
  for (const name of always) out.delete(name);
  for (const name of drop) out.delete(name);
  for (let i = 0; i + 1 < set.length; i += 2) out.set(set[i], set[i + 1]);
  return out;
}

// Pipes the client's upload through a native stream (keeping its length); the promise says
// whether the client's side failed.
export function fb_watch_upload(body, length) {
  const t = length === undefined ? new IdentityTransformStream() : new FixedLengthStream(length);
  return [t.readable, pump(body, t.writable).then((m) => m !== "")];
}

// The response the client gets: a null body where HTTP wants none, the affinity cookie if any,
// and, when `watch`, a way to know the body arrived whole. A small body of known length is read
// in whole (one native read, no stream to pump, the outcome known before answering): then a
// Promise of [Response or null, "" or why the backend broke it off]. Otherwise
// [Response, undefined | Promise<"" or the backend's error>] with the body pumped through a
// native stream. With nothing to change, the backend's own Response goes back as it is.
export function fb_respond(resp, cookie, watch, bufferCap) {
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
    if (sized && Number(len) <= bufferCap) return buffered(resp, cookie);
    const t = sized ? new FixedLengthStream(Number(len)) : new IdentityTransformStream();
    done = pump(body, t.writable);
    body = t.readable;
  } else if (cookie === undefined) {
    return [resp, undefined];
  }
  return [rebuilt(resp, body, cookie), done];
}

async function buffered(resp, cookie) {
  try {
    return [rebuilt(resp, await resp.arrayBuffer(), cookie), ""];
  } catch (e) {
    return [null, String((e && e.message) || e || "stream error")];
  }
}

function rebuilt(resp, body, cookie) {
  const out = new Response(body, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
  if (cookie !== undefined) out.headers.append("set-cookie", cookie);
  return out;
}

// Copies `src` into `dst`; settles to "" when done or when the reading side went away, and to
// the error message when `src` itself failed. (pipeTo cannot tell the two apart: it rejects
// either way and keeps the source locked.)
async function pump(src, dst) {
  const reader = src.getReader();
  const writer = dst.getWriter();
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      writer.abort(e).catch(() => {});
      return String((e && e.message) || e || "stream error");
    }
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
}
"#)]
extern "C" {
    /// See [`Incoming`].
    fn fb_incoming(req: &web_sys::Request, key_header: Option<&str>, geo: bool) -> String;

    /// `Promise<string>`: the object's reply to a decide message.
    fn fb_ask(env: &JsValue, host: &str, query: &str) -> js_sys::Promise;

    /// Copies headers, deletes `drop`, sets the `[name, value, ...]` pairs: one call into the
    /// runtime instead of one per header operation (measured: ~10% of throughput).
    fn fb_forward_headers(
        incoming: &web_sys::Headers,
        always: &js_sys::Array,
        drop: Vec<String>,
        set: Vec<String>,
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
) -> web_sys::Headers {
    let drop = connection_tokens(incoming.connection.as_deref());
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
    ALWAYS_DROPPED.with(|always| fb_forward_headers(&req.headers(), always, drop, set))
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
