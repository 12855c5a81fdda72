//! The failover plan of one balanced request: fed each attempt's result, it answers what to try next, after how long, and what the client gets.

use crate::policy::rng::Rng;
use crate::policy::traffic::attempts::{Answer, Attempts, Step};
use crate::policy::traffic::decision::{Outcome, Route};
use crate::policy::traffic::retry::{
    backoff_ms, is_failure_status, is_idempotent, may_retry, status_means_unreached, Failure,
};

/// What one attempt produced, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The backend answered with a final status (200..=599).
    Answered(u16),
    /// A status no client may be given as the answer: interim (1xx) or out of range.
    Invalid(u16),
    /// No response headers within the timeout.
    Timeout,
    /// The connection failed or was lost, with the runtime's message (workerd says "Network
    /// connection lost." for a refusal and a reset alike: see [`LostKind`]).
    Lost(String),
    /// The client's own request body failed (it hung up mid-upload): nothing to blame a backend for.
    ClientAborted,
}

/// A lost connection waiting for the refusal check.
#[derive(Clone, Debug)]
struct PendingLost {
    index: usize,
    latency_ms: u64,
    message: String,
}

/// The retry and failover state of one request. Budgets: `retries` after a failed response
/// or timeout, `conn_retries` after a connection that never reached the backend.
#[derive(Clone, Debug)]
pub struct FailoverPlan {
    attempts: Attempts,
    host: String,
    method: String,
    idempotent: bool,
    replayable: bool,
    immediate_failover: bool,
    panic: bool,
    conn_left: u32,
    resp_left: u32,
    invalid_seen: bool,
    pending: Option<PendingLost>,
    /// Why the latest failed attempt failed: the reason the next attempt is a retry.
    last_reason: Option<String>,
    done: bool,
}

impl FailoverPlan {
    pub fn new(route: &Route, host: &str, method: &str, body_replayable: bool) -> Self {
        FailoverPlan {
            attempts: Attempts::new(route),
            host: host.to_string(),
            method: method.to_string(),
            idempotent: is_idempotent(method),
            replayable: body_replayable,
            immediate_failover: route.immediate_failover,
            panic: route.panic,
            conn_left: route.conn_retries,
            resp_left: route.retries,
            invalid_seen: false,
            pending: None,
            last_reason: None,
            done: false,
        }
    }

    /// The first step.
    pub fn start(&mut self) -> Step {
        self.attempts.next_try(0).unwrap_or_else(|| self.finish())
    }

    /// Feeds the result of the attempt the last `Step::Try` named.
    pub fn on_result(
        &mut self,
        index: usize,
        result: AttemptResult,
        latency_ms: u64,
        rng: &mut impl Rng,
    ) -> Step {
        if self.done {
            return self.finish();
        }
        let mut answered_status = None;
        let failure = match result {
            AttemptResult::ClientAborted => {
                self.done = true;
                return Step::Answer(Answer::Failed {
                    status: 400,
                    message: "the client's request body ended before it was complete".into(),
                    retry_after_s: None,
                });
            }
            AttemptResult::Answered(status) => {
                self.attempts.last_answer = Some(index);
                if !is_failure_status(status) {
                    self.record(index, latency_ms, None, Some(status), None);
                    self.done = true;
                    return Step::Answer(Answer::Backend(index));
                }
                answered_status = Some(status);
                if status_means_unreached(status) {
                    Failure::Connect
                } else {
                    Failure::Status(status)
                }
            }
            AttemptResult::Invalid(status) => {
                self.invalid_seen = true;
                let reason = format!("invalid status {status} (not a final HTTP status)");
                let failure = Failure::Status(status);
                self.record(index, latency_ms, Some(reason), None, Some(&failure));
                return self.after_failure(failure, rng);
            }
            AttemptResult::Timeout => Failure::Timeout,
            AttemptResult::Lost(message) => {
                let kind = LostKind::of(&message);
                // A POST that cannot be resent anyway needs no check: nothing depends on it.
                let check = kind == LostKind::Unknown
                    && (self.idempotent
                        || (self.replayable && self.could_retry(&Failure::Connect)));
                if check {
                    self.pending = Some(PendingLost {
                        index,
                        latency_ms,
                        message,
                    });
                    let url = self.attempts.url(index).unwrap_or_default().to_string();
                    return Step::CheckRefused(url);
                }
                let failure = if self.idempotent || kind.unreached() {
                    Failure::Connect
                } else {
                    // It may have arrived: never replayed.
                    Failure::Timeout
                };
                let why = kind.reason(&message);
                self.record(index, latency_ms, Some(why), None, Some(&failure));
                return self.after_failure(failure, rng);
            }
        };
        let why = describe(&failure);
        self.record(
            index,
            latency_ms,
            Some(why),
            answered_status,
            Some(&failure),
        );
        self.after_failure(failure, rng)
    }

