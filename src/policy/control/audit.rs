//! The audit trail: who made an admin change (the actor), what it did, and a bounded newest-last list of entries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    ApiSecret,
    Key,
    Basic,
    Session,
    /// FlowBalance itself: an automatic rollback.
    Flowbalance,
}

/// Who made a change: the kind of credential, and its key name, Basic user or signed-in email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    #[serde(default)]
    pub name: Option<String>,
}

impl Actor {
    pub fn new(kind: ActorKind, name: Option<&str>) -> Actor {
        Actor {
            kind,
            name: name.map(str::to_string),
        }
    }

    /// FlowBalance itself, for the changes it makes on its own.
    pub fn flowbalance() -> Actor {
        Actor::new(ActorKind::Flowbalance, None)
    }

    /// A short text for webhook payloads: `token` (API_SECRET), `key:<name>`, `basic:<user>`,
    /// `session:<email>` or `flowbalance`.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            ActorKind::ApiSecret => return "token".to_string(),
            ActorKind::Flowbalance => return "flowbalance".to_string(),
            ActorKind::Key => "key",
            ActorKind::Basic => "basic",
            ActorKind::Session => "session",
        };
        format!("{kind}:{}", self.name.as_deref().unwrap_or("?"))
    }
}

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: u64,
    pub actor: Actor,
    pub action: String,
    pub summary: String,
    #[serde(default)]
    pub version: Option<u64>,
}

/// Appends `entry`, dropping the oldest past `max`.
pub fn record(trail: &mut Vec<Entry>, entry: Entry, max: usize) {
    trail.push(entry);
    if trail.len() > max {
        trail.drain(..trail.len() - max);
    }
}

/// What a config write changed, in a line: the top-level settings that differ.
pub fn config_summary(old: Option<&Value>, new: &Value) -> String {
    let backends = new["backends"].as_array().map_or(0, Vec::len);
    let Some(old) = old else {
        return format!("created with {backends} backend(s)");
    };
    let mut keys: Vec<&String> = match (old.as_object(), new.as_object()) {
        (Some(o), Some(n)) => o
            .keys()
            .chain(n.keys())
            .filter(|k| o.get(*k) != n.get(*k))
            .collect(),
        _ => vec![],
    };
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        "no change".into()
    } else {
        let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        format!("changed {}", names.join(", "))
    }
}

/// A backend edit's action name and summary, from the request body (`url` or `{url, ...}`).
pub fn backend_change(method: &str, body: &Value) -> (&'static str, String) {
    let url = body
        .as_str()
        .or_else(|| body["url"].as_str())
        .unwrap_or("?")
        .to_string();
    match method {
        "POST" => ("backend.added", format!("added {url}")),
        "DELETE" => ("backend.removed", format!("removed {url}")),
        _ => {
            let fields: Vec<String> = body
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| *k != "url")
                        .map(|(k, v)| match v.as_str() {
                            Some(s) => format!("{k} {s}"),
                            None => format!("{k} {v}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ("backend.updated", format!("{url}: {}", fields.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actor_serialises_as_the_api_shows_it() {
        let a = Actor::new(ActorKind::ApiSecret, None);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"kind": "api_secret", "name": null})
        );
        assert_eq!(Actor::flowbalance().label(), "flowbalance");
        assert_eq!(
            serde_json::to_value(Actor::flowbalance()).unwrap()["kind"],
            "flowbalance"
        );
        let k = Actor::new(ActorKind::Key, Some("deploy-bot"));
        assert_eq!(serde_json::to_value(&k).unwrap()["name"], "deploy-bot");
    }

    #[test]
    fn trail_is_bounded() {
        let mut t = Vec::new();
        for i in 0..5 {
            let e = Entry {
                at: i,
                actor: Actor::new(ActorKind::Basic, Some("admin")),
                action: "config.replaced".into(),
                summary: String::new(),
                version: Some(i),
            };
            record(&mut t, e, 3);
        }
        assert_eq!(t.iter().map(|e| e.at).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn summaries() {
        let a = json!({"hostname": "h", "backends": ["x"], "retries": {"attempts": 1}});
        let b = json!({"hostname": "h", "backends": ["x", "y"], "retries": {"attempts": 1}, "rateLimit": {}});
        assert_eq!(config_summary(None, &b), "created with 2 backend(s)");
        assert_eq!(config_summary(Some(&a), &b), "changed backends, rateLimit");
        assert_eq!(config_summary(Some(&a), &a), "no change");
        assert_eq!(
            backend_change("POST", &json!("http://a")),
            ("backend.added", "added http://a".into())
        );
        assert_eq!(
            backend_change(
                "PATCH",
                &json!({"url": "http://a", "state": "draining", "weight": 5})
            ),
            (
                "backend.updated",
                "http://a: state draining, weight 5".into()
            )
        );
        assert_eq!(
            backend_change("DELETE", &json!("http://a")).1,
            "removed http://a"
        );
    }
}
