//! Service configuration: one typed model (serde derive, newtypes that check themselves, one `validate()` pass) for DEFAULT_BACKENDS and the REST API.

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::policy::access::lists::Cidr;
use crate::policy::health::monitor::{Expect, ExpectedCodes, MonitorType, ProbeMethod};
use crate::policy::traffic::forwarding::{UrlParts, HOP_BY_HOP};

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

// ---- The model ----

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    #[default]
    Enabled,
    Disabled,
    Draining,
}

/// A backend: a URL string, or an object with weight and state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backend {
    pub url: BackendUrl,
    pub weight: u32,
    pub state: BackendState,
}

/// The object form of a backend; the string form is a bare URL.
#[derive(Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct BackendObject {
    url: BackendUrl,
    #[serde(default = "default_weight", deserialize_with = "weight")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 1000)))]
    weight: u32,
    #[serde(default)]
    state: BackendState,
}

/// A backend weight: 1..=1000.
pub(crate) fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int::<1, 1000, u32, D>(d)
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Backend;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a URL string or a backend object {url, weight, state}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Backend, E> {
                Ok(Backend {
                    url: BackendUrl::parse(s).map_err(E::custom)?,
                    weight: DEFAULT_WEIGHT,
                    state: BackendState::Enabled,
                })
            }
            // Keys are read through the caller's map, so errors keep their field path.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Backend, A::Error> {
                let o = BackendObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Backend {
                    url: o.url,
                    weight: o.weight,
                    state: o.state,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl schemars::JsonSchema for Backend {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Backend".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [g.subschema_for::<BackendUrl>(), g.subschema_for::<BackendObject>()]
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct ActiveHealth {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<HealthPath>,
    /// Seconds between probe rounds (0.1..=86400).
    #[serde(rename = "interval", with = "secs_100ms_1d")]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(with = "f64", range(min = 0.1, max = 86400))
    )]
    pub interval_ms: u64,
    /// Seconds a probe may take (0.001..=60).
    #[serde(rename = "timeout", with = "secs_1ms_60s")]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(with = "f64", range(min = 0.001, max = 60))
    )]
    pub timeout_ms: u64,
    #[serde(deserialize_with = "int::<1, 100, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 100)))]
    pub consecutive_up: u32,
    #[serde(deserialize_with = "int::<1, 100, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 100)))]
    pub consecutive_down: u32,
    /// `http`: HTTP over the backend URL's scheme; `https`: over TLS; `tcp`: up when a TCP connection opens.
    #[serde(rename = "type")]
    pub kind: MonitorType,
    pub method: ProbeMethod,
    /// Accepted statuses (default: 2xx and 3xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_codes: Option<ExpectedCodes>,
    /// A case-insensitive substring the first 64 KiB of the body must contain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_body: Option<ExpectedBody>,
    /// Request headers the probe sends (`Host` included).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<Token, HeaderValue>,
    /// Follows redirects, never off the backend's origin (scheme, host, port).
    pub follow_redirects: bool,
    /// The port probed instead of the backend URL's.
    #[serde(
        deserialize_with = "optional_port",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 65535)))]
    pub port: Option<u16>,
}

fn optional_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    int::<1, 65535, u16, D>(d).map(Some)
}

impl ActiveHealth {
    /// Monitor rules across fields: HTTP options on a tcp monitor, doubled or hop-by-hop headers.
    fn validate(&self) -> Vec<Issue> {
        let mut errs = Vec::new();
        let at = |k: &str| vec![key("activeHealthChecks"), key(k)];
        if self.kind == MonitorType::Tcp {
            let http_only = [
                ("path", self.path.is_some()),
                ("method", self.method != ProbeMethod::Get),
                ("expected_codes", self.expected_codes.is_some()),
                ("expected_body", self.expected_body.is_some()),
                ("headers", !self.headers.is_empty()),
                ("follow_redirects", self.follow_redirects),
            ];
            for (k, set) in http_only {
                if set {
                    errs.push((
                        at(k),
                        "only for http and https monitors (type is \"tcp\")".into(),
                        None,
                    ));
                }
            }
        }
        if self.method == ProbeMethod::Head && self.expected_body.is_some() {
            errs.push((
                at("expected_body"),
                "a HEAD answer has no body to check; use method \"GET\"".into(),
                None,
            ));
        }
        let mut seen: HashMap<String, &str> = HashMap::new();
        for name in self.headers.keys() {
            let lower = name.to_ascii_lowercase();
            let hp = extend(&at("headers"), key(name));
            if HOP_BY_HOP.contains(&lower.as_str()) || lower == "content-length" {
                errs.push((
                    hp.clone(),
                    format!(
                        "{name:?} is a connection header the runtime sets itself; not allowed here"
                    ),
                    None,
                ));
            }
            if let Some(first) = seen.insert(lower, name) {
                errs.push((
                    hp,
                    format!("{name:?} repeats {first:?} (header names are case-insensitive)"),
                    None,
                ));
            }
        }
        errs
    }

    /// What an HTTP probe answer must show.
    pub fn expectation(&self) -> Expect {
        Expect {
            codes: self.expected_codes.clone(),
            body: self.expected_body.as_ref().map(|b| b.as_str().to_string()),
        }
    }
}