    /// Feeds the answer to `Step::CheckRefused`: a refusing backend never took the request.
    pub fn on_refused_check(&mut self, refused: bool, rng: &mut impl Rng) -> Step {
        let Some(p) = self.pending.take() else {
            return self.finish();
        };
        let failure = if refused || self.idempotent {
            Failure::Connect
        } else {
            Failure::Timeout
        };
        let why = LostKind::checked(refused, &p.message);
        self.record(p.index, p.latency_ms, Some(why), None, Some(&failure));
        self.after_failure(failure, rng)
    }

    /// What to report to the Durable Object: one outcome per attempt that a backend is
    /// answerable for, in order.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        self.attempts.take_outcomes()
    }

    /// Attempts sent so far.
    pub fn tries(&self) -> u32 {
        self.attempts.tries()
    }

    fn record(
        &mut self,
        index: usize,
        latency_ms: u64,
        failure: Option<String>,
        status: Option<u16>,
        cause: Option<&Failure>,
    ) {
        if self.attempts.url(index).is_none() {
            return;
        }
        if let Some(f) = &failure {
            self.attempts.last_failure = f.clone();
        }
        let mut outcome = self.attempts.outcome(index, latency_ms, failure, status);
        if outcome.retry {
            outcome.retry_reason = self.last_reason.clone();
        }
        self.last_reason = cause.map(reason_label);
        self.attempts.report(outcome);
    }

    /// True when one more attempt after `failure` is allowed by the method, body and budgets.
    fn could_retry(&self, failure: &Failure) -> bool {
        let budget = match failure {
            Failure::Connect => self.conn_left,
            _ => self.resp_left,
        };
        budget > 0
            && self.attempts.has_untried()
            && may_retry(&self.method, failure, self.replayable)
    }

    fn after_failure(&mut self, failure: Failure, rng: &mut impl Rng) -> Step {
        if !self.could_retry(&failure) {
            return self.finish();
        }
        match failure {
            Failure::Connect => self.conn_left -= 1,
            _ => self.resp_left -= 1,
        }
        let wait = backoff_ms(self.tries(), &failure, self.immediate_failover, rng);
        self.attempts
            .next_try(wait)
            .unwrap_or_else(|| self.finish())
    }

    fn finish(&mut self) -> Step {
        self.done = true;
        if let Some(index) = self.attempts.last_answer {
            // The backend answered: its own error page is the most faithful reply.
            return Step::Answer(Answer::Backend(index));
        }
        let mode = if self.panic {
            " (all backends were marked unhealthy; tried anyway)"
        } else {
            ""
        };
        // 502 when a backend answered with something that is not HTTP a client can be given.
        let status = if self.invalid_seen { 502 } else { 503 };
        Step::Answer(Answer::Failed {
            status,
            message: format!(
                "no backend of \"{}\" could answer: {} attempt(s) failed, last: {}{mode}",
                self.host,
                self.attempts.tries(),
                self.attempts.last_failure
            ),
            retry_after_s: Some(5),
        })
    }
}

fn describe(f: &Failure) -> String {
    match f {
        Failure::Connect => "connection failed".to_string(),
        Failure::Timeout => "no response within the connection timeout".to_string(),
        Failure::Status(s) => format!("status {s}"),
    }
}

/// The `reason` label of a retry caused by `f`.
fn reason_label(f: &Failure) -> String {
    match f {
        Failure::Connect => "connect".to_string(),
        Failure::Timeout => "timeout".to_string(),
        Failure::Status(s @ 200..=599) => format!("status_{}xx", s / 100),
        Failure::Status(_) => "invalid_status".to_string(),
    }
}

/// What a runtime's message says of a connection that failed or was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostKind {
    Refused,
    Reset,
    /// The hostname did not resolve.
    Dns,
    /// The TLS handshake or certificate failed.
    Tls,
    /// The message does not say (workerd's "Network connection lost." covers a refusal, a
    /// reset and a drop mid-response alike).
    Unknown,
}

