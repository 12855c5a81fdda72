//! Analytics read from the rollups (D1's `rollup_minutes` and `rollup_hours`): per-backend and per-hostname counts and percentiles, series, and errors by status.

use serde::{Deserialize, Serialize};
use worker::*;

use crate::policy::telemetry::logquery::{MetricsQuery, Rollup};
use crate::policy::telemetry::metrics::BUCKETS_MS;
use crate::policy::telemetry::percentiles::percentile_ms;

const DB_BINDING: &str = "DB";

/// Requests, errors and latency of one group of rollup rows (a backend, a bucket or a hostname).
/// Counts and percentiles are whole numbers, so they are integers in JSON too.
#[derive(Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    /// Share of requests not counted as errors, 0..=1.
    pub success_rate: Option<f64>,
    pub avg_latency_ms: Option<f64>,
    /// Always null: the rollups keep a histogram, which has no maximum. Kept so the shape of
    /// `/metrics` stays as it was.
    pub max_latency_ms: Option<u64>,
    /// Interpolated within the histogram bucket ([`crate::policy::telemetry::percentiles`]).
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub retried: u64,
}

#[derive(Serialize, Deserialize)]
pub struct BackendMetrics {
    pub backend: Option<String>,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Serialize, Deserialize)]
pub struct BucketMetrics {
    pub backend: Option<String>,
    pub t_ms: u64,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Serialize, Deserialize)]
