//! The per-hostname Durable Object: its state, the routes a Worker's call is sent down, and loading the service; each concern's handlers are in `balancer/`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use worker::*;

use crate::platform::object::probe::ProbeResult;
use crate::platform::object::prober::REPORT_PATH;
use crate::platform::object::tail::{self as tail_route, Tails};
use crate::platform::relay::{ACTOR_HEADER, HOST_HEADER};
use crate::platform::store::registry::{self, config_error, unknown_host};
use crate::platform::{env_string, error_response, random_bytes};
use crate::policy::control::audit::{Actor, ActorKind};
use crate::policy::control::config::{self, Deployment, EffectiveMode, ServiceConfig};
use crate::policy::control::watch::Safety;
use crate::policy::rng::{Rng, SplitMix64};
use crate::policy::telemetry::metrics::Counters;
use crate::policy::telemetry::notify::Outbox;
use crate::policy::telemetry::rollup::Rollup;
use crate::policy::traffic::decision::Reject;
use crate::policy::traffic::fleet::{BackendRecord, Fleet};
use crate::policy::traffic::lease::LeaseBook;

mod alarm;
mod config_api;
mod counters;
mod d1;
mod decisions;
mod dns;
mod outbox;
mod preview;
mod regions;
mod rules_api;
mod safety;
mod store;
mod views;

use config_api::{err, if_match, invalid, read_json};

const KEY_HOST: &str = "host";
const KEY_CONFIG: &str = "config";
const KEY_BACKENDS: &str = "backends";
/// Set when the API deleted the service, so DEFAULT_BACKENDS does not bring it back.
const KEY_DELETED: &str = "deleted";
/// The key that signs affinity cookies when AFFINITY_SECRET is unset.
const KEY_AFFINITY: &str = "affinity_key";
/// The request/probe counters behind `/admin/metrics` (a JSON text).
const KEY_METRICS: &str = "metrics";
/// Counters are stored at most this often while traffic flows (and from every alarm): a restart
/// loses at most this much of them, and no request pays for a storage write.
const METRICS_SAVE_MS: u64 = 10_000;
/// The webhook outbox (a JSON text): events are stored here before anything is sent.
const KEY_OUTBOX: &str = "outbox";
/// The alarm is never set sooner than this from now (a burst of wakes sets it once).
const MIN_ALARM_DELAY_MS: u64 = 50;
/// Config versions kept for `config/history` and rollback.
const HISTORY_LEN: usize = 20;
/// The audit trail of admin changes (JSON text), and how many entries it keeps.
const KEY_AUDIT: &str = "audit";
const AUDIT_LEN: usize = 100;
/// Recent client outcomes and the config change being watched (JSON text, small).
const KEY_WATCH: &str = "change_watch";

/// One admin change for the audit trail: who, and what (the version is added on commit).
struct Change {
    actor: Actor,
    action: &'static str,
    summary: String,
}

/// One accepted config version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub ts_ms: u64,
    pub config: serde_json::Value,
    /// Who made it (an actor label; `flowbalance` for an automatic rollback), what and why.
    /// Absent on versions stored before these were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
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
    /// Signs affinity cookies when AFFINITY_SECRET is unset: random, made once per hostname and
    /// kept in storage, so pins cannot be forged and survive restarts. Never an admin credential:
    /// a public cookie signed with one would let anyone brute-force it offline.
    affinity_key: RefCell<Option<Vec<u8>>>,
    /// A key made in this lifetime and not yet stored.
    affinity_key_unsaved: Cell<bool>,
    /// Counters for `/admin/metrics`, loaded once and stored every METRICS_SAVE_MS.
    metrics: RefCell<Counters>,
    metrics_dirty: Cell<bool>,
    metrics_saved_ms: Cell<u64>,
    /// Minutes and hours not yet written to D1, stored with the counters.
    rollup: RefCell<Rollup>,
    /// The D1 writer's held rows, backoff and budget state.
    d1: RefCell<d1::D1State>,
    /// Webhook deliveries not yet finished (and recent finished ones), mirrored in storage.
    outbox: RefCell<Outbox>,
    outbox_dirty: Cell<bool>,
    /// Live tails (hibernatable WebSockets) of this hostname.
    tails: Tails,
    /// Each backend's last monitor result (when, what), for the status view; kept in memory only:
    /// the next round refreshes it after a restart.
    last_probes: RefCell<HashMap<String, (u64, ProbeResult)>>,
    /// The `dns` record syncs: what was written, when, and the backoff (stored under `dns`).
    dns: RefCell<crate::policy::health::dns::SyncState>,
    /// What clients got lately and the config change being watched (`change_safety`); stored
    /// with the counters and with each config change.
    safety: RefCell<Safety>,
    /// Leases granted to Workers (lease mode) and the config fence they make; made on load.
    leases: RefCell<Option<LeaseBook>>,
    /// Counts prober upkeep rounds (`activeHealthChecks.regions`): a newer one supersedes an older one.
    probers_gen: Rc<Cell<u64>>,
    /// Test-only: every Worker call waits this long first, to simulate an object far away
    /// (`FB_TEST_OBJECT_DELAY_MS`; unset in any real deployment).
    test_delay_ms: u64,
    /// Test-only: config writes fail in storage (`FB_TEST_OVERSIZE_WRITE`; unset in any real
    /// deployment), to show that a failed write changes nothing.
    test_oversize: bool,
}

