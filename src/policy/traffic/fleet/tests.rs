use super::load::TICKET_GRACE_MS;
use super::*;
use crate::policy::control::config::{parse_service, Deployment};
use crate::policy::health::breaker::BreakerState;
use crate::policy::health::checks::{BackendHealth, ServiceHealth};
use crate::policy::rng::SplitMix64;
use crate::policy::traffic::decision::{Attempt, Outcome, Reject, Route, Verdict};
use crate::policy::traffic::facts::RequestFacts;
use crate::policy::traffic::steering::PoolHealth;
use serde_json::json;

fn fleet(extra: serde_json::Value) -> Fleet {
    let mut v = json!({
        "hostname": "svc.test",
        "backends": ["http://a", "http://b", "http://c"],
        "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout_ms": 1000}},
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    Fleet::new(
        parse_service(&v, "", &Deployment::default()).unwrap(),
        1,
        &[],
        b"secret",
        0,
    )
}

fn route(f: &mut Fleet, now: u64) -> Route {
    match f.decide(&RequestFacts::default(), now) {
        Verdict::Route(r) => r,
        other => panic!("not routed: {other:?}"),
    }
}

fn first(f: &mut Fleet, now: u64) -> String {
    route(f, now).attempts[0].url.clone()
}

fn fail(f: &mut Fleet, url: &str, now: u64) -> Changes {
    f.report(&Outcome::connect_failure(url), now)
}

#[test]
fn equal_weights_rotate_in_order_with_failover_candidates() {
    let mut f = fleet(json!({}));
    let picks: Vec<String> = (0..6).map(|i| first(&mut f, i)).collect();
    assert_eq!(
        picks,
        ["http://a", "http://b", "http://c", "http://a", "http://b", "http://c"]
    );
    let r = route(&mut f, 10);
    // Default: 1 retry, 2 connection retries: the primary plus the two others, in rotation.
    let urls: Vec<&str> = r.attempts.iter().map(|a| a.url.as_str()).collect();
    assert_eq!(urls, ["http://a", "http://b", "http://c"]);
    assert_eq!((r.retries, r.conn_retries, r.panic), (1, 2, false));
}

#[test]
fn weights_interleave_smoothly() {
    let mut f = fleet(json!({"backends": [{"url": "http://a", "weight": 3}, "http://b"]}));
    let picks: Vec<String> = (0..8).map(|i| first(&mut f, i)).collect();
    assert_eq!(picks.iter().filter(|u| *u == "http://a").count(), 6);
    assert_ne!(
        picks[..3],
        ["http://a", "http://a", "http://a"],
        "3:1 must not burst: {picks:?}"
    );
}

#[test]
fn breaker_opens_after_threshold_then_admits_one_trial() {
    let mut f = fleet(json!({}));
    assert!(!fail(&mut f, "http://b", 0).persist);
    fail(&mut f, "http://b", 1);
    assert!(
        fail(&mut f, "http://b", 2).persist,
        "third failure opens the breaker"
    );
    for t in 3..30 {
        let r = route(&mut f, t);
        assert!(
            r.attempts.iter().all(|a| a.url != "http://b"),
            "open breaker got traffic"
        );
    }
    // After the recovery time exactly one request is the trial.
    let trials: Vec<Route> = (0..6).map(|i| route(&mut f, 2000 + i)).collect();
    let to_b: Vec<&Attempt> = trials
        .iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.url == "http://b")
        .collect();
    assert_eq!(to_b.len(), 1, "{trials:?}");
    assert!(to_b[0].trial);
    let ok = Outcome {
        url: "http://b".into(),
        failure: None,
        latency_ms: 3,
        trial: true,
        retry: false,
        count: 1,
        status: None,
        retry_reason: None,
    };
    assert!(
        f.report(&ok, 2100).persist,
        "trial success closes the breaker"
    );
    let picks: Vec<String> = (0..3).map(|i| first(&mut f, 2200 + i)).collect();
    assert!(picks.contains(&"http://b".to_string()));
}

#[test]
fn successes_reset_consecutive_failures() {
    let mut f = fleet(json!({}));
    fail(&mut f, "http://a", 0);
    fail(&mut f, "http://a", 1);
    let ok = Outcome {
        url: "http://a".into(),
        failure: None,
        latency_ms: 3,
        trial: false,
        retry: false,
        count: 5,
        status: None,
        retry_reason: None,
    };
    f.report(&ok, 2);
    assert!(!fail(&mut f, "http://a", 3).persist);
    assert_eq!(f.backends[0].breaker.state, BreakerState::Closed);
}

#[test]
fn probes_mark_down_after_threshold_and_all_down_is_panic_mode() {
    let mut f = fleet(json!({"activeHealthChecks": {"consecutive_down": 2, "consecutive_up": 3}}));
    assert!(!f.apply_probe(0, false, 1, Some("refused".into()), 10));
    assert!(f.apply_probe(0, false, 1, Some("refused".into()), 20));
    for t in 0..6 {
        assert_ne!(first(&mut f, 100 + t), "http://a");
    }
    f.apply_probe(1, false, 1, None, 30);
    f.apply_probe(1, false, 1, None, 40);
    f.apply_probe(2, false, 1, None, 5);
    f.apply_probe(2, false, 1, None, 6);
    let r = route(&mut f, 200);
    assert!(r.panic);
    let urls: Vec<&str> = r.attempts.iter().map(|a| a.url.as_str()).collect();
    // Least recently failed first.
    assert_eq!(urls, ["http://c", "http://a", "http://b"]);
    // Coming back needs consecutive_up good probes.
    f.apply_probe(0, true, 1, None, 300);
    f.apply_probe(0, true, 1, None, 301);
    assert!(route(&mut f, 302).panic);
    assert!(f.apply_probe(0, true, 1, None, 303));
    let r = route(&mut f, 304);
    assert!(!r.panic);
    assert_eq!(r.attempts[0].url, "http://a");
}

#[test]
fn disabled_backends_get_nothing_and_draining_no_new_clients() {
    let mut f = fleet(
        json!({"backends": ["http://a", {"url": "http://b", "state": "disabled"}, {"url": "http://c", "state": "draining"}]}),
    );
    for t in 0..5 {
        let r = route(&mut f, t);
        assert!(r.attempts.iter().all(|a| a.url == "http://a"), "{r:?}");
    }
}

