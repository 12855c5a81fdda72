//! Circuit breaker of one backend: closed/open/half-open states, single-trial admission, and a bucketed error-rate window.

use serde::{Deserialize, Serialize};

// Settings come straight from the config type: one home for their defaults.
use crate::policy::control::config::BreakerConfig;

/// A trial that has not reported back after this long (or the recovery timeout, if longer)
/// is presumed lost (isolate evicted, request dropped) so the breaker cannot wedge half-open.
pub const LOST_TRIAL_MIN_MS: u64 = 30_000;
/// Growing re-open waits are capped at this multiple of the recovery timeout...
pub const MAX_BACKOFF_FACTOR: u64 = 16;
/// ...and at one hour, so a long outage still gets probed regularly.
pub const MAX_OPEN_MS: u64 = 3_600_000;
/// Number of buckets in the error-rate window: memory stays O(1), resolution window_ms / 10.
pub const WINDOW_BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { trial_started_ms: Option<u64> },
}

/// Answer of `Breaker::admit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admit {
    Yes,
    /// Allowed as the single half-open trial; its outcome decides close vs re-open.
    Trial,
    No,
}

/// State change worth logging/broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transition {
    Opened { until_ms: u64 },
    HalfOpened,
    Closed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    /// `now_ms / width_ms` of the interval this bucket counts.
    epoch: u64,
    requests: u32,
    failures: u32,
}

/// Sliding window of (requests, failures) in `WINDOW_BUCKETS` buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Bucket width the counts were recorded with; if the configured window changes, old
    /// counts are discarded rather than misread against a different width.
    width_ms: u64,
    buckets: [Bucket; WINDOW_BUCKETS],
}

impl Window {
    fn width_for(window_ms: u64) -> u64 {
        (window_ms / WINDOW_BUCKETS as u64).max(1)
    }

    fn record(&mut self, requests: u32, failures: u32, now_ms: u64, window_ms: u64) {
        let width = Self::width_for(window_ms);
        if self.width_ms != width {
            *self = Window {
                width_ms: width,
                ..Window::default()
            };
        }
        let epoch = now_ms / width;
        let b = &mut self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        // An older epoch in the slot is stale: reuse it. A newer one means the clock went
        // back a whole window; counting into it keeps the data instead of dropping it.
        if b.epoch < epoch || (b.requests == 0 && b.failures == 0) {
            *b = Bucket {
                epoch,
                requests: 0,
                failures: 0,
            };
        }
        b.requests = b.requests.saturating_add(requests);
        b.failures = b.failures.saturating_add(failures);
    }

    /// (requests, failures) recorded in the last `WINDOW_BUCKETS` buckets up to `now_ms`.
    fn totals(&self, now_ms: u64, window_ms: u64) -> (u64, u64) {
        let width = Self::width_for(window_ms);
        if self.width_ms != width {
            return (0, 0);
        }
        let epoch = now_ms / width;
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < WINDOW_BUCKETS as u64)
            .fold((0, 0), |(r, f), b| {
                (r + u64::from(b.requests), f + u64::from(b.failures))
            })
    }
}

