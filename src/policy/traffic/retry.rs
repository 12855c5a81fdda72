//! Retry and failover decisions: which failures count, which requests may be replayed, backoff, and the retry budget.

use serde::{Deserialize, Serialize};

use crate::policy::rng::Rng;

/// How an attempt against one backend failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The request never reached the backend (refused, reset before send, DNS).
    Connect,
    /// No response headers in time; the backend may or may not have acted on the request.
    Timeout,
    /// The backend (or Cloudflare in front of it) answered with a failure status.
    Status(u16),
}

/// Statuses that mean "this backend failed": 502, 503, 504, and Cloudflare's 520..=527 and
/// 530. 500 is deliberately absent: it is usually an application error that another
/// replica would repeat.
pub fn is_failure_status(status: u16) -> bool {
    matches!(status, 502..=504 | 520..=527 | 530)
}

/// Cloudflare statuses that say the edge never got a connection to the origin (521 refused,
/// 522 connect timeout, 523 unreachable, 525/526 TLS handshake): the request was not delivered,
/// so even a POST may be replayed. 520 and 524 are absent: the origin may have seen those.
pub fn status_means_unreached(status: u16) -> bool {
    matches!(status, 521 | 522 | 523 | 525 | 526)
}

/// GET HEAD OPTIONS PUT DELETE TRACE, case-insensitively (RFC 9110 idempotent methods).
pub fn is_idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// May this failed attempt be retried on another backend? Idempotent methods: on any
/// failure. Non-idempotent methods only on `Connect` (the backend never saw the request).
/// Either way the body must be replayable (buffered, or absent): a streamed body has been
/// consumed by the first attempt, and resending it would send an empty or truncated body.
pub fn may_retry(method: &str, failure: &Failure, body_replayable: bool) -> bool {
    body_replayable && (is_idempotent(method) || matches!(failure, Failure::Connect))
}

/// Base of the exponential backoff between retries.
pub const BACKOFF_BASE_MS: u64 = 25;
/// Upper bound of any single backoff: retries happen inside one client request.
pub const BACKOFF_CAP_MS: u64 = 250;
/// Bodies up to 1 MiB are buffered so a POST refused at connect can be replayed.
pub const REPLAY_BODY_CAP: usize = 1 << 20;

/// Delay before retry number `attempt` (1-based; 0 is treated as 1). 0 when failing over
/// immediately after a `Connect` failure (nothing reached the backend, so there is nothing
/// to back off from); otherwise "full jitter", uniform in
/// [0, min(cap, base * 2^(attempt-1))], which spreads retry storms best (AWS architecture blog).
pub fn backoff_ms(
    attempt: u32,
    failure: &Failure,
    immediate_failover: bool,
    rng: &mut impl Rng,
) -> u64 {
    if immediate_failover && matches!(failure, Failure::Connect) {
        return 0;
    }
    // 2^4 * 25 already exceeds the cap, so larger exponents are clamped to avoid overflow.
    let exp = attempt.saturating_sub(1).min(16);
    let ceiling = BACKOFF_BASE_MS
        .saturating_mul(1u64 << exp)
        .min(BACKOFF_CAP_MS);
    rng.below(ceiling + 1)
}

/// Number of buckets of the budget window.
const BUDGET_BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct BudgetBucket {
    epoch: u64,
    requests: u32,
    retries: u32,
}

/// Retry budget (Finagle/linkerd style): retries may be at most `ratio` of recent requests
/// plus a floor of `min_per_s` per second, over a sliding window of `window_ms`, kept in
/// `BUDGET_BUCKETS` buckets (O(1) memory). Original requests are recorded with
/// `record_request`; retries are recorded only as spent, not as requests, so retries
/// cannot earn further retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryBudget {
    ratio: f64,
    min_per_s: u32,
    window_ms: u64,
    buckets: [BudgetBucket; BUDGET_BUCKETS],
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(0.2, 10, 10_000)
    }
}

