//! The D1 health history: health and breaker transitions, written in one statement per update by the hostname's Durable Object, off the request path.

use wasm_bindgen::JsValue;
use worker::*;

use crate::policy::health::transitions::HealthEvent;

const DB_BINDING: &str = "DB";

/// Writes `events` (one probe round's or one report's) in the background: the decision that
/// found them does not wait for D1.
pub fn record(env: &Env, events: &[HealthEvent]) {
    if events.is_empty() {
        return;
    }
    let env = env.clone();
    let events = events.to_vec();
    js_sys::futures::spawn_local(async move { store(&env, &events).await });
}

/// Writes `events` now (from the alarm's probe round, which no client waits for).
pub async fn store(env: &Env, events: &[HealthEvent]) {
    if events.is_empty() {
        return;
    }
    let written = match serde_json::to_string(events) {
        Ok(json) => write(env, &json).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = written {
        console_error!("health history: {} transitions lost: {e}", events.len());
    }
}

async fn write(env: &Env, json: &str) -> Result<()> {
    env.d1(DB_BINDING)?
        .prepare(
            "INSERT INTO health_events (hostname, backend, at_ms, kind, from_state, to_state, reason, region) \
             SELECT j.value ->> 'hostname', j.value ->> 'backend', j.value ->> 'at_ms', j.value ->> 'kind', \
             j.value ->> 'from', j.value ->> 'to', j.value ->> 'reason', j.value ->> 'region' FROM json_each(?1) AS j",
        )
        .bind(&[JsValue::from_str(json)])?
        .run()
        .await?;
    Ok(())
}

/// The newest `limit` transitions of a hostname, newest first.
pub async fn recent(env: &Env, host: &str, limit: u32) -> Result<Vec<HealthEvent>> {
    env.d1(DB_BINDING)?
        .prepare(
            "SELECT hostname, backend, at_ms, kind, from_state AS \"from\", to_state AS \"to\", reason, region \
             FROM health_events WHERE hostname = ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2",
        )
        .bind(&[host.into(), f64::from(limit).into()])?
        .all()
        .await?
        .results()
}
