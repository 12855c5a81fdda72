use super::*;
use crate::policy::control::config::{parse_service, Deployment};
use crate::policy::telemetry::record::{Asker, RequestRecord};
use serde_json::json;

fn cfg(extra: serde_json::Value) -> ServiceConfig {
    let mut v = json!({"hostname": "svc.test", "backends": ["http://a", "http://b", "http://c"]});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    parse_service(&v, "", &Deployment::default()).unwrap()
}

/// `n` logged requests, client i % 10 (10.0.0.x for even x, 192.0.2.x else).
fn log(n: usize) -> Vec<LogRow> {
    (0..n)
        .map(|i| LogRow {
            hostname: "svc.test".into(),
            request: RequestRecord {
                ts_ms: i as u64,
                method: "GET".into(),
                path: format!("/p{}", i % 7),
                status: 200,
                backend: None,
                attempts: 1,
                latency_ms: 1,
            },
            failed: Vec::new(),
            kept: None,
            rule: None,
            asker: Asker {
                query: None,
                client_ip: Some(if i % 2 == 0 {
                    format!("10.0.0.{}", i % 10)
                } else {
                    format!("192.0.2.{}", i % 10)
                }),
                country: None,
            },
        })
        .collect()
}

fn run(current: &ServiceConfig, draft: &ServiceConfig, rows: &[LogRow]) -> Preview {
    run_with(current, draft, rows, &[])
}

fn run_with(
    current: &ServiceConfig,
    draft: &ServiceConfig,
    rows: &[LogRow],
    unanswered: &[(String, String)],
) -> Preview {
    let running = Fleet::new(current.clone(), 1, &[], b"secret", 0);
    let cur = Current {
        cfg: current,
        records: running.records(),
        secret: b"secret",
        now_ms: 1_000_000,
    };
    preview(&cur, draft, rows, unanswered)
}

#[test]
fn removing_one_of_three_backends_moves_a_third_of_the_requests() {
    let p = run(
        &cfg(json!({})),
        &cfg(json!({"backends": ["http://a", "http://b"]})),
        &log(300),
    );
    assert_eq!(p.requests, 300);
    assert_eq!(
        p.before,
        BTreeMap::from([
            ("http://a".into(), 0.3333),
            ("http://b".into(), 0.3333),
            ("http://c".into(), 0.3333)
        ])
    );
    assert_eq!(
        p.after,
        BTreeMap::from([("http://a".into(), 0.5), ("http://b".into(), 0.5)])
    );
    assert_eq!((p.changed, p.refused), (0.3333, 0.0));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn the_same_config_changes_nothing_and_a_new_backend_takes_its_full_share() {
    let p = run(&cfg(json!({})), &cfg(json!({})), &log(60));
    assert_eq!((p.changed, p.refused), (0.0, 0.0));
    // A new backend is shown past its slow start: a quarter, not the ramp's first 1 %.
    let p = run(
        &cfg(json!({})),
        &cfg(
            json!({"backends": ["http://a", "http://b", "http://c", "http://d"],
            "load_balancer": {"slow_start": 30}}),
        ),
        &log(400),
    );
    assert_eq!(p.after["http://d"], 0.25);
    assert_eq!(p.changed, 0.25);
}

#[test]
fn access_lists_refuse_and_rate_limits_are_not_replayed() {
    let current = cfg(json!({}));
    let p = run(
        &current,
        &cfg(json!({"access_control": {"deny": ["10.0.0.0/8"]}})),
        &log(100),
    );
    // Half the clients are in 10/8: those requests are refused, the rest keep their shares.
    assert_eq!(p.refused, 0.5);
    assert_eq!(p.changed, 0.5);
    assert_eq!(p.after.values().sum::<f64>() + p.refused, 1.0);
    let p = run(
        &current,
        &cfg(json!({"rate_limit": {"requests": 1, "window": 60}})),
        &log(100),
    );
    assert_eq!((p.refused, p.changed), (0.0, 0.0));
}

#[test]
fn affinity_by_client_compares_requests_one_by_one() {
    let sticky = json!({"load_balancer": {"session_affinity": {"type": "ip_cookie"}}});
    let p = run(&cfg(sticky.clone()), &cfg(sticky), &log(100));
    assert_eq!(p.changed, 0.0);
    // Each client's backend is fixed by its address: removing c moves only c's clients.
    let p = run(
        &cfg(json!({"load_balancer": {"session_affinity": {"type": "ip_cookie"}}})),
        &cfg(json!({"backends": ["http://a", "http://b"],
            "load_balancer": {"session_affinity": {"type": "ip_cookie"}}})),
        &log(100),
    );
    let on_c = p.before["http://c"];
    assert!(on_c > 0.0 && p.changed >= on_c, "{p:?}");
}

#[test]
fn an_empty_log_answers_nothing_replayed_with_a_warning() {
    let p = run(&cfg(json!({})), &cfg(json!({})), &[]);
    assert_eq!((p.requests, p.changed), (0, 0.0));
    assert_eq!(p.before["http://a"], 0.0);
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("nothing to replay"));
}

