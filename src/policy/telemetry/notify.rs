//! Notifications: which events a state change makes, the bounded outbox of their webhook deliveries (backoff, give-up), and the signed payloads.

use std::collections::VecDeque;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::policy::control::config::{EventKind, Webhook, WebhookFormat};
use crate::policy::rng::Rng;

/// Events kept in the outbox (delivered ones make room first); past this, the oldest
/// undelivered event is dropped and counted.
pub const OUTBOX_MAX: usize = 100;
/// Deliveries sent per alarm at most; the rest wait for the next one, due at once.
pub const SEND_BATCH: usize = 10;
/// First retry delay; it doubles per failed attempt up to `BACKOFF_MAX_MS`.
pub const BACKOFF_BASE_MS: u64 = 2_000;
pub const BACKOFF_MAX_MS: u64 = 3_600_000;
/// A delivery is retried for at least this long after its event, then given up.
pub const GIVE_UP_MS: u64 = 24 * 3_600_000;

/// What a backend looks like to the notifier.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendView {
    pub url: String,
    pub healthy: bool,
    pub breaker_open: bool,
    pub enabled: bool,
    pub last_error: Option<String>,
}

impl BackendView {
    fn up(&self) -> bool {
        self.healthy && !self.breaker_open
    }
}

/// What moved a backend: an active probe or real traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Probe,
    Passive,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Probe => "probe",
            Cause::Passive => "passive",
        }
    }
}

/// The events between two views of the same backends (same order; a changed list makes none).
pub fn transitions(
    before: &[BackendView],
    after: &[BackendView],
    cause: Cause,
) -> Vec<(EventKind, Value)> {
    let mut out = Vec::new();
    if before.len() != after.len() || before.iter().zip(after).any(|(b, a)| b.url != a.url) {
        return out;
    }
    for (b, a) in before.iter().zip(after) {
        if !b.breaker_open && a.breaker_open {
            out.push((
                EventKind::BreakerOpen,
                json!({"backend": a.url, "error": a.last_error}),
            ));
        }
        if b.breaker_open && !a.breaker_open {
            out.push((EventKind::BreakerClosed, json!({"backend": a.url})));
        }
        if b.up() && !a.up() {
            out.push((
                EventKind::BackendDown,
                json!({"backend": a.url, "reason": cause.as_str(), "error": a.last_error}),
            ));
        }
        if !b.up() && a.up() {
            out.push((
                EventKind::BackendUp,
                json!({"backend": a.url, "reason": cause.as_str()}),
            ));
        }
    }
    let live = |v: &[BackendView]| v.iter().filter(|b| b.enabled && b.up()).count();
    let total = after.iter().filter(|b| b.enabled).count();
    let (was, now) = (live(before), live(after));
    if was > 0 && now == 0 && total > 0 {
        out.push((
            EventKind::ServiceUnhealthy,
            json!({"healthy_backends": 0, "total_backends": total, "mode": "panic: every enabled backend is tried anyway"}),
        ));
    }
    if was == 0 && now > 0 {
        out.push((
            EventKind::ServiceRecovered,
            json!({"healthy_backends": now, "total_backends": total}),
        ));
    }
    out
}

/// The state of one event's delivery to one webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    GivenUp,
    /// Pushed out of a full outbox before it could be delivered.
    Dropped,
}

/// One event's delivery to one webhook (the secret is read from the config when sending).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub url: String,
    pub format: WebhookFormat,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    pub done_ms: Option<u64>,
}

/// One event with its deliveries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    /// `backend.down` ... or `test`.
    pub event: String,
    pub ts_ms: u64,
    pub hostname: String,
    pub details: Value,
    pub deliveries: Vec<Delivery>,
}

impl Event {
    fn pending(&self) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Pending)
    }
}

/// The durable outbox of one hostname: stored before anything is sent, bounded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub events: VecDeque<Event>,
    /// Events pushed out of the full outbox before all their deliveries finished.
    pub dropped: u64,
}

/// What a delivery attempt came to, for the metrics' `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Failed,
    GivenUp,
}

impl Settled {
    pub fn label(self) -> &'static str {
        match self {
            Settled::Delivered => "delivered",
            Settled::Failed => "failed",
            Settled::GivenUp => "given_up",
        }
    }
}

