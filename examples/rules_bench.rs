//! Native bench of traffic rules: a realistic list of 50 rules evaluated per request, in µs per evaluation (`cargo run --release --example rules_bench`).

use std::hint::black_box;
use std::time::Instant;

use flowbalance::policy::control::config::{parse_service, Deployment, ServiceConfig};
use flowbalance::policy::traffic::decision::Verdict;
use flowbalance::policy::traffic::facts::RequestFacts;
use flowbalance::policy::traffic::fleet::Fleet;
use flowbalance::policy::traffic::rules::{Client, RequestLine, RuleSet};
use serde_json::{json, Value};

const RULES: usize = 50;

/// 50 rules of the kinds operators write: path prefixes with rewrites, regexes, tenant headers,
/// query flags, office networks with `not`, countries, methods, and `continue` header rules.
fn rules() -> Vec<Value> {
    let mut r = Vec::new();
    for i in 0..5 {
        r.push(json!({"name": format!("tag-{i}"), "when": {"methods": ["GET", "HEAD"], "headers": {format!("x-trace-{i}"): "*"}},
            "then": {"request_headers": {"set": {format!("x-tag-{i}"): "1"}}, "response_headers": {"remove": ["server"]}, "continue": true}}));
    }
    for i in 0..10 {
        r.push(json!({"name": format!("svc-{i}"), "when": {"path_prefix": format!("/svc{i}/"), "not": {"methods": ["DELETE"]}},
            "then": {"pool": "api", "rewrite": {"strip_prefix": format!("/svc{i}")}, "request_headers": {"set": {"x-svc": i.to_string()}}}}));
    }
    for i in 0..5 {
        r.push(json!({"name": format!("re-{i}"), "when": {"path_regex": format!("^/v[0-9]+/items{i}/[0-9]+(/[a-z-]+)?$")},
            "then": {"pool": "api"}}));
    }
    for i in 0..10 {
        r.push(json!({"name": format!("tenant-{i}"), "when": {"headers": {"x-tenant": format!("t{i}")}, "path_prefix": "/app/"},
            "then": {"split": [{"pool": "web", "weight": 90}, {"pool": "canary", "weight": 10}]}}));
    }
    for i in 0..5 {
        r.push(json!({"name": format!("flag-{i}"), "when": {"query": {"version": format!("v{i}"), "beta": "*"}},
            "then": {"pool": "canary"}}));
    }
    for i in 0..5 {
        r.push(json!({"name": format!("office-{i}"), "when": {"path_prefix": format!("/admin{i}/"),
            "not": {"client_ips": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32", format!("203.0.113.{i}")]}},
            "then": {"respond": {"status": 403, "body": "office only"}}}));
    }
    for country in ["FR", "IT", "ES", "PT", "NL"] {
        r.push(json!({"name": format!("geo-{country}"), "when": {"countries": [country, "OC"], "path_prefix": "/eu/"},
            "then": {"pool": "web"}}));
    }
    for i in 0..5 {
        r.push(json!({"name": format!("old-{i}"), "when": {"path": format!("/old/page{i}"), "methods": ["GET"]},
            "then": {"redirect": {"location": "https://www.example.com/new", "status": 301, "preserve_path": true}}}));
    }
    assert_eq!(r.len(), RULES);
    r
}

fn config(with_rules: bool) -> ServiceConfig {
    let v = json!({
        "hostname": "bench.example.com",
        "pools": [
            {"name": "web", "backends": ["http://10.0.0.1", "http://10.0.0.2", "http://10.0.0.3"]},
            {"name": "api", "backends": ["http://10.0.1.1", "http://10.0.1.2"]},
            {"name": "canary", "backends": ["http://10.0.2.1"]}
        ],
        "geo_steering": {"regions": {"EU": "web", "NA": "api"}, "fallback_pool": "web"},
        "rules": if with_rules { json!(rules()) } else { json!([]) },
    });
    match parse_service(&v, "", &Deployment::default()) {
        Ok(cfg) => cfg,
        Err(e) => panic!("bench config: {e:?}"),
    }
}

fn line(method: &str, path: &str, query: &str, headers: &[(&str, &str)]) -> RequestLine {
    // Every header the rules name is read (present or not), as the Worker sends them.
    let mut all: Vec<(String, Option<String>)> = (0..5)
        .map(|i| (format!("x-trace-{i}"), None))
        .chain([("x-tenant".to_string(), None)])
        .collect();
    for (k, v) in headers {
        if let Some(slot) = all.iter_mut().find(|(n, _)| n == k) {
            slot.1 = Some(v.to_string());
        }
    }
    RequestLine {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: all,
    }
}

fn per_call_us(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

fn main() {
    let cfg = config(true);
    let set = RuleSet::new(&cfg);
    let ip = "198.51.100.7".parse().ok();
    let client = Client {
        ip,
        country: Some("DE"),
        continent: Some("EU"),
    };
    let cases = [
        (
            "no rule matches: all 50 walked",
            line(
                "GET",
                "/products/42/reviews",
                "page=2&sort=new",
                &[("x-tenant", "t99")],
            ),
        ),
        (
            "2 continue rules, then a regex (rule 19)",
            line(
                "GET",
                "/v2/items3/12345/details",
                "",
                &[("x-trace-0", "a"), ("x-trace-3", "b")],
            ),
        ),
        (
            "a tenant split (rule 28)",
            line("GET", "/app/cart", "", &[("x-tenant", "t7")]),
        ),
        (
            "a query flag (rule 34)",
            line("GET", "/search", "q=shoes&version=v3&beta", &[]),
        ),
        (
            "a redirect at the end (rule 50)",
            line("GET", "/old/page4", "utm=x", &[]),
        ),
        (
            "an early prefix (rule 6)",
            line("POST", "/svc0/orders", "", &[]),
        ),
    ];
    println!(
        "traffic rules: {RULES} rules, µs per evaluation (walk + effects or answer), release build"
    );
    let mut worst: f64 = 0.0;
    for (what, l) in &cases {
        let us = per_call_us(200_000, || {
            let walk = set.evaluate(black_box(l), client);
            black_box(walk.answer(l));
            black_box(walk.effects(None));
        });
        worst = worst.max(us);
        let walk = set.evaluate(l, client);
        println!("  {us:>6.2} µs  {what} (matched {:?})", walk.matched);
    }
    println!("  worst: {worst:.2} µs (goal: at most 20 µs)");

    // The whole decision with and without the rules, for scale.
    let decide = |with_rules: bool, l: &RequestLine| {
        let mut fleet = Fleet::new(config(with_rules), 1, &[], b"bench-secret", 0);
        let facts = RequestFacts {
            client_ip: Some("198.51.100.7".into()),
            country: Some("DE".into()),
            continent: Some("EU".into()),
            line: Some(l.clone()),
            ..RequestFacts::default()
        };
        let mut now = 0;
        per_call_us(100_000, || {
            now += 1;
            if let Verdict::Route(r) = fleet.decide(black_box(&facts), now) {
                if let Some(t) = r.ticket {
                    fleet.complete(t);
                }
            }
        })
    };
    let walked = &cases[0].1;
    let without = decide(false, walked);
    let with = decide(true, walked);
    println!(
        "Fleet::decide: {without:.2} µs without rules, {with:.2} µs with the {RULES} rules (no rule matching)"
    );
}