pub struct HostMetrics {
    pub hostname: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// One group's sums as SQLite hands them over: `key` is the backend or the hostname, `timed` the
/// attempts the latency sum and histogram cover, `hist` the summed histogram as a JSON array.
#[derive(Deserialize)]
struct Sums {
    key: String,
    /// The bucket's start, in series (named apart from the rows' own `t_ms`, which WHERE reads).
    #[serde(default, rename = "bucket_t")]
    t_ms: Option<u64>,
    requests: u64,
    errors: u64,
    retried: u64,
    latency_sum_ms: u64,
    timed: u64,
    hist: String,
}

impl Sums {
    fn stats(&self) -> Result<Stats> {
        let hist: Vec<u64> = serde_json::from_str(&self.hist)
            .map_err(|e| Error::RustError(format!("rollup histogram of {}: {e}", self.key)))?;
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        Ok(Stats {
            requests: self.requests,
            errors: self.errors,
            success_rate: ratio(self.errors, self.requests).map(|e| 1.0 - e),
            avg_latency_ms: ratio(self.latency_sum_ms, self.timed),
            max_latency_ms: None,
            p50_ms: percentile_ms(&hist, 50.0),
            p95_ms: percentile_ms(&hist, 95.0),
            p99_ms: percentile_ms(&hist, 99.0),
            retried: self.retried,
        })
    }
}

/// A backend row's attempts: every answer class and the attempts that got no HTTP answer.
const ATTEMPTS: &str = "c2xx + c3xx + c4xx + c5xx + cerr";

/// `json_array(COALESCE(SUM(<each bucket of hist>), 0), ...)` over the rows `filter` picks (SQL
/// that is true for rows to count, e.g. `backend <> ''`): the summed histogram, one entry per
/// bucket of [`BUCKETS_MS`] and +Inf, added up by SQLite.
fn summed_hist(filter: &str) -> String {
    let sums: Vec<String> = (0..=BUCKETS_MS.len())
        .map(|i| format!("COALESCE(SUM(CASE WHEN {filter} THEN hist ->> '$[{i}]' END), 0)"))
        .collect();
    format!("json_array({}) AS hist", sums.join(", "))
}

/// The first row start (ms) a window of `window_s` seconds ending now reaches: every row whose
/// period overlaps the window counts (windows are rounded out to whole minutes or hours).
fn first_row_ms(window_s: u64, rollup: Rollup) -> f64 {
    let since = Date::now().as_millis().saturating_sub(window_s * 1000);
    // D1 binds JS numbers: millisecond times as f64.
    (since.saturating_sub(rollup.period_ms() - 1)) as f64
}

/// Per-backend totals over the window, and per-backend buckets when `bucket_s` is set. A backend's
/// requests are the attempts FlowBalance sent it, its errors its 5xx and failed connections.
/// Backend '' (the hostname as clients saw it) is not a backend and is left out.
pub async fn metrics(
    env: &Env,
    host: &str,
    query: &MetricsQuery,
) -> Result<(Vec<BackendMetrics>, Option<Vec<BucketMetrics>>)> {
    let db = env.d1(DB_BINDING)?;
    let per_backend = |rollup: Rollup, bucketed: bool| {
        let (t_col, t_group) = if bucketed {
            (", CAST(t_ms / ?3 AS INTEGER) * ?3 AS bucket_t", ", 2")
        } else {
            ("", "")
        };
        format!(
            "SELECT backend AS key{t_col}, SUM({ATTEMPTS}) AS requests, SUM(c5xx + cerr) AS errors, \
             SUM(retried) AS retried, SUM(latency_sum_ms) AS latency_sum_ms, SUM({ATTEMPTS}) AS timed, {} \
             FROM {} WHERE hostname = ?1 AND t_ms >= ?2 AND backend <> '' GROUP BY 1{t_group} ORDER BY 1{t_group}",
            summed_hist("1"),
            rollup.table()
        )
    };
    let rollup = query.totals_from();
    let totals: Vec<Sums> = db
        .prepare(per_backend(rollup, false))
        .bind(&[host.into(), first_row_ms(query.window_s, rollup).into()])?
        .all()
        .await?
        .results()?;
    let totals = totals
        .iter()
        .map(|s| {
            Ok(BackendMetrics {
                backend: Some(s.key.clone()),
                stats: s.stats()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (Some(bucket_s), Some(rollup)) = (query.bucket_s, query.series_from()) else {
        return Ok((totals, None));
    };
    let series: Vec<Sums> = db
        .prepare(per_backend(rollup, true))
        .bind(&[
            host.into(),
            first_row_ms(query.window_s, rollup).into(),
            ((bucket_s * 1000) as f64).into(),
        ])?
        .all()
        .await?
        .results()?;
    let series = series
        .iter()
        .map(|s| {
            Ok(BucketMetrics {
                backend: Some(s.key.clone()),
                t_ms: s.t_ms.unwrap_or(0),
                stats: s.stats()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((totals, Some(series)))
}

/// Every hostname's totals over the last `window_s` seconds, for the overview.
pub async fn by_host(env: &Env, window_s: u64) -> Result<Vec<HostMetrics>> {
    host_totals(env, window_s, None).await
}

/// One hostname's totals over the last `window_s` seconds (None: no rows in the window).
pub async fn service_total(env: &Env, host: &str, window_s: u64) -> Result<Option<Stats>> {
    let rows = host_totals(env, window_s, Some(host)).await?;
    Ok(rows.into_iter().next().map(|r| r.stats))
}

/// Totals per hostname, of every hostname or of `only` one. Counts come from the hostname's own
/// rows (backend ''): what its clients were answered, errors being 5xx answers. Latency comes from
/// its backends' rows: the time spent at backends, the only latency the histograms hold per attempt.
async fn host_totals(env: &Env, window_s: u64, only: Option<&str>) -> Result<Vec<HostMetrics>> {
    let db = env.d1(DB_BINDING)?;
    let rollup = Rollup::for_window(window_s);
    let filter = if only.is_some() {
        " AND hostname = ?2"
    } else {
        ""
    };
    let mut binds = vec![first_row_ms(window_s, rollup).into()];
    binds.extend(only.map(wasm_bindgen::JsValue::from_str));
    let sums: Vec<Sums> = db
        .prepare(format!(
            "SELECT hostname AS key, COALESCE(SUM(CASE WHEN backend = '' THEN requests END), 0) AS requests, \
             COALESCE(SUM(CASE WHEN backend = '' THEN c5xx END), 0) AS errors, \
             COALESCE(SUM(CASE WHEN backend = '' THEN retried END), 0) AS retried, \
             COALESCE(SUM(CASE WHEN backend <> '' THEN latency_sum_ms END), 0) AS latency_sum_ms, \
             COALESCE(SUM(CASE WHEN backend <> '' THEN {ATTEMPTS} END), 0) AS timed, {} \
             FROM {} WHERE t_ms >= ?1{filter} GROUP BY hostname ORDER BY hostname",
            summed_hist("backend <> ''"),
            rollup.table()
        ))
        .bind(&binds)?
        .all()
        .await?
        .results()?;
    sums.iter()
        .map(|s| {
            Ok(HostMetrics {
                hostname: s.key.clone(),
                stats: s.stats()?,
            })
        })
        .collect()
}

/// How many of a window's requests got one error status (4xx or 5xx) from one source: a
/// `backend` answered it, or `flowbalance` did itself (no backend left, every attempt failed,
/// rate limited, denied). `status` is the exact code when known; `class` is always set.
#[derive(Serialize, Deserialize)]
pub struct ErrorCount {
    pub status: Option<u16>,
    pub class: String,
    pub source: String,
    pub requests: u64,
}

#[derive(Deserialize)]
struct KeptCount {
    status: u16,
    source: String,
    requests: u64,
}

/// The error statuses of a hostname's requests over the last `window_s` seconds, most frequent
/// first. Exact codes come from the request log: every 5xx answer and every refusal by
/// FlowBalance itself is a kept row there, so counting those rows is exact (the rollups only know
/// classes). A backend's 4xx answers are not kept one by one: they come from the backends' rollup
/// rows as one `4xx` entry with no exact status.
pub async fn errors_by_status(env: &Env, host: &str, window_s: u64) -> Result<Vec<ErrorCount>> {
    let db = env.d1(DB_BINDING)?;
    let since = Date::now().as_millis().saturating_sub(window_s * 1000) as f64;
    let rollup = Rollup::for_window(window_s);
    let kept = db
        .prepare(
            "SELECT status, CASE WHEN backend IS NULL THEN 'flowbalance' ELSE 'backend' END AS source, \
             COUNT(*) AS requests FROM request_logs WHERE hostname = ?1 AND ts_ms >= ?2 \
             AND (status >= 500 OR (status >= 400 AND backend IS NULL)) GROUP BY status, source",
        )
        .bind(&[host.into(), since.into()])?;
    let backend_4xx = db
        .prepare(format!(
            "SELECT COALESCE(SUM(c4xx), 0) AS n FROM {} WHERE hostname = ?1 AND t_ms >= ?2 AND backend <> ''",
            rollup.table()
        ))
        .bind(&[host.into(), first_row_ms(window_s, rollup).into()])?;
    let (kept, backend_4xx) =
        futures_util::try_join!(kept.all(), backend_4xx.first::<u64>(Some("n")))?;
    let mut counts: Vec<ErrorCount> = kept
        .results::<KeptCount>()?
        .into_iter()
        .map(|k| ErrorCount {
            status: Some(k.status),
            class: format!("{}xx", k.status / 100),
            source: k.source,
            requests: k.requests,
        })
        .collect();
    if let Some(n) = backend_4xx.filter(|n| *n > 0) {
        counts.push(ErrorCount {
            status: None,
            class: "4xx".into(),
            source: "backend".into(),
            requests: n,
        });
    }
    counts.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.status.cmp(&b.status)));
    Ok(counts)
}
