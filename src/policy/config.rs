//! Service configuration: parsing and validating the JSON config (DEFAULT_BACKENDS and REST bodies) into typed values, and serialising it back canonically.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

// ---- Defaults: the single source of truth for every implicit value. ----

pub const DEFAULT_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 1000;
pub const DEFAULT_HEALTH_ENABLED: bool = true;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 60_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_CONSECUTIVE_UP: u32 = 3;
pub const DEFAULT_CONSECUTIVE_DOWN: u32 = 2;
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_RECOVERY_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_ERROR_RATE_THRESHOLD: f64 = 50.0;
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
pub const DEFAULT_IMMEDIATE_FAILOVER: bool = true;
pub const DEFAULT_MAX_CONNECTION_RETRIES: u32 = 2;
pub const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_RETRIES: u32 = 1;
pub const DEFAULT_COOKIE_NAME: &str = "lb_session";
pub const DEFAULT_AFFINITY_TTL_S: u64 = 3600;

// Keys accepted in each JSON object; anything else is reported with this list.
const SERVICE_KEYS: &[&str] = &[
    "hostname",
    "backends",
    "activeHealthChecks",
    "passiveHealthChecks",
    "connection_error_handling",
    "retries",
    "load_balancer",
    "pools",
    "geo_steering",
    "rate_limit",
    "access_control",
];
// Blocks that may appear at the top level of the `{"services": [...]}` form as defaults.
const BLOCK_KEYS: &[&str] = &[
    "activeHealthChecks",
    "passiveHealthChecks",
    "connection_error_handling",
    "retries",
    "load_balancer",
    "rate_limit",
    "access_control",
];
const BACKEND_KEYS: &[&str] = &["url", "weight", "state"];
const HEALTH_KEYS: &[&str] = &[
    "enabled",
    "path",
    "interval",
    "timeout",
    "consecutive_up",
    "consecutive_down",
];
const PASSIVE_KEYS: &[&str] = &["circuit_breaker"];
const BREAKER_KEYS: &[&str] = &[
    "failure_threshold",
    "recovery_timeout_ms",
    "error_rate_threshold",
    "min_requests",
    "window_ms",
];
const CONNECTION_KEYS: &[&str] = &[
    "immediate_failover",
    "max_connection_retries",
    "connection_timeout_ms",
];
const LB_KEYS: &[&str] = &["session_affinity"];
const AFFINITY_KEYS: &[&str] = &["type", "cookie_name", "header_name", "ttl"];
const POOL_KEYS: &[&str] = &["name", "backends"];
const GEO_KEYS: &[&str] = &["regions", "fallback_pool"];
const RATE_KEYS: &[&str] = &["requests", "window"];
const ACCESS_KEYS: &[&str] = &["allow", "deny"];

