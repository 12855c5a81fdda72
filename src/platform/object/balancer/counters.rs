//! The Balancer's request, probe and lease counters: stored periodically, shown to `/admin/metrics` and the status view.

use worker::*;

use super::d1::KEY_ROLLUP;
use super::{Balancer, Service, KEY_METRICS, KEY_WATCH, METRICS_SAVE_MS};
use crate::policy::health::breaker::BreakerState;
use crate::policy::telemetry::metrics::{BackendGauges, HostMetrics, LeaseMetrics};

impl Balancer {
    /// Stores the counters when they changed and `force` or METRICS_SAVE_MS have passed.
    pub(super) async fn save_metrics(&self, force: bool) -> Result<()> {
        let now = Self::now();
        let due = force || now.saturating_sub(self.metrics_saved_ms.get()) >= METRICS_SAVE_MS;
        if !self.metrics_dirty.get() || !due {
            return Ok(());
        }
        // The open minute is stored with the counters: a restart loses no more of it than of them.
        let entries = js_sys::Object::new();
        let text = serde_json::to_string(&*self.metrics.borrow())?;
        js_sys::Reflect::set(&entries, &KEY_METRICS.into(), &text.into())?;
        js_sys::Reflect::set(&entries, &KEY_ROLLUP.into(), &self.rollup_text()?)?;
        // The change watch counts the same outcomes: it is kept as well as they are.
        let watch = serde_json::to_string(&*self.safety.borrow())?;
        js_sys::Reflect::set(&entries, &KEY_WATCH.into(), &watch.into())?;
        self.metrics_dirty.set(false);
        self.metrics_saved_ms.set(now);
        self.state.storage().put_multiple_raw(entries).await
    }

    /// This hostname's counters and gauges for `/admin/metrics`.
    pub(super) fn metrics_view(&self) -> Result<Response> {
        let service = self.service.borrow();
        let Some(Service::Ready(fleet)) = &*service else {
            return self.status();
        };
        let backends = fleet
            .backend_status(Self::now())
            .iter()
            .map(|s| BackendGauges {
                url: s.record.url.clone(),
                up: s.record.health.healthy
                    && !matches!(s.record.breaker.state, BreakerState::Open { .. }),
                weight: s.effective_weight,
                health_score: s.health_score,
                breaker: match s.record.breaker.state {
                    BreakerState::Closed => "closed",
                    BreakerState::Open { .. } => "open",
                    BreakerState::HalfOpen { .. } => "half_open",
                }
                .to_string(),
                regions: s
                    .record
                    .regions
                    .iter()
                    .map(|(r, up)| (r.as_str().to_string(), *up))
                    .collect(),
            })
            .collect();
        Response::from_json(&HostMetrics {
            hostname: fleet.cfg().hostname.to_string(),
            config_version: fleet.version(),
            backends,
            counters: self.metrics.borrow().clone(),
            leases: self.lease_metrics(Self::now()),
        })
    }

    /// The leases: outstanding at `now`, and granted, refreshed and handed back early in this
    /// object's lifetime (all 0 before the lease book is made). Read here for both the metrics
    /// and the status view.
    pub(super) fn lease_metrics(&self, now: u64) -> LeaseMetrics {
        match &mut *self.leases.borrow_mut() {
            Some(book) => LeaseMetrics {
                grants: book.counters.grants,
                refreshes: book.counters.refreshes,
                early_returns: book.counters.early_returns,
                outstanding: book.outstanding(now) as u64,
            },
            None => LeaseMetrics::default(),
        }
    }
}
