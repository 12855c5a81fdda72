//! The Balancer's alarm and active probes: keeping the alarm armed, probe rounds, and where health transitions go (tails, D1).

use worker::*;

use super::{Balancer, Service, KEY_BACKENDS, KEY_OUTBOX, MIN_ALARM_DELAY_MS};
use crate::platform::object::probe::{probe_backend, ProbeResult};
use crate::platform::store::healthlog;
use crate::policy::health::transitions::{self, HealthEvent};
use crate::policy::telemetry::notify::Cause;
use crate::policy::telemetry::tail::Line;
use crate::policy::traffic::fleet::{BackendRecord, ProbeOutcome};

impl Balancer {
    /// Transitions go to the tails and to the health history in D1: in the background when
    /// found on a decision, awaited when found by a probe round (`wait`), which no client awaits.
    pub(super) async fn observe(&self, events: Vec<HealthEvent>, wait: bool) {
        if events.is_empty() {
            return;
        }
        if self.tails.listening(&self.state) {
            for e in &events {
                self.tails.broadcast(&self.state, &Line::Health(e.clone()));
            }
        }
        if wait {
            healthlog::store(&self.env, &events).await;
        } else {
            healthlog::record(&self.env, &events);
        }
    }

    /// Re-arms a missing alarm: the probe loop must survive lost alarms and restarts.
    pub(super) async fn watchdog(&self, now: u64) -> Result<()> {
        // Without active checks no alarm is kept, so there is nothing to look up in storage
        // (otherwise every decision would read the alarm).
        let d1_due = self.d1_due_at(now);
        let watch_due = self.safety.borrow().due_at();
        if !self.probing_enabled()
            && self.outbox.borrow().next_due().is_none()
            && d1_due.is_none()
            && !self.keeps_dns()
            && watch_due.is_none()
        {
            return Ok(());
        }
        let known = *self.alarm_at.borrow();
        match known {
            Some(at) if at + 30_000 > now => Ok(()),
            _ => match self.state.storage().get_alarm().await? {
                // Kept unless a probe, a D1 write or the end of a change's watch is due before it
                // (a config change just added a backend; traffic opened a minute).
                Some(at)
                    if at as u64 + 30_000 > now
                        && self.next_probe_at(now).is_none_or(|p| at as u64 <= p)
                        && d1_due.is_none_or(|d| at as u64 <= d)
                        && self.dns_due_at().is_none_or(|d| at as u64 <= d.max(now))
                        && watch_due.is_none_or(|w| at as u64 <= w) =>
                {
                    *self.alarm_at.borrow_mut() = Some(at as u64);
                    Ok(())
                }
                _ => self.arm_next().await,
            },
        }
    }

    /// When the earliest probe is due, or None without active checks.
    fn next_probe_at(&self, now: u64) -> Option<u64> {
        match &mut *self.service.borrow_mut() {
            Some(Service::Ready(fleet)) => fleet.next_probe_at(now, &mut *self.rng.borrow_mut()),
            _ => None,
        }
    }

