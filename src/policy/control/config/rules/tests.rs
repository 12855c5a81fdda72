//! The rules block's tests: the issue's example parses and round-trips, and each kind of mistake is refused at its path with a reason.

use super::*;
use serde_json::json;

/// The example of the issue and the configuration page.
pub fn example() -> Value {
    json!({
        "hostname": "shop.example.com",
        "pools": [
            {"name": "web", "backends": ["http://10.0.0.1"]},
            {"name": "api", "backends": ["http://10.0.0.2"]},
            {"name": "canary", "backends": ["http://10.0.0.3"]}
        ],
        "rules": [
            {"name": "no-trace", "when": {"methods": ["TRACE"]}, "then": {"respond": {"status": 405, "body": "not here"}}},
            {"name": "old-docs", "when": {"path_prefix": "/old-docs/"},
             "then": {"redirect": {"location": "https://docs.example.com", "status": 308, "preserve_path": true}}},
            {"name": "debug", "when": {"query": {"debug": "1"}}, "then": {"response_headers": {"set": {"x-debug": "on"}}, "continue": true}},
            {"name": "canary", "when": {"headers": {"x-canary": "1"}}, "then": {"pool": "canary"}},
            {"name": "api", "when": {"path_prefix": "/api/", "not": {"methods": ["DELETE"]}},
             "then": {"pool": "api", "rewrite": {"strip_prefix": "/api"},
                      "request_headers": {"set": {"x-from-rule": "api"}, "remove": ["x-internal-token"]},
                      "response_headers": {"set": {"x-served-by": "api"}, "remove": ["server"]}}},
            {"name": "shop-canary", "when": {"path_prefix": "/shop/"}, "then": {"split": [{"pool": "web", "weight": 95}, {"pool": "canary", "weight": 5}]}},
            {"name": "office-only", "when": {"path_prefix": "/internal/", "not": {"client_ips": ["10.0.0.0/8"]}}, "then": {"respond": {"status": 403}}}
        ]
    })
}

fn parse(v: &Value) -> Result<ServiceConfig, Vec<ConfigError>> {
    parse_service(v, "", &Deployment::default())
}

/// The example with `rules` replaced.
fn with_rules(rules: Value) -> Value {
    let mut v = example();
    v["rules"] = rules;
    v
}

#[track_caller]
fn refused(rules: Value, path: &str, needle: &str) {
    let errs = parse(&with_rules(rules)).expect_err("expected errors");
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.message.contains(needle)),
        "no error at {path:?} containing {needle:?} in {errs:#?}"
    );
}

#[test]
fn the_example_parses_and_round_trips() {
    let cfg = parse(&example()).unwrap();
    assert_eq!(cfg.rules.len(), 7);
    let names: Vec<&str> = cfg.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "no-trace",
            "old-docs",
            "debug",
            "canary",
            "api",
            "shop-canary",
            "office-only"
        ]
    );
    assert_eq!(cfg.rules[1].then.redirect.as_ref().unwrap().status, 308);
    assert!(cfg.rules[2].then.r#continue);
    assert_eq!(parse(&cfg.to_value()), Ok(cfg.clone()));
    // Defaults fill in: a redirect without a status is a 302; methods are upper-cased.
    let cfg = parse(&with_rules(json!([
        {"name": "r", "when": {"methods": ["get"]}, "then": {"redirect": {"location": "/new"}}}
    ])))
    .unwrap();
    assert_eq!(cfg.rules[0].then.redirect.as_ref().unwrap().status, 302);
    assert_eq!(cfg.rules[0].when.methods[0].as_str(), "GET");
    // No rules: the key is left out of the canonical form.
    let mut plain = example();
    plain.as_object_mut().unwrap().remove("rules");
    assert!(parse(&plain).unwrap().to_value().get("rules").is_none());
}

#[test]
fn an_unknown_key_is_refused_at_its_path() {
    refused(
        json!([{"name": "a", "when": {"metods": ["GET"]}, "then": {}}]),
        "rules[0].when.metods",
        "unknown key \"metods\"; allowed: path, path_prefix",
    );
    refused(
        json!([{"name": "a", "then": {"pool": "api", "colour": 1}}]),
        "rules[0].then.colour",
        "unknown key",
    );
    refused(
        json!([{"name": "a", "then": {"redirect": {"location": "/x", "keep": true}}}]),
        "rules[0].then.redirect.keep",
        "unknown key",
    );
    refused(json!([{"name": "a"}]), "rules[0].then", "required");
}

#[test]
fn an_unknown_pool_is_refused_with_the_pools_there_are() {
    let rules = json!([
        {"name": "a", "then": {}}, {"name": "b", "then": {}}, {"name": "c", "then": {}},
        {"name": "d", "then": {"pool": "nope"}}
    ]);
    refused(
        rules,
        "rules[3].then.pool",
        "unknown pool \"nope\"; pools: web, api, canary",
    );
    refused(
        json!([{"name": "s", "then": {"split": [{"pool": "web", "weight": 1}, {"pool": "gone", "weight": 1}]}}]),
        "rules[0].then.split[1].pool",
        "unknown pool \"gone\"",
    );
    let mut v = json!({"hostname": "a.test", "backends": ["http://a"],
        "rules": [{"name": "a", "then": {"pool": "x"}}]});
    let errs = parse(&v).unwrap_err();
    assert!(
        errs[0].message.contains("the service has no pools"),
        "{errs:?}"
    );
    v["rules"][0]["then"] = json!({});
    assert!(parse(&v).is_ok());
}

