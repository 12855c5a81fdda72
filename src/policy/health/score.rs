//! A backend's health score, 0–100, from its recent probes, its passive error rate, its latency against its pool's median and its breaker; and the weight score weighting gives it.
//!
//! The score is a product of three factors, each between 0 and 1, times 100, rounded:
//! - probes: the pass rate of the last [`PROBE_WINDOW`] probes (1 with no probe yet);
//! - errors: `(1 - error_rate / 100)²` over the breaker's window (1 while the window holds
//!   fewer than `min_requests` requests), so 10 % errors cost 19 points and 30 % cost 51;
//! - latency: `(2 × median + 100) / (latency + 100)`, at most 1, where latency is the
//!   backend's peak-EWMA and median the median of its pool's (1 when either is unknown). Up to
//!   twice the median costs nothing, and the 100 ms keep a spike on a fast backend (a peak-EWMA
//!   takes every slow sample at once) from costing much.
//!
//! A backend its probes hold down, or whose breaker is not closed, scores 0.

/// Probe results the score looks back on (see `checks::RecentProbes`).
pub const PROBE_WINDOW: u32 = 10;
/// Below this score, score weighting takes a backend out of rotation while a peer is above it.
pub const SCORE_FLOOR: u8 = 10;
/// Latency slack (ms) added to both sides of the latency ratio.
const LATENCY_SLACK_MS: f64 = 100.0;

/// What the score is computed from; `None` means "not known yet" and costs nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inputs {
    /// Up by its active health checks.
    pub healthy: bool,
    /// Its circuit breaker is closed.
    pub breaker_closed: bool,
    /// Share of recent probes that passed, 0..=1.
    pub probe_pass_rate: Option<f64>,
    /// Failure percentage of real requests in the breaker's window, 0..=100.
    pub error_rate: Option<f64>,
    /// The backend's peak-EWMA response time (ms).
    pub latency_ms: Option<f64>,
    /// The median of its pool's peak-EWMAs (ms).
    pub median_ms: Option<f64>,
}

impl Inputs {
    /// A backend with nothing against it: scores 100.
    pub fn perfect() -> Inputs {
        Inputs {
            healthy: true,
            breaker_closed: true,
            probe_pass_rate: None,
            error_rate: None,
            latency_ms: None,
            median_ms: None,
        }
    }
}

