//! The D1 request log: each row is written by a flush shared with the requests around it, inside its own request's `waitUntil`, never on the request path.

use std::cell::RefCell;
use std::time::Duration;

use js_sys::futures::future_to_promise;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::*;

use crate::policy::logbatch::{Batch, Queued, COALESCE_MS, ROWS_PER_STATEMENT};

const DB_BINDING: &str = "DB";

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

thread_local! {
    static BATCH: RefCell<Batch<LogRow>> = RefCell::new(Batch::default());
    /// The flush gathering rows now: every request whose row it carries waits on it.
    static FLUSH: RefCell<Option<js_sys::Promise>> = const { RefCell::new(None) };
}

/// Queues one row and keeps this request alive (`waitUntil`) until the flush carrying it has
/// written it: a row never waits for a later request, so a runtime stop after the burst loses none.
pub fn record(env: &Env, ctx: &Context, row: LogRow) {
    let flush = match BATCH.with(|b| b.borrow_mut().push(row)) {
        Queued::Dropped => return,
        Queued::JoinFlush => FLUSH.with(|f| f.borrow().clone()),
        Queued::StartFlush => {
            let env = env.clone();
            let promise = future_to_promise(async move {
                // A short window gathers the rows of concurrent requests into one write.
                Delay::from(Duration::from_millis(COALESCE_MS)).await;
                let rows = BATCH.with(|b| b.borrow_mut().take());
                let dropped = BATCH.with(|b| b.borrow_mut().take_dropped());
                if dropped > 0 {
                    console_error!("request log: {dropped} rows dropped (more than the isolate may hold wait for D1)");
                }
                if let Err(e) = write(&env, &rows).await {
                    console_error!("request log: {} rows lost: {e}", rows.len());
                }
                Ok(JsValue::UNDEFINED)
            });
            FLUSH.with(|f| *f.borrow_mut() = Some(promise.clone()));
            Some(promise)
        }
    };
    // The shared promise itself goes to waitUntil: no Rust future per request.
    if let Some(p) = flush {
        let _ = ctx.as_ref().wait_until(&p);
    }
}

/// One statement per [`ROWS_PER_STATEMENT`] rows, all in one batch: each statement carries its
/// rows as a single JSON parameter that SQLite unpacks with json_each, instead of 8 bound
/// parameters a row (D1 allows 100 per statement).
async fn write(env: &Env, rows: &[LogRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let db = env.d1(DB_BINDING)?;
    let mut statements = Vec::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let json = serde_json::to_string(chunk)?;
        statements.push(
            db.prepare(
                "INSERT INTO request_logs (ts_ms, hostname, method, path, status, backend, attempts, latency_ms) \
                 SELECT j.value ->> 'ts_ms', j.value ->> 'hostname', j.value ->> 'method', j.value ->> 'path', \
                 j.value ->> 'status', j.value ->> 'backend', j.value ->> 'attempts', j.value ->> 'latency_ms' \
                 FROM json_each(?1) AS j",
            )
            .bind(&[JsValue::from_str(&json)])?,
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