/// Circuit breaker of one backend, persisted in the Durable Object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Re-opens since the breaker was last closed; drives the growing wait.
    pub reopen_count: u32,
    pub window: Window,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    pub fn new() -> Self {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            reopen_count: 0,
            window: Window::default(),
        }
    }

    fn lost_trial_ms(p: &BreakerConfig) -> u64 {
        p.recovery_timeout_ms.max(LOST_TRIAL_MIN_MS)
    }

    /// May a request (or probe) go to this backend now? Closed: Yes. Open and due: moves to
    /// HalfOpen and returns Trial (exactly one caller gets it). HalfOpen with a trial in
    /// flight: No, unless that trial is presumed lost, then a fresh Trial. Open before due: No.
    pub fn admit(&mut self, now_ms: u64, p: &BreakerConfig) -> Admit {
        self.admit_traced(now_ms, p).0
    }

    /// `admit`, also reporting the Open -> HalfOpen transition for logging.
    pub fn admit_traced(&mut self, now_ms: u64, p: &BreakerConfig) -> (Admit, Option<Transition>) {
        match self.state {
            BreakerState::Closed => (Admit::Yes, None),
            BreakerState::Open { until_ms } if now_ms >= until_ms => {
                self.state = BreakerState::HalfOpen {
                    trial_started_ms: Some(now_ms),
                };
                (Admit::Trial, Some(Transition::HalfOpened))
            }
            BreakerState::Open { .. } => (Admit::No, None),
            BreakerState::HalfOpen { trial_started_ms } => {
                let free = match trial_started_ms {
                    None => true,
                    Some(t) => now_ms.saturating_sub(t) > Self::lost_trial_ms(p),
                };
                if free {
                    self.state = BreakerState::HalfOpen {
                        trial_started_ms: Some(now_ms),
                    };
                    (Admit::Trial, None)
                } else {
                    (Admit::No, None)
                }
            }
        }
    }

    /// For a breaker that is not closed: how long until `admit` could hand out a trial (0: now).
    /// None when closed. Lease mode sends requests to the object from then, so the trial stays single.
    pub fn trial_in_ms(&self, now_ms: u64, p: &BreakerConfig) -> Option<u64> {
        match self.state {
            BreakerState::Closed => None,
            BreakerState::Open { until_ms } => Some(until_ms.saturating_sub(now_ms)),
            BreakerState::HalfOpen {
                trial_started_ms: None,
            } => Some(0),
            BreakerState::HalfOpen {
                trial_started_ms: Some(t),
            } => Some(
                t.saturating_add(Self::lost_trial_ms(p))
                    .saturating_add(1)
                    .saturating_sub(now_ms),
            ),
        }
    }

    /// Would `admit` say Yes or Trial now? Does not change state (for building candidate lists).
    pub fn available(&self, now_ms: u64, p: &BreakerConfig) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until_ms } => now_ms >= until_ms,
            BreakerState::HalfOpen {
                trial_started_ms: None,
            } => true,
            BreakerState::HalfOpen {
                trial_started_ms: Some(t),
            } => now_ms.saturating_sub(t) > Self::lost_trial_ms(p),
        }
    }

    pub fn on_success(&mut self, now_ms: u64, p: &BreakerConfig) -> Option<Transition> {
        self.on_successes(1, now_ms, p)
    }

    /// `n` successes at once (the Worker batches success reports); same as `n` calls of
    /// `on_success`, returning the first transition, in O(1).
    pub fn on_successes(&mut self, n: u32, now_ms: u64, p: &BreakerConfig) -> Option<Transition> {
        if n == 0 {
            return None;
        }
        match self.state {
            // Stale in-flight request that started before the breaker opened: it proves
            // little about the backend now, so the open period runs its course.
            BreakerState::Open { .. } => None,
            BreakerState::Closed => {
                self.consecutive_failures = 0;
                self.window.record(n, 0, now_ms, p.window_ms);
                None
            }
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Closed;
                self.consecutive_failures = 0;
                self.reopen_count = 0;
                // Forget the failures that opened the breaker; otherwise the first failure
                // after closing would re-open it on the stale error rate.
                self.window = Window::default();
                self.window.record(n, 0, now_ms, p.window_ms);
                Some(Transition::Closed)
            }
        }
    }

    /// Active health checks saw the backend healthy again (`consecutive_up` good probes): close
    /// an open or half-open breaker now rather than wait out the recovery timeout, as Envoy
    /// un-ejects a host on a successful active check.
    pub fn close_on_probes(&mut self) -> Option<Transition> {
        if self.state == BreakerState::Closed {
            return None;
        }
        self.state = BreakerState::Closed;
        self.consecutive_failures = 0;
        self.reopen_count = 0;
        self.window = Window::default();
        Some(Transition::Closed)
    }

    pub fn on_failure(&mut self, now_ms: u64, p: &BreakerConfig) -> Option<Transition> {
        match self.state {
            // Stale in-flight failure: already open, and extending `until` would let a burst
            // of late reports starve the backend of its trial.
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen { .. } => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.reopen_count = self.reopen_count.saturating_add(1);
                let until_ms = now_ms.saturating_add(Self::reopen_wait_ms(self.reopen_count, p));
                self.state = BreakerState::Open { until_ms };
                Some(Transition::Opened { until_ms })
            }
            BreakerState::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.window.record(1, 1, now_ms, p.window_ms);
                if self.consecutive_failures >= p.failure_threshold.max(1)
                    || self.error_rate_exceeded(now_ms, p)
                {
                    let until_ms = now_ms.saturating_add(p.recovery_timeout_ms);
                    self.state = BreakerState::Open { until_ms };
                    Some(Transition::Opened { until_ms })
                } else {
                    None
                }
            }
        }
    }

    /// Wait after the `reopen_count`-th failed trial: recovery * 2^reopen_count, capped at
    /// 16x recovery and at one hour (but never below the plain recovery timeout).
    pub fn reopen_wait_ms(reopen_count: u32, p: &BreakerConfig) -> u64 {
        let base = p.recovery_timeout_ms;
        let cap = base
            .saturating_mul(MAX_BACKOFF_FACTOR)
            .min(MAX_OPEN_MS)
            .max(base);
        // 2^5 already exceeds the 16x cap, so larger shifts are never needed.
        let factor = 1u64 << reopen_count.min(5);
        base.saturating_mul(factor).min(cap)
    }

    fn error_rate_exceeded(&self, now_ms: u64, p: &BreakerConfig) -> bool {
        // NaN threshold compares false: the rule is simply off.
        self.error_rate(now_ms, p)
            .is_some_and(|rate| rate > p.error_rate_threshold)
    }

    /// Open and still inside its wait (a due Open breaker is about to admit a trial).
    pub fn is_open(&self, now_ms: u64) -> bool {
        matches!(self.state, BreakerState::Open { until_ms } if now_ms < until_ms)
    }

    /// Failure percentage over the window; None while it holds fewer than `min_requests`.
    pub fn error_rate(&self, now_ms: u64, p: &BreakerConfig) -> Option<f64> {
        let (requests, failures) = self.window.totals(now_ms, p.window_ms);
        if requests == 0 || requests < u64::from(p.min_requests) {
            return None;
        }
        Some(failures as f64 * 100.0 / requests as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            recovery_timeout_ms: 10_000,
            error_rate_threshold: 50.0,
            min_requests: 10,
            window_ms: 10_000,
        }
    }

    /// Consecutive-only params: the error-rate rule can never fire.
    fn consecutive_only() -> BreakerConfig {
        BreakerConfig {
            min_requests: u32::MAX,
            ..params()
        }
    }

    #[test]
    fn good_probes_close_an_open_breaker_before_its_timeout() {
        let p = params();
        let mut b = Breaker::new();
        for t in 0..3 {
            b.on_failure(t, &p);
        }
        assert!(b.is_open(10));
        assert_eq!(b.close_on_probes(), Some(Transition::Closed));
        assert_eq!(b.admit(11, &p), Admit::Yes);
        assert_eq!(b.close_on_probes(), None, "already closed");
        // A fresh failure after closing does not re-open on the stale window.
        assert_eq!(b.on_failure(12, &p), None);
    }

    #[test]
    fn opens_at_threshold_and_refuses_while_open() {
        let p = consecutive_only();
        let mut b = Breaker::new();
        assert_eq!(b.admit(0, &p), Admit::Yes);
        assert_eq!(b.on_failure(100, &p), None);
        assert_eq!(b.on_failure(200, &p), None);
        assert_eq!(
            b.on_failure(300, &p),
            Some(Transition::Opened { until_ms: 10_300 })
        );
        assert!(b.is_open(300));
        assert!(b.is_open(10_299));
        assert!(!b.is_open(10_300));
        assert_eq!(b.admit(301, &p), Admit::No);
        assert_eq!(b.admit(10_299, &p), Admit::No);
        assert!(!b.available(10_299, &p));
        assert!(b.available(10_300, &p));
    }

    #[test]
    fn success_resets_consecutive_failures() {
        let p = consecutive_only();
        let mut b = Breaker::new();
        b.on_failure(0, &p);
        b.on_failure(1, &p);
        assert_eq!(b.on_success(2, &p), None);
        assert_eq!(b.consecutive_failures, 0);
        assert_eq!(b.on_failure(3, &p), None);
        assert_eq!(b.on_failure(4, &p), None);
        assert_eq!(b.state, BreakerState::Closed);
    }

    fn opened_at_0(p: &BreakerConfig) -> Breaker {
        let mut b = Breaker::new();
        for _ in 0..3 {
            b.on_failure(0, p);
        }
        assert_eq!(b.state, BreakerState::Open { until_ms: 10_000 });
        b
    }

    #[test]
    fn exactly_one_trial_then_success_closes() {
        let p = consecutive_only();
        let mut b = opened_at_0(&p);
        assert_eq!(
            b.admit_traced(10_000, &p),
            (Admit::Trial, Some(Transition::HalfOpened))
        );
        assert_eq!(
            b.state,
            BreakerState::HalfOpen {
                trial_started_ms: Some(10_000)
            }
        );
        assert!(!b.available(10_001, &p));
        assert_eq!(b.admit(10_001, &p), Admit::No);
        assert_eq!(b.admit(20_000, &p), Admit::No);
        assert!(!b.is_open(10_001));
        assert_eq!(b.on_success(10_050, &p), Some(Transition::Closed));
        assert_eq!(b.state, BreakerState::Closed);
        assert_eq!((b.reopen_count, b.consecutive_failures), (0, 0));
        assert_eq!(b.admit(10_051, &p), Admit::Yes);
    }

    #[test]
    fn failed_trials_reopen_with_doubling_wait_up_to_cap() {
        let p = consecutive_only();
        let mut b = opened_at_0(&p);
        let mut now = 10_000;
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert_eq!(b.admit(now, &p), Admit::Trial);
            match b.on_failure(now + 10, &p) {
                Some(Transition::Opened { until_ms }) => {
                    waits.push(until_ms - (now + 10));
                    assert_eq!(b.admit(until_ms - 1, &p), Admit::No);
                    now = until_ms;
                }
                other => panic!("expected re-open, got {other:?}"),
            }
        }
        assert_eq!(
            waits,
            [20_000, 40_000, 80_000, 160_000, 160_000, 160_000, 160_000]
        );
        assert_eq!(b.reopen_count, 7);
        // A successful trial resets the growth.
        assert_eq!(b.admit(now, &p), Admit::Trial);
        assert_eq!(b.on_success(now, &p), Some(Transition::Closed));
        assert_eq!(b.reopen_count, 0);
    }

    #[test]
    fn reopen_wait_caps() {
        let p = BreakerConfig {
            recovery_timeout_ms: 600_000,
            ..params()
        };
        assert_eq!(Breaker::reopen_wait_ms(1, &p), 1_200_000);
        assert_eq!(Breaker::reopen_wait_ms(2, &p), 2_400_000);
        assert_eq!(Breaker::reopen_wait_ms(3, &p), MAX_OPEN_MS);
        assert_eq!(Breaker::reopen_wait_ms(u32::MAX, &p), MAX_OPEN_MS);
        // A recovery timeout above an hour is never shortened by the hour cap.
        let p = BreakerConfig {
            recovery_timeout_ms: 2 * MAX_OPEN_MS,
            ..params()
        };
        assert_eq!(Breaker::reopen_wait_ms(4, &p), 2 * MAX_OPEN_MS);
        let p = BreakerConfig {
            recovery_timeout_ms: u64::MAX,
            ..params()
        };
        assert_eq!(Breaker::reopen_wait_ms(9, &p), u64::MAX);
    }

    #[test]
    fn lost_trial_is_readmitted() {
        let p = consecutive_only(); // recovery 10 s < 30 s floor
        let mut b = opened_at_0(&p);
        assert_eq!(b.admit(10_000, &p), Admit::Trial);
        assert_eq!(b.admit(40_000, &p), Admit::No); // exactly 30 s: not yet lost
        assert!(b.available(40_001, &p));
        assert_eq!(b.admit(40_001, &p), Admit::Trial);
        assert_eq!(b.admit(40_002, &p), Admit::No);
        // With a long recovery timeout the lost-trial wait follows it.
        let p = BreakerConfig {
            recovery_timeout_ms: 60_000,
            ..consecutive_only()
        };
        let mut b = Breaker {
            state: BreakerState::HalfOpen {
                trial_started_ms: Some(0),
            },
            ..Breaker::new()
        };
        assert_eq!(b.admit(60_000, &p), Admit::No);
        assert_eq!(b.admit(60_001, &p), Admit::Trial);
        // A half-open breaker with no trial recorded hands one out.
        let mut b = Breaker {
            state: BreakerState::HalfOpen {
                trial_started_ms: None,
            },
            ..Breaker::new()
        };
        assert_eq!(b.admit(5, &p), Admit::Trial);
        assert_eq!(b.admit(6, &p), Admit::No);
    }

    #[test]
    fn error_rate_opens_only_with_min_requests() {
        let p = BreakerConfig {
            failure_threshold: 100,
            ..params()
        };
        let mut b = Breaker::new();
        // 4 ok, then failures interleaved with successes so consecutive never reaches 100.
        b.on_successes(4, 0, &p);
        for t in 1..=5 {
            // 5 failures / 9 requests = 55% but only 9 < 10 requests.
            assert_eq!(b.on_failure(t, &p), None, "t={t}");
        }
        assert_eq!(b.error_rate(5, &p), None);
        // 10th request is a failure: 6/10 = 60% > 50%.
        assert_eq!(
            b.on_failure(6, &p),
            Some(Transition::Opened { until_ms: 10_006 })
        );
        assert_eq!(b.error_rate(6, &p), Some(60.0));
    }

    #[test]
    fn error_rate_at_threshold_does_not_open() {
        let p = BreakerConfig {
            failure_threshold: 100,
            ..params()
        };
        let mut b = Breaker::new();
        b.on_successes(5, 0, &p);
        for t in 0..4 {
            assert_eq!(b.on_failure(t, &p), None);
        }
        assert_eq!(b.on_failure(4, &p), None); // 5/10 = 50%, not > 50%
        assert_eq!(b.error_rate(4, &p), Some(50.0));
        assert_eq!(b.state, BreakerState::Closed);
    }

    #[test]
    fn window_expiry_forgets_old_failures() {
        let p = BreakerConfig {
            failure_threshold: 100,
            ..params()
        }; // window 10 s, buckets of 1 s
        let mut b = Breaker::new();
        for t in 0..9 {
            assert_eq!(b.on_failure(t, &p), None);
        }
        assert_eq!(b.error_rate(9_999, &p), None); // 9 requests
                                                   // Bucket [0, 1000) drops out at 10_000.
        assert_eq!(b.error_rate(10_000, &p), None);
        b.on_successes(20, 10_000, &p);
        // Old failures are gone: one failure among 21 requests.
        assert_eq!(b.on_failure(10_001, &p), None);
        let rate = b.error_rate(10_001, &p).unwrap();
        assert!((rate - 100.0 / 21.0).abs() < 1e-9);
        assert_eq!(b.state, BreakerState::Closed);
    }

    #[test]
    fn window_keeps_recent_buckets() {
        let p = BreakerConfig {
            failure_threshold: 100,
            min_requests: 2,
            ..params()
        };
        let mut b = Breaker::new();
        b.on_success(0, &p);
        b.on_success(9_999, &p);
        assert_eq!(b.error_rate(9_999, &p), Some(0.0));
        assert_eq!(b.error_rate(10_000, &p), None); // first bucket expired
                                                    // Changing the window size discards counts recorded with the old width.
        let p2 = BreakerConfig {
            window_ms: 20_000,
            ..p.clone()
        };
        assert_eq!(b.error_rate(9_999, &p2), None);
    }

    #[test]
    fn stale_reports_while_open_are_ignored() {
        let p = consecutive_only();
        let mut b = opened_at_0(&p);
        let before = b.clone();
        assert_eq!(b.on_success(5, &p), None);
        assert_eq!(b.on_successes(50, 6, &p), None);
        assert_eq!(b.on_failure(7, &p), None);
        assert_eq!(b, before);
        assert_eq!(b.state, BreakerState::Open { until_ms: 10_000 });
        // Even past `until`, a report does not itself transition; admit does.
        assert_eq!(b.on_success(10_500, &p), None);
        assert_eq!(b.admit(10_500, &p), Admit::Trial);
    }

    #[test]
    fn closing_clears_window() {
        let p = BreakerConfig {
            failure_threshold: 100,
            min_requests: 4,
            ..params()
        };
        let mut b = Breaker::new();
        for t in 0..4 {
            b.on_failure(t, &p);
        }
        assert!(b.is_open(4));
        assert_eq!(b.admit(10_003, &p), Admit::Trial);
        assert_eq!(b.on_success(10_004, &p), Some(Transition::Closed));
        assert_eq!(b.on_failure(10_005, &p), None); // 1 of 2: below min_requests
        assert_eq!(b.state, BreakerState::Closed);
    }

    #[test]
    fn degenerate_params_do_not_panic() {
        let p = BreakerConfig {
            failure_threshold: 0,
            recovery_timeout_ms: 0,
            error_rate_threshold: f64::NAN,
            min_requests: 0,
            window_ms: 0,
        };
        let mut b = Breaker::new();
        assert_eq!(
            b.on_failure(u64::MAX, &p),
            Some(Transition::Opened { until_ms: u64::MAX })
        );
        assert_eq!(b.admit(u64::MAX, &p), Admit::Trial);
        assert_eq!(
            b.on_failure(u64::MAX, &p),
            Some(Transition::Opened { until_ms: u64::MAX })
        );
        assert_eq!(b.error_rate(0, &p), None);
    }

    #[test]
    fn serde_roundtrip() {
        let p = params();
        let mut b = Breaker::new();
        b.on_successes(3, 1_234, &p);
        b.on_failure(2_345, &p);
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Breaker>(&s).unwrap(), b);
        let b = opened_at_0(&consecutive_only());
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Breaker>(&s).unwrap(), b);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Admit,
        Success,
        Failure,
    }

    fn op() -> impl Strategy<Value = (Op, u64)> {
        (
            prop_oneof![Just(Op::Admit), Just(Op::Success), Just(Op::Failure)],
            0u64..3_000,
        )
    }

    proptest! {
        #[test]
        fn on_successes_equals_repeated_on_success(
            prefix in proptest::collection::vec(op(), 0..40),
            n in 0u32..30,
            dt in 0u64..3_000,
        ) {
            let p = BreakerConfig {
                failure_threshold: 3,
                recovery_timeout_ms: 1_000,
                error_rate_threshold: 40.0,
                min_requests: 5,
                window_ms: 5_000,
            };
            let mut b = Breaker::new();
            let mut now = 0u64;
            for (o, step) in prefix {
                now += step;
                match o {
                    Op::Admit => { b.admit(now, &p); }
                    Op::Success => { b.on_success(now, &p); }
                    Op::Failure => { b.on_failure(now, &p); }
                }
            }
            now += dt;
            let mut one_by_one = b.clone();
            let mut first = None;
            for _ in 0..n {
                let t = one_by_one.on_success(now, &p);
                if first.is_none() { first = t; }
            }
            let bulk = b.on_successes(n, now, &p);
            prop_assert_eq!(bulk, first);
            prop_assert_eq!(b, one_by_one);
        }

        #[test]
        fn available_matches_admit(
            prefix in proptest::collection::vec(op(), 0..40),
            dt in 0u64..100_000,
        ) {
            let p = consecutive_only();
            let mut b = Breaker::new();
            let mut now = 0u64;
            for (o, step) in prefix {
                now += step * 10;
                match o {
                    Op::Admit => { b.admit(now, &p); }
                    Op::Success => { b.on_success(now, &p); }
                    Op::Failure => { b.on_failure(now, &p); }
                }
            }
            now += dt;
            let avail = b.available(now, &p);
            let a = b.admit(now, &p);
            prop_assert_eq!(avail, a != Admit::No);
            // Never two trials in a row at the same instant.
            if a == Admit::Trial {
                prop_assert_eq!(b.admit(now, &p), Admit::No);
            }
        }
    }
}