impl RetryBudget {
    /// A non-finite or negative `ratio` becomes 0 (NaN would also not survive a JSON
    /// round-trip); `window_ms` below one bucket per millisecond is raised to that.
    pub fn new(ratio: f64, min_per_s: u32, window_ms: u64) -> Self {
        let ratio = if ratio.is_finite() && ratio > 0.0 {
            ratio
        } else {
            0.0
        };
        RetryBudget {
            ratio,
            min_per_s,
            window_ms: window_ms.max(BUDGET_BUCKETS as u64),
            buckets: [BudgetBucket::default(); BUDGET_BUCKETS],
        }
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    pub fn min_per_s(&self) -> u32 {
        self.min_per_s
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    fn width(&self) -> u64 {
        (self.window_ms / BUDGET_BUCKETS as u64).max(1)
    }

    fn bucket(&mut self, now_ms: u64) -> &mut BudgetBucket {
        let epoch = now_ms / self.width();
        let b = &mut self.buckets[(epoch % BUDGET_BUCKETS as u64) as usize];
        // Older epoch: the slot's interval has left the window, reuse it. Newer epoch (clock
        // went back a whole window): keep counting into it rather than lose data.
        if b.epoch < epoch || (b.requests == 0 && b.retries == 0) {
            *b = BudgetBucket {
                epoch,
                requests: 0,
                retries: 0,
            };
        }
        b
    }

    fn totals(&self, now_ms: u64) -> (u64, u64) {
        let epoch = now_ms / self.width();
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < BUDGET_BUCKETS as u64)
            .fold((0, 0), |(q, r), b| {
                (q + u64::from(b.requests), r + u64::from(b.retries))
            })
    }

    pub fn record_request(&mut self, now_ms: u64) {
        let b = self.bucket(now_ms);
        b.requests = b.requests.saturating_add(1);
    }

    /// How many retries may be spent now: floor(ratio * requests) + min_per_s * window
    /// seconds, minus retries already spent in the window.
    pub fn available(&self, now_ms: u64) -> u32 {
        let (requests, retries) = self.totals(now_ms);
        // f64 -> u64 `as` saturates, so a huge ratio cannot wrap.
        let earned = (requests as f64 * self.ratio).floor() as u64;
        let floor = u64::from(self.min_per_s).saturating_mul(self.window_ms) / 1000;
        let allowed = earned.saturating_add(floor);
        u32::try_from(allowed.saturating_sub(retries)).unwrap_or(u32::MAX)
    }

    /// Spends one retry if the budget allows it.
    pub fn try_spend(&mut self, now_ms: u64) -> bool {
        if self.available(now_ms) == 0 {
            return false;
        }
        self.spend(1, now_ms);
        true
    }

    /// Records `n` retries that were made (e.g. reported in bulk by the Worker), even past the
    /// budget: overspending just leaves less for the rest of the window.
    pub fn spend(&mut self, n: u32, now_ms: u64) {
        if n == 0 {
            return;
        }
        let b = self.bucket(now_ms);
        b.retries = b.retries.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rng::SplitMix64;
    use proptest::prelude::*;

    #[test]
    fn unreached_statuses_are_connection_phase_only() {
        let unreached: Vec<u16> = (500..600).filter(|&s| status_means_unreached(s)).collect();
        assert_eq!(unreached, [521, 522, 523, 525, 526]);
        assert!(unreached.iter().all(|&s| is_failure_status(s)));
    }

    #[test]
    fn failure_statuses() {
        for s in [502, 503, 504, 520, 521, 522, 523, 524, 525, 526, 527, 530] {
            assert!(is_failure_status(s), "{s}");
        }
        for s in [0, 200, 404, 429, 500, 501, 505, 519, 528, 529, 531] {
            assert!(!is_failure_status(s), "{s}");
        }
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "get", "Head", "OPTIONS", "put", "DELETE", "trace"] {
            assert!(is_idempotent(m), "{m}");
        }
        for m in ["POST", "patch", "CONNECT", "PROPFIND", "", "GETX"] {
            assert!(!is_idempotent(m), "{m}");
        }
    }

    #[test]
    fn retry_rules_per_method() {
        let all = [
            Failure::Connect,
            Failure::Timeout,
            Failure::Status(502),
            Failure::Status(530),
        ];
        for f in &all {
            assert!(may_retry("GET", f, true));
            assert!(may_retry("delete", f, true));
            assert!(may_retry("PUT", f, true));
        }
        assert!(may_retry("POST", &Failure::Connect, true));
        assert!(may_retry("patch", &Failure::Connect, true));
        assert!(!may_retry("POST", &Failure::Connect, false));
        assert!(!may_retry("POST", &Failure::Timeout, true));
        assert!(!may_retry("POST", &Failure::Status(503), true));
        assert!(!may_retry("PATCH", &Failure::Timeout, true));
        assert!(!may_retry("MKCOL", &Failure::Status(502), true));
        // A consumed streaming body cannot be resent, whatever the method.
        assert!(!may_retry("PUT", &Failure::Connect, false));
        assert!(!may_retry("GET", &Failure::Timeout, false));
    }

    #[test]
    fn immediate_failover_on_connect_is_zero() {
        let mut r = SplitMix64(3);
        for attempt in 0..10 {
            assert_eq!(backoff_ms(attempt, &Failure::Connect, true, &mut r), 0);
        }
        // Timeouts still back off even with immediate failover.
        let d: Vec<u64> = (1..=6)
            .map(|a| backoff_ms(a, &Failure::Timeout, true, &mut r))
            .collect();
        assert_eq!(d, PINNED_BACKOFF_SEED_3);
    }

    const PINNED_BACKOFF_SEED_3: [u64; 6] = [2, 35, 61, 14, 54, 159];

    #[test]
    fn budget_caps_at_ratio_plus_floor() {
        // 10% of traffic plus 1/s over 10 s = 10 retries floor.
        let mut b = RetryBudget::new(0.1, 1, 10_000);
        assert_eq!(b.available(0), 10);
        for t in 0..100 {
            b.record_request(t);
        }
        assert_eq!(b.available(100), 20);
        let mut spent = 0;
        while b.try_spend(200) {
            spent += 1;
        }
        assert_eq!(spent, 20);
        assert_eq!(b.available(200), 0);
        assert!(!b.try_spend(9_999));
        // 10 more requests earn exactly one more retry.
        for t in 0..10 {
            b.record_request(5_000 + t);
        }
        assert_eq!(b.available(5_100), 1);
        assert!(b.try_spend(5_100));
        assert!(!b.try_spend(5_100));
        // At 10_000 the first bucket (100 requests, 20 retries) expires.
        assert_eq!(b.available(10_000), 10 + 1 - 1);
        // After a full window with nothing, only the floor remains.
        assert_eq!(b.available(16_000), 10);
        assert!(b.try_spend(16_000));
        assert_eq!(b.available(16_000), 9);
    }

    #[test]
    fn budget_spend_in_bulk_and_overspend() {
        let mut b = RetryBudget::default();
        assert_eq!(b.available(0), 100);
        b.spend(0, 0);
        assert_eq!(b.available(0), 100);
        b.spend(150, 0);
        assert_eq!(b.available(0), 0);
        assert!(!b.try_spend(500));
        assert_eq!(b.available(10_000), 100);
    }

    #[test]
    fn budget_degenerate_params() {
        let mut b = RetryBudget::new(f64::NAN, 0, 0);
        assert_eq!(b.ratio(), 0.0);
        assert_eq!(b.window_ms(), 10);
        b.record_request(u64::MAX);
        assert_eq!(b.available(u64::MAX), 0);
        assert!(!b.try_spend(u64::MAX));
        let mut b = RetryBudget::new(f64::INFINITY, u32::MAX, u64::MAX);
        b.record_request(0);
        assert_eq!(b.available(0), u32::MAX);
        let b = RetryBudget::new(1e300, 0, 1_000);
        let mut b2 = b.clone();
        b2.record_request(0);
        assert_eq!(b2.available(0), u32::MAX);
    }

    #[test]
    fn budget_serde_roundtrip() {
        let mut b = RetryBudget::default();
        b.record_request(1_000);
        b.spend(3, 2_000);
        let s = serde_json::to_string(&b).unwrap();
        let back: RetryBudget = serde_json::from_str(&s).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.available(2_000), 97);
    }

