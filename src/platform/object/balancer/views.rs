//! The Balancer's status view: per-backend health, breaker and latency, monitors, decisions and leases.

use std::collections::HashMap;

use worker::*;

use super::{Balancer, Service};
use crate::platform::object::probe::ProbeResult;
use crate::policy::control::config::{self, ActiveHealth};
use crate::policy::health::breaker::BreakerState;
use crate::policy::health::monitor::MonitorType;
use crate::policy::telemetry::metrics::LeaseMetrics;
use crate::policy::traffic::fleet::{BackendStatus, Fleet};

impl Balancer {
    pub(super) fn status(&self) -> Result<Response> {
        match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => {
                let now = Self::now();
                let mut view = status_view(fleet, now, &self.last_probes.borrow());
                view["decisions"] = decisions_view(fleet, &self.lease_metrics(now));
                view["d1"] = self.d1_view();
                view["dns"] = self.dns_view();
                view["change_watch"] = self.watch_view(now);
                Response::from_json(&view)
            }
            Some(Service::Missing(r)) => Response::error(
                r.message.clone(),
                if r.status == 421 { 404 } else { r.status },
            ),
            None => Response::error("no service is configured here", 404),
        }
    }
}

/// The admin view of one service: per-backend health, breaker and latency, and the config.
fn status_view(
    fleet: &Fleet,
    now_ms: u64,
    probes: &HashMap<String, (u64, ProbeResult)>,
) -> serde_json::Value {
    let monitor = &fleet.cfg().health;
    let backends: Vec<serde_json::Value> = fleet
        .backend_status(now_ms)
        .iter()
        .map(|s| {
            let b = s.record;
            let (breaker, open_until) = match b.breaker.state {
                BreakerState::Closed => ("closed", None),
                BreakerState::Open { until_ms } => ("open", Some(until_ms)),
                BreakerState::HalfOpen { .. } => ("half_open", None),
            };
            serde_json::json!({
                "url": b.url,
                "weight": s.weight,
                "effective_weight": s.effective_weight,
                "health_score": s.health_score,
                "state": s.state,
                "health": s.health,
                "healthy": b.health.healthy,
                "breaker": breaker,
                "breaker_open_until_ms": open_until,
                "consecutive_successes": b.health.consecutive_ok,
                "consecutive_failures": b.health.consecutive_fail,
                "consecutive_request_failures": b.breaker.consecutive_failures,
                "error_rate": s.error_rate,
                "last_probe_ms": b.last_probe_ms,
                "latency_ms": b.latency_ms.map(|l| (l * 10.0).round() / 10.0),
                "outstanding": s.outstanding,
                "ewma_ms": s.ewma_ms.map(|l| (l * 10.0).round() / 10.0),
                "health_path": b.health_path,
                "last_error": b.last_error,
                "monitor": monitor_view(monitor, probes.get(&b.url)),
                "regions": regions_view(monitor, s),
                "region_latency_ms": (!monitor.probe_regions().is_empty()).then(|| {
                    s.region_latency
                        .iter()
                        .map(|(r, l)| (r.as_str().to_string(), serde_json::json!((l * 10.0).round() / 10.0)))
                        .collect::<serde_json::Map<_, _>>()
                }),
            })
        })
        .collect();
    let (up, total) = fleet.summary();
    let pools: Vec<serde_json::Value> = fleet
        .pool_status(now_ms)
        .into_iter()
        .map(|(name, health, healthy, total)| {
            serde_json::json!({ "name": name, "health": health, "healthy_backends": healthy, "total_backends": total })
        })
        .collect();
    let lb = &fleet.cfg().load_balancer;
    serde_json::json!({
        "hostname": fleet.cfg().hostname,
        "version": fleet.version(),
        "endpoint_steering": lb.endpoint_steering,
        "steering": lb.steering,
        "pools": pools,
        "health": fleet.service_health().as_str(),
        "healthy_backends": up,
        "total_backends": total,
        "backends": backends,
        "config": config::redacted(&fleet.cfg().to_value()),
    })
}

/// Where decisions are made (as set, in effect and why), and the leases (see `lease_metrics`).
fn decisions_view(fleet: &Fleet, leases: &LeaseMetrics) -> serde_json::Value {
    let cfg = fleet.cfg();
    serde_json::json!({
        "mode": cfg.decisions.mode,
        "effective_mode": cfg.effective_mode(),
        "why": cfg.effective_mode_why(),
        "lease_ms": cfg.decisions.lease_ms,
        "leases_outstanding": leases.outstanding,
        "lease_grants": leases.grants,
        "lease_refreshes": leases.refreshes,
        "lease_early_returns": leases.early_returns,
    })
}

/// Each probe region's view of a backend (`{"wnam": "up", "apac": "down"}`; `unknown` before its
/// first report), or null when the backend is probed from the hostname's object.
fn regions_view(m: &ActiveHealth, s: &BackendStatus<'_>) -> serde_json::Value {
    let regions = m.probe_regions();
    if regions.is_empty() {
        return serde_json::Value::Null;
    }
    let view: serde_json::Map<String, serde_json::Value> = regions
        .iter()
        .map(|r| {
            let state = match s.record.regions.get(r) {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            };
            (r.as_str().to_string(), state.into())
        })
        .collect();
    view.into()
}

/// A backend's monitor as the status view shows it: what it checks, and its last result and
/// why it failed (`expected 2xx, got 500`; `body did not contain "ok"`). Null before the first
/// probe of this object's lifetime, or without active checks.
fn monitor_view(m: &ActiveHealth, last: Option<&(u64, ProbeResult)>) -> serde_json::Value {
    let Some((at_ms, r)) = last.filter(|_| m.enabled) else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "type": m.kind,
        "method": (m.kind != MonitorType::Tcp).then_some(m.method),
        "target": r.path,
        "result": if r.ok { "up" } else { "down" },
        "status": r.status,
        "reason": r.error,
        "latency_ms": r.latency_ms,
        "checked_ms": at_ms,
    })
}
