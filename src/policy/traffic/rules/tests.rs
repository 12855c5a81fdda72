//! The rules' walk: order, `continue`, `not`, every condition, rewrites and answers, what they read, split shares and stickiness, and explain.

use super::*;
use crate::policy::control::config::{parse_service, rules_example, Deployment};
use crate::policy::traffic::facts::Needs;
use proptest::prelude::*;
use serde_json::{json, Value};

const POOLS: &str = r#"[
    {"name": "web", "backends": ["http://10.0.0.1"]},
    {"name": "api", "backends": ["http://10.0.0.2"]},
    {"name": "canary", "backends": ["http://10.0.0.3"]}
]"#;

fn cfg(rules: Value) -> ServiceConfig {
    let v = json!({
        "hostname": "shop.example.com",
        "pools": serde_json::from_str::<Value>(POOLS).unwrap(),
        "rules": rules,
    });
    parse_service(&v, "", &Deployment::default()).unwrap()
}

/// The issue's example.
fn example() -> ServiceConfig {
    parse_service(&rules_example(), "", &Deployment::default()).unwrap()
}

/// A request line: `target` is the path with its query; headers as (name, value).
fn line(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestLine {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    RequestLine {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Some(v.to_string())))
            .collect(),
    }
}

fn names<'a>(w: &Walk<'a>) -> Vec<&'a str> {
    w.matched.clone()
}

fn decided<'a>(w: &Walk<'a>) -> Option<&'a str> {
    w.decided.map(|(n, _)| n)
}

#[test]
fn the_first_matching_rule_without_continue_ends_the_walk() {
    let c = example();
    let set = RuleSet::new(&c);
    let none = Client::default();
    // /api/ with a canary header: the canary rule comes first and ends the walk.
    let w = set.evaluate(&line("GET", "/api/x", &[("x-canary", "1")]), none);
    assert_eq!((names(&w), decided(&w)), (vec!["canary"], Some("canary")));
    assert_eq!(w.action(), &Action::Pool(2));
    assert_eq!(w.path, None, "the canary rule rewrites nothing");
    let w = set.evaluate(&line("GET", "/api/x", &[]), none);
    assert_eq!(decided(&w), Some("api"));
    assert_eq!(w.action(), &Action::Pool(1));
    assert_eq!(w.path.as_deref(), Some("/x"));
    // Nothing matches: steering decides, nothing applied.
    let w = set.evaluate(&line("GET", "/", &[]), none);
    assert!(w.matched.is_empty() && w.decided.is_none());
    assert_eq!(w.action(), &Action::Steering);
    assert_eq!(w.effects(None), None);
}

#[test]
fn continue_rules_add_their_header_actions_to_the_deciding_rules() {
    let c = example();
    let set = RuleSet::new(&c);
    let w = set.evaluate(&line("GET", "/api/x?debug=1", &[]), Client::default());
    assert_eq!(names(&w), ["debug", "api"]);
    assert_eq!(decided(&w), Some("api"));
    assert_eq!(
        w.response_headers,
        HeaderOps {
            set: vec![
                ("x-debug".into(), "on".into()),
                ("x-served-by".into(), "api".into())
            ],
            remove: vec!["server".into()],
        }
    );
    assert_eq!(
        w.request_headers,
        HeaderOps {
            set: vec![("x-from-rule".into(), "api".into())],
            remove: vec!["x-internal-token".into()],
        }
    );
    // Only a continue rule matched: its headers apply and steering decides.
    let w = set.evaluate(&line("GET", "/?debug=1", &[]), Client::default());
    assert_eq!((names(&w), decided(&w)), (vec!["debug"], None));
    let effects = w.effects(None).unwrap();
    assert_eq!(effects.matched, ["debug"]);
    assert_eq!(effects.decided_by, None);
    // For one header, the later action wins, whichever it is.
    let c = cfg(json!([
        {"name": "a", "then": {"request_headers": {"set": {"x-a": "1", "x-b": "1"}}, "continue": true}},
        {"name": "b", "then": {"request_headers": {"remove": ["X-A"], "set": {"x-c": "2"}}, "continue": true}},
        {"name": "c", "then": {"request_headers": {"set": {"x-a": "3", "x-c": "3"}}}}
    ]));
    let set = RuleSet::new(&c);
    let w = set.evaluate(&line("GET", "/", &[]), Client::default());
    assert_eq!(names(&w), ["a", "b", "c"]);
    assert_eq!(
        w.request_headers,
        HeaderOps {
            set: vec![
                ("x-b".into(), "1".into()),
                ("x-c".into(), "3".into()),
                ("x-a".into(), "3".into())
            ],
            remove: vec![],
        }
    );
}