    proptest! {
        #[test]
        fn backoff_within_bounds(seed: u64, attempt: u32, timeout: bool, immediate: bool) {
            let mut r = SplitMix64(seed);
            let f = if timeout { Failure::Timeout } else { Failure::Status(503) };
            let d = backoff_ms(attempt, &f, immediate, &mut r);
            let exp = attempt.saturating_sub(1).min(16);
            let ceiling = (BACKOFF_BASE_MS << exp).min(BACKOFF_CAP_MS);
            prop_assert!(d <= ceiling);
            prop_assert!(d <= BACKOFF_CAP_MS);
            let c = backoff_ms(attempt, &Failure::Connect, false, &mut r);
            prop_assert!(c <= ceiling);
        }

        #[test]
        fn budget_never_allows_more_than_ratio_plus_floor(
            reqs in proptest::collection::vec(0u64..1_000, 0..200),
            spends in proptest::collection::vec(0u64..1_000, 0..200),
        ) {
            // Everything happens within one window, so the bound is exact.
            let mut b = RetryBudget::new(0.2, 1, 10_000);
            for t in &reqs { b.record_request(*t); }
            let mut granted = 0u64;
            for t in &spends {
                if b.try_spend(1_000 + *t) { granted += 1; }
            }
            let bound = (reqs.len() as f64 * 0.2).floor() as u64 + 10;
            prop_assert!(granted <= bound);
            prop_assert_eq!(granted, bound.min(spends.len() as u64));
        }
    }
}