/// A known, finite value (NaN or infinity count as unknown, never as a penalty or a panic).
fn known(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// The health score, 0–100 (formula in the module doc).
pub fn score(x: &Inputs) -> u8 {
    if !x.healthy || !x.breaker_closed {
        return 0;
    }
    let probes = known(x.probe_pass_rate).map_or(1.0, |p| p.clamp(0.0, 1.0));
    let ok = known(x.error_rate).map_or(1.0, |e| 1.0 - e.clamp(0.0, 100.0) / 100.0);
    let latency = match (known(x.latency_ms), known(x.median_ms)) {
        (Some(l), Some(m)) => {
            ((2.0 * m.max(0.0) + LATENCY_SLACK_MS) / (l.max(0.0) + LATENCY_SLACK_MS)).min(1.0)
        }
        _ => 1.0,
    };
    (100.0 * probes * ok * ok * latency).round() as u8
}

/// The round-robin weight score weighting gives a backend of weight `weight` (already scaled
/// and ramped): `weight × score / 100`, at least 1; 0 below [`SCORE_FLOOR`].
pub fn weighted(weight: u32, score: u8) -> u32 {
    if score < SCORE_FLOOR {
        return 0;
    }
    (u64::from(weight) * u64::from(score.min(100)) / 100).max(1) as u32
}

/// The median of `values` (the mean of the middle two for an even count); None when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pinned_examples() {
        assert_eq!(score(&Inputs::perfect()), 100);
        let with = |f: fn(&mut Inputs)| {
            let mut x = Inputs::perfect();
            f(&mut x);
            score(&x)
        };
        assert_eq!(with(|x| x.error_rate = Some(30.0)), 49);
        assert_eq!(with(|x| x.error_rate = Some(10.0)), 81);
        assert_eq!(with(|x| x.probe_pass_rate = Some(0.7)), 70);
        // 60 ms against a median of 12 ms is a spike; 200 ms against 50 ms and 2 s against
        // 100 ms are slow.
        let lat = |l: f64, m: f64| {
            score(&Inputs {
                latency_ms: Some(l),
                median_ms: Some(m),
                ..Inputs::perfect()
            })
        };
        assert_eq!(lat(60.0, 12.0), 78);
        assert_eq!(lat(200.0, 50.0), 67);
        assert_eq!(lat(2000.0, 100.0), 14);
        assert_eq!(
            lat(100.0, 50.0),
            100,
            "up to twice the median costs nothing"
        );
        assert_eq!(with(|x| x.breaker_closed = false), 0);
        assert_eq!(with(|x| x.healthy = false), 0);
        assert_eq!(with(|x| x.error_rate = Some(f64::NAN)), 100);
        assert_eq!(with(|x| x.error_rate = Some(100.0)), 0);
    }

    #[test]
    fn weights_follow_the_score_down_to_the_floor() {
        assert_eq!(weighted(300, 100), 300);
        assert_eq!(weighted(300, 49), 147);
        assert_eq!(
            weighted(1, 50),
            1,
            "a share never rounds to nothing above the floor"
        );
        assert_eq!(weighted(100, SCORE_FLOOR), 10);
        assert_eq!(weighted(100, SCORE_FLOOR - 1), 0);
        assert_eq!(weighted(u32::MAX, 255), u32::MAX);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN, 5.0]), Some(5.0));
    }

    fn inputs() -> impl Strategy<Value = Inputs> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(0.0f64..=1.0),
            proptest::option::of(0.0f64..=100.0),
            proptest::option::of(0.0f64..10_000.0),
            proptest::option::of(0.0f64..10_000.0),
        )
            .prop_map(|(healthy, breaker_closed, p, e, l, m)| Inputs {
                healthy,
                breaker_closed,
                probe_pass_rate: p,
                error_rate: e,
                latency_ms: l,
                median_ms: m,
            })
    }

    proptest! {
        #[test]
        fn bounded_and_zero_when_open_or_down(x in inputs()) {
            let s = score(&x);
            prop_assert!(s <= 100);
            if !x.breaker_closed || !x.healthy {
                prop_assert_eq!(s, 0);
            }
        }

        #[test]
        fn perfect_is_100(l in 0.0f64..10_000.0, extra in 0.0f64..10_000.0) {
            // Every probe passed, no errors, latency at or below the median.
            let x = Inputs {
                probe_pass_rate: Some(1.0),
                error_rate: Some(0.0),
                latency_ms: Some(l),
                median_ms: Some(l + extra),
                ..Inputs::perfect()
            };
            prop_assert_eq!(score(&x), 100);
        }

        #[test]
        fn monotone_in_each_input(x in inputs(), d in 0.0f64..1.0, dl in 0.0f64..5_000.0) {
            // Each input made better alone never lowers the score.
            let mut better = vec![
                Inputs { healthy: true, ..x },
                Inputs { breaker_closed: true, ..x },
            ];
            if let Some(p) = x.probe_pass_rate {
                better.push(Inputs { probe_pass_rate: Some((p + d).min(1.0)), ..x });
            }
            if let Some(e) = x.error_rate {
                better.push(Inputs { error_rate: Some((e - d * 100.0).max(0.0)), ..x });
            }
            if let Some(l) = x.latency_ms {
                better.push(Inputs { latency_ms: Some((l - dl).max(0.0)), ..x });
            }
            if let Some(m) = x.median_ms {
                better.push(Inputs { median_ms: Some(m + dl), ..x });
            }
            let s = score(&x);
            for y in better {
                prop_assert!(score(&y) >= s, "{:?} scored below {:?}", y, x);
            }
        }

        #[test]
        fn weight_is_monotone_in_score(w in 1u32..100_000, s in 0u8..=100, t in 0u8..=100) {
            let (lo, hi) = (s.min(t), s.max(t));
            prop_assert!(weighted(w, lo) <= weighted(w, hi));
            prop_assert!(weighted(w, hi) <= w);
            prop_assert_eq!(weighted(w, 100), w);
        }
    }
}