impl Outbox {
    /// Queues `event` for every webhook subscribed to it (`test` goes to all); returns the
    /// deliveries dropped to make room (0 normally). Nothing is queued without a subscriber.
    pub fn push(
        &mut self,
        id: String,
        kind: Option<EventKind>,
        hostname: &str,
        details: Value,
        hooks: &[Webhook],
        now_ms: u64,
    ) -> u64 {
        let deliveries: Vec<Delivery> = hooks
            .iter()
            .filter(|h| kind.is_none_or(|k| h.events.contains(&k)))
            .map(|h| Delivery {
                url: h.url.to_string(),
                format: h.format,
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt_ms: Some(now_ms),
                last_error: None,
                last_status: None,
                done_ms: None,
            })
            .collect();
        if deliveries.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        while self.events.len() >= OUTBOX_MAX {
            // Finished events make room first; only then the oldest undelivered one goes.
            let victim = self.events.iter().position(|e| !e.pending()).unwrap_or(0);
            if let Some(mut e) = self.events.remove(victim) {
                if e.pending() {
                    self.dropped += 1;
                    for d in e
                        .deliveries
                        .iter_mut()
                        .filter(|d| d.state == DeliveryState::Pending)
                    {
                        d.state = DeliveryState::Dropped;
                        dropped += 1;
                    }
                }
            }
        }
        self.events.push_back(Event {
            id,
            event: kind.map_or_else(|| "test".to_string(), event_name),
            ts_ms: now_ms,
            hostname: hostname.to_string(),
            details,
            deliveries,
        });
        dropped
    }

    /// Deliveries due now as (event id, delivery index), oldest first, at most `SEND_BATCH`.
    pub fn due(&self, now_ms: u64) -> Vec<(String, usize)> {
        self.events
            .iter()
            .flat_map(|e| {
                e.deliveries
                    .iter()
                    .enumerate()
                    .filter(move |(_, d)| {
                        d.state == DeliveryState::Pending
                            && d.next_attempt_ms.is_some_and(|t| t <= now_ms)
                    })
                    .map(move |(i, _)| (e.id.clone(), i))
            })
            .take(SEND_BATCH)
            .collect()
    }

    /// When the next pending delivery is due.
    pub fn next_due(&self) -> Option<u64> {
        self.events
            .iter()
            .flat_map(|e| &e.deliveries)
            .filter(|d| d.state == DeliveryState::Pending)
            .filter_map(|d| d.next_attempt_ms)
            .min()
    }

    pub fn event(&self, id: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.id == id)
    }

    /// Records one attempt's result (`Ok(status)` for any HTTP answer, `Err(why)` otherwise):
    /// 2xx delivers; anything else is retried with backoff until `GIVE_UP_MS` after the event.
    /// None when the delivery is gone (dropped meanwhile) or no longer pending.
    pub fn settle(
        &mut self,
        id: &str,
        index: usize,
        result: Result<u16, String>,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Option<Settled> {
        let e = self.events.iter_mut().find(|e| e.id == id)?;
        let created = e.ts_ms;
        let d = e.deliveries.get_mut(index)?;
        if d.state != DeliveryState::Pending {
            return None;
        }
        d.attempts += 1;
        let error = match result {
            Ok(s) if (200..300).contains(&s) => {
                d.state = DeliveryState::Delivered;
                d.last_status = Some(s);
                d.last_error = None;
                d.next_attempt_ms = None;
                d.done_ms = Some(now_ms);
                return Some(Settled::Delivered);
            }
            Ok(s) => {
                d.last_status = Some(s);
                format!("receiver answered {s}")
            }
            Err(why) => why,
        };
        d.last_error = Some(error);
        if now_ms.saturating_sub(created) >= GIVE_UP_MS {
            d.state = DeliveryState::GivenUp;
            d.next_attempt_ms = None;
            d.done_ms = Some(now_ms);
            return Some(Settled::GivenUp);
        }
        d.next_attempt_ms = Some(now_ms + backoff_ms(d.attempts, rng));
        Some(Settled::Failed)
    }
}

/// Delay after the `attempts`-th failed attempt: doubling from `BACKOFF_BASE_MS`, capped at
/// `BACKOFF_MAX_MS`, then "equal jitter" (half fixed, half random) so receivers coming back are
/// not hit by every hostname at once.
pub fn backoff_ms(attempts: u32, rng: &mut impl Rng) -> u64 {
    let exp = attempts.saturating_sub(1).min(31);
    let full = BACKOFF_BASE_MS
        .saturating_mul(1u64 << exp)
        .min(BACKOFF_MAX_MS);
    full / 2 + rng.below(full / 2 + 1)
}

