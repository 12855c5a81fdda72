//! The Balancer's rules route: `POST /rules/test` explains what the stored config's rules, or a draft's, would do with a sample request; nothing is stored.

use serde::Deserialize;
use worker::*;

use super::config_api::{invalid, too_large};
use super::Balancer;
use crate::policy::control::config::{self, ConfigError};
use crate::policy::traffic::rules::{explain, Sample};

/// The body of `POST /admin/services/{h}/rules/test`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesTest {
    request: Sample,
    /// A draft service config, the body a config write takes; absent: the stored config.
    #[serde(default)]
    config: Option<serde_json::Value>,
}

impl Balancer {
    /// `POST /rules/test`: the [`crate::policy::traffic::rules::Explanation`] of `body.request`
    /// under the draft `body.config`, or under the stored config when there is no draft. Errors
    /// name their field from the body's root (`request.path`, `config.rules[3].then.pool`).
    pub(super) async fn test_rules(&self, body: serde_json::Value) -> Result<Response> {
        let test: RulesTest = match config::from_value(&body) {
            Ok(t) => t,
            Err(errs) => return invalid(errs),
        };
        let cfg = match test.config {
            Some(mut draft) => {
                let host = self.host.borrow().clone().unwrap_or_default();
                let stored = self.current().map(|(_, c, _)| c);
                // A draft edited from `GET .../config` carries redacted secrets, as a write does.
                config::restore_secrets(&mut draft, stored.as_ref());
                let cfg = match config::parse_service_for_host(
                    &draft,
                    &host,
                    &self.deployment(&host).await,
                ) {
                    Ok(cfg) => cfg,
                    Err(errs) => return invalid(errs.into_iter().map(under_config).collect()),
                };
                if let Err(message) = cfg.check_size() {
                    return too_large(&message);
                }
                cfg
            }
            None => match self.current() {
                Some((_, cfg, _)) => cfg,
                None => return self.status(),
            },
        };
        match explain(&cfg, &test.request) {
            Ok(explanation) => Response::from_json(&explanation),
            Err(message) => invalid(vec![sample_error(&message)]),
        }
    }
}

/// A draft's error, at its path from the body's root.
fn under_config(e: ConfigError) -> ConfigError {
    let path = if e.path.is_empty() {
        "config".to_string()
    } else {
        format!("config.{}", e.path)
    };
    ConfigError::new(&path, e.message)
}

/// `explain`'s refusal of the sample ("path: ... must start with /") at its field under `request`.
fn sample_error(message: &str) -> ConfigError {
    let field = message.split_once(": ").filter(|(f, _)| {
        !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'))
    });
    match field {
        Some((f, rest)) => ConfigError::new(&format!("request.{f}"), rest),
        None => ConfigError::new("request", message),
    }
}