#[test]
fn access_lists_and_rate_limits_reject_before_routing() {
    let mut f = fleet(
        json!({"access_control": {"deny": ["10.0.0.0/8"]}, "rate_limit": {"requests": 2, "window": 60}}),
    );
    let denied = RequestFacts {
        client_ip: Some("10.1.2.3".into()),
        ..Default::default()
    };
    assert!(matches!(
        f.decide(&denied, 0),
        Verdict::Reject(Reject { status: 403, .. })
    ));
    let ok = RequestFacts {
        client_ip: Some("192.0.2.1".into()),
        ..Default::default()
    };
    assert!(matches!(f.decide(&ok, 0), Verdict::Route(_)));
    assert!(matches!(f.decide(&ok, 1), Verdict::Route(_)));
    match f.decide(&ok, 2) {
        Verdict::Reject(r) => {
            assert_eq!(r.status, 429);
            assert!(r.retry_after_s.unwrap() >= 1);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn saved_state_is_restored_by_url() {
    let mut f = fleet(json!({}));
    for t in 0..3 {
        fail(&mut f, "http://c", t);
    }
    let saved = f.records().to_vec();
    let cfg = parse_service(
        &json!({"hostname": "svc.test", "backends": ["http://c", "http://d"]}),
        "",
        &Deployment::default(),
    )
    .unwrap();
    let g = Fleet::new(cfg, 2, &saved, b"secret", 0);
    assert!(matches!(
        g.backends[0].breaker.state,
        BreakerState::Open { .. }
    ));
    assert_eq!(g.backends[1].breaker.state, BreakerState::Closed);
}

#[test]
fn cookie_affinity_pins_and_repins() {
    let mut f = fleet(json!({"load_balancer": {"session_affinity": {"type": "cookie"}}}));
    let r = route(&mut f, 1000);
    let pin = r.attempts[0].pin.clone().expect("a new client gets a pin");
    assert_eq!(
        r.cookie.as_ref().map(|c| c.name.as_str()),
        Some("lb_session")
    );
    let facts = RequestFacts {
        cookies: Some(format!("x=1; lb_session={pin}")),
        ..Default::default()
    };
    for t in 0..5 {
        let Verdict::Route(r) = f.decide(&facts, 2000 + t) else {
            panic!()
        };
        assert_eq!(r.attempts[0].url, "http://a");
        assert!(
            r.attempts[0].pin.is_none(),
            "a pinned client is not re-pinned"
        );
    }
    for t in 0..3 {
        fail(&mut f, "http://a", 3000 + t);
    }
    let Verdict::Route(r) = f.decide(&facts, 3100) else {
        panic!()
    };
    assert_ne!(r.attempts[0].url, "http://a");
    assert!(r.attempts[0].pin.is_some(), "moved clients get a new pin");
}

#[test]
fn good_probes_bring_a_backend_back_before_the_breaker_timeout() {
    // interval 5 s, consecutive_up 2, recovery 60 s: back after two good probes, not 60 s.
    let mut f = fleet(json!({
        "activeHealthChecks": {"interval": 5, "consecutive_up": 2, "consecutive_down": 2},
        "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout_ms": 60000}},
    }));
    for t in 0..3 {
        fail(&mut f, "http://b", t);
    }
    f.apply_probe(1, false, 1, None, 5_000);
    f.apply_probe(1, false, 1, None, 10_000);
    assert!(!f.backends[1].health.healthy);
    f.apply_probe(1, true, 1, None, 15_000);
    assert!(
        !(0..6).any(|i| first(&mut f, 15_001 + i) == "http://b"),
        "one good probe is not enough"
    );
    assert!(
        f.apply_probe(1, true, 1, None, 20_000),
        "second good probe flips health and breaker"
    );
    assert_eq!(f.backends[1].breaker.state, BreakerState::Closed);
    let picks: Vec<String> = (0..6).map(|i| first(&mut f, 20_001 + i)).collect();
    assert!(picks.iter().any(|u| u == "http://b"), "{picks:?}");
}

#[test]
fn without_active_checks_the_breaker_still_protects() {
    let mut f = fleet(json!({"activeHealthChecks": {"enabled": false}}));
    for t in 0..3 {
        fail(&mut f, "http://a", t);
    }
    assert!((0..30).all(|i| first(&mut f, 10 + i) != "http://a"));
    assert_eq!(
        f.next_probe_at(0, &mut crate::policy::rng::SplitMix64(1)),
        None
    );
}

#[test]
fn slow_start_ramps_a_recovered_backend_up_over_its_window() {
    let mut f = fleet(json!({
        "activeHealthChecks": {"consecutive_up": 1, "consecutive_down": 1},
        "load_balancer": {"slow_start": 10},
    }));
    f.apply_probe(0, false, 1, None, 0);
    f.apply_probe(0, true, 1, None, 1_000);
    let share =
        |f: &mut Fleet, at: u64| (0..300).filter(|i| first(f, at + i) == "http://a").count();
    let early = share(&mut f, 1_100);
    let mid = share(&mut f, 6_000);
    let late = share(&mut f, 12_000);
    assert!(early < 15, "1% into the ramp: {early}/300");
    assert!((30..80).contains(&mid), "half way: {mid}/300");
    assert!(
        (95..105).contains(&late),
        "full share after the window: {late}/300"
    );
}

#[test]
fn slow_start_keeps_weights_and_pins() {
    let mut f = fleet(json!({
        "backends": [{"url": "http://a", "weight": 3}, "http://b"],
        "load_balancer": {"slow_start": 10, "session_affinity": {"type": "cookie"}},
    }));
    let r = route(&mut f, 1000);
    let pin = r.attempts[0].pin.clone().expect("pinned");
    let pinned_to = r.attempts[0].url.clone();
    // Re-adding the fleet with saved state: b is new and ramps, a keeps its 3:1 share.
    let saved = f.records().to_vec();
    let cfg = parse_service(
        &json!({"hostname": "svc.test", "backends": [{"url": "http://a", "weight": 3}, "http://b", "http://c"],
                "load_balancer": {"slow_start": 10, "session_affinity": {"type": "cookie"}}}),
        "",
        &Deployment::default(),
    )
    .unwrap();
    let mut g = Fleet::new(cfg, 2, &saved, b"secret", 2000);
    let picks: Vec<String> = (0..100).map(|i| first(&mut g, 2001 + i)).collect();
    assert!(
        picks.iter().filter(|u| *u == "http://c").count() <= 2,
        "new backend starts small"
    );
    let late: Vec<String> = (0..500).map(|i| first(&mut g, 20_000 + i)).collect();
    let a = late.iter().filter(|u| *u == "http://a").count();
    assert!((280..320).contains(&a), "3:1:1 after the ramp: {a}/500");
    let facts = RequestFacts {
        cookies: Some(format!("lb_session={pin}")),
        ..Default::default()
    };
    let Verdict::Route(r) = g.decide(&facts, 2002) else {
        panic!()
    };
    assert_eq!(
        r.attempts[0].url, pinned_to,
        "a pin is honoured while others ramp"
    );
}

#[test]
fn client_addresses_are_canonical_for_lists_and_limits() {
    let mut f = fleet(
        json!({"access_control": {"deny": ["10.0.0.0/8"]}, "rate_limit": {"requests": 2, "window": 60}}),
    );
    let facts = |ip: &str| RequestFacts {
        client_ip: Some(ip.into()),
        ..Default::default()
    };
    assert!(matches!(
        f.decide(&facts("::ffff:10.1.2.3"), 0),
        Verdict::Reject(Reject { status: 403, .. })
    ));
    assert!(matches!(
        f.decide(&facts("2001:DB8:0:0::1"), 1),
        Verdict::Route(_)
    ));
    assert!(matches!(
        f.decide(&facts("2001:db8::1"), 2),
        Verdict::Route(_)
    ));
    assert!(
        matches!(
            f.decide(&facts("2001:0db8::0001"), 3),
            Verdict::Reject(Reject { status: 429, .. })
        ),
        "three spellings of one address share one limit"
    );
}

fn ok_outcome(url: &str, latency_ms: u64) -> Outcome {
    Outcome {
        url: url.into(),
        failure: None,
        latency_ms,
        trial: false,
        retry: false,
        count: 1,
        status: Some(200),
        retry_reason: None,
    }
}

#[test]
fn least_outstanding_counts_tickets_until_completion_or_expiry() {
    let mut f =
        fleet(json!({"load_balancer": {"endpoint_steering": "least_outstanding_requests"}}));
    let r1 = route(&mut f, 0);
    let r2 = route(&mut f, 1);
    let r3 = route(&mut f, 2);
    let firsts: Vec<&str> = [&r1, &r2, &r3]
        .iter()
        .map(|r| r.attempts[0].url.as_str())
        .collect();
    assert_eq!(
        firsts,
        ["http://a", "http://b", "http://c"],
        "idle: round robin"
    );
    assert_eq!(f.outstanding(), [1, 1, 1]);
    // b finishes: it is the only one with nothing in flight, so it gets the next two... once.
    f.complete(r2.ticket.unwrap());
    f.complete(r2.ticket.unwrap());
    assert_eq!(
        f.outstanding(),
        [1, 0, 1],
        "a repeated completion counts once"
    );
    let r4 = route(&mut f, 3);
    assert_eq!(r4.attempts[0].url, "http://b");
    assert_eq!(f.outstanding(), [1, 1, 1]);
    // A request that never reports back stops counting after its budget and grace.
    let budget = r1.timeout_ms * r1.attempts.len() as u64 + TICKET_GRACE_MS;
    route(&mut f, budget + 10);
    assert_eq!(
        f.outstanding().iter().sum::<u32>(),
        1,
        "expired tickets dropped"
    );
    // Round robin issues no tickets.
    let mut rr = fleet(json!({}));
    assert_eq!(route(&mut rr, 0).ticket, None);
    assert_eq!(rr.outstanding(), [0, 0, 0]);
}

#[test]
fn least_outstanding_respects_drain_breakers_and_weights() {
    let mut f = fleet(json!({
        "backends": [{"url": "http://a", "weight": 2}, "http://b", {"url": "http://c", "state": "draining"}],
        "load_balancer": {"endpoint_steering": "least_outstanding_requests"},
    }));
    // Nothing completes: a (weight 2) takes twice b's share, c (draining) none.
    let picks: Vec<String> = (0..30).map(|i| first(&mut f, i)).collect();
    let on = |u: &str| picks.iter().filter(|p| *p == u).count();
    assert_eq!(
        (on("http://a"), on("http://b"), on("http://c")),
        (20, 10, 0)
    );
    for t in 0..3 {
        fail(&mut f, "http://a", 100 + t);
    }
    assert!(
        (0..5).all(|i| first(&mut f, 200 + i) == "http://b"),
        "open breaker skipped"
    );
}

#[test]
fn latency_steering_avoids_a_slow_backend_once_its_outcomes_arrive() {
    let mut f = fleet(json!({"load_balancer": {"endpoint_steering": "latency"}}));
    f.report(&ok_outcome("http://a", 2000), 0);
    f.report(&ok_outcome("http://b", 3), 0);
    f.report(&ok_outcome("http://c", 4), 0);
    let mut picks = Vec::new();
    for i in 0..200 {
        let r = route(&mut f, 10 + i);
        picks.push(r.attempts[0].url.clone());
        f.complete(r.ticket.expect("latency mode counts requests"));
    }
    assert_eq!(picks.iter().filter(|u| *u == "http://a").count(), 0);
    assert!(picks.iter().filter(|u| *u == "http://b").count() > 50);
    assert!(picks.iter().filter(|u| *u == "http://c").count() > 50);
}

#[test]
fn hash_steering_keeps_a_client_on_its_backend() {
    let mut f = fleet(json!({"load_balancer": {"endpoint_steering": "hash"}}));
    let facts = |ip: &str| RequestFacts {
        client_ip: Some(ip.into()),
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for c in 0..30 {
        let ip = format!("198.51.100.{c}");
        let Verdict::Route(r) = f.decide(&facts(&ip), c) else {
            panic!()
        };
        let url = r.attempts[0].url.clone();
        for t in 0..3 {
            // Another spelling of the same address (IPv4-mapped) is the same client.
            let Verdict::Route(again) = f.decide(&facts(&format!("::ffff:{ip}")), 100 + t) else {
                panic!()
            };
            assert_eq!(again.attempts[0].url, url);
        }
        seen.insert(url);
    }
    assert_eq!(seen.len(), 3, "clients spread over every backend");
    assert_eq!(route(&mut f, 1000).ticket, None, "hash counts nothing");
}

#[test]
fn failover_steering_takes_pools_in_order_with_minimum_healthy() {
    let mut f = fleet(json!({
        "backends": [],
        "activeHealthChecks": {"consecutive_down": 1, "consecutive_up": 1},
        "load_balancer": {"steering": "failover"},
        "pools": [
            {"name": "primary", "backends": ["http://a", "http://b"], "minimum_healthy": 2},
            {"name": "secondary", "backends": ["http://c"]},
            {"name": "last", "backends": ["http://d"]},
        ],
    }));
    assert!((0..6).all(|i| ["http://a", "http://b"].contains(&first(&mut f, i).as_str())));
    let health = |f: &Fleet| -> Vec<PoolHealth> { f.pool_status(10).iter().map(|p| p.1).collect() };
    assert_eq!(health(&f), [PoolHealth::Healthy; 3]);
    // One of two down: primary is below its minimum, so all traffic moves to secondary.
    f.apply_probe(1, false, 1, None, 10);
    assert_eq!(health(&f)[0], PoolHealth::Critical);
    assert!((0..6).all(|i| first(&mut f, 20 + i) == "http://c"));
    f.apply_probe(2, false, 1, None, 30);
    assert!((0..4).all(|i| first(&mut f, 40 + i) == "http://d"));
    // Primary back: it takes everything again.
    f.apply_probe(1, true, 1, None, 50);
    assert!((0..6).all(|i| first(&mut f, 60 + i) != "http://d"));
}

#[test]
fn failover_falls_back_to_the_named_pool_and_geo_honours_minimum_healthy() {
    let mut f = fleet(json!({
        "backends": [],
        "activeHealthChecks": {"consecutive_down": 1, "consecutive_up": 1},
        "load_balancer": {"steering": "failover", "fallback_pool": "first"},
        "pools": [{"name": "first", "backends": ["http://a"]}, {"name": "second", "backends": ["http://b"]}],
    }));
    f.apply_probe(0, false, 1, None, 1);
    assert_eq!(first(&mut f, 2), "http://b");
    f.apply_probe(1, false, 1, None, 3);
    // Nothing healthy: the fallback pool's route is a panic-mode last try.
    assert!(route(&mut f, 4).panic);
    let mut g = fleet(json!({
        "backends": [],
        "activeHealthChecks": {"consecutive_down": 1, "consecutive_up": 1},
        "pools": [{"name": "eu", "backends": ["http://a", "http://b"], "minimum_healthy": 2}, {"name": "us", "backends": ["http://c"]}],
        "geo_steering": {"regions": {"EU": "eu"}, "fallback_pool": "us"},
    }));
    let eu = RequestFacts {
        continent: Some("EU".into()),
        ..Default::default()
    };
    let Verdict::Route(r) = g.decide(&eu, 0) else {
        panic!()
    };
    assert_ne!(r.attempts[0].url, "http://c");
    g.apply_probe(0, false, 1, None, 1);
    let Verdict::Route(r) = g.decide(&eu, 2) else {
        panic!()
    };
    assert_eq!(
        r.attempts[0].url, "http://c",
        "eu below its minimum: fallback pool"
    );
}

#[test]
fn a_config_change_keeps_requests_in_flight() {
    let mut f =
        fleet(json!({"load_balancer": {"endpoint_steering": "least_outstanding_requests"}}));
    let r = route(&mut f, 0);
    route(&mut f, 1);
    let cfg = parse_service(
        &json!({"hostname": "svc.test", "backends": ["http://b", "http://a"],
                "load_balancer": {"endpoint_steering": "least_outstanding_requests"}}),
        "",
        &Deployment::default(),
    )
    .unwrap();
    let mut g = Fleet::new(cfg, 2, f.records(), b"secret", 5);
    g.adopt_load(&f);
    assert_eq!(g.outstanding(), [1, 1]);
    g.complete(r.ticket.unwrap());
    assert_eq!(
        g.outstanding(),
        [1, 0],
        "a's ticket followed it to its new index"
    );
}

/// The object's alarm loop from `from_ms` to `until_ms`: it wakes at the earliest due probe
/// and probes only the backends due (`up(url)`: does it answer); `failures` are failed real
/// requests (time, backend) reported in between. Returns each backend's probe times.
fn run_probes(
    f: &mut Fleet,
    from_ms: u64,
    until_ms: u64,
    up: impl Fn(&str) -> bool,
    failures: &[(u64, &str)],
) -> BTreeMap<String, Vec<u64>> {
    let mut rng = SplitMix64(42);
    let mut probed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut failures = failures.iter().peekable();
    let mut now = from_ms;
    loop {
        let at = f.next_probe_at(now, &mut rng).unwrap().max(now);
        if let Some(&&(t, url)) = failures.peek() {
            if t <= at && t <= until_ms {
                failures.next();
                now = t;
                fail(f, url, t);
                continue;
            }
        }
        if at > until_ms {
            return probed;
        }
        now = at;
        let plan = f.take_probe_plan(now, false, &mut rng);
        assert!(!plan.targets.is_empty(), "woke at {now} with nothing due");
        for t in &plan.targets {
            probed.entry(t.url.clone()).or_default().push(now);
            let outcome = ProbeOutcome {
                ok: up(&t.url),
                latency_ms: 1,
                error: None,
                discovered_path: None,
            };
            f.apply_probe_result(t, &outcome, now);
        }
    }
}

fn two_backends() -> Fleet {
    fleet(json!({
        "backends": ["http://a", "http://b"],
        "activeHealthChecks": {"interval": 5, "consecutive_up": 2, "consecutive_down": 2},
    }))
}

#[test]
fn a_failing_backend_does_not_hurry_the_probes_of_the_others() {
    let mut f = two_backends();
    // b is dead (its probes fail) and real requests keep failing on it too.
    let failures: Vec<(u64, &str)> = (1..30).map(|s| (s * 1000, "http://b")).collect();
    let probed = run_probes(&mut f, 0, 30_000, |u| u != "http://b", &failures);
    let a = &probed["http://a"];
    assert!(
        (5..=7).contains(&a.len()),
        "healthy a probed {} times: {a:?}",
        a.len()
    );
    for gap in a.windows(2).map(|w| w[1] - w[0]) {
        assert!((4_500..=5_500).contains(&gap), "a's interval ±10%: {a:?}");
    }
    let b = &probed["http://b"];
    assert!(b.len() >= 12, "failing b re-probed within 2 s: {b:?}");
    for gap in b.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap <= 2_000, "b waited {gap} ms: {b:?}");
    }
}