impl DurableObject for Balancer {
    fn new(state: State, env: Env) -> Self {
        let random = random_bytes();
        let seed = u64::from_le_bytes(random[..8].try_into().unwrap_or_default())
            ^ Date::now().as_millis();
        Self {
            state,
            service: RefCell::new(None),
            host: RefCell::new(None),
            alarm_at: RefCell::new(None),
            rng: RefCell::new(SplitMix64(seed)),
            affinity_key: RefCell::new(None),
            affinity_key_unsaved: Cell::new(false),
            metrics: RefCell::new(Counters::default()),
            metrics_dirty: Cell::new(false),
            metrics_saved_ms: Cell::new(Date::now().as_millis()),
            rollup: RefCell::new(Rollup::default()),
            d1: RefCell::new(d1::D1State::default()),
            outbox: RefCell::new(Outbox::default()),
            outbox_dirty: Cell::new(false),
            tails: Tails::default(),
            last_probes: RefCell::new(HashMap::new()),
            leases: RefCell::new(None),
            dns: RefCell::new(Default::default()),
            probers_gen: Rc::new(Cell::new(0)),
            safety: RefCell::new(Safety::default()),
            test_delay_ms: env_string(&env, "FB_TEST_OBJECT_DELAY_MS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            test_oversize: env_string(&env, "FB_TEST_OVERSIZE_WRITE").is_some(),
            env,
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        self.count_request();
        let path = req.path();
        if matches!(path.as_str(), "/report" | "/lease") {
            self.test_delay().await;
        }
        if path == "/lease" {
            return self.lease(&mut req).await;
        }
        if path == "/report" {
            return self.report(&mut req).await;
        }
        if path == tail_route::LINE_PATH {
            return self.tail_line(&mut req).await;
        }
        if path == "/log" {
            return self.keep_rows(&mut req).await;
        }
        if let Some(host) = req.headers().get(HOST_HEADER)? {
            self.ensure_loaded(&host).await?;
        } else {
            self.ensure_loaded_from_storage().await?;
        }
        self.watchdog(Self::now()).await?;
        // Set by the admin relay for the audit trail; requests reach this object only from the Worker.
        // Every write route is relayed with it, so the fallback is never expected to be recorded.
        let actor = req
            .headers()
            .get(ACTOR_HEADER)?
            .and_then(|a| serde_json::from_str::<Actor>(&a).ok())
            .unwrap_or(Actor::new(ActorKind::ApiSecret, Some("unknown")));
        match (req.method(), path.as_str()) {
            (Method::Get, "/status") => self.status(),
            (Method::Get, "/events") => self.events_view(),
            (Method::Post, "/events/test") => self.test_event().await,
            (Method::Get, "/metrics") => self.metrics_view(),
            (Method::Post, "/flush") => self.flush_now().await,
            (Method::Get, "/audit") => self.audit_view().await,
            (Method::Post, REPORT_PATH) => self.region_report(&mut req).await,
            (Method::Post, "/probe") => {
                if !self.fleet_ready() {
                    return self.status();
                }
                let regions = self.probing_regions();
                if !regions.is_empty() {
                    // Each region's prober probes at once and reports; nothing is probed from here.
                    self.update_probers(&regions).await;
                    return Response::from_json(
                        &serde_json::json!({ "results": [], "regions": regions }),
                    );
                }
                let results = self.probe(true).await?;
                self.dns_soon().await?;
                Response::from_json(&serde_json::json!({ "results": results }))
            }
            (Method::Get, "/config") => self.get_config(),
            (Method::Post, "/config/validate") => match read_json(&mut req).await? {
                Ok(body) => self.validate_config(body).await,
                Err(resp) => Ok(resp),
            },
            (Method::Post, "/rules/test") => match read_json(&mut req).await? {
                Ok(body) => self.test_rules(body).await,
                Err(resp) => Ok(resp),
            },
            (Method::Post, "/config/preview") => match read_json(&mut req).await? {
                Ok(body) => self.preview_config(body).await,
                Err(resp) => Ok(resp),
            },
            (Method::Post, "/config/reset") => match if_match(&req)? {
                Ok(m) => self.reset(m, actor).await,
                Err(resp) => Ok(resp),
            },
            (Method::Get, tail_route::OPEN_PATH) => {
                if !self.fleet_ready() {
                    return self.status();
                }
                let host = self.host.borrow().clone().unwrap_or_default();
                let resp = self.tails.open(&self.state, &req, &host)?;
                // Lease mode: leases granted before this tail say nobody listens. The tail is
                // connected once they are gone, so every request decided after that is shown.
                if resp.status_code() == 101 && self.lease_mode() {
                    self.fence().await;
                }
                Ok(resp)
            }
            (Method::Post | Method::Put, "/config") => {
                let if_match = match if_match(&req)? {
                    Ok(m) => m,
                    Err(resp) => return Ok(resp),
                };
                match read_json(&mut req).await? {
                    Ok(body) => self.put_config(&body, if_match, actor).await,
                    Err(resp) => Ok(resp),
                }
            }
            (Method::Delete, "/config") => match if_match(&req)? {
                Ok(m) => self.delete_config(m, actor).await,
                Err(resp) => Ok(resp),
            },
            (Method::Get, "/config/history") => self.history().await,
            (Method::Post, "/config/rollback") => {
                let if_match = match if_match(&req)? {
                    Ok(m) => m,
                    Err(resp) => return Ok(resp),
                };
                match read_json(&mut req).await? {
                    Ok(body) => self.rollback(&body, if_match, actor).await,
                    Err(resp) => Ok(resp),
                }
            }
            (Method::Post | Method::Patch | Method::Delete, "/backends") => {
                let if_match = match if_match(&req)? {
                    Ok(m) => m,
                    Err(resp) => return Ok(resp),
                };
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
                self.change_backends(method, &body, if_match, actor).await
            }
            _ => error_response(404, "unknown Durable Object route", None),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        // Alarms are at-least-once: probing twice is harmless, a delivery is settled once, and
        // re-arming is unconditional. The alarm serves probes, DNS record syncs, webhook deliveries
        // and D1 writes.
        *self.alarm_at.borrow_mut() = None;
        self.ensure_loaded_from_storage().await?;
        // An alarm invocation is billed as a Durable Object request too.
        self.count_request();
        if self.fleet_ready() && self.probing_enabled() {
            if let Err(e) = self.probe(false).await {
                console_error!("probe round failed: {e}");
            }
        }
        if let Err(e) = self.sync_dns().await {
            console_error!("dns record sync failed: {e}");
        }
        // Before deliveries: an automatic rollback's event goes out in this round.
        if let Err(e) = self.watch_round().await {
            console_error!("change watch round failed: {e}");
        }
        if let Err(e) = self.deliver_due().await {
            console_error!("webhook delivery round failed: {e}");
        }
        if let Err(e) = self.write_d1(false).await {
            console_error!("D1 write round failed: {e}");
        }
        self.save_metrics(true).await?;
        self.arm_next().await?;
        Response::empty()
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let text = match message {
            WebSocketIncomingMessage::String(s) => s,
            WebSocketIncomingMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        };
        self.tails.on_message(&ws, &text);
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        self.tails.on_close(&ws);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        self.tails.on_close(&ws);
        Ok(())
    }
}

impl Balancer {
    /// One request Cloudflare bills this object for (a fetch, an RPC call or an alarm): counted in
    /// memory and saved with the other counters, never written per request.
    fn count_request(&self) {
        self.metrics.borrow_mut().object_requests += 1;
        self.metrics_dirty.set(true);
    }

    /// Test-only (`FB_TEST_OBJECT_DELAY_MS`): a Worker's call waits as if the object were far away.
    async fn test_delay(&self) {
        if self.test_delay_ms > 0 {
            Delay::from(std::time::Duration::from_millis(self.test_delay_ms)).await;
        }
    }

    /// Does this object probe the backends itself (active checks on and no `regions`)?
    fn probing_enabled(&self) -> bool {
        matches!(&*self.service.borrow(), Some(Service::Ready(f)) if f.probes_here())
    }

    fn lease_mode(&self) -> bool {
        matches!(&*self.service.borrow(), Some(Service::Ready(f)) if f.cfg().effective_mode() == EffectiveMode::Lease)
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
        self.migrate_history().await;
        let stored: Option<StoredConfig> = self.state.storage().get(KEY_CONFIG).await?;
        let deleted: Option<bool> = self.state.storage().get(KEY_DELETED).await?;
        let saved: Vec<BackendRecord> = self
            .state
            .storage()
            .get(KEY_BACKENDS)
            .await?
            .unwrap_or_default();
        let key: Option<Vec<u8>> = self.state.storage().get(KEY_AFFINITY).await?;
        let counters: Option<String> = self.state.storage().get(KEY_METRICS).await?;
        if let Some(mut c) = counters.and_then::<Counters, _>(|t| serde_json::from_str(&t).ok()) {
            // Requests counted while loading are kept without double counting if two load at once.
            c.object_requests = c.object_requests.max(self.metrics.borrow().object_requests);
            *self.metrics.borrow_mut() = c;
        }
        self.load_d1().await?;
        self.load_dns().await?;
        let outbox: Option<String> = self.state.storage().get(KEY_OUTBOX).await?;
        if let Some(o) = outbox.and_then(|t| serde_json::from_str(&t).ok()) {
            *self.outbox.borrow_mut() = o;
        }
        let watch: Option<String> = self.state.storage().get(KEY_WATCH).await?;
        if let Some(s) = watch.and_then(|t| serde_json::from_str(&t).ok()) {
            *self.safety.borrow_mut() = s;
        }
        if key.as_ref().is_some_and(|k| !k.is_empty()) {
            *self.affinity_key.borrow_mut() = key;
        }
        let service = match stored {
            // Checked against its deployment when it was written; read back as stored.
            Some(s) => match config::parse_service(&s.config, "", &Deployment::default()) {
                Ok(cfg) => Service::Ready(Box::new(self.fleet(cfg, s.version, &saved))),
                Err(errs) => Service::Missing(config_error(&host, "stored config", &errs)),
            },
            None if deleted == Some(true) => Service::Missing(unknown_host(&host)),
            None => self.seed(&host, &saved),
        };
        // Leases an earlier lifetime of this object granted are unknown: they count as in use
        // for one lease length, so a config change right after a restart still waits for them.
        let unknown_for = match &service {
            Service::Ready(f) if f.cfg().effective_mode() == EffectiveMode::Lease => {
                f.cfg().decisions.lease_ms
            }
            _ => 0,
        };
        *self.leases.borrow_mut() = Some(LeaseBook::new(Self::now(), unknown_for));
        *self.service.borrow_mut() = Some(service);
        self.wake_probers();
        self.save_affinity_key().await
    }

    /// The first time a hostname is seen, its config comes from DEFAULT_BACKENDS (version 0, not
    /// stored: a redeploy with a new DEFAULT_BACKENDS takes effect until the API stores a config).
    fn seed(&self, host: &str, saved: &[BackendRecord]) -> Service {
        // Partial parse: another service's mistake does not take this hostname down.
        let defaults = registry::defaults(&self.env);
        match defaults.services.iter().find(|s| s.hostname == host) {
            Some(cfg) => Service::Ready(Box::new(self.fleet(cfg.clone(), 0, saved))),
            None if defaults.errors.is_empty() => Service::Missing(unknown_host(host)),
            None => Service::Missing(config_error(host, "DEFAULT_BACKENDS", &defaults.errors)),
        }
    }

    /// The deployment a config write is checked against: every balanced hostname, including
    /// those created through the API (the D1 registry) and this one.
    async fn deployment(&self, host: &str) -> Deployment {
        registry::deployment_for(&self.env, host).await
    }

    fn fleet(&self, cfg: ServiceConfig, version: u64, saved: &[BackendRecord]) -> Fleet {
        let mut fleet = Fleet::new(cfg, version, saved, &self.secret(), Self::now());
        fleet.reseed(self.rng.borrow_mut().next_u64());
        fleet
    }

    /// The key affinity cookies and hashes use: the deployment's, else this hostname's own.
    fn secret(&self) -> Vec<u8> {
        match env_string(&self.env, "AFFINITY_SECRET") {
            Some(s) => s.into_bytes(),
            None => self.affinity_key(),
        }
    }

    /// This hostname's own cookie key: the stored one (see `load`), else a new random one that
    /// `save_affinity_key` stores.
    fn affinity_key(&self) -> Vec<u8> {
        self.affinity_key
            .borrow_mut()
            .get_or_insert_with(|| {
                self.affinity_key_unsaved.set(true);
                random_bytes().to_vec()
            })
            .clone()
    }

    /// Stores a cookie key made in this lifetime: once per hostname, when its service is first set up.
    async fn save_affinity_key(&self) -> Result<()> {
        if !self.affinity_key_unsaved.replace(false) {
            return Ok(());
        }
        let key = self.affinity_key.borrow().clone().unwrap_or_default();
        self.state.storage().put(KEY_AFFINITY, key).await
    }
}
