//! The outcome reporter: finished requests' tickets, batched successes, answer tallies, outcome and lease reports to the object, tail lines and request-log rows.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use js_sys::futures::JsFuture;
use wasm_bindgen::JsValue;
use worker::*;

use crate::platform::edge::{forward, lease};
use crate::platform::object::tail as tail_route;
use crate::platform::{now_ms, object_stub};
use crate::policy::control::config::Logging;
use crate::policy::telemetry::answers::{Answered, Source};
use crate::policy::telemetry::metrics;
use crate::policy::telemetry::record::{self, Asker, FailedAttempt, Kept, LogRow, RequestRecord};
use crate::policy::telemetry::tail::{self, RequestLine};
use crate::policy::traffic::decision::{Outcome, ReportRequest};

/// What the traffic rules did to a request, as its report needs it.
#[derive(Clone, Copy, Default)]
pub struct Ruled<'a> {
    /// The rule that decided the request (logged with its row).
    pub decided_by: Option<&'a str>,
    /// The rules that applied, when this Worker decided under its lease: the Worker counts them
    /// (the object counts the rules of the decisions it makes).
    pub counted_here: &'a [String],
}

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

/// Responses given to one hostname's clients, not yet sent to its object.
#[derive(Default)]
struct PendingAnswers {
    tally: BTreeMap<(u16, Source), u32>,
    /// Traffic-rule matches of requests decided under a lease (the object counts its own).
    rules: BTreeMap<String, u64>,
    /// A flush timer is running for this hostname.
    timer: bool,
    /// When a message to the object last carried the tally.
    carried_ms: u64,
}

/// Answers not carried by a decision or report within this long go in a report of their own.
const ANSWER_FLUSH_MS: u64 = 1000;

/// The answers to carry on a message to the object now.
pub(super) fn take_answered(host: &str) -> Vec<Answered> {
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

/// The traffic-rule matches to carry on a report now.
fn take_rule_hits(host: &str) -> Vec<(String, u64)> {
    ANSWERED.with(|a| {
        a.borrow_mut()
            .get_mut(host)
            .map(|p| std::mem::take(&mut p.rules).into_iter().collect())
            .unwrap_or_default()
    })
}

/// The tickets to carry on a message to the object now.
pub(super) fn take_done(host: &str) -> Vec<u64> {
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
    /// Finished requests' tickets per hostname (see [`Reporter::complete`]).
    static DONE: RefCell<HashMap<String, PendingDone>> = RefCell::new(HashMap::new());
    /// Responses given to clients per hostname, carried like successes (see
    /// [`Reporter::count_answer`]).
    static ANSWERED: RefCell<HashMap<String, PendingAnswers>> = RefCell::new(HashMap::new());
    /// Successful outcomes per hostname, batched here and carried on the next decision request,
    /// so a healthy request costs no extra Durable Object round trip.
    static PENDING_OK: RefCell<HashMap<String, SuccessTally>> = RefCell::new(HashMap::new());
    /// Sampled successes per hostname, carried on the next report (see [`Reporter::answered`]).
    static SAMPLES: RefCell<HashMap<String, PendingSamples>> = RefCell::new(HashMap::new());
}

/// Sampled successes of one hostname not yet sent, and how many this minute took.
#[derive(Default)]
struct PendingSamples {
    rows: Vec<LogRow>,
    /// A send timer is running.
    timer: bool,
    minute: u64,
    taken: u32,
}

/// Samples wait at most this long for a report to carry them, then go in one of their own: at
/// most one extra object request a second per isolate, and only while sampling.
const SAMPLE_FLUSH_MS: u64 = 1000;

/// The sampled successes to carry on a report now.
fn take_samples(host: &str) -> Vec<LogRow> {
    SAMPLES.with(|s| {
        s.borrow_mut()
            .get_mut(host)
            .map(|p| std::mem::take(&mut p.rows))
            .unwrap_or_default()
    })
}

/// Reports what became of one request to `host`: every outcome of the request path goes
/// through here, sent now, batched for the next decision, or sent after the response.
pub struct Reporter<'a> {
    pub env: &'a Env,
    pub ctx: &'a Context,
    pub host: &'a str,
}

