//! Tests of the config model: forms, defaults, every error at its path, normalisation, round trips.

use super::*;
use crate::policy::health::monitor::{ExpectedCodes, MonitorType, ProbeMethod};
use proptest::prelude::*;
use serde_json::Value;

fn ctx() -> Deployment {
    Deployment::default()
}

fn parse_default_backends(text: &str) -> Result<Vec<ServiceConfig>, Vec<ConfigError>> {
    super::parse_default_backends(text, &ctx())
}

fn parse_default_backends_partial(text: &str) -> (Vec<ServiceConfig>, Vec<ConfigError>) {
    super::parse_default_backends_partial(text, &ctx())
}

fn parse_service(v: &Value, path: &str) -> Result<ServiceConfig, Vec<ConfigError>> {
    super::parse_service(v, path, &ctx())
}

fn parse_service_for_host(v: &Value, host: &str) -> Result<ServiceConfig, Vec<ConfigError>> {
    super::parse_service_for_host(v, host, &ctx())
}

#[test]
fn one_bad_service_leaves_the_others_valid() {
    let text = r#"{"services": [
        {"hostname": "a.test", "backends": ["http://a"]},
        {"hostname": "b.test", "backends": ["ftp://x"]},
        {"hostname": "c.test", "backends": ["http://c"]},
        {"hostname": "c.test", "backends": ["http://c2"]}
    ]}"#;
    let (ok, errs) = parse_default_backends_partial(text);
    let hosts: Vec<&str> = ok.iter().map(|s| s.hostname.as_str()).collect();
    assert_eq!(hosts, ["a.test"], "b has an error, c is duplicated");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(parse_default_backends(text).is_err());
}

#[test]
fn a_bad_default_block_invalidates_every_service() {
    let text =
        r#"{"retries": "x", "services": [{"hostname": "a.test", "backends": ["http://a"]}]}"#;
    let (ok, errs) = parse_default_backends_partial(text);
    assert!(ok.is_empty());
    assert_eq!(errs[0].path, "retries");
}

fn errs_of(text: &str) -> Vec<ConfigError> {
    parse_default_backends(text).expect_err("expected errors")
}

fn has(errs: &[ConfigError], path: &str, needle: &str) -> bool {
    errs.iter()
        .any(|e| e.path == path && e.message.contains(needle))
}

#[track_caller]
fn assert_err(errs: &[ConfigError], path: &str, needle: &str) {
    assert!(
        has(errs, path, needle),
        "no error at {path:?} containing {needle:?} in {errs:#?}"
    );
}

const FULL: &str = r#"{
  "hostname": "API.Example.com.",
  "backends": ["https://a.example.com", {"url": "https://b.example.com/base", "weight": 3, "state": "draining"}],
  "activeHealthChecks": {"enabled": true, "path": "/health", "interval": 0.5, "timeout": 5, "consecutive_up": 3, "consecutive_down": 2},
  "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 4, "recovery_timeout_ms": 30000, "error_rate_threshold": 25.5, "min_requests": 10, "window_ms": 60000}},
  "connection_error_handling": {"immediate_failover": false, "max_connection_retries": 2, "connection_timeout_ms": 10000},
  "retries": 3,
  "load_balancer": {"session_affinity": {"type": "header", "cookie_name": "lb_session", "header_name": "X-User", "ttl": 600}},
  "pools": [{"name": "eu", "backends": ["https://eu1.example.com"]}, {"name": "us", "backends": ["https://us1.example.com"]}],
  "geo_steering": {"regions": {"de": "eu", "EU": "eu", "NA": "us"}, "fallback_pool": "us"},
  "rate_limit": {"requests": 100, "window": 60},
  "access_control": {"allow": ["10.0.0.0/8", "::1", "2001:db8::/32"], "deny": ["1.2.3.4"]}
}"#;

#[test]
fn single_object_full_form_parses() {
    let s = parse_default_backends(FULL).expect("valid");
    assert_eq!(s.len(), 1);
    let c = &s[0];
    assert_eq!(c.hostname, "api.example.com");
    assert_eq!(c.backends[0].url, "https://a.example.com");
    assert_eq!(c.backends[0].weight, 1);
    assert_eq!(c.backends[1].weight, 3);
    assert_eq!(c.backends[1].state, BackendState::Draining);
    assert_eq!(c.health.interval_ms, 500);
    assert_eq!(c.health.timeout_ms, 5000);
    assert_eq!(c.health.path.as_deref(), Some("/health"));
    assert_eq!(c.breaker().failure_threshold, 4);
    assert_eq!(c.breaker().error_rate_threshold, 25.5);
    assert!(!c.connection.immediate_failover);
    assert_eq!(c.retries, 3);
    let a = c.affinity().expect("affinity");
    assert_eq!(a.kind, AffinityKind::Header);
    assert_eq!(a.header_name.as_deref(), Some("X-User"));
    assert_eq!(a.ttl_s, 600);
    let g = c.geo.as_ref().expect("geo");
    assert_eq!(g.regions.get("DE").map(|p| p.as_str()), Some("eu"));
    assert_eq!(g.fallback_pool, "us");
    assert_eq!(
        c.rate_limit,
        Some(RateLimit {
            requests: 100,
            window_s: 60
        })
    );
    assert_eq!(
        c.access.as_ref().map(|a| a.deny.clone()),
        Some(vec!["1.2.3.4".parse().unwrap()])
    );
    let urls: Vec<&str> = c.all_backends().iter().map(|b| b.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://a.example.com",
            "https://b.example.com/base",
            "https://eu1.example.com",
            "https://us1.example.com"
        ]
    );
}

