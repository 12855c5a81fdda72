//! The Balancer's config routes: get, put, backends, delete, reset, rollback, validate and history, each change audited.

use worker::*;

use super::store::{history_key, ConfigWrite};
use super::{
    Balancer, Change, HistoryEntry, Service, StoredConfig, AUDIT_LEN, HISTORY_LEN, KEY_AUDIT,
    KEY_BACKENDS, KEY_CONFIG, KEY_WATCH,
};
use crate::platform::store::registry::{self, unknown_host};
use crate::platform::{env_string, error_response};
use crate::policy::control::audit::{self, Actor};
use crate::policy::control::changes;
use crate::policy::control::config::{self, Deployment, EffectiveMode, ServiceConfig};
use crate::policy::control::precondition::IfMatch;
use crate::policy::control::watch::{self, Watch};
use crate::policy::telemetry::tail::Line;
use crate::policy::traffic::fleet::BackendRecord;

impl Balancer {
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

    pub(super) fn current(&self) -> Option<(u64, ServiceConfig, Vec<BackendRecord>)> {
        match &*self.service.borrow() {
            Some(Service::Ready(f)) => Some((f.version(), f.cfg().clone(), f.records().to_vec())),
            _ => None,
        }
    }

    pub(super) fn get_config(&self) -> Result<Response> {
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
    /// history entry, audit entry, the webhook event in the outbox, the change watch): only once
    /// it is stored does the in-memory fleet change, so a failed write leaves memory, version and
    /// storage as they were. The output gate still holds the answer until the write is durable.
    /// `undone`: this is FlowBalance's automatic rollback of that watched change.
    pub(super) async fn commit(
        &self,
        cfg: ServiceConfig,
        status: u16,
        change: Change,
        restored: Option<u64>,
        undone: Option<&Watch>,
    ) -> Result<Response> {
        if let Err(message) = cfg.check_size() {
            return too_large(&message);
        }
        let (version, records, had_config) = match self.current() {
            Some((v, _, r)) => (v, r, true),
            None => (self.stored_version().await?, vec![], false),
        };
        let next = version + 1;
        let now = Self::now();
        let value = cfg.to_value();
        let source = self.source_of(&cfg);
        let host = cfg.hostname.to_string();
        let actor = change.actor.label();
        let (action, summary) = (change.action.to_string(), change.summary.clone());
        let trail = self.audit_with(change, Some(next)).await?;
        // The change's event goes into a copy of the outbox, stored with the config.
        let mut outbox = self.outbox.borrow().clone();
        let dropped = self.queue_config_change(
            &mut outbox,
            &cfg,
            version,
            next,
            restored,
            undone,
            actor.clone(),
            now,
        );
        // This change ends the watch of the one before it and is watched itself (see watch.rs).
        let mut safety = self.safety.borrow().clone();
        let watched = watch::Change {
            version: next,
            previous: had_config.then_some(version),
            automatic: undone.is_some(),
        };
        // Answers still arriving for the old config (late tallies, its leases) are not judged.
        let leased = match &*self.service.borrow() {
            Some(Service::Ready(f)) if f.cfg().effective_mode() == EffectiveMode::Lease => {
                f.cfg().decisions.lease_ms
            }
            _ => 0,
        };
        safety.changed(watched, &cfg.change_safety, now, watch::SETTLE_MS + leased);
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
                actor: Some(actor),
                action: Some(action),
                summary: Some(summary),
            }),
            watch: Some(serde_json::to_string(&safety)?),
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
        let probing = self.probing_regions();
        *self.safety.borrow_mut() = safety;
        let mut fleet = self.fleet(cfg, next, &records);
        if let Some(Service::Ready(old)) = &*self.service.borrow() {
            fleet.adopt_load(old);
        }
        *self.service.borrow_mut() = Some(Service::Ready(Box::new(fleet)));
        self.update_probers(&probing).await;
        *self.alarm_at.borrow_mut() = None;
        // The change is stored and live: an alarm that cannot be set now is set by the watchdog
        // on a later request, so this write is not reported as failed.
        let armed = match self.watchdog(now).await {
            Ok(()) => match self.wake_for_deliveries().await {
                Ok(()) => self.dns_soon().await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = armed {
            console_error!("{host}: alarm after config version {next} not set: {e}");
        }
        let action = if undone.is_some() {
            "auto_rolled_back"
        } else {
            "changed"
        };
        self.config_event(next, action);
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
    pub(super) fn deployed(&self, host: &str) -> Option<ServiceConfig> {
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
    pub(super) async fn reset(&self, if_match: Option<IfMatch>, actor: Actor) -> Result<Response> {
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
                self.commit(cfg, status, change, Some(0), None).await
            }
            Err(errs) => invalid(errs),
        }
    }

    /// `POST /config/validate`: what a write of `body` would store (secrets redacted), or every
    /// error at its path; nothing is stored.
    pub(super) async fn validate_config(&self, body: serde_json::Value) -> Result<Response> {
        match self.draft(body).await? {
            Ok(cfg) => Response::from_json(
                &serde_json::json!({ "valid": true, "config": config::redacted(&cfg.to_value()) }),
            ),
            Err(refused) => Ok(refused),
        }
    }

    /// `body` as a write would store it (a redacted secret stands for the stored one), or the
    /// answer refusing it: 400 with every error at its path, 413 when too large.
    pub(super) async fn draft(
        &self,
        mut body: serde_json::Value,
    ) -> Result<std::result::Result<ServiceConfig, Response>> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let stored = self.current().map(|(_, c, _)| c);
        config::restore_secrets(&mut body, stored.as_ref());
        match config::parse_service_for_host(&body, &host, &self.deployment(&host).await) {
            Ok(cfg) => match cfg.check_size() {
                Ok(_) => Ok(Ok(cfg)),
                Err(message) => too_large(&message).map(Err),
            },
            Err(errs) => invalid(errs).map(Err),
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

    pub(super) async fn put_config(
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
                self.commit(cfg, status, change, None, None).await
            }
            Err(errs) => invalid(errs),
        }
    }

