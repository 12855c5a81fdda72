//! The per-hostname Durable Object: owns the service's config and live backend state in storage, answers routing decisions, and probes backends on its alarm.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use worker::url;
use worker::*;

use crate::platform::probe::{probe_backend, ProbeResult};
use crate::platform::{env_string, error_response};
use crate::policy::auth::Throttle;
use crate::policy::changes;
use crate::policy::config::{self, ServiceConfig};
use crate::policy::decision::{DecideRequest, Outcome, Reject, ReportRequest, Verdict};
use crate::policy::fleet::{BackendRecord, Fleet, RequestFacts};
use crate::policy::health;
use crate::policy::rng::SplitMix64;

const KEY_HOST: &str = "host";
const KEY_CONFIG: &str = "config";
const KEY_BACKENDS: &str = "backends";
const KEY_HISTORY: &str = "history";
/// Set when the API deleted the service, so DEFAULT_BACKENDS does not bring it back.
const KEY_DELETED: &str = "deleted";
/// Config versions kept for `config/history` and rollback.
const HISTORY_LEN: usize = 20;

/// One accepted config version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub ts_ms: u64,
    pub config: serde_json::Value,
}

/// A stored config: the canonical JSON plus its version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredConfig {
    pub version: u64,
    pub config: serde_json::Value,
}

/// Where the service's config came from, or why there is none.
enum Service {
    Ready(Box<Fleet>),
    Missing(Reject),
}

#[durable_object]
pub struct Balancer {
    state: State,
    env: Env,
    service: RefCell<Option<Service>>,
    host: RefCell<Option<String>>,
    /// When the next alarm is known to be set (ms); None means "check storage".
    alarm_at: RefCell<Option<u64>>,
    rng: RefCell<SplitMix64>,
    /// Failed admin logins per client; used only by the one throttle object (see admin.rs).
    throttle: RefCell<Throttle>,
    /// Signs affinity cookies when no secret is configured: random per object lifetime, so pins
    /// cannot be forged; they just re-pin after the object restarts.
    fallback_secret: Vec<u8>,
}