#[test]
fn minimal_service_gets_defaults() {
    let s = parse_default_backends(r#"{"hostname": "a.com", "backends": ["http://x"]}"#)
        .expect("valid");
    assert_eq!(s[0].health, ActiveHealth::default());
    assert_eq!(*s[0].breaker(), BreakerConfig::default());
    assert_eq!(s[0].connection, ConnectionHandling::default());
    assert_eq!(s[0].retries, DEFAULT_RETRIES);
    assert_eq!(s[0].affinity(), None);
}

#[test]
fn bare_array_form_parses_with_index_paths() {
    let s = parse_default_backends(r#"[{"hostname": "a.com", "backends": ["http://x"]}, {"hostname": "b.com", "backends": ["http://y"]}]"#)
        .expect("valid");
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].hostname, "b.com");
    let e =
        errs_of(r#"[{"hostname": "a.com", "backends": ["http://x"]}, {"backends": ["http://y"]}]"#);
    assert_err(&e, "[1].hostname", "required");
}

#[test]
fn services_form_merges_top_level_defaults() {
    let text = r#"{
      "services": [
        {"hostname": "a.com", "backends": ["http://x"], "activeHealthChecks": {"path": "/own"}},
        {"hostname": "b.com", "backends": ["http://y"], "retries": 0}
      ],
      "activeHealthChecks": {"interval": 10, "path": "/top"},
      "retries": 4,
      "load_balancer": {"session_affinity": {"type": "cookie", "ttl": 60}},
      "rate_limit": {"requests": 5, "window": 1}
    }"#;
    let s = parse_default_backends(text).expect("valid");
    assert_eq!(s[0].health.path.as_deref(), Some("/own"));
    assert_eq!(
        s[0].health.interval_ms, 10_000,
        "top-level interval kept by key merge"
    );
    assert_eq!(s[1].health.path.as_deref(), Some("/top"));
    assert_eq!(s[0].retries, 4);
    assert_eq!(s[1].retries, 0);
    assert_eq!(s[1].affinity().map(|a| a.ttl_s), Some(60));
    assert_eq!(
        s[1].affinity().map(|a| a.cookie_name.as_str()),
        Some(DEFAULT_COOKIE_NAME)
    );
    assert_eq!(
        s[0].rate_limit,
        Some(RateLimit {
            requests: 5,
            window_s: 1
        })
    );
}

#[test]
fn bad_top_level_default_reported_once_at_its_own_path() {
    let e = errs_of(
        r#"{"services": [{"hostname": "a.com", "backends": ["http://x"]}, {"hostname": "b.com", "backends": ["http://y"]}], "retries": 11, "bogus": 1}"#,
    );
    assert_eq!(
        e.iter().filter(|e| e.path.ends_with("retries")).count(),
        1,
        "{e:#?}"
    );
    assert_err(&e, "retries", "0..=10");
    assert_err(
        &e,
        "bogus",
        "unknown key \"bogus\"; allowed: services, activeHealthChecks",
    );
}

#[test]
fn url_rejections() {
    let cases = [
        ("ftp://x", "\"ftp://x\" is not an http(s) URL"),
        (
            "https://u:p@h",
            "\"https://u:p@h\" must not contain userinfo",
        ),
        ("/relative/path", "is not an absolute http(s) URL"),
        ("a.example.com", "is not an absolute http(s) URL"),
        ("https://a.com:0", "invalid port"),
        ("https://a.com:65536", "invalid port"),
        ("https://a.com:8x", "invalid port"),
        ("https://a.com/x?y=1", "must not contain a query"),
        ("https://a.com/x#f", "must not contain a fragment"),
        ("https://a .com", "contains spaces"),
        ("https://", "has no host"),
        ("https://bad_host.com", "invalid host"),
        ("https://-a.com", "invalid host"),
        ("https://[zz::1]/", "invalid IPv6"),
        ("https://a.com/%zz", "percent-escape"),
        ("https://a.com/<x>", "invalid character"),
    ];
    for (url, msg) in cases {
        let err = validate_backend_url(url).expect_err(url);
        assert!(err.contains(msg), "{url}: {err}");
    }
}

