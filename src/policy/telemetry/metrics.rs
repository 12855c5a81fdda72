//! Per-hostname counters (fed by outcomes, decisions and probes) and their Prometheus / OpenMetrics exposition.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::policy::traffic::decision::Outcome;

/// Upper bounds (ms) of the request-duration histogram buckets: Prometheus's default buckets.
pub const BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// The histogram bucket (index into [`BUCKETS_MS`], or `BUCKETS_MS.len()` for +Inf) of a latency.
/// The mean of latencies within one bucket lies in that bucket, so a batch of successes keyed by
/// bucket keeps its exact histogram while carrying only a mean.
pub fn bucket_of(latency_ms: u64) -> usize {
    BUCKETS_MS
        .iter()
        .position(|&b| latency_ms <= b)
        .unwrap_or(BUCKETS_MS.len())
}

/// The `code_class` label of an attempt: `2xx`..`5xx`, or `error` when no HTTP answer came.
pub fn code_class(status: Option<u16>) -> String {
    match status {
        Some(s @ 100..=599) => format!("{}xx", s / 100),
        _ => "error".to_string(),
    }
}

/// Who made a response a client got: a backend's own answer, or FlowBalance's (a rule's
/// 403/429, a loop's 508, 502/503 when no backend could answer, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Backend,
    Flowbalance,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Backend => "backend",
            Source::Flowbalance => "flowbalance",
        }
    }
}

/// `count` responses with status `code` from `source`, tallied by a Worker and carried to the
/// hostname's object on its next decision or report (never a message of their own per request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub code: u16,
    pub source: Source,
    pub count: u32,
}

impl Answered {
    /// Compact text for a decide query: `200b12.503f1` (code, `b`ackend or `f`lowbalance, count).
    pub fn encode(list: &[Answered]) -> String {
        let parts: Vec<String> = list
            .iter()
            .map(|a| {
                let s = if a.source == Source::Backend {
                    'b'
                } else {
                    'f'
                };
                format!("{}{s}{}", a.code, a.count)
            })
            .collect();
        parts.join(".")
    }

    pub fn decode(text: &str) -> Result<Vec<Answered>, String> {
        text.split('.')
            .map(|part| {
                let at = part
                    .find(['b', 'f'])
                    .ok_or_else(|| format!("answered: no source in {part:?}"))?;
                let code: u16 = part[..at]
                    .parse()
                    .map_err(|_| format!("answered: bad code in {part:?}"))?;
                let count: u32 = part[at + 1..]
                    .parse()
                    .map_err(|_| format!("answered: bad count in {part:?}"))?;
                if !(100..=599).contains(&code) {
                    return Err(format!("answered: code {code} is not an HTTP status"));
                }
                let source = if &part[at..=at] == "b" {
                    Source::Backend
                } else {
                    Source::Flowbalance
                };
                Ok(Answered {
                    code,
                    source,
                    count,
                })
            })
            .collect()
    }
}

/// Counters of one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendCounters {
    /// Attempts by `code_class`.
    #[serde(default)]
    pub requests: BTreeMap<String, u64>,
    /// Non-cumulative counts per bucket of [`BUCKETS_MS`], plus one for +Inf.
    #[serde(default)]
    pub buckets: Vec<u64>,
    #[serde(default)]
    pub latency_sum_ms: u64,
    #[serde(default)]
    pub checks_ok: u64,
    #[serde(default)]
    pub checks_failed: u64,
}

/// Every counter of one hostname. Kept in the hostname's Durable Object's memory and stored
/// periodically, never per request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub backends: BTreeMap<String, BackendCounters>,
    /// Retries by the reason of the attempt before (`connect`, `timeout`, `status_5xx`, ...).
    #[serde(default)]
    pub retries: BTreeMap<String, u64>,
    /// Requests answered by a backend other than the first one tried.
    #[serde(default)]
    pub failovers: u64,
    #[serde(default)]
    pub rate_limited: u64,
    #[serde(default)]
    pub access_denied: u64,
    /// Webhook delivery attempts by result (`delivered`, `failed`, `given_up`, `dropped`).
    #[serde(default)]
    pub webhook_deliveries: BTreeMap<String, u64>,
    /// What clients got, keyed `"<code> <source>"` (a JSON map needs text keys).
    #[serde(default)]
    pub responses: BTreeMap<String, u64>,
}