impl Default for ActiveHealth {
    fn default() -> Self {
        ActiveHealth {
            enabled: true,
            path: None,
            interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
            timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
            consecutive_up: DEFAULT_CONSECUTIVE_UP,
            consecutive_down: DEFAULT_CONSECUTIVE_DOWN,
            kind: MonitorType::Http,
            method: ProbeMethod::Get,
            expected_codes: None,
            expected_body: None,
            headers: BTreeMap::new(),
            follow_redirects: false,
            port: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealth {
    pub circuit_breaker: BreakerConfig,
}

/// Circuit breaker settings: the only breaker parameters there are (breaker.rs reads these).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    #[serde(deserialize_with = "int::<1, 1000, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 1000)))]
    pub failure_threshold: u32,
    #[serde(deserialize_with = "int::<100, 86_400_000, _, _>")]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(range(min = 100, max = 86_400_000))
    )]
    pub recovery_timeout_ms: u64,
    /// Percent, > 0 and <= 100.
    #[serde(deserialize_with = "percent")]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(range(min = 0, max = 100), extend("exclusiveMinimum" = 0))
    )]
    pub error_rate_threshold: f64,
    #[serde(deserialize_with = "int::<1, 4_294_967_295, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1)))]
    pub min_requests: u32,
    #[serde(deserialize_with = "int::<1000, 3_600_000, _, _>")]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(range(min = 1000, max = 3_600_000))
    )]
    pub window_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            recovery_timeout_ms: DEFAULT_RECOVERY_TIMEOUT_MS,
            error_rate_threshold: DEFAULT_ERROR_RATE_THRESHOLD,
            min_requests: DEFAULT_MIN_REQUESTS,
            window_ms: DEFAULT_WINDOW_MS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionHandling {
    pub immediate_failover: bool,
    #[serde(deserialize_with = "int::<0, 10, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 0, max = 10)))]
    pub max_connection_retries: u32,
    /// Time to response headers.
    #[serde(deserialize_with = "int::<100, 300_000, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 100, max = 300_000)))]
    pub connection_timeout_ms: u64,
}

impl Default for ConnectionHandling {
    fn default() -> Self {
        ConnectionHandling {
            immediate_failover: true,
            max_connection_retries: DEFAULT_MAX_CONNECTION_RETRIES,
            connection_timeout_ms: DEFAULT_CONNECTION_TIMEOUT_MS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AffinityKind {
    Cookie,
    Header,
    IpCookie,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<Affinity>,
    /// Seconds over which a recovered or new backend ramps up to its full share (0: off).
    #[serde(rename = "slow_start", with = "secs_0_1h")]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(with = "f64", range(min = 0, max = 3600))
    )]
    pub slow_start_ms: u64,
    /// How a backend is picked within the chosen pool.
    pub endpoint_steering: EndpointSteering,
    /// How the pool is chosen.
    pub steering: PoolSteering,
    /// With `steering: failover`: the pool that takes traffic when no pool is healthy (default: the last pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_pool: Option<PoolName>,
}

/// How a backend is picked within a pool (`load_balancer.endpoint_steering`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndpointSteering {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight (counted by the Durable Object across all Worker instances) per weight.
    LeastOutstandingRequests,
    /// Power of two random choices over a decaying average of response time times requests in flight, per weight.
    Latency,
    /// Weighted rendezvous hashing of the client IP.
    Hash,
}

impl EndpointSteering {
    /// Modes that need every request's completion reported to the object (its in-flight count).
    pub fn counts_outstanding(self) -> bool {
        matches!(self, Self::LeastOutstandingRequests | Self::Latency)
    }
}

/// Where routing decisions are made (`decisions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Decisions {
    pub mode: DecisionMode,
    /// How long a lease lets a Worker decide on its own (lease mode), in milliseconds.
    #[serde(deserialize_with = "int::<100, 10_000, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 100, max = 10_000)))]
    pub lease_ms: u64,
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            mode: DecisionMode::PerRequest,
            lease_ms: DEFAULT_LEASE_MS,
        }
    }
}

/// Default `decisions.lease_ms`.
pub const DEFAULT_LEASE_MS: u64 = 1000;

/// `decisions.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DecisionMode {
    /// Every request asks the hostname's Durable Object.
    #[default]
    PerRequest,
    /// The Worker decides locally from a lease the object grants for `lease_ms`.
    Lease,
}

/// How the pool is chosen (`load_balancer.steering`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PoolSteering {
    /// `geo_steering` maps the client's region to a pool; without it, one pool of the top-level backends.
    #[default]
    Geo,
    /// Pools in listed order: the first healthy pool takes all traffic, then `fallback_pool`.
    Failover,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    #[serde(rename = "type")]
    pub kind: AffinityKind,
    #[serde(default = "default_cookie_name")]
    pub cookie_name: Token,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<Token>,
    #[serde(
        rename = "ttl",
        default = "default_ttl",
        deserialize_with = "int::<1, 31_536_000, _, _>"
    )]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(range(min = 1, max = 31_536_000))
    )]
    pub ttl_s: u64,
}