#[test]
fn url_normalisation() {
    let ok = [
        ("https://a.com/", "https://a.com"),
        ("http://a/base/", "http://a/base"),
        ("HTTPS://A.Example.COM/Path/", "https://a.example.com/Path"),
        ("https://a.com:443", "https://a.com"),
        ("http://a.com:8080/x", "http://a.com:8080/x"),
        ("http://10.0.0.1:81", "http://10.0.0.1:81"),
        ("http://[2001:DB8::1]:8080/", "http://[2001:db8::1]:8080"),
        ("https://localhost", "https://localhost"),
    ];
    for (input, want) in ok {
        assert_eq!(validate_backend_url(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn hostname_validation() {
    assert_eq!(
        validate_hostname("API.Example.com.").as_deref(),
        Ok("api.example.com")
    );
    assert_eq!(validate_hostname("localhost").as_deref(), Ok("localhost"));
    assert_eq!(validate_hostname("10.1.2.3").as_deref(), Ok("10.1.2.3"));
    assert_eq!(validate_hostname("::1").as_deref(), Ok("[::1]"));
    assert!(validate_hostname("a.com:8080")
        .expect_err("port")
        .contains("must not contain a port"));
    assert!(validate_hostname("[::1]:80")
        .expect_err("port")
        .contains("must not contain a port"));
    for bad in [
        "",
        "a..com",
        "-a.com",
        "a-.com",
        "a_b.com",
        "1.2.3.999",
        "a com",
        &"a".repeat(64),
        &"a.".repeat(130),
    ] {
        assert!(
            validate_hostname(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn service_level_rejections_have_paths() {
    let e = errs_of(
        r#"{"services": [
        {"hostname": "a.com", "backends": ["https://x"]},
        {"hostname": "b.com", "backends": ["ftp://x", {"url": "https://y", "weight": "3"}, "https://Y/", "https://q?x"]},
        {"hostname": "A.com", "backends": []},
        {"hostname": "bad_host", "backends": ["http://z"], "colour": "red"}
    ]}"#,
    );
    assert_err(
        &e,
        "services[1].backends[0]",
        "\"ftp://x\" is not an http(s) URL",
    );
    assert_err(
        &e,
        "services[1].backends[1].weight",
        "expected an integer 1..=1000, found string \"3\"",
    );
    assert_err(&e, "services[1].backends[3]", "must not contain a query");
    assert_err(
        &e,
        "services[2].hostname",
        "duplicate hostname \"a.com\" (same as services[0].hostname)",
    );
    assert_err(
        &e,
        "services[2].backends",
        "at least one backend is required",
    );
    assert_err(&e, "services[3].hostname", "not a valid hostname");
    assert_err(
        &e,
        "services[3].colour",
        "unknown key \"colour\"; allowed: hostname, backends, activeHealthChecks",
    );
    // "https://Y/" normalises to a duplicate of services[1].backends[1] even though that entry's weight failed.
    assert!(
        !has(&e, "services[1].backends[2]", "duplicate"),
        "weight error drops the entry; {e:#?}"
    );
}

#[test]
fn duplicate_backend_names_second_index() {
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["https://x.com", "http://y", "HTTPS://X.com/"]}"#,
    );
    assert_err(
        &e,
        "backends[2]",
        "duplicate backend \"https://x.com\" (same as backends[0])",
    );
    // The same URL in a pool and at top level is fine: different lists.
    let ok = parse_default_backends(r#"{"hostname": "a.com", "backends": ["https://x.com"], "pools": [{"name": "p", "backends": ["https://x.com"]}]}"#)
        .expect("valid");
    assert_eq!(ok[0].all_backends().len(), 1);
}

#[test]
fn wrong_types_name_found_and_allowed() {
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "retries": 1.5,
        "activeHealthChecks": {"consecutive_up": -1, "enabled": "yes", "interval": "60", "timeout": 0, "path": "health"},
        "connection_error_handling": {"max_connection_retries": true, "connection_timeout_ms": 99},
        "passiveHealthChecks": {"circuit_breaker": {"error_rate_threshold": 0, "window_ms": 999}},
        "rate_limit": {"requests": 0}}"#,
    );
    assert_err(
        &e,
        "retries",
        "expected an integer 0..=10, found number 1.5",
    );
    assert_err(&e, "activeHealthChecks.consecutive_up", "found number -1");
    assert_err(
        &e,
        "activeHealthChecks.enabled",
        "string \"yes\", expected a boolean",
    );
    assert_err(&e, "activeHealthChecks.interval", "found string \"60\"");
    assert_err(
        &e,
        "activeHealthChecks.timeout",
        "expected seconds 0.001..=60, found number 0",
    );
    assert_err(&e, "activeHealthChecks.path", "must start with '/'");
    assert_err(
        &e,
        "connection_error_handling.max_connection_retries",
        "found boolean true",
    );
    assert_err(
        &e,
        "connection_error_handling.connection_timeout_ms",
        "100..=300000, found number 99",
    );
    assert_err(
        &e,
        "passiveHealthChecks.circuit_breaker.error_rate_threshold",
        "> 0 and <= 100",
    );
    assert_err(
        &e,
        "passiveHealthChecks.circuit_breaker.window_ms",
        "1000..=3600000",
    );
    assert_err(&e, "rate_limit.requests", ">= 1, found number 0");
    assert!(e.len() >= 11, "all errors collected: {e:#?}");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "rate_limit": {"requests": 3}}"#,
    );
    assert_err(&e, "rate_limit.window", "required");
    // Every missing field of one object is named, not just the first.
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": [{"weight": 2}], "rate_limit": {}, "pools": [{}], "load_balancer": {"session_affinity": {}}}"#,
    );
    for (path, what) in [
        ("rate_limit.requests", "required"),
        ("rate_limit.window", "required"),
        ("backends[0].url", "required"),
        ("pools[0].name", "required"),
        ("pools[0].backends", "required"),
        ("load_balancer.session_affinity.type", "required"),
    ] {
        assert_err(&e, path, what);
    }
    assert_eq!(e.len(), 6, "no errors about stand-ins: {e:#?}");
}

#[test]
fn geo_and_pool_rejections() {
    let e = errs_of(
        r#"{"hostname": "a.com",
        "pools": [{"name": "eu", "backends": ["https://e"]}, {"name": "eu", "backends": []}],
        "geo_steering": {"regions": {"DE": "eu", "NA": "us", "XYZ": "eu"}, "fallback_pool": "asia"}}"#,
    );
    assert_err(
        &e,
        "geo_steering.regions.NA",
        "unknown pool \"us\"; pools: eu",
    );
    assert_err(&e, "geo_steering.fallback_pool", "unknown pool \"asia\"");
    assert_err(&e, "geo_steering.regions.XYZ", "not a region code");
    assert_err(&e, "pools[1].name", "duplicate pool name \"eu\"");
    assert_err(&e, "pools[1].backends", "at least one backend");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "geo_steering": {"fallback_pool": "x"}}"#,
    );
    assert_err(&e, "geo_steering", "requires pools");
}

#[test]
fn pools_only_service_has_empty_backends() {
    let s = parse_default_backends(
        r#"{"hostname": "a.com", "pools": [{"name": "p", "backends": ["http://x/"]}]}"#,
    )
    .expect("valid");
    assert!(s[0].backends.is_empty());
    assert_eq!(s[0].all_backends()[0].url, "http://x");
}

