//! The D1 writes of a hostname's object: its closed minutes and hours and the request-log rows it holds, each statement's rows written counted.

use serde::Serialize;
use wasm_bindgen::JsValue;
use worker::*;

use crate::policy::telemetry::record::LogRow;
use crate::policy::telemetry::rollup::{Period, Tally, HOST_ROW};

const DB_BINDING: &str = "DB";

/// One rollup row as it travels to SQLite inside a JSON parameter.
#[derive(Serialize)]
struct Row<'a> {
    t_ms: u64,
    backend: &'a str,
    #[serde(flatten)]
    tally: &'a Tally,
    /// The histogram as JSON text (a column of its own).
    hist_text: String,
    /// The minute's sampled successes as JSON text (the hostname's row only).
    samples_text: Option<String>,
}

const COLUMNS: &str = "requests, c2xx, c3xx, c4xx, c5xx, cerr, rate_limited, denied, no_backend, \
     retried, failed_over, latency_sum_ms";

/// A whole-value upsert of rollup rows: writing the same row twice leaves the same row, so a
/// write that is repeated after a lost reply counts nothing twice.
fn upsert(table: &str, samples: bool) -> String {
    let picks: Vec<String> = COLUMNS
        .split(", ")
        .map(|c| format!("j.value ->> '{c}'"))
        .collect();
    let updates: Vec<String> = COLUMNS
        .split(", ")
        .chain(["hist"])
        .chain(samples.then_some("samples"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let (col, pick) = if samples {
        (", samples", ", j.value ->> 'samples_text'")
    } else {
        ("", "")
    };
    format!(
        "INSERT INTO {table} (hostname, t_ms, backend, {COLUMNS}, hist{col}) \
         SELECT ?1, j.value ->> 't_ms', j.value ->> 'backend', {}, j.value ->> 'hist_text'{pick} \
         FROM json_each(?2) AS j WHERE true \
         ON CONFLICT (hostname, t_ms, backend) DO UPDATE SET {}",
        picks.join(", "),
        updates.join(", ")
    )
}

fn rows(periods: &[Period], samples: bool) -> Result<String> {
    let mut out = Vec::new();
    for p in periods {
        let samples_text = if samples && !p.samples.is_empty() {
            Some(serde_json::to_string(&p.samples)?)
        } else {
            None
        };
        for (backend, tally) in &p.rows {
            out.push(Row {
                t_ms: p.t_ms,
                backend,
                tally,
                hist_text: serde_json::to_string(&tally.hist)?,
                samples_text: if backend == HOST_ROW {
                    samples_text.clone()
                } else {
                    None
                },
            });
        }
    }
    Ok(serde_json::to_string(&out)?)
}

/// What one write asks for.
pub struct Write<'a> {
    pub host: &'a str,
    pub minutes: &'a [Period],
    pub hours: &'a [Period],
    /// Keep the minutes' sampled successes (false once the day's budget nears its end).
    pub samples: bool,
    pub logs: &'a [LogRow],
}

/// Writes everything in one batch (one transaction); returns D1's rows written per table.
pub async fn write(env: &Env, w: &Write<'_>) -> Result<Vec<(&'static str, u64)>> {
    let db = env.d1(DB_BINDING)?;
    let host = JsValue::from_str(w.host);
    let mut statements = Vec::new();
    let mut tables = Vec::new();
    if !w.minutes.is_empty() {
        let json = rows(w.minutes, w.samples)?;
        statements.push(
            db.prepare(upsert("rollup_minutes", true))
                .bind(&[host.clone(), json.into()])?,
        );
        tables.push("rollup_minutes");
    }
    if !w.hours.is_empty() {
        let json = rows(w.hours, false)?;
        statements.push(
            db.prepare(upsert("rollup_hours", false))
                .bind(&[host.clone(), json.into()])?,
        );
        tables.push("rollup_hours");
    }
    if !w.logs.is_empty() {
        let json = serde_json::to_string(&w.logs)?;
        statements.push(
            db.prepare(
                "INSERT INTO request_logs (ts_ms, hostname, method, path, status, backend, attempts, latency_ms, kept, failed, rule, \
                 query, client_ip, country) \
                 SELECT j.value ->> 'ts_ms', j.value ->> 'hostname', j.value ->> 'method', j.value ->> 'path', \
                 j.value ->> 'status', j.value ->> 'backend', j.value ->> 'attempts', j.value ->> 'latency_ms', \
                 j.value ->> 'kept', j.value -> 'failed', j.value ->> 'rule', j.value ->> 'query', \
                 j.value ->> 'client_ip', j.value ->> 'country' FROM json_each(?1) AS j",
            )
            .bind(&[json.into()])?,
        );
        tables.push("request_logs");
    }
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let results = db.batch(statements).await?;
    Ok(tables
        .into_iter()
        .zip(results.iter().map(rows_written))
        .collect())
}

/// D1's own count of rows a statement wrote (index entries included).
pub fn rows_written(r: &D1Result) -> u64 {
    r.meta()
        .ok()
        .flatten()
        .and_then(|m| m.rows_written)
        .unwrap_or(0) as u64
}
