//! The login throttle's Durable Object: one object counts failed admin logins per client address for every Worker instance, and keeps lockouts in storage.

use std::cell::{Cell, RefCell};

use serde::{Deserialize, Serialize};
use worker::*;

use crate::policy::access::auth::{Attempt, Changes, Strikes, Throttle};

/// The Durable Object namespace binding of the login throttle.
pub const THROTTLE_BINDING: &str = "THROTTLE";
/// One object for the whole deployment, so guessing is slowed globally, not per isolate.
const THROTTLE_OBJECT: &str = "login";
/// Storage key prefix of one client's strikes (the suffix is its canonical address).
const CLIENT_PREFIX: &str = "client:";

/// The Worker's message: one login attempt, whether its credentials were right (None: only ask
/// whether the client is locked out), and the credential identity it claimed, if any.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginAttempt {
    pub client: String,
    pub ok: Option<bool>,
    #[serde(default)]
    pub identity: Option<String>,
}

/// The throttle's answer: a wait while the client is locked out (the attempt was refused).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LoginVerdict {
    pub retry_after_ms: Option<u64>,
}

#[durable_object]
pub struct LoginThrottle {
    state: State,
    throttle: RefCell<Throttle>,
    /// Whether the stored strikes are in memory (read once per object lifetime).
    loaded: Cell<bool>,
}

impl DurableObject for LoginThrottle {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            throttle: RefCell::new(Throttle::default()),
            loaded: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Ok(attempt) = req.json::<LoginAttempt>().await else {
            return Response::error("expected a LoginAttempt", 400);
        };
        let now = Date::now().as_millis();
        self.load(now).await?;
        let result = match attempt.ok {
            None => self
                .throttle
                .borrow()
                .check(&attempt.client, now)
                .map(|()| Changes::default()),
            Some(ok) => self.throttle.borrow_mut().attempt(
                &attempt.client,
                Attempt {
                    ok,
                    identity: attempt.identity.as_deref(),
                },
                now,
            ),
        };
        let verdict = match result {
            Ok(changes) => {
                self.store(changes).await?;
                LoginVerdict::default()
            }
            Err(wait_ms) => LoginVerdict {
                retry_after_ms: Some(wait_ms),
            },
        };
        Response::from_json(&verdict)
    }
}

impl LoginThrottle {
    /// Reads every stored client once, and deletes the ones forgiven while the object slept.
    async fn load(&self, now: u64) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        let storage = self.state.storage();
        let stored = storage
            .list_with_options(ListOptions::new().prefix(CLIENT_PREFIX))
            .await?;
        let mut entries = Vec::new();
        for entry in stored.entries() {
            let pair = js_sys::Array::from(&entry?);
            let (Some(key), Ok(strikes)) = (
                pair.get(0).as_string(),
                serde_wasm_bindgen::from_value::<Strikes>(pair.get(1)),
            ) else {
                continue;
            };
            if let Some(client) = key.strip_prefix(CLIENT_PREFIX) {
                entries.push((client.to_string(), strikes));
            }
        }
        // Another request may have loaded while this one awaited storage.
        if self.loaded.replace(true) {
            return Ok(());
        }
        let dropped = self.throttle.borrow_mut().restore(entries, now);
        self.store(Changes {
            put: None,
            delete: dropped,
        })
        .await
    }

    /// Mirrors one attempt's changes: a write only when a failure was counted, a delete when a
    /// client was cleared or evicted, nothing for a routine successful login.
    async fn store(&self, changes: Changes) -> Result<()> {
        let storage = self.state.storage();
        if !changes.delete.is_empty() {
            let keys: Vec<String> = changes
                .delete
                .iter()
                .map(|c| format!("{CLIENT_PREFIX}{c}"))
                .collect();
            storage.delete_multiple(keys).await?;
        }
        if let Some((client, strikes)) = changes.put {
            storage
                .put(&format!("{CLIENT_PREFIX}{client}"), strikes)
                .await?;
        }
        Ok(())
    }
}

/// Reports one login attempt to the throttle; Some(seconds to wait) while the client is locked
/// out (then the attempt is refused whatever its credentials). `identity` is the credential
/// identity the attempt claimed (a user name): a success clears only that identity's failures.
pub async fn login_attempt(
    env: &Env,
    client: &str,
    ok: bool,
    identity: Option<&str>,
) -> Result<Option<u64>> {
    send(env, client, Some(ok), identity).await
}

/// Some(seconds to wait) while the client is locked out; records nothing.
pub async fn locked_out(env: &Env, client: &str) -> Result<Option<u64>> {
    send(env, client, None, None).await
}

async fn send(
    env: &Env,
    client: &str,
    ok: Option<bool>,
    identity: Option<&str>,
) -> Result<Option<u64>> {
    let stub = env
        .durable_object(THROTTLE_BINDING)?
        .get_by_name(THROTTLE_OBJECT)?;
    let body = serde_json::to_string(&LoginAttempt {
        client: client.to_string(),
        ok,
        identity: identity.map(str::to_string),
    })?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let mut resp = stub
        .fetch_with_request(Request::new_with_init("https://throttle/attempt", &init)?)
        .await?;
    let verdict: LoginVerdict = resp.json().await?;
    Ok(verdict.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1)))
}
