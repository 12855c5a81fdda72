//! Active health checking of one backend: up/down hysteresis, probe verdicts, health-path discovery and probe scheduling.

use serde::{Deserialize, Serialize};

use crate::policy::health::score::PROBE_WINDOW;
use crate::policy::rng::Rng;

/// Active health state of one backend, persisted in the Durable Object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Starts healthy: a new backend gets traffic until probes say otherwise, so adding a
    /// backend never blackholes a pool while waiting for the first probe round.
    pub fn new() -> Self {
        Health {
            healthy: true,
            consecutive_ok: 0,
            consecutive_fail: 0,
        }
    }

    /// Records one probe result; returns true when `healthy` flipped. Flips down only after
    /// `down` consecutive failures, up only after `up` consecutive successes. Thresholds of 0
    /// are treated as 1.
    pub fn observe(&mut self, ok: bool, up: u32, down: u32) -> bool {
        if ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
            if !self.healthy && self.consecutive_ok >= up.max(1) {
                self.healthy = true;
                return true;
            }
        } else {
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
            if self.healthy && self.consecutive_fail >= down.max(1) {
                self.healthy = false;
                return true;
            }
        }
        false
    }
}

/// The last [`PROBE_WINDOW`] probe results of one backend, newest in bit 0: what its health
/// score reads as the probe pass rate. In memory only; a restarted object starts afresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentProbes {
    passed: u16,
    seen: u8,
}

impl RecentProbes {
    pub fn record(&mut self, ok: bool) {
        let mask = (1u16 << PROBE_WINDOW) - 1;
        self.passed = ((self.passed << 1) | u16::from(ok)) & mask;
        self.seen = (self.seen + 1).min(PROBE_WINDOW as u8);
    }

    /// Share of the recent probes that passed; None before the first.
    pub fn pass_rate(&self) -> Option<f64> {
        (self.seen > 0).then(|| f64::from(self.passed.count_ones()) / f64::from(self.seen))
    }
}

/// A backend's health as operators see it: up or down as probes and breaker say, or unknown
/// while active checks have not probed it yet (it takes traffic meanwhile: see [`Health::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendHealth {
    Healthy,
    Unhealthy,
    Unknown,
}

/// A service's health, like a Cloudflare pool's, over the backends that should take new
/// traffic (enabled ones: draining and disabled backends take none, so they do not count):
/// every one is up (healthy), some are down (degraded), none is up (critical), or none is
/// down but some have no probe result yet (unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceHealth {
    Healthy,
    Degraded,
    Critical,
    Unknown,
}

impl ServiceHealth {
    /// `serving`: the health of each backend that should take new traffic.
    pub fn of(serving: &[BackendHealth]) -> ServiceHealth {
        let count = |h: BackendHealth| serving.iter().filter(|&&b| b == h).count();
        let (up, down, unknown) = (
            count(BackendHealth::Healthy),
            count(BackendHealth::Unhealthy),
            count(BackendHealth::Unknown),
        );
        if up == 0 && unknown == 0 {
            ServiceHealth::Critical
        } else if down > 0 {
            ServiceHealth::Degraded
        } else if unknown > 0 {
            ServiceHealth::Unknown
        } else {
            ServiceHealth::Healthy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceHealth::Healthy => "healthy",
            ServiceHealth::Degraded => "degraded",
            ServiceHealth::Critical => "critical",
            ServiceHealth::Unknown => "unknown",
        }
    }
}

/// Paths tried, in order, when no health path is configured.
pub const DISCOVERY_PATHS: [&str; 3] = ["/health", "/healthz", "/status"];

/// A probe of a configured or discovered health path succeeds on 2xx/3xx; the root fallback
/// `/` succeeds on anything below 500 (a 404 or 401 on `/` still proves the server answers).
pub fn probe_ok(status: u16, root_fallback: bool) -> bool {
    if root_fallback {
        status < 500
    } else {
        is_2xx_3xx(status)
    }
}

fn is_2xx_3xx(status: u16) -> bool {
    (200..400).contains(&status)
}