#[test]
fn only_the_backend_a_real_request_failed_on_is_probed_early() {
    let mut f = two_backends();
    // Both answer probes; one real request fails on b at 7.3 s.
    let probed = run_probes(&mut f, 0, 30_000, |_| true, &[(7_300, "http://b")]);
    let b = &probed["http://b"];
    let next = b.iter().find(|&&t| t > 7_300).copied().unwrap();
    assert!(
        next <= 9_300,
        "b re-probed {} ms after the failure: {b:?}",
        next - 7_300
    );
    let a = &probed["http://a"];
    assert!((5..=7).contains(&a.len()), "a kept its interval: {a:?}");
    // Once b's probes clear it (consecutive_up good ones), it is back on its interval.
    let late: Vec<u64> = b.windows(2).map(|w| w[1] - w[0]).skip(4).collect();
    assert!(
        late.iter().all(|&g| g >= 4_500),
        "b back to its interval: {b:?}"
    );
}

#[test]
fn a_backend_a_config_change_adds_is_probed_at_once_and_the_others_keep_their_schedule() {
    let mut f = two_backends();
    let mut rng = SplitMix64(1);
    assert_eq!(
        f.next_probe_at(0, &mut rng),
        Some(0),
        "never probed: at once"
    );
    for t in f.take_probe_plan(0, false, &mut rng).targets {
        f.apply_probe(t.index, true, 1, None, 0);
    }
    let first = f.next_probe_at(0, &mut rng).unwrap();
    assert!(
        (4_500..=5_500).contains(&first),
        "then one interval on: {first}"
    );
    let cfg = parse_service(
        &json!({"hostname": "svc.test", "backends": ["http://a", "http://b", "http://new"],
                "activeHealthChecks": {"interval": 5}}),
        "",
        &Deployment::default(),
    )
    .unwrap();
    let mut g = Fleet::new(cfg, 2, f.records(), b"secret", 1_000);
    g.adopt_load(&f);
    assert_eq!(g.next_probe_at(1_000, &mut rng), Some(1_000));
    let plan = g.take_probe_plan(1_000, false, &mut rng);
    let urls: Vec<&str> = plan.targets.iter().map(|t| t.url.as_str()).collect();
    assert_eq!(urls, ["http://new"]);
    assert_eq!(g.next_probe_at(1_000, &mut rng), Some(first));
    // An operator's probe takes every backend, disabled ones excepted.
    let all = g.take_probe_plan(1_000, true, &mut rng);
    assert_eq!(all.targets.len(), 3);
}