#[test]
fn affinity_and_access_rejections() {
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"],
        "load_balancer": {"session_affinity": {"type": "header", "ttl": 0}, "algo": "rr", "score_weighting": "yes"},
        "access_control": {"allow": ["10.0.0.0/33", "1.2.3", "::1/129", "fe80::1/64", "10.0.0.0/+8"], "deny": [5]}}"#,
    );
    assert_err(
        &e,
        "load_balancer.algo",
        "unknown key \"algo\"; allowed: session_affinity, slow_start, endpoint_steering, steering, fallback_pool, score_weighting",
    );
    assert_err(&e, "load_balancer.score_weighting", "boolean");
    assert_err(
        &e,
        "load_balancer.session_affinity.header_name",
        "required when type is \"header\"",
    );
    assert_err(&e, "load_balancer.session_affinity.ttl", "1..=31536000");
    assert_err(&e, "access_control.allow[0]", "prefix length");
    assert_err(&e, "access_control.allow[1]", "not an IP address");
    assert_err(&e, "access_control.allow[2]", "prefix length");
    assert!(!e.iter().any(|e| e.path == "access_control.allow[3]"));
    assert_err(&e, "access_control.allow[4]", "prefix length");
    assert_err(
        &e,
        "access_control.deny[0]",
        "integer `5`, expected a string",
    );
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "load_balancer": {"session_affinity": {"cookie_name": "a b"}}}"#,
    );
    assert_err(&e, "load_balancer.session_affinity.type", "required");
    assert_err(
        &e,
        "load_balancer.session_affinity.cookie_name",
        "not a valid name (RFC 7230 token)",
    );
}

#[test]
fn malformed_json_and_wrong_top_level() {
    let e = errs_of("{\"hostname\": \"a.com\",\n \"backends\": [}");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "");
    assert!(e[0].message.contains("line 2"), "{}", e[0].message);
    let e = errs_of("42");
    assert_err(&e, "", "found number 42");
    let e = errs_of("[]");
    assert_err(&e, "", "at least one service");
    assert_eq!(e[0].to_string(), "at least one service is required");
    assert_eq!(ConfigError::new("a.b", "bad").to_string(), "a.b: bad");
}

#[test]
fn backends_mut_finds_normalised_url_in_pools() {
    let mut s = parse_default_backends(FULL).expect("valid").remove(0);
    let url = BackendUrl::parse("HTTPS://eu1.example.com/").expect("valid URL");
    for b in s.backends_mut(&url) {
        b.state = BackendState::Disabled;
    }
    assert_eq!(s.pools[0].backends[0].state, BackendState::Disabled);
    let nope = BackendUrl::parse("https://nope.example.com").expect("valid URL");
    assert_eq!(s.backends_mut(&nope).count(), 0);
}

#[test]
fn for_host_with_plain_body() {
    let body = serde_json::json!({"backends": ["https://x"]});
    let s = parse_service_for_host(&body, "API.example.com").expect("valid");
    assert_eq!(s.hostname, "api.example.com");
    let body = serde_json::json!({"hostname": "Api.Example.com.", "backends": ["https://x"]});
    assert!(parse_service_for_host(&body, "api.example.com").is_ok());
    let body = serde_json::json!({"hostname": "other.com", "backends": ["ftp://x"]});
    let e = parse_service_for_host(&body, "api.example.com").expect_err("mismatch");
    assert_err(
        &e,
        "hostname",
        "\"other.com\" does not match the request hostname \"api.example.com\"",
    );
    assert_err(&e, "backends[0]", "not an http(s) URL");
}

