//! Dynamic steering: the pool with the lowest probe latency as measured from the probe region nearest the client.

use crate::policy::health::regions::{self, Region};

/// One pool as dynamic steering sees it: whether it can take traffic, and its probe latency (ms)
/// from each region that has measured it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolLatency {
    pub healthy: bool,
    pub latency_ms: Vec<(Region, f64)>,
}

/// The choice and why: the index of the pool, the region read, and the latencies compared.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub pool: usize,
    pub region: Option<Region>,
    /// (pool index, latency ms) of each healthy pool measured from `region`.
    pub compared: Vec<(usize, f64)>,
}

/// Picks the healthy pool with the lowest latency from the probe region nearest the client
/// (`country`, `continent`); ties go by pool order. Without a client region, or when no healthy
/// pool has a measurement from it, the first healthy pool; with no healthy pool, the first.
pub fn choose(
    pools: &[PoolLatency],
    probed: &[Region],
    country: Option<&str>,
    continent: Option<&str>,
) -> Choice {
    let region = regions::nearest(regions::client_region(country, continent), probed);
    let compared: Vec<(usize, f64)> = match region {
        Some(r) => pools
            .iter()
            .enumerate()
            .filter(|(_, p)| p.healthy)
            .filter_map(|(i, p)| {
                p.latency_ms
                    .iter()
                    .find(|(pr, _)| *pr == r)
                    .map(|(_, ms)| (i, *ms))
            })
            .collect(),
        None => Vec::new(),
    };
    let best = compared
        .iter()
        .copied()
        // Strictly lower wins, so the earlier pool keeps a tie.
        .fold(None::<(usize, f64)>, |best, (i, ms)| match best {
            Some((_, b)) if b <= ms => best,
            _ => Some((i, ms)),
        })
        .map(|(i, _)| i);
    let pool = best
        .or_else(|| pools.iter().position(|p| p.healthy))
        .unwrap_or(0);
    Choice {
        pool,
        region,
        compared,
    }
}

/// The tail's reason: `dynamic from weur: eu 12 ms, us 95 ms → eu`.
pub fn why(choice: &Choice, names: &[&str]) -> String {
    let name = |i: usize| names.get(i).copied().unwrap_or("?");
    let region = choice.region.map_or("no region", Region::as_str);
    let list: Vec<String> = choice
        .compared
        .iter()
        .map(|(i, ms)| format!("{} {ms:.0} ms", name(*i)))
        .collect();
    format!(
        "dynamic from {region}: {} → {}",
        if list.is_empty() {
            "no measurements".to_string()
        } else {
            list.join(", ")
        },
        name(choice.pool)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Region::*;

    fn pool(healthy: bool, lat: &[(Region, f64)]) -> PoolLatency {
        PoolLatency {
            healthy,
            latency_ms: lat.to_vec(),
        }
    }

    #[test]
    fn follows_the_lowest_latency_from_the_clients_region() {
        let pools = [
            pool(true, &[(Weur, 10.0), (Wnam, 120.0)]),
            pool(true, &[(Weur, 90.0), (Wnam, 15.0)]),
        ];
        let probed = [Weur, Wnam];
        assert_eq!(choose(&pools, &probed, Some("DE"), Some("EU")).pool, 0);
        assert_eq!(choose(&pools, &probed, Some("MX"), Some("NA")).pool, 1);
        // A client in eeur reads weur, its nearest prober.
        let c = choose(&pools, &probed, Some("PL"), Some("EU"));
        assert_eq!((c.pool, c.region), (0, Some(Weur)));
        assert_eq!(
            why(&c, &["eu", "us"]),
            "dynamic from weur: eu 10 ms, us 90 ms → eu"
        );
    }

    #[test]
    fn skips_unhealthy_pools_breaks_ties_by_order_and_falls_back() {
        let probed = [Weur];
        let pools = [
            pool(false, &[(Weur, 1.0)]),
            pool(true, &[(Weur, 50.0)]),
            pool(true, &[(Weur, 50.0)]),
        ];
        assert_eq!(choose(&pools, &probed, None, Some("EU")).pool, 1);
        // No client region: the first healthy pool.
        assert_eq!(choose(&pools, &probed, None, None).pool, 1);
        // No measurement yet: the first healthy pool.
        let fresh = [pool(true, &[]), pool(true, &[])];
        assert_eq!(choose(&fresh, &probed, None, Some("EU")).pool, 0);
        // Nothing healthy: the first pool.
        let dead = [pool(false, &[]), pool(false, &[])];
        assert_eq!(choose(&dead, &probed, None, Some("EU")).pool, 0);
    }
}