impl LostKind {
    /// Classifies a runtime's fetch or socket error message (workerd, Node, curl wordings).
    pub fn of(message: &str) -> LostKind {
        let m = message.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
        if has(&["refused"]) {
            LostKind::Refused
        } else if has(&["reset", "broken pipe"]) {
            LostKind::Reset
        } else if has(&["dns", "resolve", "name or service not known", "enotfound"]) {
            LostKind::Dns
        } else if has(&["tls", "ssl", "certificate", "handshake"]) {
            LostKind::Tls
        } else {
            LostKind::Unknown
        }
    }

    /// The reason for an `Unknown` loss once a fresh connection showed whether the backend
    /// refuses connections.
    pub fn checked(refused: bool, message: &str) -> String {
        if refused {
            LostKind::Refused.reason(message)
        } else {
            format!("connection lost (the backend accepts new connections): {message}")
        }
    }

    /// True when the request cannot have reached the backend's application.
    pub fn unreached(self) -> bool {
        matches!(self, LostKind::Refused | LostKind::Dns | LostKind::Tls)
    }

    /// The reason shown to operators and clients: what is known, then the runtime's words.
    pub fn reason(self, message: &str) -> String {
        match self {
            LostKind::Refused => "connection refused".to_string(),
            LostKind::Reset => format!("connection reset: {message}"),
            LostKind::Dns => format!("DNS lookup failed: {message}"),
            LostKind::Tls => format!("TLS handshake failed: {message}"),
            LostKind::Unknown => format!("connection lost or refused (not told which): {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rng::SplitMix64;
    use proptest::prelude::*;

    fn route(urls: &[&str], retries: u32, conn_retries: u32) -> Route {
        Route {
            retries,
            conn_retries,
            ..Route::to(urls)
        }
    }

    /// Runs a plan to its answer: `result(url)` is what each backend does, `refused(url)` what
    /// the refusal check finds. Returns the URLs tried (with their waits) and the answer.
    fn drive(
        plan: &mut FailoverPlan,
        result: impl Fn(&str) -> AttemptResult,
        refused: impl Fn(&str) -> bool,
    ) -> (Vec<(String, u64)>, Answer) {
        let mut rng = SplitMix64(7);
        let mut tried = Vec::new();
        let mut step = plan.start();
        let mut current = 0;
        for _ in 0..100 {
            step = match step {
                Step::Try {
                    index,
                    url,
                    wait_ms,
                    ..
                } => {
                    current = index;
                    tried.push((url.clone(), wait_ms));
                    plan.on_result(index, result(&url), 3, &mut rng)
                }
                Step::CheckRefused(url) => {
                    assert_eq!(url, tried.last().unwrap().0);
                    plan.on_refused_check(refused(&url), &mut rng)
                }
                Step::Answer(a) => {
                    let _ = current;
                    return (tried, a);
                }
            };
        }
        panic!("plan did not finish");
    }

    fn urls(tried: &[(String, u64)]) -> Vec<&str> {
        tried.iter().map(|t| t.0.as_str()).collect()
    }

    #[test]
    fn success_first_try_reports_one_success() {
        let mut p = FailoverPlan::new(&route(&["a", "b"], 1, 2), "h.test", "GET", true);
        let (tried, answer) = drive(&mut p, |_| AttemptResult::Answered(200), |_| false);
        assert_eq!(tried, [("a".to_string(), 0)]);
        assert_eq!(answer, Answer::Backend(0));
        let o = p.take_outcomes();
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].failure.as_deref(), o[0].retry), (None, false));
    }