#[test]
fn for_host_with_vars_body() {
    let inner = r#"{"services": [{"hostname": "a.com", "backends": ["http://x"]}, {"hostname": "b.com", "backends": ["http://y"]}]}"#;
    let body = serde_json::json!({"vars": {"DEFAULT_BACKENDS": inner, "OTHER": "ignored"}});
    let s = parse_service_for_host(&body, "b.com").expect("valid");
    assert_eq!(s.backends[0].url, "http://y");
    let e = parse_service_for_host(&body, "c.com").expect_err("no match");
    assert_err(
        &e,
        "vars.DEFAULT_BACKENDS",
        "no service for hostname \"c.com\" (found: a.com, b.com)",
    );
    let body = serde_json::json!({"vars": {"DEFAULT_BACKENDS": r#"[{"hostname": "a.com", "backends": ["ftp://x"]}]"#}});
    let e = parse_service_for_host(&body, "a.com").expect_err("bad inner");
    assert_err(
        &e,
        "vars.DEFAULT_BACKENDS[0].backends[0]",
        "not an http(s) URL",
    );
}

#[test]
fn to_value_round_trips_full_config_through_text() {
    let cfg = parse_default_backends(FULL).expect("valid").remove(0);
    let text = serde_json::to_string(&cfg.to_value()).expect("serialise");
    let again = parse_default_backends(&text).expect("canonical form parses");
    assert_eq!(again, vec![cfg.clone()]);
    assert_eq!(parse_service(&cfg.to_value(), ""), Ok(cfg));
}

fn backend_strategy(i: usize) -> impl Strategy<Value = Backend> {
    (1u32..=1000, 0..3u8, prop::option::of(0u16..100)).prop_map(move |(weight, st, path)| Backend {
        url: BackendUrl::parse(&match path {
            Some(p) => format!("https://b{i}.example.com/p{p}"),
            None => format!("http://10.0.0.{i}:8080"),
        })
        .unwrap(),
        weight,
        state: [
            BackendState::Enabled,
            BackendState::Disabled,
            BackendState::Draining,
        ][usize::from(st)],
        // A DNS-named backend carries its address, so any config here may have `dns`.
        address: path.map(|_| std::net::IpAddr::from([10, 1, 0, i as u8])),
    })
}

fn backends_strategy(min: usize, offset: usize) -> impl Strategy<Value = Vec<Backend>> {
    (min..4usize).prop_flat_map(move |n| {
        (0..n)
            .map(|i| backend_strategy(i + offset))
            .collect::<Vec<_>>()
    })
}

fn named<T: TryFrom<String, Error = String>>(s: &str) -> T {
    T::try_from(s.to_string()).unwrap()
}

prop_compose! {
    fn config_strategy()(
        host in 0u32..1000,
        backends in backends_strategy(0, 0),
        pools in prop::collection::vec(backends_strategy(1, 50), 1..3),
        use_pools in any::<bool>(),
        health in (any::<bool>(), prop::option::of(0u8..10), 100u64..=86_400_000, 1u64..=60_000, 1u32..=100, 1u32..=100),
        breaker in (1u32..=1000, 100u64..=86_400_000, 0.001f64..=100.0, 1u32..=u32::MAX, 1000u64..=3_600_000),
        conn in (any::<bool>(), 0u32..=10, 100u64..=300_000),
        retries in 0u32..=10,
        affinity in prop::option::of((0..3u8, 1u64..=31_536_000, any::<bool>())),
        slow_start_ms in 0u64..=3_600_000,
        score_weighting in any::<bool>(),
        endpoint_steering in 0..4usize,
        geo in any::<bool>(),
        rate in prop::option::of((1u32..=u32::MAX, 1u32..=86_400)),
        access in prop::option::of(any::<bool>()),
        decisions in (any::<bool>(), 100u64..=10_000),
    ) -> ServiceConfig {
        // Lease mode only where validation allows it (no rate limit, no in-flight counting).
        let lease = decisions.0 && rate.is_none() && matches!(endpoint_steering, 0 | 3);
        let pools: Vec<Pool> = if use_pools || backends.is_empty() {
            pools.into_iter().enumerate().map(|(i, b)| Pool { name: named(&format!("pool-{i}")), backends: b, minimum_healthy: 1 }).collect()
        } else {
            Vec::new()
        };
        let geo = (geo && !pools.is_empty()).then(|| GeoSteering {
            regions: [(named("DE"), pools[0].name.clone()), (named("NA"), pools[pools.len() - 1].name.clone())].into(),
            fallback_pool: pools[0].name.clone(),
        });
        ServiceConfig {
            hostname: named(&format!("h{host}.example.com")),
            backends,
            health: ActiveHealth { enabled: health.0, path: health.1.map(|p| named(&format!("/hc{p}"))), interval_ms: health.2, timeout_ms: health.3, consecutive_up: health.4, consecutive_down: health.5,
                method: if health.0 { ProbeMethod::Head } else { ProbeMethod::Get },
                expected_codes: health.1.map(|_| ExpectedCodes::parse("2xx,301").unwrap()),
                expected_body: health.1.filter(|_| !health.0).map(|p| named(&format!("ok {p}"))),
                headers: if health.0 { [(named("Host"), named("status.internal"))].into() } else { Default::default() },
                follow_redirects: health.0,
                port: health.1.map(|p| 8000 + u16::from(p)),
                ..Default::default() },
            passive: PassiveHealth { circuit_breaker: BreakerConfig { failure_threshold: breaker.0, recovery_timeout_ms: breaker.1, error_rate_threshold: breaker.2, min_requests: breaker.3, window_ms: breaker.4 } },
            connection: ConnectionHandling { immediate_failover: conn.0, max_connection_retries: conn.1, connection_timeout_ms: conn.2 },
            retries,
            load_balancer: LoadBalancer {
                session_affinity: affinity.map(|(k, ttl_s, hdr)| {
                    let kind = [AffinityKind::Cookie, AffinityKind::Header, AffinityKind::IpCookie][usize::from(k)];
                    Affinity {
                        kind,
                        cookie_name: named("sid"),
                        header_name: (hdr || kind == AffinityKind::Header).then(|| named("X-Session")),
                        ttl_s,
                    }
                }),
                slow_start_ms,
                score_weighting,
                endpoint_steering: [
                    EndpointSteering::RoundRobin,
                    EndpointSteering::LeastOutstandingRequests,
                    EndpointSteering::Latency,
                    EndpointSteering::Hash,
                ][endpoint_steering],
                ..Default::default()
            },
            pools,
            geo,
            rate_limit: rate.map(|(requests, window_s)| RateLimit { requests, window_s }),
            access: access.map(|v6| AccessLists {
                allow: if v6 { vec!["2001:db8::/32".parse().unwrap(), "::1".parse().unwrap()] } else { vec!["10.0.0.0/8".parse().unwrap()] },
                deny: vec!["1.2.3.4".parse().unwrap()],
            }),
            notifications: None,
            decisions: Decisions {
                mode: if lease { DecisionMode::Lease } else { DecisionMode::PerRequest },
                lease_ms: decisions.1,
                location_hint: lease.then_some(crate::policy::health::regions::Region::Weur),
            },
            logging: Logging::default(),
            dns: retries.is_multiple_of(2).then(|| DnsRecords {
                zone_id: named("0123456789abcdef0123456789abcdef"),
                name: named("origin.example.com"),
                ttl: 60 + retries,
            }),
            rules: Vec::new(),
            change_safety: ChangeSafety { auto_rollback: retries.is_multiple_of(2), watch_s: 5 + u64::from(retries), max_error_rate_increase: 12.5, min_requests: 1 + u64::from(retries) },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn to_value_round_trips(cfg in config_strategy()) {
        prop_assert_eq!(parse_service(&cfg.to_value(), ""), Ok(cfg));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
        let _ = parse_default_backends(&text);
        let _ = validate_backend_url(&text);
        let _ = validate_hostname(&text);
    }
}

#[test]
fn null_counts_as_absent_and_duplicate_keys_are_refused() {
    let s = parse_default_backends(
        r#"{"hostname": "a.com", "backends": ["http://x"], "retries": null, "activeHealthChecks": {"path": null}}"#,
    )
    .expect("null is absent");
    assert_eq!(s[0].retries, DEFAULT_RETRIES);
    assert_eq!(s[0].health.path, None);
    let e =
        errs_of(r#"{"hostname": "a.com", "backends": ["http://x"], "retries": 1, "retries": 2}"#);
    assert_err(&e, "retries", "duplicate key \"retries\"");
    let e = parse_json(r#"{"a": {"b": 1, "b": 2}}"#).expect_err("nested duplicate");
    assert_eq!(e.path, "a.b", "{e}");
}

#[test]
fn dot_segments_in_backend_paths_are_refused() {
    for bad in [
        "http://a/../x",
        "http://a/b/./c",
        "http://a/%2e%2E/x",
        "http://a/..",
        "http://a/x/.%2e",
    ] {
        let err = validate_backend_url(bad).expect_err(bad);
        assert!(err.contains("'..' path segment"), "{bad}: {err}");
    }
    assert_eq!(
        validate_backend_url("http://a/..x/.y").as_deref(),
        Ok("http://a/..x/.y")
    );
}

#[test]
fn the_workers_own_hostnames_cannot_be_balanced_or_looped_into() {
    let ctx = Deployment::new(Some("Admin.Example.com"), vec!["api.example.com".into()]);
    for host in [
        "localhost",
        "127.0.0.1",
        "::1",
        "flowbalance.me.workers.dev",
        "admin.example.com",
    ] {
        let body = serde_json::json!({"hostname": host, "backends": ["http://x"]});
        let e = super::parse_service(&body, "", &ctx).expect_err(host);
        assert_err(&e, "hostname", "Worker's own hostnames");
    }
    let body = serde_json::json!({"hostname": "web.example.com", "backends": [
        "http://127.0.0.1:9000", "https://api.example.com/v1", "https://x.workers.dev", "https://ADMIN.example.com"]});
    let e = super::parse_service(&body, "", &ctx).expect_err("loops");
    assert!(
        !has(&e, "backends[0]", "loop"),
        "loopback servers are fine: {e:#?}"
    );
    assert_err(&e, "backends[1]", "a hostname this deployment balances");
    assert_err(&e, "backends[2]", "the Worker's own hostnames");
    assert_err(&e, "backends[3]", "the Worker's own hostnames");
    // Within one DEFAULT_BACKENDS text, services may not point at each other either.
    let e = errs_of(
        r#"[{"hostname": "a.com", "backends": ["http://b.com"]}, {"hostname": "b.com", "backends": ["http://x"]}]"#,
    );
    assert_err(&e, "[0].backends[0]", "points back at this deployment");
}

#[test]
fn services_are_bounded_in_backends() {
    let many: Vec<String> = (0..=MAX_BACKENDS)
        .map(|i| format!("http://b{i}.test"))
        .collect();
    let body = serde_json::json!({"hostname": "a.com", "backends": many});
    let e = parse_service(&body, "").expect_err("too many");
    assert_err(&e, "backends", "at most 1000");
    let body = serde_json::json!({"hostname": "a.com", "backends": many[..MAX_BACKENDS]});
    assert!(parse_service(&body, "").is_ok());
}

#[test]
fn config_size_is_limited_and_the_largest_service_fits() {
    // MAX_BACKENDS backends with long URLs and weights, in the canonical form: under the limit.
    let big: Vec<Value> = (0..MAX_BACKENDS)
        .map(|i| serde_json::json!({"url": format!("https://backend-{i:04}.eu-west.internal.example.com:8443/app"), "weight": 7, "state": "draining"}))
        .collect();
    let cfg = parse_service(
        &serde_json::json!({"hostname": "a.com", "backends": big}),
        "",
    )
    .unwrap();
    let size = cfg.check_size().expect("the largest service fits");
    assert!(size > 64 * 1024, "{size}");
    // A config over the limit names its size and the limit.
    let mut huge = cfg.clone();
    huge.pools = vec![
        serde_json::from_value(
            serde_json::json!({"name": "p", "backends": cfg.to_value()["backends"].clone()})
        )
        .unwrap();
        3
    ];
    let err = huge.check_size().expect_err("over the limit");
    let canonical = serde_json::to_string(&huge.to_value()).unwrap().len();
    assert!(canonical > MAX_CONFIG_BYTES);
    assert!(
        err.contains(&canonical.to_string()) && err.contains("262144 bytes (256 KiB)"),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_many_errors_in_one_entry_are_all_reported() {
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": [{"url": "ftp://x", "weight": 0, "colour": 1}, "http://ok", 7]}"#,
    );
    assert_err(&e, "backends[0].url", "not an http(s) URL");
    assert_err(&e, "backends[2]", "found integer `7`");
    assert!(!has(&e, "backends", "at least one"), "{e:#?}");
}

/// `/admin/openapi.json` carries the schemas generated from these types.
/// `UPDATE_OPENAPI=1 cargo test openapi` rewrites them after a model change.
#[test]
fn openapi_carries_the_generated_config_schemas() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/platform/admin/openapi.json"
    );
    let text = std::fs::read_to_string(path).expect("openapi.json");
    let mut doc: Value = serde_json::from_str(&text).expect("openapi.json is JSON");
    let want = Value::Object(schemas());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        doc["components"]["schemas"] = want.clone();
        let out = serde_json::to_string_pretty(&doc).expect("serialise") + "\n";
        std::fs::write(path, out).expect("write openapi.json");
    }
    assert_eq!(
        doc["components"]["schemas"], want,
        "openapi.json is stale: run UPDATE_OPENAPI=1 cargo test openapi"
    );
}

#[test]
fn steering_keys_parse_and_default() {
    let s = parse_default_backends(r#"{"hostname": "a.com", "backends": ["http://x"]}"#).unwrap();
    assert_eq!(
        s[0].load_balancer.endpoint_steering,
        EndpointSteering::RoundRobin
    );
    assert_eq!(s[0].load_balancer.steering, PoolSteering::Geo);
    let s = parse_default_backends(
        r#"{"hostname": "a.com", "load_balancer": {"endpoint_steering": "least_outstanding_requests", "steering": "failover", "fallback_pool": "b"},
            "pools": [{"name": "a", "backends": ["http://x", "http://y"], "minimum_healthy": 2}, {"name": "b", "backends": ["http://z"]}]}"#,
    )
    .unwrap();
    let lb = &s[0].load_balancer;
    assert_eq!(
        lb.endpoint_steering,
        EndpointSteering::LeastOutstandingRequests
    );
    assert_eq!(lb.steering, PoolSteering::Failover);
    assert_eq!(s[0].pools[0].minimum_healthy, 2);
    assert_eq!(s[0].pools[1].minimum_healthy, DEFAULT_MINIMUM_HEALTHY);
    assert_eq!(parse_service(&s[0].to_value(), ""), Ok(s[0].clone()));
}

#[test]
fn steering_rejections_have_paths() {
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "load_balancer": {"endpoint_steering": "fastest", "steering": "random"},
            "pools": [{"name": "a", "backends": ["http://y"], "minimum_healthy": 0}]}"#,
    );
    assert_err(
        &e,
        "load_balancer.endpoint_steering",
        "`round_robin`, `least_outstanding_requests`, `latency`, `hash`",
    );
    assert_err(&e, "load_balancer.steering", "`geo`, `failover`, `dynamic`");
    assert_err(&e, "pools[0].minimum_healthy", "1..=1000");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "load_balancer": {"steering": "failover", "fallback_pool": "zz"},
            "pools": [{"name": "a", "backends": ["http://y"], "minimum_healthy": 2}],
            "geo_steering": {"fallback_pool": "a"}}"#,
    );
    assert_err(&e, "backends", "put every backend in a pool");
    assert_err(&e, "geo_steering", "only with steering \"geo\"");
    assert_err(&e, "load_balancer.fallback_pool", "unknown pool \"zz\"");
    assert_err(
        &e,
        "pools[0].minimum_healthy",
        "more than the pool's 1 backends",
    );
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "load_balancer": {"steering": "failover"}}"#,
    );
    assert_err(&e, "load_balancer.steering", "requires pools");
    let e = errs_of(
        r#"{"hostname": "a.com", "pools": [{"name": "a", "backends": ["http://y"]}], "load_balancer": {"fallback_pool": "a"}}"#,
    );
    assert_err(
        &e,
        "load_balancer.fallback_pool",
        "only with steering \"failover\"",
    );
}