// ---- Types ----

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: &str, message: impl Into<String>) -> Self {
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    #[default]
    Enabled,
    Disabled,
    Draining,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Enabled => "enabled",
            BackendState::Disabled => "disabled",
            BackendState::Draining => "draining",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    pub url: String,
    pub weight: u32,
    pub state: BackendState,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveHealth {
    pub enabled: bool,
    pub path: Option<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub consecutive_up: u32,
    pub consecutive_down: u32,
}

impl Default for ActiveHealth {
    fn default() -> Self {
        ActiveHealth {
            enabled: DEFAULT_HEALTH_ENABLED,
            path: None,
            interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
            timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
            consecutive_up: DEFAULT_CONSECUTIVE_UP,
            consecutive_down: DEFAULT_CONSECUTIVE_DOWN,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub recovery_timeout_ms: u64,
    /// Percent, 0 < x <= 100.
    pub error_rate_threshold: f64,
    pub min_requests: u32,
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
pub struct ConnectionHandling {
    pub immediate_failover: bool,
    pub max_connection_retries: u32,
    pub connection_timeout_ms: u64,
}

impl Default for ConnectionHandling {
    fn default() -> Self {
        ConnectionHandling {
            immediate_failover: DEFAULT_IMMEDIATE_FAILOVER,
            max_connection_retries: DEFAULT_MAX_CONNECTION_RETRIES,
            connection_timeout_ms: DEFAULT_CONNECTION_TIMEOUT_MS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityKind {
    Cookie,
    Header,
    IpCookie,
}

impl AffinityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityKind::Cookie => "cookie",
            AffinityKind::Header => "header",
            AffinityKind::IpCookie => "ip_cookie",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Affinity {
    pub kind: AffinityKind,
    pub cookie_name: String,
    pub header_name: Option<String>,
    pub ttl_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Backend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoSteering {
    /// Region code (ISO country or continent, uppercase) -> pool name.
    pub regions: BTreeMap<String, String>,
    pub fallback_pool: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u32,
    pub window_s: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessLists {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub hostname: String,
    pub backends: Vec<Backend>,
    pub health: ActiveHealth,
    pub breaker: BreakerConfig,
    pub connection: ConnectionHandling,
    pub retries: u32,
    pub affinity: Option<Affinity>,
    pub pools: Vec<Pool>,
    pub geo: Option<GeoSteering>,
    pub rate_limit: Option<RateLimit>,
    pub access: Option<AccessLists>,
}

impl ServiceConfig {
    /// Canonical JSON in the input format, every default explicit, so that
    /// `parse_service(&cfg.to_value(), "") == Ok(cfg)`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("hostname".into(), json!(self.hostname));
        m.insert("backends".into(), backends_value(&self.backends));
        let h = &self.health;
        let mut hv = Map::new();
        hv.insert("enabled".into(), json!(h.enabled));
        if let Some(p) = &h.path {
            hv.insert("path".into(), json!(p));
        }
        hv.insert("interval".into(), seconds_value(h.interval_ms));
        hv.insert("timeout".into(), seconds_value(h.timeout_ms));
        hv.insert("consecutive_up".into(), json!(h.consecutive_up));
        hv.insert("consecutive_down".into(), json!(h.consecutive_down));
        m.insert("activeHealthChecks".into(), Value::Object(hv));
        let b = &self.breaker;
        m.insert(
            "passiveHealthChecks".into(),
            json!({"circuit_breaker": {
                "failure_threshold": b.failure_threshold,
                "recovery_timeout_ms": b.recovery_timeout_ms,
                "error_rate_threshold": b.error_rate_threshold,
                "min_requests": b.min_requests,
                "window_ms": b.window_ms,
            }}),
        );
        let c = &self.connection;
        m.insert(
            "connection_error_handling".into(),
            json!({
                "immediate_failover": c.immediate_failover,
                "max_connection_retries": c.max_connection_retries,
                "connection_timeout_ms": c.connection_timeout_ms,
            }),
        );
        m.insert("retries".into(), json!(self.retries));
        if let Some(a) = &self.affinity {
            let mut av = Map::new();
            av.insert("type".into(), json!(a.kind.as_str()));
            av.insert("cookie_name".into(), json!(a.cookie_name));
            if let Some(h) = &a.header_name {
                av.insert("header_name".into(), json!(h));
            }
            av.insert("ttl".into(), json!(a.ttl_s));
            m.insert(
                "load_balancer".into(),
                json!({"session_affinity": Value::Object(av)}),
            );
        }
        if !self.pools.is_empty() {
            let pools: Vec<Value> = self
                .pools
                .iter()
                .map(|p| json!({"name": p.name, "backends": backends_value(&p.backends)}))
                .collect();
            m.insert("pools".into(), Value::Array(pools));
        }
        if let Some(g) = &self.geo {
            m.insert(
                "geo_steering".into(),
                json!({"regions": g.regions, "fallback_pool": g.fallback_pool}),
            );
        }
        if let Some(r) = &self.rate_limit {
            m.insert(
                "rate_limit".into(),
                json!({"requests": r.requests, "window": r.window_s}),
            );
        }
        if let Some(a) = &self.access {
            m.insert(
                "access_control".into(),
                json!({"allow": a.allow, "deny": a.deny}),
            );
        }
        Value::Object(m)
    }

    /// Top-level backends then pool backends, first occurrence of each URL wins.
    pub fn all_backends(&self) -> Vec<&Backend> {
        let mut seen = std::collections::HashSet::new();
        self.backends
            .iter()
            .chain(self.pools.iter().flat_map(|p| p.backends.iter()))
            .filter(|b| seen.insert(b.url.as_str()))
            .collect()
    }

    /// First backend with this URL (top-level list, then pools). The URL is
    /// normalised first so callers may pass what the user typed.
    pub fn backend_mut(&mut self, url: &str) -> Option<&mut Backend> {
        let wanted = validate_backend_url(url).unwrap_or_else(|_| url.to_string());
        self.backends
            .iter_mut()
            .chain(self.pools.iter_mut().flat_map(|p| p.backends.iter_mut()))
            .find(|b| b.url == wanted)
    }
}

fn backends_value(list: &[Backend]) -> Value {
    Value::Array(
        list.iter()
            .map(|b| json!({"url": b.url, "weight": b.weight, "state": b.state.as_str()}))
            .collect(),
    )
}

// Whole seconds stay integers so the canonical JSON reads like hand-written config.
fn seconds_value(ms: u64) -> Value {
    if ms.is_multiple_of(1000) {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

// ---- Public entry points ----

/// Parses the DEFAULT_BACKENDS variable: a single service object, a bare array
/// of services, or `{"services": [...], <default blocks>}`.
pub fn parse_default_backends(text: &str) -> Result<Vec<ServiceConfig>, Vec<ConfigError>> {
    let (services, errs) = parse_default_backends_partial(text);
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
pub fn parse_default_backends_partial(text: &str) -> (Vec<ServiceConfig>, Vec<ConfigError>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return (vec![], vec![ConfigError::new("", e.to_string())]),
    };
    let mut errs = Vec::new();
    let mut services = Vec::new();
    match &value {
        Value::Array(items) => parse_service_list(items, "", &Map::new(), &mut services, &mut errs),
        Value::Object(m) if m.contains_key("services") => {
            let mut allowed = vec!["services"];
            allowed.extend_from_slice(BLOCK_KEYS);
            check_keys(m, "", &allowed, &mut errs);
            // Validate each default block once, at its own path, so a bad
            // default is reported once rather than once per service.
            let mut defaults = Map::new();
            for key in BLOCK_KEYS {
                if let Some(v) = field(m, key) {
                    let before = errs.len();
                    parse_block(key, v, key, &mut errs);
                    if errs.len() == before {
                        defaults.insert((*key).to_string(), v.clone());
                    }
                }
            }
            match field(m, "services") {
                Some(Value::Array(items)) => {
                    parse_service_list(items, "services", &defaults, &mut services, &mut errs)
                }
                Some(other) => errs.push(ConfigError::new(
                    "services",
                    format!("expected an array of services, found {}", describe(other)),
                )),
                None => errs.push(ConfigError::new("services", "required")),
            }
        }
        Value::Object(_) => match parse_service(&value, "") {
            Ok(s) => services.push(s),
            Err(e) => errs.extend(e),
        },
        other => errs.push(ConfigError::new(
            "",
            format!(
                "expected a service object, an array of services or {{\"services\": [...]}}, found {}",
                describe(other)
            ),
        )),
    }
    let in_entry = |e: &ConfigError| e.path.starts_with("services[") || e.path.starts_with('[');
    if !matches!(value, Value::Array(_) | Value::Object(_)) || errs.iter().any(|e| !in_entry(e)) {
        return (vec![], errs);
    }
    let mut seen = HashMap::new();
    for s in &services {
        *seen.entry(s.hostname.clone()).or_insert(0) += 1;
    }
    services.retain(|s| seen[&s.hostname] == 1);
    (services, errs)
}

fn parse_service_list(
    items: &[Value],
    path: &str,
    defaults: &Map<String, Value>,
    out: &mut Vec<ServiceConfig>,
    errs: &mut Vec<ConfigError>,
) {
    if items.is_empty() {
        errs.push(ConfigError::new(path, "at least one service is required"));
        return;
    }
    let mut hosts: HashMap<String, String> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let merged = match item {
            Value::Object(svc) => {
                let mut svc = svc.clone();
                for (k, d) in defaults {
                    let v = match field(&svc, k) {
                        Some(own) => merge(d, own),
                        None => d.clone(),
                    };
                    svc.insert(k.clone(), v);
                }
                Value::Object(svc)
            }
            other => other.clone(),
        };
        // Duplicate detection works on the raw hostname so it still fires when
        // the service has unrelated errors.
        if let Some(Ok(h)) = merged
            .get("hostname")
            .and_then(Value::as_str)
            .map(validate_hostname)
        {
            let hp = join(&p, "hostname");
            if let Some(first) = hosts.get(&h) {
                errs.push(ConfigError::new(
                    &hp,
                    format!("duplicate hostname {h:?} (same as {first})"),
                ));
            } else {
                hosts.insert(h, hp);
            }
        }
        match parse_service(&merged, &p) {
            Ok(s) => out.push(s),
            Err(e) => errs.extend(e),
        }
    }
}

/// Service-level block merge: objects merge key by key (recursively), the
/// service's own value wins; scalars and arrays are replaced wholesale.
fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = o.clone();
            for (k, bv) in b {
                let v = match field(o, k) {
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

/// Parses one service object; `path` prefixes every error path ("" for none).
pub fn parse_service(value: &Value, path: &str) -> Result<ServiceConfig, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let svc = service(value, path, &mut errs);
    match svc {
        Some(s) if errs.is_empty() => Ok(s),
        _ => Err(errs),
    }
}

/// REST API form: `value` is a service object (hostname optional, must match)
/// or `{"vars": {"DEFAULT_BACKENDS": "<json>"}}`.
pub fn parse_service_for_host(
    value: &Value,
    hostname: &str,
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
        let mut errs = Vec::new();
        check_keys(m, "", &["vars"], &mut errs);
        // Other vars (API keys and the like) may ride along in a wrangler-style
        // body; only DEFAULT_BACKENDS matters here.
        let text = match vars.get("DEFAULT_BACKENDS") {
            Some(Value::String(s)) => s,
            Some(other) => {
                errs.push(ConfigError::new(
                    "vars.DEFAULT_BACKENDS",
                    format!("expected a JSON string, found {}", describe(other)),
                ));
                return Err(errs);
            }
            None => {
                errs.push(ConfigError::new("vars.DEFAULT_BACKENDS", "required"));
                return Err(errs);
            }
        };
        let prefix = "vars.DEFAULT_BACKENDS";
        let services = match parse_default_backends(text) {
            Ok(s) => s,
            Err(e) => {
                errs.extend(e.into_iter().map(|e| ConfigError {
                    path: prefixed(prefix, &e.path),
                    message: e.message,
                }));
                return Err(errs);
            }
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        let found: Vec<&str> = services.iter().map(|s| s.hostname.as_str()).collect();
        return match services.iter().find(|s| s.hostname == host) {
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
    match field(m, "hostname") {
        None => {
            body.insert("hostname".into(), Value::String(host));
        }
        Some(Value::String(s)) => {
            if let Ok(given) = validate_hostname(s) {
                if given != host {
                    errs.push(ConfigError::new(
                        "hostname",
                        format!("{given:?} does not match the request hostname {host:?}"),
                    ));
                }
            }
        }
        // Wrong types are reported by parse_service below.
        Some(_) => {}
    }
    match parse_service(&Value::Object(body), "") {
        Ok(s) if errs.is_empty() => Ok(s),
        Ok(_) => Err(errs),
        Err(e) => {
            errs.extend(e);
            Err(errs)
        }
    }
}

fn prefixed(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

// ---- Service parsing ----

fn service(v: &Value, path: &str, errs: &mut Vec<ConfigError>) -> Option<ServiceConfig> {
    let m = object(v, path, SERVICE_KEYS, "a service object", errs)?;
    let hostname = match field(m, "hostname") {
        None => {
            errs.push(ConfigError::new(&join(path, "hostname"), "required"));
            None
        }
        Some(Value::String(s)) => match validate_hostname(s) {
            Ok(h) => Some(h),
            Err(e) => {
                errs.push(ConfigError::new(&join(path, "hostname"), e));
                None
            }
        },
        Some(other) => {
            errs.push(type_error(&join(path, "hostname"), "a string", other));
            None
        }
    };
    let backends_path = join(path, "backends");
    let backends = field(m, "backends")
        .map(|b| backend_list(b, &backends_path, errs))
        .unwrap_or_default();
    let pools_path = join(path, "pools");
    let pools_raw = field(m, "pools");
    let pools = pools_raw
        .map(|p| pool_list(p, &pools_path, errs))
        .unwrap_or_default();
    let raw_len = |v: Option<&Value>| v.and_then(Value::as_array).map_or(0, Vec::len);
    let backends_given =
        field(m, "backends").is_some_and(|b| !b.is_array()) || raw_len(field(m, "backends")) > 0;
    let pools_given = pools_raw.is_some_and(|p| !p.is_array()) || raw_len(pools_raw) > 0;
    if !backends_given && !pools_given {
        errs.push(ConfigError::new(
            &backends_path,
            "at least one backend is required (in backends or pools)",
        ));
    }
    // Pool names as written, so geo references are checked even if a pool has
    // unrelated errors.
    let pool_names: Vec<&str> = pools_raw
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let geo = field(m, "geo_steering").and_then(|g| {
        let gp = join(path, "geo_steering");
        if pools_raw.is_none() {
            errs.push(ConfigError::new(&gp, "requires pools"));
            return None;
        }
        parse_geo(g, &gp, &pool_names, errs)
    });
    let health = parse_health(
        field(m, "activeHealthChecks"),
        &join(path, "activeHealthChecks"),
        errs,
    );
    let breaker = parse_passive(
        field(m, "passiveHealthChecks"),
        &join(path, "passiveHealthChecks"),
        errs,
    );
    let connection = parse_connection(
        field(m, "connection_error_handling"),
        &join(path, "connection_error_handling"),
        errs,
    );
    let retries = field(m, "retries")
        .and_then(|r| uint32(r, &join(path, "retries"), 0, 10, errs))
        .unwrap_or(DEFAULT_RETRIES);
    let affinity = field(m, "load_balancer")
        .and_then(|l| parse_load_balancer(l, &join(path, "load_balancer"), errs));
    let rate_limit =
        field(m, "rate_limit").and_then(|r| parse_rate_limit(r, &join(path, "rate_limit"), errs));
    let access = field(m, "access_control")
        .and_then(|a| parse_access(a, &join(path, "access_control"), errs));
    Some(ServiceConfig {
        hostname: hostname?,
        backends,
        health,
        breaker,
        connection,
        retries,
        affinity,
        pools,
        geo,
        rate_limit,
        access,
    })
}

/// Validates one default block on its own (used for top-level defaults).
fn parse_block(key: &str, v: &Value, path: &str, errs: &mut Vec<ConfigError>) {
    match key {
        "activeHealthChecks" => {
            parse_health(Some(v), path, errs);
        }
        "passiveHealthChecks" => {
            parse_passive(Some(v), path, errs);
        }
        "connection_error_handling" => {
            parse_connection(Some(v), path, errs);
        }
        "retries" => {
            uint32(v, path, 0, 10, errs);
        }
        "load_balancer" => {
            parse_load_balancer(v, path, errs);
        }
        "rate_limit" => {
            parse_rate_limit(v, path, errs);
        }
        "access_control" => {
            parse_access(v, path, errs);
        }
        _ => {}
    }
}

fn backend_list(v: &Value, path: &str, errs: &mut Vec<ConfigError>) -> Vec<Backend> {
    let Value::Array(items) = v else {
        errs.push(type_error(path, "an array of backends", v));
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        if let Some(b) = parse_backend(item, &p, errs) {
            if let Some(first) = seen.get(&b.url) {
                errs.push(ConfigError::new(
                    &p,
                    format!(
                        "duplicate backend {:?} (same as {})",
                        b.url,
                        index(path, *first)
                    ),
                ));
            } else {
                seen.insert(b.url.clone(), i);
                out.push(b);
            }
        }
    }
    out
}

fn parse_backend(v: &Value, path: &str, errs: &mut Vec<ConfigError>) -> Option<Backend> {
    match v {
        Value::String(s) => match validate_backend_url(s) {
            Ok(url) => Some(Backend {
                url,
                weight: DEFAULT_WEIGHT,
                state: BackendState::Enabled,
            }),
            Err(e) => {
                errs.push(ConfigError::new(path, e));
                None
            }
        },
        Value::Object(_) => {
            let m = object(v, path, BACKEND_KEYS, "a backend object", errs)?;
            let url_path = join(path, "url");
            let url = match field(m, "url") {
                None => {
                    errs.push(ConfigError::new(&url_path, "required"));
                    None
                }
                Some(Value::String(s)) => match validate_backend_url(s) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        errs.push(ConfigError::new(&url_path, e));
                        None
                    }
                },
                Some(other) => {
                    errs.push(type_error(&url_path, "a URL string", other));
                    None
                }
            };
            let weight = match field(m, "weight") {
                Some(w) => uint32(w, &join(path, "weight"), 1, MAX_WEIGHT, errs),
                None => Some(DEFAULT_WEIGHT),
            };
            let state = match field(m, "state") {
                None => Some(BackendState::Enabled),
                Some(s) => {
                    let sp = join(path, "state");
                    match s.as_str() {
                        Some("enabled") => Some(BackendState::Enabled),
                        Some("disabled") => Some(BackendState::Disabled),
                        Some("draining") => Some(BackendState::Draining),
                        _ => {
                            errs.push(type_error(
                                &sp,
                                "one of \"enabled\", \"disabled\", \"draining\"",
                                s,
                            ));
                            None
                        }
                    }
                }
            };
            Some(Backend {
                url: url?,
                weight: weight?,
                state: state?,
            })
        }
        other => {
            errs.push(type_error(path, "a URL string or a backend object", other));
            None
        }
    }
}

fn pool_list(v: &Value, path: &str, errs: &mut Vec<ConfigError>) -> Vec<Pool> {
    let Value::Array(items) = v else {
        errs.push(type_error(path, "an array of pools", v));
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(m) = object(item, &p, POOL_KEYS, "a pool object", errs) else {
            continue;
        };
        let name_path = join(&p, "name");
        let name = match field(m, "name") {
            None => {
                errs.push(ConfigError::new(&name_path, "required"));
                None
            }
            Some(Value::String(s)) if valid_pool_name(s) => {
                if let Some(first) = names.get(s) {
                    errs.push(ConfigError::new(
                        &name_path,
                        format!(
                            "duplicate pool name {s:?} (same as {})",
                            index(path, *first)
                        ),
                    ));
                    None
                } else {
                    names.insert(s.clone(), i);
                    Some(s.clone())
                }
            }
            Some(Value::String(s)) => {
                errs.push(ConfigError::new(
                    &name_path,
                    format!("{s:?} is not a valid pool name (1-64 of A-Z a-z 0-9 _ . -)"),
                ));
                None
            }
            Some(other) => {
                errs.push(type_error(&name_path, "a string", other));
                None
            }
        };
        let bp = join(&p, "backends");
        let backends = match field(m, "backends") {
            None => {
                errs.push(ConfigError::new(&bp, "required"));
                None
            }
            Some(Value::Array(a)) if a.is_empty() => {
                errs.push(ConfigError::new(&bp, "a pool needs at least one backend"));
                None
            }
            Some(b) => Some(backend_list(b, &bp, errs)),
        };
        if let (Some(name), Some(backends)) = (name, backends) {
            out.push(Pool { name, backends });
        }
    }
    out
}

fn valid_pool_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn parse_geo(
    v: &Value,
    path: &str,
    pools: &[&str],
    errs: &mut Vec<ConfigError>,
) -> Option<GeoSteering> {
    let m = object(v, path, GEO_KEYS, "a geo_steering object", errs)?;
    let before = errs.len();
    let known = pools.join(", ");
    let check_pool = |p: &str, at: &str, errs: &mut Vec<ConfigError>| {
        if !pools.contains(&p) {
            errs.push(ConfigError::new(
                at,
                format!("unknown pool {p:?}; pools: {known}"),
            ));
        }
    };
    let mut regions = BTreeMap::new();
    let rp = join(path, "regions");
    match field(m, "regions") {
        None => {}
        Some(Value::Object(r)) => {
            for (code, pool) in r {
                let cp = join(&rp, code);
                let upper = code.to_ascii_uppercase();
                if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
                    errs.push(ConfigError::new(
                        &cp,
                        format!("{code:?} is not a region code (ISO country code or one of AF AN AS EU NA OC SA)"),
                    ));
                    continue;
                }
                let Value::String(pool) = pool else {
                    errs.push(type_error(&cp, "a pool name string", pool));
                    continue;
                };
                check_pool(pool, &cp, errs);
                if regions.insert(upper.clone(), pool.clone()).is_some() {
                    errs.push(ConfigError::new(&cp, format!("duplicate region {upper:?}")));
                }
            }
        }
        Some(other) => errs.push(type_error(&rp, "an object of region -> pool", other)),
    }
    let fp = join(path, "fallback_pool");
    let fallback = match field(m, "fallback_pool") {
        None => {
            errs.push(ConfigError::new(&fp, "required"));
            None
        }
        Some(Value::String(s)) => {
            check_pool(s, &fp, errs);
            Some(s.clone())
        }
        Some(other) => {
            errs.push(type_error(&fp, "a pool name string", other));
            None
        }
    };
    if errs.len() != before {
        return None;
    }
    Some(GeoSteering {
        regions,
        fallback_pool: fallback?,
    })
}

fn parse_health(v: Option<&Value>, path: &str, errs: &mut Vec<ConfigError>) -> ActiveHealth {
    let mut h = ActiveHealth::default();
    let Some(m) = v.and_then(|v| object(v, path, HEALTH_KEYS, "an object", errs)) else {
        return h;
    };
    set(&mut h.enabled, bool_field(m, "enabled", path, errs));
    if let Some(p) = field(m, "path") {
        let pp = join(path, "path");
        match p {
            Value::String(s) if s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic()) => {
                h.path = Some(s.clone())
            }
            Value::String(s) => errs.push(ConfigError::new(
                &pp,
                format!("{s:?} must start with '/' and contain no spaces or control characters"),
            )),
            other => errs.push(type_error(&pp, "a path string", other)),
        }
    }
    set(
        &mut h.interval_ms,
        seconds_field(
            m,
            "interval",
            path,
            100,
            86_400_000,
            "0.1..=86400 seconds",
            errs,
        ),
    );
    set(
        &mut h.timeout_ms,
        seconds_field(m, "timeout", path, 1, 60_000, "0.001..=60 seconds", errs),
    );
    set(
        &mut h.consecutive_up,
        uint32_field(m, "consecutive_up", path, 1, 100, errs),
    );
    set(
        &mut h.consecutive_down,
        uint32_field(m, "consecutive_down", path, 1, 100, errs),
    );
    h
}

fn parse_passive(v: Option<&Value>, path: &str, errs: &mut Vec<ConfigError>) -> BreakerConfig {
    let mut b = BreakerConfig::default();
    let Some(m) = v.and_then(|v| object(v, path, PASSIVE_KEYS, "an object", errs)) else {
        return b;
    };
    let cp = join(path, "circuit_breaker");
    let Some(c) =
        field(m, "circuit_breaker").and_then(|c| object(c, &cp, BREAKER_KEYS, "an object", errs))
    else {
        return b;
    };
    set(
        &mut b.failure_threshold,
        uint32_field(c, "failure_threshold", &cp, 1, 1000, errs),
    );
    set(
        &mut b.recovery_timeout_ms,
        uint_field(c, "recovery_timeout_ms", &cp, 100, 86_400_000, errs),
    );
    if let Some(x) = field(c, "error_rate_threshold") {
        let xp = join(&cp, "error_rate_threshold");
        match x.as_f64() {
            Some(f) if f > 0.0 && f <= 100.0 => b.error_rate_threshold = f,
            Some(f) => errs.push(ConfigError::new(
                &xp,
                format!("must be a percentage > 0 and <= 100, found {f}"),
            )),
            None => errs.push(type_error(&xp, "a number > 0 and <= 100", x)),
        }
    }
    set(
        &mut b.min_requests,
        uint32_field(c, "min_requests", &cp, 1, u32::MAX, errs),
    );
    set(
        &mut b.window_ms,
        uint_field(c, "window_ms", &cp, 1000, 3_600_000, errs),
    );
    b
}

fn parse_connection(
    v: Option<&Value>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> ConnectionHandling {
    let mut c = ConnectionHandling::default();
    let Some(m) = v.and_then(|v| object(v, path, CONNECTION_KEYS, "an object", errs)) else {
        return c;
    };
    set(
        &mut c.immediate_failover,
        bool_field(m, "immediate_failover", path, errs),
    );
    set(
        &mut c.max_connection_retries,
        uint32_field(m, "max_connection_retries", path, 0, 10, errs),
    );
    set(
        &mut c.connection_timeout_ms,
        uint_field(m, "connection_timeout_ms", path, 100, 300_000, errs),
    );
    c
}

fn parse_load_balancer(v: &Value, path: &str, errs: &mut Vec<ConfigError>) -> Option<Affinity> {
    let m = object(v, path, LB_KEYS, "an object", errs)?;
    let sp = join(path, "session_affinity");
    let s = object(
        field(m, "session_affinity")?,
        &sp,
        AFFINITY_KEYS,
        "an object",
        errs,
    )?;
    let before = errs.len();
    let tp = join(&sp, "type");
    let kind = match field(s, "type") {
        None => {
            errs.push(ConfigError::new(&tp, "required"));
            None
        }
        Some(t) => match t.as_str() {
            Some("cookie") => Some(AffinityKind::Cookie),
            Some("header") => Some(AffinityKind::Header),
            Some("ip_cookie") => Some(AffinityKind::IpCookie),
            _ => {
                errs.push(type_error(
                    &tp,
                    "one of \"cookie\", \"header\", \"ip_cookie\"",
                    t,
                ));
                None
            }
        },
    };
    let mut cookie_name = DEFAULT_COOKIE_NAME.to_string();
    if let Some(c) = field(s, "cookie_name") {
        match token_str(c, &join(&sp, "cookie_name"), "cookie name", errs) {
            Some(c) => cookie_name = c,
            None => return None,
        }
    }
    let header_name = field(s, "header_name")
        .and_then(|h| token_str(h, &join(&sp, "header_name"), "header name", errs));
    let ttl_s = match field(s, "ttl") {
        Some(t) => uint_field_value(t, &join(&sp, "ttl"), 1, 31_536_000, errs),
        None => Some(DEFAULT_AFFINITY_TTL_S),
    };
    if kind == Some(AffinityKind::Header) && field(s, "header_name").is_none() {
        errs.push(ConfigError::new(
            &join(&sp, "header_name"),
            "required when type is \"header\"",
        ));
    }
    if errs.len() != before {
        return None;
    }
    Some(Affinity {
        kind: kind?,
        cookie_name,
        header_name,
        ttl_s: ttl_s?,
    })
}

fn token_str(v: &Value, path: &str, what: &str, errs: &mut Vec<ConfigError>) -> Option<String> {
    match v {
        Value::String(s) if is_token(s) => Some(s.clone()),
        Value::String(s) => {
            errs.push(ConfigError::new(
                path,
                format!("{s:?} is not a valid {what} (RFC 7230 token)"),
            ));
            None
        }
        other => {
            errs.push(type_error(path, "a string", other));
            None
        }
    }
}

// RFC 7230 tchar; cookie names (RFC 6265) use the same token grammar.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn parse_rate_limit(v: &Value, path: &str, errs: &mut Vec<ConfigError>) -> Option<RateLimit> {
    let m = object(v, path, RATE_KEYS, "an object", errs)?;
    let requests = match field(m, "requests") {
        Some(r) => uint32(r, &join(path, "requests"), 1, u32::MAX, errs),
        None => {
            errs.push(ConfigError::new(&join(path, "requests"), "required"));
            None
        }
    };
    let window_s = match field(m, "window") {
        Some(w) => uint32(w, &join(path, "window"), 1, 86_400, errs),
        None => {
            errs.push(ConfigError::new(&join(path, "window"), "required"));
            None
        }
    };
    Some(RateLimit {
        requests: requests?,
        window_s: window_s?,
    })
}

fn parse_access(v: &Value, path: &str, errs: &mut Vec<ConfigError>) -> Option<AccessLists> {
    let m = object(v, path, ACCESS_KEYS, "an object", errs)?;
    let before = errs.len();
    let list = |key: &str, errs: &mut Vec<ConfigError>| -> Vec<String> {
        let lp = join(path, key);
        match field(m, key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let ip = index(&lp, i);
                    match item {
                        Value::String(s) => match validate_ip_or_cidr(s) {
                            Ok(()) => Some(s.clone()),
                            Err(e) => {
                                errs.push(ConfigError::new(&ip, e));
                                None
                            }
                        },
                        other => {
                            errs.push(type_error(&ip, "an IP or CIDR string", other));
                            None
                        }
                    }
                })
                .collect(),
            Some(other) => {
                errs.push(type_error(&lp, "an array of IP/CIDR strings", other));
                Vec::new()
            }
        }
    };
    let allow = list("allow", errs);
    let deny = list("deny", errs);
    (errs.len() == before).then_some(AccessLists { allow, deny })
}

/// Accepts `a.b.c.d`, `a.b.c.d/0-32`, an IPv6 address (with `::`), or `ipv6/0-128`.
pub fn validate_ip_or_cidr(s: &str) -> Result<(), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let max = if addr.parse::<Ipv4Addr>().is_ok() {
        32
    } else if addr.parse::<Ipv6Addr>().is_ok() {
        128
    } else {
        return Err(format!("{s:?} is not an IP address or CIDR range"));
    };
    if let Some(p) = prefix {
        // Digits only: `u8::from_str` would also accept "+8".
        let ok = !p.is_empty()
            && p.len() <= 3
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= max);
        if !ok {
            return Err(format!("{s:?} has an invalid prefix length (0-{max})"));
        }
    }
    Ok(())
}

// ---- Hostnames and URLs ----

/// Normalised (lowercase, no trailing dot, IPv6 bracketed) hostname or a message.
pub fn validate_hostname(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("hostname must not be empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?} is not a valid hostname: contains spaces, control or non-ASCII characters"
        ));
    }
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(format!("{s:?} is not a valid hostname: unclosed '['"));
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{s:?} is not a valid IPv6 literal"));
        }
        if after.starts_with(':') {
            return Err(format!("{s:?} must not contain a port"));
        }
        if !after.is_empty() {
            return Err(format!("{s:?} is not a valid hostname"));
        }
        return Ok(format!("[{inner}]"));
    }
    if lower.parse::<Ipv6Addr>().is_ok() {
        return Ok(format!("[{lower}]"));
    }
    if let Some((h, p)) = lower.rsplit_once(':') {
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && host_error(h).is_none() {
            return Err(format!("{s:?} must not contain a port"));
        }
        return Err(format!(
            "{s:?} is not a valid hostname: invalid character ':'"
        ));
    }
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    match host_error(h) {
        None => Ok(h.to_string()),
        Some(reason) => Err(format!("{s:?} is not a valid hostname: {reason}")),
    }
}

/// Why a lowercase host (DNS name or IPv4) is invalid, or None.
fn host_error(h: &str) -> Option<String> {
    if h.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    if h.is_empty() {
        return Some("empty".into());
    }
    if h.len() > 253 {
        return Some("longer than 253 characters".into());
    }
    let mut last = "";
    for label in h.split('.') {
        if label.is_empty() {
            return Some("empty label".into());
        }
        if label.len() > 63 {
            return Some(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Some(format!("invalid character {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("label {label:?} starts or ends with '-'"));
        }
        last = label;
    }
    // No TLD is numeric, so "1.2.3.999" is a mistyped IPv4 address, not a name.
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Some("not a valid IPv4 address or DNS name".into());
    }
    None
}

/// Normalised backend URL (`scheme://host[:port][/path]`, lowercase scheme and
/// host, default port and trailing slash dropped) or a message.
pub fn validate_backend_url(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("backend URL must not be empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?} contains spaces, control or non-ASCII characters"
        ));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("{s:?} is not an absolute http(s) URL"));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("{s:?} is not an http(s) URL"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.contains('?') {
        return Err(format!("{s:?} must not contain a query"));
    }
    if path.contains('#') {
        return Err(format!("{s:?} must not contain a fragment"));
    }
    if authority.contains('@') {
        return Err(format!("{s:?} must not contain userinfo"));
    }
    if authority.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(format!("{s:?} has an invalid IPv6 host"));
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{s:?} has an invalid IPv6 host"));
        }
        let port = match after {
            "" => None,
            a => match a.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("{s:?} has an invalid host")),
            },
        };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        let (h, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if h.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let h = h.to_ascii_lowercase();
        if let Some(reason) = host_error(&h) {
            return Err(format!("{s:?} has an invalid host: {reason}"));
        }
        (h, port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n = if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse::<u32>().ok()
            } else {
                None
            };
            match n {
                Some(n) if (1..=65535).contains(&n) => Some(n),
                _ => return Err(format!("{s:?} has an invalid port {p:?} (1-65535)")),
            }
        }
    };
    // The default port is implied; dropping it makes duplicates detectable.
    let port = match (scheme.as_str(), port) {
        ("http", Some(80)) | ("https", Some(443)) => None,
        (_, p) => p,
    };
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!("{s:?} has an invalid percent-escape in the path"));
            }
            i += 3;
            continue;
        }
        let ok = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        if !ok {
            return Err(format!(
                "{s:?} has an invalid character {:?} in the path",
                b as char
            ));
        }
        i += 1;
    }
    let path = path.trim_end_matches('/');
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{scheme}://{host}{port}{path}"))
}

