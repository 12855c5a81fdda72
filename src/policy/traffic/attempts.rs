//! The bookkeeping a failover plan and an upgrade plan share: the route's candidates in order, each URL tried once, the attempts counted, and one outcome per attempt to report.

use std::collections::HashSet;

use crate::policy::traffic::decision::{Outcome, Route};

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the request to `route.attempts[index]` after waiting `wait_ms`.
    Try {
        index: usize,
        url: String,
        wait_ms: u64,
        trial: bool,
    },
    /// A connection was lost and the runtime's message does not say how: find out whether the
    /// backend refuses fresh TCP connections (then it never took the request, and a POST may be
    /// replayed; either way the reason names it) and call [`FailoverPlan::on_refused_check`](crate::policy::traffic::failover::FailoverPlan::on_refused_check).
    CheckRefused(String),
    /// Done: what the client gets.
    Answer(Answer),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The response of `route.attempts[index]`: the last real answer a backend gave.
    Backend(usize),
    /// No backend gave an answer the client can have.
    Failed {
        status: u16,
        message: String,
        retry_after_s: Option<u64>,
    },
}

/// The attempts of one request over a route's candidates.
#[derive(Clone, Debug)]
pub struct Attempts {
    /// The candidates in order: URL and whether it is a trial request to a recovering backend.
    urls: Vec<(String, bool)>,
    /// Next position in `urls` to consider.
    next: usize,
    tried: HashSet<String>,
    tries: u32,
    /// The attempt whose response is the latest answer a backend gave.
    pub last_answer: Option<usize>,
    /// Why the latest failed attempt failed, for the client's error message.
    pub last_failure: String,
    outcomes: Vec<Outcome>,
}

impl Attempts {
    pub fn new(route: &Route) -> Self {
        Attempts {
            urls: route
                .attempts
                .iter()
                .map(|a| (a.url.clone(), a.trial))
                .collect(),
            next: 0,
            tried: HashSet::new(),
            tries: 0,
            last_answer: None,
            last_failure: "no backend to try".to_string(),
            outcomes: Vec::new(),
        }
    }

    /// The next candidate whose URL has not been tried yet, counted as an attempt.
    pub fn next_try(&mut self, wait_ms: u64) -> Option<Step> {
        while let Some((url, trial)) = self.urls.get(self.next).cloned() {
            let index = self.next;
            self.next += 1;
            if self.tried.insert(url.clone()) {
                self.tries += 1;
                return Some(Step::Try {
                    index,
                    url,
                    wait_ms,
                    trial,
                });
            }
        }
        None
    }

    /// True when a candidate is left whose URL has not been tried.
    pub fn has_untried(&self) -> bool {
        self.urls[self.next.min(self.urls.len())..]
            .iter()
            .any(|(u, _)| !self.tried.contains(u))
    }

    /// The URL of candidate `index`, if there is one.
    pub fn url(&self, index: usize) -> Option<&str> {
        self.urls.get(index).map(|u| u.0.as_str())
    }

    /// The outcome of attempt `index` (a retry unless it is the first attempt); an unknown
    /// index gives an empty URL.
    pub fn outcome(
        &self,
        index: usize,
        latency_ms: u64,
        failure: Option<String>,
        status: Option<u16>,
    ) -> Outcome {
        let (url, trial) = self.urls.get(index).cloned().unwrap_or_default();
        Outcome {
            url,
            failure,
            latency_ms,
            trial,
            retry: self.tries > 1,
            count: 1,
            status,
            retry_reason: None,
        }
    }

    /// Adds an outcome to report.
    pub fn report(&mut self, outcome: Outcome) {
        self.outcomes.push(outcome);
    }

    /// Reports the outcome of attempt `index`, as [`Attempts::outcome`] builds it.
    pub fn record(
        &mut self,
        index: usize,
        latency_ms: u64,
        failure: Option<String>,
        status: Option<u16>,
    ) {
        self.report(self.outcome(index, latency_ms, failure, status));
    }

    /// What to report to the Durable Object: the outcomes recorded so far, in order.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// Attempts sent so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(urls: &[&str]) -> Route {
        let mut r = Route::to(urls);
        for a in &mut r.attempts {
            a.trial = a.url == "t";
        }
        r
    }

    fn index(step: Option<Step>) -> Option<usize> {
        match step? {
            Step::Try { index, .. } => Some(index),
            other => panic!("expected a try, got {other:?}"),
        }
    }

    #[test]
    fn each_url_is_tried_once_in_order_and_counted() {
        let mut a = Attempts::new(&route(&["a", "a", "t", "a"]));
        assert_eq!(index(a.next_try(0)), Some(0));
        assert!(a.has_untried());
        assert_eq!(
            a.next_try(25),
            Some(Step::Try {
                index: 2,
                url: "t".into(),
                wait_ms: 25,
                trial: true
            })
        );
        assert!(!a.has_untried());
        assert_eq!(index(a.next_try(0)), None);
        assert_eq!(a.tries(), 2);
    }

    #[test]
    fn outcomes_after_the_first_attempt_are_retries_and_are_taken_once() {
        let mut a = Attempts::new(&route(&["a", "b"]));
        a.next_try(0);
        let first = a.outcome(0, 3, Some("status 503".into()), Some(503));
        assert_eq!((first.url.as_str(), first.retry), ("a", false));
        a.report(first);
        a.next_try(0);
        let second = a.outcome(1, 4, None, Some(200));
        assert_eq!((second.url.as_str(), second.retry), ("b", true));
        a.record(1, 4, None, Some(200));
        assert_eq!(a.take_outcomes()[1], second);
        assert_eq!(a.url(1), Some("b"));
        assert_eq!(a.url(2), None);
        assert_eq!(a.outcome(7, 0, None, None).url, "");
        assert!(a.take_outcomes().is_empty());
    }
}
