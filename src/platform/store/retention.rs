//! Log retention: a cron trigger deletes request-log and health-history rows older than `LOG_RETENTION_DAYS`, in bounded batches.

use worker::*;

use crate::platform::env_string;
use crate::policy::telemetry::retention::{cutoff_ms, delete_more, parse_days, DELETE_BATCH};

const DB_BINDING: &str = "DB";
/// Tables cleaned, with their time column.
const TABLES: [(&str, &str); 2] = [("request_logs", "ts_ms"), ("health_events", "at_ms")];

/// Runs on the deployment's cron (wrangler.toml `[triggers]`): one run for every hostname, so
/// services without health checks (no alarm) and deleted services are cleaned too.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let days = match parse_days(env_string(&env, "LOG_RETENTION_DAYS").as_deref()) {
        Ok(d) => d,
        Err(e) => {
            // Fail closed: a value that cannot be read deletes nothing.
            console_error!("log retention skipped: {e}");
            return;
        }
    };
    let cutoff = cutoff_ms(Date::now().as_millis(), days);
    for (table, column) in TABLES {
        match prune(&env, table, column, cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                console_log!("log retention: {n} rows of {table} older than {days} days deleted")
            }
            Err(e) => console_error!("log retention of {table} failed: {e}"),
        }
    }
}

/// Deletes rows older than `cutoff` from `table`, [`DELETE_BATCH`] per statement, until a
/// statement comes back short or the run's bound is reached; returns how many went.
async fn prune(env: &Env, table: &str, column: &str, cutoff: u64) -> Result<u64> {
    let db = env.d1(DB_BINDING)?;
    let sql = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < ?1 ORDER BY {column} LIMIT {DELETE_BATCH})"
    );
    let mut total = 0;
    let mut run = 0;
    loop {
        run += 1;
        // D1 binds JS numbers: millisecond times as f64 (an i32 would overflow).
        let result = db
            .prepare(&sql)
            .bind(&[(cutoff as f64).into()])?
            .run()
            .await?;
        let deleted = result.meta()?.and_then(|m| m.changes).unwrap_or(0) as u64;
        total += deleted;
        if !delete_more(deleted, run) {
            return Ok(total);
        }
    }
}