impl Counters {
    /// Counts one reported attempt (or batch of `count` successes).
    pub fn record_outcome(&mut self, o: &Outcome) {
        let n = u64::from(o.count.max(1));
        let b = self.backends.entry(o.url.clone()).or_default();
        *b.requests.entry(code_class(o.status)).or_default() += n;
        if b.buckets.len() != BUCKETS_MS.len() + 1 {
            b.buckets.resize(BUCKETS_MS.len() + 1, 0);
        }
        b.buckets[bucket_of(o.latency_ms)] += n;
        b.latency_sum_ms += o.latency_ms * n;
        if let Some(reason) = &o.retry_reason {
            *self.retries.entry(reason.clone()).or_default() += n;
        }
        if o.retry && o.failure.is_none() {
            self.failovers += n;
        }
    }

    /// Counts a request the object refused before routing (429 rate limit, 403 access list).
    pub fn record_reject(&mut self, status: u16) {
        match status {
            429 => self.rate_limited += 1,
            403 => self.access_denied += 1,
            _ => {}
        }
    }

    /// Counts responses clients got (a Worker's batch).
    pub fn record_answered(&mut self, list: &[Answered]) {
        for a in list {
            let key = format!("{} {}", a.code, a.source.as_str());
            *self.responses.entry(key).or_default() += u64::from(a.count);
        }
    }

    pub fn record_probe(&mut self, url: &str, ok: bool) {
        let b = self.backends.entry(url.to_string()).or_default();
        if ok {
            b.checks_ok += 1;
        } else {
            b.checks_failed += 1;
        }
    }

    pub fn record_delivery(&mut self, result: &str, n: u64) {
        *self
            .webhook_deliveries
            .entry(result.to_string())
            .or_default() += n;
    }

    /// Forgets backends the config no longer has (bounds the map across config changes).
    pub fn retain_backends(&mut self, keep: &[&str]) {
        self.backends.retain(|url, _| keep.contains(&url.as_str()));
    }
}

/// One backend's gauges at scrape time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendGauges {
    pub url: String,
    pub up: bool,
    pub weight: f64,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
}

/// What one hostname's object answers to a scrape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    pub hostname: String,
    pub config_version: u64,
    pub backends: Vec<BackendGauges>,
    pub counters: Counters,
    /// Lease mode: leases granted, refreshed and handed back early in the object's lifetime,
    /// and outstanding now.
    #[serde(default)]
    pub leases: LeaseMetrics,
}

/// A hostname's lease figures (all 0 in per-request mode).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseMetrics {
    pub grants: u64,
    pub refreshes: u64,
    pub early_returns: u64,
    pub outstanding: u64,
}

/// The two exposition formats a scraper may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` names it (Prometheus lists it first when it can).
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A label value with `\`, `"` and newlines escaped (both formats).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Writes metric families in one format: counters get `_total` samples, and in OpenMetrics
/// their family name drops it.
struct Writer {
    out: String,
    format: Format,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let family = match (self.format, kind) {
            (Format::OpenMetrics, "counter") => name.trim_end_matches("_total"),
            _ => name,
        };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{name}{} {value}", labels(pairs));
    }
}

/// Seconds from milliseconds, in the shortest form that reads back exactly (`0.005`, `1`, `60.126`).
fn seconds(ms: u64) -> String {
    (ms as f64 / 1000.0).to_string()
}