#[test]
fn not_holds_when_its_conditions_do_not_all_hold() {
    let c = example();
    let set = RuleSet::new(&c);
    assert_eq!(
        decided(&set.evaluate(&line("DELETE", "/api/x", &[]), Client::default())),
        None,
        "DELETE is excluded from the api rule"
    );
    let office = |ip: &str| Client {
        ip: ip.parse().ok(),
        ..Client::default()
    };
    let inside = set.evaluate(&line("GET", "/internal/a", &[]), office("10.1.2.3"));
    assert_eq!(decided(&inside), None);
    let outside = set.evaluate(&line("GET", "/internal/a", &[]), office("192.0.2.1"));
    assert_eq!(decided(&outside), Some("office-only"));
    let unknown = set.evaluate(&line("GET", "/internal/a", &[]), Client::default());
    assert_eq!(
        decided(&unknown),
        Some("office-only"),
        "no address is not in the office"
    );
    // A not of two conditions: the rule is excluded only when both hold.
    let c = cfg(
        json!([{"name": "n", "when": {"not": {"methods": ["POST"], "path_prefix": "/up"}}, "then": {}}]),
    );
    let set = RuleSet::new(&c);
    let d = |m: &str, p: &str| decided(&set.evaluate(&line(m, p, &[]), Client::default()));
    assert_eq!(d("POST", "/up/1"), None);
    assert_eq!(d("POST", "/down"), Some("n"));
    assert_eq!(d("GET", "/up/1"), Some("n"));
}

/// Does the one-rule set with `when` match?
fn matches(when: Value, l: &RequestLine, client: Client<'_>) -> bool {
    let c = cfg(json!([{"name": "r", "when": when, "then": {}}]));
    RuleSet::new(&c).evaluate(l, client).decided.is_some()
}

#[test]
fn every_condition_matches_as_documented() {
    let any = Client::default();
    let get = |t: &str| line("GET", t, &[]);
    // Paths: exact, prefix, regex (unanchored unless anchored), as sent (percent-encoded).
    assert!(matches(json!({"path": "/a"}), &get("/a?x=1"), any));
    assert!(!matches(json!({"path": "/a"}), &get("/a/"), any));
    assert!(matches(json!({"path_prefix": "/a/"}), &get("/a/b"), any));
    assert!(!matches(json!({"path_prefix": "/a/"}), &get("/a"), any));
    assert!(matches(json!({"path": "/a%20b"}), &get("/a%20b"), any));
    assert!(matches(
        json!({"path_regex": "v[0-9]+"}),
        &get("/api/v2/x"),
        any
    ));
    assert!(!matches(
        json!({"path_regex": "^/v[0-9]+$"}),
        &get("/api/v2"),
        any
    ));
    assert!(matches(
        json!({"path_regex": "^/v[0-9]+$"}),
        &get("/v22"),
        any
    ));
    // Methods.
    assert!(matches(
        json!({"methods": ["GET", "HEAD"]}),
        &line("HEAD", "/", &[]),
        any
    ));
    assert!(!matches(
        json!({"methods": ["GET"]}),
        &line("POST", "/", &[]),
        any
    ));
    // Headers: exact value, "*" for present; names case-insensitive both ways.
    let h = line("GET", "/", &[("X-Canary", "1")]);
    assert!(matches(json!({"headers": {"x-canary": "1"}}), &h, any));
    assert!(matches(json!({"headers": {"X-CANARY": "*"}}), &h, any));
    assert!(!matches(json!({"headers": {"x-canary": "2"}}), &h, any));
    assert!(!matches(json!({"headers": {"x-other": "*"}}), &h, any));
    let absent = RequestLine {
        headers: vec![("x-canary".into(), None)],
        ..get("/")
    };
    assert!(!matches(
        json!({"headers": {"x-canary": "*"}}),
        &absent,
        any
    ));
    // Query: decoded names and values, any of repeated parameters, "*" for present.
    assert!(matches(
        json!({"query": {"q": "a b"}}),
        &get("/?q=a+b"),
        any
    ));
    assert!(matches(
        json!({"query": {"q": "a b"}}),
        &get("/?q=a%20b"),
        any
    ));
    assert!(matches(
        json!({"query": {"a&b": "="}}),
        &get("/?a%26b=%3D"),
        any
    ));
    assert!(matches(
        json!({"query": {"q": "2"}}),
        &get("/?q=1&q=2"),
        any
    ));
    assert!(matches(
        json!({"query": {"flag": "*"}}),
        &get("/?flag"),
        any
    ));
    assert!(!matches(
        json!({"query": {"flag": "*"}}),
        &get("/?flags=1"),
        any
    ));
    assert!(!matches(json!({"query": {"q": "1"}}), &get("/"), any));
    // Countries: the country or the continent, any case.
    let from = |country: Option<&'static str>, continent: Option<&'static str>| Client {
        country,
        continent,
        ..Client::default()
    };
    assert!(matches(
        json!({"countries": ["DE"]}),
        &get("/"),
        from(Some("de"), Some("EU"))
    ));
    assert!(matches(
        json!({"countries": ["eu"]}),
        &get("/"),
        from(Some("FR"), Some("EU"))
    ));
    assert!(!matches(
        json!({"countries": ["EU"]}),
        &get("/"),
        from(Some("US"), Some("NA"))
    ));
    assert!(!matches(json!({"countries": ["EU"]}), &get("/"), any));
    // Client addresses: v4, v6, a v4-mapped v6 client against a v4 network.
    let at = |ip: &str| Client {
        ip: ip.parse().ok(),
        ..Client::default()
    };
    let nets = json!({"client_ips": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]});
    assert!(matches(nets.clone(), &get("/"), at("10.9.8.7")));
    assert!(matches(nets.clone(), &get("/"), at("2001:db8::1")));
    assert!(matches(nets.clone(), &get("/"), at("::ffff:10.0.0.1")));
    assert!(matches(nets.clone(), &get("/"), at("192.0.2.7")));
    assert!(!matches(nets.clone(), &get("/"), at("192.0.2.8")));
    assert!(!matches(nets, &get("/"), any));
    // No conditions: always.
    assert!(matches(json!({}), &get("/"), any));
    // All conditions must hold.
    let both = json!({"path_prefix": "/a", "methods": ["POST"]});
    assert!(!matches(both.clone(), &get("/a"), any));
    assert!(matches(both, &line("POST", "/a", &[]), any));
}