impl DurableObject for Balancer {
    fn new(state: State, env: Env) -> Self {
        let random = random_bytes();
        let seed = u64::from_le_bytes(random[..8].try_into().unwrap_or_default())
            ^ Date::now().as_millis();
        Self {
            state,
            env,
            service: RefCell::new(None),
            host: RefCell::new(None),
            alarm_at: RefCell::new(None),
            rng: RefCell::new(SplitMix64(seed)),
            fallback_secret: random.to_vec(),
            throttle: RefCell::new(Throttle::default()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        if path == "/decide" {
            return self.decide(&req).await;
        }
        if path == "/report" {
            return self.report(&mut req).await;
        }
        if path == "/auth/attempt" {
            return self.login_attempt(&req);
        }
        if let Some(host) = req.headers().get("x-fb-host")? {
            self.ensure_loaded(&host).await?;
        } else {
            self.ensure_loaded_from_storage().await?;
        }
        self.watchdog(Self::now()).await?;
        match (req.method(), path.as_str()) {
            (Method::Get, "/status") => self.status(),
            (Method::Post, "/probe") => {
                if !self.fleet_ready() {
                    return self.status();
                }
                let results = self.probe_all().await?;
                Response::from_json(&serde_json::json!({ "results": results }))
            }
            (Method::Get, "/config") => self.get_config(),
            (Method::Post | Method::Put, "/config") => {
                let if_match = if_match(&req)?;
                match read_json(&mut req).await? {
                    Ok(body) => self.put_config(&body, if_match).await,
                    Err(resp) => Ok(resp),
                }
            }
            (Method::Delete, "/config") => self.delete_config(if_match(&req)?).await,
            (Method::Get, "/config/history") => self.history().await,
            (Method::Post, "/config/rollback") => {
                let if_match = if_match(&req)?;
                match read_json(&mut req).await? {
                    Ok(body) => self.rollback(&body, if_match).await,
                    Err(resp) => Ok(resp),
                }
            }
            (Method::Post | Method::Patch | Method::Delete, "/backends") => {
                let if_match = if_match(&req)?;
                let method = req.method();
                let body = if method == Method::Delete {
                    let url = req.url()?;
                    let target = url
                        .query_pairs()
                        .find(|(k, _)| k == "url")
                        .map(|(_, v)| v.to_string());
                    match target {
                        Some(u) => serde_json::Value::String(u),
                        None => {
                            return invalid(vec![err(
                                "url",
                                "required: ?url=<backend URL> names the backend to remove",
                            )])
                        }
                    }
                } else {
                    match read_json(&mut req).await? {
                        Ok(body) => body,
                        Err(resp) => return Ok(resp),
                    }
                };
                self.change_backends(method, &body, if_match).await
            }
            _ => error_response(404, "unknown Durable Object route", None),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        // Alarms are at-least-once: probing twice is harmless, and re-arming is unconditional.
        *self.alarm_at.borrow_mut() = None;
        self.ensure_loaded_from_storage().await?;
        if self.fleet_ready() {
            if let Err(e) = self.probe_all().await {
                console_error!("probe round failed: {e}");
            }
        }
        self.arm_next().await?;
        Response::empty()
    }
}

impl Balancer {
    /// One admin login attempt: 429 with the wait in ms while the client is locked out, else
    /// records the attempt's result.
    fn login_attempt(&self, req: &Request) -> Result<Response> {
        let url = req.inner().url();
        let mut client = String::from("unknown");
        let mut ok = false;
        for (k, v) in query_params(&url) {
            match k.as_ref() {
                "c" => client = v.into_owned(),
                "ok" => ok = v == "1",
                _ => {}
            }
        }
        let now = Self::now();
        let mut throttle = self.throttle.borrow_mut();
        if let Err(wait_ms) = throttle.check(&client, now) {
            return Ok(ResponseBuilder::new()
                .with_status(429)
                .fixed(wait_ms.to_string().into_bytes()));
        }
        if ok {
            throttle.record_success(&client);
        } else {
            throttle.record_failure(&client, now);
        }
        Ok(ResponseBuilder::new().with_status(204).empty())
    }

    fn probing_enabled(&self) -> bool {
        matches!(&*self.service.borrow(), Some(Service::Ready(f)) if f.cfg.health.enabled)
    }

    fn fleet_ready(&self) -> bool {
        matches!(&*self.service.borrow(), Some(Service::Ready(_)))
    }

    fn now() -> u64 {
        Date::now().as_millis()
    }

    /// Loads config and state once per object lifetime; later requests read memory only.
    async fn ensure_loaded(&self, host: &str) -> Result<()> {
        if self.service.borrow().is_some() {
            return Ok(());
        }
        *self.host.borrow_mut() = Some(host.to_string());
        self.load().await?;
        if self.fleet_ready() {
            let stored_host: Option<String> = self.state.storage().get(KEY_HOST).await?;
            if stored_host.as_deref() != Some(host) {
                // Remembered once so alarms (which carry no request) know whose backends they probe.
                self.state.storage().put(KEY_HOST, host).await?;
            }
        }
        Ok(())
    }

    async fn ensure_loaded_from_storage(&self) -> Result<()> {
        if self.service.borrow().is_some() {
            return Ok(());
        }
        let host: Option<String> = self.state.storage().get(KEY_HOST).await?;
        match host {
            Some(h) => {
                *self.host.borrow_mut() = Some(h);
                self.load().await
            }
            None => Ok(()),
        }
    }

    async fn load(&self) -> Result<()> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let stored: Option<StoredConfig> = self.state.storage().get(KEY_CONFIG).await?;
        let deleted: Option<bool> = self.state.storage().get(KEY_DELETED).await?;
        let saved: Vec<BackendRecord> = self
            .state
            .storage()
            .get(KEY_BACKENDS)
            .await?
            .unwrap_or_default();
        let service = match stored {
            Some(s) => match config::parse_service(&s.config, "") {
                Ok(cfg) => Service::Ready(Box::new(self.fleet(cfg, s.version, &saved))),
                Err(errs) => Service::Missing(config_error(&host, "stored config", &errs)),
            },
            None if deleted == Some(true) => Service::Missing(unknown_host(&host)),
            None => self.seed(&host, &saved),
        };
        *self.service.borrow_mut() = Some(service);
        Ok(())
    }

    /// The first time a hostname is seen, its config comes from DEFAULT_BACKENDS (version 0, not
    /// stored: a redeploy with a new DEFAULT_BACKENDS takes effect until the API stores a config).
    fn seed(&self, host: &str, saved: &[BackendRecord]) -> Service {
        let text = env_string(&self.env, "DEFAULT_BACKENDS").unwrap_or_default();
        if text.trim().is_empty() {
            return Service::Missing(unknown_host(host));
        }
        // Partial parse: another service's mistake does not take this hostname down.
        let (services, errs) = config::parse_default_backends_partial(&text);
        match services.into_iter().find(|s| s.hostname == host) {
            Some(cfg) => Service::Ready(Box::new(self.fleet(cfg, 0, saved))),
            None if errs.is_empty() => Service::Missing(unknown_host(host)),
            None => Service::Missing(config_error(host, "DEFAULT_BACKENDS", &errs)),
        }
    }

    fn fleet(&self, cfg: ServiceConfig, version: u64, saved: &[BackendRecord]) -> Fleet {
        let secret = env_string(&self.env, "AFFINITY_SECRET")
            .or_else(|| env_string(&self.env, "API_SECRET"))
            .map(String::into_bytes)
            .unwrap_or_else(|| self.fallback_secret.clone());
        Fleet::new(cfg, version, saved, &secret)
    }

    async fn decide(&self, req: &Request) -> Result<Response> {
        // The message is one JSON query parameter: no body to await, no Headers object.
        let url = req.inner().url();
        let q = query_params(&url)
            .find(|(k, _)| k == "q")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let msg: DecideRequest = match serde_json::from_str(&q) {
            Ok(m) => m,
            Err(e) => return error_response(400, &format!("malformed decide request: {e}"), None),
        };
        let host = msg.host;
        self.ensure_loaded(&host).await?;
        let now = Self::now();
        // Successes the Worker batched since its last decision ride along on this request.
        if !msg.successes.is_empty() {
            self.apply_outcomes(&msg.successes).await?;
        }
        let facts = RequestFacts {
            client_ip: msg.client_ip,
            country: msg.country,
            continent: msg.continent,
            cookies: msg.cookies,
            affinity_header: msg.affinity_key,
        };
        let verdict = match &mut *self.service.borrow_mut() {
            Some(Service::Ready(fleet)) => fleet.decide(&facts, now),
            Some(Service::Missing(reject)) => Verdict::Reject(reject.clone()),
            None => Verdict::Reject(unknown_host(&host)),
        };
        self.watchdog(now).await?;
        // A bare body: the Worker knows it is JSON, so no content-type header to build.
        Ok(ResponseBuilder::new().fixed(serde_json::to_vec(&verdict)?))
    }

    /// Outcomes the Worker reports after its responses.
    async fn report(&self, req: &mut Request) -> Result<Response> {
        let msg: ReportRequest = match req.json().await {
            Ok(m) => m,
            Err(e) => return error_response(400, &format!("malformed report: {e}"), None),
        };
        self.ensure_loaded(&msg.host).await?;
        self.watchdog(Self::now()).await?;
        self.apply_outcomes(&msg.outcomes).await?;
        Response::empty().map(|r| r.with_status(204))
    }

    /// Re-arms a missing alarm: the probe loop must survive lost alarms and restarts.
    async fn watchdog(&self, now: u64) -> Result<()> {
        // Without active checks no alarm is kept, so there is nothing to look up in storage
        // (otherwise every decision would read the alarm).
        if !self.probing_enabled() {
            return Ok(());
        }
        let known = *self.alarm_at.borrow();
        match known {
            Some(at) if at + 30_000 > now => Ok(()),
            _ => match self.state.storage().get_alarm().await? {
                Some(at) if at as u64 + 30_000 > now => {
                    *self.alarm_at.borrow_mut() = Some(at as u64);
                    Ok(())
                }
                _ => self.arm_next().await,
            },
        }
    }

    async fn arm_next(&self) -> Result<()> {
        let delay = {
            let service = self.service.borrow();
            let Some(Service::Ready(fleet)) = &*service else {
                return Ok(());
            };
            let h = &fleet.cfg.health;
            if !h.enabled {
                return Ok(());
            }
            let mut rng = self.rng.borrow_mut();
            let mut delay = health::jitter_ms(h.interval_ms, &mut *rng);
            if fleet.any_suspect() {
                delay = delay.min(health::suspect_reprobe_ms(h.interval_ms));
            }
            delay
        };
        self.set_alarm_in(delay).await
    }

    async fn set_alarm_in(&self, delay_ms: u64) -> Result<()> {
        let delay_ms = delay_ms.max(50);
        let at = Self::now() + delay_ms;
        self.state.storage().set_alarm(delay_ms as i64).await?;
        *self.alarm_at.borrow_mut() = Some(at);
        Ok(())
    }

    async fn apply_outcomes(&self, outcomes: &[Outcome]) -> Result<()> {
        let now = Self::now();
        let (persist, reprobe) = {
            let mut service = self.service.borrow_mut();
            let Some(Service::Ready(fleet)) = &mut *service else {
                return Ok(());
            };
            let mut persist = false;
            let mut reprobe = false;
            for o in outcomes {
                let c = fleet.report(o, now);
                persist |= c.persist;
                reprobe |= c.reprobe_soon;
            }
            (persist, reprobe)
        };
        if persist {
            self.persist_backends().await?;
        }
        if reprobe {
            self.reprobe_soon(now).await?;
        }
        Ok(())
    }

    /// A suspect backend is probed within seconds, not at the next full interval.
    async fn reprobe_soon(&self, now: u64) -> Result<()> {
        let soon = {
            let service = self.service.borrow();
            let Some(Service::Ready(fleet)) = &*service else {
                return Ok(());
            };
            if !fleet.cfg.health.enabled {
                return Ok(());
            }
            health::suspect_reprobe_ms(fleet.cfg.health.interval_ms)
        };
        let known = *self.alarm_at.borrow();
        match known {
            Some(at) if at <= now + soon => Ok(()),
            _ => self.set_alarm_in(soon).await,
        }
    }

    async fn persist_backends(&self) -> Result<()> {
        let records: Vec<BackendRecord> = match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => fleet.records().to_vec(),
            _ => return Ok(()),
        };
        self.state.storage().put(KEY_BACKENDS, records).await
    }

    /// Probes every enabled backend in parallel; applies results and persists flips.
    async fn probe_all(&self) -> Result<Vec<ProbeResult>> {
        let (targets, path, timeout_ms) = {
            let service = self.service.borrow();
            let Some(Service::Ready(fleet)) = &*service else {
                return Ok(vec![]);
            };
            let targets: Vec<(usize, String, Option<String>)> = fleet
                .probe_targets()
                .into_iter()
                .map(|i| {
                    let b = &fleet.backends[i];
                    (i, b.url.clone(), b.health_path.clone())
                })
                .collect();
            (
                targets,
                fleet.cfg.health.path.clone(),
                fleet.cfg.health.timeout_ms,
            )
        };
        let probes = targets.iter().map(|(_, url, discovered)| {
            probe_backend(url, path.as_deref(), discovered.as_deref(), timeout_ms)
        });
        let results = futures_util::future::join_all(probes).await;
        let now = Self::now();
        let mut persist = false;
        {
            let mut service = self.service.borrow_mut();
            if let Some(Service::Ready(fleet)) = &mut *service {
                for ((i, url, _), r) in targets.iter().zip(&results) {
                    // The config may have changed while probes were in flight.
                    if fleet.backends.get(*i).map(|b| &b.url) != Some(url) {
                        continue;
                    }
                    if fleet.backends[*i].health_path != r.discovered_path {
                        fleet.backends[*i].health_path = r.discovered_path.clone();
                        persist = true;
                    }
                    persist |= fleet.apply_probe(*i, r.ok, r.latency_ms, r.error.clone(), now);
                }
            }
        }
        if persist {
            self.persist_backends().await?;
        }
        Ok(results)
    }

    fn current(&self) -> Option<(u64, ServiceConfig, Vec<BackendRecord>)> {
        match &*self.service.borrow() {
            Some(Service::Ready(f)) => Some((f.version, f.cfg.clone(), f.records().to_vec())),
            _ => None,
        }
    }

    fn get_config(&self) -> Result<Response> {
        match self.current() {
            Some((version, cfg, _)) => {
                let source = if version == 0 {
                    "DEFAULT_BACKENDS"
                } else {
                    "api"
                };
                let mut resp = Response::from_json(&serde_json::json!({
                    "hostname": cfg.hostname,
                    "version": version,
                    "source": source,
                    "config": cfg.to_value(),
                }))?;
                resp.headers_mut().set("etag", &format!("\"{version}\""))?;
                Ok(resp)
            }
            None => self.status(),
        }
    }

    async fn load_history(&self) -> Result<Vec<HistoryEntry>> {
        Ok(self
            .state
            .storage()
            .get(KEY_HISTORY)
            .await?
            .unwrap_or_default())
    }

    /// Stores a new config version, then answers. The in-memory fleet is swapped before the
    /// write is awaited: the output gate holds every response (this one and any decision made
    /// with the new config) until the write is durable, so no later decision sees the old config.
    async fn commit(
        &self,
        cfg: ServiceConfig,
        if_match: Option<u64>,
        status: u16,
    ) -> Result<Response> {
        let (version, records) = match self.current() {
            Some((v, _, r)) => (v, r),
            None => (self.stored_version().await?, vec![]),
        };
        if let Some(expected) = if_match {
            if expected != version {
                return precondition_failed(expected, version);
            }
        }
        let next = version + 1;
        let value = cfg.to_value();
        let mut history = self.load_history().await?;
        history.push(HistoryEntry {
            version: next,
            ts_ms: Self::now(),
            config: value.clone(),
        });
        if history.len() > HISTORY_LEN {
            history.drain(..history.len() - HISTORY_LEN);
        }
        let host = cfg.hostname.clone();
        *self.service.borrow_mut() =
            Some(Service::Ready(Box::new(self.fleet(cfg, next, &records))));
        let storage = self.state.storage();
        // One put_multiple, so config and history land together. Built as a plain object:
        // serde_wasm_bindgen would turn a JSON map into a JS Map, which storage ignores.
        let entries = js_sys::Object::new();
        let stored = StoredConfig {
            version: next,
            config: value.clone(),
        };
        for (key, val) in [
            (KEY_CONFIG, serde_wasm_bindgen::to_value(&stored)),
            (KEY_HISTORY, serde_wasm_bindgen::to_value(&history)),
            (KEY_HOST, serde_wasm_bindgen::to_value(&host)),
        ] {
            js_sys::Reflect::set(
                &entries,
                &key.into(),
                &val.map_err(|e| Error::RustError(e.to_string()))?,
            )?;
        }
        storage.put_multiple_raw(entries).await?;
        storage.delete(KEY_DELETED).await?;
        *self.alarm_at.borrow_mut() = None;
        self.watchdog(Self::now()).await?;
        let mut resp =
            Response::from_json(&serde_json::json!({ "version": next, "config": value }))?
                .with_status(status);
        resp.headers_mut().set("etag", &format!("\"{next}\""))?;
        Ok(resp)
    }

    /// The version a deleted or never-configured service would continue from.
    async fn stored_version(&self) -> Result<u64> {
        Ok(self
            .load_history()
            .await?
            .last()
            .map(|h| h.version)
            .unwrap_or(0))
    }

    async fn put_config(
        &self,
        body: &serde_json::Value,
        if_match: Option<u64>,
    ) -> Result<Response> {
        let host = self.host.borrow().clone().unwrap_or_default();
        match config::parse_service_for_host(body, &host) {
            Ok(cfg) => {
                let created = self.current().is_none();
                self.commit(cfg, if_match, if created { 201 } else { 200 })
                    .await
            }
            Err(errs) => invalid(errs),
        }
    }

    async fn change_backends(
        &self,
        method: Method,
        body: &serde_json::Value,
        if_match: Option<u64>,
    ) -> Result<Response> {
        let Some((_, cfg, _)) = self.current() else {
            return self.status();
        };
        let next = match method {
            Method::Post => changes::add_backend(&cfg, body),
            Method::Patch => changes::update_backend(&cfg, body),
            _ => changes::remove_backend(&cfg, body.as_str().unwrap_or_default()),
        };
        match next {
            Ok(cfg) => self.commit(cfg, if_match, 200).await,
            Err(errs) => invalid(errs),
        }
    }

    async fn delete_config(&self, if_match: Option<u64>) -> Result<Response> {
        let Some((version, _, _)) = self.current() else {
            return self.status();
        };
        if let Some(expected) = if_match {
            if expected != version {
                return precondition_failed(expected, version);
            }
        }
        let host = self.host.borrow().clone().unwrap_or_default();
        *self.service.borrow_mut() = Some(Service::Missing(unknown_host(&host)));
        let storage = self.state.storage();
        storage
            .delete_multiple(vec![KEY_CONFIG, KEY_BACKENDS])
            .await?;
        storage.put(KEY_DELETED, true).await?;
        storage.delete_alarm().await?;
        *self.alarm_at.borrow_mut() = None;
        Response::from_json(&serde_json::json!({ "deleted": host, "version": version }))
    }

    async fn history(&self) -> Result<Response> {
        let history = self.load_history().await?;
        let current = self.current().map(|(v, _, _)| v);
        let versions: Vec<serde_json::Value> = history
            .iter()
            .rev()
            .map(|h| serde_json::json!({ "version": h.version, "ts_ms": h.ts_ms, "current": Some(h.version) == current, "config": h.config }))
            .collect();
        Response::from_json(&serde_json::json!({ "current": current, "versions": versions }))
    }

    async fn rollback(&self, body: &serde_json::Value, if_match: Option<u64>) -> Result<Response> {
        let Some(version) = body.get("version").and_then(|v| v.as_u64()) else {
            return invalid(vec![err(
                "version",
                "required: the integer version to restore (see config/history)",
            )]);
        };
        let history = self.load_history().await?;
        let Some(entry) = history.iter().find(|h| h.version == version) else {
            let kept: Vec<String> = history.iter().map(|h| h.version.to_string()).collect();
            return invalid(vec![err(
                "version",
                format!(
                    "version {version} is not kept; available: {}",
                    kept.join(", ")
                ),
            )]);
        };
        match config::parse_service(&entry.config, "") {
            Ok(cfg) => self.commit(cfg, if_match, 200).await,
            Err(errs) => invalid(errs),
        }
    }

    fn status(&self) -> Result<Response> {
        match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => {
                let mut body = fleet.status(Self::now());
                body["config"] = fleet.cfg.to_value();
                Response::from_json(&body)
            }
            Some(Service::Missing(r)) => Response::error(
                r.message.clone(),
                if r.status == 421 { 404 } else { r.status },
            ),
            None => Response::error("no service is configured here", 404),
        }
    }
}