impl Reporter<'_> {
    /// A request counted as outstanding (its route carried `ticket`) has finished: its response
    /// went out whole, failed, or (for a WebSocket) the connection closed. The ticket rides on
    /// this isolate's next decision for the hostname; if no decision comes within
    /// [`DONE_FLUSH_MS`], a timer sends it in a report of its own.
    pub fn complete(&self, ticket: Option<u64>) {
        let Some(ticket) = ticket else {
            return;
        };
        let arm = DONE.with(|d| {
            let mut d = d.borrow_mut();
            let p = d.entry(self.host.to_string()).or_default();
            p.tickets.push(ticket);
            !std::mem::replace(&mut p.timer, true)
        });
        if arm {
            let env = self.env.clone();
            let host = self.host.to_string();
            self.ctx.wait_until(async move {
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

    /// Counts a response given to a client of the hostname for `flowbalance_responses_total`.
    /// The tally rides on this isolate's next decision or report for the hostname; a timer
    /// sends what no message carried once the hostname has been quiet for [`ANSWER_FLUSH_MS`]
    /// (or after [`DONE_FLUSH_ROUNDS`] of them under steady traffic).
    pub fn count_answer(&self, code: u16, source: Source) {
        self.count(code, source, &[]);
    }

    /// Counts a response as [`Reporter::count_answer`] does, and the traffic rules a Worker's
    /// own decision (under a lease) applied to its request; they ride on the next report.
    pub fn count(&self, code: u16, source: Source, rules_matched: &[String]) {
        let arm = ANSWERED.with(|a| {
            let mut a = a.borrow_mut();
            // Keys are allocated only the first time they are seen (this runs per request).
            if !a.contains_key(self.host) {
                a.insert(self.host.to_string(), Default::default());
            }
            let Some(p) = a.get_mut(self.host) else {
                return false;
            };
            *p.tally.entry((code, source)).or_default() += 1;
            for rule in rules_matched {
                match p.rules.get_mut(rule) {
                    Some(n) => *n += 1,
                    None => {
                        p.rules.insert(rule.clone(), 1);
                    }
                }
            }
            !std::mem::replace(&mut p.timer, true)
        });
        if !arm {
            return;
        }
        let env = self.env.clone();
        let host = self.host.to_string();
        self.ctx.wait_until(async move {
            for round in 1..=DONE_FLUSH_ROUNDS {
                Delay::from(Duration::from_millis(ANSWER_FLUSH_MS)).await;
                // Ok(true): send now; Ok(false): nothing left; Err: messages are flowing, look again.
                // Batched successes go too: an idle hostname's last successes must not wait
                // for a next request to be counted.
                let successes =
                    PENDING_OK.with(|p| p.borrow().get(&host).is_some_and(|t| t.count > 0));
                let due = ANSWERED.with(|a| {
                    let mut a = a.borrow_mut();
                    let Some(p) = a.get_mut(&host) else {
                        return Ok(successes);
                    };
                    let idle = now_ms().saturating_sub(p.carried_ms) >= ANSWER_FLUSH_MS;
                    let pending = !p.tally.is_empty() || !p.rules.is_empty() || successes;
                    if !pending || idle || round == DONE_FLUSH_ROUNDS {
                        p.timer = false;
                        return Ok(pending);
                    }
                    Err(())
                });
                match due {
                    Ok(true) => {
                        let successes = take_successes(&host, true);
                        return send_report(&env, &host, successes, Vec::new()).await;
                    }
                    Ok(false) => return,
                    Err(()) => {}
                }
            }
        });
    }

    /// Failures and trials go to the Durable Object after the response, off the client's path.
    pub fn flush(&self, reports: Vec<Outcome>) {
        if reports.is_empty() {
            return;
        }
        // Earlier successes go first, so "consecutive failures" in the DO means consecutive.
        let mut all = take_successes(self.host, true);
        all.extend(reports);
        let done = take_done(self.host);
        let env = self.env.clone();
        let host = self.host.to_string();
        self.ctx
            .wait_until(async move { send_reports(&env, &host, all, done).await });
    }

    /// The answering attempt's body has gone through (`broken`: "" or why the backend broke it
    /// off): a success waits in the batch, a failure is reported now.
    pub fn body_done(&self, outcome: Outcome, broken: &str) {
        self.flush(body_reports(self.host, outcome, broken));
    }

    /// Reports the answering attempt once its body has streamed (`done` settles to "" or why the
    /// backend broke it off; a client hanging up is not the backend's doing). The request's
    /// ticket, if counted, completes then too.
    pub fn body_streamed(&self, outcome: Outcome, ticket: Option<u64>, done: js_sys::Promise) {
        let env = self.env.clone();
        let host = self.host.to_string();
        let finished: Vec<u64> = ticket.into_iter().collect();
        self.ctx.wait_until(async move {
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

    /// A relayed WebSocket closed (`closed` settles to "" or why the backend's side broke off):
    /// its outcome, after earlier successes, and its ticket go to the object.
    pub fn socket_closed(
        &self,
        outcome: impl FnOnce(String) -> Outcome + 'static,
        ticket: Option<u64>,
        closed: js_sys::Promise,
    ) {
        let env = self.env.clone();
        let host = self.host.to_string();
        self.ctx.wait_until(async move {
            let broken = JsFuture::from(closed)
                .await
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default();
            let mut reports = take_successes(&host, true);
            reports.push(outcome(broken));
            send_reports(&env, &host, reports, ticket.into_iter().collect()).await;
        });
    }

    /// Background work after a decision in lease mode: hands back replaced leases at once, and
    /// refreshes the lease (carrying the batched successes) from half way through it, so
    /// requests seldom wait for the object.
    pub fn lease_upkeep(&self) {
        let lease::Upkeep { hand_back, refresh } = lease::upkeep(self.host);
        if let Some(ids) = hand_back {
            let env = self.env.clone();
            let host = self.host.to_string();
            self.ctx.wait_until(async move {
                lease::exchange(&env, &host, Vec::new(), ids, false).await;
            });
        }
        if refresh {
            let env = self.env.clone();
            let host = self.host.to_string();
            self.ctx.wait_until(async move {
                let successes = take_successes(&host, true);
                lease::exchange(&env, &host, successes, Vec::new(), true).await;
            });
        }
    }

    /// A request FlowBalance refused itself (a rule's 403/429, 421, a loop's 508): counted, shown
    /// to a listening tail (`why`), and kept in the request log before the client is answered.
    pub async fn refused(
        &self,
        method: String,
        path: &str,
        asker: Asker,
        status: u16,
        why: Option<String>,
    ) {
        let request = RequestRecord {
            ts_ms: now_ms(),
            method,
            path: tail::bounded_path(path),
            status,
            backend: None,
            attempts: 0,
            latency_ms: 0,
        };
        if let Some(why) = why {
            let line = RequestLine {
                request: request.clone(),
                why,
            };
            tail_route::report_line(self.env, self.ctx, self.host, line);
        }
        self.count_answer(status, Source::Flowbalance);
        self.keep(request, asker, Vec::new(), Kept::Refused, None)
            .await;
    }

    /// A forwarded request answered: counted, shown to a listening tail (`why`), and logged when
    /// `log` says so: a failure, retry or slow request before the client is answered (so a
    /// runtime stop right after loses none), a sampled success with the next report.
    #[allow(clippy::too_many_arguments)]
    pub async fn answered(
        &self,
        request: RequestRecord,
        asker: Asker,
        source: Source,
        failed: Vec<FailedAttempt>,
        why: Option<String>,
        log: &Logging,
        rules: Ruled<'_>,
    ) {
        self.count(request.status, source, rules.counted_here);
        let rule = rules.decided_by.map(str::to_string);
        // Only while a tail listens (the decision said why): its line goes to the object.
        if let Some(why) = why {
            let line = RequestLine {
                request: RequestRecord {
                    method: request.method.clone(),
                    path: tail::bounded_path(&request.path),
                    backend: request.backend.clone(),
                    ..request
                },
                why: tail::answered_why(&why, request.attempts),
            };
            tail_route::report_line(self.env, self.ctx, self.host, line);
        }
        // Refusals come through `refused`: whatever FlowBalance answers here (502/503 when no
        // backend could) is an error.
        match record::keep(&request, !failed.is_empty(), false, log.slow_ms) {
            Some(kept) => self.keep(request, asker, failed, kept, rule).await,
            None => self.sample(request, asker, log, rule),
        }
    }

    /// A request a traffic rule answered itself (`respond`, `redirect`): counted as FlowBalance's
    /// answer, shown to a listening tail, logged with the rule's name like any answer FlowBalance
    /// makes (kept as refused when it is an error status, else sampled as a success).
    pub async fn rule_answered(
        &self,
        request: RequestRecord,
        asker: Asker,
        why: Option<String>,
        rule: &str,
        counted_here: &[String],
        log: &Logging,
    ) {
        self.count(request.status, Source::Flowbalance, counted_here);
        if let Some(why) = why {
            let line = RequestLine {
                request: RequestRecord {
                    path: tail::bounded_path(&request.path),
                    ..request.clone()
                },
                why,
            };
            tail_route::report_line(self.env, self.ctx, self.host, line);
        }
        let rule = Some(rule.to_string());
        if request.status >= 400 {
            self.keep(request, asker, Vec::new(), Kept::Refused, rule)
                .await;
        } else {
            self.sample(request, asker, log, rule);
        }
    }

    /// Hands a row that must be kept to the object, which stores it before answering: it is
    /// written to D1 from there, in a batch, whatever happens to this isolate afterwards.
    async fn keep(
        &self,
        mut request: RequestRecord,
        asker: Asker,
        failed: Vec<FailedAttempt>,
        kept: Kept,
        rule: Option<String>,
    ) {
        request.path = tail::bounded_path(&request.path);
        let row = LogRow {
            rule,
            asker: bounded(asker),
            hostname: self.host.to_string(),
            request,
            failed,
            kept: Some(kept),
        };
        if let Err(e) = post(self.env, self.host, "log", &[row]).await {
            console_error!("request log: a kept row of {} was lost: {e}", self.host);
        }
    }

    /// Picks a success for the log at `log.success_sample_rate`, at most
    /// `log.max_success_rows_per_minute` a minute from this isolate; it rides on the next report.
    fn sample(&self, request: RequestRecord, asker: Asker, log: &Logging, rule: Option<String>) {
        if log.success_sample_rate <= 0.0 || js_sys::Math::random() >= log.success_sample_rate {
            return;
        }
        let minute = request.ts_ms / 60_000;
        let arm = SAMPLES.with(|s| {
            let mut s = s.borrow_mut();
            let p = s.entry(self.host.to_string()).or_default();
            if p.minute != minute {
                p.minute = minute;
                p.taken = 0;
            }
            if p.taken >= log.max_success_rows_per_minute {
                return false;
            }
            p.taken += 1;
            p.rows.push(LogRow {
                hostname: self.host.to_string(),
                request: RequestRecord {
                    path: tail::bounded_path(&request.path),
                    ..request
                },
                failed: Vec::new(),
                kept: Some(Kept::Sampled),
                rule,
                asker: bounded(asker),
            });
            !std::mem::replace(&mut p.timer, true)
        });
        if !arm {
            return;
        }
        let env = self.env.clone();
        let host = self.host.to_string();
        self.ctx.wait_until(async move {
            Delay::from(Duration::from_millis(SAMPLE_FLUSH_MS)).await;
            let pending = SAMPLES.with(|s| {
                let mut s = s.borrow_mut();
                let Some(p) = s.get_mut(&host) else {
                    return false;
                };
                p.timer = false;
                !p.rows.is_empty()
            });
            if pending {
                send_report(&env, &host, take_successes(&host, true), Vec::new()).await;
            }
        });
    }
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

/// What is due once the answering attempt's body has gone through (`broken`: "" or why the
/// backend broke it off): nothing for a success that waits in the batch, else the reports to
/// send now, earlier successes first so "consecutive failures" in the object stays true.
fn body_reports(host: &str, mut outcome: Outcome, broken: &str) -> Vec<Outcome> {
    if broken.is_empty() {
        return batch_success(host, outcome).into_iter().collect();
    }
    forward::body_broke(&outcome.url);
    outcome.failure = Some(format!("response body broken off: {broken}"));
    let mut reports = take_successes(host, true);
    reports.push(outcome);
    reports
}

/// Sends outcomes and finished requests' tickets to the object (`POST /report`).
async fn send_reports(env: &Env, host: &str, outcomes: Vec<Outcome>, done: Vec<u64>) {
    // Lease mode: failures eject the backend here at once, and the reply is a fresh lease.
    if done.is_empty() && !outcomes.is_empty() && lease::holding(host) {
        return lease::report(env, host, outcomes).await;
    }
    send_report(env, host, outcomes, done).await
}

/// `POST /report`: outcomes, tickets, answer tallies and samples, in either mode.
async fn send_report(env: &Env, host: &str, outcomes: Vec<Outcome>, done: Vec<u64>) {
    let msg = ReportRequest {
        rule_hits: take_rule_hits(host),
        host: host.to_string(),
        outcomes,
        done,
        answered: take_answered(host),
        samples: take_samples(host),
    };
    if let Err(e) = post(env, host, "report", &msg).await {
        console_error!("reporting outcomes for {host} failed: {e}");
    }
}

/// `POST /<path>` of `msg` as JSON to the hostname's object.
async fn post(env: &Env, host: &str, path: &str, msg: &impl serde::Serialize) -> Result<()> {
    let body = serde_json::to_string(msg)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let req = Request::new_with_init(&format!("https://balancer/{path}"), &init)?;
    object_stub(env, host)?.fetch_with_request(req).await?;
    Ok(())
}

/// The query kept no longer than a path is (a client chooses its length).
fn bounded(asker: Asker) -> Asker {
    Asker {
        query: asker.query.as_deref().map(tail::bounded_path),
        ..asker
    }
}
