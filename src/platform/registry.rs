//! The D1 service registry: which hostnames the admin API created or deleted, so `GET /admin/services` can list every service.

use wasm_bindgen::JsValue;
use worker::*;

const DB_BINDING: &str = "DB";

/// Records a config write (or a delete) for `host`.
pub async fn record(env: &Env, host: &str, version: u64, deleted: bool) -> Result<()> {
    let db = env.d1(DB_BINDING)?;
    db.prepare(
        "INSERT INTO services (hostname, version, updated_ms, deleted) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(hostname) DO UPDATE SET version = excluded.version, updated_ms = excluded.updated_ms, deleted = excluded.deleted",
    )
    // D1 binds JS numbers: versions and millisecond times as f64, not i32.
    .bind(&[
        JsValue::from_str(host),
        JsValue::from_f64(version as f64),
        JsValue::from_f64(Date::now().as_millis() as f64),
        JsValue::from_f64(if deleted { 1.0 } else { 0.0 }),
    ])?
    .run()
    .await?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct Row {
    hostname: String,
    deleted: f64,
}

/// Every hostname the API has touched, with whether it is deleted.
pub async fn list(env: &Env) -> Result<Vec<(String, bool)>> {
    let db = env.d1(DB_BINDING)?;
    let rows: Vec<Row> = db
        .prepare("SELECT hostname, deleted FROM services ORDER BY hostname")
        .all()
        .await?
        .results()?;
    Ok(rows
        .into_iter()
        .map(|r| (r.hostname, r.deleted != 0.0))
        .collect())
}
