//! Steering choices: a backend within a pool by least outstanding requests, latency (p2c over a peak EWMA) or client hash; a pool by failover order and health thresholds.

use serde::Serialize;

use crate::policy::rng::Rng;
use crate::policy::traffic::affinity;
use crate::policy::traffic::select::Selector;

/// How fast the latency average forgets: a sample's weight halves in about 7 s (τ = 10 s).
const EWMA_TAU_MS: f64 = 10_000.0;
/// A latency average with no sample for this long is stale: probes' latency stands in.
pub const EWMA_STALE_MS: u64 = 30_000;
/// Latency assumed for a backend nothing is known about yet (linkerd's default RTT).
const DEFAULT_RTT_MS: f64 = 30.0;

/// What the object knows of one backend's load when it picks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// The weight in use now (slow start included); 0 counts as 1.
    pub weight: u32,
    /// Requests decided for this backend whose completion has not been reported yet.
    pub outstanding: u32,
    /// Recent response time (ms), or None when nothing is known.
    pub latency_ms: Option<f64>,
}

impl Load {
    fn weight(&self) -> u64 {
        u64::from(self.weight.max(1))
    }

    /// tower/linkerd p2c cost: latency times (requests in flight + this one), per weight.
    pub fn cost(&self) -> f64 {
        let rtt = self.latency_ms.unwrap_or(DEFAULT_RTT_MS).max(0.0);
        // A backend answering in ~0 ms still costs by its queue, so the floor keeps (o+1) in play.
        rtt.max(0.1) * f64::from(self.outstanding.saturating_add(1)) / self.weight() as f64
    }
}

/// True when `a` carries strictly less load per weight than `b`, counting the request being
/// placed: (o_a + 1) / w_a < (o_b + 1) / w_b, compared exactly by cross-multiplying.
fn lighter(a: &Load, b: &Load) -> bool {
    let la = (u64::from(a.outstanding) + 1) * b.weight();
    let lb = (u64::from(b.outstanding) + 1) * a.weight();
    la < lb
}

/// Least outstanding requests: the eligible backend with the fewest requests in flight per
/// weight (the request being placed included, so a heavier backend wins an empty tie); ties
/// break by smooth weighted round robin among the tied backends.
pub fn least_outstanding(
    sel: &mut Selector,
    loads: &[Load],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let live: Vec<usize> = (0..loads.len()).filter(|&k| eligible(k)).collect();
    let best = live
        .iter()
        .copied()
        .reduce(|b, k| if lighter(&loads[k], &loads[b]) { k } else { b })?;
    let tied: Vec<bool> = (0..loads.len())
        .map(|k| {
            live.contains(&k)
                && !lighter(&loads[best], &loads[k])
                && !lighter(&loads[k], &loads[best])
        })
        .collect();
    let weights: Vec<u32> = loads.iter().map(|l| l.weight).collect();
    sel.pick(&weights, |k| tied[k])
}

/// The two distinct eligible candidates p2c compares (one when only one is eligible).
pub fn p2c_pair(
    loads_len: usize,
    eligible: impl Fn(usize) -> bool,
    rng: &mut impl Rng,
) -> Option<(usize, usize)> {
    let live: Vec<usize> = (0..loads_len).filter(|&k| eligible(k)).collect();
    match live.len() {
        0 => None,
        1 => Some((live[0], live[0])),
        n => {
            let a = rng.below(n as u64) as usize;
            let mut b = rng.below(n as u64 - 1) as usize;
            if b >= a {
                b += 1;
            }
            Some((live[a], live[b]))
        }
    }
}

/// Latency steering (power of two random choices, as tower's and linkerd's balancers): two
/// distinct eligible backends at random, the one of lower [`Load::cost`] wins (the first on a tie).
pub fn latency_p2c(
    loads: &[Load],
    eligible: impl Fn(usize) -> bool,
    rng: &mut impl Rng,
) -> Option<usize> {
    let (a, b) = p2c_pair(loads.len(), eligible, rng)?;
    Some(if loads[b].cost() < loads[a].cost() {
        b
    } else {
        a
    })
}