    /// Sets the alarm for the earliest of the next due probe, webhook delivery, D1 write and end
    /// of a change's watch.
    pub(super) async fn arm_next(&self) -> Result<()> {
        let now = Self::now();
        let probe = self.next_probe_at(now);
        let dns = self.dns_due_at().map(|d| d.max(now));
        let watch = self.safety.borrow().due_at();
        let next = [
            probe,
            self.outbox.borrow().next_due(),
            self.d1_due_at(now),
            dns,
            watch,
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) => self.set_alarm_in(at.saturating_sub(now)).await,
            None => Ok(()),
        }
    }

    pub(super) async fn set_alarm_in(&self, delay_ms: u64) -> Result<()> {
        let delay_ms = delay_ms.max(MIN_ALARM_DELAY_MS);
        let at = Self::now() + delay_ms;
        self.state.storage().set_alarm(delay_ms as i64).await?;
        *self.alarm_at.borrow_mut() = Some(at);
        Ok(())
    }

    /// A suspect backend's probe moved earlier: the alarm wakes for it unless it wakes sooner anyway.
    pub(super) async fn reprobe_soon(&self, now: u64) -> Result<()> {
        let Some(due) = self.next_probe_at(now) else {
            return Ok(());
        };
        let known = *self.alarm_at.borrow();
        match known {
            Some(at) if at <= due => Ok(()),
            _ => self.set_alarm_in(due.saturating_sub(now)).await,
        }
    }

    /// Stores the backends' state, and in the same write the outbox when a transition queued
    /// events: an event is durable exactly when the state change that made it is.
    pub(super) async fn persist_backends(&self) -> Result<()> {
        let records: Vec<BackendRecord> = match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => fleet.records().to_vec(),
            _ => return Ok(()),
        };
        if !self.outbox_dirty.replace(false) {
            return self.state.storage().put(KEY_BACKENDS, records).await;
        }
        let outbox = serde_json::to_string(&*self.outbox.borrow())?;
        let entries = js_sys::Object::new();
        js_sys::Reflect::set(
            &entries,
            &KEY_BACKENDS.into(),
            &serde_wasm_bindgen::to_value(&records).map_err(|e| Error::RustError(e.to_string()))?,
        )?;
        js_sys::Reflect::set(&entries, &KEY_OUTBOX.into(), &outbox.into())?;
        self.state.storage().put_multiple_raw(entries).await
    }

    /// Probes the backends due now (`all`: every backend not disabled) in parallel; applies
    /// results and persists flips.
    pub(super) async fn probe(&self, all: bool) -> Result<Vec<ProbeResult>> {
        let now = Self::now();
        let plan = match &mut *self.service.borrow_mut() {
            Some(Service::Ready(fleet)) => {
                fleet.take_probe_plan(now, all, &mut *self.rng.borrow_mut())
            }
            _ => return Ok(vec![]),
        };
        if plan.targets.is_empty() {
            return Ok(vec![]);
        }
        let monitor = match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => fleet.cfg().health.clone(),
            _ => return Ok(vec![]),
        };
        let probes = plan
            .targets
            .iter()
            .map(|t| probe_backend(&t.url, &monitor, t.discovered_path.as_deref()));
        let results = futures_util::future::join_all(probes).await;
        let now = Self::now();
        let before = self.views();
        {
            let mut counters = self.metrics.borrow_mut();
            for (t, r) in plan.targets.iter().zip(&results) {
                counters.record_probe(&t.url, r.ok);
            }
            self.metrics_dirty.set(true);
        }
        {
            // A round covers the backends due; results of backends the config dropped go.
            let mut last = self.last_probes.borrow_mut();
            if let Some(Service::Ready(fleet)) = &*self.service.borrow() {
                last.retain(|url, _| fleet.records().iter().any(|b| &b.url == url));
            }
            for r in &results {
                last.insert(r.url.clone(), (now, r.clone()));
            }
        }
        let mut persist = false;
        let mut events = Vec::new();
        if let Some(Service::Ready(fleet)) = &mut *self.service.borrow_mut() {
            let before = transitions::marks(fleet.records());
            for (t, r) in plan.targets.iter().zip(&results) {
                let outcome = ProbeOutcome {
                    ok: r.ok,
                    latency_ms: r.latency_ms,
                    error: r.error.clone(),
                    discovered_path: r.discovered_path.clone(),
                };
                persist |= fleet.apply_probe_result(t, &outcome, now);
            }
            if persist {
                let host = fleet.cfg().hostname.to_string();
                events = transitions::diff(&host, &before, fleet.records(), "probe", now);
            }
        }
        self.observe(events, true).await;
        if persist {
            self.notice(before, Cause::Probe);
            self.persist_backends().await?;
        }
        Ok(results)
    }
}
