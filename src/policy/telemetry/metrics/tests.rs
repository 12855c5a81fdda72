//! Tests of the counters and of both exposition formats.

use super::*;
use crate::policy::telemetry::answers::Source;

fn outcome(url: &str, status: Option<u16>, latency_ms: u64, count: u32) -> Outcome {
    Outcome {
        url: url.into(),
        failure: status
            .filter(|s| *s >= 500)
            .map(|s| format!("status {s}"))
            .or(if status.is_none() {
                Some("connection failed".into())
            } else {
                None
            }),
        latency_ms,
        trial: false,
        retry: false,
        count,
        status,
        retry_reason: None,
    }
}

fn host(counters: Counters) -> HostMetrics {
    HostMetrics {
        hostname: "a.test".into(),
        config_version: 3,
        backends: vec![BackendGauges {
            url: "http://b:1".into(),
            up: true,
            weight: 1.0,
            health_score: 87,
            breaker: "half_open".into(),
            regions: [("apac".to_string(), false), ("wnam".to_string(), true)].into(),
        }],
        counters,
        leases: LeaseMetrics {
            grants: 2,
            refreshes: 40,
            early_returns: 1,
            outstanding: 3,
        },
    }
}

#[test]
fn buckets_hold_the_mean_of_their_members() {
    assert_eq!(bucket_of(0), 0);
    assert_eq!(bucket_of(5), 0);
    assert_eq!(bucket_of(6), 1);
    assert_eq!(bucket_of(10_000), 10);
    assert_eq!(bucket_of(10_001), 11);
    // Any batch within one bucket has its (floored) mean in that bucket.
    for lo in [6u64, 11, 26, 101] {
        let hi = BUCKETS_MS[bucket_of(lo)];
        assert_eq!(bucket_of((lo + hi) / 2), bucket_of(lo));
    }
}

#[test]
fn code_classes() {
    assert_eq!(code_class(Some(200)), "2xx");
    assert_eq!(code_class(Some(404)), "4xx");
    assert_eq!(code_class(Some(503)), "5xx");
    assert_eq!(code_class(None), "error");
    assert_eq!(code_class(Some(700)), "error");
}

#[test]
fn counts_outcomes_retries_and_failovers() {
    let mut c = Counters::default();
    c.record_outcome(&outcome("http://b:1", Some(200), 3, 10));
    c.record_outcome(&outcome("http://b:1", Some(503), 30, 1));
    let mut retried = outcome("http://b:1", Some(200), 7, 1);
    retried.retry = true;
    retried.retry_reason = Some("status_5xx".into());
    c.record_outcome(&retried);
    c.record_outcome(&outcome("http://b:1", None, 2000, 1));
    c.record_reject(429);
    c.record_reject(403);
    c.record_reject(503);
    let b = &c.backends["http://b:1"];
    assert_eq!(b.requests["2xx"], 11);
    assert_eq!(b.requests["5xx"], 1);
    assert_eq!(b.requests["error"], 1);
    assert_eq!(b.buckets[0], 10);
    assert_eq!(b.buckets[1], 1);
    assert_eq!(b.buckets[3], 1);
    assert_eq!(b.buckets[8], 1);
    assert_eq!(b.latency_sum_ms, 30 + 30 + 7 + 2000);
    assert_eq!(c.retries["status_5xx"], 1);
    assert_eq!(c.failovers, 1);
    assert_eq!((c.rate_limited, c.access_denied), (1, 1));
}

#[test]
fn probe_up_has_one_sample_per_region() {
    let text = render(&[host(Counters::default())], 0, true, Format::Text);
    assert!(text.contains("# TYPE flowbalance_probe_up gauge\n"));
    assert!(text.contains(
        "flowbalance_probe_up{hostname=\"a.test\",backend=\"http://b:1\",region=\"apac\"} 0\n"
    ));
    assert!(text.contains(
        "flowbalance_probe_up{hostname=\"a.test\",backend=\"http://b:1\",region=\"wnam\"} 1\n"
    ));
}

