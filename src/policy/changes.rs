//! Small operator edits to a service config (add, remove, reweight, enable, disable, drain a backend), validated exactly like a full config.

use serde_json::{json, Value};

use crate::policy::config::{
    parse_service, validate_backend_url, BackendState, ConfigError, ServiceConfig,
};

fn err(path: &str, message: impl Into<String>) -> Vec<ConfigError> {
    vec![ConfigError {
        path: path.to_string(),
        message: message.into(),
    }]
}

/// Re-validates an edited config through the same parser as a full config, so an edit can
/// never store what a full config write would reject (no backends, duplicates, ...).
fn revalidate(cfg: &ServiceConfig) -> Result<ServiceConfig, Vec<ConfigError>> {
    parse_service(&cfg.to_value(), "")
}

/// Adds a backend given as a URL string or `{"url", "weight", "state"}`.
pub fn add_backend(cfg: &ServiceConfig, body: &Value) -> Result<ServiceConfig, Vec<ConfigError>> {
    // Validate the new entry on its own first, so errors name the body's fields, not an index.
    let probe = json!({"hostname": cfg.hostname, "backends": [body]});
    let parsed = parse_service(&probe, "").map_err(|errs| {
        errs.into_iter()
            .map(|e| ConfigError {
                path: e
                    .path
                    .strip_prefix("backends[0]")
                    .unwrap_or(&e.path)
                    .trim_start_matches('.')
                    .to_string(),
                message: e.message,
            })
            .collect::<Vec<_>>()
    })?;
    let Some(new) = parsed.backends.into_iter().next() else {
        return Err(err("", "a backend is required"));
    };
    if cfg.all_backends().iter().any(|b| b.url == new.url) {
        return Err(err(
            "url",
            format!("{:?} is already a backend of {}", new.url, cfg.hostname),
        ));
    }
    let mut next = cfg.clone();
    next.backends.push(new);
    revalidate(&next)
}

/// Removes a backend (from the top-level list and every pool).
pub fn remove_backend(cfg: &ServiceConfig, url: &str) -> Result<ServiceConfig, Vec<ConfigError>> {
    let wanted = validate_backend_url(url).map_err(|m| err("url", m))?;
    let mut next = cfg.clone();
    let before = next.all_backends().len();
    next.backends.retain(|b| b.url != wanted);
    for pool in &mut next.pools {
        pool.backends.retain(|b| b.url != wanted);
    }
    if next.all_backends().len() == before {
        return Err(err(
            "url",
            format!("{wanted:?} is not a backend of {}", cfg.hostname),
        ));
    }
    revalidate(&next)
}

/// Changes a backend's weight and/or state: `{"url": "...", "weight": 3, "state": "draining"}`.
pub fn update_backend(
    cfg: &ServiceConfig,
    body: &Value,
) -> Result<ServiceConfig, Vec<ConfigError>> {
    let Some(obj) = body.as_object() else {
        return Err(err(
            "",
            "expected an object {\"url\", \"weight\", \"state\"}",
        ));
    };
    let mut errors = Vec::new();
    for key in obj.keys() {
        if !["url", "weight", "state"].contains(&key.as_str()) {
            errors.push(ConfigError {
                path: key.clone(),
                message: "unknown key; allowed: url, weight, state".into(),
            });
        }
    }
    let url = match obj.get("url").and_then(Value::as_str) {
        Some(u) => u,
        None => return Err(err("url", "required: the URL of the backend to change")),
    };
    let weight = match obj.get("weight") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(w) if (1..=1000).contains(&w) => Some(w as u32),
            _ => {
                errors.push(ConfigError {
                    path: "weight".into(),
                    message: format!("{v} is not allowed; expected an integer 1..=1000"),
                });
                None
            }
        },
    };
    let state = match obj.get("state") {
        None => None,
        Some(v) => {
            match v.as_str() {
                Some("enabled") => Some(BackendState::Enabled),
                Some("disabled") => Some(BackendState::Disabled),
                Some("draining") => Some(BackendState::Draining),
                _ => {
                    errors.push(ConfigError {
                    path: "state".into(),
                    message: format!("{v} is not allowed; expected \"enabled\", \"disabled\" or \"draining\""),
                });
                    None
                }
            }
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    if weight.is_none() && state.is_none() {
        return Err(err(
            "",
            "nothing to change: give \"weight\" and/or \"state\"",
        ));
    }
    let mut next = cfg.clone();
    let wanted = validate_backend_url(url).map_err(|m| err("url", m))?;
    let mut found = false;
    for b in next
        .backends
        .iter_mut()
        .chain(next.pools.iter_mut().flat_map(|p| p.backends.iter_mut()))
    {
        if b.url == wanted {
            found = true;
            if let Some(w) = weight {
                b.weight = w;
            }
            if let Some(s) = state {
                b.state = s;
            }
        }
    }
    if !found {
        return Err(err(
            "url",
            format!("{wanted:?} is not a backend of {}", cfg.hostname),
        ));
    }
    revalidate(&next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServiceConfig {
        parse_service(
            &json!({"hostname": "s.test", "backends": ["http://a", "http://b"]}),
            "",
        )
        .unwrap()
    }

    #[test]
    fn add_validates_the_body_and_rejects_duplicates() {
        let next = add_backend(&cfg(), &json!({"url": "http://c/", "weight": 4})).unwrap();
        assert_eq!(next.backends[2].url, "http://c");
        assert_eq!(next.backends[2].weight, 4);
        let e = add_backend(&cfg(), &json!("ftp://x")).unwrap_err();
        assert!(e[0].message.contains("ftp://x"), "{e:?}");
        let e = add_backend(&cfg(), &json!({"url": "http://c", "weight": "3"})).unwrap_err();
        assert_eq!(e[0].path, "weight");
        let e = add_backend(&cfg(), &json!("http://a/")).unwrap_err();
        assert_eq!(e[0].path, "url");
    }

    #[test]
    fn remove_keeps_at_least_one_backend() {
        let next = remove_backend(&cfg(), "http://a").unwrap();
        assert_eq!(next.backends.len(), 1);
        let e = remove_backend(&next, "http://b").unwrap_err();
        assert!(e[0].message.contains("at least one backend"), "{e:?}");
        assert_eq!(
            remove_backend(&cfg(), "http://zzz").unwrap_err()[0].path,
            "url"
        );
    }

    #[test]
    fn update_changes_weight_and_state_and_names_bad_fields() {
        let next = update_backend(
            &cfg(),
            &json!({"url": "http://b", "weight": 5, "state": "draining"}),
        )
        .unwrap();
        assert_eq!(
            (next.backends[1].weight, next.backends[1].state),
            (5, BackendState::Draining)
        );
        let e = update_backend(
            &cfg(),
            &json!({"url": "http://b", "weight": 0, "state": "off", "x": 1}),
        )
        .unwrap_err();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["x", "weight", "state"]);
        assert!(update_backend(&cfg(), &json!({"url": "http://b"})).is_err());
    }
}