#[test]
fn without_active_checks_nothing_is_scheduled_but_an_operator_may_probe() {
    let mut f = fleet(json!({"activeHealthChecks": {"enabled": false}}));
    let mut rng = SplitMix64(1);
    assert_eq!(f.next_probe_at(0, &mut rng), None);
    assert!(!fail(&mut f, "http://a", 1).reprobe_soon);
    assert!(f.take_probe_plan(10, false, &mut rng).targets.is_empty());
    assert_eq!(f.take_probe_plan(10, true, &mut rng).targets.len(), 3);
}

#[test]
fn draining_a_healthy_backend_leaves_the_service_healthy_and_unprobed_backends_are_unknown() {
    let mut f = fleet(json!({"backends": ["http://a", {"url": "http://b", "state": "draining"}]}));
    let health = |f: &Fleet| -> Vec<BackendHealth> {
        f.backend_status(0).iter().map(|s| s.health).collect()
    };
    assert_eq!(health(&f), [BackendHealth::Unknown, BackendHealth::Unknown]);
    assert_eq!(f.service_health(), ServiceHealth::Unknown);
    // Unknown is a view: traffic still goes to a backend never probed.
    assert_eq!(first(&mut f, 1), "http://a");
    f.apply_probe(0, true, 1, None, 10);
    f.apply_probe(1, true, 1, None, 10);
    assert_eq!(health(&f), [BackendHealth::Healthy, BackendHealth::Healthy]);
    assert_eq!(
        f.service_health(),
        ServiceHealth::Healthy,
        "b drains: not one that should take traffic"
    );
    // A draining backend that goes down does not degrade the service either; a serving one does.
    f.apply_probe(1, false, 1, None, 20);
    f.apply_probe(1, false, 1, None, 30);
    assert_eq!(f.service_health(), ServiceHealth::Healthy);
    f.apply_probe(0, false, 1, None, 20);
    f.apply_probe(0, false, 1, None, 30);
    assert_eq!(f.service_health(), ServiceHealth::Critical);
    // Without active checks nothing waits for a probe.
    let g = fleet(json!({"activeHealthChecks": {"enabled": false}}));
    assert_eq!(g.service_health(), ServiceHealth::Healthy);
}