// ---- Small JSON helpers ----

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

// `null` counts as absent so explicit nulls behave like omitted keys.
fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

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

fn type_error(path: &str, expected: &str, found: &Value) -> ConfigError {
    ConfigError::new(
        path,
        format!("expected {expected}, found {}", describe(found)),
    )
}

fn object<'a>(
    v: &'a Value,
    path: &str,
    allowed: &[&str],
    what: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => {
            check_keys(m, path, allowed, errs);
            Some(m)
        }
        other => {
            errs.push(type_error(path, what, other));
            None
        }
    }
}

fn check_keys(m: &Map<String, Value>, path: &str, allowed: &[&str], errs: &mut Vec<ConfigError>) {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            errs.push(ConfigError::new(
                &join(path, k),
                format!("unknown key; allowed: {}", allowed.join(", ")),
            ));
        }
    }
}

fn range_text(min: u64, max: u64) -> String {
    if max == u64::from(u32::MAX) || max == u64::MAX {
        format!(">= {min}")
    } else {
        format!("{min}..={max}")
    }
}

fn uint_field_value(
    v: &Value,
    path: &str,
    min: u64,
    max: u64,
    errs: &mut Vec<ConfigError>,
) -> Option<u64> {
    let allowed = range_text(min, max);
    // Integral floats such as 60.0 are accepted: JSON does not distinguish them.
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.0e15)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            errs.push(ConfigError::new(
                path,
                format!("must be an integer {allowed}, found {n}"),
            ));
            None
        }
        None => {
            errs.push(type_error(path, &format!("an integer {allowed}"), v));
            None
        }
    }
}