#[test]
fn notifications_default_from_the_top_level_and_are_checked_at_their_paths() {
    let s = parse_default_backends(
        r#"{"notifications": {"webhooks": [{"url": "https://hooks.example/x", "secret": "0123456789abcdef"}]},
            "services": [{"hostname": "a.com", "backends": ["http://x"]},
                         {"hostname": "b.com", "backends": ["http://y"], "notifications": {"webhooks": [{"url": "http://chat.example/hook", "format": "slack", "events": ["backend.down"]}]}}]}"#,
    )
    .expect("valid");
    let a = s[0].webhooks();
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].events,
        EventKind::ALL.to_vec(),
        "all events by default"
    );
    assert_eq!(a[0].format, WebhookFormat::Json);
    let b = s[1].webhooks();
    assert_eq!(
        (b[0].format, b[0].events.as_slice()),
        (WebhookFormat::Slack, &[EventKind::BackendDown][..])
    );
    assert_eq!(parse_service(&s[0].to_value(), ""), Ok(s[0].clone()));

    let errs = parse_service(
        &serde_json::json!({"hostname": "a.com", "backends": ["http://x"], "notifications": {"webhooks": [
            {"url": "ftp://x"},
            {"url": "https://h.example", "secret": "short"},
            {"url": "https://h.example", "secret": "0123456789abcdef", "events": ["backend.sideways"]},
            {"url": "https://h.example", "secret": "0123456789abcdef", "format": "xml"},
            {"url": "https://h.example"},
            {"url": "https://h.example", "secret": "0123456789abcdef", "events": []},
        ]}}),
        "",
    )
    .unwrap_err();
    assert_err(&errs, "notifications.webhooks[0].url", "ftp");
    assert_err(
        &errs,
        "notifications.webhooks[2].events[0]",
        "backend.sideways",
    );
    assert_err(&errs, "notifications.webhooks[3].format", "xml");
    let errs = parse_service(
        &serde_json::json!({"hostname": "a.com", "backends": ["http://x"], "notifications": {"webhooks": [
            {"url": "https://h.example", "secret": "short"},
            {"url": "https://h.example"},
            {"url": "https://h.example", "secret": "0123456789abcdef", "events": []},
        ]}}),
        "",
    )
    .unwrap_err();
    assert_err(&errs, "notifications.webhooks[0].secret", "at least 16");
    assert_err(
        &errs,
        "notifications.webhooks[1].secret",
        "required for format \"json\"",
    );
    assert_err(
        &errs,
        "notifications.webhooks[2].events",
        "at least one event",
    );
}

