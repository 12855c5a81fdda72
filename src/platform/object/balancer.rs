//! The per-hostname Durable Object: owns the service's config and live backend state in storage, answers routing decisions, and probes backends on its alarm.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use worker::*;

use crate::platform::admin::routes::ACTOR_HEADER;
use crate::platform::object::probe::{probe_backend, ProbeResult};
use crate::platform::object::tail::{self as tail_route, Tails};
use crate::platform::store::healthlog;
use crate::platform::store::registry::{self, config_error, unknown_host};
use crate::platform::{env_string, error_response, random_bytes};
use crate::policy::control::audit::{self, Actor, ActorKind};
use crate::policy::control::changes;
use crate::policy::control::config::DecisionMode;
use crate::policy::control::config::{self, ActiveHealth, Deployment, ServiceConfig};
use crate::policy::control::precondition::IfMatch;
use crate::policy::health::breaker::BreakerState;
use crate::policy::health::monitor::MonitorType;
use crate::policy::health::transitions::{self, HealthEvent};
use crate::policy::rng::{Rng, SplitMix64};
use crate::policy::telemetry::metrics::{Answered, Counters};
use crate::policy::telemetry::notify::{Cause, Outbox};
use crate::policy::telemetry::tail::{self, Line, RequestLine};
use crate::policy::traffic::decision::{DecideRequest, Outcome, Reject, ReportRequest, Verdict};
use crate::policy::traffic::facts::RequestFacts;
use crate::policy::traffic::fleet::{BackendRecord, Fleet, ProbeOutcome};
use crate::policy::traffic::lease::{self, LeaseBook, LeaseReply, LeaseRequest};

mod counters;
mod outbox;
mod store;