#[test]
fn rewrites_strip_at_a_segment_boundary_add_and_replace() {
    let rw =
        |v: Value| serde_json::from_value::<crate::policy::control::config::Rewrite>(v).unwrap();
    let strip = rw(json!({"strip_prefix": "/api"}));
    assert_eq!(rewrite("/api/x", &strip), "/x");
    assert_eq!(rewrite("/api", &strip), "/");
    assert_eq!(
        rewrite("/apix", &strip),
        "/apix",
        "not at a segment boundary"
    );
    assert_eq!(rewrite("/other", &strip), "/other");
    assert_eq!(
        rewrite("/api/x", &rw(json!({"strip_prefix": "/api/"}))),
        "/x"
    );
    let both = rw(json!({"strip_prefix": "/api", "add_prefix": "/v2/"}));
    assert_eq!(rewrite("/api/users", &both), "/v2/users");
    assert_eq!(rewrite("/api", &both), "/v2/");
    assert_eq!(
        rewrite("/x", &rw(json!({"replace_path": "/fixed"}))),
        "/fixed"
    );
}

#[test]
fn answers_carry_the_status_body_and_location() {
    let c = example();
    let set = RuleSet::new(&c);
    let l = line("TRACE", "/", &[]);
    let a = set.evaluate(&l, Client::default()).answer(&l).unwrap();
    assert_eq!(
        a,
        RuleAnswer {
            log: Default::default(),
            rule: "no-trace".into(),
            matched: vec!["no-trace".into()],
            status: 405,
            location: None,
            body: "not here".into(),
            content_type: Some("text/plain; charset=utf-8".into()),
            response_headers: HeaderOps::default(),
        }
    );
    let l = line("GET", "/old-docs/a/b?x=1&debug=1", &[]);
    let a = set.evaluate(&l, Client::default()).answer(&l).unwrap();
    assert_eq!((a.rule.as_str(), a.status), ("old-docs", 308));
    assert_eq!(
        a.location.as_deref(),
        Some("https://docs.example.com/old-docs/a/b?x=1&debug=1")
    );
    assert_eq!(
        location("https://x.test/", true, &line("GET", "/a", &[])),
        "https://x.test/a"
    );
    assert_eq!(location("/new", false, &line("GET", "/a?b", &[])), "/new");
    // A respond without a body has no content type; routed rules answer nothing.
    let l = line("GET", "/internal/", &[]);
    let a = set.evaluate(&l, Client::default()).answer(&l).unwrap();
    assert_eq!((a.status, a.body.as_str(), a.content_type), (403, "", None));
    let l = line("GET", "/api/", &[]);
    assert_eq!(set.evaluate(&l, Client::default()).answer(&l), None);
    // A continue rule's response headers apply to the answer too.
    let l = line("GET", "/internal/?debug=1", &[]);
    let a = set.evaluate(&l, Client::default()).answer(&l).unwrap();
    assert_eq!(a.matched, ["debug", "office-only"]);
    assert_eq!(
        a.response_headers.set,
        [("x-debug".to_string(), "on".to_string())]
    );
}