#[test]
fn names_are_checked_and_unique() {
    refused(
        json!([{"name": "a b", "then": {}}]),
        "rules[0].name",
        "not a valid rule name (1-64 of A-Z a-z 0-9 _ . -)",
    );
    refused(
        json!([{"name": "x".repeat(65), "then": {}}]),
        "rules[0].name",
        "not a valid rule name",
    );
    refused(
        json!([{"name": "", "then": {}}]),
        "rules[0].name",
        "not a valid rule name",
    );
    refused(
        json!([{"name": "a", "then": {}}, {"name": "b", "then": {}}, {"name": "a", "then": {}}]),
        "rules[2].name",
        "duplicate rule name \"a\" (same as rules[0].name)",
    );
}

#[test]
fn at_most_a_hundred_rules() {
    let many: Vec<Value> = (0..=MAX_RULES)
        .map(|i| json!({"name": format!("r{i}"), "then": {}}))
        .collect();
    refused(json!(many), "rules", "101 rules; at most 100");
    assert!(parse(&with_rules(json!(many[..MAX_RULES]))).is_ok());
}

#[test]
fn at_most_one_routing_action() {
    refused(
        json!([{"name": "a", "then": {"pool": "api", "redirect": {"location": "/x"}}}]),
        "rules[0].then",
        "holds pool and redirect: a rule takes at most one of pool, split, redirect, respond",
    );
    refused(
        json!([{"name": "a", "then": {"respond": {"status": 200}, "split": [{"pool": "web", "weight": 1}]}}]),
        "rules[0].then",
        "holds split and respond",
    );
}

#[test]
fn continue_goes_only_with_header_actions() {
    refused(
        json!([{"name": "a", "then": {"pool": "api", "continue": true}}]),
        "rules[0].then.continue",
        "nothing but request_headers and response_headers may continue; this one has pool",
    );
    refused(
        json!([{"name": "a", "then": {"rewrite": {"strip_prefix": "/x"}, "continue": true}}]),
        "rules[0].then.continue",
        "this one has rewrite",
    );
    let ok = json!([{"name": "a", "then": {"request_headers": {"set": {"x-a": "1"}}, "continue": true}},
                    {"name": "b", "then": {"continue": true}}]);
    assert!(parse(&with_rules(ok)).is_ok());
}

#[test]
fn untouchable_headers_are_refused_with_the_reason() {
    for (name, why) in [
        ("Host", "set from the backend's URL"),
        ("connection", "hop-by-hop"),
        ("Transfer-Encoding", "hop-by-hop"),
        ("X-FlowBalance-Hop", "loop guard"),
        ("content-length", "frames the body"),
    ] {
        refused(
            json!([{"name": "a", "then": {"request_headers": {"set": {name: "x"}}}}]),
            &format!("rules[0].then.request_headers.set.{name}"),
            why,
        );
        refused(
            json!([{"name": "a", "then": {"response_headers": {"remove": ["x-ok", name]}}}]),
            "rules[0].then.response_headers.remove[1]",
            why,
        );
    }
    refused(
        json!([{"name": "a", "then": {"request_headers": {"set": {"X-A": "1"}, "remove": ["x-a"]}}}]),
        "rules[0].then.request_headers.remove[0]",
        "\"x-a\" is named twice (same as rules[0].then.request_headers.set.X-A",
    );
    refused(
        json!([{"name": "a", "then": {"request_headers": {"set": {"x-a": "line\nbreak"}}}}]),
        "rules[0].then.request_headers.set.x-a",
        "not a valid header value",
    );
}

#[test]
fn regexes_are_bounded() {
    refused(
        json!([{"name": "a", "when": {"path_regex": "(a{100}){100}"}, "then": {}}]),
        "rules[0].when.path_regex",
        "too large once compiled",
    );
    refused(
        json!([{"name": "a", "when": {"path_regex": "^/(unclosed"}, "then": {}}]),
        "rules[0].when.path_regex",
        "not a valid regular expression",
    );
    refused(
        json!([{"name": "a", "when": {"path_regex": "a".repeat(MAX_REGEX_LEN + 1)}, "then": {}}]),
        "rules[0].when.path_regex",
        "at most 512 bytes",
    );
    let ok = json!([{"name": "a", "when": {"path_regex": "^/api/v[0-9]+/users/[a-z0-9-]{1,64}$"}, "then": {}}]);
    let cfg = parse(&with_rules(ok)).unwrap();
    let re = cfg.rules[0].when.path_regex.as_ref().unwrap();
    assert!(re.is_match("/api/v2/users/ann-1"));
    assert!(!re.is_match("/api/v2/users/"));
}