/// Next step of health-path discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Probe this path next.
    Try(&'static str),
    /// This path answered 2xx/3xx: use it from now on.
    Found(&'static str),
    /// No discovery path worked but the server answers: probe `/` with `probe_ok(_, true)`.
    FallbackRoot,
    /// A connection failed: stop discovering, the backend is not reachable right now.
    Unreachable,
}

/// Health-path discovery: `results[i]` is the status seen for `DISCOVERY_PATHS[i]`
/// (`None` = connection error/timeout). Results are read in order and the first decisive
/// one wins, so a caller that kept probing past a decision still gets that decision;
/// results beyond the third are ignored.
pub fn discover(results: &[Option<u16>]) -> Discovery {
    for (path, result) in DISCOVERY_PATHS.iter().zip(results) {
        match result {
            None => return Discovery::Unreachable,
            Some(status) if is_2xx_3xx(*status) => return Discovery::Found(path),
            Some(_) => {}
        }
    }
    match DISCOVERY_PATHS.get(results.len()) {
        Some(next) => Discovery::Try(next),
        None => Discovery::FallbackRoot,
    }
}

/// Delay until the next probe, uniform in [0.9 * interval, 1.1 * interval] (integer bounds
/// rounded inward), so the probes of many Durable Objects drift apart instead of lining up.
pub fn jitter_ms(interval_ms: u64, rng: &mut impl Rng) -> u64 {
    let spread = interval_ms / 10;
    let lo = interval_ms - spread;
    // Saturate at the top so absurd intervals cannot overflow; hi - lo + 1 <= interval / 5 + 1.
    let hi = interval_ms.saturating_add(spread);
    lo + rng.below(hi - lo + 1)
}

/// Delay before re-probing a backend that passive checks flagged as suspect: at most 2 s,
/// so a real outage is confirmed quickly, but never later than the normal schedule.
pub fn suspect_reprobe_ms(interval_ms: u64) -> u64 {
    interval_ms.min(2000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rng::SplitMix64;
    use proptest::prelude::*;

    #[test]
    fn recent_probes_keep_the_last_ten() {
        let mut r = RecentProbes::default();
        assert_eq!(r.pass_rate(), None);
        r.record(false);
        assert_eq!(r.pass_rate(), Some(0.0));
        for _ in 0..3 {
            r.record(true);
        }
        assert_eq!(r.pass_rate(), Some(0.75));
        // Ten passes push the failure out of the window.
        for _ in 0..10 {
            r.record(true);
        }
        assert_eq!(r.pass_rate(), Some(1.0));
        for _ in 0..3 {
            r.record(false);
        }
        assert_eq!(r.pass_rate(), Some(0.7));
    }

    #[test]
    fn new_is_healthy() {
        let h = Health::new();
        assert!(h.healthy);
        assert_eq!((h.consecutive_ok, h.consecutive_fail), (0, 0));
        assert_eq!(Health::default(), h);
    }

    #[test]
    fn flips_down_after_down_failures_and_up_after_up_successes() {
        let mut h = Health::new();
        // up = 3, down = 2
        assert!(!h.observe(false, 3, 2));
        assert!(h.healthy);
        assert!(h.observe(false, 3, 2));
        assert!(!h.healthy);
        // Further failures do not flip again.
        assert!(!h.observe(false, 3, 2));
        assert_eq!(h.consecutive_fail, 3);
        assert!(!h.observe(true, 3, 2));
        assert!(!h.observe(true, 3, 2));
        assert!(!h.healthy);
        assert!(h.observe(true, 3, 2));
        assert!(h.healthy);
        assert_eq!((h.consecutive_ok, h.consecutive_fail), (3, 0));
        assert!(!h.observe(true, 3, 2));
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut h = Health::new();
        assert!(h.observe(false, 0, 0));
        assert!(!h.healthy);
        assert!(h.observe(true, 0, 0));
        assert!(h.healthy);
    }

    #[test]
    fn flapping_never_flips_with_up3_down2() {
        let mut h = Health::new();
        for i in 0..20 {
            assert!(!h.observe(i % 2 == 0, 3, 2));
            assert!(h.healthy);
        }
        let mut h = Health {
            healthy: false,
            consecutive_ok: 0,
            consecutive_fail: 5,
        };
        for i in 0..20 {
            assert!(!h.observe(i % 2 == 0, 3, 2));
            assert!(!h.healthy);
        }
    }

    #[test]
    fn counters_saturate() {
        let mut h = Health {
            healthy: false,
            consecutive_ok: 0,
            consecutive_fail: u32::MAX,
        };
        assert!(!h.observe(false, 1, u32::MAX));
        assert_eq!(h.consecutive_fail, u32::MAX);
    }

    #[test]
    fn probe_ok_rules() {
        assert!(probe_ok(200, false));
        assert!(probe_ok(204, false));
        assert!(probe_ok(301, false));
        assert!(probe_ok(399, false));
        assert!(!probe_ok(199, false));
        assert!(!probe_ok(404, false));
        assert!(!probe_ok(500, false));
        assert!(probe_ok(200, true));
        assert!(probe_ok(404, true));
        assert!(probe_ok(401, true));
        assert!(probe_ok(499, true));
        assert!(!probe_ok(500, true));
        assert!(!probe_ok(503, true));
    }

    #[test]
    fn discover_steps() {
        use Discovery::*;
        assert_eq!(discover(&[]), Try("/health"));
        assert_eq!(discover(&[Some(200)]), Found("/health"));
        assert_eq!(discover(&[Some(302)]), Found("/health"));
        assert_eq!(discover(&[Some(404)]), Try("/healthz"));
        assert_eq!(discover(&[None]), Unreachable);
        assert_eq!(discover(&[Some(404), Some(204)]), Found("/healthz"));
        assert_eq!(discover(&[Some(404), Some(500)]), Try("/status"));
        assert_eq!(discover(&[Some(404), None]), Unreachable);
        assert_eq!(
            discover(&[Some(404), Some(404), Some(200)]),
            Found("/status")
        );
        assert_eq!(discover(&[Some(404), Some(404), None]), Unreachable);
        assert_eq!(discover(&[Some(404), Some(401), Some(500)]), FallbackRoot);
        // Extra results are ignored; an earlier decision wins.
        assert_eq!(
            discover(&[Some(404), Some(404), Some(404), Some(200)]),
            FallbackRoot
        );
        assert_eq!(discover(&[Some(200), None]), Found("/health"));
    }

    #[test]
    fn jitter_pinned_and_edges() {
        let mut r = SplitMix64(1);
        let got: Vec<u64> = (0..5).map(|_| jitter_ms(10_000, &mut r)).collect();
        assert_eq!(got, PINNED_JITTER_SEED_1);
        assert_eq!(jitter_ms(0, &mut r), 0);
        assert_eq!(jitter_ms(5, &mut r), 5); // spread rounds to 0
        let big = jitter_ms(u64::MAX, &mut r);
        assert!(big >= u64::MAX - u64::MAX / 10);
    }

    const PINNED_JITTER_SEED_1: [u64; 5] = [10133, 10492, 10942, 9889, 9888];

    #[test]
    fn suspect_reprobe() {
        assert_eq!(suspect_reprobe_ms(30_000), 2000);
        assert_eq!(suspect_reprobe_ms(1500), 1500);
        assert_eq!(suspect_reprobe_ms(0), 0);
    }

    #[test]
    fn serde_roundtrip() {
        let h = Health {
            healthy: false,
            consecutive_ok: 2,
            consecutive_fail: 0,
        };
        let s = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Health>(&s).unwrap(), h);
    }

    proptest! {
        #[test]
        fn alternating_never_flips(start_ok: bool, start_healthy: bool, len in 0usize..200) {
            let mut h = Health { healthy: start_healthy, consecutive_ok: 0, consecutive_fail: 0 };
            for i in 0..len {
                let ok = (i % 2 == 0) == start_ok;
                prop_assert!(!h.observe(ok, 3, 2));
            }
            prop_assert_eq!(h.healthy, start_healthy);
        }

        #[test]
        fn flips_only_at_threshold(seq in proptest::collection::vec(any::<bool>(), 0..100),
                                   up in 0u32..5, down in 0u32..5) {
            let mut h = Health::new();
            for ok in seq {
                let before = h.healthy;
                let flipped = h.observe(ok, up, down);
                prop_assert_eq!(flipped, before != h.healthy);
                if flipped && h.healthy {
                    prop_assert!(ok && h.consecutive_ok == up.max(1));
                }
                if flipped && !h.healthy {
                    prop_assert!(!ok && h.consecutive_fail == down.max(1));
                }
            }
        }

        #[test]
        fn jitter_in_bounds(seed: u64, interval in 0u64..10_000_000) {
            let mut r = SplitMix64(seed);
            let d = jitter_ms(interval, &mut r);
            prop_assert!(d * 10 >= interval * 9 && d * 10 <= interval * 11);
        }
    }

    #[test]
    fn service_health_counts_only_backends_that_should_take_traffic() {
        use BackendHealth::{Healthy as Up, Unhealthy as Down, Unknown};
        assert_eq!(ServiceHealth::of(&[Up, Up]), ServiceHealth::Healthy);
        assert_eq!(ServiceHealth::of(&[Up, Down]), ServiceHealth::Degraded);
        assert_eq!(ServiceHealth::of(&[Down, Down]), ServiceHealth::Critical);
        assert_eq!(ServiceHealth::of(&[]), ServiceHealth::Critical);
        assert_eq!(ServiceHealth::of(&[Up, Unknown]), ServiceHealth::Unknown);
        assert_eq!(ServiceHealth::of(&[Unknown]), ServiceHealth::Unknown);
        assert_eq!(ServiceHealth::of(&[Down, Unknown]), ServiceHealth::Degraded);
        assert_eq!(ServiceHealth::Unknown.as_str(), "unknown");
    }
}
