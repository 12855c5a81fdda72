//! D1's state and the deployment's daily ledger: whether D1 answers, the day's rows written (`d1_usage`, added to by each object after its writes) and the daily budget.

use serde::Serialize;
use wasm_bindgen::JsValue;
use worker::*;

use crate::platform::env_string;
use crate::policy::telemetry::budget::{self, State};

const DB_BINDING: &str = "DB";

thread_local! {
    /// `D1_DAILY_ROWS_BUDGET`, read once per isolate (bindings never change within one).
    static BUDGET: std::cell::OnceCell<u64> = const { std::cell::OnceCell::new() };
}

/// The deployment's daily budget of D1 rows written. A value that cannot be read is logged and
/// the default used: the budget only slows logging down, so refusing to run would cost more.
pub fn daily_budget(env: &Env) -> u64 {
    BUDGET.with(|b| {
        *b.get_or_init(
            || match budget::parse(env_string(env, "D1_DAILY_ROWS_BUDGET").as_deref()) {
                Ok(n) => n,
                Err(e) => {
                    console_error!("{e}; using {}", budget::DEFAULT_DAILY_ROWS);
                    budget::DEFAULT_DAILY_ROWS
                }
            },
        )
    })
}

/// Rows written today (UTC) by every table. This is also the probe of whether D1 answers: it
/// reads a real table, so a database without its migrations counts as down (`SELECT 1` would not).
pub async fn rows_today(env: &Env, now_ms: u64) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Sum {
        rows: f64,
    }
    let sum: Option<Sum> = env
        .d1(DB_BINDING)?
        .prepare("SELECT COALESCE(SUM(rows), 0) AS rows FROM d1_usage WHERE day = ?1")
        .bind(&[JsValue::from_str(&budget::day_of(now_ms))])?
        .first(None)
        .await?;
    // D1 hands numbers over as JavaScript numbers; a row count is whole and non-negative.
    Ok(sum.map_or(0, |s| s.rows.max(0.0) as u64))
}

/// Adds `rows` to the deployment's count for `day`; returns the day's total and the rows this
/// statement wrote itself.
pub async fn add_usage(env: &Env, day: &str, rows: u64) -> Result<(u64, u64)> {
    let db = env.d1(DB_BINDING)?;
    let result = db
        .prepare(
            "INSERT INTO d1_usage (day, tbl, rows) VALUES (?1, 'all', ?2) \
             ON CONFLICT (day, tbl) DO UPDATE SET rows = rows + excluded.rows RETURNING rows",
        )
        .bind(&[day.into(), (rows as f64).into()])?
        .all()
        .await?;
    let own = super::rollups::rows_written(&result);
    let total = result
        .results::<serde_json::Value>()?
        .first()
        .and_then(|r| r.get("rows"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0) as u64;
    Ok((total, own))
}

/// D1's own message, as an operator reads it: the cause of a D1 error (its `Display` is a debug
/// dump with a stack), the message of any other, without JavaScript's `Error: ` prefix.
pub fn reason(e: &Error) -> String {
    let text = match e {
        Error::D1(d1) => d1.cause(),
        other => other.to_string(),
    };
    text.trim_start_matches("Error: ").to_string()
}

/// `GET /admin/d1`.
#[derive(Serialize)]
pub struct Status {
    pub up: bool,
    /// D1's own message when it refused the probe.
    pub reason: Option<String>,
    pub budget: u64,
    pub rows_today: u64,
    pub state: State,
}

/// Asks D1 for the day's rows written; a refusal is the answer "down", with D1's message.
pub async fn status(env: &Env) -> Status {
    let budget = daily_budget(env);
    let (up, reason, rows) = match rows_today(env, Date::now().as_millis()).await {
        Ok(n) => (true, None, n),
        Err(e) => (false, Some(reason(&e)), 0),
    };
    Status {
        up,
        reason,
        budget,
        rows_today: rows,
        state: budget::state(rows, budget),
    }
}
