//! Service configuration: one typed model (serde derive, newtypes that check themselves, one `validate()` pass) for DEFAULT_BACKENDS and the REST API.
//!
//! Its parts: `model` (the types and what callers read from them), `mode` (the decision mode in
//! effect, `auto` resolved), `values` (field types that check themselves), `validate`
//! (cross-field rules), `forms` (a service, DEFAULT_BACKENDS and the REST API body), `typed`
//! (serde errors at their paths), `rules` (traffic rules and their checks), `names`, `secrets`
//! and `schema`.

use serde::{Deserialize, Serialize};
use std::fmt;

// ---- Defaults: the single source of truth for every implicit value. ----

pub const DEFAULT_WEIGHT: u32 = 1;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_CONSECUTIVE_UP: u32 = 3;
pub const DEFAULT_CONSECUTIVE_DOWN: u32 = 2;
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_RECOVERY_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_ERROR_RATE_THRESHOLD: f64 = 50.0;
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
pub const DEFAULT_MAX_CONNECTION_RETRIES: u32 = 2;
pub const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_RETRIES: u32 = 1;
pub const DEFAULT_COOKIE_NAME: &str = "lb_session";
pub const DEFAULT_AFFINITY_TTL_S: u64 = 3600;
pub const DEFAULT_MINIMUM_HEALTHY: u32 = 1;
/// `change_safety`: watch a change this long, roll it back past this rise over this many requests.
pub const DEFAULT_WATCH_S: u64 = 60;
pub const DEFAULT_MAX_ERROR_RATE_INCREASE: f64 = 20.0;
pub const DEFAULT_WATCH_MIN_REQUESTS: u64 = 30;
/// Backends per service (top level and pools together): keeps decisions and status bounded.
pub const MAX_BACKENDS: usize = 1000;
/// The largest config stored, in bytes of canonical JSON (`ServiceConfig::to_value`). A SQLite-backed
/// Durable Object stores at most 2 MB per key and value; the config and each of its history
/// entries are separate values, so 256 KiB leaves room for the storage encoding (up to two bytes
/// a character) while fitting MAX_BACKENDS backends with long URLs, pools and webhooks.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;
/// Errors reported for one input before giving up (a huge broken body must not loop long).
pub(crate) const MAX_ERRORS: usize = 100;

// ---- Errors ----

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

mod forms;
mod mode;
mod model;
mod names;
mod rules;
#[cfg(not(target_arch = "wasm32"))]
mod schema;
mod secrets;
mod typed;
mod validate;
mod values;

pub use forms::{
    default_hostnames, parse_default_backends, parse_default_backends_partial, parse_service,
    parse_service_for_host,
};
pub use mode::{EffectiveMode, ObjectNeed};
pub use model::*;
pub use names::{validate_backend_url, validate_hostname};
pub use rules::{
    ContentType, HeaderActions, Method, PathRegex, Redirect, RedirectLocation, Respond,
    ResponseBody, Rewrite, Rule, RuleName, RulePath, SplitTo, Then, When, DEFAULT_REDIRECT_STATUS,
    DEFAULT_RESPOND_CONTENT_TYPE, MAX_REGEX_LEN, MAX_RESPOND_BODY, MAX_RULES, REGEX_SIZE_LIMIT,
};
#[cfg(not(target_arch = "wasm32"))]
pub use schema::schemas;
pub use secrets::{redact, redacted, restore_secrets, REDACTED_PREFIX};
use typed::{extend, join, key, typed, Issue, Seg, SAME};
pub use typed::{from_value, parse_json};
pub use validate::Deployment;
pub use values::{
    BackendUrl, ExpectedBody, HeaderValue, HealthPath, Hostname, PoolName, RegionCode, Token,
    ZoneId,
};

/// The rules example of the issue and the docs, for tests elsewhere.
#[cfg(test)]
pub(crate) use rules::tests::example as rules_example;

#[cfg(test)]
mod tests;