use store::{history_key, ConfigWrite};

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
/// Config versions kept for `config/history` and rollback.
const HISTORY_LEN: usize = 20;
/// The audit trail of admin changes (JSON text), and how many entries it keeps.
const KEY_AUDIT: &str = "audit";
const AUDIT_LEN: usize = 100;

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
    /// Webhook deliveries not yet finished (and recent finished ones), mirrored in storage.
    outbox: RefCell<Outbox>,
    outbox_dirty: Cell<bool>,
    /// Who made the config change being handled (`x-fb-actor` from the admin relay).
    actor: RefCell<String>,
    /// Live tails (hibernatable WebSockets) of this hostname.
    tails: Tails,
    /// Each backend's last monitor result (when, what), for the status view; kept in memory only:
    /// the next round refreshes it after a restart.
    last_probes: RefCell<HashMap<String, (u64, ProbeResult)>>,
    /// Leases granted to Workers (lease mode) and the config fence they make; made on load.
    leases: RefCell<Option<LeaseBook>>,
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
            outbox: RefCell::new(Outbox::default()),
            outbox_dirty: Cell::new(false),
            actor: RefCell::new("api".to_string()),
            tails: Tails::default(),
            last_probes: RefCell::new(HashMap::new()),
            leases: RefCell::new(None),
            test_delay_ms: env_string(&env, "FB_TEST_OBJECT_DELAY_MS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            test_oversize: env_string(&env, "FB_TEST_OVERSIZE_WRITE").is_some(),
            env,
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        if self.test_delay_ms > 0 && matches!(path.as_str(), "/decide" | "/report" | "/lease") {
            Delay::from(std::time::Duration::from_millis(self.test_delay_ms)).await;
        }
        if path == "/lease" {
            return self.lease(&mut req).await;
        }
        if path == "/decide" {
            return self.decide(&req).await;
        }
        if path == "/report" {
            return self.report(&mut req).await;
        }
        if path == tail_route::LINE_PATH {
            return self.tail_line(&mut req).await;
        }
        if let Some(host) = req.headers().get("x-fb-host")? {
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
        *self.actor.borrow_mut() = actor.label();
        match (req.method(), path.as_str()) {
            (Method::Get, "/status") => self.status(),
            (Method::Get, "/events") => self.events_view(),
            (Method::Post, "/events/test") => self.test_event().await,
            (Method::Get, "/metrics") => self.metrics_view(),
            (Method::Get, "/audit") => self.audit_view().await,
            (Method::Post, "/probe") => {
                if !self.fleet_ready() {
                    return self.status();
                }
                let results = self.probe(true).await?;
                Response::from_json(&serde_json::json!({ "results": results }))
            }
            (Method::Get, "/config") => self.get_config(),
            (Method::Post, "/config/validate") => match read_json(&mut req).await? {
                Ok(body) => self.validate_config(body).await,
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
        // re-arming is unconditional. The alarm serves both probes and webhook deliveries.
        *self.alarm_at.borrow_mut() = None;
        self.ensure_loaded_from_storage().await?;
        if self.fleet_ready() && self.probing_enabled() {
            if let Err(e) = self.probe(false).await {
                console_error!("probe round failed: {e}");
            }
        }
        if let Err(e) = self.deliver_due().await {
            console_error!("webhook delivery round failed: {e}");
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
    fn probing_enabled(&self) -> bool {
        matches!(&*self.service.borrow(), Some(Service::Ready(f)) if f.cfg().health.enabled)
    }

    fn lease_mode(&self) -> bool {
        matches!(&*self.service.borrow(), Some(Service::Ready(f)) if f.cfg().decisions.mode == DecisionMode::Lease)
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
        if let Some(c) = counters.and_then(|t| serde_json::from_str(&t).ok()) {
            *self.metrics.borrow_mut() = c;
        }
        let outbox: Option<String> = self.state.storage().get(KEY_OUTBOX).await?;
        if let Some(o) = outbox.and_then(|t| serde_json::from_str(&t).ok()) {
            *self.outbox.borrow_mut() = o;
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
            Service::Ready(f) if f.cfg().decisions.mode == DecisionMode::Lease => {
                f.cfg().decisions.lease_ms
            }
            _ => 0,
        };
        *self.leases.borrow_mut() = Some(LeaseBook::new(Self::now(), unknown_for));
        *self.service.borrow_mut() = Some(service);
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
        let secret = match env_string(&self.env, "AFFINITY_SECRET") {
            Some(s) => s.into_bytes(),
            None => self.affinity_key(),
        };
        let mut fleet = Fleet::new(cfg, version, saved, &secret, Self::now());
        fleet.reseed(self.rng.borrow_mut().next_u64());
        fleet
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

    async fn decide(&self, req: &Request) -> Result<Response> {
        // The message is the query: no body to await, no Headers object.
        let url = req.inner().url();
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let msg = match DecideRequest::from_query(query) {
            Ok(m) => m,
            Err(e) => return error_response(400, &format!("malformed decide request: {e}"), None),
        };
        let host = msg.host;
        self.ensure_loaded(&host).await?;
        let now = Self::now();
        // Completions, successes and client responses the Worker batched ride along.
        self.complete(&msg.done);
        self.record_answered(&msg.answered);
        if !msg.successes.is_empty() {
            self.apply_outcomes(&msg.successes).await?;
        }
        let keyed = msg.affinity_key.is_some() || msg.client_ip.is_some();
        let facts = RequestFacts {
            client_ip: msg.client_ip,
            country: msg.country,
            continent: msg.continent,
            cookies: msg.cookies,
            affinity_header: msg.affinity_key,
            streamed_body: msg.streamed_body,
        };
        let verdict = match &mut *self.service.borrow_mut() {
            Some(Service::Ready(fleet)) => fleet.decide(&facts, now),
            Some(Service::Missing(reject)) => Verdict::Reject(reject.clone()),
            None => Verdict::Reject(unknown_host(&host)),
        };
        if let Verdict::Reject(r) = &verdict {
            self.metrics.borrow_mut().record_reject(r.status);
            self.metrics_dirty.set(true);
        }
        // While a tail listens, the reply also says why, so the edge reports the request's line.
        let why = match (&verdict, &*self.service.borrow()) {
            (Verdict::Route(route), Some(Service::Ready(fleet)))
                if self.tails.listening(&self.state) =>
            {
                Some(tail::why(fleet.cfg(), route, keyed))
            }
            (Verdict::Reject(r), _) if self.tails.listening(&self.state) => {
                Some(tail::refused(&r.message))
            }
            _ => None,
        };
        self.watchdog(now).await?;
        self.save_metrics(false).await?;
        // In lease mode the Worker decides its next requests itself with this.
        let granted = self.grant(now, false);
        // A bare body: the Worker knows it is JSON, so no content-type header to build.
        Ok(ResponseBuilder::new().fixed(lease::attach(
            tail::reply(serde_json::to_vec(&verdict)?, why.as_deref()),
            granted.as_ref(),
        )))
    }

    /// A lease on the current config (lease mode only), recorded in the book.
    fn grant(&self, now: u64, refresh: bool) -> Option<lease::Lease> {
        if !self.lease_mode() {
            return None;
        }
        let service = self.service.borrow();
        let Some(Service::Ready(fleet)) = &*service else {
            return None;
        };
        let offset = self.rng.borrow_mut().next_u64() >> 32;
        let tailing = self.tails.listening(&self.state);
        let mut book = self.leases.borrow_mut();
        let book = book.get_or_insert_with(|| LeaseBook::new(now, 0));
        lease::grant(fleet, book, now, refresh, offset, tailing)
    }

    /// `POST /lease`: outcomes and handed-back leases from a Worker in lease mode, and a fresh
    /// lease when it wants one (none when the service left lease mode or is gone).
    async fn lease(&self, req: &mut Request) -> Result<Response> {
        let msg: LeaseRequest = match req.json().await {
            Ok(m) => m,
            Err(e) => return error_response(400, &format!("malformed lease request: {e}"), None),
        };
        self.ensure_loaded(&msg.host).await?;
        let now = Self::now();
        if let Some(book) = &mut *self.leases.borrow_mut() {
            book.hand_back(&msg.returned, now);
        }
        self.watchdog(now).await?;
        if !msg.outcomes.is_empty() {
            self.apply_outcomes(&msg.outcomes).await?;
        }
        let reply = LeaseReply {
            lease: if msg.want {
                self.grant(Self::now(), msg.holding)
            } else {
                None
            },
        };
        Response::from_json(&reply)
    }

    /// A config change waits here before it is answered: a new generation of leases starts
    /// now, and every lease granted under the old config must have expired or been handed
    /// back, so no request decided after the answer uses the old config.
    async fn fence(&self) {
        let started = Self::now();
        if let Some(book) = &mut *self.leases.borrow_mut() {
            book.new_generation();
        }
        loop {
            let wait = match &mut *self.leases.borrow_mut() {
                Some(book) => book.fence_wait_ms(Self::now()),
                None => 0,
            };
            // Bounded by the longest lease (10 s): the book never waits on more than that.
            if wait == 0 || Self::now().saturating_sub(started) > 2 * lease::MAX_LEASE_MS {
                return;
            }
            // Hand-backs arrive as other requests meanwhile; look again soon.
            Delay::from(std::time::Duration::from_millis(wait.min(5))).await;
        }
    }

    /// Outcomes the Worker reports after its responses.
    async fn report(&self, req: &mut Request) -> Result<Response> {
        let msg: ReportRequest = match req.json().await {
            Ok(m) => m,
            Err(e) => return error_response(400, &format!("malformed report: {e}"), None),
        };
        self.ensure_loaded(&msg.host).await?;
        self.watchdog(Self::now()).await?;
        self.complete(&msg.done);
        self.record_answered(&msg.answered);
        self.apply_outcomes(&msg.outcomes).await?;
        Response::empty().map(|r| r.with_status(204))
    }

    /// Counts responses a Worker gave clients; stored with the other counters, not per message.
    fn record_answered(&self, answered: &[Answered]) {
        if !answered.is_empty() {
            self.metrics.borrow_mut().record_answered(answered);
            self.metrics_dirty.set(true);
        }
    }

    /// Requests that finished no longer count as outstanding.
    fn complete(&self, done: &[u64]) {
        if done.is_empty() {
            return;
        }
        if let Some(Service::Ready(fleet)) = &mut *self.service.borrow_mut() {
            for &ticket in done {
                fleet.complete(ticket);
            }
        }
    }

    /// A finished request's line from the edge, for the tails.
    async fn tail_line(&self, req: &mut Request) -> Result<Response> {
        let line: RequestLine = match req.json().await {
            Ok(l) => l,
            Err(e) => return error_response(400, &format!("malformed tail line: {e}"), None),
        };
        self.tails.broadcast(&self.state, &Line::Request(line));
        Response::empty().map(|r| r.with_status(204))
    }

    /// Transitions go to the tails and to the health history in D1: in the background when
    /// found on a decision, awaited when found by a probe round (`wait`), which no client awaits.
    async fn observe(&self, events: Vec<HealthEvent>, wait: bool) {
        if events.is_empty() {
            return;
        }
        if self.tails.listening(&self.state) {
            for e in &events {
                self.tails.broadcast(&self.state, &Line::Health(e.clone()));
            }
        }
        if wait {
            healthlog::store(&self.env, &events).await;
        } else {
            healthlog::record(&self.env, &events);
        }
    }

    /// Tells the tails about a config change.
    fn config_event(&self, version: u64, action: &str) {
        if self.tails.listening(&self.state) {
            self.tails.broadcast(
                &self.state,
                &Line::Config {
                    hostname: self.host.borrow().clone().unwrap_or_default(),
                    at_ms: Self::now(),
                    version,
                    action: action.to_string(),
                },
            );
        }
    }

    /// Re-arms a missing alarm: the probe loop must survive lost alarms and restarts.
    async fn watchdog(&self, now: u64) -> Result<()> {
        // Without active checks no alarm is kept, so there is nothing to look up in storage
        // (otherwise every decision would read the alarm).
        if !self.probing_enabled() && self.outbox.borrow().next_due().is_none() {
            return Ok(());
        }
        let known = *self.alarm_at.borrow();
        match known {
            Some(at) if at + 30_000 > now => Ok(()),
            _ => match self.state.storage().get_alarm().await? {
                // Kept unless a probe is due before it (a config change just added a backend).
                Some(at)
                    if at as u64 + 30_000 > now
                        && self.next_probe_at(now).is_none_or(|p| at as u64 <= p) =>
                {
                    *self.alarm_at.borrow_mut() = Some(at as u64);
                    Ok(())
                }
                _ => self.arm_next().await,
            },
        }
    }

    /// When the earliest probe is due, or None without active checks.
    fn next_probe_at(&self, now: u64) -> Option<u64> {
        match &mut *self.service.borrow_mut() {
            Some(Service::Ready(fleet)) => fleet.next_probe_at(now, &mut *self.rng.borrow_mut()),
            _ => None,
        }
    }

    /// Sets the alarm for the earlier of the next due probe and the next webhook delivery.
    async fn arm_next(&self) -> Result<()> {
        let now = Self::now();
        let probe = self.next_probe_at(now);
        let next = [probe, self.outbox.borrow().next_due()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(at) => self.set_alarm_in(at.saturating_sub(now)).await,
            None => Ok(()),
        }
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
        let before = self.views();
        let (persist, reprobe, events) = {
            let mut service = self.service.borrow_mut();
            let Some(Service::Ready(fleet)) = &mut *service else {
                return Ok(());
            };
            let before = transitions::marks(fleet.records());
            let mut persist = false;
            let mut reprobe = false;
            let mut counters = self.metrics.borrow_mut();
            for o in outcomes {
                counters.record_outcome(o);
                let c = fleet.report(o, now);
                persist |= c.persist;
                reprobe |= c.reprobe_soon;
            }
            let events = if persist {
                let host = fleet.cfg().hostname.to_string();
                transitions::diff(&host, &before, fleet.records(), "requests", now)
            } else {
                Vec::new()
            };
            (persist, reprobe, events)
        };
        self.metrics_dirty.set(true);
        self.observe(events, false).await;
        if persist {
            self.notice(before, Cause::Passive);
            self.persist_backends().await?;
        }
        if reprobe {
            self.reprobe_soon(now).await?;
        }
        self.send_soon().await?;
        self.save_metrics(false).await
    }

    /// A suspect backend's probe moved earlier: the alarm wakes for it unless it wakes sooner anyway.
    async fn reprobe_soon(&self, now: u64) -> Result<()> {
        let Some(due) = self.next_probe_at(now) else {
            return Ok(());
        };
        let known = *self.alarm_at.borrow();
        match known {
            Some(at) if at <= due => Ok(()),
            _ => self.set_alarm_in(due.saturating_sub(now)).await,
        }
    }

    /// Stores the backends' state, and in the same write the outbox when a transition queued
    /// events: an event is durable exactly when the state change that made it is.
    async fn persist_backends(&self) -> Result<()> {
        let records: Vec<BackendRecord> = match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => fleet.records().to_vec(),
            _ => return Ok(()),
        };
        if !self.outbox_dirty.replace(false) {
            return self.state.storage().put(KEY_BACKENDS, records).await;
        }
        let outbox = serde_json::to_string(&*self.outbox.borrow())?;
        let entries = js_sys::Object::new();
        js_sys::Reflect::set(
            &entries,
            &KEY_BACKENDS.into(),
            &serde_wasm_bindgen::to_value(&records).map_err(|e| Error::RustError(e.to_string()))?,
        )?;
        js_sys::Reflect::set(&entries, &KEY_OUTBOX.into(), &outbox.into())?;
        self.state.storage().put_multiple_raw(entries).await
    }

    /// Probes the backends due now (`all`: every backend not disabled) in parallel; applies
    /// results and persists flips.
    async fn probe(&self, all: bool) -> Result<Vec<ProbeResult>> {
        let now = Self::now();
        let plan = match &mut *self.service.borrow_mut() {
            Some(Service::Ready(fleet)) => {
                fleet.take_probe_plan(now, all, &mut *self.rng.borrow_mut())
            }
            _ => return Ok(vec![]),
        };
        if plan.targets.is_empty() {
            return Ok(vec![]);
        }
        let monitor = match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => fleet.cfg().health.clone(),
            _ => return Ok(vec![]),
        };
        let probes = plan
            .targets
            .iter()
            .map(|t| probe_backend(&t.url, &monitor, t.discovered_path.as_deref()));
        let results = futures_util::future::join_all(probes).await;
        let now = Self::now();
        let before = self.views();
        {
            let mut counters = self.metrics.borrow_mut();
            for (t, r) in plan.targets.iter().zip(&results) {
                counters.record_probe(&t.url, r.ok);
            }
            self.metrics_dirty.set(true);
        }
        {
            // A round covers the backends due; results of backends the config dropped go.
            let mut last = self.last_probes.borrow_mut();
            if let Some(Service::Ready(fleet)) = &*self.service.borrow() {
                last.retain(|url, _| fleet.records().iter().any(|b| &b.url == url));
            }
            for r in &results {
                last.insert(r.url.clone(), (now, r.clone()));
            }
        }
        let mut persist = false;
        let mut events = Vec::new();
        if let Some(Service::Ready(fleet)) = &mut *self.service.borrow_mut() {
            let before = transitions::marks(fleet.records());
            for (t, r) in plan.targets.iter().zip(&results) {
                let outcome = ProbeOutcome {
                    ok: r.ok,
                    latency_ms: r.latency_ms,
                    error: r.error.clone(),
                    discovered_path: r.discovered_path.clone(),
                };
                persist |= fleet.apply_probe_result(t, &outcome, now);
            }
            if persist {
                let host = fleet.cfg().hostname.to_string();
                events = transitions::diff(&host, &before, fleet.records(), "probe", now);
            }
        }
        self.observe(events, true).await;
        if persist {
            self.notice(before, Cause::Probe);
            self.persist_backends().await?;
        }
        Ok(results)
    }

    fn current(&self) -> Option<(u64, ServiceConfig, Vec<BackendRecord>)> {
        match &*self.service.borrow() {
            Some(Service::Ready(f)) => Some((f.version(), f.cfg().clone(), f.records().to_vec())),
            _ => None,
        }
    }

    fn get_config(&self) -> Result<Response> {
        match self.current() {
            Some((version, cfg, _)) => {
                let value = cfg.to_value();
                let mut resp = Response::from_json(&serde_json::json!({
                    "hostname": cfg.hostname,
                    "version": version,
                    "source": self.source_of(&cfg),
                    "config": config::redacted(&value),
                }))?;
                resp.headers_mut().set("etag", &format!("\"{version}\""))?;
                Ok(resp)
            }
            None => self.status(),
        }
    }

    /// Stores a new config version, then answers. Storage comes first, in one transaction (config,
    /// history entry, audit entry, the webhook event in the outbox): only once it is stored does
    /// the in-memory fleet change, so a failed write leaves memory, version and storage as they
    /// were. The output gate still holds the answer until the write is durable.
    async fn commit(
        &self,
        cfg: ServiceConfig,
        status: u16,
        change: Change,
        restored: Option<u64>,
    ) -> Result<Response> {
        if let Err(message) = cfg.check_size() {
            return too_large(&message);
        }
        let (version, records) = match self.current() {
            Some((v, _, r)) => (v, r),
            None => (self.stored_version().await?, vec![]),
        };
        let next = version + 1;
        let now = Self::now();
        let value = cfg.to_value();
        let source = self.source_of(&cfg);
        let host = cfg.hostname.to_string();
        let trail = self.audit_with(change, Some(next)).await?;
        // The change's event goes into a copy of the outbox, stored with the config.
        let mut outbox = self.outbox.borrow().clone();
        let dropped = self.queue_config_change(&mut outbox, &cfg, version, next, restored, now);
        if env_string(&self.env, "AFFINITY_SECRET").is_none() {
            self.affinity_key();
        }
        let affinity_key = self
            .affinity_key_unsaved
            .get()
            .then(|| self.affinity_key.borrow().clone())
            .flatten();
        let write = ConfigWrite {
            config: Some(StoredConfig {
                version: next,
                config: value.clone(),
            }),
            history: Some(HistoryEntry {
                version: next,
                ts_ms: now,
                config: value.clone(),
            }),
            host: Some(host.clone()),
            outbox: Some(serde_json::to_string(&outbox)?),
            audit: Some(trail),
            affinity_key,
            deleted: Some(false),
            // Versions only grow by one: exactly one falls out of the kept window.
            delete: next
                .checked_sub(HISTORY_LEN as u64)
                .filter(|&v| v > 0)
                .map(history_key)
                .into_iter()
                .collect(),
            oversize: self.test_oversize,
        };
        if let Err(e) = write.run(self.state.storage()).await {
            return not_stored(&host, &e);
        }
        // Stored: now memory follows.
        self.affinity_key_unsaved.set(false);
        {
            let all = cfg.all_backends();
            let urls: Vec<&str> = all.iter().map(|b| b.url.as_str()).collect();
            let mut metrics = self.metrics.borrow_mut();
            metrics.retain_backends(&urls);
            if dropped > 0 {
                metrics.record_delivery("dropped", dropped);
            }
        }
        self.metrics_dirty.set(true);
        *self.outbox.borrow_mut() = outbox;
        self.outbox_dirty.set(false);
        let mut fleet = self.fleet(cfg, next, &records);
        if let Some(Service::Ready(old)) = &*self.service.borrow() {
            fleet.adopt_load(old);
        }
        *self.service.borrow_mut() = Some(Service::Ready(Box::new(fleet)));
        *self.alarm_at.borrow_mut() = None;
        // The change is stored and live: an alarm that cannot be set now is set by the watchdog
        // on a later request, so this write is not reported as failed.
        let armed = match self.watchdog(now).await {
            Ok(()) => self.wake_for_deliveries().await,
            Err(e) => Err(e),
        };
        if let Err(e) = armed {
            console_error!("{host}: alarm after config version {next} not set: {e}");
        }
        self.config_event(next, "changed");
        self.fence().await;
        let mut resp = Response::from_json(&serde_json::json!({
            "version": next,
            "source": source,
            "config": config::redacted(&value),
        }))?
        .with_status(status);
        resp.headers_mut().set("etag", &format!("\"{next}\""))?;
        Ok(resp)
    }

    /// This hostname's config in DEFAULT_BACKENDS (the deployed config), if it has one.
    fn deployed(&self, host: &str) -> Option<ServiceConfig> {
        registry::defaults(&self.env)
            .services
            .iter()
            .find(|s| s.hostname == host)
            .cloned()
    }

    /// `DEFAULT_BACKENDS` when `cfg` is the deployed config, else `api`.
    fn source_of(&self, cfg: &ServiceConfig) -> &'static str {
        match self.deployed(cfg.hostname.as_str()) {
            Some(d) if d == *cfg => "DEFAULT_BACKENDS",
            _ => "api",
        }
    }

    /// `POST /config/reset` (and rollback to version 0, and DELETE of an API config when a
    /// deployed one exists): stores the deployed config as a new version.
    async fn reset(&self, if_match: Option<IfMatch>, actor: Actor) -> Result<Response> {
        if let Some(refused) = self.unmet(if_match.as_ref()) {
            return refused;
        }
        let summary = "restored the deployed config (DEFAULT_BACKENDS)".to_string();
        self.reset_to_deployed(actor, summary).await
    }

    async fn reset_to_deployed(&self, actor: Actor, summary: String) -> Result<Response> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let Some(deployed) = self.deployed(&host) else {
            let defaults = registry::defaults(&self.env);
            let why = if defaults.errors.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = defaults.errors.iter().map(|e| e.to_string()).collect();
                format!(" (DEFAULT_BACKENDS has errors: {})", list.join("; "))
            };
            let (status, what) = if self.fleet_ready() {
                (409, "its config was made through the API")
            } else {
                (404, "no service is configured here")
            };
            return error_response(
                status,
                &format!("\"{host}\" has no deployed config to reset to: DEFAULT_BACKENDS does not describe it{why}; {what}"),
                None,
            );
        };
        let status = if self.fleet_ready() { 200 } else { 201 };
        match config::parse_service(&deployed.to_value(), "", &self.deployment(&host).await) {
            Ok(cfg) => {
                let change = Change {
                    actor,
                    action: "config.reset",
                    summary,
                };
                self.commit(cfg, status, change, Some(0)).await
            }
            Err(errs) => invalid(errs),
        }
    }

    /// `POST /config/validate`: what a write of `body` would store (secrets redacted), or every
    /// error at its path; nothing is stored.
    async fn validate_config(&self, mut body: serde_json::Value) -> Result<Response> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let stored = self.current().map(|(_, c, _)| c);
        config::restore_secrets(&mut body, stored.as_ref());
        match config::parse_service_for_host(&body, &host, &self.deployment(&host).await) {
            Ok(cfg) => match cfg.check_size() {
                Ok(_) => Response::from_json(
                    &serde_json::json!({ "valid": true, "config": config::redacted(&cfg.to_value()) }),
                ),
                Err(message) => too_large(&message),
            },
            Err(errs) => invalid(errs),
        }
    }

    /// The 412 when the request's If-Match does not hold for the current config. Each write checks
    /// it after reading its body and before validating: a stale writer learns first that it is
    /// stale, and no other request can change the version between this check and the commit.
    fn unmet(&self, if_match: Option<&IfMatch>) -> Option<Result<Response>> {
        let current = self.current().map(|(v, _, _)| v);
        match if_match {
            Some(cond) if !cond.holds(current) => Some(precondition_failed(current)),
            _ => None,
        }
    }

    async fn put_config(
        &self,
        body: &serde_json::Value,
        if_match: Option<IfMatch>,
        actor: Actor,
    ) -> Result<Response> {
        if let Some(refused) = self.unmet(if_match.as_ref()) {
            return refused;
        }
        let host = self.host.borrow().clone().unwrap_or_default();
        let stored = self.current().map(|(_, c, _)| c);
        let mut body = body.clone();
        config::restore_secrets(&mut body, stored.as_ref());
        match config::parse_service_for_host(&body, &host, &self.deployment(&host).await) {
            Ok(cfg) => {
                let old = stored.map(|c| c.to_value());
                let change = Change {
                    actor,
                    action: if old.is_none() {
                        "config.created"
                    } else {
                        "config.replaced"
                    },
                    summary: audit::config_summary(old.as_ref(), &cfg.to_value()),
                };
                let status = if old.is_none() { 201 } else { 200 };
                self.commit(cfg, status, change, None).await
            }
            Err(errs) => invalid(errs),
        }
    }

    async fn change_backends(
        &self,
        method: Method,
        body: &serde_json::Value,
        if_match: Option<IfMatch>,
        actor: Actor,
    ) -> Result<Response> {
        let Some((_, cfg, _)) = self.current() else {
            return self.status();
        };
        if let Some(refused) = self.unmet(if_match.as_ref()) {
            return refused;
        }
        let ctx = self.deployment(cfg.hostname.as_str()).await;
        let next = match method {
            Method::Post => changes::add_backend(&cfg, body, &ctx),
            Method::Patch => changes::update_backend(&cfg, body, &ctx),
            _ => changes::remove_backend(&cfg, body.as_str().unwrap_or_default(), &ctx),
        };
        let (action, summary) = audit::backend_change(method.as_ref(), body);
        let change = Change {
            actor,
            action,
            summary,
        };
        match next {
            Ok(cfg) => self.commit(cfg, 200, change, None).await,
            Err(errs) => invalid(errs),
        }
    }

    /// `DELETE /config`: removes what the API stored. A hostname with a deployed config that
    /// differs from the live one falls back to it (a new version); otherwise the service is
    /// deleted (421 to clients, versions kept so a new config continues the numbering).
    async fn delete_config(&self, if_match: Option<IfMatch>, actor: Actor) -> Result<Response> {
        let Some((version, cfg, _)) = self.current() else {
            return self.status();
        };
        if let Some(refused) = self.unmet(if_match.as_ref()) {
            return refused;
        }
        let host = self.host.borrow().clone().unwrap_or_default();
        if self.deployed(&host).is_some_and(|d| d != cfg) {
            let summary = format!(
                "deleted the API config (was version {version}); the deployed config (DEFAULT_BACKENDS) serves again"
            );
            return self.reset_to_deployed(actor, summary).await;
        }
        let change = Change {
            actor,
            action: "config.deleted",
            summary: format!("deleted the service (was version {version})"),
        };
        let write = ConfigWrite {
            audit: Some(self.audit_with(change, Some(version)).await?),
            deleted: Some(true),
            delete: vec![KEY_CONFIG.to_string(), KEY_BACKENDS.to_string()],
            oversize: self.test_oversize,
            ..ConfigWrite::default()
        };
        if let Err(e) = write.run(self.state.storage()).await {
            return not_stored(&host, &e);
        }
        *self.service.borrow_mut() = Some(Service::Missing(unknown_host(&host)));
        *self.alarm_at.borrow_mut() = None;
        if let Err(e) = self.state.storage().delete_alarm().await {
            // Harmless: an alarm of a service without config finds nothing to probe.
            console_error!("{host}: alarm not deleted with the service: {e}");
        }
        self.config_event(version, "deleted");
        self.fence().await;
        Response::from_json(&serde_json::json!({ "deleted": host, "version": version }))
    }

    /// `GET /config/history`: the kept versions, newest first, and last the deployed config
    /// (version 0) when DEFAULT_BACKENDS describes this hostname; secrets redacted.
    async fn history(&self) -> Result<Response> {
        let history = self.load_history().await?;
        let current = self.current().map(|(v, _, _)| v);
        let host = self.host.borrow().clone().unwrap_or_default();
        let deployed = self.deployed(&host);
        // Stored values read back with other number spellings (50 for 50.0): compare parsed.
        let source = |c: &serde_json::Value| {
            let is_deployed = deployed.as_ref().is_some_and(|d| {
                config::parse_service(c, "", &Deployment::default()).is_ok_and(|p| p == *d)
            });
            if is_deployed {
                "DEFAULT_BACKENDS"
            } else {
                "api"
            }
        };
        let mut versions: Vec<serde_json::Value> = history
            .iter()
            .rev()
            .map(|h| serde_json::json!({ "version": h.version, "ts_ms": h.ts_ms, "current": Some(h.version) == current, "source": source(&h.config), "config": config::redacted(&h.config) }))
            .collect();
        if let Some(d) = &deployed {
            versions.push(serde_json::json!({ "version": 0, "ts_ms": null, "current": current == Some(0), "source": "DEFAULT_BACKENDS", "config": config::redacted(&d.to_value()) }));
        }
        Response::from_json(&serde_json::json!({ "current": current, "versions": versions }))
    }

    async fn rollback(
        &self,
        body: &serde_json::Value,
        if_match: Option<IfMatch>,
        actor: Actor,
    ) -> Result<Response> {
        if let Some(refused) = self.unmet(if_match.as_ref()) {
            return refused;
        }
        let Some(version) = body.get("version").and_then(|v| v.as_u64()) else {
            return invalid(vec![err(
                "version",
                "required: the integer version to restore (see config/history)",
            )]);
        };
        let host = self.host.borrow().clone().unwrap_or_default();
        if version == 0 && self.deployed(&host).is_some() {
            let summary = "rolled back to version 0, the deployed config (DEFAULT_BACKENDS)";
            return self.reset_to_deployed(actor, summary.to_string()).await;
        }
        let history = self.load_history().await?;
        let Some(entry) = history.iter().find(|h| h.version == version) else {
            let mut kept: Vec<String> = history.iter().map(|h| h.version.to_string()).collect();
            if self.deployed(&host).is_some() {
                kept.insert(0, "0 (the deployed config)".to_string());
            }
            return invalid(vec![err(
                "version",
                format!(
                    "version {version} is not kept; available: {}",
                    kept.join(", ")
                ),
            )]);
        };
        match config::parse_service(
            &entry.config,
            "",
            &self.deployment(&host_of(&entry.config)).await,
        ) {
            Ok(cfg) => {
                let change = Change {
                    actor,
                    action: "config.rolled_back",
                    summary: format!("restored the config of version {version}"),
                };
                self.commit(cfg, 200, change, Some(version)).await
            }
            Err(errs) => invalid(errs),
        }
    }

    /// The stored trail with `change` appended (as JSON text, bounded), ready to store.
    async fn audit_with(&self, change: Change, version: Option<u64>) -> Result<String> {
        let mut trail = self.load_audit().await?;
        let entry = audit::Entry {
            at: Self::now(),
            actor: change.actor,
            action: change.action.into(),
            summary: change.summary,
            version,
        };
        audit::record(&mut trail, entry, AUDIT_LEN);
        Ok(serde_json::to_string(&trail)?)
    }

    async fn load_audit(&self) -> Result<Vec<audit::Entry>> {
        let text: Option<String> = self.state.storage().get(KEY_AUDIT).await?;
        // A trail that cannot be read must not block config changes: start a new one, loudly.
        Ok(match text.map(|t| serde_json::from_str(&t)) {
            Some(Ok(trail)) => trail,
            Some(Err(e)) => {
                console_error!("audit trail unreadable, starting a new one: {e}");
                Vec::new()
            }
            None => Vec::new(),
        })
    }

    /// `GET .../audit`: the service's admin changes, newest first.
    async fn audit_view(&self) -> Result<Response> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let entries: Vec<audit::Entry> = self.load_audit().await?.into_iter().rev().collect();
        Response::from_json(&serde_json::json!({ "hostname": host, "entries": entries }))
    }

    fn status(&self) -> Result<Response> {
        match &*self.service.borrow() {
            Some(Service::Ready(fleet)) => {
                let now = Self::now();
                let mut view = status_view(fleet, now, &self.last_probes.borrow());
                view["decisions"] = decisions_view(fleet, self.leases.borrow_mut().as_mut(), now);
                Response::from_json(&view)
            }
            Some(Service::Missing(r)) => Response::error(
                r.message.clone(),
                if r.status == 421 { 404 } else { r.status },
            ),
            None => Response::error("no service is configured here", 404),
        }
    }
}