/// Hash steering: weighted rendezvous hashing of the client's (canonical) address over the
/// eligible backends, so a client stays on its backend and removing one moves only its clients.
pub fn client_hash(
    client: &str,
    names: &[&str],
    loads: &[Load],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let live: Vec<usize> = (0..names.len()).filter(|&k| eligible(k)).collect();
    let candidates: Vec<(&str, u32)> = live
        .iter()
        .map(|&k| (names[k], loads.get(k).map_or(1, |l| l.weight)))
        .collect();
    affinity::rendezvous_weighted(client, &candidates).map(|j| live[j])
}

/// A time-decayed "peak" moving average of response time (linkerd's PeakEwma): a sample above
/// the average replaces it at once (a backend turning slow is avoided at once), lower samples
/// pull it down with a weight that grows with the time since the last sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    value_ms: f64,
    at_ms: Option<u64>,
}

impl Ewma {
    pub fn observe(&mut self, sample_ms: f64, now_ms: u64) {
        let sample = sample_ms.max(0.0);
        self.value_ms = match self.at_ms {
            None => sample,
            Some(_) if sample > self.value_ms => sample,
            Some(at) => {
                let decay = (-(now_ms.saturating_sub(at) as f64) / EWMA_TAU_MS).exp();
                self.value_ms * decay + sample * (1.0 - decay)
            }
        };
        self.at_ms = Some(now_ms);
    }

    /// The average, unless it is stale (no sample for [`EWMA_STALE_MS`]).
    pub fn recent(&self, now_ms: u64) -> Option<f64> {
        self.at_ms
            .filter(|&at| now_ms.saturating_sub(at) < EWMA_STALE_MS)
            .map(|_| self.value_ms)
    }

    pub fn value(&self) -> Option<f64> {
        self.at_ms.map(|_| self.value_ms)
    }
}

/// A pool's health for the status view: every backend healthy, enough healthy (at least
/// `minimum_healthy`), or too few (the pool counts as unhealthy and traffic moves on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolHealth {
    Healthy,
    Degraded,
    Critical,
}

pub fn pool_health(healthy: usize, total: usize, minimum_healthy: u32) -> PoolHealth {
    if healthy < minimum_healthy.max(1) as usize {
        PoolHealth::Critical
    } else if healthy < total {
        PoolHealth::Degraded
    } else {
        PoolHealth::Healthy
    }
}

