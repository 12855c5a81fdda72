//! The D1 request log as the admin API reads it (each hostname's object writes it: see `rollups`).

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::*;

use crate::policy::telemetry::logquery::{Cursor, LogQuery, SqlValue};
use crate::policy::telemetry::record::{Asker, Kept, LogRow, RequestRecord};

const DB_BINDING: &str = "DB";

/// A logged request as the log page shows it: the row plus its id, which paging continues from
/// (negative for a sampled success, which has no row of its own).
#[derive(Serialize, Deserialize)]
pub struct LoggedRequest {
    pub id: i64,
    #[serde(flatten)]
    pub row: LogRow,
}

/// A log-page row as SQLite hands it over: `failed` is still the JSON text of its column.
#[derive(Deserialize)]
struct StoredRow {
    id: i64,
    hostname: String,
    #[serde(flatten)]
    request: RequestRecord,
    kept: Option<Kept>,
    failed: Option<String>,
    rule: Option<String>,
    #[serde(flatten)]
    asker: Asker,
}

impl StoredRow {
    fn logged(self) -> Result<LoggedRequest> {
        let failed = match self.failed.as_deref() {
            None => Vec::new(),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                Error::RustError(format!("request log row {}: failed attempts: {e}", self.id))
            })?,
        };
        Ok(LoggedRequest {
            id: self.id,
            row: LogRow {
                hostname: self.hostname,
                request: self.request,
                failed,
                kept: self.kept,
                rule: self.rule,
                asker: self.asker,
            },
        })
    }
}

/// The log as one table: the kept rows of `request_logs` and the sampled successes inside the
/// hostname's minute rollups (backend '' rows' `samples`), minutes starting after `?{upto}` left
/// out (a page after a cursor needs none of them). A sample's id is `-(minute start + its index +
/// 1)`: unique (a minute holds far fewer than 60,000 samples), stable across reads, and negative,
/// so it never meets a kept row's id and (ts_ms, id) orders and pages the union as it does the table.
fn log_rows(upto: usize) -> String {
    format!(
        "SELECT id, ts_ms, hostname, method, path, status, backend, attempts, latency_ms, kept, failed, rule, \
         query, client_ip, country FROM request_logs WHERE hostname = ?1 UNION ALL \
         SELECT -(m.t_ms + s.key + 1), s.value ->> 'ts_ms', m.hostname, s.value ->> 'method', s.value ->> 'path', \
         s.value ->> 'status', s.value ->> 'backend', s.value ->> 'attempts', s.value ->> 'latency_ms', \
         COALESCE(s.value ->> 'kept', 'sampled'), s.value -> 'failed', s.value ->> 'rule', \
         s.value ->> 'query', s.value ->> 'client_ip', s.value ->> 'country' \
         FROM rollup_minutes AS m, json_each(m.samples) AS s \
         WHERE m.hostname = ?1 AND m.backend = '' AND m.t_ms <= ?{upto} AND m.samples IS NOT NULL"
    )
}

/// One page of a hostname's log (kept rows and sampled successes), newest first, and the
/// `before=` cursor of the next page when there are more rows.
pub async fn page(
    env: &Env,
    host: &str,
    query: &LogQuery,
) -> Result<(Vec<LoggedRequest>, Option<String>)> {
    let db = env.d1(DB_BINDING)?;
    let (conditions, values) = query.conditions();
    // The minutes' bound is bound after the filters' values (?2 on).
    let upto = values.len() + 2;
    let sql = format!(
        "SELECT * FROM ({}) WHERE 1 = 1{conditions} ORDER BY ts_ms DESC, id DESC LIMIT {}",
        log_rows(upto),
        // One more row than asked tells whether a next page exists.
        query.limit + 1
    );
    let mut binds = vec![JsValue::from_str(host)];
    binds.extend(values.iter().map(js_value));
    binds.push(JsValue::from_f64(
        query.before.map_or(f64::MAX, |c| c.ts_ms as f64),
    ));
    let stored: Vec<StoredRow> = db.prepare(&sql).bind(&binds)?.all().await?.results()?;
    let mut rows = stored
        .into_iter()
        .map(StoredRow::logged)
        .collect::<Result<Vec<_>>>()?;
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

/// The hostname's newest logged requests (kept rows and sampled successes) since `since_ms`,
/// at most `limit`, oldest first: what a config preview replays.
pub async fn recent(env: &Env, host: &str, since_ms: u64, limit: u32) -> Result<Vec<LogRow>> {
    let db = env.d1(DB_BINDING)?;
    let sql = format!(
        "SELECT * FROM ({}) WHERE ts_ms >= ?3 ORDER BY ts_ms DESC, id DESC LIMIT {limit}",
        log_rows(2)
    );
    let binds = [
        JsValue::from_str(host),
        JsValue::from_f64(f64::MAX),
        JsValue::from_f64(since_ms as f64),
    ];
    let stored: Vec<StoredRow> = db.prepare(&sql).bind(&binds)?.all().await?.results()?;
    let mut rows = stored
        .into_iter()
        .map(|r| r.logged().map(|l| l.row))
        .collect::<Result<Vec<_>>>()?;
    rows.reverse();
    Ok(rows)
}

fn js_value(v: &SqlValue) -> JsValue {
    match v {
        SqlValue::Text(s) => JsValue::from_str(s),
        SqlValue::Number(n) => JsValue::from_f64(*n),
    }
}
