//! The input forms: one service, DEFAULT_BACKENDS (default blocks merged into each service) and the REST API body.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

use super::values::{describe, int};
use super::*;

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
    "change_safety",
];

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
        "change_safety" => at::<ChangeSafety>(name, v),
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
