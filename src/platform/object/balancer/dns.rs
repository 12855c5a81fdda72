//! The Balancer's health-checked DNS records: it keeps the service's `dns` record set in step with the healthy backends through the Cloudflare v4 API (the plan is `policy::health::dns`), reports failed syncs and shows the set.

use serde::de::DeserializeOwned;
use worker::*;

use super::{Balancer, Service};
use crate::platform::{env_string, fetch_url, js_message, Deadline};
use crate::policy::access::oauth;
use crate::policy::control::config::{DnsRecords, EventKind};
use crate::policy::health::dns::{self, Address, SyncState, ZoneRecord};
use crate::policy::health::transitions::HealthEvent;
use crate::policy::telemetry::notify;

/// The sync state (a JSON text).
pub(super) const KEY_DNS: &str = "dns";
pub(super) const API_DEFAULT: &str = "https://api.cloudflare.com/client/v4";
/// Each API call has this long to answer.
const CALL_TIMEOUT_MS: u64 = 10_000;
/// One listing holds every record of a name (Cloudflare allows up to 5,000,000 a page).
const PER_PAGE: u32 = 5_000;

/// The Cloudflare v4 API as the object calls it: base URL and token from the environment.
struct Api {
    base: String,
    token: String,
}

impl Api {
    fn from_env(env: &Env) -> std::result::Result<Api, String> {
        let token = env_string(env, "CLOUDFLARE_API_TOKEN")
            .ok_or("CLOUDFLARE_API_TOKEN is not set: the dns records cannot be synced")?;
        let base = oauth::endpoint(
            "CLOUDFLARE_API_BASE",
            env_string(env, "CLOUDFLARE_API_BASE").as_deref(),
            API_DEFAULT,
        )?;
        Ok(Api {
            base: base.as_str().trim_end_matches('/').to_string(),
            token,
        })
    }

    /// One call: the envelope's result, or why not (never with the token in it).
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::result::Result<T, String> {
        let answer = self.exchange(method, path, body).await;
        answer.map_err(|e| dns::redact(&format!("{method} {path}: {e}"), &self.token))
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::result::Result<T, String> {
        let headers = web_sys::Headers::new().map_err(|e| js_message(&e))?;
        let auth = format!("Bearer {}", self.token);
        headers
            .set("authorization", &auth)
            .map_err(|_| "the token is not a valid header value".to_string())?;
        let body = body.map(|b| wasm_bindgen::JsValue::from_str(&b.to_string()));
        if body.is_some() {
            let _ = headers.set("content-type", "application/json");
        }
        let url = format!("{}{path}", self.base);
        let resp = fetch_url(
            &url,
            method,
            &headers,
            body,
            CALL_TIMEOUT_MS,
            Deadline::Whole,
        )
        .await
        .map_err(|e| e.to_string())?;
        let text = resp.text().map_err(|e| js_message(&e))?;
        let text = js_sys::futures::JsFuture::from(text)
            .await
            .map_err(|e| format!("the answer could not be read: {}", js_message(&e)))?;
        dns::read(resp.status(), &text.as_string().unwrap_or_default())
    }
}

/// Lists the records of the block's name, applies the plan, and answers the managed set after
/// it and whether it was held (nothing healthy).
async fn reconcile(
    env: &Env,
    block: &DnsRecords,
    marker: &str,
    wanted: &[Address],
) -> std::result::Result<(Vec<Address>, bool), String> {
    let api = Api::from_env(env)?;
    let path = format!("/zones/{}/dns_records", block.zone_id);
    let name = block.name.as_str();
    let query: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let existing: Vec<ZoneRecord> = api
        .call(
            "GET",
            &format!("{path}?name={query}&per_page={PER_PAGE}"),
            None,
        )
        .await?;
    let existing: Vec<ZoneRecord> = existing
        .into_iter()
        .filter(|r| r.name.eq_ignore_ascii_case(name))
        .collect();
    let plan = dns::plan(wanted, &existing, marker);
    // Creates before deletes: the name always answers something, even mid-sync.
    for a in &plan.create {
        let record = serde_json::json!({
            "type": a.kind, "name": name, "content": a.content, "ttl": block.ttl,
            "proxied": false, "comment": marker,
        });
        api.call::<ZoneRecord>("POST", &path, Some(record)).await?;
    }
    for id in &plan.delete {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "the API listed a record id {id:?} that is not alphanumeric"
            ));
        }
        api.call::<serde_json::Value>("DELETE", &format!("{path}/{id}"), None)
            .await?;
    }
    let records = if plan.held {
        let mut kept: Vec<Address> = existing
            .iter()
            .filter(|r| r.comment.as_deref() == Some(marker))
            .filter_map(|r| r.content.parse().ok().map(Address::of))
            .collect();
        kept.sort();
        kept.dedup();
        kept
    } else {
        wanted.to_vec()
    };
    Ok((records, plan.held))
}

fn block_key(b: &DnsRecords) -> String {
    format!("{}/{}/{}", b.zone_id, b.name, b.ttl)
}