    pub(super) async fn change_backends(
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
            Ok(cfg) => self.commit(cfg, 200, change, None, None).await,
            Err(errs) => invalid(errs),
        }
    }

    /// `DELETE /config`: removes what the API stored. A hostname with a deployed config that
    /// differs from the live one falls back to it (a new version); otherwise the service is
    /// deleted (421 to clients, versions kept so a new config continues the numbering).
    pub(super) async fn delete_config(
        &self,
        if_match: Option<IfMatch>,
        actor: Actor,
    ) -> Result<Response> {
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
            // Nothing is left to watch or roll back.
            delete: vec![
                KEY_CONFIG.to_string(),
                KEY_BACKENDS.to_string(),
                KEY_WATCH.to_string(),
            ],
            oversize: self.test_oversize,
            ..ConfigWrite::default()
        };
        if let Err(e) = write.run(self.state.storage()).await {
            return not_stored(&host, &e);
        }
        let probing = self.probing_regions();
        *self.service.borrow_mut() = Some(Service::Missing(unknown_host(&host)));
        // Its region probers stop and forget it.
        self.update_probers(&probing).await;
        self.safety.borrow_mut().forget();
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
    pub(super) async fn history(&self) -> Result<Response> {
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
            .map(|h| serde_json::json!({ "version": h.version, "ts_ms": h.ts_ms, "current": Some(h.version) == current, "source": source(&h.config), "actor": h.actor, "action": h.action, "summary": h.summary, "config": config::redacted(&h.config) }))
            .collect();
        if let Some(d) = &deployed {
            versions.push(serde_json::json!({ "version": 0, "ts_ms": null, "current": current == Some(0), "source": "DEFAULT_BACKENDS", "config": config::redacted(&d.to_value()) }));
        }
        Response::from_json(&serde_json::json!({ "current": current, "versions": versions }))
    }

    pub(super) async fn rollback(
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
                self.commit(cfg, 200, change, Some(version), None).await
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
    pub(super) async fn audit_view(&self) -> Result<Response> {
        let host = self.host.borrow().clone().unwrap_or_default();
        let entries: Vec<audit::Entry> = self.load_audit().await?.into_iter().rev().collect();
        Response::from_json(&serde_json::json!({ "hostname": host, "entries": entries }))
    }
}

pub(super) fn err(path: &str, message: impl Into<String>) -> config::ConfigError {
    config::ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// 400 listing every error by field path; nothing was stored.
pub(super) fn invalid(errors: Vec<config::ConfigError>) -> Result<Response> {
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    Ok(Response::from_json(&serde_json::json!({
        "error": format!("invalid request: {}", list.join("; ")),
        "errors": errors,
        "status": 400,
    }))?
    .with_status(400))
}

/// 413: the config is over MAX_CONFIG_BYTES; nothing was stored.
pub(super) fn too_large(message: &str) -> Result<Response> {
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
pub(super) fn if_match(req: &Request) -> Result<std::result::Result<Option<IfMatch>, Response>> {
    let Some(raw) = req.headers().get("if-match")? else {
        return Ok(Ok(None));
    };
    match IfMatch::parse(&raw) {
        Ok(cond) => Ok(Ok(Some(cond))),
        Err(message) => Ok(Err(invalid(vec![err("If-Match", message)])?)),
    }
}

/// Parses a JSON body, or answers 400 with the parser's position.
pub(super) async fn read_json(
    req: &mut Request,
) -> Result<std::result::Result<serde_json::Value, Response>> {
    let text = req.text().await.unwrap_or_default();
    match serde_json::from_str(&text) {
        Ok(v) => Ok(Ok(v)),
        Err(e) => Ok(Err(invalid(vec![err(
            "",
            format!("malformed JSON body: {e}"),
        )])?)),
    }
}

/// The hostname a stored config names.
fn host_of(config: &serde_json::Value) -> String {
    config["hostname"].as_str().unwrap_or_default().to_string()
}
