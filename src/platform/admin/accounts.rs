//! The deployment-wide `Accounts` Durable Object: the sign-out-everywhere epoch, the ids of sessions signed out before they expire, the named API keys (hashes only), one-time OAuth states and the deployment audit trail (key and session changes).
//!
//! A class of its own rather than more duties for `LoginThrottle`: the throttle is written on
//! every failed login from anywhere and may forget clients, while this object holds credentials
//! that must never be evicted; separate objects also keep a login storm from queueing key checks.

use std::cell::{Cell, RefCell};

use serde::{Deserialize, Serialize};
use worker::*;

use crate::policy::access::expiring::{ExpiringSet, Overflow};
use crate::policy::access::keys::{ApiKey, KeyRing};
use crate::policy::access::session::Standing;
use crate::policy::control::audit::{self, Actor, Entry};

/// The Durable Object namespace binding of the accounts object.
pub const ACCOUNTS_BINDING: &str = "ACCOUNTS";
/// One object for the whole deployment.
const ACCOUNTS_OBJECT: &str = "accounts";
const KEY_EPOCH: &str = "epoch";
const KEY_KEYS: &str = "keys";
const KEY_AUDIT: &str = "audit";
/// Prefix of one used OAuth state (value: its expiry in seconds).
const STATE_PREFIX: &str = "state:";
/// Deployment audit entries kept.
const AUDIT_LEN: usize = 200;
/// Used states remembered at most (each only until it expires anyway).
const STATES_MAX: usize = 10_000;
/// Prefix of one signed-out session id (value: the session's expiry in seconds).
const REVOKED_PREFIX: &str = "revoked:";
/// Signed-out sessions remembered at most (each only until it expires). Past the bound the
/// epoch moves instead: every earlier session is signed out, never one wrongly let back in.
const REVOKED_MAX: usize = 10_000;

/// A message from the Worker to the accounts object.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// Where a verified session stands: the epoch and whether its id was signed out.
    Standing {
        jti: String,
    },
    RevokeSession {
        jti: String,
        exp_s: u64,
    },
    VerifyKey {
        hash: String,
    },
    ListKeys,
    AddKey {
        key: ApiKey,
    },
    RevokeKey {
        id: String,
        actor: Actor,
    },
    SignOutEverywhere {
        actor: Actor,
    },
    Audit,
    ConsumeState {
        state: String,
        exp_s: u64,
    },
}

#[durable_object]
pub struct Accounts {
    state: State,
    loaded: Cell<bool>,
    epoch_ms: Cell<u64>,
    ring: RefCell<KeyRing>,
    audit: RefCell<Vec<Entry>>,
    used_states: RefCell<ExpiringSet>,
    revoked: RefCell<ExpiringSet>,
}