/// 32 bytes from the runtime's CSPRNG (zeros only if the runtime had none, which workerd always has).
fn random_bytes() -> [u8; 32] {
    use worker::wasm_bindgen::JsCast;
    let mut buf = [0u8; 32];
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    if let Ok(crypto) = scope.crypto() {
        let _ = crypto.get_random_values_with_u8_array(&mut buf);
    }
    buf
}

/// The decoded query parameters of a request URL, read straight from the string.
fn query_params(url: &str) -> url::form_urlencoded::Parse<'_> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
}

fn err(path: &str, message: impl Into<String>) -> config::ConfigError {
    config::ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// 400 listing every error by field path; nothing was stored.
fn invalid(errors: Vec<config::ConfigError>) -> Result<Response> {
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    Ok(Response::from_json(&serde_json::json!({
        "error": format!("invalid request: {}", list.join("; ")),
        "errors": errors,
        "status": 400,
    }))?
    .with_status(400))
}

fn precondition_failed(expected: u64, actual: u64) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({
        "error": format!("If-Match {expected} does not match the current config version {actual}; reload and retry"),
        "current_version": actual,
        "status": 412,
    }))?
    .with_status(412))
}

/// `If-Match: 3`, `"3"` or `W/"3"`; anything else is ignored as no precondition.
fn if_match(req: &Request) -> Result<Option<u64>> {
    Ok(req.headers().get("if-match")?.and_then(|v| {
        v.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse()
            .ok()
    }))
}

/// Parses a JSON body, or answers 400 with the parser's position.
async fn read_json(req: &mut Request) -> Result<std::result::Result<serde_json::Value, Response>> {
    let text = req.text().await.unwrap_or_default();
    match serde_json::from_str(&text) {
        Ok(v) => Ok(Ok(v)),
        Err(e) => Ok(Err(invalid(vec![err(
            "",
            format!("malformed JSON body: {e}"),
        )])?)),
    }
}

fn unknown_host(host: &str) -> Reject {
    Reject {
        status: 421,
        message: format!("FlowBalance has no service configured for hostname \"{host}\""),
        retry_after_s: None,
    }
}

fn config_error(host: &str, source: &str, errs: &[config::ConfigError]) -> Reject {
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