fn err(path: &str, message: impl Into<String>) -> config::ConfigError {
    config::ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// 400 listing every error by field path; nothing was stored.
pub(crate) fn invalid(errors: Vec<config::ConfigError>) -> Result<Response> {
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    Ok(Response::from_json(&serde_json::json!({
        "error": format!("invalid request: {}", list.join("; ")),
        "errors": errors,
        "status": 400,
    }))?
    .with_status(400))
}

/// 413: the config is over MAX_CONFIG_BYTES; nothing was stored.
fn too_large(message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({
        "error": message,
        "limit_bytes": config::MAX_CONFIG_BYTES,
        "status": 413,
    }))?
    .with_status(413))
}

/// 503: storage refused a config write. Nothing changed (the write is one transaction and memory
/// follows only a stored write); the storage's own message goes to the log, not the client.
fn not_stored(host: &str, e: &Error) -> Result<Response> {
    console_error!("{host}: config write not stored: {e}");
    error_response(
        503,
        "the config could not be stored; nothing changed. Retry, and see the Worker's log if it persists",
        None,
    )
}

/// 412: the write's If-Match does not name the current config version; nothing was stored.
fn precondition_failed(current: Option<u64>) -> Result<Response> {
    let error = match current {
        Some(v) => {
            format!("If-Match does not match the current config version {v}; reload and retry")
        }
        None => "If-Match: the service has no config to match; reload and retry".to_string(),
    };
    Ok(Response::from_json(&serde_json::json!({
        "error": error,
        "current_version": current,
        "status": 412,
    }))?
    .with_status(412))
}