fn default_cookie_name() -> Token {
    Token(DEFAULT_COOKIE_NAME.to_string())
}

fn default_ttl() -> u64 {
    DEFAULT_AFFINITY_TTL_S
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: PoolName,
    pub backends: Vec<Backend>,
    /// Fewer healthy backends than this and the pool counts as unhealthy (Cloudflare's health threshold).
    #[serde(
        default = "default_minimum_healthy",
        deserialize_with = "int::<1, 1000, _, _>"
    )]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 1000)))]
    pub minimum_healthy: u32,
}

fn default_minimum_healthy() -> u32 {
    DEFAULT_MINIMUM_HEALTHY
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GeoSteering {
    /// Region code (ISO country or continent, uppercase) -> pool name.
    #[serde(default)]
    pub regions: BTreeMap<RegionCode, PoolName>,
    pub fallback_pool: PoolName,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(deserialize_with = "int::<1, 4_294_967_295, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1)))]
    pub requests: u32,
    #[serde(rename = "window", deserialize_with = "int::<1, 86_400, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 86_400)))]
    pub window_s: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct AccessLists {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

/// Where a service's events are sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Notifications {
    pub webhooks: Vec<Webhook>,
}

/// One webhook receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// http(s) URL the events are POSTed to.
    pub url: BackendUrl,
    /// Signs each JSON delivery (X-FlowBalance-Signature); required for `format: "json"`,
    /// at least 16 characters. Admin-only like the rest of the config; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Events sent to this receiver (default: all).
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
    #[serde(default)]
    pub format: WebhookFormat,
}

/// The events a webhook may subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
pub enum EventKind {
    #[serde(rename = "backend.down")]
    BackendDown,
    #[serde(rename = "backend.up")]
    BackendUp,
    #[serde(rename = "breaker.open")]
    BreakerOpen,
    #[serde(rename = "breaker.closed")]
    BreakerClosed,
    #[serde(rename = "service.unhealthy")]
    ServiceUnhealthy,
    #[serde(rename = "service.recovered")]
    ServiceRecovered,
    #[serde(rename = "config.changed")]
    ConfigChanged,
    #[serde(rename = "config.rolled_back")]
    ConfigRolledBack,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::BackendDown,
        EventKind::BackendUp,
        EventKind::BreakerOpen,
        EventKind::BreakerClosed,
        EventKind::ServiceUnhealthy,
        EventKind::ServiceRecovered,
        EventKind::ConfigChanged,
        EventKind::ConfigRolledBack,
    ];
}

fn all_events() -> Vec<EventKind> {
    EventKind::ALL.to_vec()
}

/// `json`: the signed event object; `slack`: `{"text": ...}` for Slack or Discord (Slack-compatible) hooks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// Webhooks per service.
pub const MAX_WEBHOOKS: usize = 5;
/// The shortest webhook secret accepted.
pub const MIN_WEBHOOK_SECRET: usize = 16;

/// One balanced hostname's service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub hostname: Hostname,
    #[serde(default)]
    pub backends: Vec<Backend>,
    #[serde(rename = "activeHealthChecks", default)]
    pub health: ActiveHealth,
    #[serde(rename = "passiveHealthChecks", default)]
    pub passive: PassiveHealth,
    #[serde(rename = "connection_error_handling", default)]
    pub connection: ConnectionHandling,
    #[serde(default = "default_retries", deserialize_with = "int::<0, 10, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 0, max = 10)))]
    pub retries: u32,
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<Pool>,
    #[serde(
        rename = "geo_steering",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub geo: Option<GeoSteering>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(
        rename = "access_control",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub access: Option<AccessLists>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
    /// Where routing decisions are made: at the object per request, or in the Worker under a lease.
    #[serde(default)]
    pub decisions: Decisions,
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

/// Blocks that may appear at the top level of the `{"services": [...]}` form as defaults.
const DEFAULT_BLOCKS: &[&str] = &[
    "activeHealthChecks",
    "passiveHealthChecks",
    "connection_error_handling",
    "retries",
    "load_balancer",
    "rate_limit",
    "access_control",
    "notifications",
    "decisions",
];

impl ServiceConfig {
    /// Canonical JSON in the input format, every default explicit, so that
    /// `parse_service(&cfg.to_value(), "")` gives `cfg` back.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The size of the canonical JSON, checked against MAX_CONFIG_BYTES: Err names both.
    pub fn check_size(&self) -> Result<usize, String> {
        let size = serde_json::to_string(self).map_or(0, |s| s.len());
        if size > MAX_CONFIG_BYTES {
            Err(format!(
                "config too large: {size} bytes of canonical JSON; the limit is {MAX_CONFIG_BYTES} bytes ({} KiB)",
                MAX_CONFIG_BYTES / 1024
            ))
        } else {
            Ok(size)
        }
    }

    pub fn breaker(&self) -> &BreakerConfig {
        &self.passive.circuit_breaker
    }

    pub fn affinity(&self) -> Option<&Affinity> {
        self.load_balancer.session_affinity.as_ref()
    }

    /// The configured webhooks (none without a `notifications` block).
    pub fn webhooks(&self) -> &[Webhook] {
        self.notifications
            .as_ref()
            .map(|n| n.webhooks.as_slice())
            .unwrap_or_default()
    }

    /// Top-level backends then pool backends, first occurrence of each URL wins.
    pub fn all_backends(&self) -> Vec<&Backend> {
        let mut seen = HashSet::new();
        self.backends
            .iter()
            .chain(self.pools.iter().flat_map(|p| p.backends.iter()))
            .filter(|b| seen.insert(b.url.as_str()))
            .collect()
    }

    /// Every occurrence of the backend `url` (top-level list and pools).
    pub fn backends_mut<'a>(
        &'a mut self,
        url: &'a BackendUrl,
    ) -> impl Iterator<Item = &'a mut Backend> {
        self.backends
            .iter_mut()
            .chain(self.pools.iter_mut().flat_map(|p| p.backends.iter_mut()))
            .filter(move |b| &b.url == url)
    }

    /// Cross-field rules the types cannot express, each error at its path.
    fn validate(&self, ctx: &Deployment) -> Vec<Issue> {
        let mut errs = Vec::new();
        let at = |segs: &[Seg]| segs.to_vec();
        if ctx.is_admin_host(self.hostname.as_str()) {
            errs.push((
                at(&[key("hostname")]),
                format!(
                    "{:?} is one of the Worker's own hostnames (localhost, loopback, *.workers.dev, ADMIN_HOSTNAME), which serve the admin API and are never balanced",
                    self.hostname.as_str()
                ), None));
        }
        if self.backends.is_empty() && self.pools.is_empty() {
            errs.push((
                at(&[key("backends")]),
                "at least one backend is required (in backends or pools)".to_string(),
                None,
            ));
        }
        let total =
            self.backends.len() + self.pools.iter().map(|p| p.backends.len()).sum::<usize>();
        if total > MAX_BACKENDS {
            errs.push((
                at(&[key("backends")]),
                format!("{total} backends; at most {MAX_BACKENDS} are allowed per service"),
                None,
            ));
        }
        let mut lists: Vec<(Vec<Seg>, &[Backend])> = vec![(vec![key("backends")], &self.backends)];
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, p) in self.pools.iter().enumerate() {
            let pp = vec![key("pools"), Seg::Index(i)];
            if p.backends.is_empty() {
                errs.push((
                    extend(&pp, key("backends")),
                    "a pool needs at least one backend".into(),
                    None,
                ));
            }
            lists.push((extend(&pp, key("backends")), &p.backends));
            if p.minimum_healthy as usize > p.backends.len().max(1) {
                errs.push((
                    extend(&pp, key("minimum_healthy")),
                    format!(
                        "{} is more than the pool's {} backends: the pool could never be healthy",
                        p.minimum_healthy,
                        p.backends.len()
                    ),
                    None,
                ));
            }
            if let Some(first) = names.insert(p.name.as_str(), i) {
                errs.push((
                    extend(&pp, key("name")),
                    format!("duplicate pool name {:?} (same as {SAME})", p.name.as_str()),
                    Some(vec![key("pools"), Seg::Index(first), key("name")]),
                ));
                names.insert(p.name.as_str(), first);
            }
        }
        for (lp, list) in lists {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, b) in list.iter().enumerate() {
                let bp = extend(&lp, Seg::Index(i));
                if let Some(first) = seen.get(b.url.as_str()) {
                    errs.push((
                        bp.clone(),
                        format!("duplicate backend {:?} (same as {SAME})", b.url.as_str()),
                        Some(extend(&lp, Seg::Index(*first))),
                    ));
                } else {
                    seen.insert(b.url.as_str(), i);
                }
                if let Some(why) = ctx.loops_back(b.url.host()) {
                    errs.push((
                        bp,
                        format!(
                            "{:?} points back at this deployment ({why}): requests would loop",
                            b.url.as_str()
                        ),
                        None,
                    ));
                }
            }
        }
        if let Some(g) = &self.geo {
            let gp = vec![key("geo_steering")];
            let known: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
            if self.pools.is_empty() {
                errs.push((gp.clone(), "requires pools".into(), None));
            } else {
                let mut check = |name: &PoolName, path: Vec<Seg>| {
                    if !known.contains(&name.as_str()) {
                        errs.push((
                            path,
                            format!(
                                "unknown pool {:?}; pools: {}",
                                name.as_str(),
                                known.join(", ")
                            ),
                            None,
                        ));
                    }
                };
                for (code, pool) in &g.regions {
                    check(pool, extend(&extend(&gp, key("regions")), key(&code.0)));
                }
                check(&g.fallback_pool, extend(&gp, key("fallback_pool")));
            }
        }
        errs.extend(self.validate_steering());
        let hooks = self.webhooks();
        if hooks.len() > MAX_WEBHOOKS {
            errs.push((
                at(&[key("notifications"), key("webhooks")]),
                format!(
                    "{} webhooks; at most {MAX_WEBHOOKS} are allowed per service",
                    hooks.len()
                ),
                None,
            ));
        }
        for (i, w) in hooks.iter().enumerate() {
            let wp = vec![key("notifications"), key("webhooks"), Seg::Index(i)];
            match (&w.secret, w.format) {
                (None, WebhookFormat::Json) => errs.push((
                    extend(&wp, key("secret")),
                    format!("required for format \"json\" (at least {MIN_WEBHOOK_SECRET} characters): receivers verify X-FlowBalance-Signature with it"),
                    None,
                )),
                (Some(s), _) if secrets::is_redacted(s) => errs.push((
                    extend(&wp, key("secret")),
                    format!("{s:?} is the redacted form of a secret, and no webhook secret of the stored config matches it; send the secret itself"),
                    None,
                )),
                (Some(s), _) if s.chars().count() < MIN_WEBHOOK_SECRET => errs.push((
                    extend(&wp, key("secret")),
                    format!("too short: at least {MIN_WEBHOOK_SECRET} characters"),
                    None,
                )),
                _ => {}
            }
            if w.events.is_empty() {
                errs.push((
                    extend(&wp, key("events")),
                    "at least one event (leave the key out for all events)".into(),
                    None,
                ));
            }
        }
        errs.extend(self.health.validate());
        if let Some(a) = self.affinity() {
            if a.kind == AffinityKind::Header && a.header_name.is_none() {
                errs.push((
                    at(&[
                        key("load_balancer"),
                        key("session_affinity"),
                        key("header_name"),
                    ]),
                    "required when type is \"header\"".into(),
                    None,
                ));
            }
        }
        errs
    }
}

