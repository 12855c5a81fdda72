//! Per-hostname counters (fed by outcomes, decisions and probes) and their Prometheus / OpenMetrics exposition.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::policy::telemetry::answers::Answered;
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
    /// D1 rows written by this hostname's object, by table (D1's own `rows_written`, which
    /// counts index entries too).
    #[serde(default)]
    pub d1_rows_written: BTreeMap<String, u64>,
    /// Request-log rows counted but not written: the deployment's daily D1 budget was spent.
    #[serde(default)]
    pub log_rows_skipped: u64,
    /// Requests this hostname's Durable Object served and its alarms (decide, report, lease, relay): each
    /// one is a billed Durable Object request, which the cost table in docs/benchmarks.md counts.
    #[serde(default)]
    pub object_requests: u64,
    /// Requests each traffic rule applied to, by rule name (`continue` rules included).
    #[serde(default)]
    pub rule_matches: BTreeMap<String, u64>,
    /// DNS record syncs by result (`success`, `failure`).
    #[serde(default)]
    pub dns_syncs: BTreeMap<String, u64>,
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

    /// Counts traffic-rule matches: the rules one decision applied, or a Worker's tally.
    pub fn record_rule_hits<'a>(&mut self, hits: impl IntoIterator<Item = (&'a str, u64)>) {
        for (rule, n) in hits {
            match self.rule_matches.get_mut(rule) {
                Some(c) => *c += n,
                None => {
                    self.rule_matches.insert(rule.to_string(), n);
                }
            }
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
    /// 0–100 (see `health::score`).
    #[serde(default)]
    pub health_score: u8,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// With `activeHealthChecks.regions`: each region's view (true: up).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, bool>,
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

    /// A family with one sample per hostname.
    fn per_host<V: std::fmt::Display>(
        &mut self,
        hosts: &[HostMetrics],
        (name, kind, help): (&str, &str, &str),
        get: impl Fn(&HostMetrics) -> V,
    ) {
        self.family(name, kind, help);
        for h in hosts {
            self.sample(name, &[("hostname", &h.hostname)], get(h));
        }
    }

    /// A counter family with one sample per hostname and key of a map of counts.
    fn per_host_key(
        &mut self,
        hosts: &[HostMetrics],
        (name, help, label): (&str, &str, &str),
        get: fn(&Counters) -> &BTreeMap<String, u64>,
    ) {
        self.family(name, "counter", help);
        for h in hosts {
            for (key, n) in get(&h.counters) {
                self.sample(name, &[("hostname", &h.hostname), (label, key)], n);
            }
        }
    }

    /// A gauge family with one sample per backend of each hostname.
    fn per_backend<V: std::fmt::Display>(
        &mut self,
        hosts: &[HostMetrics],
        (name, help): (&str, &str),
        get: fn(&BackendGauges) -> V,
    ) {
        self.family(name, "gauge", help);
        for h in hosts {
            for b in &h.backends {
                self.sample(
                    name,
                    &[("hostname", &h.hostname), ("backend", &b.url)],
                    get(b),
                );
            }
        }
    }
}

/// Seconds from milliseconds, in the shortest form that reads back exactly (`0.005`, `1`, `60.126`).
fn seconds(ms: u64) -> String {
    (ms as f64 / 1000.0).to_string()
}

/// The exposition of every hostname's metrics plus the deployment-wide ones.
pub fn render(hosts: &[HostMetrics], config_errors: usize, d1_up: bool, format: Format) -> String {
    let mut w = Writer {
        out: String::new(),
        format,
    };
    // Every backend's counters with its hostname, hostname by hostname.
    let backend_counters = || {
        hosts.iter().flat_map(|h| {
            h.counters
                .backends
                .iter()
                .map(move |(url, c)| (h.hostname.as_str(), url.as_str(), c))
        })
    };

    w.family(
        "flowbalance_requests_total",
        "counter",
        "Attempts sent to a backend, by HTTP status class (error: no HTTP answer).",
    );
    for (host, url, c) in backend_counters() {
        for (class, n) in &c.requests {
            w.sample(
                "flowbalance_requests_total",
                &[("hostname", host), ("backend", url), ("code_class", class)],
                n,
            );
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
    for (host, url, c) in backend_counters() {
        if c.buckets.is_empty() {
            continue;
        }
        let base = [("hostname", host), ("backend", url)];
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

    w.per_host_key(
        hosts,
        (
            "flowbalance_rule_matches_total",
            "Requests each traffic rule applied to.",
            "rule",
        ),
        |c| &c.rule_matches,
    );

    w.per_host_key(
        hosts,
        (
            "flowbalance_retries_total",
            "Retries, by the failure of the attempt before.",
            "reason",
        ),
        |c| &c.retries,
    );

    w.per_host(
        hosts,
        (
            "flowbalance_failovers_total",
            "counter",
            "Requests answered by a backend other than the first one tried.",
        ),
        |h| h.counters.failovers,
    );

    w.per_backend(
        hosts,
        (
            "flowbalance_backend_up",
            "1 when the backend is healthy and its breaker not open.",
        ),
        |b| u8::from(b.up),
    );
    w.per_backend(
        hosts,
        (
            "flowbalance_backend_weight",
            "The weight round robin uses now (lower while slow start ramps the backend up).",
        ),
        |b| b.weight,
    );
    w.per_backend(
        hosts,
        (
            "flowbalance_backend_health_score",
            "Health score 0-100 from recent probes, passive error rate, latency against the pool's median and breaker state (open: 0).",
        ),
        |b| b.health_score,
    );
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
        "flowbalance_probe_up",
        "gauge",
        "With probe regions: 1 when the region's prober sees the backend up, 0 when down.",
    );
    for h in hosts {
        for b in &h.backends {
            for (region, up) in &b.regions {
                w.sample(
                    "flowbalance_probe_up",
                    &[
                        ("hostname", &h.hostname),
                        ("backend", &b.url),
                        ("region", region),
                    ],
                    u8::from(*up),
                );
            }
        }
    }

    w.family(
        "flowbalance_health_checks_total",
        "counter",
        "Active health probes, by result.",
    );
    for (host, url, c) in backend_counters() {
        if c.checks_ok + c.checks_failed == 0 {
            continue;
        }
        for (result, n) in [("success", c.checks_ok), ("failure", c.checks_failed)] {
            w.sample(
                "flowbalance_health_checks_total",
                &[("hostname", host), ("backend", url), ("result", result)],
                n,
            );
        }
    }

    w.per_host(
        hosts,
        (
            "flowbalance_rate_limited_total",
            "counter",
            "Requests refused with 429 by the service's rate limit.",
        ),
        |h| h.counters.rate_limited,
    );
    w.per_host(
        hosts,
        (
            "flowbalance_access_denied_total",
            "counter",
            "Requests refused with 403 by the service's access lists.",
        ),
        |h| h.counters.access_denied,
    );
    w.per_host(
        hosts,
        (
            "flowbalance_object_requests_total",
            "counter",
            "Requests and alarm invocations the hostname's Durable Object served (each billed as a Durable Object request).",
        ),
        |h| h.counters.object_requests,
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
    w.per_host(
        hosts,
        (
            "flowbalance_leases_outstanding",
            "gauge",
            "Lease mode: leases granted that may still be in use.",
        ),
        |h| h.leases.outstanding,
    );

    w.per_host(
        hosts,
        (
            "flowbalance_config_version",
            "gauge",
            "The service's config version (0: from DEFAULT_BACKENDS).",
        ),
        |h| h.config_version,
    );
    w.family(
        "flowbalance_config_errors",
        "gauge",
        "Errors found in DEFAULT_BACKENDS (services with errors are not served).",
    );
    w.sample("flowbalance_config_errors", &[], config_errors);
    w.family(
        "flowbalance_d1_up",
        "gauge",
        "1 when D1 answered a query at scrape time; 0 when it refused (quota, outage, missing table): the request log, analytics and health history are not being written.",
    );
    w.sample("flowbalance_d1_up", &[], u8::from(d1_up));

    w.per_host_key(
        hosts,
        (
            "flowbalance_webhook_deliveries_total",
            "Webhook deliveries by result (delivered, failed attempt, given_up, dropped on outbox overflow).",
            "result",
        ),
        |c| &c.webhook_deliveries,
    );
    w.per_host_key(
        hosts,
        (
            "flowbalance_dns_syncs_total",
            "Syncs of the service's DNS records with the Cloudflare API, by result (success, failure).",
            "result",
        ),
        |c| &c.dns_syncs,
    );
    w.per_host_key(
        hosts,
        (
            "flowbalance_d1_rows_written_total",
            "D1 rows written by the hostname's object, by table (D1's rows_written: index entries included).",
            "table",
        ),
        |c| &c.d1_rows_written,
    );
    w.per_host(
        hosts,
        (
            "flowbalance_log_rows_skipped_total",
            "counter",
            "Request-log rows counted but not written because the daily D1 budget was spent.",
        ),
        |h| h.counters.log_rows_skipped,
    );

    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

#[cfg(test)]
mod tests;
