//! Which hostnames have a service: DEFAULT_BACKENDS (parsed once per isolate) and the D1 registry of services the admin API created or deleted.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use wasm_bindgen::JsValue;
use worker::*;

use crate::platform::env_string;
use crate::policy::control::config::{self, ConfigError, Deployment, ServiceConfig};
use crate::policy::health::regions::Region;
use crate::policy::traffic::decision::Reject;

const DB_BINDING: &str = "DB";
/// Registered hostnames remembered per isolate; past this the memory starts over.
const REGISTERED_MAX: usize = 10_000;
/// After D1 refuses a registry lookup, this isolate skips the lookup for this long: on a day the
/// quota is spent, every request would otherwise wait for one more refusal.
const REGISTRY_RETRY_MS: u64 = 30_000;

/// DEFAULT_BACKENDS as parsed, and the deployment it describes (ADMIN_HOSTNAME and the hostnames
/// it balances). An isolate's bindings never change, so this is read once per isolate.
pub struct Defaults {
    hostnames: HashSet<String>,
    /// `decisions.location_hint` of the DEFAULT_BACKENDS services that set one.
    hints: HashMap<String, Region>,
    pub deployment: Deployment,
    pub services: Vec<ServiceConfig>,
    pub errors: Vec<ConfigError>,
}

thread_local! {
    static DEFAULTS: RefCell<Option<Rc<Defaults>>> = const { RefCell::new(None) };
    /// Hostnames the D1 registry has listed: their Durable Object holds their state and answers
    /// for them from then on (421 once deleted), so they need no second lookup. Only "exists" is
    /// remembered: a service the API creates must work at the very next request on any isolate.
    static REGISTERED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Until when (ms) this isolate does not ask D1's registry (see [`REGISTRY_RETRY_MS`]).
    static REGISTRY_DOWN_UNTIL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// DEFAULT_BACKENDS, parsed partially (one service's mistake does not take the others down).
pub fn defaults(env: &Env) -> Rc<Defaults> {
    DEFAULTS.with(|cache| {
        cache
            .borrow_mut()
            .get_or_insert_with(|| {
                let text = env_string(env, "DEFAULT_BACKENDS").unwrap_or_default();
                let admin = Deployment::new(env_string(env, "ADMIN_HOSTNAME").as_deref(), vec![]);
                let (services, errors) = if text.trim().is_empty() {
                    (vec![], vec![])
                } else {
                    config::parse_default_backends_partial(&text, &admin)
                };
                let hostnames: HashSet<String> =
                    services.iter().map(|s| s.hostname.to_string()).collect();
                let hints = services
                    .iter()
                    .filter_map(|s| Some((s.hostname.to_string(), s.decisions.location_hint?)))
                    .collect();
                let mut deployment = admin;
                deployment.balanced.extend(config::default_hostnames(&text));
                Rc::new(Defaults {
                    hostnames,
                    hints,
                    deployment,
                    services,
                    errors,
                })
            })
            .clone()
    })
}

/// Where DEFAULT_BACKENDS wants `host`'s object created (`decisions.location_hint`).
pub fn location_hint(env: &Env, host: &str) -> Option<Region> {
    defaults(env).hints.get(host).copied()
}

/// The refusal the Worker answers itself when no service is configured for `host`, so an unknown
/// hostname never reaches (and never creates) a Durable Object; None when the hostname's object
/// should decide. D1 is read only for hostnames not in DEFAULT_BACKENDS.
///
/// When D1 refuses (quota spent, outage, missing table), the hostname's object decides: it holds
/// the config the API stored, so an API-created service keeps balancing, and an unknown hostname
/// gets the same 421 from its object (at the cost of one object per unknown hostname while D1 is
/// down). The registry is only a filter in front of the objects, never the source of truth.
pub async fn unserved(env: &Env, host: &str) -> Option<Reject> {
    let defaults = defaults(env);
    if defaults.hostnames.contains(host) || REGISTERED.with(|r| r.borrow().contains(host)) {
        return None;
    }
    let now = Date::now().as_millis();
    if now < REGISTRY_DOWN_UNTIL.with(|d| d.get()) {
        return None;
    }
    match registered(env, host).await {
        Ok(true) => {
            REGISTERED.with(|r| {
                let mut r = r.borrow_mut();
                if r.len() >= REGISTERED_MAX {
                    r.clear();
                }
                r.insert(host.to_string());
            });
            None
        }
        Ok(false) if defaults.errors.is_empty() => Some(unknown_host(host)),
        // The hostname may be the service DEFAULT_BACKENDS failed to describe.
        Ok(false) => Some(config_error(host, "DEFAULT_BACKENDS", &defaults.errors)),
        Err(e) => {
            console_error!(
                "service registry unavailable, the hostname's object decides for {}s: {e}",
                REGISTRY_RETRY_MS / 1000
            );
            REGISTRY_DOWN_UNTIL.with(|d| d.set(now + REGISTRY_RETRY_MS));
            None
        }
    }
}

/// Whether the admin API created a service for `host` that has not been deleted.
async fn registered(env: &Env, host: &str) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct Found {
        deleted: f64,
    }
    let row: Option<Found> = env
        .d1(DB_BINDING)?
        .prepare("SELECT deleted FROM services WHERE hostname = ?1")
        .bind(&[JsValue::from_str(host)])?
        .first(None)
        .await?;
    Ok(row.is_some_and(|r| r.deleted == 0.0))
}

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

/// The deployment a config for `host` is checked against: every balanced hostname, including
/// those created through the API (the D1 registry) and `host` itself.
pub async fn deployment_for(env: &Env, host: &str) -> Deployment {
    let mut registered: Vec<String> = match list(env).await {
        Ok(rows) => rows
            .into_iter()
            .filter(|(_, deleted)| !deleted)
            .map(|(h, _)| h)
            .collect(),
        Err(e) => {
            console_error!("service registry unavailable: {e}");
            vec![]
        }
    };
    registered.push(host.to_string());
    crate::platform::deployment(env, registered)
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

/// Every served hostname: DEFAULT_BACKENDS plus those created (minus those deleted) through the
/// API, sorted.
pub async fn service_hosts(env: &Env) -> Vec<String> {
    let defaults = defaults(env);
    let mut hosts: Vec<String> = defaults
        .services
        .iter()
        .map(|s| s.hostname.to_string())
        .collect();
    match list(env).await {
        Ok(rows) => {
            for (host, deleted) in rows {
                if deleted {
                    hosts.retain(|h| *h != host);
                } else if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
        Err(e) => console_error!("service registry unavailable: {e}"),
    }
    hosts.sort();
    hosts
}

/// The answer for a hostname without a service.
pub fn unknown_host(host: &str) -> Reject {
    Reject {
        status: 421,
        message: format!("FlowBalance has no service configured for hostname \"{host}\""),
        retry_after_s: None,
    }
}

/// The answer for a hostname whose config cannot be used.
pub fn config_error(host: &str, source: &str, errs: &[ConfigError]) -> Reject {
    let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    Reject {
        status: 503,
        message: format!(
            "the configuration for \"{host}\" is invalid ({source}): {}",
            list.join("; ")
        ),
        retry_after_s: None,
    }
}