impl ServiceConfig {
    /// `load_balancer.steering` and `fallback_pool` against the pools and `geo_steering`.
    /// Lease mode refuses what needs every request at the object: per-IP rate limits, and the
    /// steering modes that count requests in flight.
    fn validate_steering(&self) -> Vec<Issue> {
        let mut errs = Vec::new();
        if self.decisions.mode == DecisionMode::Lease {
            if self.rate_limit.is_some() {
                errs.push((
                    vec![key("rate_limit")],
                    "cannot be combined with decisions.mode \"lease\": exact per-client rate limiting needs every request at the Durable Object (use mode \"per_request\" or remove rate_limit)".into(),
                    None,
                ));
            }
            let steering = self.load_balancer.endpoint_steering;
            if steering.counts_outstanding() {
                let name = serde_json::to_value(steering)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                errs.push((
                    vec![key("load_balancer"), key("endpoint_steering")],
                    format!("\"{name}\" cannot be combined with decisions.mode \"lease\": it counts every request in flight at the Durable Object (use \"round_robin\" or \"hash\", or mode \"per_request\")"),
                    None,
                ));
            }
        }
        let lb = |k: &str| vec![key("load_balancer"), key(k)];
        let known: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        match self.load_balancer.steering {
            PoolSteering::Failover => {
                if self.pools.is_empty() {
                    errs.push((lb("steering"), "\"failover\" requires pools".into(), None));
                }
                if !self.backends.is_empty() {
                    errs.push((
                        vec![key("backends")],
                        "with steering \"failover\", put every backend in a pool (pools are tried in order)".into(),
                        None,
                    ));
                }
                if self.geo.is_some() {
                    errs.push((
                        vec![key("geo_steering")],
                        "applies only with steering \"geo\", not \"failover\"".into(),
                        None,
                    ));
                }
            }
            PoolSteering::Geo => {
                if self.load_balancer.fallback_pool.is_some() {
                    errs.push((
                        lb("fallback_pool"),
                        "applies only with steering \"failover\" (geo uses geo_steering.fallback_pool)".into(),
                        None,
                    ));
                }
            }
        }
        if let Some(f) = &self.load_balancer.fallback_pool {
            if !known.is_empty() && !known.contains(&f.as_str()) {
                errs.push((
                    lb("fallback_pool"),
                    format!("unknown pool {:?}; pools: {}", f.as_str(), known.join(", ")),
                    None,
                ));
            }
        }
        errs
    }
}