#[test]
fn warnings_name_what_the_draft_risks() {
    let current = cfg(json!({}));
    // A new backend that did not answer the probe.
    let p = run_with(
        &current,
        &cfg(json!({"backends": ["http://a", "http://b", "http://c", "http://d"]})),
        &log(40),
        &[("http://d".into(), "connect refused".into())],
    );
    assert_eq!(
        p.warnings,
        ["new backend http://d did not answer a probe (connect refused); it would take 25% of the requests"]
    );
    // Every backend disabled: every request is refused.
    let off = |u: &str| json!({"url": u, "state": "disabled"});
    let p = run(
        &current,
        &cfg(json!({"backends": [off("http://a"), off("http://b"), off("http://c")]})),
        &log(10),
    );
    assert_eq!(p.refused, 1.0);
    assert!(p.warnings[0].starts_with("every backend of the service is disabled"));
    // A pool whose only enabled backend is new and did not answer.
    let p = run_with(
        &current,
        &cfg(json!({"backends": [],
            "pools": [{"name": "main", "backends": ["http://a", "http://b", "http://c"]},
                      {"name": "spare", "backends": ["http://e"], "minimum_healthy": 1}]})),
        &log(10),
        &[("http://e".into(), "timeout".into())],
    );
    assert!(
        p.warnings.iter().any(|w| w.starts_with(
            "pool \"spare\" would have 0 healthy backend(s), fewer than its minimum_healthy of 1"
        )),
        "{:?}",
        p.warnings
    );
    // Weights that move most of the traffic.
    let w = |u: &str, n: u32| json!({"url": u, "weight": n});
    let p = run(
        &cfg(json!({"backends": [w("http://a", 9), w("http://b", 1)]})),
        &cfg(json!({"backends": [w("http://a", 1), w("http://b", 9)]})),
        &log(100),
    );
    assert_eq!(
        p.warnings,
        ["the new weights move 80% of the traffic to other backends"]
    );
    assert!((p.changed - 0.8).abs() < 0.02, "{p:?}");
}

#[test]
fn rules_are_replayed_on_the_logged_method_path_and_query() {
    let current = cfg(json!({}));
    // Requests to /p0 (1 in 7) would be answered by the rule itself.
    let p = run(
        &current,
        &cfg(
            json!({"rules": [{"name": "gone", "when": {"path": "/p0"}, "then": {"respond": {"status": 410}}}]}),
        ),
        &log(700),
    );
    assert_eq!((p.refused, p.changed), (0.1429, 0.1429));
    // A rule that routes /p1 to a pool: only those requests move, compared as one group.
    let pools = json!({"backends": [],
        "pools": [{"name": "main", "backends": ["http://a", "http://b", "http://c"]},
                  {"name": "side", "backends": ["http://d"]}],
        "geo_steering": {"regions": {}, "fallback_pool": "main"}});
    let mut draft = pools.clone();
    draft["rules"] = json!([{"name": "side", "when": {"path": "/p1", "query": {"q": "*"}}, "then": {"pool": "side"}}]);
    let mut rows = log(700);
    for r in rows.iter_mut().filter(|r| r.request.path == "/p1") {
        r.asker.query = Some("q=1".into());
    }
    let p = run(&cfg(pools), &cfg(draft), &rows);
    assert_eq!(p.after["http://d"], 0.1429);
    assert!((p.changed - 0.1429).abs() < 0.002, "{p:?}");
}