#[test]
fn histogram_buckets_are_cumulative_and_end_in_inf() {
    let mut c = Counters::default();
    c.record_outcome(&outcome("http://b:1", Some(200), 3, 2));
    c.record_outcome(&outcome("http://b:1", Some(200), 120, 1));
    c.record_outcome(&outcome("http://b:1", Some(200), 60_000, 1));
    let text = render(&[host(c)], 0, true, Format::Text);
    let bucket = |le: &str| {
        let needle = format!(
            "flowbalance_request_duration_seconds_bucket{{hostname=\"a.test\",backend=\"http://b:1\",le=\"{le}\"}} "
        );
        let line = text.lines().find(|l| l.starts_with(&needle)).unwrap();
        line[needle.len()..].parse::<u64>().unwrap()
    };
    assert_eq!(bucket("0.005"), 2);
    assert_eq!(bucket("0.1"), 2);
    assert_eq!(bucket("0.25"), 3);
    assert_eq!(bucket("10"), 3);
    assert_eq!(bucket("+Inf"), 4);
    assert!(text.contains(
        "flowbalance_request_duration_seconds_sum{hostname=\"a.test\",backend=\"http://b:1\"} 60.126\n"
    ));
    assert!(text.contains(
        "flowbalance_request_duration_seconds_count{hostname=\"a.test\",backend=\"http://b:1\"} 4\n"
    ));
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    assert_eq!(escape_label("x\ny"), "x\\ny");
    let mut h = host(Counters::default());
    h.hostname = "we\"ird\\host\n".into();
    let text = render(&[h], 0, true, Format::Text);
    assert!(text.contains(r#"flowbalance_config_version{hostname="we\"ird\\host\n"} 3"#));
}

#[test]
fn object_requests_are_one_counter_per_hostname() {
    let c = Counters {
        object_requests: 7,
        ..Counters::default()
    };
    let text = render(&[host(c)], 0, true, Format::Text);
    assert!(text.contains("# TYPE flowbalance_object_requests_total counter\n"));
    assert!(text.contains("flowbalance_object_requests_total{hostname=\"a.test\"} 7\n"));
}

#[test]
fn text_format_names_counters_with_total_and_one_hot_breaker() {
    let mut c = Counters::default();
    c.record_outcome(&outcome("http://b:1", Some(200), 3, 1));
    c.record_probe("http://b:1", true);
    let text = render(&[host(c)], 2, true, Format::Text);
    assert!(text.contains("# TYPE flowbalance_requests_total counter\n"));
    assert!(text.contains("# TYPE flowbalance_request_duration_seconds histogram\n"));
    assert!(text.contains("flowbalance_requests_total{hostname=\"a.test\",backend=\"http://b:1\",code_class=\"2xx\"} 1\n"));
    assert!(text.contains("flowbalance_circuit_breaker_state{hostname=\"a.test\",backend=\"http://b:1\",state=\"half_open\"} 1\n"));
    assert!(text.contains("flowbalance_circuit_breaker_state{hostname=\"a.test\",backend=\"http://b:1\",state=\"open\"} 0\n"));
    assert!(text.contains("flowbalance_health_checks_total{hostname=\"a.test\",backend=\"http://b:1\",result=\"success\"} 1\n"));
    assert!(text.contains("# TYPE flowbalance_backend_health_score gauge\n"));
    assert!(text.contains(
        "flowbalance_backend_health_score{hostname=\"a.test\",backend=\"http://b:1\"} 87\n"
    ));
    assert!(text.contains("flowbalance_config_errors 2\n"));
    assert!(
        text.contains("flowbalance_lease_events_total{hostname=\"a.test\",event=\"refresh\"} 40\n")
    );
    assert!(text.contains("flowbalance_leases_outstanding{hostname=\"a.test\"} 3\n"));
    assert!(!text.contains("# EOF"));
    // Every sample line belongs to a family declared before it.
    let mut declared = vec![];
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                declared.iter().any(|f| name.starts_with(f.as_str())),
                "{line}"
            );
        }
    }
}

#[test]
fn openmetrics_drops_total_from_counter_families_and_ends_with_eof() {
    let mut c = Counters::default();
    c.record_outcome(&outcome("http://b:1", Some(200), 3, 1));
    c.record_delivery("delivered", 2);
    let om = render(&[host(c)], 0, true, Format::OpenMetrics);
    assert!(om.contains("# TYPE flowbalance_requests counter\n"));
    assert!(om.contains("# TYPE flowbalance_webhook_deliveries counter\n"));
    assert!(om.contains(
        "flowbalance_webhook_deliveries_total{hostname=\"a.test\",result=\"delivered\"} 2\n"
    ));
    assert!(om.contains("# TYPE flowbalance_backend_up gauge\n"));
    assert!(om.ends_with("# EOF\n"));
    assert_eq!(om.matches("# EOF").count(), 1);
}

#[test]
fn negotiation_prefers_openmetrics_when_asked() {
    let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
    assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
    assert_eq!(Format::negotiate(None), Format::Text);
}

#[test]
fn counters_survive_a_storage_roundtrip() {
    let mut c = Counters::default();
    c.record_outcome(&outcome("http://b:1", Some(200), 3, 4));
    c.record_probe("http://b:1", false);
    let back: Counters = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    c.retain_backends(&["http://other"]);
    assert!(c.backends.is_empty());
}

#[test]
fn client_responses_travel_compactly_and_render_by_code_and_source() {
    let list = [
        Answered {
            code: 200,
            source: Source::Backend,
            count: 12,
        },
        Answered {
            code: 503,
            source: Source::Flowbalance,
            count: 1,
        },
    ];
    let text = Answered::encode(&list);
    assert_eq!(text, "200b12.503f1");
    assert_eq!(Answered::decode(&text).unwrap(), list);
    for bad in ["", "200", "x b1", "200b", "99b1", "200bx", "200q1"] {
        assert!(Answered::decode(bad).is_err(), "{bad:?}");
    }
    let mut c = Counters::default();
    c.record_answered(&list);
    c.record_answered(&list[..1]);
    let h = HostMetrics {
        hostname: "a.test".into(),
        config_version: 1,
        backends: vec![],
        counters: c,
        leases: LeaseMetrics::default(),
    };
    let text = render(&[h], 0, true, Format::Text);
    assert!(text.contains("# TYPE flowbalance_responses_total counter\n"));
    assert!(text.contains(
        "flowbalance_responses_total{hostname=\"a.test\",code=\"200\",source=\"backend\"} 24\n"
    ));
    assert!(text.contains(
        "flowbalance_responses_total{hostname=\"a.test\",code=\"503\",source=\"flowbalance\"} 1\n"
    ));
}

#[test]
fn d1_up_is_a_gauge_of_the_scrape_time_probe() {
    let up = render(&[], 0, true, Format::Text);
    assert!(up.contains("# TYPE flowbalance_d1_up gauge\nflowbalance_d1_up 1\n"));
    let down = render(&[], 0, false, Format::OpenMetrics);
    assert!(down.contains("# TYPE flowbalance_d1_up gauge\nflowbalance_d1_up 0\n"));
    assert!(down.ends_with("# EOF\n"));
}
