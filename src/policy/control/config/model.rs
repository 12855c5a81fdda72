//! The config model: a service, its blocks and their defaults, and what callers read from it.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::values::{fraction, int, percent, secs_0_1h, secs_100ms_1d, secs_1ms_60s};
use super::*;
use crate::policy::access::lists::Cidr;
use crate::policy::health::monitor::{Expect, ExpectedCodes, MonitorType, ProbeMethod};
use crate::policy::health::regions::Region;
use crate::policy::traffic::forwarding::HOP_BY_HOP;
use std::net::IpAddr;

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
    /// The IP address the service's `dns` records give for this backend (needed when its URL's
    /// host is a DNS name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
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
    /// The IP address for the service's `dns` records (for a URL whose host is a DNS name).
    #[serde(default)]
    address: Option<IpAddr>,
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
                f.write_str("a URL string or a backend object {url, weight, state, address}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Backend, E> {
                Ok(Backend {
                    url: BackendUrl::parse(s).map_err(E::custom)?,
                    weight: DEFAULT_WEIGHT,
                    state: BackendState::Enabled,
                    address: None,
                })
            }
            // Keys are read through the caller's map, so errors keep their field path.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Backend, A::Error> {
                let o = BackendObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Backend {
                    url: o.url,
                    weight: o.weight,
                    state: o.state,
                    address: o.address,
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
    /// Probe from these regions (Durable Object location hints), each with its own prober; a
    /// backend is down when `quorum` of them see it down. Empty: probes run from the hostname's object.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    /// How many regions must see a backend down to take it out (default: a majority of `regions`).
    #[serde(
        deserialize_with = "optional_quorum",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 9)))]
    pub quorum: Option<u32>,
}

fn optional_quorum<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    int::<1, 9, u32, D>(d).map(Some)
}

fn optional_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    int::<1, 65535, u16, D>(d).map(Some)
}

impl ActiveHealth {
    /// Monitor rules across fields: HTTP options on a tcp monitor, doubled or hop-by-hop headers.
    pub(super) fn validate(&self) -> Vec<Issue> {
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

    /// The regions whose probers watch the backends: `regions` while active checks are on.
    /// Empty: the hostname's own object probes (or nothing does).
    pub fn probe_regions(&self) -> &[Region] {
        if self.enabled {
            &self.regions
        } else {
            &[]
        }
    }

    /// The quorum in effect over [`Self::probe_regions`].
    pub fn quorum_in_effect(&self) -> usize {
        crate::policy::health::regions::quorum(self.quorum, self.probe_regions().len())
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
            regions: Vec::new(),
            quorum: None,
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
    /// Weigh each backend by its health score: weight × score / 100, none below a score of 10
    /// while a peer is above it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub score_weighting: bool,
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
    /// Where the hostname's Durable Object is created (a location hint; Cloudflare applies it
    /// only when the object is first created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_hint: Option<Region>,
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            mode: DecisionMode::Auto,
            lease_ms: DEFAULT_LEASE_MS,
            location_hint: None,
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
    /// Lease, unless the service uses a feature that needs every request at the object
    /// (`rate_limit`, `least_outstanding_requests` or `latency` steering): then per request.
    #[default]
    Auto,
    /// Every request asks the hostname's Durable Object.
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
    /// The healthy pool with the lowest probe latency from the probe region nearest the client
    /// (needs `activeHealthChecks.regions`).
    Dynamic,
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
    #[serde(rename = "dns.sync_failed")]
    DnsSyncFailed,
    /// FlowBalance undid a change that raised the error rate (`change_safety`).
    #[serde(rename = "config.auto_rolled_back")]
    ConfigAutoRolledBack,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::BackendDown,
        EventKind::BackendUp,
        EventKind::BreakerOpen,
        EventKind::BreakerClosed,
        EventKind::ServiceUnhealthy,
        EventKind::ServiceRecovered,
        EventKind::ConfigChanged,
        EventKind::ConfigRolledBack,
        EventKind::DnsSyncFailed,
        EventKind::ConfigAutoRolledBack,
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
    /// What the request log keeps of successful requests.
    #[serde(default)]
    pub logging: Logging,
    /// Traffic rules, checked in order: match requests and route, split, rewrite, redirect or
    /// answer them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// A DNS record set kept in step with the healthy backends (Cloudflare DNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsRecords>,
    /// Watching each config change, and undoing one that plainly raised the error rate.
    #[serde(default)]
    pub change_safety: ChangeSafety,
}

/// `dns`: the A/AAAA records of `name` in the Cloudflare zone `zone_id` list the healthy
/// backends' addresses; FlowBalance manages only the records it created (their comment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DnsRecords {
    /// The zone's id (32 hexadecimal characters, from the zone's overview page).
    pub zone_id: ZoneId,
    /// The record name, e.g. `origin.example.com`.
    pub name: Hostname,
    /// Seconds; 1 means automatic.
    #[serde(
        default = "default_dns_ttl",
        deserialize_with = "int::<1, 86_400, _, _>"
    )]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 86_400)))]
    pub ttl: u32,
}

fn default_dns_ttl() -> u32 {
    60
}

/// `change_safety`: after a config change the object compares the share of requests answered
/// 5xx (or failed) with the 5 minutes before it, and rolls the change back when it rose too much.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct ChangeSafety {
    /// Roll a change back on its own when its error rate rose too much.
    pub auto_rollback: bool,
    /// Seconds a change is watched after it is made.
    #[serde(deserialize_with = "int::<5, 3600, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 5, max = 3600)))]
    pub watch_s: u64,
    /// Percentage points the error share may rise over the 5 minutes before the change (> 0, <= 100).
    #[serde(deserialize_with = "percent")]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(range(min = 0, max = 100), extend("exclusiveMinimum" = 0))
    )]
    pub max_error_rate_increase: f64,
    /// Requests after the change needed before it can be rolled back.
    #[serde(deserialize_with = "int::<1, 1_000_000, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 1_000_000)))]
    pub min_requests: u64,
}

impl Default for ChangeSafety {
    fn default() -> Self {
        ChangeSafety {
            auto_rollback: true,
            watch_s: DEFAULT_WATCH_S,
            max_error_rate_increase: DEFAULT_MAX_ERROR_RATE_INCREASE,
            min_requests: DEFAULT_WATCH_MIN_REQUESTS,
        }
    }
}

/// What the request log keeps (`logging`). Failed, retried, refused and slow requests are always
/// kept; successes are sampled, since the rollups already count every one of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    /// Share of successful requests logged, 0 to 1.
    #[serde(deserialize_with = "fraction")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 0, max = 1)))]
    pub success_sample_rate: f64,
    /// At most this many sampled successes a minute for the hostname.
    #[serde(deserialize_with = "int::<0, 1000, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 0, max = 1000)))]
    pub max_success_rows_per_minute: u32,
    /// A request slower than this (ms) is always kept.
    #[serde(deserialize_with = "int::<1, 600_000, _, _>")]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 600_000)))]
    pub slow_ms: u64,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            success_sample_rate: 0.01,
            max_success_rows_per_minute: 60,
            slow_ms: 1000,
        }
    }
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
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
}