/// Failover steering: the first pool (in priority order) that is not critical, else `fallback`
/// (returned even when it is critical too: there is nothing better to offer).
pub fn failover_pool(pools: &[(usize, u32)], fallback: usize) -> usize {
    pools
        .iter()
        .position(|&(healthy, minimum)| healthy >= minimum.max(1) as usize)
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rng::SplitMix64;
    use proptest::prelude::*;

    fn load(weight: u32, outstanding: u32, latency_ms: Option<f64>) -> Load {
        Load {
            weight,
            outstanding,
            latency_ms,
        }
    }

    #[test]
    fn least_outstanding_picks_fewest_per_weight_and_rotates_ties() {
        let mut sel = Selector::new(3);
        let loads = [load(1, 2, None), load(1, 0, None), load(1, 1, None)];
        assert_eq!(least_outstanding(&mut sel, &loads, |_| true), Some(1));
        assert_eq!(least_outstanding(&mut sel, &loads, |k| k != 1), Some(2));
        // Weight 3 with 2 in flight ((2+1)/3 = 1) ties weight 1 with none ((0+1)/1 = 1).
        let loads = [load(3, 2, None), load(1, 0, None), load(1, 5, None)];
        let picks: Vec<_> = (0..4)
            .map(|_| least_outstanding(&mut sel, &loads, |_| true).unwrap())
            .collect();
        assert!(picks.contains(&0) && picks.contains(&1) && !picks.contains(&2));
        let idle = [load(1, 0, None); 3];
        let mut sel = Selector::new(3);
        let picks: Vec<_> = (0..6)
            .map(|_| least_outstanding(&mut sel, &idle, |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2], "idle backends: round robin");
        assert_eq!(least_outstanding(&mut sel, &idle, |_| false), None);
    }

    #[test]
    fn p2c_prefers_lower_cost_and_counts_queue() {
        let loads = [load(1, 0, Some(2000.0)), load(1, 0, Some(2.0))];
        let mut rng = SplitMix64(1);
        for _ in 0..20 {
            assert_eq!(latency_p2c(&loads, |_| true, &mut rng), Some(1));
        }
        // A fast backend with a long queue loses to a slightly slower idle one.
        let loads = [load(1, 0, Some(5.0)), load(1, 10, Some(2.0))];
        assert_eq!(latency_p2c(&loads, |_| true, &mut rng), Some(0));
        // Weight divides the cost.
        assert!(load(4, 0, Some(8.0)).cost() < load(1, 0, Some(4.0)).cost());
        assert_eq!(latency_p2c(&loads, |k| k == 1, &mut rng), Some(1));
        assert_eq!(latency_p2c(&loads, |_| false, &mut rng), None);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let mut e = Ewma::default();
        assert_eq!(e.recent(0), None);
        e.observe(10.0, 0);
        e.observe(2000.0, 100);
        assert_eq!(
            e.value(),
            Some(2000.0),
            "a slow sample takes effect at once"
        );
        e.observe(10.0, 110);
        assert!(
            e.value().unwrap() > 1900.0,
            "one fast sample soon after barely moves it"
        );
        e.observe(10.0, 30_000);
        assert!(
            e.value().unwrap() < 200.0,
            "fast samples over time pull it down"
        );
        assert!(e.recent(30_000 + EWMA_STALE_MS).is_none(), "stale");
    }

    #[test]
    fn pool_health_and_failover_order() {
        assert_eq!(pool_health(3, 3, 1), PoolHealth::Healthy);
        assert_eq!(pool_health(2, 3, 2), PoolHealth::Degraded);
        assert_eq!(pool_health(1, 3, 2), PoolHealth::Critical);
        assert_eq!(pool_health(0, 3, 1), PoolHealth::Critical);
        // (healthy, minimum) per pool in priority order.
        assert_eq!(failover_pool(&[(2, 1), (3, 1)], 1), 0);
        assert_eq!(failover_pool(&[(0, 1), (3, 1)], 1), 1);
        assert_eq!(
            failover_pool(&[(1, 2), (1, 1)], 0),
            1,
            "below minimum_healthy"
        );
        assert_eq!(
            failover_pool(&[(1, 2), (0, 1)], 0),
            0,
            "nothing healthy: fallback"
        );
    }

    #[test]
    fn hash_is_sticky_and_weighted() {
        let names = ["http://a", "http://b", "http://c"];
        let loads = [load(1, 0, None); 3];
        let first = client_hash("192.0.2.7", &names, &loads, |_| true);
        assert_eq!(client_hash("192.0.2.7", &names, &loads, |_| true), first);
        let heavy = [load(8, 0, None), load(1, 0, None), load(1, 0, None)];
        let on_a = (0..1000)
            .filter(|i| {
                client_hash(
                    &format!("10.0.{}.{}", i / 256, i % 256),
                    &names,
                    &heavy,
                    |_| true,
                ) == Some(0)
            })
            .count();
        assert!(
            (700..900).contains(&on_a),
            "8:1:1 gives a about 80%: {on_a}"
        );
    }

    fn loads_strategy() -> impl Strategy<Value = Vec<Load>> {
        prop::collection::vec((0u32..20, 0u32..50, prop::option::of(0.0f64..3000.0)), 1..8)
            .prop_map(|v| v.into_iter().map(|(w, o, l)| load(w, o, l)).collect())
    }

    proptest! {
        #[test]
        fn least_outstanding_never_picks_a_heavier_backend(
            loads in loads_strategy(),
            mask in any::<u8>(),
            rounds in 1usize..10,
        ) {
            let elig = |k: usize| mask & (1 << k) != 0;
            let mut sel = Selector::new(loads.len());
            for _ in 0..rounds {
                match least_outstanding(&mut sel, &loads, elig) {
                    Some(i) => {
                        prop_assert!(elig(i));
                        for k in (0..loads.len()).filter(|&k| elig(k)) {
                            prop_assert!(!lighter(&loads[k], &loads[i]), "{k} carries less per weight than the pick {i}");
                        }
                    }
                    None => prop_assert!(!(0..loads.len()).any(elig)),
                }
            }
        }

        #[test]
        fn p2c_never_picks_the_worse_of_its_two(
            loads in loads_strategy(),
            mask in any::<u8>(),
            seed: u64,
        ) {
            let elig = |k: usize| mask & (1 << k) != 0;
            let mut rng = SplitMix64(seed);
            let pair = p2c_pair(loads.len(), elig, &mut rng.clone());
            let pick = latency_p2c(&loads, elig, &mut rng);
            match (pair, pick) {
                (Some((a, b)), Some(p)) => {
                    prop_assert!(p == a || p == b);
                    prop_assert!(elig(a) && elig(b));
                    let other = if p == a { b } else { a };
                    prop_assert!(loads[p].cost() <= loads[other].cost());
                    prop_assert!(a != b || (0..loads.len()).filter(|&k| elig(k)).count() == 1);
                }
                (None, None) => prop_assert!(!(0..loads.len()).any(elig)),
                other => prop_assert!(false, "pair and pick disagree: {:?}", other),
            }
        }

        #[test]
        fn hash_moves_only_the_removed_backends_clients(
            weights in prop::collection::vec(1u32..10, 2..7),
            removed in any::<prop::sample::Index>(),
            clients in prop::collection::vec(any::<u32>(), 1..60),
        ) {
            let names: Vec<String> = (0..weights.len()).map(|i| format!("http://b{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let loads: Vec<Load> = weights.iter().map(|&w| load(w, 0, None)).collect();
            let gone = removed.index(weights.len());
            for c in clients {
                let ip = std::net::Ipv4Addr::from(c).to_string();
                let before = client_hash(&ip, &names, &loads, |_| true).unwrap();
                let after = client_hash(&ip, &names, &loads, |k| k != gone).unwrap();
                prop_assert_ne!(after, gone);
                if before != gone {
                    prop_assert_eq!(before, after, "a client of a kept backend moved");
                }
            }
        }

        #[test]
        fn every_pick_respects_eligibility(
            loads in loads_strategy(),
            mask in any::<u8>(),
            seed: u64,
        ) {
            let elig = |k: usize| mask & (1 << k) != 0;
            let any = (0..loads.len()).any(elig);
            let names: Vec<String> = (0..loads.len()).map(|i| format!("http://b{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut sel = Selector::new(loads.len());
            let picks = [
                least_outstanding(&mut sel, &loads, elig),
                latency_p2c(&loads, elig, &mut SplitMix64(seed)),
                client_hash(&seed.to_string(), &names, &loads, elig),
            ];
            for p in picks {
                match p {
                    Some(i) => prop_assert!(i < loads.len() && elig(i)),
                    None => prop_assert!(!any),
                }
            }
        }

        #[test]
        fn failover_takes_the_first_pool_at_its_threshold(
            pools in prop::collection::vec((0usize..5, 1u32..5), 1..6),
            fallback in any::<prop::sample::Index>(),
        ) {
            let fb = fallback.index(pools.len());
            let pick = failover_pool(&pools, fb);
            match pools.iter().position(|&(h, m)| h >= m as usize) {
                Some(first) => {
                    prop_assert_eq!(pick, first);
                    prop_assert_ne!(pool_health(pools[pick].0, 5, pools[pick].1), PoolHealth::Critical);
                }
                None => prop_assert_eq!(pick, fb),
            }
        }
    }
}
