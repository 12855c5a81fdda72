//! Health and breaker transitions of a hostname's backends, found by comparing their state before and after an update.

use serde::{Deserialize, Serialize};

use crate::policy::health::breaker::BreakerState;
use crate::policy::health::regions::Region;
use crate::policy::traffic::fleet::BackendRecord;

/// What a transition is judged on: health and the breaker's state, not its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub healthy: bool,
    pub breaker: &'static str,
}

impl Mark {
    pub fn of(r: &BackendRecord) -> Mark {
        Mark {
            healthy: r.health.healthy,
            breaker: match r.breaker.state {
                BreakerState::Closed => "closed",
                BreakerState::Open { .. } => "open",
                BreakerState::HalfOpen { .. } => "half_open",
            },
        }
    }
}

/// One transition, as the health history stores it and the live tail shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthEvent {
    pub hostname: String,
    pub backend: String,
    pub at_ms: u64,
    /// `health` (up/down, from active probes) or `breaker` (closed/open/half_open).
    pub kind: String,
    pub from: String,
    pub to: String,
    /// What caused it: `probe`, `requests` or `quorum`, and the last error when it went bad.
    pub reason: String,
    /// The probe region whose view flipped (`activeHealthChecks.regions`); None: the backend's
    /// own health or breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

/// A backend's state as one region sees it flipped (`up` now, or down with the region's `error`).
pub fn region_flip(
    hostname: &str,
    backend: &str,
    region: Region,
    up: bool,
    error: Option<&str>,
    now_ms: u64,
) -> HealthEvent {
    let (from, to) = if up { ("down", "up") } else { ("up", "down") };
    HealthEvent {
        hostname: hostname.to_string(),
        backend: backend.to_string(),
        at_ms: now_ms,
        kind: "health".to_string(),
        from: from.to_string(),
        to: to.to_string(),
        reason: match error.filter(|_| !up) {
            Some(e) => format!("probe: {e}"),
            None => "probe".to_string(),
        },
        region: Some(region),
    }
}

/// Marks of every backend, taken before an update.
pub fn marks(records: &[BackendRecord]) -> Vec<Mark> {
    records.iter().map(Mark::of).collect()
}

/// The transitions between `before` (from [`marks`]) and `after`. `source` says what drove the
/// update (`probe`, `requests`). A list whose length changed (a config swap) yields nothing:
/// indices no longer name the same backends.
pub fn diff(
    hostname: &str,
    before: &[Mark],
    after: &[BackendRecord],
    source: &str,
    now_ms: u64,
) -> Vec<HealthEvent> {
    if before.len() != after.len() {
        return Vec::new();
    }
    let mut events = Vec::new();
    for (was, rec) in before.iter().zip(after) {
        let now = Mark::of(rec);
        let event = |kind: &str, from: &str, to: &str, bad: bool| HealthEvent {
            hostname: hostname.to_string(),
            backend: rec.url.clone(),
            at_ms: now_ms,
            kind: kind.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            reason: match (&rec.last_error, bad) {
                (Some(e), true) => format!("{source}: {e}"),
                _ => source.to_string(),
            },
            region: None,
        };
        if was.healthy != now.healthy {
            let (from, to) = if now.healthy {
                ("down", "up")
            } else {
                ("up", "down")
            };
            events.push(event("health", from, to, !now.healthy));
        }
        if was.breaker != now.breaker {
            events.push(event(
                "breaker",
                was.breaker,
                now.breaker,
                now.breaker == "open",
            ));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::health::breaker::Breaker;
    use crate::policy::health::checks::Health;

    fn record(url: &str, healthy: bool, state: BreakerState, err: Option<&str>) -> BackendRecord {
        let mut health = Health::new();
        health.healthy = healthy;
        let mut breaker = Breaker::new();
        breaker.state = state;
        BackendRecord {
            url: url.into(),
            health,
            breaker,
            health_path: None,
            last_probe_ms: None,
            last_error: err.map(Into::into),
            last_failure_ms: 0,
            latency_ms: None,
            suspect: false,
            ramp_start_ms: None,
            unproven: false,
            regions: Default::default(),
        }
    }

    #[test]
    fn no_change_no_event() {
        let rs = vec![record("http://a", true, BreakerState::Closed, None)];
        assert!(diff("h", &marks(&rs), &rs, "probe", 5).is_empty());
    }

    #[test]
    fn down_then_up_carry_the_cause() {
        let up = vec![record("http://a", true, BreakerState::Closed, None)];
        let down = vec![record(
            "http://a",
            false,
            BreakerState::Closed,
            Some("connect refused"),
        )];
        let ev = diff("h", &marks(&up), &down, "probe", 7);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind.as_str(), ev[0].from.as_str(), ev[0].to.as_str()),
            ("health", "up", "down")
        );
        assert_eq!(ev[0].reason, "probe: connect refused");
        assert_eq!((ev[0].at_ms, ev[0].backend.as_str()), (7, "http://a"));
        let back = diff("h", &marks(&down), &up, "probe", 9);
        assert_eq!((back[0].from.as_str(), back[0].to.as_str()), ("down", "up"));
        assert_eq!(back[0].reason, "probe");
    }

    #[test]
    fn breaker_and_health_in_one_update_are_two_events() {
        let before = vec![
            record("http://a", true, BreakerState::Closed, None),
            record("http://b", true, BreakerState::Closed, None),
        ];
        let after = vec![
            record("http://a", true, BreakerState::Closed, None),
            record(
                "http://b",
                false,
                BreakerState::Open { until_ms: 10 },
                Some("status 503"),
            ),
        ];
        let ev = diff("h", &marks(&before), &after, "requests", 1);
        let kinds: Vec<_> = ev
            .iter()
            .map(|e| (e.kind.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(kinds, vec![("health", "down"), ("breaker", "open")]);
        assert!(ev.iter().all(|e| e.backend == "http://b"));
        assert_eq!(ev[1].reason, "requests: status 503");
    }

    #[test]
    fn a_region_flip_names_its_region_and_error() {
        let down = region_flip(
            "h",
            "http://a",
            Region::Apac,
            false,
            Some("expected 2xx, got 500"),
            3,
        );
        assert_eq!((down.from.as_str(), down.to.as_str()), ("up", "down"));
        assert_eq!(down.reason, "probe: expected 2xx, got 500");
        assert_eq!(down.region, Some(Region::Apac));
        let json = serde_json::to_value(&down).unwrap();
        assert_eq!(json["region"], "apac");
        let up = region_flip("h", "http://a", Region::Apac, true, Some("stale"), 4);
        assert_eq!((up.to.as_str(), up.reason.as_str()), ("up", "probe"));
        // The backend's own transitions carry no region, and serialize without one.
        let rs = vec![record("http://a", true, BreakerState::Closed, None)];
        let mut after = rs.clone();
        after[0].health.healthy = false;
        let ev = diff("h", &marks(&rs), &after, "quorum", 1);
        assert_eq!(ev[0].region, None);
        assert!(serde_json::to_value(&ev[0])
            .unwrap()
            .get("region")
            .is_none());
    }

    #[test]
    fn a_resized_list_is_not_compared() {
        let one = vec![record("http://a", true, BreakerState::Closed, None)];
        let two = vec![
            record("http://a", false, BreakerState::Closed, None),
            record("http://b", true, BreakerState::Closed, None),
        ];
        assert!(diff("h", &marks(&one), &two, "probe", 1).is_empty());
    }
}