#[test]
fn a_request_that_cannot_be_replayed_avoids_a_backend_nobody_has_seen_answer() {
    let f = fleet(json!({"backends": ["http://a", "http://b"]}));
    assert!(
        f.records().iter().all(|r| !r.unproven),
        "a first config starts proven"
    );
    let cfg = parse_service(
        &json!({"hostname": "svc.test", "backends": ["http://a", "http://b", "http://dead"]}),
        "",
        &Deployment::default(),
    )
    .unwrap();
    let mut g = Fleet::new(cfg.clone(), 2, f.records(), b"secret", 1_000);
    let streamed = RequestFacts {
        streamed_body: true,
        ..Default::default()
    };
    let firsts = |g: &mut Fleet, facts: &RequestFacts, at: u64| -> Vec<String> {
        (0..30)
            .map(|i| match g.decide(facts, at + i) {
                Verdict::Route(r) => r.attempts[0].url.clone(),
                v => panic!("{v:?}"),
            })
            .collect()
    };
    // Backends still start eligible: other requests reach it (and fail over if it is dead).
    assert!(firsts(&mut g, &RequestFacts::default(), 1_000).contains(&"http://dead".into()));
    assert!(!firsts(&mut g, &streamed, 1_100).contains(&"http://dead".into()));
    assert_eq!(g.summary(), (3, 3));
    // A failed probe proves nothing; a good one (or a success) does. Kept across restarts.
    g.apply_probe(2, false, 1, Some("connection refused".into()), 1_200);
    assert!(g.records()[2].unproven);
    let saved = g.records().to_vec();
    assert!(Fleet::new(cfg.clone(), 2, &saved, b"s", 0).records()[2].unproven);
    g.apply_probe(2, true, 1, None, 1_300);
    assert!(firsts(&mut g, &streamed, 1_400).contains(&"http://dead".into()));
    let mut h = Fleet::new(cfg.clone(), 2, &saved, b"s", 0);
    h.report(&ok_outcome("http://dead", 1), 5);
    assert!(!h.records()[2].unproven);
    // With only unproven backends to pick from, they are picked.
    let only = parse_service(
        &json!({"hostname": "svc.test", "backends": ["http://n1", "http://n2"]}),
        "",
        &Deployment::default(),
    )
    .unwrap();
    let mut n = Fleet::new(only, 3, f.records(), b"s", 0);
    assert!(matches!(n.decide(&streamed, 1), Verdict::Route(_)));
    // A lease carries it: a Worker deciding locally keeps such a request off it too.
    let leased = Fleet::new(cfg.clone(), 2, f.records(), b"secret", 1_000).lease_backends(1_000);
    assert_eq!(
        leased.iter().map(|l| l.unproven).collect::<Vec<_>>(),
        [false, false, true]
    );
    let mut local = Fleet::from_lease(cfg, 2, &leased, b"secret", 1_000).unwrap();
    assert!(firsts(&mut local, &RequestFacts::default(), 1_000).contains(&"http://dead".into()));
    assert!(!firsts(&mut local, &streamed, 1_100).contains(&"http://dead".into()));
}