    #[test]
    fn get_fails_over_on_status_then_connection_then_answers() {
        let mut p = FailoverPlan::new(&route(&["a", "b", "c"], 1, 2), "h.test", "GET", true);
        let (tried, answer) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Answered(503),
                "b" => AttemptResult::Lost("Network connection lost.".into()),
                _ => AttemptResult::Answered(200),
            },
            |u| {
                assert_eq!(u, "b", "only the ambiguous loss is checked");
                true
            },
        );
        // A 503 backs off (seeded jitter); a lost connection of a GET fails over at once.
        assert_eq!(tried, [("a".into(), 0), ("b".into(), 10), ("c".into(), 0)]);
        assert_eq!(answer, Answer::Backend(2));
        let o = p.take_outcomes();
        let failures: Vec<Option<&str>> = o.iter().map(|o| o.failure.as_deref()).collect();
        assert_eq!(
            failures,
            [Some("status 503"), Some("connection refused"), None]
        );
        assert_eq!(
            o.iter().map(|o| o.retry).collect::<Vec<_>>(),
            [false, true, true]
        );
        // The metrics see each attempt's status and why each retry happened.
        let statuses: Vec<Option<u16>> = o.iter().map(|o| o.status).collect();
        assert_eq!(statuses, [Some(503), None, Some(200)]);
        let reasons: Vec<Option<&str>> = o.iter().map(|o| o.retry_reason.as_deref()).collect();
        assert_eq!(reasons, [None, Some("status_5xx"), Some("connect")]);
    }

    #[test]
    fn response_budget_exhausted_gives_last_real_answer() {
        let mut p = FailoverPlan::new(&route(&["a", "b", "c"], 1, 5), "h.test", "GET", true);
        let (tried, answer) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Answered(502),
                _ => AttemptResult::Answered(504),
            },
            |_| false,
        );
        assert_eq!(urls(&tried), ["a", "b"]);
        assert_eq!(answer, Answer::Backend(1));
    }

    #[test]
    fn last_real_answer_survives_a_later_timeout() {
        let mut p = FailoverPlan::new(&route(&["a", "b"], 3, 3), "h.test", "GET", true);
        let (tried, answer) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Answered(503),
                _ => AttemptResult::Timeout,
            },
            |_| false,
        );
        assert_eq!(urls(&tried), ["a", "b"]);
        assert_eq!(answer, Answer::Backend(0));
    }

    #[test]
    fn post_that_may_have_arrived_is_not_replayed() {
        for r in [
            AttemptResult::Timeout,
            AttemptResult::Answered(503),
            AttemptResult::Invalid(100),
        ] {
            let mut p = FailoverPlan::new(&route(&["a", "b"], 3, 3), "h.test", "POST", true);
            let (tried, _) = drive(&mut p, |_| r.clone(), |_| true);
            assert_eq!(urls(&tried), ["a"], "{r:?}");
        }
        // Lost connection, but the backend still accepts connections: it may have the request.
        let mut p = FailoverPlan::new(&route(&["a", "b"], 3, 3), "h.test", "POST", true);
        let (tried, answer) = drive(&mut p, |_| AttemptResult::Lost("x".into()), |_| false);
        assert_eq!(urls(&tried), ["a"]);
        match answer {
            Answer::Failed {
                status, message, ..
            } => {
                assert_eq!(status, 503);
                assert_eq!(
                    message,
                    "no backend of \"h.test\" could answer: 1 attempt(s) failed, last: connection lost (the backend accepts new connections): x"
                );
            }
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn post_refused_at_connect_is_replayed() {
        let mut p = FailoverPlan::new(&route(&["a", "b"], 0, 1), "h.test", "POST", true);
        let (tried, answer) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Lost("refused".into()),
                _ => AttemptResult::Answered(201),
            },
            |u| u == "a",
        );
        assert_eq!(urls(&tried), ["a", "b"]);
        assert_eq!(answer, Answer::Backend(1));
        // A 521 (Cloudflare: origin refused) is also proof the request never arrived.
        let mut p = FailoverPlan::new(&route(&["a", "b"], 0, 1), "h.test", "POST", true);
        let (tried, _) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Answered(521),
                _ => AttemptResult::Answered(200),
            },
            |_| false,
        );
        assert_eq!(urls(&tried), ["a", "b"]);
    }

    #[test]
    fn streamed_body_is_sent_once_even_to_a_refusing_backend() {
        // An idempotent request's loss is checked only to name its cause.
        let mut p = FailoverPlan::new(&route(&["a", "b"], 3, 3), "h.test", "PUT", false);
        let (tried, answer) = drive(&mut p, |_| AttemptResult::Lost("x".into()), |_| true);
        assert_eq!(urls(&tried), ["a"]);
        assert!(matches!(answer, Answer::Failed { status: 503, .. }));
        let mut p = FailoverPlan::new(&route(&["a", "b"], 3, 3), "h.test", "PATCH", false);
        let (tried, _) = drive(
            &mut p,
            |_| AttemptResult::Lost("x".into()),
            |_| panic!("no check: a streamed body cannot be resent"),
        );
        assert_eq!(urls(&tried), ["a"]);
    }

    #[test]
    fn invalid_status_fails_over_and_ends_in_502_when_nothing_answers() {
        let mut p = FailoverPlan::new(&route(&["a", "b"], 1, 1), "h.test", "GET", true);
        let (tried, answer) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Invalid(100),
                _ => AttemptResult::Answered(200),
            },
            |_| false,
        );
        assert_eq!(urls(&tried), ["a", "b"]);
        assert_eq!(answer, Answer::Backend(1));
        let mut p = FailoverPlan::new(&route(&["a", "b"], 1, 1), "h.test", "GET", true);
        let (_, answer) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Invalid(600),
                _ => AttemptResult::Timeout,
            },
            |_| false,
        );
        match answer {
            Answer::Failed {
                status, message, ..
            } => {
                assert_eq!(status, 502);
                assert!(message.contains("2 attempt(s) failed"), "{message}");
            }
            a => panic!("{a:?}"),
        }
        let o = p.take_outcomes();
        assert_eq!(
            o[0].failure.as_deref(),
            Some("invalid status 600 (not a final HTTP status)")
        );
    }

    #[test]
    fn client_abort_blames_no_backend() {
        let mut p = FailoverPlan::new(&route(&["a", "b"], 3, 3), "h.test", "PUT", false);
        let (tried, answer) = drive(&mut p, |_| AttemptResult::ClientAborted, |_| false);
        assert_eq!(urls(&tried), ["a"]);
        assert!(matches!(answer, Answer::Failed { status: 400, .. }));
        assert!(p.take_outcomes().is_empty());
    }

    #[test]
    fn duplicate_backends_are_tried_once() {
        let mut p = FailoverPlan::new(&route(&["a", "a", "b", "a"], 5, 5), "h.test", "GET", true);
        let (tried, _) = drive(&mut p, |_| AttemptResult::Timeout, |_| false);
        assert_eq!(urls(&tried), ["a", "b"]);
        assert_eq!(p.tries(), 2);
    }

    #[test]
    fn no_attempts_is_a_503() {
        let mut p = FailoverPlan::new(&route(&[], 1, 1), "h.test", "GET", true);
        let (tried, answer) = drive(&mut p, |_| AttemptResult::Timeout, |_| false);
        assert!(tried.is_empty());
        assert!(matches!(answer, Answer::Failed { status: 503, .. }));
    }

    fn any_result() -> impl Strategy<Value = AttemptResult> {
        prop_oneof![
            prop::sample::select(vec![200u16, 201, 404, 500, 502, 503, 504, 521, 522, 524])
                .prop_map(AttemptResult::Answered),
            prop::sample::select(vec![100u16, 101, 103, 199, 600, 999])
                .prop_map(AttemptResult::Invalid),
            Just(AttemptResult::Timeout),
            Just(AttemptResult::Lost("lost".into())),
        ]
    }

    /// A result that proves the request never reached the backend.
    fn unreached(r: &AttemptResult, refused: bool) -> bool {
        match r {
            AttemptResult::Answered(s) => status_means_unreached(*s),
            AttemptResult::Lost(_) => refused,
            _ => false,
        }
    }

    fn connect_class(r: &AttemptResult, refused: bool, idempotent: bool) -> bool {
        match r {
            AttemptResult::Answered(s) => status_means_unreached(*s),
            AttemptResult::Lost(_) => idempotent || refused,
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn failover_properties(
            picks in prop::collection::vec(0usize..5, 0..7),
            results in prop::collection::vec(any_result(), 5),
            refused in prop::collection::vec(any::<bool>(), 5),
            retries in 0u32..4,
            conn_retries in 0u32..4,
            idempotent: bool,
            replayable: bool,
            seed: u64,
        ) {
            let names: Vec<String> = picks.iter().map(|i| format!("b{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let method = if idempotent { "DELETE" } else { "PATCH" };
            let mut plan = FailoverPlan::new(&route(&refs, retries, conn_retries), "h.test", method, replayable);
            let of = |url: &str| url[1..].parse::<usize>().unwrap();
            let mut rng = SplitMix64(seed);
            let mut tried: Vec<usize> = Vec::new();
            let mut step = plan.start();
            let answer = loop {
                step = match step {
                    Step::Try { index, url, .. } => {
                        prop_assert_eq!(&names[index], &url);
                        // Before a retry: the previous attempt must allow one.
                        if let Some(&prev) = tried.last() {
                            prop_assert!(replayable, "a streamed body was sent twice");
                            prop_assert!(idempotent || unreached(&results[prev], refused[prev]),
                                "a request that may have reached {} was sent again", prev);
                        }
                        tried.push(of(&url));
                        plan.on_result(index, results[of(&url)].clone(), 1, &mut rng)
                    }
                    Step::CheckRefused(url) => {
                        // Idempotent: only to name the cause. Otherwise only when a replay could follow.
                        prop_assert!(idempotent || replayable);
                        plan.on_refused_check(refused[of(&url)], &mut rng)
                    }
                    Step::Answer(a) => break a,
                };
            };
            // Each backend at most once.
            let mut distinct = tried.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), tried.len());
            // Budgets: retries after connection-class failures and after the others.
            let (mut conn, mut resp) = (0, 0);
            for w in tried.windows(2) {
                if connect_class(&results[w[0]], refused[w[0]], idempotent) { conn += 1 } else { resp += 1 }
            }
            prop_assert!(conn <= conn_retries && resp <= retries, "conn {} resp {}", conn, resp);
            // The last real answer reaches the client.
            let last_answered = tried.iter().rposition(|&b| matches!(results[b], AttemptResult::Answered(_)));
            match (last_answered, &answer) {
                (Some(k), Answer::Backend(i)) => prop_assert_eq!(of(&names[*i]), tried[k]),
                (None, Answer::Failed { status, .. }) => prop_assert!(*status == 502 || *status == 503),
                (k, a) => prop_assert!(false, "last answered {:?}, answer {:?}", k, a),
            }
            // One report per attempt.
            prop_assert_eq!(plan.take_outcomes().len(), tried.len());
        }
    }

    #[test]
    fn runtime_messages_are_classified_and_say_what_is_known() {
        for (message, kind) in [
            ("connect(): Connection refused", LostKind::Refused),
            ("ECONNREFUSED 127.0.0.1:9", LostKind::Refused),
            ("Connection reset by peer", LostKind::Reset),
            ("write EPIPE: broken pipe", LostKind::Reset),
            ("DNS lookup failed.", LostKind::Dns),
            ("getaddrinfo ENOTFOUND nope.invalid", LostKind::Dns),
            ("TLS peer's certificate is not trusted", LostKind::Tls),
            ("Network connection lost.", LostKind::Unknown),
            ("", LostKind::Unknown),
        ] {
            assert_eq!(LostKind::of(message), kind, "{message:?}");
        }
        assert_eq!(LostKind::Refused.reason("x"), "connection refused");
        assert_eq!(
            LostKind::Unknown.reason("Network connection lost."),
            "connection lost or refused (not told which): Network connection lost."
        );
        assert!(LostKind::Dns.unreached() && !LostKind::Reset.unreached());
    }

    #[test]
    fn a_refusal_the_message_names_needs_no_check_and_a_reset_post_is_not_replayed() {
        let mut p = FailoverPlan::new(&route(&["a", "b"], 0, 1), "h.test", "POST", true);
        let (tried, answer) = drive(
            &mut p,
            |u| match u {
                "a" => AttemptResult::Lost("connect(): Connection refused".into()),
                _ => AttemptResult::Answered(201),
            },
            |_| panic!("the message said refused"),
        );
        assert_eq!((urls(&tried), answer), (vec!["a", "b"], Answer::Backend(1)));
        assert_eq!(
            p.take_outcomes()[0].failure.as_deref(),
            Some("connection refused")
        );
        let mut p = FailoverPlan::new(&route(&["a", "b"], 0, 1), "h.test", "POST", true);
        let (tried, _) = drive(
            &mut p,
            |_| AttemptResult::Lost("Connection reset by peer".into()),
            |_| panic!("the message said reset"),
        );
        assert_eq!(urls(&tried), ["a"]);
    }

    #[test]
    fn a_lost_get_is_checked_only_to_name_the_cause() {
        let mut p = FailoverPlan::new(&route(&["a", "b"], 0, 1), "h.test", "GET", true);
        let (tried, answer) = drive(
            &mut p,
            |_| AttemptResult::Lost("Network connection lost.".into()),
            |u| u == "a",
        );
        assert_eq!(urls(&tried), ["a", "b"], "a GET fails over either way");
        let Answer::Failed { message, .. } = answer else {
            panic!("{answer:?}")
        };
        assert!(
            message.ends_with("last: connection lost (the backend accepts new connections): Network connection lost."),
            "{message}"
        );
        let o = p.take_outcomes();
        assert_eq!(o[0].failure.as_deref(), Some("connection refused"));
    }
}