fn uint32(v: &Value, path: &str, min: u32, max: u32, errs: &mut Vec<ConfigError>) -> Option<u32> {
    uint_field_value(v, path, u64::from(min), u64::from(max), errs)
        .and_then(|n| u32::try_from(n).ok())
}

fn uint_field(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    min: u64,
    max: u64,
    errs: &mut Vec<ConfigError>,
) -> Option<u64> {
    field(m, key).and_then(|v| uint_field_value(v, &join(path, key), min, max, errs))
}

fn uint32_field(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    min: u32,
    max: u32,
    errs: &mut Vec<ConfigError>,
) -> Option<u32> {
    field(m, key).and_then(|v| uint32(v, &join(path, key), min, max, errs))
}

fn bool_field(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<bool> {
    match field(m, key)? {
        Value::Bool(b) => Some(*b),
        other => {
            errs.push(type_error(&join(path, key), "a boolean", other));
            None
        }
    }
}

/// Seconds (fractional allowed) stored as whole milliseconds within `min_ms..=max_ms`.
fn seconds_field(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    min_ms: u64,
    max_ms: u64,
    allowed: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<u64> {
    let v = field(m, key)?;
    let p = join(path, key);
    let Some(secs) = v.as_f64() else {
        errs.push(type_error(
            &p,
            &format!("a number of seconds in {allowed}"),
            v,
        ));
        return None;
    };
    // Range-check before converting so huge values cannot saturate into range.
    if secs.is_finite() && secs > 0.0 && secs <= 1.0e9 {
        let ms = (secs * 1000.0).round() as u64;
        if (min_ms..=max_ms).contains(&ms) {
            return Some(ms);
        }
    }
    errs.push(ConfigError::new(
        &p,
        format!("must be in {allowed}, found {secs}"),
    ));
    None
}

#[cfg(test)]
mod partial_tests {
    use super::*;

    #[test]
    fn one_bad_service_leaves_the_others_valid() {
        let text = r#"{"services": [
            {"hostname": "a.test", "backends": ["http://a"]},
            {"hostname": "b.test", "backends": ["ftp://x"]},
            {"hostname": "c.test", "backends": ["http://c"]},
            {"hostname": "c.test", "backends": ["http://c2"]}
        ]}"#;
        let (ok, errs) = parse_default_backends_partial(text);
        let hosts: Vec<&str> = ok.iter().map(|s| s.hostname.as_str()).collect();
        assert_eq!(hosts, ["a.test"], "b has an error, c is duplicated");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(parse_default_backends(text).is_err());
    }

    #[test]
    fn a_bad_default_block_invalidates_every_service() {
        let text =
            r#"{"retries": "x", "services": [{"hostname": "a.test", "backends": ["http://a"]}]}"#;
        let (ok, errs) = parse_default_backends_partial(text);
        assert!(ok.is_empty());
        assert_eq!(errs[0].path, "retries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn errs_of(text: &str) -> Vec<ConfigError> {
        parse_default_backends(text).expect_err("expected errors")
    }

    fn has(errs: &[ConfigError], path: &str, needle: &str) -> bool {
        errs.iter()
            .any(|e| e.path == path && e.message.contains(needle))
    }

    #[track_caller]
    fn assert_err(errs: &[ConfigError], path: &str, needle: &str) {
        assert!(
            has(errs, path, needle),
            "no error at {path:?} containing {needle:?} in {errs:#?}"
        );
    }

    const FULL: &str = r#"{
      "hostname": "API.Example.com.",
      "backends": ["https://a.example.com", {"url": "https://b.example.com/base", "weight": 3, "state": "draining"}],
      "activeHealthChecks": {"enabled": true, "path": "/health", "interval": 0.5, "timeout": 5, "consecutive_up": 3, "consecutive_down": 2},
      "passiveHealthChecks": {"circuit_breaker": {"failure_threshold": 4, "recovery_timeout_ms": 30000, "error_rate_threshold": 25.5, "min_requests": 10, "window_ms": 60000}},
      "connection_error_handling": {"immediate_failover": false, "max_connection_retries": 2, "connection_timeout_ms": 10000},
      "retries": 3,
      "load_balancer": {"session_affinity": {"type": "header", "cookie_name": "lb_session", "header_name": "X-User", "ttl": 600}},
      "pools": [{"name": "eu", "backends": ["https://eu1.example.com"]}, {"name": "us", "backends": ["https://us1.example.com"]}],
      "geo_steering": {"regions": {"de": "eu", "EU": "eu", "NA": "us"}, "fallback_pool": "us"},
      "rate_limit": {"requests": 100, "window": 60},
      "access_control": {"allow": ["10.0.0.0/8", "::1", "2001:db8::/32"], "deny": ["1.2.3.4"]}
    }"#;

    #[test]
    fn single_object_full_form_parses() {
        let s = parse_default_backends(FULL).expect("valid");
        assert_eq!(s.len(), 1);
        let c = &s[0];
        assert_eq!(c.hostname, "api.example.com");
        assert_eq!(c.backends[0].url, "https://a.example.com");
        assert_eq!(c.backends[0].weight, 1);
        assert_eq!(c.backends[1].weight, 3);
        assert_eq!(c.backends[1].state, BackendState::Draining);
        assert_eq!(c.health.interval_ms, 500);
        assert_eq!(c.health.timeout_ms, 5000);
        assert_eq!(c.health.path.as_deref(), Some("/health"));
        assert_eq!(c.breaker.failure_threshold, 4);
        assert_eq!(c.breaker.error_rate_threshold, 25.5);
        assert!(!c.connection.immediate_failover);
        assert_eq!(c.retries, 3);
        let a = c.affinity.as_ref().expect("affinity");
        assert_eq!(a.kind, AffinityKind::Header);
        assert_eq!(a.header_name.as_deref(), Some("X-User"));
        assert_eq!(a.ttl_s, 600);
        let g = c.geo.as_ref().expect("geo");
        assert_eq!(g.regions.get("DE").map(String::as_str), Some("eu"));
        assert_eq!(g.fallback_pool, "us");
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                requests: 100,
                window_s: 60
            })
        );
        assert_eq!(
            c.access.as_ref().map(|a| a.deny.clone()),
            Some(vec!["1.2.3.4".to_string()])
        );
        let urls: Vec<&str> = c.all_backends().iter().map(|b| b.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://a.example.com",
                "https://b.example.com/base",
                "https://eu1.example.com",
                "https://us1.example.com"
            ]
        );
    }

    #[test]
    fn minimal_service_gets_defaults() {
        let s = parse_default_backends(r#"{"hostname": "a.com", "backends": ["http://x"]}"#)
            .expect("valid");
        assert_eq!(s[0].health, ActiveHealth::default());
        assert_eq!(s[0].breaker, BreakerConfig::default());
        assert_eq!(s[0].connection, ConnectionHandling::default());
        assert_eq!(s[0].retries, DEFAULT_RETRIES);
        assert_eq!(s[0].affinity, None);
    }

    #[test]
    fn bare_array_form_parses_with_index_paths() {
        let s = parse_default_backends(r#"[{"hostname": "a.com", "backends": ["http://x"]}, {"hostname": "b.com", "backends": ["http://y"]}]"#)
            .expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].hostname, "b.com");
        let e = errs_of(
            r#"[{"hostname": "a.com", "backends": ["http://x"]}, {"backends": ["http://y"]}]"#,
        );
        assert_err(&e, "[1].hostname", "required");
    }

    #[test]
    fn services_form_merges_top_level_defaults() {
        let text = r#"{
          "services": [
            {"hostname": "a.com", "backends": ["http://x"], "activeHealthChecks": {"path": "/own"}},
            {"hostname": "b.com", "backends": ["http://y"], "retries": 0}
          ],
          "activeHealthChecks": {"interval": 10, "path": "/top"},
          "retries": 4,
          "load_balancer": {"session_affinity": {"type": "cookie", "ttl": 60}},
          "rate_limit": {"requests": 5, "window": 1}
        }"#;
        let s = parse_default_backends(text).expect("valid");
        assert_eq!(s[0].health.path.as_deref(), Some("/own"));
        assert_eq!(
            s[0].health.interval_ms, 10_000,
            "top-level interval kept by key merge"
        );
        assert_eq!(s[1].health.path.as_deref(), Some("/top"));
        assert_eq!(s[0].retries, 4);
        assert_eq!(s[1].retries, 0);
        assert_eq!(s[1].affinity.as_ref().map(|a| a.ttl_s), Some(60));
        assert_eq!(
            s[1].affinity.as_ref().map(|a| a.cookie_name.as_str()),
            Some(DEFAULT_COOKIE_NAME)
        );
        assert_eq!(
            s[0].rate_limit,
            Some(RateLimit {
                requests: 5,
                window_s: 1
            })
        );
    }

    #[test]
    fn bad_top_level_default_reported_once_at_its_own_path() {
        let e = errs_of(
            r#"{"services": [{"hostname": "a.com", "backends": ["http://x"]}, {"hostname": "b.com", "backends": ["http://y"]}], "retries": 11, "bogus": 1}"#,
        );
        assert_eq!(
            e.iter().filter(|e| e.path.ends_with("retries")).count(),
            1,
            "{e:#?}"
        );
        assert_err(&e, "retries", "0..=10");
        assert_err(
            &e,
            "bogus",
            "unknown key; allowed: services, activeHealthChecks",
        );
    }

    #[test]
    fn url_rejections() {
        let cases = [
            ("ftp://x", "\"ftp://x\" is not an http(s) URL"),
            (
                "https://u:p@h",
                "\"https://u:p@h\" must not contain userinfo",
            ),
            ("/relative/path", "is not an absolute http(s) URL"),
            ("a.example.com", "is not an absolute http(s) URL"),
            ("https://a.com:0", "invalid port"),
            ("https://a.com:65536", "invalid port"),
            ("https://a.com:8x", "invalid port"),
            ("https://a.com/x?y=1", "must not contain a query"),
            ("https://a.com/x#f", "must not contain a fragment"),
            ("https://a .com", "contains spaces"),
            ("https://", "has no host"),
            ("https://bad_host.com", "invalid host"),
            ("https://-a.com", "invalid host"),
            ("https://[zz::1]/", "invalid IPv6"),
            ("https://a.com/%zz", "percent-escape"),
            ("https://a.com/<x>", "invalid character"),
        ];
        for (url, msg) in cases {
            let err = validate_backend_url(url).expect_err(url);
            assert!(err.contains(msg), "{url}: {err}");
        }
    }

    #[test]
    fn url_normalisation() {
        let ok = [
            ("https://a.com/", "https://a.com"),
            ("http://a/base/", "http://a/base"),
            ("HTTPS://A.Example.COM/Path/", "https://a.example.com/Path"),
            ("https://a.com:443", "https://a.com"),
            ("http://a.com:8080/x", "http://a.com:8080/x"),
            ("http://10.0.0.1:81", "http://10.0.0.1:81"),
            ("http://[2001:DB8::1]:8080/", "http://[2001:db8::1]:8080"),
            ("https://localhost", "https://localhost"),
        ];
        for (input, want) in ok {
            assert_eq!(validate_backend_url(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn hostname_validation() {
        assert_eq!(
            validate_hostname("API.Example.com.").as_deref(),
            Ok("api.example.com")
        );
        assert_eq!(validate_hostname("localhost").as_deref(), Ok("localhost"));
        assert_eq!(validate_hostname("10.1.2.3").as_deref(), Ok("10.1.2.3"));
        assert_eq!(validate_hostname("::1").as_deref(), Ok("[::1]"));
        assert!(validate_hostname("a.com:8080")
            .expect_err("port")
            .contains("must not contain a port"));
        assert!(validate_hostname("[::1]:80")
            .expect_err("port")
            .contains("must not contain a port"));
        for bad in [
            "",
            "a..com",
            "-a.com",
            "a-.com",
            "a_b.com",
            "1.2.3.999",
            "a com",
            &"a".repeat(64),
            &"a.".repeat(130),
        ] {
            assert!(
                validate_hostname(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn service_level_rejections_have_paths() {
        let e = errs_of(
            r#"{"services": [
            {"hostname": "a.com", "backends": ["https://x"]},
            {"hostname": "b.com", "backends": ["ftp://x", {"url": "https://y", "weight": "3"}, "https://Y/", "https://q?x"]},
            {"hostname": "A.com", "backends": []},
            {"hostname": "bad_host", "backends": ["http://z"], "colour": "red"}
        ]}"#,
        );
        assert_err(
            &e,
            "services[1].backends[0]",
            "\"ftp://x\" is not an http(s) URL",
        );
        assert_err(
            &e,
            "services[1].backends[1].weight",
            "expected an integer 1..=1000, found string \"3\"",
        );
        assert_err(&e, "services[1].backends[3]", "must not contain a query");
        assert_err(
            &e,
            "services[2].hostname",
            "duplicate hostname \"a.com\" (same as services[0].hostname)",
        );
        assert_err(
            &e,
            "services[2].backends",
            "at least one backend is required",
        );
        assert_err(&e, "services[3].hostname", "not a valid hostname");
        assert_err(
            &e,
            "services[3].colour",
            "unknown key; allowed: hostname, backends, activeHealthChecks",
        );
        // "https://Y/" normalises to a duplicate of services[1].backends[1] even though that entry's weight failed.
        assert!(
            !has(&e, "services[1].backends[2]", "duplicate"),
            "weight error drops the entry; {e:#?}"
        );
    }

    #[test]
    fn duplicate_backend_names_second_index() {
        let e = errs_of(
            r#"{"hostname": "a.com", "backends": ["https://x.com", "http://y", "HTTPS://X.com/"]}"#,
        );
        assert_err(
            &e,
            "backends[2]",
            "duplicate backend \"https://x.com\" (same as backends[0])",
        );
        // The same URL in a pool and at top level is fine: different lists.
        let ok = parse_default_backends(r#"{"hostname": "a.com", "backends": ["https://x.com"], "pools": [{"name": "p", "backends": ["https://x.com"]}]}"#)
            .expect("valid");
        assert_eq!(ok[0].all_backends().len(), 1);
    }

    #[test]
    fn wrong_types_name_found_and_allowed() {
        let e = errs_of(
            r#"{"hostname": "a.com", "backends": ["http://x"], "retries": 1.5,
            "activeHealthChecks": {"consecutive_up": -1, "enabled": "yes", "interval": "60", "timeout": 0, "path": "health"},
            "connection_error_handling": {"max_connection_retries": true, "connection_timeout_ms": 99},
            "passiveHealthChecks": {"circuit_breaker": {"error_rate_threshold": 0, "window_ms": 999}},
            "rate_limit": {"requests": 0}}"#,
        );
        assert_err(
            &e,
            "retries",
            "expected an integer 0..=10, found number 1.5",
        );
        assert_err(&e, "activeHealthChecks.consecutive_up", "found number -1");
        assert_err(
            &e,
            "activeHealthChecks.enabled",
            "expected a boolean, found string \"yes\"",
        );
        assert_err(&e, "activeHealthChecks.interval", "found string \"60\"");
        assert_err(
            &e,
            "activeHealthChecks.timeout",
            "must be in 0.001..=60 seconds",
        );
        assert_err(&e, "activeHealthChecks.path", "must start with '/'");
        assert_err(
            &e,
            "connection_error_handling.max_connection_retries",
            "found boolean true",
        );
        assert_err(
            &e,
            "connection_error_handling.connection_timeout_ms",
            "100..=300000, found 99",
        );
        assert_err(
            &e,
            "passiveHealthChecks.circuit_breaker.error_rate_threshold",
            "> 0 and <= 100",
        );
        assert_err(
            &e,
            "passiveHealthChecks.circuit_breaker.window_ms",
            "1000..=3600000",
        );
        assert_err(&e, "rate_limit.requests", ">= 1, found 0");
        assert_err(&e, "rate_limit.window", "required");
        assert!(e.len() >= 12, "all errors collected: {e:#?}");
    }

    #[test]
    fn geo_and_pool_rejections() {
        let e = errs_of(
            r#"{"hostname": "a.com",
            "pools": [{"name": "eu", "backends": ["https://e"]}, {"name": "eu", "backends": []}],
            "geo_steering": {"regions": {"DE": "eu", "NA": "us", "XYZ": "eu"}, "fallback_pool": "asia"}}"#,
        );
        assert_err(
            &e,
            "geo_steering.regions.NA",
            "unknown pool \"us\"; pools: eu",
        );
        assert_err(&e, "geo_steering.fallback_pool", "unknown pool \"asia\"");
        assert_err(&e, "geo_steering.regions.XYZ", "not a region code");
        assert_err(&e, "pools[1].name", "duplicate pool name \"eu\"");
        assert_err(&e, "pools[1].backends", "at least one backend");
        let e = errs_of(
            r#"{"hostname": "a.com", "backends": ["http://x"], "geo_steering": {"fallback_pool": "x"}}"#,
        );
        assert_err(&e, "geo_steering", "requires pools");
    }

    #[test]
    fn pools_only_service_has_empty_backends() {
        let s = parse_default_backends(
            r#"{"hostname": "a.com", "pools": [{"name": "p", "backends": ["http://x/"]}]}"#,
        )
        .expect("valid");
        assert!(s[0].backends.is_empty());
        assert_eq!(s[0].all_backends()[0].url, "http://x");
    }

    #[test]
    fn affinity_and_access_rejections() {
        let e = errs_of(
            r#"{"hostname": "a.com", "backends": ["http://x"],
            "load_balancer": {"session_affinity": {"type": "header", "ttl": 0}, "algo": "rr"},
            "access_control": {"allow": ["10.0.0.0/33", "1.2.3", "::1/129", "fe80::1/64", "10.0.0.0/+8"], "deny": [5]}}"#,
        );
        assert_err(
            &e,
            "load_balancer.algo",
            "unknown key; allowed: session_affinity",
        );
        assert_err(
            &e,
            "load_balancer.session_affinity.header_name",
            "required when type is \"header\"",
        );
        assert_err(&e, "load_balancer.session_affinity.ttl", "1..=31536000");
        assert_err(&e, "access_control.allow[0]", "prefix length");
        assert_err(&e, "access_control.allow[1]", "not an IP address");
        assert_err(&e, "access_control.allow[2]", "prefix length");
        assert!(!e.iter().any(|e| e.path == "access_control.allow[3]"));
        assert_err(&e, "access_control.allow[4]", "prefix length");
        assert_err(&e, "access_control.deny[0]", "found number 5");
        let e = errs_of(
            r#"{"hostname": "a.com", "backends": ["http://x"], "load_balancer": {"session_affinity": {"cookie_name": "a b"}}}"#,
        );
        assert_err(&e, "load_balancer.session_affinity.type", "required");
        assert_err(
            &e,
            "load_balancer.session_affinity.cookie_name",
            "not a valid cookie name",
        );
    }

    #[test]
    fn malformed_json_and_wrong_top_level() {
        let e = errs_of("{\"hostname\": \"a.com\",\n \"backends\": [}");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "");
        assert!(e[0].message.contains("line 2"), "{}", e[0].message);
        let e = errs_of("42");
        assert_err(&e, "", "found number 42");
        let e = errs_of("[]");
        assert_err(&e, "", "at least one service");
        assert_eq!(e[0].to_string(), "at least one service is required");
        assert_eq!(ConfigError::new("a.b", "bad").to_string(), "a.b: bad");
    }

    #[test]
    fn backend_mut_finds_normalised_url_in_pools() {
        let mut s = parse_default_backends(FULL).expect("valid").remove(0);
        s.backend_mut("HTTPS://eu1.example.com/")
            .expect("found")
            .state = BackendState::Disabled;
        assert_eq!(s.pools[0].backends[0].state, BackendState::Disabled);
        assert!(s.backend_mut("https://nope.example.com").is_none());
        s.backend_mut("https://a.example.com")
            .expect("found")
            .weight = 9;
        assert_eq!(s.backends[0].weight, 9);
    }

    #[test]
    fn for_host_with_plain_body() {
        let body = serde_json::json!({"backends": ["https://x"]});
        let s = parse_service_for_host(&body, "API.example.com").expect("valid");
        assert_eq!(s.hostname, "api.example.com");
        let body = serde_json::json!({"hostname": "Api.Example.com.", "backends": ["https://x"]});
        assert!(parse_service_for_host(&body, "api.example.com").is_ok());
        let body = serde_json::json!({"hostname": "other.com", "backends": ["ftp://x"]});
        let e = parse_service_for_host(&body, "api.example.com").expect_err("mismatch");
        assert_err(
            &e,
            "hostname",
            "\"other.com\" does not match the request hostname \"api.example.com\"",
        );
        assert_err(&e, "backends[0]", "not an http(s) URL");
    }

    #[test]
    fn for_host_with_vars_body() {
        let inner = r#"{"services": [{"hostname": "a.com", "backends": ["http://x"]}, {"hostname": "b.com", "backends": ["http://y"]}]}"#;
        let body = serde_json::json!({"vars": {"DEFAULT_BACKENDS": inner, "OTHER": "ignored"}});
        let s = parse_service_for_host(&body, "b.com").expect("valid");
        assert_eq!(s.backends[0].url, "http://y");
        let e = parse_service_for_host(&body, "c.com").expect_err("no match");
        assert_err(
            &e,
            "vars.DEFAULT_BACKENDS",
            "no service for hostname \"c.com\" (found: a.com, b.com)",
        );
        let body = serde_json::json!({"vars": {"DEFAULT_BACKENDS": r#"[{"hostname": "a.com", "backends": ["ftp://x"]}]"#}});
        let e = parse_service_for_host(&body, "a.com").expect_err("bad inner");
        assert_err(
            &e,
            "vars.DEFAULT_BACKENDS[0].backends[0]",
            "not an http(s) URL",
        );
    }

    #[test]
    fn to_value_round_trips_full_config_through_text() {
        let cfg = parse_default_backends(FULL).expect("valid").remove(0);
        let text = serde_json::to_string(&cfg.to_value()).expect("serialise");
        let again = parse_default_backends(&text).expect("canonical form parses");
        assert_eq!(again, vec![cfg.clone()]);
        assert_eq!(parse_service(&cfg.to_value(), ""), Ok(cfg));
    }

    fn backend_strategy(i: usize) -> impl Strategy<Value = Backend> {
        (1u32..=MAX_WEIGHT, 0..3u8, prop::option::of(0u16..100)).prop_map(
            move |(weight, st, path)| Backend {
                url: match path {
                    Some(p) => format!("https://b{i}.example.com/p{p}"),
                    None => format!("http://10.0.0.{i}:8080"),
                },
                weight,
                state: [
                    BackendState::Enabled,
                    BackendState::Disabled,
                    BackendState::Draining,
                ][usize::from(st)],
            },
        )
    }

    fn backends_strategy(min: usize, offset: usize) -> impl Strategy<Value = Vec<Backend>> {
        (min..4usize).prop_flat_map(move |n| {
            (0..n)
                .map(|i| backend_strategy(i + offset))
                .collect::<Vec<_>>()
        })
    }

    prop_compose! {
        fn config_strategy()(
            host in 0u32..1000,
            backends in backends_strategy(0, 0),
            pools in prop::collection::vec(backends_strategy(1, 50), 1..3),
            use_pools in any::<bool>(),
            health in (any::<bool>(), prop::option::of(0u8..10), 100u64..=86_400_000, 1u64..=60_000, 1u32..=100, 1u32..=100),
            breaker in (1u32..=1000, 100u64..=86_400_000, 0.001f64..=100.0, 1u32..=u32::MAX, 1000u64..=3_600_000),
            conn in (any::<bool>(), 0u32..=10, 100u64..=300_000),
            retries in 0u32..=10,
            affinity in prop::option::of((0..3u8, 1u64..=31_536_000, any::<bool>())),
            geo in any::<bool>(),
            rate in prop::option::of((1u32..=u32::MAX, 1u32..=86_400)),
            access in prop::option::of(any::<bool>()),
        ) -> ServiceConfig {
            let pools: Vec<Pool> = if use_pools || backends.is_empty() {
                pools.into_iter().enumerate().map(|(i, b)| Pool { name: format!("pool-{i}"), backends: b }).collect()
            } else {
                Vec::new()
            };
            let geo = (geo && !pools.is_empty()).then(|| GeoSteering {
                regions: [("DE".to_string(), pools[0].name.clone()), ("NA".to_string(), pools[pools.len() - 1].name.clone())].into(),
                fallback_pool: pools[0].name.clone(),
            });
            ServiceConfig {
                hostname: format!("h{host}.example.com"),
                backends,
                health: ActiveHealth { enabled: health.0, path: health.1.map(|p| format!("/hc{p}")), interval_ms: health.2, timeout_ms: health.3, consecutive_up: health.4, consecutive_down: health.5 },
                breaker: BreakerConfig { failure_threshold: breaker.0, recovery_timeout_ms: breaker.1, error_rate_threshold: breaker.2, min_requests: breaker.3, window_ms: breaker.4 },
                connection: ConnectionHandling { immediate_failover: conn.0, max_connection_retries: conn.1, connection_timeout_ms: conn.2 },
                retries,
                affinity: affinity.map(|(k, ttl_s, hdr)| {
                    let kind = [AffinityKind::Cookie, AffinityKind::Header, AffinityKind::IpCookie][usize::from(k)];
                    Affinity {
                        kind,
                        cookie_name: "sid".into(),
                        header_name: (hdr || kind == AffinityKind::Header).then(|| "X-Session".to_string()),
                        ttl_s,
                    }
                }),
                pools,
                geo,
                rate_limit: rate.map(|(requests, window_s)| RateLimit { requests, window_s }),
                access: access.map(|v6| AccessLists {
                    allow: if v6 { vec!["2001:db8::/32".into(), "::1".into()] } else { vec!["10.0.0.0/8".into()] },
                    deny: vec!["1.2.3.4".into()],
                }),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn to_value_round_trips(cfg in config_strategy()) {
            prop_assert_eq!(parse_service(&cfg.to_value(), ""), Ok(cfg));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = parse_default_backends(&text);
            let _ = validate_backend_url(&text);
            let _ = validate_hostname(&text);
        }
    }
}
