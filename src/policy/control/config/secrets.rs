//! Webhook signing secrets in config reads: shown redacted (`••••1a2b`), and a redacted value sent back in a write keeps the stored secret.

use serde_json::Value;

use super::{BackendUrl, ServiceConfig};

/// What every redacted secret starts with; a secret a client sends that starts with it is taken
/// as "keep the stored one" (and refused when no stored secret matches).
pub const REDACTED_PREFIX: &str = "••••";

/// `••••` and the secret's last 4 characters: enough to tell secrets apart, not to sign with.
pub fn redact(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("{REDACTED_PREFIX}{tail}")
}

/// Whether a secret is the redacted form, not a secret.
pub fn is_redacted(secret: &str) -> bool {
    secret.starts_with(REDACTED_PREFIX)
}

/// The webhooks array of a config value, if it has one.
fn webhooks_mut(config: &mut Value) -> Option<&mut Vec<Value>> {
    config
        .get_mut("notifications")?
        .get_mut("webhooks")?
        .as_array_mut()
}

/// Replaces every webhook secret of a config value (canonical or as sent) by its redacted form:
/// every read of a config goes through this, so a read-scope key never sees a secret.
pub fn redact_secrets(config: &mut Value) {
    for hook in webhooks_mut(config).into_iter().flatten() {
        if let Some(Value::String(s)) = hook.get_mut("secret") {
            if !is_redacted(s) {
                *s = redact(s);
            }
        }
    }
}

/// A copy of `config` with its secrets redacted.
pub fn redacted(config: &Value) -> Value {
    let mut v = config.clone();
    redact_secrets(&mut v);
    v
}

/// Puts the stored secret back wherever a write body carries a redacted one (the result of a
/// read, edited and sent back): the stored webhook with the same URL whose secret redacts to it,
/// else the one stored secret that redacts to it. A redacted value that matches nothing stays,
/// and validation refuses it by name.
pub fn restore_secrets(body: &mut Value, stored: Option<&ServiceConfig>) {
    let Some(stored) = stored else { return };
    let hooks = stored.webhooks();
    for hook in webhooks_mut(body).into_iter().flatten() {
        let url = hook
            .get("url")
            .and_then(Value::as_str)
            .and_then(|u| BackendUrl::parse(u).ok());
        let Some(Value::String(sent)) = hook.get_mut("secret") else {
            continue;
        };
        if !is_redacted(sent) {
            continue;
        }
        let matching: Vec<(&BackendUrl, &str)> = hooks
            .iter()
            .filter_map(|h| Some((&h.url, h.secret.as_deref()?)))
            .filter(|(_, s)| redact(s) == *sent)
            .collect();
        let same_url = matching
            .iter()
            .find(|(u, _)| Some(*u) == url.as_ref())
            .map(|(_, s)| *s);
        let only = match matching.as_slice() {
            [(_, first), rest @ ..] if rest.iter().all(|(_, s)| s == first) => Some(*first),
            _ => None,
        };
        if let Some(secret) = same_url.or(only) {
            *sent = secret.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::control::config::{parse_service, Deployment};
    use serde_json::json;

    const S1: &str = "0123456789abcdef-one-1a2b";
    const S2: &str = "0123456789abcdef-two-9z9z";

    fn stored() -> ServiceConfig {
        parse_service(
            &json!({"hostname": "s.test", "backends": ["http://a"], "notifications": {"webhooks": [
                {"url": "https://hooks.example/one", "secret": S1},
                {"url": "https://hooks.example/two", "secret": S2},
                {"url": "https://hooks.example/slack", "format": "slack"},
            ]}}),
            "",
            &Deployment::default(),
        )
        .unwrap()
    }

    #[test]
    fn reads_show_four_bullets_and_the_last_four_characters() {
        assert_eq!(redact(S1), "••••1a2b");
        assert_eq!(redact("abc"), "••••abc");
        let view = redacted(&stored().to_value());
        let hooks = view["notifications"]["webhooks"].as_array().unwrap();
        assert_eq!(hooks[0]["secret"], "••••1a2b");
        assert_eq!(hooks[1]["secret"], "••••9z9z");
        assert!(hooks[2].get("secret").is_none());
        assert!(!view.to_string().contains("0123456789abcdef"), "{view}");
        // Redacting twice changes nothing; a config without webhooks is left alone.
        assert_eq!(redacted(&view), view);
        let plain = json!({"backends": ["http://a"]});
        assert_eq!(redacted(&plain), plain);
    }

    #[test]
    fn a_read_sent_back_keeps_every_stored_secret() {
        let cfg = stored();
        let mut body = redacted(&cfg.to_value());
        restore_secrets(&mut body, Some(&cfg));
        let back = parse_service(&body, "", &Deployment::default()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn a_moved_webhook_keeps_its_secret_and_a_new_secret_replaces_it() {
        let cfg = stored();
        let mut body = json!({"hostname": "s.test", "backends": ["http://a"], "notifications": {"webhooks": [
            {"url": "https://hooks.example/moved", "secret": "••••9z9z"},
            {"url": "https://hooks.example/one", "secret": "a-brand-new-secret-0000"},
        ]}});
        restore_secrets(&mut body, Some(&cfg));
        let hooks = &body["notifications"]["webhooks"];
        assert_eq!(hooks[0]["secret"], S2);
        assert_eq!(hooks[1]["secret"], "a-brand-new-secret-0000");
    }

    #[test]
    fn a_redacted_value_that_matches_nothing_is_refused_by_name() {
        let cfg = stored();
        let mut body = json!({"hostname": "s.test", "backends": ["http://a"], "notifications": {"webhooks": [
            {"url": "https://hooks.example/one", "secret": "••••zzzz"},
        ]}});
        restore_secrets(&mut body, Some(&cfg));
        let errs = parse_service(&body, "", &Deployment::default()).unwrap_err();
        assert_eq!(errs[0].path, "notifications.webhooks[0].secret");
        assert!(errs[0].message.contains("redacted"), "{errs:?}");
        // Without a stored config (a new service) the same.
        let mut body = redacted(&cfg.to_value());
        restore_secrets(&mut body, None);
        assert!(parse_service(&body, "", &Deployment::default()).is_err());
    }

    #[test]
    fn two_stored_secrets_with_the_same_tail_are_told_apart_by_url_only() {
        let twin = "another-secret-xx-1a2b";
        let cfg = parse_service(
            &json!({"hostname": "s.test", "backends": ["http://a"], "notifications": {"webhooks": [
                {"url": "https://hooks.example/one", "secret": S1},
                {"url": "https://hooks.example/two", "secret": twin},
            ]}}),
            "",
            &Deployment::default(),
        )
        .unwrap();
        let mut body = redacted(&cfg.to_value());
        restore_secrets(&mut body, Some(&cfg));
        assert_eq!(body["notifications"]["webhooks"][1]["secret"], twin);
        // Moved to a new URL, the same tail is ambiguous: refused, never guessed.
        body["notifications"]["webhooks"][1]["url"] = json!("https://hooks.example/new");
        body["notifications"]["webhooks"][1]["secret"] = json!("••••1a2b");
        restore_secrets(&mut body, Some(&cfg));
        assert_eq!(body["notifications"]["webhooks"][1]["secret"], "••••1a2b");
    }
}