/// What a config is checked against beyond itself: the deployment it will run in.
#[derive(Clone, Debug, Default)]
pub struct Deployment {
    /// `ADMIN_HOSTNAME`, normalised.
    pub admin_hostname: Option<String>,
    /// Hostnames this deployment balances (DEFAULT_BACKENDS and API-created), normalised.
    pub balanced: Vec<String>,
}

impl Deployment {
    pub fn new(admin_hostname: Option<&str>, balanced: Vec<String>) -> Self {
        Deployment {
            admin_hostname: admin_hostname.and_then(|h| validate_hostname(h).ok()),
            balanced,
        }
    }

    /// The Worker's own hostnames serve the admin surface; every other hostname is balanced.
    pub fn is_admin_host(&self, host: &str) -> bool {
        matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
            || host.ends_with(".workers.dev")
            || self.admin_hostname.as_deref() == Some(host)
    }

    /// Why a backend host would send requests back into this Worker, if it would. Loopback
    /// names are allowed: locally they are the developer's own servers, not the Worker.
    fn loops_back(&self, host: &str) -> Option<&'static str> {
        if host.ends_with(".workers.dev") || self.admin_hostname.as_deref() == Some(host) {
            Some("one of the Worker's own hostnames")
        } else if self.balanced.iter().any(|b| b == host) {
            Some("a hostname this deployment balances")
        } else {
            None
        }
    }
}