impl Balancer {
    /// The service's `dns` block, its hostname and the addresses it wants now; None without one.
    fn dns_inputs(&self) -> Option<(DnsRecords, String, Vec<Address>)> {
        match &*self.service.borrow() {
            Some(Service::Ready(f)) => f
                .cfg()
                .dns
                .as_ref()
                .map(|d| (d.clone(), f.cfg().hostname.to_string(), f.dns_addresses())),
            _ => None,
        }
    }

    /// The service keeps a `dns` record set (so the alarm is kept for its resyncs).
    pub(super) fn keeps_dns(&self) -> bool {
        matches!(&*self.service.borrow(), Some(Service::Ready(f)) if f.cfg().dns.is_some())
    }

    /// When the next sync is due (None: the service keeps no records).
    pub(super) fn dns_due_at(&self) -> Option<u64> {
        let (block, _, wanted) = self.dns_inputs()?;
        Some(self.dns.borrow().due_at(&block_key(&block), &wanted))
    }

    /// After a health or config change: when it wants a sync now, the alarm wakes at once
    /// (a later sync is armed by `arm_next`, so an unknown alarm is never pushed back).
    pub(super) async fn dns_soon(&self) -> Result<()> {
        let now = Self::now();
        if self.dns_due_at().is_none_or(|due| due > now) {
            return Ok(());
        }
        let known = *self.alarm_at.borrow();
        match known {
            Some(at) if at <= now => Ok(()),
            _ => self.set_alarm_in(0).await,
        }
    }

    /// Syncs the records when due (from the alarm). A failure is counted, and the first of a row
    /// goes to the health history and the `dns.sync_failed` webhooks; a sync that works again
    /// after failures goes to the history too.
    pub(super) async fn sync_dns(&self) -> Result<()> {
        let Some((block, host, wanted)) = self.dns_inputs() else {
            return Ok(());
        };
        let key = block_key(&block);
        if self.dns.borrow().due_at(&key, &wanted) > Self::now() {
            return Ok(());
        }
        let marker = dns::marker(&host);
        let result = reconcile(&self.env, &block, &marker, &wanted).await;
        let now = Self::now();
        let name = block.name.to_string();
        let event = |from: &str, to: &str, reason: String| HealthEvent {
            hostname: host.clone(),
            backend: name.clone(),
            at_ms: now,
            kind: "dns".to_string(),
            from: from.to_string(),
            to: to.to_string(),
            reason,
            region: None,
        };
        let label = if result.is_ok() { "success" } else { "failure" };
        *self
            .metrics
            .borrow_mut()
            .dns_syncs
            .entry(label.to_string())
            .or_default() += 1;
        self.metrics_dirty.set(true);
        let mut history = Vec::new();
        match result {
            Ok((records, held)) => {
                let recovered = self.dns.borrow().failures > 0;
                self.dns
                    .borrow_mut()
                    .succeeded(now, &key, &wanted, records, held);
                if recovered {
                    history.push(event("failed", "synced", "dns".to_string()));
                }
            }
            Err(error) => {
                console_error!("{host}: dns records of {name} not synced: {error}");
                let first = self
                    .dns
                    .borrow_mut()
                    .failed(now, &key, &wanted, error.clone());
                if first {
                    history.push(event("synced", "failed", format!("dns: {error}")));
                    let attempt = self.dns.borrow().failures;
                    self.raise(
                        Some(EventKind::DnsSyncFailed),
                        serde_json::json!({"name": name, "zone_id": block.zone_id, "error": error, "attempt": attempt}),
                    );
                }
            }
        }
        self.observe(history, true).await;
        let text = serde_json::to_string(&*self.dns.borrow())?;
        self.state.storage().put(KEY_DNS, text).await?;
        self.send_soon().await
    }

    /// The record set for the status view: the addresses, the last sync, and whether the set is
    /// held because no backend is healthy (the last set stays). Null without `dns`.
    pub(super) fn dns_view(&self) -> serde_json::Value {
        let Some((block, _, wanted)) = self.dns_inputs() else {
            return serde_json::Value::Null;
        };
        let s = self.dns.borrow();
        let last_sync = s.last_ms.map(|at| {
            serde_json::json!({
                "at_ms": at,
                "timestamp": notify::rfc3339(at),
                "result": if s.error.is_some() { "failed" } else { "synced" },
                "error": s.error,
                "consecutive_failures": s.failures,
            })
        });
        serde_json::json!({
            "zone_id": block.zone_id,
            "name": block.name,
            "ttl": block.ttl,
            "records": s.records,
            "wanted": wanted,
            "held": wanted.is_empty(),
            "last_sync": last_sync,
            "next_sync_ms": s.due_at(&block_key(&block), &wanted),
        })
    }

    /// Reads the sync state back after a restart.
    pub(super) async fn load_dns(&self) -> Result<()> {
        let text: Option<String> = self.state.storage().get(KEY_DNS).await?;
        if let Some(s) = text.and_then(|t| serde_json::from_str::<SyncState>(&t).ok()) {
            *self.dns.borrow_mut() = s;
        }
        Ok(())
    }
}