/// The exposition of every hostname's metrics plus the deployment-wide ones.
pub fn render(hosts: &[HostMetrics], config_errors: usize, format: Format) -> String {
    let mut w = Writer {
        out: String::new(),
        format,
    };
    let per_backend = |h: &HostMetrics| -> Vec<(String, BackendCounters)> {
        h.counters
            .backends
            .iter()
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect()
    };

    w.family(
        "flowbalance_requests_total",
        "counter",
        "Attempts sent to a backend, by HTTP status class (error: no HTTP answer).",
    );
    for h in hosts {
        for (url, c) in per_backend(h) {
            for (class, n) in &c.requests {
                w.sample(
                    "flowbalance_requests_total",
                    &[
                        ("hostname", &h.hostname),
                        ("backend", &url),
                        ("code_class", class),
                    ],
                    n,
                );
            }
        }
    }

    w.family(
        "flowbalance_responses_total",
        "counter",
        "Responses clients got, by status code and by who made them (backend, or flowbalance: rules, loops, no backend). 421 for unknown hostnames is not counted.",
    );
    for h in hosts {
        for (key, n) in &h.counters.responses {
            let Some((code, source)) = key.split_once(' ') else {
                continue;
            };
            w.sample(
                "flowbalance_responses_total",
                &[
                    ("hostname", &h.hostname),
                    ("code", code),
                    ("source", source),
                ],
                n,
            );
        }
    }

    w.family(
        "flowbalance_request_duration_seconds",
        "histogram",
        "Time from sending an attempt to its response headers.",
    );
    for h in hosts {
        for (url, c) in per_backend(h) {
            if c.buckets.is_empty() {
                continue;
            }
            let base = [("hostname", h.hostname.as_str()), ("backend", url.as_str())];
            let mut cumulative = 0;
            for (i, le) in BUCKETS_MS.iter().enumerate() {
                cumulative += c.buckets.get(i).copied().unwrap_or(0);
                let le = seconds(*le);
                w.sample(
                    "flowbalance_request_duration_seconds_bucket",
                    &[base[0], base[1], ("le", &le)],
                    cumulative,
                );
            }
            let count: u64 = c.buckets.iter().sum();
            w.sample(
                "flowbalance_request_duration_seconds_bucket",
                &[base[0], base[1], ("le", "+Inf")],
                count,
            );
            w.sample(
                "flowbalance_request_duration_seconds_sum",
                &base,
                seconds(c.latency_sum_ms),
            );
            w.sample("flowbalance_request_duration_seconds_count", &base, count);
        }
    }

    w.family(
        "flowbalance_retries_total",
        "counter",
        "Retries, by the failure of the attempt before.",
    );
    for h in hosts {
        for (reason, n) in &h.counters.retries {
            w.sample(
                "flowbalance_retries_total",
                &[("hostname", &h.hostname), ("reason", reason)],
                n,
            );
        }
    }

    let host_counter = |w: &mut Writer, name: &str, help: &str, get: fn(&Counters) -> u64| {
        w.family(name, "counter", help);
        for h in hosts {
            w.sample(name, &[("hostname", &h.hostname)], get(&h.counters));
        }
    };
    host_counter(
        &mut w,
        "flowbalance_failovers_total",
        "Requests answered by a backend other than the first one tried.",
        |c| c.failovers,
    );

    w.family(
        "flowbalance_backend_up",
        "gauge",
        "1 when the backend is healthy and its breaker not open.",
    );
    for h in hosts {
        for b in &h.backends {
            w.sample(
                "flowbalance_backend_up",
                &[("hostname", &h.hostname), ("backend", &b.url)],
                u8::from(b.up),
            );
        }
    }
    w.family(
        "flowbalance_backend_weight",
        "gauge",
        "The weight round robin uses now (lower while slow start ramps the backend up).",
    );
    for h in hosts {
        for b in &h.backends {
            w.sample(
                "flowbalance_backend_weight",
                &[("hostname", &h.hostname), ("backend", &b.url)],
                b.weight,
            );
        }
    }
    w.family(
        "flowbalance_circuit_breaker_state",
        "gauge",
        "1 for the breaker's current state (closed, open or half_open), 0 for the others.",
    );
    for h in hosts {
        for b in &h.backends {
            for state in ["closed", "open", "half_open"] {
                w.sample(
                    "flowbalance_circuit_breaker_state",
                    &[
                        ("hostname", &h.hostname),
                        ("backend", &b.url),
                        ("state", state),
                    ],
                    u8::from(b.breaker == state),
                );
            }
        }
    }

    w.family(
        "flowbalance_health_checks_total",
        "counter",
        "Active health probes, by result.",
    );
    for h in hosts {
        for (url, c) in per_backend(h) {
            if c.checks_ok + c.checks_failed == 0 {
                continue;
            }
            for (result, n) in [("success", c.checks_ok), ("failure", c.checks_failed)] {
                w.sample(
                    "flowbalance_health_checks_total",
                    &[
                        ("hostname", &h.hostname),
                        ("backend", &url),
                        ("result", result),
                    ],
                    n,
                );
            }
        }
    }

    host_counter(
        &mut w,
        "flowbalance_rate_limited_total",
        "Requests refused with 429 by the service's rate limit.",
        |c| c.rate_limited,
    );
    host_counter(
        &mut w,
        "flowbalance_access_denied_total",
        "Requests refused with 403 by the service's access lists.",
        |c| c.access_denied,
    );

    w.family(
        "flowbalance_lease_events_total",
        "counter",
        "Lease mode: leases granted to Workers holding none (grant), granted to replace a held one (refresh), and handed back before they expired (early_return). Reset when the object restarts.",
    );
    for h in hosts {
        let l = &h.leases;
        for (event, n) in [
            ("grant", l.grants),
            ("refresh", l.refreshes),
            ("early_return", l.early_returns),
        ] {
            w.sample(
                "flowbalance_lease_events_total",
                &[("hostname", &h.hostname), ("event", event)],
                n,
            );
        }
    }
    w.family(
        "flowbalance_leases_outstanding",
        "gauge",
        "Lease mode: leases granted that may still be in use.",
    );
    for h in hosts {
        w.sample(
            "flowbalance_leases_outstanding",
            &[("hostname", &h.hostname)],
            h.leases.outstanding,
        );
    }

    w.family(
        "flowbalance_config_version",
        "gauge",
        "The service's config version (0: from DEFAULT_BACKENDS).",
    );
    for h in hosts {
        w.sample(
            "flowbalance_config_version",
            &[("hostname", &h.hostname)],
            h.config_version,
        );
    }
    w.family(
        "flowbalance_config_errors",
        "gauge",
        "Errors found in DEFAULT_BACKENDS (services with errors are not served).",
    );
    w.sample("flowbalance_config_errors", &[], config_errors);

    w.family(
        "flowbalance_webhook_deliveries_total",
        "counter",
        "Webhook deliveries by result (delivered, failed attempt, given_up, dropped on outbox overflow).",
    );
    for h in hosts {
        for (result, n) in &h.counters.webhook_deliveries {
            w.sample(
                "flowbalance_webhook_deliveries_total",
                &[("hostname", &h.hostname), ("result", result)],
                n,
            );
        }
    }

    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

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
                breaker: "half_open".into(),
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
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let mut c = Counters::default();
        c.record_outcome(&outcome("http://b:1", Some(200), 3, 2));
        c.record_outcome(&outcome("http://b:1", Some(200), 120, 1));
        c.record_outcome(&outcome("http://b:1", Some(200), 60_000, 1));
        let text = render(&[host(c)], 0, Format::Text);
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
        let text = render(&[h], 0, Format::Text);
        assert!(text.contains(r#"flowbalance_config_version{hostname="we\"ird\\host\n"} 3"#));
    }

    #[test]
    fn text_format_names_counters_with_total_and_one_hot_breaker() {
        let mut c = Counters::default();
        c.record_outcome(&outcome("http://b:1", Some(200), 3, 1));
        c.record_probe("http://b:1", true);
        let text = render(&[host(c)], 2, Format::Text);
        assert!(text.contains("# TYPE flowbalance_requests_total counter\n"));
        assert!(text.contains("# TYPE flowbalance_request_duration_seconds histogram\n"));
        assert!(text.contains("flowbalance_requests_total{hostname=\"a.test\",backend=\"http://b:1\",code_class=\"2xx\"} 1\n"));
        assert!(text.contains("flowbalance_circuit_breaker_state{hostname=\"a.test\",backend=\"http://b:1\",state=\"half_open\"} 1\n"));
        assert!(text.contains("flowbalance_circuit_breaker_state{hostname=\"a.test\",backend=\"http://b:1\",state=\"open\"} 0\n"));
        assert!(text.contains("flowbalance_health_checks_total{hostname=\"a.test\",backend=\"http://b:1\",result=\"success\"} 1\n"));
        assert!(text.contains("flowbalance_config_errors 2\n"));
        assert!(text.contains(
            "flowbalance_lease_events_total{hostname=\"a.test\",event=\"refresh\"} 40\n"
        ));
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
        let om = render(&[host(c)], 0, Format::OpenMetrics);
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
        let text = render(&[h], 0, Format::Text);
        assert!(text.contains("# TYPE flowbalance_responses_total counter\n"));
        assert!(text.contains(
            "flowbalance_responses_total{hostname=\"a.test\",code=\"200\",source=\"backend\"} 24\n"
        ));
        assert!(text.contains(
            "flowbalance_responses_total{hostname=\"a.test\",code=\"503\",source=\"flowbalance\"} 1\n"
        ));
    }
}