#[test]
fn monitor_options_parse_into_types() {
    let s = &parse_default_backends(
        r#"{"hostname": "a.com", "backends": ["http://x:8080"], "activeHealthChecks": {
            "type": "https", "method": "GET", "expected_codes": "2xx, 301", "expected_body": "OK",
            "headers": {"Host": "status.internal", "X-Probe": "1"}, "follow_redirects": true, "port": 9443}}"#,
    )
    .unwrap()[0];
    let h = &s.health;
    assert_eq!(h.kind, MonitorType::Https);
    let codes = h.expected_codes.as_ref().unwrap();
    assert!(codes.matches(204) && codes.matches(301) && !codes.matches(302));
    assert_eq!(h.expected_body.as_ref().unwrap().as_str(), "OK");
    assert_eq!(h.headers.len(), 2);
    assert!(h.follow_redirects);
    assert_eq!(h.port, Some(9443));
    assert_eq!(
        s.to_value()["activeHealthChecks"]["expected_codes"],
        "2xx,301"
    );
    // Defaults: http, GET, 2xx/3xx, no body check, no redirects, the backend's port.
    let d =
        &parse_default_backends(r#"{"hostname": "a.com", "backends": ["http://x"]}"#).unwrap()[0];
    assert_eq!(d.health.kind, MonitorType::Http);
    assert_eq!(d.health.method, ProbeMethod::Get);
    assert!(d.health.expected_codes.is_none() && !d.health.follow_redirects);
    assert_eq!(d.health.expectation().judge(302, None, false), Ok(()));
}

