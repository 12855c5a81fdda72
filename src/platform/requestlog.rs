//! The D1 request log: rows are buffered in the isolate and written in batches after responses, never on the request path.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::*;

const DB_BINDING: &str = "DB";
/// A batch is written when this many rows wait, or when the oldest waited this long.
const BATCH_ROWS: usize = 200;
const BATCH_MS: u64 = 2_000;
/// Rows older than this are deleted, every RETENTION_EVERY-th batch.
const RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
const RETENTION_EVERY: u32 = 100;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogRow {
    pub ts_ms: u64,
    pub hostname: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub backend: Option<String>,
    pub attempts: u32,
    pub latency_ms: u64,
}

#[derive(Default)]
struct Buffer {
    rows: Vec<LogRow>,
    batches: u32,
}

thread_local! {
    static BUFFER: RefCell<Buffer> = RefCell::new(Buffer::default());
}

/// Queues one row; when a batch is due, writes it after the response (ctx.wait_until).
pub fn record(env: &Env, ctx: &Context, row: LogRow) {
    let now = row.ts_ms;
    let due = BUFFER.with(|b| {
        let mut b = b.borrow_mut();
        b.rows.push(row);
        let oldest = b.rows.first().map(|r| r.ts_ms).unwrap_or(now);
        if b.rows.len() >= BATCH_ROWS || now.saturating_sub(oldest) >= BATCH_MS {
            b.batches = b.batches.wrapping_add(1);
            Some((
                std::mem::take(&mut b.rows),
                b.batches.is_multiple_of(RETENTION_EVERY),
            ))
        } else {
            None
        }
    });
    if let Some((rows, prune)) = due {
        let env = env.clone();
        ctx.wait_until(async move {
            if let Err(e) = write(&env, rows, prune).await {
                console_error!("request log batch lost: {e}");
            }
        });
    }
}

/// One statement per batch: the rows go in as a single JSON parameter that SQLite unpacks with
/// json_each, instead of 8 bound parameters a row (D1 allows 100 per statement).
async fn write(env: &Env, rows: Vec<LogRow>, prune: bool) -> Result<()> {
    let db = env.d1(DB_BINDING)?;
    let json = serde_json::to_string(&rows)?;
    let mut statements = vec![db
        .prepare(
            "INSERT INTO request_logs (ts_ms, hostname, method, path, status, backend, attempts, latency_ms) \
             SELECT j.value ->> 'ts_ms', j.value ->> 'hostname', j.value ->> 'method', j.value ->> 'path', \
             j.value ->> 'status', j.value ->> 'backend', j.value ->> 'attempts', j.value ->> 'latency_ms' \
             FROM json_each(?1) AS j",
        )
        .bind(&[JsValue::from_str(&json)])?];
    if prune {
        // D1 binds JS numbers: millisecond times as f64 (an i32 would overflow).
        let cutoff = Date::now().as_millis().saturating_sub(RETENTION_MS) as f64;
        statements.push(
            db.prepare("DELETE FROM request_logs WHERE ts_ms < ?1")
                .bind(&[cutoff.into()])?,
        );
    }
    db.batch(statements).await?;
    Ok(())
}

/// The newest `limit` rows for a hostname.
pub async fn recent(env: &Env, host: &str, limit: u32) -> Result<Vec<LogRow>> {
    let db = env.d1(DB_BINDING)?;
    db.prepare(
        "SELECT ts_ms, hostname, method, path, status, backend, attempts, latency_ms FROM request_logs \
         WHERE hostname = ?1 ORDER BY ts_ms DESC, id DESC LIMIT ?2",
    )
    .bind(&[host.into(), f64::from(limit).into()])?
    .all()
    .await?
    .results()
}

#[derive(Serialize, Deserialize)]
pub struct BackendMetrics {
    pub backend: Option<String>,
    pub requests: f64,
    pub errors: f64,
    pub avg_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub retried: f64,
}

/// Per-backend request counts, 5xx counts, latency and retried requests over the last `window_ms`.
pub async fn metrics(env: &Env, host: &str, window_ms: u64) -> Result<Vec<BackendMetrics>> {
    let db = env.d1(DB_BINDING)?;
    let since = Date::now().as_millis().saturating_sub(window_ms) as f64;
    db.prepare(
        "SELECT backend, COUNT(*) AS requests, SUM(status >= 500) AS errors, AVG(latency_ms) AS avg_latency_ms, \
         MAX(latency_ms) AS max_latency_ms, SUM(attempts > 1) AS retried FROM request_logs \
         WHERE hostname = ?1 AND ts_ms >= ?2 GROUP BY backend ORDER BY backend",
    )
    .bind(&[host.into(), since.into()])?
    .all()
    .await?
    .results()
}
