//! The status view: each backend's and pool's health as operators see it, and the service's.

use super::{BackendRecord, Fleet, WEIGHT_SCALE};
use crate::policy::control::config::BackendState;
use crate::policy::health::breaker::BreakerState;
use crate::policy::health::checks::{BackendHealth, ServiceHealth};
use crate::policy::health::dns::{self, Address};
use crate::policy::health::regions::Region;
use crate::policy::traffic::steering::{self, PoolHealth};

impl Fleet {
    /// Each pool's name, health and healthy/total counts, for the status view.
    pub fn pool_status(&self, now_ms: u64) -> Vec<(String, PoolHealth, usize, usize)> {
        let params = self.breaker_params();
        (0..self.cfg.pools.len())
            .map(|p| {
                let (healthy, minimum) = self.pool_counts(p, now_ms, &params);
                let total = self.groups[p + 1].len();
                (
                    self.cfg.pools[p].name.to_string(),
                    steering::pool_health(healthy, total, minimum),
                    healthy,
                    total,
                )
            })
            .collect()
    }

    /// Backends taking new traffic now (enabled, healthy, breaker closed), and how many there are.
    pub fn summary(&self) -> (usize, usize) {
        let up = (0..self.backends.len())
            .filter(|&i| self.failover_ok(i))
            .count();
        (up, self.backends.len())
    }

    /// The addresses the service's `dns` records should list, sorted: each enabled backend its
    /// probes find healthy. The breaker is left out on purpose: it follows the Worker's own
    /// requests within seconds, and DNS answers are cached for a TTL anyway.
    pub fn dns_addresses(&self) -> Vec<Address> {
        let mut out: Vec<Address> = self
            .cfg
            .all_backends()
            .iter()
            .enumerate()
            .filter(|&(i, _)| {
                self.states[i] == BackendState::Enabled && self.backends[i].health.healthy
            })
            .filter_map(|(_, b)| dns::address_of(b.url.host(), b.address))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Backend `i` as operators see it: down when its probes or breaker keep traffic from it,
    /// unknown until active checks have probed it once, else healthy.
    fn backend_health(&self, i: usize) -> BackendHealth {
        let b = &self.backends[i];
        if !b.health.healthy || b.breaker.state != BreakerState::Closed {
            BackendHealth::Unhealthy
        } else if self.cfg.health.enabled && b.last_probe_ms.is_none() {
            BackendHealth::Unknown
        } else {
            BackendHealth::Healthy
        }
    }

    /// The service's health over the backends that should take new traffic (enabled ones).
    pub fn service_health(&self) -> ServiceHealth {
        let serving: Vec<BackendHealth> = (0..self.backends.len())
            .filter(|&i| self.states[i] == BackendState::Enabled)
            .map(|i| self.backend_health(i))
            .collect();
        ServiceHealth::of(&serving)
    }

    /// Per-backend facts for the status view (the platform shapes them into JSON).
    pub fn backend_status(&self, now_ms: u64) -> Vec<BackendStatus<'_>> {
        let params = self.breaker_params();
        let weights = self.effective_weights(now_ms);
        let scores = self.health_scores(now_ms);
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStatus {
                record: b,
                health: self.backend_health(i),
                weight: self.weights[i],
                effective_weight: f64::from(weights[i]) / f64::from(WEIGHT_SCALE),
                health_score: scores[i],
                state: self.states[i],
                error_rate: b.breaker.error_rate(now_ms, &params),
                outstanding: self.load[i].outstanding,
                ewma_ms: self.load[i].ewma.value(),
                region_latency: self.region_latency(i),
            })
            .collect()
    }
}

/// One backend as the status view shows it.
pub struct BackendStatus<'a> {
    pub record: &'a BackendRecord,
    pub health: BackendHealth,
    pub weight: u32,
    /// The weight in use now (lower while slow start ramps the backend up, or with score
    /// weighting while its health score is below 100).
    pub effective_weight: f64,
    /// 0–100, see `health::score`.
    pub health_score: u8,
    pub state: BackendState,
    pub error_rate: Option<f64>,
    /// Requests counted in flight (steering modes that count them).
    pub outstanding: u32,
    /// Peak-EWMA of real response times (ms), if any sample arrived.
    pub ewma_ms: Option<f64>,
    /// Probe latency (ms) from each region that sees it up (`activeHealthChecks.regions`).
    pub region_latency: Vec<(Region, f64)>,
}