impl DurableObject for Accounts {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            loaded: Cell::new(false),
            epoch_ms: Cell::new(0),
            ring: RefCell::new(KeyRing::default()),
            audit: RefCell::new(Vec::new()),
            used_states: RefCell::new(ExpiringSet::new(STATES_MAX)),
            revoked: RefCell::new(ExpiringSet::new(REVOKED_MAX)),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: Call = match req.json().await {
            Ok(c) => c,
            Err(e) => return Response::error(format!("malformed accounts call: {e}"), 400),
        };
        self.load().await?;
        let now = Date::now().as_millis();
        match call {
            Call::Standing { jti } => {
                let revoked = self.revoked.borrow().contains(&jti, now / 1000);
                Response::from_json(
                    &serde_json::json!({ "epoch_ms": self.epoch_ms.get(), "revoked": revoked }),
                )
            }
            Call::RevokeSession { jti, exp_s } => {
                self.revoke_session(jti, exp_s, now).await?;
                Response::from_json(&serde_json::json!({ "revoked": true }))
            }
            Call::VerifyKey { hash } => {
                let found = self.ring.borrow().find(&hash).cloned();
                if let Some(k) = &found {
                    if self.ring.borrow_mut().touch(&k.id, now) {
                        self.save_keys().await?;
                    }
                }
                Response::from_json(&serde_json::json!({ "key": found }))
            }
            Call::ListKeys => {
                let keys: Vec<serde_json::Value> =
                    self.ring.borrow().keys.iter().map(ApiKey::view).collect();
                Response::from_json(&serde_json::json!({ "keys": keys }))
            }
            Call::AddKey { key } => {
                let view = key.view();
                let entry = Entry {
                    at: now,
                    actor: key.created_by.clone(),
                    action: "key.created".into(),
                    summary: describe(&key),
                    version: None,
                };
                if let Err(e) = self.ring.borrow_mut().add(key) {
                    return crate::platform::error_response(409, &e, None);
                }
                self.save_keys_and_audit(entry).await?;
                Ok(Response::from_json(&view)?.with_status(201))
            }
            Call::RevokeKey { id, actor } => {
                let revoked = self.ring.borrow_mut().revoke(&id, now).cloned();
                let Some(key) = revoked else {
                    return crate::platform::error_response(404, &format!("no API key {id}"), None);
                };
                let entry = Entry {
                    at: now,
                    actor,
                    action: "key.revoked".into(),
                    summary: describe(&key),
                    version: None,
                };
                self.save_keys_and_audit(entry).await?;
                Response::from_json(&key.view())
            }
            Call::SignOutEverywhere { actor } => {
                self.epoch_ms.set(now);
                let storage = self.state.storage();
                storage.put(KEY_EPOCH, now as f64).await?;
                self.append_audit(Entry {
                    at: now,
                    actor,
                    action: "sessions.revoked".into(),
                    summary: "signed out every console session issued before now".into(),
                    version: None,
                })
                .await?;
                Response::from_json(&serde_json::json!({ "epoch_ms": now }))
            }
            Call::Audit => {
                let entries: Vec<Entry> = self.audit.borrow().iter().rev().cloned().collect();
                Response::from_json(&serde_json::json!({ "entries": entries }))
            }
            Call::ConsumeState { state, exp_s } => {
                let fresh = self.consume_state(state, exp_s, now / 1000).await?;
                Response::from_json(&serde_json::json!({ "fresh": fresh }))
            }
        }
    }
}

/// A key in an audit line: its name, id, scope and hostnames.
fn describe(k: &ApiKey) -> String {
    let hosts = match &k.grant.hostnames {
        Some(h) => h.join(", "),
        None => "all hostnames".into(),
    };
    let scope = serde_json::to_value(k.grant.scope)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{} ({}), scope {scope}, {hosts}", k.name, k.id)
}