/// The wire name of an event kind.
pub fn event_name(kind: EventKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A webhook request ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub url: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// The request delivering `event` to `hook` at `now_s` (unix seconds).
pub fn request(event: &Event, hook: &Webhook, now_s: u64) -> Outgoing {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (
            "user-agent".to_string(),
            "FlowBalance-Webhook/1".to_string(),
        ),
        ("X-FlowBalance-Event-Id".to_string(), event.id.clone()),
        ("X-FlowBalance-Event".to_string(), event.event.clone()),
    ];
    let body = match hook.format {
        WebhookFormat::Json => json!({
            "id": event.id,
            "event": event.event,
            "timestamp": rfc3339(event.ts_ms),
            "hostname": event.hostname,
            "details": event.details,
        })
        .to_string(),
        WebhookFormat::Slack => json!({ "text": slack_text(event) }).to_string(),
    };
    if let Some(secret) = &hook.secret {
        headers.push((
            "X-FlowBalance-Signature".to_string(),
            signature(secret, now_s, &body),
        ));
    }
    Outgoing {
        url: hook.url.to_string(),
        body,
        headers,
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the timestamp is signed too,
/// so a receiver can refuse old (replayed) deliveries.
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    let hex = match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mut m) => {
            m.update(format!("{t}.").as_bytes());
            m.update(body.as_bytes());
            m.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        }
        Err(_) => String::new(), // HMAC takes keys of any length
    };
    format!("t={t},v1={hex}")
}