#[test]
fn a_line_is_read_as_the_needs_say_only_when_it_holds_exactly_what_they_name() {
    let needs = RuleNeeds {
        method: true,
        path: true,
        query: true,
        headers: vec!["x-a".into(), "x-b".into()],
    };
    let line = |method: &str, query: &str, headers: &[&str]| RequestLine {
        method: method.into(),
        path: "/p".into(),
        query: query.into(),
        headers: headers.iter().map(|h| (h.to_string(), None)).collect(),
    };
    assert!(needs.read_as(Some(&line("GET", "a=1", &["x-a", "x-b"]))));
    // The method or a header missing, a header too many, or a query that may not have been read.
    assert!(!needs.read_as(Some(&line("", "a=1", &["x-a", "x-b"]))));
    assert!(!needs.read_as(Some(&line("GET", "a=1", &["x-a"]))));
    assert!(!needs.read_as(Some(&line("GET", "a=1", &["x-a", "x-b", "x-c"]))));
    assert!(!needs.read_as(Some(&line("GET", "", &["x-a", "x-b"]))));
    assert!(!needs.read_as(None));
    // No needs: only no line at all.
    assert!(RuleNeeds::default().read_as(None));
    assert!(!RuleNeeds::default().read_as(Some(&line("", "", &[]))));
    let path_only = RuleNeeds {
        path: true,
        ..RuleNeeds::default()
    };
    assert!(path_only.read_as(Some(&line("", "", &[]))));
    assert!(!path_only.read_as(Some(&line("", "q=1", &[]))));
}

#[test]
fn needs_name_only_what_the_rules_read() {
    let c = example();
    let needs = Needs::of(&c);
    assert_eq!(
        *needs.rules,
        RuleNeeds {
            method: true,
            path: true,
            query: true,
            headers: vec!["x-canary".into()],
        }
    );
    assert!(!needs.geo);
    assert_eq!(RuleSet::new(&c).needs(), &*needs.rules);
    // Headers are lower-cased and listed once; a nested not counts; countries read geography.
    let c = cfg(json!([
        {"name": "a", "when": {"headers": {"X-B": "*"}, "not": {"headers": {"x-a": "1"}, "countries": ["EU"]}}, "then": {}},
        {"name": "b", "when": {"headers": {"x-b": "2"}}, "then": {}}
    ]));
    let needs = Needs::of(&c);
    assert_eq!(
        *needs.rules,
        RuleNeeds {
            headers: vec!["x-a".into(), "x-b".into()],
            ..RuleNeeds::default()
        }
    );
    assert!(
        needs.geo,
        "a countries condition reads the client's geography"
    );
    // A rewrite of the path reads it; a redirect keeping the path reads path and query.
    let c = cfg(json!([{"name": "a", "then": {"rewrite": {"add_prefix": "/v1"}}}]));
    assert!(Needs::of(&c).rules.path);
    let c = cfg(json!([{"name": "a", "then": {"rewrite": {"replace_path": "/v1"}}}]));
    assert!(Needs::of(&c).rules.is_empty());
    let c = cfg(
        json!([{"name": "a", "then": {"redirect": {"location": "/n", "preserve_path": true}}}]),
    );
    let n = Needs::of(&c).rules;
    assert!(n.path && n.query);
    // Covered: the line holds each header named (read, present or not) and the method and path.
    let n = RuleNeeds {
        method: true,
        path: true,
        query: true,
        headers: vec!["x-a".into()],
    };
    assert!(!n.covered_by(None));
    assert!(!n.covered_by(Some(&line("GET", "/", &[]))));
    let read = RequestLine {
        headers: vec![("x-a".into(), None)],
        ..line("GET", "/", &[])
    };
    assert!(n.covered_by(Some(&read)));
    assert!(RuleNeeds::default().covered_by(None));
}