/// The request's `If-Match`, or the 400 naming it and the accepted forms: a condition that
/// cannot be read refuses the write rather than being ignored.
fn if_match(req: &Request) -> Result<std::result::Result<Option<IfMatch>, Response>> {
    let Some(raw) = req.headers().get("if-match")? else {
        return Ok(Ok(None));
    };
    match IfMatch::parse(&raw) {
        Ok(cond) => Ok(Ok(Some(cond))),
        Err(message) => Ok(Err(invalid(vec![err("If-Match", message)])?)),
    }
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

/// The admin view of one service: per-backend health, breaker and latency, and the config.
fn status_view(
    fleet: &Fleet,
    now_ms: u64,
    probes: &HashMap<String, (u64, ProbeResult)>,
) -> serde_json::Value {
    let monitor = &fleet.cfg().health;
    let backends: Vec<serde_json::Value> = fleet
        .backend_status(now_ms)
        .iter()
        .map(|s| {
            let b = s.record;
            let (breaker, open_until) = match b.breaker.state {
                BreakerState::Closed => ("closed", None),
                BreakerState::Open { until_ms } => ("open", Some(until_ms)),
                BreakerState::HalfOpen { .. } => ("half_open", None),
            };
            serde_json::json!({
                "url": b.url,
                "weight": s.weight,
                "effective_weight": s.effective_weight,
                "state": s.state,
                "health": s.health,
                "healthy": b.health.healthy,
                "breaker": breaker,
                "breaker_open_until_ms": open_until,
                "consecutive_successes": b.health.consecutive_ok,
                "consecutive_failures": b.health.consecutive_fail,
                "consecutive_request_failures": b.breaker.consecutive_failures,
                "error_rate": s.error_rate,
                "last_probe_ms": b.last_probe_ms,
                "latency_ms": b.latency_ms.map(|l| (l * 10.0).round() / 10.0),
                "outstanding": s.outstanding,
                "ewma_ms": s.ewma_ms.map(|l| (l * 10.0).round() / 10.0),
                "health_path": b.health_path,
                "last_error": b.last_error,
                "monitor": monitor_view(monitor, probes.get(&b.url)),
            })
        })
        .collect();
    let (up, total) = fleet.summary();
    let pools: Vec<serde_json::Value> = fleet
        .pool_status(now_ms)
        .into_iter()
        .map(|(name, health, healthy, total)| {
            serde_json::json!({ "name": name, "health": health, "healthy_backends": healthy, "total_backends": total })
        })
        .collect();
    let lb = &fleet.cfg().load_balancer;
    serde_json::json!({
        "hostname": fleet.cfg().hostname,
        "version": fleet.version(),
        "endpoint_steering": lb.endpoint_steering,
        "steering": lb.steering,
        "pools": pools,
        "health": fleet.service_health().as_str(),
        "healthy_backends": up,
        "total_backends": total,
        "backends": backends,
        "config": config::redacted(&fleet.cfg().to_value()),
    })
}

/// Where decisions are made, and the leases: outstanding now, and granted, refreshed and handed
/// back early in this object's lifetime.
fn decisions_view(fleet: &Fleet, book: Option<&mut LeaseBook>, now_ms: u64) -> serde_json::Value {
    let d = &fleet.cfg().decisions;
    let (outstanding, counters) = match book {
        Some(b) => (b.outstanding(now_ms), b.counters),
        None => (0, Default::default()),
    };
    serde_json::json!({
        "mode": d.mode,
        "lease_ms": d.lease_ms,
        "leases_outstanding": outstanding,
        "lease_grants": counters.grants,
        "lease_refreshes": counters.refreshes,
        "lease_early_returns": counters.early_returns,
    })
}

/// A backend's monitor as the status view shows it: what it checks, and its last result and
/// why it failed (`expected 2xx, got 500`; `body did not contain "ok"`). Null before the first
/// probe of this object's lifetime, or without active checks.
fn monitor_view(m: &ActiveHealth, last: Option<&(u64, ProbeResult)>) -> serde_json::Value {
    let Some((at_ms, r)) = last.filter(|_| m.enabled) else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "type": m.kind,
        "method": (m.kind != MonitorType::Tcp).then_some(m.method),
        "target": r.path,
        "result": if r.ok { "up" } else { "down" },
        "status": r.status,
        "reason": r.error,
        "latency_ms": r.latency_ms,
        "checked_ms": at_ms,
    })
}

/// The hostname a stored config names.
fn host_of(config: &serde_json::Value) -> String {
    config["hostname"].as_str().unwrap_or_default().to_string()
}