// ---- Newtypes: each checks itself on construction ----

macro_rules! string_newtype {
    ($name:ident, $check:path, $schema:expr) => {
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $check(&s).map($name)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $schema
            }
        }
    };
}

string_newtype!(
    Hostname,
    validate_hostname,
    schemars::json_schema!({"type": "string", "description": "DNS name, IPv4 or IPv6 literal, no port (lowercased, trailing dot dropped)"})
);
string_newtype!(
    BackendUrl,
    validate_backend_url,
    schemars::json_schema!({"type": "string", "pattern": "^[hH][tT][tT][pP][sS]?://", "description": "http(s) URL with optional port and base path; no query, fragment, userinfo or dot segments"})
);
string_newtype!(
    HealthPath,
    check_health_path,
    schemars::json_schema!({"type": "string", "pattern": "^/[!-~]*$"})
);
string_newtype!(
    PoolName,
    check_pool_name,
    schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"})
);
string_newtype!(
    Token,
    check_token,
    schemars::json_schema!({"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"})
);
string_newtype!(
    HeaderValue,
    check_header_value,
    schemars::json_schema!({"type": "string", "maxLength": 1024, "pattern": "^[\\t -~]*$"})
);
string_newtype!(
    ExpectedBody,
    check_expected_body,
    schemars::json_schema!({"type": "string", "minLength": 1, "maxLength": 1024})
);
string_newtype!(
    RegionCode,
    check_region,
    schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z]{2}$"})
);

impl BackendUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        validate_backend_url(s).map(BackendUrl)
    }

    /// The host part (bracketed for IPv6), as normalised.
    pub fn host(&self) -> &str {
        UrlParts::of(&self.0).host
    }
}

fn check_health_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} must start with '/' and contain no spaces or control characters"
        ))
    }
}

fn check_header_value(s: &str) -> Result<String, String> {
    if s.len() <= 1024 && s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid header value (at most 1024 visible ASCII characters, spaces or tabs)"
        ))
    }
}

fn check_expected_body(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 1024 {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: expected 1 to 1024 bytes of text"))
    }
}

fn check_pool_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid pool name (1-64 of A-Z a-z 0-9 _ . -)"
        ))
    }
}

// RFC 7230 tchar; cookie names (RFC 6265) use the same token grammar.
fn check_token(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid name (RFC 7230 token)"))
    }
}

fn check_region(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    if upper.len() == 2 && upper.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(upper)
    } else {
        Err(format!(
            "{s:?} is not a region code (ISO country code or one of AF AN AS EU NA OC SA)"
        ))
    }
}

// ---- Numbers: ranges are part of the type's deserialisation, so errors name them ----

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// An integer in `MIN..=MAX`.
fn int<'de, const MIN: u64, const MAX: u64, T: TryFrom<u64>, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    let v = Value::deserialize(d)?;
    let range = if MAX >= u64::from(u32::MAX) {
        format!("an integer >= {MIN}")
    } else {
        format!("an integer {MIN}..={MAX}")
    };
    match v.as_u64() {
        Some(n) if (MIN..=MAX).contains(&n) => {
            T::try_from(n).map_err(|_| de::Error::custom(format!("expected {range}, found {n}")))
        }
        _ => Err(de::Error::custom(format!(
            "expected {range}, found {}",
            describe(&v)
        ))),
    }
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    match v.as_f64() {
        Some(f) if f > 0.0 && f <= 100.0 => Ok(f),
        _ => Err(de::Error::custom(format!(
            "expected a percentage > 0 and <= 100, found {}",
            describe(&v)
        ))),
    }
}

/// Seconds in the config (fractions allowed), milliseconds inside.
macro_rules! seconds_field {
    ($module:ident, $min_ms:expr, $max_ms:expr, $range:expr) => {
        mod $module {
            use super::*;
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
                let v = Value::deserialize(d)?;
                let ms = v.as_f64().map(|s| (s * 1000.0).round());
                match ms {
                    Some(ms) if ms >= $min_ms as f64 && ms <= $max_ms as f64 => Ok(ms as u64),
                    _ => Err(de::Error::custom(format!(
                        "expected seconds {}, found {}",
                        $range,
                        describe(&v)
                    ))),
                }
            }
            pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
                // Whole seconds stay integers so the canonical JSON reads like hand-written config.
                if ms % 1000 == 0 {
                    s.serialize_u64(ms / 1000)
                } else {
                    s.serialize_f64(*ms as f64 / 1000.0)
                }
            }
        }
    };
}

seconds_field!(secs_100ms_1d, 100, 86_400_000, "0.1..=86400");
seconds_field!(secs_1ms_60s, 1, 60_000, "0.001..=60");
seconds_field!(secs_0_1h, 0, 3_600_000, "0..=3600");

// ---- Parsing with every error reported at its path ----