/// The share of 10 000 client addresses a 95/5 split sends to its second pool.
#[test]
fn a_split_shares_clients_by_weight_and_keeps_each_one_in_its_pool() {
    let split = [("web", 95), ("canary", 5)];
    let n = 10_000;
    let canary = (0..n)
        .filter(|i| {
            let key = format!("198.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
            split_by_key(&split, &key) == Some(1)
        })
        .count();
    let share = canary as f64 / n as f64;
    assert!((share - 0.05).abs() <= 0.015, "canary share {share}");
    // The same client gets the same pool on every call; a weight of 0 takes no one.
    for i in 0..100 {
        let key = format!("2001:db8::{i:x}");
        let first = split_by_key(&split, &key);
        assert!((0..5).all(|_| split_by_key(&split, &key) == first));
        assert_eq!(split_by_key(&[("web", 0), ("canary", 3)], &key), Some(1));
    }
    // Without a key, a weighted draw.
    let mut rng = SplitMix64(7);
    let drawn = (0..n)
        .filter(|_| split_at_random(&split, &mut rng) == Some(1))
        .count();
    assert!((drawn as f64 / n as f64 - 0.05).abs() <= 0.015);
    assert_eq!(split_at_random(&[("a", 0), ("b", 1)], &mut rng), Some(1));
}

#[test]
fn the_split_key_is_the_affinity_header_under_header_affinity_else_the_address() {
    let mut c = example();
    assert_eq!(
        split_key(&c, Some("::ffff:10.0.0.1"), Some("u1")).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(split_key(&c, None, Some("u1")), None);
    c.load_balancer.session_affinity =
        serde_json::from_value(json!({"type": "header", "header_name": "x-user"})).unwrap();
    assert_eq!(
        split_key(&c, Some("10.0.0.1"), Some("u1")).as_deref(),
        Some("u1")
    );
    assert_eq!(
        split_key(&c, Some("10.0.0.1"), None).as_deref(),
        Some("10.0.0.1")
    );
}

#[test]
fn explain_walks_a_sample_like_a_request() {
    let c = example();
    let sample = |v: Value| serde_json::from_value::<Sample>(v).unwrap();
    let e = explain(
        &c,
        &sample(json!({"path": "/api/users?debug=1", "headers": {"X-Internal-Token": "t"}})),
    )
    .unwrap();
    assert_eq!(e.matched, ["debug", "api"]);
    assert_eq!(e.decided_by.as_deref(), Some("api"));
    assert_eq!(e.action, ExplainedAction::Pool { pool: "api".into() });
    assert_eq!(e.path, "/users?debug=1");
    assert_eq!(e.request_headers.remove, ["x-internal-token"]);
    let e = explain(&c, &sample(json!({"method": "trace", "path": "/"}))).unwrap();
    assert_eq!(
        e.action,
        ExplainedAction::Respond {
            status: 405,
            body: "not here".into(),
            content_type: Some("text/plain; charset=utf-8".into())
        }
    );
    assert_eq!(e.path, "", "an answered request reaches no backend");
    let e = explain(&c, &sample(json!({"path": "/old-docs/x?y=1"}))).unwrap();
    assert_eq!(
        e.action,
        ExplainedAction::Redirect {
            status: 308,
            location: "https://docs.example.com/old-docs/x?y=1".into()
        }
    );
    // A split names the pool this client gets, the same as in traffic.
    let e = explain(
        &c,
        &sample(json!({"path": "/shop/", "client_ip": "192.0.2.1"})),
    )
    .unwrap();
    let ExplainedAction::Split { split, chosen } = &e.action else {
        panic!("{e:?}")
    };
    assert_eq!(
        split,
        &[
            SplitShare {
                pool: "web".into(),
                weight: 95
            },
            SplitShare {
                pool: "canary".into(),
                weight: 5
            }
        ]
    );
    let want = ["web", "canary"][split_by_key(&[("web", 95), ("canary", 5)], "192.0.2.1").unwrap()];
    assert_eq!(chosen, want);
    // Nothing matches: steering.
    let e = explain(&c, &sample(json!({"path": "/"}))).unwrap();
    assert_eq!(
        (e.action, e.path.as_str()),
        (ExplainedAction::Steering, "/")
    );
    // Country and continent as the edge reports them.
    let geo = cfg(json!([{"name": "eu", "when": {"countries": ["EU"]}, "then": {"pool": "web"}}]));
    let e = explain(
        &geo,
        &sample(json!({"path": "/", "country": "DE", "continent": "EU"})),
    )
    .unwrap();
    assert_eq!(e.decided_by.as_deref(), Some("eu"));
    // An unusable sample names its field.
    for (bad, field) in [
        (json!({"path": "api"}), "path"),
        (json!({"path": "/a b"}), "path"),
        (json!({"path": "/", "method": "G T"}), "method"),
        (json!({"path": "/", "country": "DEU"}), "country"),
        (json!({"path": "/", "client_ip": "nope"}), "client_ip"),
    ] {
        let err = explain(&c, &sample(bad)).unwrap_err();
        assert!(err.starts_with(&format!("{field}: ")), "{err}");
    }
}

proptest! {
    /// Order semantics against a model: rules `r0..rN` each match when their header is present;
    /// a continue rule sets `x-last` to its index. The walk matches the present rules in order up
    /// to the first without continue, which decides, and the last set wins.
    #[test]
    fn the_walk_follows_the_order_model(
        rules in prop::collection::vec(any::<bool>(), 1..12),
        present in prop::collection::vec(any::<bool>(), 12),
    ) {
        let list: Vec<Value> = rules.iter().enumerate().map(|(i, &cont)| json!({
            "name": format!("r{i}"),
            "when": {"headers": {format!("x-r{i}"): "*"}},
            "then": {"response_headers": {"set": {"x-last": i.to_string()}}, "continue": cont},
        })).collect();
        let c = cfg(json!(list));
        let set = RuleSet::new(&c);
        let headers: Vec<(String, Option<String>)> = (0..rules.len())
            .map(|i| (format!("x-r{i}"), present[i].then(|| "1".to_string())))
            .collect();
        let l = RequestLine { method: "GET".into(), path: "/".into(), query: String::new(), headers };
        let w = set.evaluate(&l, Client::default());
        let mut matched = Vec::new();
        let mut decided = None;
        for (i, &cont) in rules.iter().enumerate() {
            if present[i] {
                matched.push(format!("r{i}"));
                if !cont {
                    decided = Some(format!("r{i}"));
                    break;
                }
            }
        }
        prop_assert_eq!(w.matched.iter().map(|s| s.to_string()).collect::<Vec<_>>(), matched.clone());
        prop_assert_eq!(w.decided.map(|(n, _)| n.to_string()), decided);
        let last = matched.last().map(|n| (String::from("x-last"), n[1..].to_string()));
        prop_assert_eq!(w.response_headers.set.first().cloned(), last);
    }

    /// A client's split choice never changes between calls, only pools with a weight take
    /// clients, and the choice does not depend on the order the pools are listed in.
    #[test]
    fn a_clients_split_choice_is_stable(
        weights in prop::collection::vec(0u32..=1000, 1..5),
        key in "[0-9a-f:.]{1,39}",
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let names: Vec<String> = (0..weights.len()).map(|i| format!("p{i}")).collect();
        let split: Vec<(&str, u32)> = names.iter().map(String::as_str).zip(weights.iter().copied()).collect();
        let k = split_by_key(&split, &key).unwrap();
        prop_assert!(weights[k] > 0);
        prop_assert_eq!(split_by_key(&split, &key), Some(k));
        let reversed: Vec<(&str, u32)> = split.iter().rev().copied().collect();
        let r = split_by_key(&reversed, &key).unwrap();
        prop_assert_eq!(reversed[r].0, split[k].0);
    }

    /// Evaluation never panics, whatever the request line holds.
    #[test]
    fn any_request_line_is_walked(
        method in "[A-Za-z]{0,8}",
        path in "\\PC{0,40}",
        query in "\\PC{0,40}",
        header in prop::option::of("\\PC{0,20}"),
    ) {
        let c = example();
        let l = RequestLine { method, path, query, headers: vec![("x-canary".into(), header)] };
        let set = RuleSet::new(&c);
        let w = set.evaluate(&l, Client::default());
        let _ = w.answer(&l);
        let _ = w.effects(None);
    }
}
