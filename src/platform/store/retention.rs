//! Retention: a cron trigger deletes request-log, health-history and minute-rollup rows older than `LOG_RETENTION_DAYS` and hour-rollup rows older than `ROLLUP_RETENTION_DAYS`, in bounded batches.

use worker::*;

use crate::platform::env_string;
use crate::policy::telemetry::retention::{
    cutoff_ms, delete_more, Retention, DELETE_BATCH, LOG_RETENTION, MAX_STATEMENTS,
    ROLLUP_RETENTION,
};

const DB_BINDING: &str = "DB";

/// How a table's old rows are found.
#[derive(Clone, Copy)]
enum Rows {
    /// By rowid, oldest first by this time column.
    ById(&'static str),
    /// A rollup table (WITHOUT ROWID, keyed by hostname, t_ms, backend): by key ranges, hostname
    /// by hostname, so every statement walks the primary key instead of scanning the table.
    ByKey,
}

/// Tables cleaned, how, and under which retention.
const TABLES: [(&str, Rows, Retention); 4] = [
    ("request_logs", Rows::ById("ts_ms"), LOG_RETENTION),
    ("health_events", Rows::ById("at_ms"), LOG_RETENTION),
    ("rollup_minutes", Rows::ByKey, LOG_RETENTION),
    ("rollup_hours", Rows::ByKey, ROLLUP_RETENTION),
];

/// Runs on the deployment's cron (wrangler.toml `[triggers]`): one run for every hostname, so
/// services without health checks (no alarm) and deleted services are cleaned too.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let now = Date::now().as_millis();
    for (table, rows, retention) in TABLES {
        let days = match retention.parse_days(env_string(&env, retention.var).as_deref()) {
            Ok(d) => d,
            Err(e) => {
                // Fail closed: a value that cannot be read deletes nothing.
                console_error!("retention of {table} skipped: {e}");
                continue;
            }
        };
        let cutoff = cutoff_ms(now, days);
        let pruned = match rows {
            Rows::ById(column) => prune_by_id(&env, table, column, cutoff).await,
            Rows::ByKey => prune_by_key(&env, table, cutoff).await,
        };
        match pruned {
            Ok(0) => {}
            Ok(n) => console_log!("retention: {n} rows of {table} older than {days} days deleted"),
            Err(e) => console_error!("retention of {table} failed: {e}"),
        }
    }
}

/// Deletes rows older than `cutoff` from `table`, [`DELETE_BATCH`] per statement, until a
/// statement comes back short or the run's bound is reached; returns how many went.
async fn prune_by_id(env: &Env, table: &str, column: &str, cutoff: u64) -> Result<u64> {
    let db = env.d1(DB_BINDING)?;
    let sql = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < ?1 ORDER BY {column} LIMIT {DELETE_BATCH})"
    );
    let mut total = 0;
    let mut run = 0;
    loop {
        run += 1;
        // D1 binds JS numbers: millisecond times as f64 (an i32 would overflow).
        let deleted = changes(
            db.prepare(&sql)
                .bind(&[(cutoff as f64).into()])?
                .run()
                .await?,
        );
        total += deleted;
        if !delete_more(deleted, run) {
            return Ok(total);
        }
    }
}

#[derive(serde::Deserialize)]
struct Hostname {
    name: String,
}

/// Deletes a rollup table's rows older than `cutoff`: for each hostname that has some, the
/// oldest [`DELETE_BATCH`] keys per statement, at most [`MAX_STATEMENTS`] statements in all
/// (hostnames left over are reached by the next run).
async fn prune_by_key(env: &Env, table: &str, cutoff: u64) -> Result<u64> {
    let db = env.d1(DB_BINDING)?;
    // The hostnames, one primary-key seek each (a skip scan), keeping those with old rows.
    let hosts: Vec<Hostname> = db
        .prepare(format!(
            "WITH RECURSIVE h(name) AS (SELECT MIN(hostname) FROM {table} \
             UNION ALL SELECT (SELECT MIN(hostname) FROM {table} WHERE hostname > h.name) FROM h WHERE h.name IS NOT NULL) \
             SELECT name FROM h WHERE name IS NOT NULL \
             AND EXISTS (SELECT 1 FROM {table} WHERE hostname = h.name AND t_ms < ?1)"
        ))
        .bind(&[(cutoff as f64).into()])?
        .all()
        .await?
        .results()?;
    let sql = format!(
        "DELETE FROM {table} WHERE hostname = ?1 AND t_ms < ?2 AND (hostname, t_ms, backend) IN \
         (SELECT hostname, t_ms, backend FROM {table} WHERE hostname = ?1 AND t_ms < ?2 ORDER BY t_ms LIMIT {DELETE_BATCH})"
    );
    let mut total = 0;
    let mut run = 0;
    for host in hosts {
        loop {
            if run >= MAX_STATEMENTS {
                return Ok(total);
            }
            run += 1;
            let deleted = changes(
                db.prepare(&sql)
                    .bind(&[host.name.as_str().into(), (cutoff as f64).into()])?
                    .run()
                    .await?,
            );
            total += deleted;
            if deleted < u64::from(DELETE_BATCH) {
                break;
            }
        }
    }
    Ok(total)
}

fn changes(result: D1Result) -> u64 {
    result
        .meta()
        .ok()
        .flatten()
        .and_then(|m| m.changes)
        .unwrap_or(0) as u64
}
