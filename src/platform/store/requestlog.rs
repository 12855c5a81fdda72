//! The D1 request log as the admin API reads it (each hostname's object writes it: see `rollups`).

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::*;

use crate::policy::telemetry::logquery::{Cursor, LogQuery, MetricsQuery, SqlValue};
use crate::policy::telemetry::record::LogRow;

const DB_BINDING: &str = "DB";

/// A logged request as the log page shows it: the row plus its id, which paging continues from.
#[derive(Serialize, Deserialize)]
pub struct LoggedRequest {
    pub id: u64,
    #[serde(flatten)]
    pub row: LogRow,
}

/// One page of a hostname's log, newest first, and the `before=` cursor of the next page when
/// there are more rows.
pub async fn page(
    env: &Env,
    host: &str,
    query: &LogQuery,
) -> Result<(Vec<LoggedRequest>, Option<String>)> {
    let db = env.d1(DB_BINDING)?;
    let (conditions, values) = query.conditions();
    let sql = format!(
        "SELECT id, ts_ms, hostname, method, path, status, backend, attempts, latency_ms FROM request_logs \
         WHERE hostname = ?1{conditions} ORDER BY ts_ms DESC, id DESC LIMIT {}",
        // One more row than asked tells whether a next page exists.
        query.limit + 1
    );
    let mut binds = vec![JsValue::from_str(host)];
    binds.extend(values.iter().map(js_value));
    let mut rows: Vec<LoggedRequest> = db.prepare(&sql).bind(&binds)?.all().await?.results()?;
    let next = if rows.len() > query.limit as usize {
        rows.truncate(query.limit as usize);
        rows.last().map(|r| {
            Cursor {
                ts_ms: r.row.request.ts_ms,
                id: r.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok((rows, next))
}

fn js_value(v: &SqlValue) -> JsValue {
    match v {
        SqlValue::Text(s) => JsValue::from_str(s),
        SqlValue::Number(n) => JsValue::from_f64(*n),
    }
}

/// Latency percentiles by nearest rank, over rows numbered `rn` 1..=`n` by latency within their
/// group: the p-th percentile is the smallest latency whose rank is at least p% of n.
const PERCENTILES: &str = "MIN(CASE WHEN rn * 100 >= n * 50 THEN latency_ms END) AS p50_ms, \
     MIN(CASE WHEN rn * 100 >= n * 95 THEN latency_ms END) AS p95_ms, \
     MIN(CASE WHEN rn * 100 >= n * 99 THEN latency_ms END) AS p99_ms";

/// Requests, 5xx errors and latency of one group of rows (a backend, a bucket or a hostname).
/// Counts and logged latencies are whole numbers, so they are integers in JSON too (D1 hands
/// every number over as a JavaScript number; as f64 they would serialize as `6.0`).
#[derive(Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    /// Share of requests not answered with a 5xx, 0..=1.
    pub success_rate: Option<f64>,
    pub avg_latency_ms: Option<f64>,
    pub max_latency_ms: Option<u64>,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub retried: u64,
}

const STATS: &str = "COUNT(*) AS requests, SUM(status >= 500) AS errors, \
     1.0 - CAST(SUM(status >= 500) AS REAL) / COUNT(*) AS success_rate, \
     AVG(latency_ms) AS avg_latency_ms, MAX(latency_ms) AS max_latency_ms, SUM(attempts > 1) AS retried";

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

/// The window's attempts per backend: each logged request at the backend that answered it,
/// and each failed attempt at the backend that failed it (a failure with no HTTP answer counts
/// as a 502), so a backend's errors include those another backend covered for.
const ATTEMPTS: &str = "SELECT backend, ts_ms, status, latency_ms, attempts FROM request_logs \
     WHERE hostname = ?1 AND ts_ms >= ?2 UNION ALL \
     SELECT f.value ->> 'backend', r.ts_ms, COALESCE(f.value ->> 'status', 502), f.value ->> 'latency_ms', 1 \
     FROM request_logs AS r, json_each(r.failed) AS f \
     WHERE r.hostname = ?1 AND r.ts_ms >= ?2 AND r.failed IS NOT NULL";

/// Per-backend totals over the last `window_s`, and per-backend buckets when `bucket_s` is set;
/// counts and percentiles are computed by SQLite over the window's attempts ([`ATTEMPTS`]).
pub async fn metrics(
    env: &Env,
    host: &str,
    query: &MetricsQuery,
) -> Result<(Vec<BackendMetrics>, Option<Vec<BucketMetrics>>)> {
    let db = env.d1(DB_BINDING)?;
    let since = Date::now()
        .as_millis()
        .saturating_sub(query.window_s * 1000) as f64;
    let totals = db
        .prepare(format!(
            "WITH w AS (SELECT backend, status, latency_ms, attempts, \
             ROW_NUMBER() OVER (PARTITION BY backend ORDER BY latency_ms) AS rn, \
             COUNT(*) OVER (PARTITION BY backend) AS n \
             FROM ({ATTEMPTS})) \
             SELECT backend, {STATS}, {PERCENTILES} FROM w GROUP BY backend ORDER BY backend"
        ))
        .bind(&[host.into(), since.into()])?
        .all()
        .await?
        .results()?;
    let Some(bucket_s) = query.bucket_s else {
        return Ok((totals, None));
    };
    let bucket_ms = (bucket_s * 1000) as f64;
    let series = db
        .prepare(format!(
            "WITH w AS (SELECT backend, t_ms, status, latency_ms, attempts, \
             ROW_NUMBER() OVER (PARTITION BY backend, t_ms ORDER BY latency_ms) AS rn, \
             COUNT(*) OVER (PARTITION BY backend, t_ms) AS n \
             FROM (SELECT *, CAST(ts_ms / ?3 AS INTEGER) * ?3 AS t_ms FROM ({ATTEMPTS}))) \
             SELECT backend, t_ms, {STATS}, {PERCENTILES} FROM w GROUP BY backend, t_ms ORDER BY backend, t_ms"
        ))
        .bind(&[host.into(), since.into(), bucket_ms.into()])?
        .all()
        .await?
        .results()?;
    Ok((totals, Some(series)))
}

#[derive(Serialize, Deserialize)]
pub struct HostMetrics {
    pub hostname: String,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Every hostname's totals over the last `window_s` seconds, for the overview.
pub async fn by_host(env: &Env, window_s: u64) -> Result<Vec<HostMetrics>> {
    host_totals(env, window_s, None).await
}

/// One hostname's totals over the last `window_s` seconds (None: no requests in the window).
pub async fn service_total(env: &Env, host: &str, window_s: u64) -> Result<Option<Stats>> {
    let rows = host_totals(env, window_s, Some(host)).await?;
    Ok(rows.into_iter().next().map(|r| r.stats))
}

/// Totals per hostname, of every hostname or of `only` one.
async fn host_totals(env: &Env, window_s: u64, only: Option<&str>) -> Result<Vec<HostMetrics>> {
    let db = env.d1(DB_BINDING)?;
    let since = Date::now().as_millis().saturating_sub(window_s * 1000) as f64;
    let filter = if only.is_some() {
        " AND hostname = ?2"
    } else {
        ""
    };
    let mut binds = vec![JsValue::from_f64(since)];
    binds.extend(only.map(JsValue::from_str));
    db.prepare(format!(
        "WITH w AS (SELECT hostname, status, latency_ms, attempts, \
         ROW_NUMBER() OVER (PARTITION BY hostname ORDER BY latency_ms) AS rn, \
         COUNT(*) OVER (PARTITION BY hostname) AS n \
         FROM request_logs WHERE ts_ms >= ?1{filter}) \
         SELECT hostname, {STATS}, {PERCENTILES} FROM w GROUP BY hostname"
    ))
    .bind(&binds)?
    .all()
    .await?
    .results()
}

/// How many of a window's requests got one error status (4xx or 5xx) from one source: a
/// `backend` answered it, or `flowbalance` did because no backend answered (no backend left,
/// every attempt failed).
#[derive(Serialize, Deserialize)]
pub struct ErrorCount {
    pub status: u16,
    pub source: String,
    pub requests: u64,
}

/// The error statuses of a hostname's requests over the last `window_s` seconds, most frequent first.
pub async fn errors_by_status(env: &Env, host: &str, window_s: u64) -> Result<Vec<ErrorCount>> {
    let since = Date::now().as_millis().saturating_sub(window_s * 1000) as f64;
    env.d1(DB_BINDING)?
        .prepare(
            "SELECT status, CASE WHEN backend IS NULL THEN 'flowbalance' ELSE 'backend' END AS source, \
             COUNT(*) AS requests FROM request_logs WHERE hostname = ?1 AND ts_ms >= ?2 AND status >= 400 \
             GROUP BY status, source ORDER BY requests DESC, status",
        )
        .bind(&[host.into(), since.into()])?
        .all()
        .await?
        .results()
}