impl Accounts {
    /// Reads everything once per object lifetime (a few KiB), dropping expired states.
    async fn load(&self) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        let storage = self.state.storage();
        let epoch: Option<f64> = storage.get(KEY_EPOCH).await?;
        let keys: Option<String> = storage.get(KEY_KEYS).await?;
        let audit: Option<String> = storage.get(KEY_AUDIT).await?;
        let now_s = Date::now().as_millis() / 1000;
        let states = self.load_expiring(STATE_PREFIX).await?;
        let revoked = self.load_expiring(REVOKED_PREFIX).await?;
        if self.loaded.replace(true) {
            return Ok(());
        }
        self.epoch_ms.set(epoch.unwrap_or(0.0) as u64);
        // Unreadable keys fail the request rather than start an empty ring that the next write
        // would store over them.
        *self.ring.borrow_mut() = match keys {
            Some(k) => serde_json::from_str(&k)
                .map_err(|e| Error::RustError(format!("stored API keys are unreadable: {e}")))?,
            None => KeyRing::default(),
        };
        *self.audit.borrow_mut() = match audit.map(|a| serde_json::from_str(&a)) {
            Some(Ok(trail)) => trail,
            Some(Err(e)) => {
                console_error!("deployment audit trail unreadable, starting a new one: {e}");
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut expired = keys_of(
            STATE_PREFIX,
            self.used_states.borrow_mut().restore(states, now_s),
        );
        expired.extend(keys_of(
            REVOKED_PREFIX,
            self.revoked.borrow_mut().restore(revoked, now_s),
        ));
        delete_keys(&storage, expired).await
    }

    /// The entries stored under `prefix`: name (without the prefix) and expiry in seconds.
    async fn load_expiring(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let stored = self
            .state
            .storage()
            .list_with_options(ListOptions::new().prefix(prefix))
            .await?;
        let mut out = Vec::new();
        for entry in stored.entries() {
            let pair = js_sys::Array::from(&entry?);
            let (Some(key), Some(exp)) = (pair.get(0).as_string(), pair.get(1).as_f64()) else {
                continue;
            };
            if let Some(name) = key.strip_prefix(prefix) {
                out.push((name.to_string(), exp as u64));
            }
        }
        Ok(out)
    }

    /// Remembers a signed-out session id until the session would have expired. Past
    /// `REVOKED_MAX` the epoch moves instead and the list is forgotten: every earlier session is
    /// signed out, never one wrongly let back in (fail closed).
    async fn revoke_session(&self, jti: String, exp_s: u64, now_ms: u64) -> Result<()> {
        let storage = self.state.storage();
        let now_s = now_ms / 1000;
        let r = self
            .revoked
            .borrow_mut()
            .insert(&jti, exp_s, now_s, Overflow::Refuse);
        let mut gone = keys_of(REVOKED_PREFIX, r.dropped);
        if r.full {
            gone.extend(keys_of(REVOKED_PREFIX, self.revoked.borrow_mut().clear()));
            self.epoch_ms.set(now_ms);
            storage.put(KEY_EPOCH, now_ms as f64).await?;
            console_log!("{REVOKED_MAX} signed-out sessions remembered: moved the epoch instead");
        }
        delete_keys(&storage, gone).await?;
        if r.added {
            storage
                .put(&format!("{REVOKED_PREFIX}{jti}"), exp_s as f64)
                .await?;
        }
        Ok(())
    }

    async fn save_keys(&self) -> Result<()> {
        let text = serde_json::to_string(&*self.ring.borrow())?;
        self.state.storage().put(KEY_KEYS, text).await
    }

    async fn append_audit(&self, entry: Entry) -> Result<()> {
        audit::record(&mut self.audit.borrow_mut(), entry, AUDIT_LEN);
        let text = serde_json::to_string(&*self.audit.borrow())?;
        self.state.storage().put(KEY_AUDIT, text).await
    }

    async fn save_keys_and_audit(&self, entry: Entry) -> Result<()> {
        self.save_keys().await?;
        self.append_audit(entry).await
    }

    /// True the first time `state` is presented; a replay (even with a valid cookie) is false.
    /// Past `STATES_MAX` the soonest-expiring are forgotten (their codes are one-time anyway).
    async fn consume_state(&self, state: String, exp_s: u64, now_s: u64) -> Result<bool> {
        let storage = self.state.storage();
        if self.used_states.borrow().contains(&state, now_s) {
            return Ok(false);
        }
        let r = self
            .used_states
            .borrow_mut()
            .insert(&state, exp_s, now_s, Overflow::EvictSoonest);
        delete_keys(&storage, keys_of(STATE_PREFIX, r.dropped)).await?;
        if r.added {
            storage
                .put(&format!("{STATE_PREFIX}{state}"), exp_s as f64)
                .await?;
        }
        Ok(r.added)
    }
}

/// Storage keys of `names` under `prefix`.
fn keys_of(prefix: &str, names: Vec<String>) -> Vec<String> {
    names.into_iter().map(|n| format!("{prefix}{n}")).collect()
}

/// Deletes `keys`, at most 128 per call (the storage API's limit for one delete).
async fn delete_keys(storage: &Storage, keys: Vec<String>) -> Result<()> {
    for chunk in keys.chunks(128) {
        storage.delete_multiple(chunk.to_vec()).await?;
    }
    Ok(())
}

/// Sends one call to the accounts object; answers its status and JSON body.
pub async fn call(env: &Env, msg: &Call) -> Result<(u16, serde_json::Value)> {
    let stub = env
        .durable_object(ACCOUNTS_BINDING)?
        .get_by_name(ACCOUNTS_OBJECT)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(msg)?.into()));
    let mut resp = stub
        .fetch_with_request(Request::new_with_init("https://accounts/call", &init)?)
        .await?;
    let status = resp.status_code();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

/// Where a verified session stands (the sign-out-everywhere epoch and whether its id was signed
/// out), in one call to the object.
pub async fn standing(env: &Env, jti: &str) -> Result<Standing> {
    let (_, body) = call(env, &Call::Standing { jti: jti.into() }).await?;
    Ok(Standing {
        epoch_ms: body["epoch_ms"].as_u64().unwrap_or(0),
        // Fail closed: an answer without the flag counts as signed out.
        revoked: body["revoked"].as_bool().unwrap_or(true),
    })
}

/// The live key with this hash (and its use noted), if any.
pub async fn verify_key(env: &Env, hash: String) -> Result<Option<ApiKey>> {
    let (_, body) = call(env, &Call::VerifyKey { hash }).await?;
    Ok(serde_json::from_value(body["key"].clone()).ok())
}
