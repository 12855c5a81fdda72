//! The failover plan of one WebSocket upgrade: only the connection attempt fails over (a backend that refuses the upgrade or the connection is skipped); a connected socket is never retried.

use crate::policy::traffic::attempts::Attempts;
use crate::policy::traffic::attempts::{Answer, Step};
use crate::policy::traffic::decision::{Outcome, Route};
use crate::policy::traffic::failover::LostKind;
use crate::policy::traffic::retry::is_failure_status;

/// What one upgrade attempt produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeResult {
    /// 101 Switching Protocols with a socket: connected.
    Switched,
    /// The backend answered, but not with an upgrade (a plain page, 426, 503...).
    Refused(u16),
    /// No answer: connection refused or lost, or no answer within the timeout.
    Lost(String),
}

/// Tries the route's candidates in order, at most `1 + conn_retries` of them, with no backoff:
/// nothing has been exchanged with a backend that refused, so the next one is tried at once.
#[derive(Clone, Debug)]
pub struct UpgradePlan {
    /// `last_answer` is the attempt whose (non-upgrade) answer is the latest a backend gave.
    attempts: Attempts,
    host: String,
    left: u32,
}

impl UpgradePlan {
    pub fn new(route: &Route, host: &str) -> Self {
        UpgradePlan {
            attempts: Attempts::new(route),
            host: host.to_string(),
            left: route.conn_retries.saturating_add(1),
        }
    }

    pub fn start(&mut self) -> Step {
        self.next_try().unwrap_or_else(|| self.finish())
    }

    /// Feeds the result of the attempt the last `Step::Try` named. `Answer::Backend(i)` after
    /// `Switched` means "connected to i"; after refusals, "give the client i's answer".
    pub fn on_result(&mut self, index: usize, result: UpgradeResult, latency_ms: u64) -> Step {
        match result {
            UpgradeResult::Switched => return Step::Answer(Answer::Backend(index)),
            UpgradeResult::Refused(status) => {
                self.attempts.last_answer = Some(index);
                // A backend that answers is up; only a failing status counts against it.
                let failure = is_failure_status(status).then(|| format!("status {status}"));
                self.attempts.last_failure =
                    format!("answered {status} instead of 101 Switching Protocols");
                self.attempts
                    .record(index, latency_ms, failure, Some(status));
            }
            UpgradeResult::Lost(message) => {
                // No fresh-connection check here: an upgrade fails over whatever the cause.
                let why = LostKind::of(&message).reason(&message);
                self.attempts.last_failure = why.clone();
                self.attempts.record(index, latency_ms, Some(why), None);
            }
        }
        self.next_try().unwrap_or_else(|| self.finish())
    }

    /// The outcome of the connected attempt, to report when its socket closes (`failure`: the
    /// backend's side broke off). Until then the connection counts as in flight.
    pub fn closed(&self, index: usize, latency_ms: u64, failure: Option<String>) -> Outcome {
        self.attempts.outcome(index, latency_ms, failure, Some(101))
    }

    /// Outcomes of the attempts that did not connect, in order.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        self.attempts.take_outcomes()
    }

    pub fn tries(&self) -> u32 {
        self.attempts.tries()
    }

    fn next_try(&mut self) -> Option<Step> {
        if self.left == 0 {
            return None;
        }
        let step = self.attempts.next_try(0)?;
        self.left -= 1;
        Some(step)
    }

    fn finish(&mut self) -> Step {
        self.left = 0;
        if let Some(index) = self.attempts.last_answer {
            // The backend's own refusal (a 404, a 426) says most about why there is no socket.
            return Step::Answer(Answer::Backend(index));
        }
        Step::Answer(Answer::Failed {
            status: 502,
            message: format!(
                "no backend of \"{}\" accepted the WebSocket upgrade: {} attempt(s), last: {}",
                self.host,
                self.attempts.tries(),
                self.attempts.last_failure
            ),
            retry_after_s: Some(5),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(urls: &[&str], conn_retries: u32) -> Route {
        Route {
            conn_retries,
            ..Route::to(urls)
        }
    }

    fn tried(step: &Step) -> usize {
        match step {
            Step::Try { index, wait_ms, .. } => {
                assert_eq!(*wait_ms, 0);
                *index
            }
            other => panic!("expected a try, got {other:?}"),
        }
    }

    #[test]
    fn connects_to_the_first_that_switches_and_reports_the_refusals() {
        let r = route(&["a", "b", "c"], 2);
        let mut p = UpgradePlan::new(&r, "h.test");
        assert_eq!(tried(&p.start()), 0);
        assert_eq!(
            tried(&p.on_result(0, UpgradeResult::Lost("refused".into()), 3)),
            1
        );
        assert_eq!(tried(&p.on_result(1, UpgradeResult::Refused(200), 4)), 2);
        assert_eq!(
            p.on_result(2, UpgradeResult::Switched, 5),
            Step::Answer(Answer::Backend(2))
        );
        let out = p.take_outcomes();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].url, "a");
        assert!(out[0].failure.as_deref().unwrap().contains("refused"));
        // A backend that answers without upgrading is up: not a failure.
        assert_eq!((out[1].url.as_str(), out[1].failure.as_ref()), ("b", None));
        let done = p.closed(2, 5, None);
        assert_eq!((done.url.as_str(), done.retry), ("c", true));
        assert_eq!(p.tries(), 3);
    }

    #[test]
    fn a_failing_status_counts_against_the_backend() {
        let mut p = UpgradePlan::new(&route(&["a", "b"], 1), "h.test");
        p.start();
        p.on_result(0, UpgradeResult::Refused(503), 1);
        assert_eq!(p.take_outcomes()[0].failure.as_deref(), Some("status 503"));
    }

    #[test]
    fn all_refusing_gives_the_last_answer_and_none_answering_a_502() {
        let mut p = UpgradePlan::new(&route(&["a", "b"], 5), "h.test");
        p.start();
        p.on_result(0, UpgradeResult::Refused(426), 1);
        assert_eq!(
            p.on_result(1, UpgradeResult::Lost("reset".into()), 1),
            Step::Answer(Answer::Backend(0))
        );
        let mut p = UpgradePlan::new(&route(&["a", "a", "b"], 5), "h.test");
        assert_eq!(tried(&p.start()), 0);
        assert_eq!(
            tried(&p.on_result(0, UpgradeResult::Lost("x".into()), 1)),
            2
        );
        match p.on_result(2, UpgradeResult::Lost("y".into()), 1) {
            Step::Answer(Answer::Failed {
                status, message, ..
            }) => {
                assert_eq!(status, 502);
                assert!(
                    message.contains("\"h.test\"") && message.contains("y"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.tries(), 2, "a repeated URL is tried once");
    }

    #[test]
    fn no_candidates_is_a_502() {
        let mut p = UpgradePlan::new(&route(&[], 2), "h.test");
        assert!(matches!(
            p.start(),
            Step::Answer(Answer::Failed { status: 502, .. })
        ));
    }

    proptest! {
        #[test]
        fn never_more_than_one_plus_conn_retries_attempts(n in 1usize..8, conn in 0u32..8) {
            let urls: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
            let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
            let mut p = UpgradePlan::new(&route(&refs, conn), "h");
            let mut step = p.start();
            let mut tries = 0;
            while let Step::Try { index, .. } = step {
                tries += 1;
                step = p.on_result(index, UpgradeResult::Lost("x".into()), 1);
            }
            prop_assert_eq!(tries, n.min(conn as usize + 1));
            prop_assert_eq!(p.take_outcomes().len(), tries);
        }
    }
}