/// A fleet of a, b, c with score weighting and a breaker that never opens on its own.
fn scored(extra: serde_json::Value) -> Fleet {
    let mut v = json!({
        "load_balancer": {"score_weighting": true},
        "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 1000, "error_rate_threshold": 100, "min_requests": 10}},
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    fleet(v)
}

/// Reports `n` requests on `url` at `now`, `failed` of them failures, all of `latency_ms`.
fn traffic_on(f: &mut Fleet, url: &str, n: u32, failed: u32, latency_ms: u64, now: u64) {
    for k in 0..n {
        let mut o = ok_outcome(url, latency_ms);
        if k < failed {
            o.failure = Some("status 503".into());
            o.status = Some(503);
        }
        f.report(&o, now);
    }
}

fn shares(f: &mut Fleet, picks: u64, now: u64) -> [usize; 3] {
    let mut n = [0; 3];
    for k in 0..picks {
        let url = first(f, now + k);
        n[["http://a", "http://b", "http://c"]
            .iter()
            .position(|u| *u == url)
            .unwrap()] += 1;
    }
    n
}

#[test]
fn health_scores_read_errors_probes_and_latency() {
    let mut f = scored(json!({"activeHealthChecks": {"consecutive_down": 3}}));
    assert_eq!(f.health_scores(0), [100, 100, 100], "nothing known yet");
    traffic_on(&mut f, "http://a", 10, 0, 5, 100);
    traffic_on(&mut f, "http://b", 10, 3, 5, 100);
    traffic_on(&mut f, "http://c", 10, 0, 5, 100);
    assert_eq!(f.health_scores(200), [100, 49, 100], "30% errors");
    // Half of a's recent probes failed, never three in a row: still up, scored 50.
    for k in 0..10 {
        f.apply_probe(0, k % 2 == 0, 5, None, 300 + k);
    }
    assert!(f.records()[0].health.healthy);
    assert_eq!(f.health_scores(400)[0], 50);
    // c turns slow: 200 ms against a median of 5 ms.
    traffic_on(&mut f, "http://c", 1, 0, 200, 500);
    assert_eq!(f.health_scores(500)[2], 37);
    // The status view shows the scores, and the weights they give.
    let status = f.backend_status(500);
    assert_eq!(
        status.iter().map(|s| s.health_score).collect::<Vec<_>>(),
        [50, 49, 37]
    );
    assert_eq!(
        status
            .iter()
            .map(|s| s.effective_weight)
            .collect::<Vec<_>>(),
        [0.5, 0.49, 0.37]
    );
    // Failures age out of the breaker's window (60 s) and the score recovers.
    assert_eq!(f.health_scores(70_000)[1], 100);
}

#[test]
fn score_weighting_gives_a_backend_with_errors_a_smaller_share() {
    let mut f = scored(json!({}));
    traffic_on(&mut f, "http://a", 10, 0, 5, 0);
    traffic_on(&mut f, "http://b", 10, 3, 5, 0);
    traffic_on(&mut f, "http://c", 10, 0, 5, 0);
    // Weights 100 : 49 : 100.
    assert_eq!(shares(&mut f, 249, 1), [100, 49, 100]);
    // Off (the default), the same backend keeps its full share.
    let mut g = fleet(
        json!({"passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 1000, "error_rate_threshold": 100, "min_requests": 10}}}),
    );
    traffic_on(&mut g, "http://b", 10, 3, 5, 0);
    assert_eq!(g.health_scores(1)[1], 49, "scored either way");
    assert_eq!(shares(&mut g, 300, 1), [100, 100, 100]);
}

#[test]
fn below_the_floor_a_backend_gets_nothing_while_a_peer_is_above_it() {
    let mut f = scored(json!({"activeHealthChecks": {"consecutive_down": 1}}));
    // 70% errors: (0.3)² = 9, below the floor of 10.
    traffic_on(&mut f, "http://b", 10, 7, 5, 0);
    assert_eq!(f.health_scores(1)[1], 9);
    for k in 0..50 {
        let r = route(&mut f, 1 + k);
        assert!(
            r.attempts.iter().all(|a| a.url != "http://b"),
            "neither first nor as a retry: {r:?}"
        );
    }
    // It is still better than nothing: with its peers down it serves, outside panic mode.
    f.apply_probe(0, false, 5, None, 100);
    f.apply_probe(2, false, 5, None, 100);
    let r = route(&mut f, 200);
    assert_eq!((r.attempts[0].url.as_str(), r.panic), ("http://b", false));
}

#[test]
fn an_open_breaker_scores_zero_and_still_gets_its_trial() {
    let mut f = scored(json!({
        "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout_ms": 1000}},
    }));
    for t in 0..3 {
        fail(&mut f, "http://b", t);
    }
    assert_eq!(f.health_scores(10)[1], 0);
    assert!(shares(&mut f, 30, 10)[1] == 0);
    // Once due, the breaker's single trial goes through as without score weighting.
    let trials: Vec<Route> = (0..6).map(|k| route(&mut f, 1_100 + k)).collect();
    let trial = trials
        .iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.url == "http://b" && a.trial)
        .count();
    assert_eq!(trial, 1, "{trials:?}");
}

#[test]
fn a_lease_carries_scored_weights_and_the_floor() {
    let mut f = scored(json!({}));
    traffic_on(&mut f, "http://a", 10, 7, 5, 0);
    traffic_on(&mut f, "http://b", 10, 3, 5, 0);
    let leased = f.lease_backends(1);
    assert_eq!(
        leased.iter().map(|l| l.weight).collect::<Vec<_>>(),
        [0, 49, 100]
    );
    assert!(leased.iter().all(|l| l.up), "below the floor is not down");
    let cfg = f.cfg().clone();
    let mut local = Fleet::from_lease(cfg, 1, &leased, b"secret", 1).unwrap();
    // The Worker's own view: b at 49 of 149, a out of rotation while b and c take traffic.
    assert_eq!(shares(&mut local, 149, 2), [0, 49, 100]);
}

#[test]
fn recent_probes_survive_a_config_change() {
    let mut f = scored(json!({}));
    f.apply_probe(1, false, 5, None, 0);
    f.apply_probe(1, true, 5, None, 1);
    let cfg = parse_service(
        &json!({"hostname": "svc.test", "backends": ["http://b", "http://d"], "load_balancer": {"score_weighting": true}}),
        "",
        &Deployment::default(),
    )
    .unwrap();
    let mut g = Fleet::new(cfg, 2, f.records(), b"secret", 2);
    g.adopt_load(&f);
    assert_eq!(g.health_scores(3), [50, 100]);
}

#[test]
fn dns_addresses_are_the_enabled_healthy_backends_ip_or_address() {
    let mut f = fleet(json!({
        "backends": [
            "http://192.0.2.1:8080",
            {"url": "http://api.test", "address": "2001:db8::7"},
            {"url": "http://192.0.2.3", "state": "draining"},
            "http://[2001:db8::1]",
        ],
        "activeHealthChecks": {"consecutive_down": 1},
        "dns": {"zone_id": "0123456789abcdef0123456789abcdef", "name": "origin.test"},
    }));
    let contents = |f: &Fleet| -> Vec<String> {
        f.dns_addresses()
            .into_iter()
            .map(|a| format!("{} {}", a.kind, a.content))
            .collect()
    };
    assert_eq!(
        contents(&f),
        ["A 192.0.2.1", "AAAA 2001:db8::1", "AAAA 2001:db8::7"]
    );
    f.apply_probe(0, false, 1, Some("refused".into()), 10);
    assert_eq!(contents(&f), ["AAAA 2001:db8::1", "AAAA 2001:db8::7"]);
    for i in [1, 3] {
        f.apply_probe(i, false, 1, Some("refused".into()), 10);
    }
    assert!(
        f.dns_addresses().is_empty(),
        "nothing healthy: the plan holds the set"
    );
}

/// A service with three pools and the rules the Fleet tests use.
fn ruled(extra: serde_json::Value) -> Fleet {
    let mut v = json!({
        "backends": [],
        "pools": [
            {"name": "web", "backends": ["http://w1", "http://w2"]},
            {"name": "api", "backends": ["http://a1", "http://a2"]},
            {"name": "canary", "backends": ["http://c1"]}
        ],
        "geo_steering": {"regions": {"EU": "web"}, "fallback_pool": "web"},
        "rules": [
            {"name": "no-trace", "when": {"methods": ["TRACE"]}, "then": {"respond": {"status": 405, "body": "not here"}}},
            {"name": "debug", "when": {"query": {"debug": "1"}}, "then": {"response_headers": {"set": {"x-debug": "on"}}, "continue": true}},
            {"name": "api", "when": {"path_prefix": "/api/"}, "then": {"pool": "api", "rewrite": {"strip_prefix": "/api"}}},
            {"name": "shop-canary", "when": {"path_prefix": "/shop/"}, "then": {"split": [{"pool": "web", "weight": 95}, {"pool": "canary", "weight": 5}]}}
        ]
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    fleet(v)
}

fn facts_for(target: &str, client_ip: Option<&str>) -> RequestFacts {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let method = if path == "/trace" { "TRACE" } else { "GET" };
    RequestFacts {
        client_ip: client_ip.map(str::to_string),
        line: Some(crate::policy::traffic::rules::RequestLine {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![],
        }),
        ..Default::default()
    }
}

#[test]
fn rules_that_read_the_request_line_ask_for_it_first() {
    let mut f = ruled(json!({"rate_limit": {"requests": 1, "window": 60}}));
    let bare = RequestFacts {
        client_ip: Some("192.0.2.1".into()),
        ..Default::default()
    };
    let Verdict::More(needs) = f.decide(&bare, 0) else {
        panic!("the line is missing")
    };
    assert!(needs.method && needs.path && needs.query);
    // The ask that went without the line was not counted against the client's rate limit.
    assert!(matches!(
        f.decide(&facts_for("/", Some("192.0.2.1")), 1),
        Verdict::Route(_)
    ));
    assert!(matches!(
        f.decide(&facts_for("/", Some("192.0.2.1")), 2),
        Verdict::Reject(Reject { status: 429, .. })
    ));
    // A request read otherwise than the rules need (a header they no longer name): the reply
    // says what to read from now on.
    let mut extra = facts_for("/x?debug=1", Some("192.0.2.9"));
    if let Some(line) = extra.line.as_mut() {
        line.headers.push(("x-old".into(), None));
    }
    let Verdict::Route(r) = f.decide(&extra, 100_000) else {
        panic!("routed")
    };
    assert_eq!(r.rule_needs.as_deref(), Some(&needs));
    // A service without rules never asks.
    let mut plain = fleet(json!({}));
    assert!(
        matches!(plain.decide(&bare, 0), Verdict::Route(r) if r.rule_needs.is_none() && r.rules.is_none())
    );
}

#[test]
fn a_rules_pool_bypasses_steering_and_keeps_rotation_and_failover_within_it() {
    let mut f = ruled(json!({}));
    let mut firsts = Vec::new();
    for t in 0..4 {
        let Verdict::Route(r) = f.decide(&facts_for("/api/users?debug=1", None), t) else {
            panic!()
        };
        let urls: Vec<&str> = r.attempts.iter().map(|a| a.url.as_str()).collect();
        assert!(urls.iter().all(|u| u.starts_with("http://a")), "{urls:?}");
        assert_eq!(urls.len(), 2, "failover within the pool");
        firsts.push(urls[0].to_string());
        let effects = r.rules.expect("rules applied");
        assert_eq!(effects.matched, ["debug", "api"]);
        assert_eq!(effects.decided_by.as_deref(), Some("api"));
        assert_eq!(effects.pool.as_deref(), Some("api"));
        assert_eq!(effects.path.as_deref(), Some("/users"));
        assert_eq!(
            effects.response_headers.set,
            [("x-debug".to_string(), "on".to_string())]
        );
        // The request was read exactly as the rules need: the reply does not repeat it.
        assert!(r.rule_needs.is_none());
    }
    assert_eq!(firsts, ["http://a1", "http://a2", "http://a1", "http://a2"]);
    // A backend of the api pool with an open breaker: the pool's other backend takes the request.
    for t in 0..3 {
        fail(&mut f, "http://a1", 10 + t);
    }
    let Verdict::Route(r) = f.decide(&facts_for("/api/x", None), 20) else {
        panic!()
    };
    assert_eq!(r.attempts[0].url, "http://a2");
    // The whole pool down: panic mode tries the pool's own backends, never another pool's.
    for t in 0..3 {
        fail(&mut f, "http://a2", 21 + t);
    }
    let Verdict::Route(r) = f.decide(&facts_for("/api/x", None), 25) else {
        panic!()
    };
    let urls: Vec<&str> = r.attempts.iter().map(|a| a.url.as_str()).collect();
    assert!(r.panic);
    assert_eq!(urls.len(), 2);
    assert!(urls.iter().all(|u| u.starts_with("http://a")), "{urls:?}");
    assert_eq!(
        r.rules.as_ref().and_then(|e| e.decided_by.as_deref()),
        Some("api")
    );
    // No rule matched: geo steering as before, and no effects on the route.
    let Verdict::Route(r) = f.decide(&facts_for("/", None), 30) else {
        panic!()
    };
    assert!(r.attempts[0].url.starts_with("http://w"));
    assert_eq!(r.rules, None);
}

#[test]
fn a_rules_answer_reaches_no_backend() {
    let mut f = ruled(json!({}));
    let Verdict::Answer(a) = f.decide(&facts_for("/trace", None), 0) else {
        panic!("answered by the rule")
    };
    assert_eq!(
        (a.rule.as_str(), a.status, a.body.as_str()),
        ("no-trace", 405, "not here")
    );
    // Nothing was counted in on a backend.
    assert!(f.load.iter().all(|l| l.outstanding == 0));
}

#[test]
fn a_split_keeps_each_client_in_one_pool_and_shares_by_weight() {
    let mut f = ruled(json!({}));
    let pool_of = |url: &str| {
        if url.starts_with("http://c") {
            "canary"
        } else {
            "web"
        }
    };
    let mut canary = 0;
    let n = 2000;
    for i in 0..n {
        let ip = format!("198.51.{}.{}", i / 256, i % 256);
        let mut seen = Vec::new();
        for t in 0..3 {
            let Verdict::Route(r) = f.decide(&facts_for("/shop/cart", Some(&ip)), i * 3 + t) else {
                panic!()
            };
            let effects = r.rules.unwrap();
            assert_eq!(effects.pool.as_deref(), Some(pool_of(&r.attempts[0].url)));
            seen.push(effects.pool.unwrap());
        }
        assert!(
            seen.iter().all(|p| *p == seen[0]),
            "client {ip} flapped: {seen:?}"
        );
        canary += usize::from(seen[0] == "canary");
    }
    let share = canary as f64 / n as f64;
    assert!((share - 0.05).abs() <= 0.02, "canary share {share}");
    // No client key: a weighted draw from the fleet's randomness.
    let drawn: usize = (0..2000)
        .filter(|&t| {
            matches!(f.decide(&facts_for("/shop/", None), 10_000 + t),
                Verdict::Route(r) if r.rules.as_ref().and_then(|e| e.pool.as_deref()) == Some("canary"))
        })
        .count();
    assert!((drawn as f64 / 2000.0 - 0.05).abs() <= 0.02, "{drawn}");
}

#[test]
fn under_cookie_affinity_a_split_keeps_the_pool_of_the_clients_pin() {
    let mut f = ruled(json!({"load_balancer": {"session_affinity": {"type": "cookie"}}}));
    // A pin to the canary backend, signed as a route there would sign it (same secret).
    let canary_pin = {
        let mut v = f.cfg().to_value();
        v["rules"] = json!([{"name": "c", "then": {"pool": "canary"}}]);
        let mut g = Fleet::new(
            parse_service(&v, "", &Deployment::default()).unwrap(),
            1,
            &[],
            b"secret",
            0,
        );
        let Verdict::Route(r) = g.decide(&facts_for("/", None), 1) else {
            panic!()
        };
        assert_eq!(r.attempts[0].url, "http://c1");
        r.attempts[0].pin.clone().unwrap()
    };
    // Clients whose address alone would mostly land in web keep the canary pool of their pin.
    for ip in ["192.0.2.9", "203.0.113.1", "2001:db8::5"] {
        let mut facts = facts_for("/shop/", Some(ip));
        facts.cookies = Some(format!("lb_session={canary_pin}"));
        let Verdict::Route(r) = f.decide(&facts, 5) else {
            panic!()
        };
        assert_eq!(
            r.rules.unwrap().pool.as_deref(),
            Some("canary"),
            "{ip} keeps its pin's pool"
        );
        assert_eq!(r.attempts[0].url, "http://c1");
        assert!(r.attempts[0].pin.is_none(), "the pin is honoured");
    }
    // A canary turned down to weight 0 keeps no one, pinned or not.
    let mut v = f.cfg().to_value();
    v["rules"][3]["then"]["split"][1]["weight"] = json!(0);
    let mut g = Fleet::new(
        parse_service(&v, "", &Deployment::default()).unwrap(),
        2,
        &[],
        b"secret",
        0,
    );
    let mut facts = facts_for("/shop/", Some("192.0.2.9"));
    facts.cookies = Some(format!("lb_session={canary_pin}"));
    let Verdict::Route(r) = g.decide(&facts, 5) else {
        panic!()
    };
    assert_eq!(r.rules.unwrap().pool.as_deref(), Some("web"));
}

mod regions {
    use super::*;
    use crate::policy::health::prober::{Report, Seen};
    use crate::policy::health::regions::Region::{self, *};

    fn report(region: Region, url: &str, up: bool, latency_ms: u64) -> Report {
        Report {
            region,
            backends: vec![Seen {
                url: url.into(),
                up,
                latency_ms,
                error: (!up).then(|| "expected 2xx, got 500".to_string()),
            }],
        }
    }

    fn three_regions() -> Fleet {
        fleet(json!({"activeHealthChecks": {"regions": ["wnam", "weur", "apac"]}}))
    }

    #[test]
    fn the_object_does_not_probe_itself_when_regions_do() {
        let mut f = three_regions();
        let mut rng = SplitMix64(1);
        assert!(!f.probes_here());
        assert_eq!(f.next_probe_at(0, &mut rng), None);
        assert!(f.take_probe_plan(0, false, &mut rng).targets.is_empty());
        // A failed request does not bring a local probe forward either.
        assert!(!fail(&mut f, "http://a", 1).reprobe_soon);
    }

    #[test]
    fn a_minority_stays_in_traffic_a_quorum_takes_out_and_recovery_brings_back() {
        let mut f = three_regions();
        for r in [Wnam, Weur, Apac] {
            let c = f.apply_region_report(&report(r, "http://a", true, 10), 1);
            assert!(c.flips.is_empty(), "a region's first 'up' is no flip");
            assert!(c.persist);
        }
        // apac alone sees it down: degraded, still in traffic.
        let c = f.apply_region_report(&report(Apac, "http://a", false, 3), 2);
        assert_eq!(
            c.flips,
            vec![(
                "http://a".to_string(),
                false,
                Some("expected 2xx, got 500".to_string())
            )]
        );
        assert!(f.records()[0].health.healthy);
        assert!((0..3).any(|i| first(&mut f, 10 + i) == "http://a"));
        // weur too: two of three is the default quorum: out of traffic.
        f.apply_region_report(&report(Weur, "http://a", false, 3), 20);
        assert!(!f.records()[0].health.healthy);
        assert!((0..6).all(|i| first(&mut f, 30 + i) != "http://a"));
        assert_eq!(
            f.records()[0].last_error.as_deref(),
            Some("expected 2xx, got 500")
        );
        // weur sees it up again: back in traffic, ramping from now.
        let c = f.apply_region_report(&report(Weur, "http://a", true, 12), 40);
        assert!(c.persist);
        assert!(f.records()[0].health.healthy);
        assert_eq!(f.records()[0].ramp_start_ms, Some(40));
        // Latency is kept per region while the region sees it up.
        assert_eq!(f.region_latency(0), vec![(Wnam, 10.0), (Weur, 12.0)]);
        assert_eq!(f.records()[0].latency_ms, Some(11.0));
        assert_eq!(f.region_latency(9), vec![]);
    }

    #[test]
    fn reports_from_other_regions_or_for_unknown_backends_change_nothing() {
        let mut f = three_regions();
        let c = f.apply_region_report(&report(Oc, "http://a", false, 1), 1);
        assert_eq!(c, RegionChanges::default());
        let c = f.apply_region_report(&report(Wnam, "http://gone", false, 1), 1);
        assert_eq!(c, RegionChanges::default());
        // A service probed from its object ignores region reports.
        let mut local = fleet(json!({}));
        assert_eq!(
            local.apply_region_report(&report(Wnam, "http://a", false, 1), 1),
            RegionChanges::default()
        );
    }

    #[test]
    fn a_removed_region_loses_its_say_and_a_configured_quorum_counts() {
        let mut f =
            fleet(json!({"activeHealthChecks": {"regions": ["wnam", "apac"], "quorum": 1}}));
        f.apply_region_report(&report(Apac, "http://a", false, 1), 1);
        assert!(
            !f.records()[0].health.healthy,
            "quorum 1: one region is enough"
        );
        let saved = f.records().to_vec();
        let cfg = parse_service(
            &json!({"hostname": "svc.test", "backends": ["http://a", "http://b", "http://c"],
                    "activeHealthChecks": {"regions": ["wnam"], "quorum": 1}}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let mut g = Fleet::new(cfg, 2, &saved, b"secret", 5);
        assert!(g.records()[0].regions.is_empty(), "apac no longer probes");
        // The next report re-judges the backend on the regions left.
        g.apply_region_report(&report(Wnam, "http://a", true, 1), 6);
        assert!(g.records()[0].health.healthy);
    }

    #[test]
    fn an_external_verdict_closes_an_open_breaker_on_recovery() {
        let mut f = three_regions();
        for t in 0..3 {
            fail(&mut f, "http://b", t);
        }
        assert!(matches!(
            f.records()[1].breaker.state,
            BreakerState::Open { .. }
        ));
        assert!(f.apply_verdict(1, true, 10));
        assert_eq!(f.records()[1].breaker.state, BreakerState::Closed);
        assert!(!f.apply_verdict(1, true, 11));
        assert!(f.apply_verdict(1, false, 12));
        assert!(!f.records()[1].health.healthy);
    }
}

mod dynamic_steering {
    use super::*;
    use crate::policy::health::prober::{Report, Seen};
    use crate::policy::health::regions::Region::{self, *};

    /// eu (e1) and us (u1) pools probed from weur and wnam.
    fn two_pools() -> Fleet {
        fleet(json!({
            "backends": [],
            "pools": [{"name": "eu", "backends": ["http://e1"]}, {"name": "us", "backends": ["http://u1"]}],
            "activeHealthChecks": {"regions": ["weur", "wnam"]},
            "load_balancer": {"steering": "dynamic"},
        }))
    }

    fn seen(f: &mut Fleet, region: Region, eu_ms: u64, us_ms: u64, now: u64) {
        let report = Report {
            region,
            backends: vec![
                Seen {
                    url: "http://e1".into(),
                    up: true,
                    latency_ms: eu_ms,
                    error: None,
                },
                Seen {
                    url: "http://u1".into(),
                    up: true,
                    latency_ms: us_ms,
                    error: None,
                },
            ],
        };
        f.apply_region_report(&report, now);
    }

    fn from(country: &str, continent: &str) -> RequestFacts {
        RequestFacts {
            country: Some(country.into()),
            continent: Some(continent.into()),
            ..Default::default()
        }
    }

    fn routed(f: &mut Fleet, facts: &RequestFacts, now: u64) -> Route {
        match f.decide(facts, now) {
            Verdict::Route(r) => r,
            other => panic!("not routed: {other:?}"),
        }
    }

    #[test]
    fn follows_the_pool_fastest_from_the_clients_region_in_both_modes() {
        let mut f = two_pools();
        assert!(
            Needs::of(f.cfg()).geo,
            "dynamic steering reads the client's geography"
        );
        seen(&mut f, Weur, 10, 90, 1);
        seen(&mut f, Wnam, 95, 12, 1);
        let eu = from("DE", "EU");
        let us = from("MX", "NA");
        let r = routed(&mut f, &eu, 2);
        assert_eq!(r.attempts[0].url, "http://e1");
        assert_eq!(
            r.pool_why.as_deref(),
            Some("dynamic from weur: eu 10 ms, us 90 ms → eu")
        );
        assert_eq!(routed(&mut f, &us, 3).attempts[0].url, "http://u1");
        // eu turns slow from weur: European clients follow the faster pool.
        seen(&mut f, Weur, 300, 90, 4);
        assert_eq!(routed(&mut f, &eu, 5).attempts[0].url, "http://u1");
        // A lease carries the latencies: the Worker decides the same.
        let leased = f.lease_backends(6);
        assert!(leased.iter().all(|l| l.region_latency.len() == 2));
        let mut local = Fleet::from_lease(f.cfg().clone(), 1, &leased, b"secret", 6).unwrap();
        assert_eq!(routed(&mut local, &eu, 7).attempts[0].url, "http://u1");
        assert_eq!(routed(&mut local, &us, 8).attempts[0].url, "http://u1");
        seen(&mut f, Weur, 10, 90, 9);
        let mut local =
            Fleet::from_lease(f.cfg().clone(), 1, &f.lease_backends(10), b"secret", 10).unwrap();
        assert_eq!(routed(&mut local, &eu, 11).attempts[0].url, "http://e1");
        // The route's reason is never sent to the Worker (it is read where the route is made).
        let text = serde_json::to_string(&routed(&mut f, &eu, 12)).unwrap();
        assert!(!text.contains("dynamic from"), "{text}");
    }
}