/// Parses one service object; `path` prefixes every error path ("" for none).
pub fn parse_service(
    value: &Value,
    path: &str,
    ctx: &Deployment,
) -> Result<ServiceConfig, Vec<ConfigError>> {
    typed::<ServiceConfig>(value, |s| s.validate(ctx)).map_err(|errs| {
        errs.into_iter()
            .map(|e| ConfigError::new(&join(path, &e.path), e.message))
            .collect()
    })
}

/// Parses the DEFAULT_BACKENDS variable: a single service object, a bare array
/// of services, or `{"services": [...], <default blocks>}`.
pub fn parse_default_backends(
    text: &str,
    ctx: &Deployment,
) -> Result<Vec<ServiceConfig>, Vec<ConfigError>> {
    let (services, errs) = parse_default_backends_partial(text, ctx);
    if errs.is_empty() {
        Ok(services)
    } else {
        Err(errs)
    }
}

/// Like [`parse_default_backends`], but also returns the services that are valid on their own,
/// so one service's typo does not take every other hostname down. A service is left out when
/// its own entry has an error or its hostname is duplicated; every service is left out when an
/// error is outside the service entries (bad JSON, a bad default block), since a skipped default
/// would silently change them.
pub fn parse_default_backends_partial(
    text: &str,
    ctx: &Deployment,
) -> (Vec<ServiceConfig>, Vec<ConfigError>) {
    let value = match parse_json(text) {
        Ok(v) => v,
        Err(e) => return (vec![], vec![e]),
    };
    // The hostnames of this text are balanced too: a backend must not name one of them.
    let mut ctx = ctx.clone();
    ctx.balanced.extend(hostnames_in(&value));
    let mut errs = Vec::new();
    let (items, prefix, defaults): (&[Value], &str, Map<String, Value>) = match &value {
        Value::Array(items) => (items, "", Map::new()),
        Value::Object(m) if m.contains_key("services") => {
            let mut defaults = Map::new();
            for (k, v) in m {
                if k == "services" || v.is_null() {
                    continue;
                }
                if !DEFAULT_BLOCKS.contains(&k.as_str()) {
                    errs.push(ConfigError::new(
                        k,
                        format!(
                            "unknown key {k:?}; allowed: services, {}",
                            DEFAULT_BLOCKS.join(", ")
                        ),
                    ));
                    continue;
                }
                // Checked once at its own path, so a bad default is reported once, not per service.
                let before = errs.len();
                errs.extend(check_block(k, v));
                if errs.len() == before {
                    defaults.insert(k.clone(), v.clone());
                }
            }
            match &m["services"] {
                Value::Array(items) => (items.as_slice(), "services", defaults),
                other => {
                    errs.push(ConfigError::new(
                        "services",
                        format!("expected an array of services, found {}", describe(other)),
                    ));
                    return (vec![], errs);
                }
            }
        }
        Value::Object(_) => {
            return match parse_service(&value, "", &ctx) {
                Ok(s) => (vec![s], vec![]),
                Err(e) => (vec![], e),
            }
        }
        other => {
            let msg = format!("expected a service object, an array of services or {{\"services\": [...]}}, found {}", describe(other));
            return (vec![], vec![ConfigError::new("", msg)]);
        }
    };
    if items.is_empty() {
        errs.push(ConfigError::new(prefix, "at least one service is required"));
    }
    // Duplicates are found on the raw hostnames, so they show even next to other errors.
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut dup: HashSet<String> = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let Some(h) = item
            .get("hostname")
            .and_then(Value::as_str)
            .and_then(|h| validate_hostname(h).ok())
        else {
            continue;
        };
        match first.get(&h) {
            Some(f) => {
                errs.push(ConfigError::new(
                    &format!("{prefix}[{i}].hostname"),
                    format!("duplicate hostname {h:?} (same as {prefix}[{f}].hostname)"),
                ));
                dup.insert(h);
            }
            None => {
                first.insert(h, i);
            }
        }
    }
    let mut services: Vec<ServiceConfig> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{prefix}[{i}]");
        let merged = match item {
            Value::Object(svc) => {
                let mut svc = svc.clone();
                for (k, d) in &defaults {
                    let v = match svc.get(k).filter(|v| !v.is_null()) {
                        Some(own) => merge(d, own),
                        None => d.clone(),
                    };
                    svc.insert(k.clone(), v);
                }
                Value::Object(svc)
            }
            other => other.clone(),
        };
        match parse_service(&merged, &p, &ctx) {
            Ok(s) => services.push(s),
            Err(e) => errs.extend(e),
        }
    }
    let entry = |e: &ConfigError| e.path.starts_with("services[") || e.path.starts_with('[');
    if errs.iter().any(|e| !entry(e)) {
        return (vec![], errs);
    }
    let ok = services
        .into_iter()
        .filter(|s| !dup.contains(s.hostname.as_str()))
        .collect();
    (ok, errs)
}

/// The hostnames a DEFAULT_BACKENDS text names, as far as they are valid (for [`Deployment`]).
pub fn default_hostnames(text: &str) -> Vec<String> {
    parse_json(text)
        .map(|v| hostnames_in(&v))
        .unwrap_or_default()
}

