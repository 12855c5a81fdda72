//! The Balancer's webhook outbox: events from transitions, stored before sending, delivered from the alarm.

use worker::*;

use super::{err, invalid, random_bytes, Balancer, Service, KEY_OUTBOX, MIN_ALARM_DELAY_MS};
use crate::platform::object::webhook;
use crate::policy::control::config::{BackendState, EventKind, ServiceConfig};
use crate::policy::control::watch::{Tally, Watch};
use crate::policy::health::breaker::BreakerState;
use crate::policy::telemetry::notify::{self, BackendView, Cause, Outbox};

/// A new event id: 16 random bytes in hex.
fn event_id() -> String {
    random_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Balancer {
    /// The backends as the notifier sees them, when a webhook could care (else no cost).
    pub(super) fn views(&self) -> Option<Vec<BackendView>> {
        let service = self.service.borrow();
        let Some(Service::Ready(fleet)) = &*service else {
            return None;
        };
        if fleet.cfg().webhooks().is_empty() {
            return None;
        }
        Some(
            fleet
                .backend_status(Self::now())
                .iter()
                .map(|s| BackendView {
                    url: s.record.url.clone(),
                    healthy: s.record.health.healthy,
                    breaker_open: !matches!(s.record.breaker.state, BreakerState::Closed),
                    enabled: s.state != BackendState::Disabled,
                    last_error: s.record.last_error.clone(),
                })
                .collect(),
        )
    }

    /// Queues the events between `before` and now (the caller stores the outbox with the state).
    pub(super) fn notice(&self, before: Option<Vec<BackendView>>, cause: Cause) {
        let (Some(before), Some(after)) = (before, self.views()) else {
            return;
        };
        for (kind, details) in notify::transitions(&before, &after, cause) {
            self.raise(Some(kind), details);
        }
    }

    /// Adds an event to the outbox for every subscribed webhook (None: a test event for all).
    /// Returns how many deliveries it queued.
    pub(super) fn raise(&self, kind: Option<EventKind>, details: serde_json::Value) -> usize {
        let (host, hooks) = match &*self.service.borrow() {
            Some(Service::Ready(f)) => (f.cfg().hostname.to_string(), f.cfg().webhooks().to_vec()),
            _ => return 0,
        };
        let id = event_id();
        let mut outbox = self.outbox.borrow_mut();
        let dropped = outbox.push(id.clone(), kind, &host, details, &hooks, Self::now());
        if dropped > 0 {
            self.metrics
                .borrow_mut()
                .record_delivery("dropped", dropped);
            self.metrics_dirty.set(true);
        }
        let queued = outbox.event(&id).map_or(0, |e| e.deliveries.len());
        if queued > 0 {
            self.outbox_dirty.set(true);
        }
        queued
    }

    /// Queues `config.changed` (or `config.rolled_back` when `restored` names the version
    /// brought back, 0 being the deployed config; `config.auto_rolled_back` when FlowBalance undoes
    /// the watched change `undone`) in `outbox` for the config `cfg` about to be stored: the
    /// caller stores this outbox with the config. Returns how many events it dropped.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_config_change(
        &self,
        outbox: &mut Outbox,
        cfg: &ServiceConfig,
        previous: u64,
        version: u64,
        restored: Option<u64>,
        undone: Option<&Watch>,
        actor: String,
        now_ms: u64,
    ) -> u64 {
        let pct = |t: Tally| (t.error_pct() * 10.0).round() / 10.0;
        let (kind, details) = match (restored, undone) {
            (_, Some(w)) => (
                EventKind::ConfigAutoRolledBack,
                serde_json::json!({
                    "version": version,
                    "restored_version": w.previous,
                    "rolled_back_version": w.version,
                    "previous_version": previous,
                    "actor": actor,
                    "error_rate": pct(w.after),
                    "requests": w.after.requests,
                    "baseline_error_rate": pct(w.baseline),
                    "baseline_requests": w.baseline.requests,
                    "max_error_rate_increase": w.max_increase,
                    "summary": w.summary(),
                }),
            ),
            (Some(v), None) => (
                EventKind::ConfigRolledBack,
                serde_json::json!({"version": version, "restored_version": v, "previous_version": previous, "actor": actor}),
            ),
            (None, None) => (
                EventKind::ConfigChanged,
                serde_json::json!({"version": version, "previous_version": previous, "actor": actor}),
            ),
        };
        let host = cfg.hostname.to_string();
        outbox.push(
            event_id(),
            Some(kind),
            &host,
            details,
            cfg.webhooks(),
            now_ms,
        )
    }

    /// Stores the outbox if it changed and wakes the alarm for deliveries that are due.
    /// The wake does not hang on the outbox being unsaved: `persist_backends` stores events with
    /// the transition that raised them, and their alarm must still come forward (before, it
    /// waited for whatever alarm came next, a minute later when nothing else was due).
    pub(super) async fn send_soon(&self) -> Result<()> {
        self.save_outbox().await?;
        self.wake_for_deliveries().await
    }

    /// Brings the alarm forward to the next due delivery, if it is later. A delivery already
    /// overdue counts as due now, so an alarm set for it a moment ago is not set again.
    pub(super) async fn wake_for_deliveries(&self) -> Result<()> {
        let due = self.outbox.borrow().next_due();
        let known = *self.alarm_at.borrow();
        let now = Self::now();
        match (due, known) {
            (None, _) => Ok(()),
            (Some(d), Some(at)) if at <= d.max(now + MIN_ALARM_DELAY_MS) => Ok(()),
            (Some(d), _) => self.set_alarm_in(d.saturating_sub(now)).await,
        }
    }

    async fn save_outbox(&self) -> Result<()> {
        if !self.outbox_dirty.replace(false) {
            return Ok(());
        }
        let text = serde_json::to_string(&*self.outbox.borrow())?;
        self.state.storage().put(KEY_OUTBOX, text).await
    }

    /// Sends the deliveries that are due (in parallel, bounded), then stores their outcome.
    /// The outbox was stored before: a restart mid-send sends again (at-least-once, same id).
    pub(super) async fn deliver_due(&self) -> Result<()> {
        let now = Self::now();
        let due = self.outbox.borrow().due(now);
        if due.is_empty() {
            return Ok(());
        }
        let hooks = match &*self.service.borrow() {
            Some(Service::Ready(f)) => f.cfg().webhooks().to_vec(),
            _ => vec![],
        };
        let requests: Vec<Option<notify::Outgoing>> = {
            let outbox = self.outbox.borrow();
            due.iter()
                .map(|(id, i)| {
                    let e = outbox.event(id)?;
                    let d = e.deliveries.get(*i)?;
                    let hook = hooks
                        .iter()
                        .find(|h| h.url.as_str() == d.url && h.format == d.format)?;
                    Some(notify::request(e, hook, now / 1000))
                })
                .collect()
        };
        let sends = requests.iter().map(|r| async move {
            match r {
                Some(out) => webhook::send(out).await,
                None => Err("this webhook is no longer in the service's config".to_string()),
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let done = Self::now();
        {
            let mut outbox = self.outbox.borrow_mut();
            let mut counters = self.metrics.borrow_mut();
            let mut rng = self.rng.borrow_mut();
            for ((id, i), result) in due.iter().zip(results) {
                if let Some(settled) = outbox.settle(id, *i, result, done, &mut *rng) {
                    counters.record_delivery(settled.label(), 1);
                }
            }
        }
        self.metrics_dirty.set(true);
        self.outbox_dirty.set(true);
        self.save_outbox().await
    }

    /// `GET /events`: recent events, newest first, with each delivery's state.
    pub(super) fn events_view(&self) -> Result<Response> {
        let outbox = self.outbox.borrow();
        let events: Vec<serde_json::Value> = outbox
            .events
            .iter()
            .rev()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["timestamp"] = notify::rfc3339(e.ts_ms).into();
                v
            })
            .collect();
        let pending = outbox
            .events
            .iter()
            .flat_map(|e| &e.deliveries)
            .filter(|d| d.state == notify::DeliveryState::Pending)
            .count();
        Response::from_json(&serde_json::json!({
            "hostname": self.host.borrow().clone(),
            "pending_deliveries": pending,
            "dropped_events": outbox.dropped,
            "outbox_capacity": notify::OUTBOX_MAX,
            "events": events,
        }))
    }

    /// `POST /events/test`: a `test` event to every webhook, through the outbox like any other.
    pub(super) async fn test_event(&self) -> Result<Response> {
        if !self.fleet_ready() {
            return self.status();
        }
        let queued = self.raise(
            None,
            serde_json::json!({"message": "test event from POST /admin/services/{hostname}/events/test"}),
        );
        if queued == 0 {
            return invalid(vec![err(
                "notifications.webhooks",
                "no webhook is configured for this service",
            )]);
        }
        let id = self.outbox.borrow().events.back().map(|e| e.id.clone());
        self.send_soon().await?;
        Ok(
            Response::from_json(&serde_json::json!({ "id": id, "deliveries": queued }))?
                .with_status(202),
        )
    }
}