#[test]
fn answers_are_bounded() {
    refused(
        json!([{"name": "a", "then": {"respond": {"status": 200, "body": "x".repeat(MAX_RESPOND_BODY + 1)}}}]),
        "rules[0].then.respond.body",
        "4097 bytes; a rule's response body may hold at most 4096 bytes",
    );
    refused(
        json!([{"name": "a", "then": {"respond": {"status": 101}}}]),
        "rules[0].then.respond.status",
        "expected an integer 200..=599",
    );
    refused(
        json!([{"name": "a", "then": {"respond": {"status": 204, "body": "x"}}}]),
        "rules[0].then.respond.body",
        "a 204 response has no body",
    );
    refused(
        json!([{"name": "a", "then": {"redirect": {"location": "/x", "status": 300}}}]),
        "rules[0].then.redirect.status",
        "301, 302, 303, 307 or 308",
    );
    for bad in ["ftp://x", "//evil.example", "relative", "/a b"] {
        refused(
            json!([{"name": "a", "then": {"redirect": {"location": bad}}}]),
            "rules[0].then.redirect.location",
            "not a redirect location",
        );
    }
    refused(
        json!([{"name": "a", "then": {"redirect": {"location": "https://x.test/?a=1", "preserve_path": true}}}]),
        "rules[0].then.redirect.location",
        "cannot be appended (preserve_path)",
    );
}

#[test]
fn rewrites_and_request_headers_need_a_backend() {
    refused(
        json!([{"name": "a", "then": {"respond": {"status": 403}, "rewrite": {"strip_prefix": "/a"}}}]),
        "rules[0].then.rewrite",
        "answers the request itself",
    );
    refused(
        json!([{"name": "a", "then": {"redirect": {"location": "/b"}, "request_headers": {"remove": ["x-a"]}}}]),
        "rules[0].then.request_headers",
        "answers the request itself",
    );
    refused(
        json!([{"name": "a", "then": {"rewrite": {}}}]),
        "rules[0].then.rewrite",
        "needs strip_prefix, add_prefix or replace_path",
    );
    refused(
        json!([{"name": "a", "then": {"rewrite": {"replace_path": "/x", "add_prefix": "/y"}}}]),
        "rules[0].then.rewrite.replace_path",
        "cannot go with strip_prefix or add_prefix",
    );
    refused(
        json!([{"name": "a", "then": {"rewrite": {"strip_prefix": "api"}}}]),
        "rules[0].then.rewrite.strip_prefix",
        "start with '/'",
    );
}

#[test]
fn splits_are_checked() {
    refused(
        json!([{"name": "a", "then": {"split": []}}]),
        "rules[0].then.split",
        "at least one pool",
    );
    refused(
        json!([{"name": "a", "then": {"split": [{"pool": "web", "weight": 0}]}}]),
        "rules[0].then.split",
        "every weight is 0",
    );
    refused(
        json!([{"name": "a", "then": {"split": [{"pool": "web", "weight": 1}, {"pool": "web", "weight": 2}]}}]),
        "rules[0].then.split[1].pool",
        "in this split twice (same as rules[0].then.split[0].pool)",
    );
    refused(
        json!([{"name": "a", "then": {"split": [{"pool": "web", "weight": 1001}]}}]),
        "rules[0].then.split[0].weight",
        "0..=1000",
    );
}

#[test]
fn conditions_are_checked() {
    refused(
        json!([{"name": "a", "when": {"path_prefix": "/x", "not": {}}, "then": {}}]),
        "rules[0].when.not",
        "holds no condition",
    );
    refused(
        json!([{"name": "a", "when": {"not": {"not": {}}}, "then": {}}]),
        "rules[0].when.not.not",
        "holds no condition",
    );
    refused(
        json!([{"name": "a", "when": {"headers": {"X-A": "1", "x-a": "2"}}, "then": {}}]),
        "rules[0].when.headers.x-a",
        "repeats \"X-A\"",
    );
    refused(
        json!([{"name": "a", "when": {"client_ips": ["10.0.0.0/33"]}, "then": {}}]),
        "rules[0].when.client_ips[0]",
        "invalid prefix length",
    );
    refused(
        json!([{"name": "a", "when": {"countries": ["Germany"]}, "then": {}}]),
        "rules[0].when.countries[0]",
        "not a region code",
    );
    refused(
        json!([{"name": "a", "when": {"methods": ["GE T"]}, "then": {}}]),
        "rules[0].when.methods[0]",
        "not an HTTP method",
    );
    refused(
        json!([{"name": "a", "when": {"path": "/a?b"}, "then": {}}]),
        "rules[0].when.path",
        "no spaces, query or fragment",
    );
    refused(
        json!([{"name": "a", "when": {"query": {"": "1"}}, "then": {}}]),
        "rules[0].when.query.",
        "needs a name",
    );
}

#[test]
fn a_bad_rule_does_not_hide_the_next_ones_errors() {
    let errs = parse(&with_rules(json!([
        {"name": "a", "when": {"metods": []}, "then": {}},
        {"name": "b", "then": {"pool": "nope"}}
    ])))
    .unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["rules[0].when.metods", "rules[1].then.pool"]);
}