#[test]
fn monitor_rejections_have_paths() {
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "activeHealthChecks": {
            "type": "udp", "method": "POST", "expected_codes": "2xx,6xx", "expected_body": "",
            "headers": {"bad name": "x", "X-A": "line\nbreak"}, "follow_redirects": "yes", "port": 70000}}"#,
    );
    assert_err(&e, "activeHealthChecks.type", "tcp");
    assert_err(&e, "activeHealthChecks.method", "HEAD");
    assert_err(&e, "activeHealthChecks.expected_codes", "\"6xx\"");
    assert_err(&e, "activeHealthChecks.expected_body", "1 to 1024");
    assert_err(&e, "activeHealthChecks.headers.bad name", "token");
    assert_err(&e, "activeHealthChecks.headers.X-A", "header value");
    assert_err(&e, "activeHealthChecks.follow_redirects", "bool");
    assert_err(&e, "activeHealthChecks.port", "1..=65535");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "activeHealthChecks": {
            "type": "tcp", "path": "/h", "method": "HEAD", "expected_codes": "200", "expected_body": "ok",
            "headers": {"X-A": "1"}, "follow_redirects": true}}"#,
    );
    for k in [
        "path",
        "method",
        "expected_codes",
        "expected_body",
        "headers",
        "follow_redirects",
    ] {
        assert_err(
            &e,
            &format!("activeHealthChecks.{k}"),
            "only for http and https monitors",
        );
    }
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "activeHealthChecks": {
            "headers": {"Host": "a", "host": "b", "Connection": "close"}}}"#,
    );
    assert_err(&e, "activeHealthChecks.headers.host", "repeats \"Host\"");
    assert_err(&e, "activeHealthChecks.headers.Connection", "not allowed");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "activeHealthChecks": {"method": "HEAD", "expected_body": "ok"}}"#,
    );
    assert_err(
        &e,
        "activeHealthChecks.expected_body",
        "HEAD answer has no body",
    );
}

#[test]
fn lease_mode_refuses_what_needs_every_request_at_the_object() {
    let ok = parse_default_backends(
        r#"{"hostname": "a.com", "backends": ["http://x"], "decisions": {"mode": "lease"}}"#,
    )
    .unwrap();
    assert_eq!(ok[0].decisions.mode, DecisionMode::Lease);
    assert_eq!(ok[0].decisions.lease_ms, DEFAULT_LEASE_MS);
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "rate_limit": {"requests": 5, "window": 1},
            "decisions": {"mode": "lease", "lease_ms": 500}}"#,
    );
    assert_err(&e, "rate_limit", "decisions.mode \"lease\"");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "decisions": {"mode": "lease"},
            "load_balancer": {"endpoint_steering": "least_outstanding_requests"}}"#,
    );
    assert_err(
        &e,
        "load_balancer.endpoint_steering",
        "\"least_outstanding_requests\" cannot be combined with decisions.mode \"lease\"",
    );
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "decisions": {"mode": "lease", "lease_ms": 50}}"#,
    );
    assert_err(&e, "decisions.lease_ms", "100");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x"], "decisions": {"mode": "local"}}"#,
    );
    assert_err(&e, "decisions.mode", "per_request");
    // A default block in the services form.
    let s = parse_default_backends(
        r#"{"decisions": {"mode": "lease", "lease_ms": 2000}, "services": [{"hostname": "a.com", "backends": ["http://x"]}]}"#,
    )
    .unwrap();
    assert_eq!(s[0].decisions.lease_ms, 2000);
}

#[test]
fn regions_dns_and_dynamic_steering_are_checked_at_their_paths() {
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x.internal"],
            "activeHealthChecks": {"regions": ["weur", "wnam", "weur", "mars"], "quorum": 5},
            "dns": {"zone_id": "ZZ", "name": "origin.example.com", "ttl": 0}}"#,
    );
    assert_err(
        &e,
        "activeHealthChecks.regions[3]",
        "unknown variant `mars`",
    );
    assert_err(&e, "dns.zone_id", "32 lowercase hexadecimal");
    assert_err(&e, "dns.ttl", "1..=86400");
    let e = errs_of(
        r#"{"hostname": "a.com", "backends": ["http://x.internal", "http://192.0.2.1", {"url": "http://y.internal", "address": "2001:db8::7"}],
            "activeHealthChecks": {"regions": ["weur", "wnam", "weur"], "quorum": 4},
            "load_balancer": {"steering": "dynamic"},
            "dns": {"zone_id": "0123456789abcdef0123456789abcdef", "name": "origin.example.com"}}"#,
    );
    assert_err(&e, "activeHealthChecks.regions[2]", "listed twice");
    assert_err(&e, "activeHealthChecks.quorum", "more than the 3 regions");
    assert_err(&e, "backends[0].address", "need an IP address");
    assert!(
        !e.iter()
            .any(|x| x.path.starts_with("backends[1]") || x.path.starts_with("backends[2]")),
        "{e:?}"
    );
    assert_err(&e, "load_balancer.steering", "at least two");
    let e = errs_of(
        r#"{"hostname": "a.com", "pools": [{"name": "eu", "backends": ["http://a"]}, {"name": "us", "backends": ["http://b"]}],
            "load_balancer": {"steering": "dynamic"}}"#,
    );
    assert_err(
        &e,
        "load_balancer.steering",
        "needs activeHealthChecks.regions",
    );
    let ok = parse_service(
        &serde_json::json!({"hostname": "a.com", "pools": [{"name": "eu", "backends": ["http://127.0.0.2:1"]}, {"name": "us", "backends": ["http://127.0.0.3:1"]}],
            "activeHealthChecks": {"regions": ["weur", "wnam", "apac"]}, "load_balancer": {"steering": "dynamic"},
            "decisions": {"location_hint": "weur"},
            "dns": {"zone_id": "0123456789abcdef0123456789abcdef", "name": "origin.example.com"}}),
        "",
    )
    .unwrap();
    assert_eq!(ok.dns.as_ref().map(|d| d.ttl), Some(60));
    assert_eq!(ok.health.quorum, None);
    assert_eq!(parse_service(&ok.to_value(), ""), Ok(ok.clone()));
}