/// One line for a chat channel.
pub fn slack_text(e: &Event) -> String {
    let d = &e.details;
    let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let err = d
        .get("error")
        .and_then(Value::as_str)
        .map(|x| format!(": {x}"))
        .unwrap_or_default();
    let what = match e.event.as_str() {
        "backend.down" => format!("backend {} is DOWN ({}{err})", s("backend"), s("reason")),
        "backend.up" => format!("backend {} is up again ({})", s("backend"), s("reason")),
        "breaker.open" => format!("circuit breaker of {} opened{err}", s("backend")),
        "breaker.closed" => format!("circuit breaker of {} closed", s("backend")),
        "service.unhealthy" => "every backend is unhealthy (panic mode)".to_string(),
        "service.recovered" => "service recovered: a backend takes traffic again".to_string(),
        "config.changed" => format!(
            "config changed to version {} by {}",
            d["version"],
            s("actor")
        ),
        "config.rolled_back" => format!(
            "config rolled back to version {} by {}",
            d["restored_version"],
            s("actor")
        ),
        "dns.sync_failed" => format!("DNS records of {} not synced{err}", s("name")),
        "config.auto_rolled_back" => format!(
            "version {} made the error rate rise to {}% (from {}%): rolled back automatically to version {}",
            d["rolled_back_version"],
            d["error_rate"],
            d["baseline_error_rate"],
            d["restored_version"]
        ),
        _ => "test event".to_string(),
    };
    format!("[FlowBalance] {}: {what}", e.hostname)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a unix time in ms.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::control::config::BackendUrl;
    use crate::policy::rng::SplitMix64;

    fn view(url: &str, healthy: bool, open: bool) -> BackendView {
        BackendView {
            url: url.into(),
            healthy,
            breaker_open: open,
            enabled: true,
            last_error: Some("refused".into()),
        }
    }

    fn hook(events: Vec<EventKind>, format: WebhookFormat) -> Webhook {
        Webhook {
            url: BackendUrl::parse("http://127.0.0.1:9/hook").unwrap(),
            secret: Some("0123456789abcdef".into()),
            events,
            format,
        }
    }

    fn kinds(v: &[(EventKind, Value)]) -> Vec<EventKind> {
        v.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn transitions_name_what_changed_and_why() {
        let before = [view("a", true, false), view("b", true, false)];
        let probe_down = [view("a", false, false), view("b", true, false)];
        let t = transitions(&before, &probe_down, Cause::Probe);
        assert_eq!(kinds(&t), [EventKind::BackendDown]);
        assert_eq!(t[0].1["reason"], "probe");
        assert_eq!(t[0].1["backend"], "a");

        let passive = [view("a", true, true), view("b", true, false)];
        let t = transitions(&before, &passive, Cause::Passive);
        assert_eq!(kinds(&t), [EventKind::BreakerOpen, EventKind::BackendDown]);
        assert_eq!(t[1].1["reason"], "passive");

        let all_down = [view("a", false, false), view("b", true, true)];
        let t = transitions(&probe_down, &all_down, Cause::Passive);
        assert_eq!(
            kinds(&t),
            [
                EventKind::BreakerOpen,
                EventKind::BackendDown,
                EventKind::ServiceUnhealthy
            ]
        );
        let t = transitions(&all_down, &probe_down, Cause::Probe);
        assert_eq!(
            kinds(&t),
            [
                EventKind::BreakerClosed,
                EventKind::BackendUp,
                EventKind::ServiceRecovered
            ]
        );
        assert!(transitions(&before, &before, Cause::Probe).is_empty());
        // A different backend list (config change) is not a transition.
        assert!(transitions(&before, &before[..1], Cause::Probe).is_empty());
    }

    #[test]
    fn push_queues_only_for_subscribers_and_test_for_all() {
        let hooks = [
            hook(vec![EventKind::BackendDown], WebhookFormat::Json),
            hook(EventKind::ALL.to_vec(), WebhookFormat::Slack),
        ];
        let mut o = Outbox::default();
        o.push(
            "1".into(),
            Some(EventKind::BackendDown),
            "h",
            json!({}),
            &hooks,
            5,
        );
        o.push(
            "2".into(),
            Some(EventKind::BackendUp),
            "h",
            json!({}),
            &hooks,
            5,
        );
        o.push("3".into(), None, "h", json!({}), &hooks, 5);
        let n: Vec<usize> = o.events.iter().map(|e| e.deliveries.len()).collect();
        assert_eq!(n, [2, 1, 2]);
        assert_eq!(o.events[2].event, "test");
        o.push(
            "4".into(),
            Some(EventKind::BackendUp),
            "h",
            json!({}),
            &hooks[..1],
            5,
        );
        assert_eq!(o.events.len(), 3, "no subscriber: nothing stored");
        assert_eq!(o.next_due(), Some(5));
        assert_eq!(o.due(5).len(), 5);
        assert!(o.due(4).is_empty());
    }

    #[test]
    fn outbox_is_bounded_finished_events_go_first_and_overflow_is_counted() {
        let hooks = [hook(EventKind::ALL.to_vec(), WebhookFormat::Json)];
        let mut o = Outbox::default();
        let mut rng = SplitMix64(1);
        for i in 0..OUTBOX_MAX {
            o.push(
                i.to_string(),
                Some(EventKind::BackendDown),
                "h",
                json!({}),
                &hooks,
                0,
            );
        }
        assert_eq!(
            o.settle("5", 0, Ok(204), 1, &mut rng),
            Some(Settled::Delivered)
        );
        assert_eq!(
            o.push(
                "new1".into(),
                Some(EventKind::BackendUp),
                "h",
                json!({}),
                &hooks,
                2
            ),
            0
        );
        assert!(o.event("5").is_none(), "the delivered event made room");
        assert!(o.event("0").is_some());
        assert_eq!(
            o.push(
                "new2".into(),
                Some(EventKind::BackendUp),
                "h",
                json!({}),
                &hooks,
                3
            ),
            1
        );
        assert!(o.event("0").is_none(), "then the oldest undelivered one");
        assert_eq!(o.dropped, 1);
        assert_eq!(o.events.len(), OUTBOX_MAX);
    }

    #[test]
    fn failures_back_off_for_a_day_then_give_up() {
        let hooks = [hook(EventKind::ALL.to_vec(), WebhookFormat::Json)];
        let mut o = Outbox::default();
        let mut rng = SplitMix64(7);
        o.push(
            "e".into(),
            Some(EventKind::BackendDown),
            "h",
            json!({}),
            &hooks,
            0,
        );
        let mut now = 0;
        let mut attempts = 0;
        loop {
            let due = o.next_due().expect("still pending");
            assert!(due >= now);
            now = due;
            attempts += 1;
            let r = o.settle("e", 0, Err("connection refused".into()), now, &mut rng);
            if r == Some(Settled::GivenUp) {
                break;
            }
            assert_eq!(r, Some(Settled::Failed));
            assert!(attempts < 200);
        }
        assert!(now >= GIVE_UP_MS, "retried for at least 24 h: {now}");
        assert!(now < GIVE_UP_MS + BACKOFF_MAX_MS + 1);
        let d = &o.event("e").unwrap().deliveries[0];
        assert_eq!((d.state, d.attempts), (DeliveryState::GivenUp, attempts));
        assert_eq!(d.last_error.as_deref(), Some("connection refused"));
        assert_eq!(o.next_due(), None);
        // A settled delivery is not settled twice (at-least-once alarms).
        assert_eq!(o.settle("e", 0, Ok(200), now, &mut rng), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut rng = SplitMix64(3);
        for attempts in 1..40 {
            let full = (BACKOFF_BASE_MS << (attempts - 1).min(31)).min(BACKOFF_MAX_MS);
            let d = backoff_ms(attempts, &mut rng);
            assert!((full / 2..=full).contains(&d), "{attempts}: {d}");
        }
    }

    #[test]
    fn non_2xx_is_retried_2xx_delivers() {
        let hooks = [hook(EventKind::ALL.to_vec(), WebhookFormat::Json)];
        let mut o = Outbox::default();
        let mut rng = SplitMix64(3);
        o.push(
            "e".into(),
            Some(EventKind::BackendDown),
            "h",
            json!({}),
            &hooks,
            0,
        );
        assert_eq!(
            o.settle("e", 0, Ok(500), 10, &mut rng),
            Some(Settled::Failed)
        );
        let d = &o.event("e").unwrap().deliveries[0];
        assert_eq!(d.last_status, Some(500));
        assert!(d.next_attempt_ms.unwrap() >= 10 + BACKOFF_BASE_MS / 2);
        assert_eq!(
            o.settle("e", 0, Ok(200), 3000, &mut rng),
            Some(Settled::Delivered)
        );
        assert_eq!(o.next_due(), None);
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Known answer: HMAC-SHA256(key="0123456789abcdef", "1700000000.{}").
        let sig = signature("0123456789abcdef", 1_700_000_000, "{}");
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"0123456789abcdef").unwrap();
        m.update(b"1700000000.{}");
        let want: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("t=1700000000,v1={want}"));
        assert_eq!(want.len(), 64);
        assert_ne!(signature("another-secret-0000", 1_700_000_000, "{}"), sig);
    }

    #[test]
    fn requests_carry_the_exact_headers_and_payloads() {
        let hooks = [hook(EventKind::ALL.to_vec(), WebhookFormat::Json)];
        let mut o = Outbox::default();
        o.push(
            "ev-1".into(),
            Some(EventKind::BackendDown),
            "app.test",
            json!({"backend": "http://b", "reason": "probe", "error": "refused"}),
            &hooks,
            1_764_300_000_123,
        );
        let e = o.event("ev-1").unwrap();
        let r = request(e, &hooks[0], 1_764_300_001);
        let header = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("X-FlowBalance-Event-Id").as_deref(), Some("ev-1"));
        assert_eq!(
            header("X-FlowBalance-Event").as_deref(),
            Some("backend.down")
        );
        assert_eq!(
            header("X-FlowBalance-Signature"),
            Some(signature("0123456789abcdef", 1_764_300_001, &r.body))
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], "ev-1");
        assert_eq!(body["event"], "backend.down");
        assert_eq!(body["hostname"], "app.test");
        assert_eq!(body["timestamp"], "2025-11-28T03:20:00.123Z");
        assert_eq!(body["details"]["reason"], "probe");
        let slack = request(e, &hook(vec![], WebhookFormat::Slack), 1);
        let text: Value = serde_json::from_str(&slack.body).unwrap();
        assert_eq!(
            text["text"],
            "[FlowBalance] app.test: backend http://b is DOWN (probe: refused)"
        );
    }

    #[test]
    fn an_automatic_rollback_reads_as_one_line_in_chat() {
        let e = Event {
            id: "e".into(),
            event: "config.auto_rolled_back".into(),
            ts_ms: 0,
            hostname: "app.test".into(),
            details: json!({"rolled_back_version": 7, "restored_version": 6, "error_rate": 92.5, "baseline_error_rate": 1.0}),
            deliveries: vec![],
        };
        assert_eq!(
            slack_text(&e),
            "[FlowBalance] app.test: version 7 made the error rate rise to 92.5% (from 1.0%): rolled back automatically to version 6"
        );
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
