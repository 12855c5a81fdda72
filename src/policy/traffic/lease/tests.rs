use super::*;
use crate::policy::control::config::parse_service;
use crate::policy::rng::{Rng, SplitMix64};
use crate::policy::traffic::decision::Route;
use proptest::prelude::*;
use serde_json::json;

fn service(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({
        "hostname": "svc.test",
        "backends": ["http://a", "http://b", "http://c"],
        "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 3, "recovery_timeout_ms": 1000}},
        "decisions": {"mode": "lease", "lease_ms": 1000},
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn object(extra: serde_json::Value, version: u64) -> Fleet {
    let cfg = parse_service(&service(extra), "", &Deployment::default()).unwrap();
    Fleet::new(cfg, version, &[], b"0123456789abcdef", 0)
}

fn lease(fleet: &Fleet, book: &mut LeaseBook, now: u64) -> Lease {
    grant(fleet, book, now, false, 0, false).expect("lease mode grants")
}

fn held(fleet: &Fleet, book: &mut LeaseBook, sent: u64, granted: u64) -> Held {
    Held::new(lease(fleet, book, granted), sent).unwrap()
}

fn first(h: &mut Held, facts: &RequestFacts, now: u64) -> Option<Route> {
    match h.decide(facts, now) {
        Local::Decided(Verdict::Route(r)) => Some(r),
        Local::Decided(other) => panic!("not routed: {other:?}"),
        Local::AskObject => None,
    }
}

fn url(h: &mut Held, now: u64) -> Option<String> {
    first(h, &RequestFacts::default(), now).map(|r| r.attempts[0].url.clone())
}

#[test]
fn expiry_arithmetic_counts_from_the_send_and_ends_early() {
    assert_eq!(lease_end(10_000, 1000), 10_000 + 1000 - EXPIRY_MARGIN_MS);
    assert_eq!(refresh_at(10_000, 1000), 10_500);
    // Never overflows or underflows, whatever the inputs.
    assert_eq!(lease_end(u64::MAX, 1000), u64::MAX);
    assert_eq!(lease_end(5, 0), 5);
    let f = object(json!({}), 1);
    let mut book = LeaseBook::new(0, 0);
    // Sent at 100 (Worker clock); granted at the object at 7_000_000 (its clock): only the
    // Worker's own send time matters to the Worker.
    let mut h = held(&f, &mut book, 100, 7_000_000);
    assert_eq!(h.ends_ms(), 100 + 1000 - EXPIRY_MARGIN_MS);
    assert!(url(&mut h, 100).is_some());
    let end = h.ends_ms();
    assert!(url(&mut h, end - 1).is_some());
    assert!(url(&mut h, end).is_none(), "over at its end");
    assert!(url(&mut h, 50_000).is_none());
    // A refresh starts once, from half way.
    assert!(!h.start_refresh(599));
    assert!(h.start_refresh(600));
    assert!(!h.start_refresh(700), "one refresh at a time");
    h.refresh_failed();
    assert!(h.start_refresh(700), "a failed refresh may be retried");
}

#[test]
fn per_request_mode_grants_nothing_and_lease_carries_the_policy() {
    let per_request = object(json!({"decisions": {"mode": "per_request"}}), 1);
    let mut book = LeaseBook::new(0, 0);
    assert!(grant(&per_request, &mut book, 0, false, 0, false).is_none());
    let f = object(
        json!({"retries": 2, "connection_error_handling": {"connection_timeout_ms": 700}}),
        4,
    );
    let l = lease(&f, &mut book, 0);
    let text = serde_json::to_string(&l).unwrap();
    assert_eq!(serde_json::from_str::<Lease>(&text).unwrap(), l);
    assert_eq!((l.version, l.lease_ms, l.backends.len()), (4, 1000, 3));
    let mut h = Held::new(l, 0).unwrap();
    let r = first(&mut h, &RequestFacts::default(), 1).unwrap();
    assert_eq!((r.retries, r.timeout_ms), (2, 700));
    assert_eq!(r.ticket, None, "no in-flight counting under a lease");
}

#[test]
fn local_round_robin_matches_weights_and_offsets_spread_workers() {
    let f = object(
        json!({"backends": [{"url": "http://a", "weight": 3}, "http://b"]}),
        1,
    );
    let mut book = LeaseBook::new(0, 0);
    let mut h = held(&f, &mut book, 0, 0);
    let picks: Vec<String> = (0..8).map(|i| url(&mut h, i).unwrap()).collect();
    assert_eq!(
        picks.iter().filter(|u| *u == "http://a").count(),
        6,
        "{picks:?}"
    );
    // Two Workers with different offsets start on different backends.
    let even = object(json!({}), 1);
    let starts: Vec<String> = (0..3)
        .map(|offset| {
            let l = grant(&even, &mut book, 0, false, offset, false).unwrap();
            url(&mut Held::new(l, 0).unwrap(), 1).unwrap()
        })
        .collect();
    assert_eq!(starts, ["http://a", "http://b", "http://c"]);
}

#[test]
fn open_breaker_is_never_leased_and_its_trial_goes_to_the_object() {
    let mut f = object(json!({}), 1);
    for t in 0..3 {
        f.report(&Outcome::connect_failure("http://b"), t);
    }
    let mut book = LeaseBook::new(0, 0);
    let l = lease(&f, &mut book, 10);
    assert!(!l.backends[1].up, "open breaker is down in the lease");
    assert_eq!(
        l.trial_in_ms,
        Some(1000 - 8),
        "trial due when the breaker's wait ends"
    );
    let mut h = Held::new(l, 10).unwrap();
    for t in 10..400 {
        let r = first(&mut h, &RequestFacts::default(), t).unwrap();
        assert!(r.attempts.iter().all(|a| a.url != "http://b" && !a.trial));
    }
    // Once the trial is due, requests go to the object, which admits exactly one trial.
    let due = 10 + 1000 - 8;
    assert!(url(&mut h, due).is_none());
    let trials = (0..5)
        .filter(|i| match f.decide(&RequestFacts::default(), due + i) {
            Verdict::Route(r) => r.attempts.iter().any(|a| a.trial),
            _ => false,
        })
        .count();
    assert_eq!(trials, 1);
    // While that trial is out, leases still leave the backend out.
    let l = lease(&f, &mut book, due + 10);
    assert!(!l.backends[1].up);
}

#[test]
fn a_due_trial_the_object_does_not_hand_out_is_asked_for_only_now_and_then() {
    let mut f = object(json!({}), 1);
    for t in 0..3 {
        f.report(&Outcome::connect_failure("http://b"), t);
    }
    let mut book = LeaseBook::new(0, 0);
    // Granted after the breaker's wait: the trial is due at once.
    let mut h = Held::new(lease(&f, &mut book, 2000), 2000).unwrap();
    assert!(url(&mut h, 2000).is_none(), "due: ask the object");
    // The object's answer still has it due (its round robin picked another backend).
    let (mut h, _) = h.replaced_by(Held::new(lease(&f, &mut book, 2001), 2001).unwrap(), 2001);
    assert!(
        url(&mut h, 2002).is_some(),
        "not every request goes to the object"
    );
    assert!(url(&mut h, 2001 + 99).is_some());
    assert!(
        url(&mut h, 2001 + 100).is_none(),
        "asks again a tenth of a lease later"
    );
}

#[test]
fn a_lease_carries_no_webhook_secrets() {
    let f = object(
        json!({"notifications": {"webhooks": [{"url": "https://hooks.example/x", "secret": "0123456789abcdef-secret"}]}}),
        1,
    );
    let mut book = LeaseBook::new(0, 0);
    let text = serde_json::to_string(&lease(&f, &mut book, 0)).unwrap();
    assert!(!text.contains("0123456789abcdef-secret"));
    assert!(!text.contains("hooks.example"));
}

#[test]
fn local_ejection_lasts_for_the_rest_of_the_lease_and_survives_a_refresh() {
    let f = object(json!({}), 1);
    let mut book = LeaseBook::new(0, 0);
    let mut h = held(&f, &mut book, 0, 0);
    h.eject("http://b");
    h.eject("http://nope");
    assert_eq!(h.ejected(1), ["http://b"]);
    for t in 1..100 {
        let r = first(&mut h, &RequestFacts::default(), t).unwrap();
        assert!(r.attempts.iter().all(|a| a.url != "http://b"), "{r:?}");
    }
    // Refreshed half way (same config): b stays out until the first lease would have ended.
    let next = held(&f, &mut book, 500, 500);
    let (mut h, back) = h.replaced_by(next, 500);
    assert!(
        back.is_empty(),
        "same generation: handed back with the next message"
    );
    for t in 500..980 {
        assert_ne!(url(&mut h, t).as_deref(), Some("http://b"));
    }
    let after: Vec<String> = (980..986).map(|t| url(&mut h, t).unwrap()).collect();
    assert!(
        after.iter().any(|u| u == "http://b"),
        "back after the old lease's end: {after:?}"
    );
    assert_eq!(h.take_superseded().len(), 1);
    // Every backend ejected: the panic plan still tries the enabled ones rather than refusing.
    for u in ["http://a", "http://b", "http://c"] {
        h.eject(u);
    }
    let r = first(&mut h, &RequestFacts::default(), 990).unwrap();
    assert!(r.panic);
}

#[test]
fn a_new_generation_hands_old_leases_back_at_once() {
    let f = object(json!({}), 1);
    let mut book = LeaseBook::new(0, 0);
    let a = held(&f, &mut book, 0, 0);
    let b = held(&f, &mut book, 500, 500);
    let (b, back) = a.replaced_by(b, 500);
    assert!(back.is_empty());
    book.new_generation();
    assert_eq!(
        book.fence_wait_ms(900),
        600,
        "b was granted at 500 for 1000 ms"
    );
    let c = held(
        &object(json!({"backends": ["http://a"]}), 2),
        &mut book,
        900,
        900,
    );
    let (c, back) = b.replaced_by(c, 900);
    assert_eq!(back.len(), 2, "both older leases go back now");
    assert_eq!(c.version, 2);
    book.hand_back(&back, 901);
    assert_eq!(book.counters.early_returns, 2);
    assert_eq!(
        book.fence_wait_ms(901),
        0,
        "handed back: nothing to wait for"
    );
}

#[test]
fn book_counts_expires_and_bounds() {
    let f = object(json!({}), 1);
    let mut book = LeaseBook::new(0, 0);
    let l1 = grant(&f, &mut book, 0, false, 0, false).unwrap();
    let l2 = grant(&f, &mut book, 100, true, 0, false).unwrap();
    assert_ne!(l1.id, l2.id);
    assert_eq!(book.outstanding(100), 2);
    assert_eq!(book.outstanding(1000), 1, "the first expired at 1000");
    book.hand_back(&[l1.id, l2.id, 999], 1000);
    assert_eq!(
        book.counters.early_returns, 1,
        "only a live lease counts as an early return"
    );
    assert_eq!((book.counters.grants, book.counters.refreshes), (1, 1));
    for _ in 0..MAX_LEASES {
        book.grant(1000, 2000, true).unwrap();
    }
    assert!(
        book.grant(1000, 2000, true).is_none(),
        "full: decide per request"
    );
    assert_eq!(book.outstanding(3000), 0);
    // A new lifetime does not know what its predecessor granted: it fences for a lease's length.
    let mut fresh = LeaseBook::new(50_000, 1000);
    fresh.new_generation();
    assert_eq!(fresh.fence_wait_ms(50_000), 1000);
    assert_eq!(fresh.fence_wait_ms(51_000), 0);
}

#[test]
fn sticky_pins_signed_under_a_lease_verify_at_the_object_and_back() {
    let extra = json!({"load_balancer": {"session_affinity": {"type": "cookie"}}});
    let mut obj = object(extra.clone(), 1);
    let mut book = LeaseBook::new(0, 0);
    let mut h = held(&obj, &mut book, 0, 0);
    let r = first(&mut h, &RequestFacts::default(), 5).unwrap();
    let pinned = r.attempts[0].url.clone();
    let cookie = format!(
        "{}={}",
        r.cookie.as_ref().unwrap().name,
        r.attempts[0].pin.as_ref().unwrap()
    );
    let facts = RequestFacts {
        cookies: Some(cookie),
        ..Default::default()
    };
    for t in 6..20 {
        let local = first(&mut h, &facts, t).unwrap();
        assert_eq!(local.attempts[0].url, pinned);
        assert!(
            local.attempts[0].pin.is_none(),
            "a valid pin is not re-signed"
        );
        let Verdict::Route(at_object) = obj.decide(&facts, t) else {
            panic!()
        };
        assert_eq!(at_object.attempts[0].url, pinned);
    }
}

#[test]
fn geo_pools_are_chosen_locally() {
    let extra = json!({
        "backends": [],
        "pools": [
            {"name": "eu", "backends": ["http://eu1", "http://eu2"]},
            {"name": "us", "backends": ["http://us1"]}
        ],
        "geo_steering": {"regions": {"EU": "eu", "NA": "us"}, "fallback_pool": "us"}
    });
    let f = object(extra, 1);
    let mut book = LeaseBook::new(0, 0);
    let mut h = held(&f, &mut book, 0, 0);
    let eu = RequestFacts {
        continent: Some("EU".into()),
        ..Default::default()
    };
    let na = RequestFacts {
        continent: Some("NA".into()),
        ..Default::default()
    };
    for t in 0..10 {
        assert!(first(&mut h, &eu, t).unwrap().attempts[0]
            .url
            .starts_with("http://eu"));
        assert_eq!(first(&mut h, &na, t).unwrap().attempts[0].url, "http://us1");
    }
}

#[test]
fn a_lease_that_does_not_fit_its_config_is_refused() {
    let f = object(json!({}), 1);
    let mut book = LeaseBook::new(0, 0);
    let mut l = lease(&f, &mut book, 0);
    l.backends.pop();
    assert!(Held::new(l.clone(), 0).err().unwrap().contains("backends"));
    l.config = json!({"hostname": 3});
    assert!(Held::new(l.clone(), 0).is_err());
    let mut l = lease(&f, &mut book, 0);
    l.secret = "not base64!".into();
    assert!(Held::new(l, 0).is_err());
}

proptest! {
    /// The fence: whatever the clocks' offsets and the message delays, once the object
    /// acknowledges a config change, no Worker decides with a lease of the old config.
    #[test]
    fn no_old_config_decision_after_the_change_is_acknowledged(
        seed in any::<u64>(),
        worker_skew in -1_000_000i64..1_000_000,
        object_skew in -1_000_000i64..1_000_000,
        lease_ms in 100u64..10_000,
        change_at in 0u64..30_000,
    ) {
        let mut rng = SplitMix64(seed);
        let wclock = |real: u64| (real as i64 + worker_skew + 2_000_000) as u64;
        let oclock = |real: u64| (real as i64 + object_skew + 2_000_000) as u64;
        let old = object(json!({"decisions": {"mode": "lease", "lease_ms": lease_ms}}), 1);
        let mut book = LeaseBook::new(oclock(0), 0);
        // Workers each hold leases got at random times before the change: request sent at
        // `sent`, granted `d1` later at the object, arriving `d2` after that.
        let mut held_leases = Vec::new();
        let mut real = 0;
        loop {
            let d1 = rng.below(200);
            let d2 = rng.below(200);
            if real + d1 >= change_at {
                break; // granted after the change: a lease of the new config
            }
            let l = grant(&old, &mut book, oclock(real + d1), false, 0, false).unwrap();
            let h = Held::new(l, wclock(real)).unwrap();
            held_leases.push((h, real + d1 + d2));
            real += 1 + rng.below(lease_ms);
        }
        // The change: new generation at once, acknowledged after the fence wait.
        book.new_generation();
        let wait = book.fence_wait_ms(oclock(change_at));
        let ack = change_at + wait;
        for (h, arrives) in &mut held_leases {
            // Every moment from the acknowledgement on (and after the lease arrived): no decision.
            for real in [ack.max(*arrives), ack.max(*arrives) + 1, ack + lease_ms] {
                prop_assert!(
                    matches!(h.decide(&RequestFacts::default(), wclock(real)), Local::AskObject),
                    "decided at real {real} with an old lease after the ack at {ack}"
                );
            }
        }
        // And the fence is not longer than one lease.
        prop_assert!(wait <= lease_ms);
    }
}

#[test]
fn a_lease_rides_after_the_decision_reply() {
    let f = object(json!({}), 1);
    let mut book = LeaseBook::new(0, 0);
    let l = lease(&f, &mut book, 0);
    let reply =
        crate::policy::telemetry::tail::reply(br#"{"kind":"route"}"#.to_vec(), Some("round robin"));
    let both = String::from_utf8(attach(reply.clone(), Some(&l))).unwrap();
    let (decision, text) = detach(&both);
    assert_eq!(decision.as_bytes(), reply.as_slice());
    assert_eq!(serde_json::from_str::<Lease>(text.unwrap()).unwrap(), l);
    let alone = String::from_utf8(attach(reply.clone(), None)).unwrap();
    assert_eq!(detach(&alone), (alone.as_str(), None));
}

#[test]
fn a_worker_under_a_lease_reads_the_request_facts_the_object_would_ask_for() {
    let configs = [
        json!({}),
        json!({"load_balancer": {"session_affinity": {"type": "header", "header_name": "X-User"}}}),
        // A header name on cookie affinity keys nothing: neither side reads that header.
        json!({"load_balancer": {"session_affinity": {"type": "cookie", "header_name": "X-User"}}}),
        json!({"load_balancer": {"session_affinity": {"type": "ip_cookie", "header_name": "X-User"}}}),
        json!({
            "backends": [],
            "pools": [{"name": "eu", "backends": ["http://eu1"]}, {"name": "us", "backends": ["http://us1"]}],
            "geo_steering": {"regions": {"EU": "eu"}, "fallback_pool": "us"}
        }),
    ];
    for extra in configs {
        let mut obj = object(extra.clone(), 1);
        let mut book = LeaseBook::new(0, 0);
        let h = held(&obj, &mut book, 0, 0);
        let Verdict::Route(r) = obj.decide(&RequestFacts::default(), 1) else {
            panic!("{extra}")
        };
        let needs = h.needs();
        assert_eq!(
            (needs.affinity_header, needs.geo),
            (r.affinity_header, r.geo),
            "{extra}"
        );
    }
}

#[test]
fn rules_decide_the_same_under_a_lease_as_at_the_object() {
    use crate::policy::traffic::rules::RequestLine;
    let extra = json!({
        "backends": [],
        "pools": [
            {"name": "web", "backends": ["http://w1", "http://w2"]},
            {"name": "api", "backends": ["http://a1"]},
            {"name": "canary", "backends": ["http://c1"]}
        ],
        "rules": [
            {"name": "no-trace", "when": {"methods": ["TRACE"]}, "then": {"respond": {"status": 405}}},
            {"name": "eu-canary", "when": {"countries": ["EU"], "headers": {"x-canary": "1"}}, "then": {"pool": "canary"}},
            {"name": "api", "when": {"path_prefix": "/api/"}, "then": {"pool": "api", "rewrite": {"strip_prefix": "/api"}}},
            {"name": "shop", "when": {"path_prefix": "/shop/"}, "then": {"split": [{"pool": "web", "weight": 50}, {"pool": "canary", "weight": 50}]}}
        ]
    });
    let mut obj = object(extra, 1);
    let mut book = LeaseBook::new(0, 0);
    let lease = lease(&obj, &mut book, 0);
    assert_eq!(
        lease.config["rules"].as_array().map(Vec::len),
        Some(4),
        "the lease carries the rules"
    );
    let mut h = Held::new(lease, 0).unwrap();
    // The Worker reads what the object would ask for: the line and geography.
    let needs = h.needs();
    assert_eq!(needs, *obj.needs());
    assert!(needs.geo && needs.rules.method && needs.rules.path);
    assert_eq!(needs.rules.headers, ["x-canary"]);
    // Without the line, both ask for it.
    match h.decide(&RequestFacts::default(), 1) {
        Local::Decided(Verdict::More(n)) => assert_eq!(n, *needs.rules),
        other => panic!("{other:?}"),
    }
    let facts = |method: &str, path: &str, canary: Option<&str>, ip: &str| RequestFacts {
        client_ip: Some(ip.into()),
        country: Some("DE".into()),
        continent: Some("EU".into()),
        line: Some(RequestLine {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers: vec![("x-canary".into(), canary.map(str::to_string))],
        }),
        ..RequestFacts::default()
    };
    let cases = [
        facts("TRACE", "/", None, "192.0.2.1"),
        facts("GET", "/", Some("1"), "192.0.2.1"),
        facts("GET", "/api/x", None, "192.0.2.1"),
        facts("GET", "/shop/a", None, "192.0.2.1"),
        facts("GET", "/shop/a", None, "198.51.100.7"),
        facts("GET", "/shop/a", None, "2001:db8::7"),
    ];
    for (t, f) in cases.iter().enumerate() {
        let local = match h.decide(f, 10 + t as u64) {
            Local::Decided(v) => v,
            Local::AskObject => panic!("the lease is usable"),
        };
        let remote = obj.decide(f, 10 + t as u64);
        match (&local, &remote) {
            (Verdict::Answer(a), Verdict::Answer(b)) => assert_eq!(a, b),
            (Verdict::Route(a), Verdict::Route(b)) => {
                assert_eq!(a.rules, b.rules, "{f:?}");
                let pool = |r: &Route| {
                    r.attempts[0]
                        .url
                        .trim_end_matches(char::is_numeric)
                        .to_string()
                };
                assert_eq!(pool(a), pool(b), "{f:?}");
            }
            _ => panic!("{local:?} vs {remote:?}"),
        }
    }
}