/// The hostnames named in a DEFAULT_BACKENDS value, as far as they are valid.
fn hostnames_in(value: &Value) -> Vec<String> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Object(m) => match m.get("services") {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => vec![value],
        },
        _ => vec![],
    };
    items
        .iter()
        .filter_map(|s| s.get("hostname")?.as_str())
        .filter_map(|h| validate_hostname(h).ok())
        .collect()
}

/// Errors of one top-level default block, at its own path.
fn check_block(name: &str, v: &Value) -> Vec<ConfigError> {
    fn at<T: DeserializeOwned>(name: &str, v: &Value) -> Vec<ConfigError> {
        match from_value::<T>(v) {
            Ok(_) => vec![],
            Err(e) => e
                .into_iter()
                .map(|e| ConfigError::new(&join(name, &e.path), e.message))
                .collect(),
        }
    }
    #[derive(Deserialize)]
    struct Retries(
        #[serde(deserialize_with = "int::<0, 10, u32, _>")]
        #[allow(dead_code)]
        u32,
    );
    match name {
        "activeHealthChecks" => at::<ActiveHealth>(name, v),
        "passiveHealthChecks" => at::<PassiveHealth>(name, v),
        "connection_error_handling" => at::<ConnectionHandling>(name, v),
        "retries" => at::<Retries>(name, v),
        "load_balancer" => at::<LoadBalancer>(name, v),
        "rate_limit" => at::<RateLimit>(name, v),
        "notifications" => at::<Notifications>(name, v),
        "decisions" => at::<Decisions>(name, v),
        _ => at::<AccessLists>(name, v),
    }
}

/// Service-level block merge: objects merge key by key (recursively), the
/// service's own value wins; scalars and arrays are replaced wholesale.
fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = o.clone();
            for (k, bv) in b {
                let v = match o.get(k).filter(|v| !v.is_null()) {
                    Some(ov) => merge(bv, ov),
                    None => bv.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        _ => over.clone(),
    }
}

/// REST API form: `value` is a service object (hostname optional, must match)
/// or `{"vars": {"DEFAULT_BACKENDS": "<json>"}}`.
pub fn parse_service_for_host(
    value: &Value,
    hostname: &str,
    ctx: &Deployment,
) -> Result<ServiceConfig, Vec<ConfigError>> {
    let host = validate_hostname(hostname)
        .map_err(|e| vec![ConfigError::new("", format!("request hostname: {e}"))])?;
    let Value::Object(m) = value else {
        return Err(vec![ConfigError::new(
            "",
            format!("expected a service object, found {}", describe(value)),
        )]);
    };
    if let Some(vars) = m.get("vars") {
        if let Some(k) = m.keys().find(|k| *k != "vars") {
            return Err(vec![ConfigError::new(
                k,
                format!("unknown key {k:?}; allowed: vars"),
            )]);
        }
        // Other vars (API keys and the like) may ride along in a wrangler-style body.
        let prefix = "vars.DEFAULT_BACKENDS";
        let text = match vars.get("DEFAULT_BACKENDS") {
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(vec![ConfigError::new(
                    prefix,
                    format!("expected a JSON string, found {}", describe(other)),
                )])
            }
            None => return Err(vec![ConfigError::new(prefix, "required")]),
        };
        let services = parse_default_backends(text, ctx).map_err(|e| {
            e.into_iter()
                .map(|e| ConfigError::new(&join(prefix, &e.path), e.message))
                .collect::<Vec<_>>()
        })?;
        let found: Vec<&str> = services.iter().map(|s| s.hostname.as_str()).collect();
        return match services.iter().find(|s| s.hostname.as_str() == host) {
            Some(s) => Ok(s.clone()),
            None => Err(vec![ConfigError::new(
                prefix,
                format!(
                    "no service for hostname {host:?} (found: {})",
                    found.join(", ")
                ),
            )]),
        };
    }
    let mut body = m.clone();
    let mut errs = Vec::new();
    match m.get("hostname") {
        None | Some(Value::Null) => {
            body.insert("hostname".into(), Value::String(host));
        }
        Some(Value::String(s)) => match validate_hostname(s) {
            Ok(given) if given != host => errs.push(ConfigError::new(
                "hostname",
                format!("{given:?} does not match the request hostname {host:?}"),
            )),
            _ => {}
        },
        Some(_) => {} // wrong types are reported by parse_service
    }
    match parse_service(&Value::Object(body), "", ctx) {
        Ok(s) if errs.is_empty() => Ok(s),
        Ok(_) => Err(errs),
        Err(e) => {
            errs.extend(e);
            Err(errs)
        }
    }
}

mod names;
#[cfg(not(target_arch = "wasm32"))]
mod schema;
mod secrets;
mod typed;

pub use names::{validate_backend_url, validate_hostname};
#[cfg(not(target_arch = "wasm32"))]
pub use schema::schemas;
pub use secrets::{redact, redacted, restore_secrets, REDACTED_PREFIX};
use typed::{extend, join, key, typed, Issue, Seg, SAME};
pub use typed::{from_value, parse_json};

#[cfg(test)]
mod tests;
