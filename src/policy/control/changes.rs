//! Small operator edits to a service config (add, remove, reweight, enable, disable, drain a backend), typed and validated exactly like a full config.

use serde::Deserialize;
use serde_json::Value;

use crate::policy::control::config::{
    self, from_value, parse_service, Backend, BackendState, BackendUrl, ConfigError, Deployment,
    ServiceConfig,
};

fn err(path: &str, message: impl Into<String>) -> Vec<ConfigError> {
    vec![ConfigError::new(path, message)]
}

/// Re-validates an edited config through the same parser as a full config, so an edit can
/// never store what a full config write would reject (no backends, duplicates, ...).
fn revalidate(cfg: &ServiceConfig, ctx: &Deployment) -> Result<ServiceConfig, Vec<ConfigError>> {
    parse_service(&cfg.to_value(), "", ctx)
}

/// Adds a backend given as a URL string or `{"url", "weight", "state"}`.
pub fn add_backend(
    cfg: &ServiceConfig,
    body: &Value,
    ctx: &Deployment,
) -> Result<ServiceConfig, Vec<ConfigError>> {
    let new: Backend = from_value(body)?;
    if cfg.all_backends().iter().any(|b| b.url == new.url) {
        return Err(err(
            "url",
            format!(
                "{:?} is already a backend of {}",
                new.url.as_str(),
                cfg.hostname
            ),
        ));
    }
    let mut next = cfg.clone();
    next.backends.push(new);
    revalidate(&next, ctx)
}

/// Removes a backend (from the top-level list and every pool).
pub fn remove_backend(
    cfg: &ServiceConfig,
    url: &str,
    ctx: &Deployment,
) -> Result<ServiceConfig, Vec<ConfigError>> {
    let wanted = BackendUrl::parse(url).map_err(|m| err("url", m))?;
    let mut next = cfg.clone();
    let before = next.all_backends().len();
    next.backends.retain(|b| b.url != wanted);
    for pool in &mut next.pools {
        pool.backends.retain(|b| b.url != wanted);
    }
    if next.all_backends().len() == before {
        return Err(err(
            "url",
            format!("{:?} is not a backend of {}", wanted.as_str(), cfg.hostname),
        ));
    }
    revalidate(&next, ctx)
}

/// `{"url": "...", "weight": 3, "state": "draining"}`: which backend, and what changes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendPatch {
    url: BackendUrl,
    #[serde(default)]
    weight: Option<Weight>,
    #[serde(default)]
    state: Option<BackendState>,
}

/// A weight, checked by the backend object's own rule.
#[derive(Deserialize)]
#[serde(transparent)]
struct Weight(#[serde(deserialize_with = "config::weight")] u32);

/// Changes a backend's weight and/or state.
pub fn update_backend(
    cfg: &ServiceConfig,
    body: &Value,
    ctx: &Deployment,
) -> Result<ServiceConfig, Vec<ConfigError>> {
    let patch: BackendPatch = from_value(body)?;
    if patch.weight.is_none() && patch.state.is_none() {
        return Err(err(
            "",
            "nothing to change: give \"weight\" and/or \"state\"",
        ));
    }
    let mut next = cfg.clone();
    let mut found = false;
    for b in next.backends_mut(&patch.url) {
        found = true;
        if let Some(Weight(w)) = patch.weight {
            b.weight = w;
        }
        if let Some(s) = patch.state {
            b.state = s;
        }
    }
    if !found {
        return Err(err(
            "url",
            format!(
                "{:?} is not a backend of {}",
                patch.url.as_str(),
                cfg.hostname
            ),
        ));
    }
    revalidate(&next, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Deployment {
        Deployment::default()
    }

    fn cfg() -> ServiceConfig {
        parse_service(
            &json!({"hostname": "s.test", "backends": ["http://a", "http://b"]}),
            "",
            &ctx(),
        )
        .unwrap()
    }

    #[test]
    fn add_validates_the_body_and_rejects_duplicates() {
        let next = add_backend(&cfg(), &json!({"url": "http://c/", "weight": 4}), &ctx()).unwrap();
        assert_eq!(next.backends[2].url, "http://c");
        assert_eq!(next.backends[2].weight, 4);
        let e = add_backend(&cfg(), &json!("ftp://x"), &ctx()).unwrap_err();
        assert!(e[0].message.contains("ftp://x"), "{e:?}");
        let e =
            add_backend(&cfg(), &json!({"url": "http://c", "weight": "3"}), &ctx()).unwrap_err();
        assert_eq!(e[0].path, "weight");
        let e = add_backend(&cfg(), &json!("http://a/"), &ctx()).unwrap_err();
        assert_eq!(e[0].path, "url");
    }

    #[test]
    fn remove_keeps_at_least_one_backend() {
        let next = remove_backend(&cfg(), "http://a", &ctx()).unwrap();
        assert_eq!(next.backends.len(), 1);
        let e = remove_backend(&next, "http://b", &ctx()).unwrap_err();
        assert!(e[0].message.contains("at least one backend"), "{e:?}");
        assert_eq!(
            remove_backend(&cfg(), "http://zzz", &ctx()).unwrap_err()[0].path,
            "url"
        );
    }

    #[test]
    fn update_changes_weight_and_state_and_names_bad_fields() {
        let next = update_backend(
            &cfg(),
            &json!({"url": "http://b", "weight": 5, "state": "draining"}),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            (next.backends[1].weight, next.backends[1].state),
            (5, BackendState::Draining)
        );
        let e = update_backend(
            &cfg(),
            &json!({"url": "http://b", "weight": 0, "state": "off", "x": 1}),
            &ctx(),
        )
        .unwrap_err();
        let mut paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["state", "weight", "x"], "{e:?}");
        assert!(e.iter().any(|e| e.message.contains("1..=1000")), "{e:?}");
        assert!(update_backend(&cfg(), &json!({"url": "http://b"}), &ctx()).is_err());
    }
}
