//! Named API keys: minting (shown once, kept only as a SHA-256 hash), the key ring with revocation and last-use, and what a key may do (scope and hostnames).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::policy::access::auth::ct_eq;
use crate::policy::control::audit::Actor;
use crate::policy::control::config::{validate_hostname, ConfigError};

/// Every key starts with this, so a bearer token can be told apart from API_SECRET at a glance.
pub const KEY_PREFIX: &str = "fbk_";
/// Keys (revoked ones included, for the record) kept at most.
pub const MAX_KEYS: usize = 100;
/// `last_used_at` is stored at most this often per key: no storage write per request.
pub const LAST_USED_PRECISION_MS: u64 = 60_000;
const MAX_NAME: usize = 64;
const MAX_HOSTNAMES: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET (and HEAD) only.
    Read,
    Write,
}

/// What a key may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub scope: Scope,
    /// None: every hostname.
    pub hostnames: Option<Vec<String>>,
}

impl Grant {
    /// Whether this grant allows a request: `read_only` for GET/HEAD, `host` the service it targets
    /// (None for deployment-wide routes such as the service list).
    pub fn permits(&self, read_only: bool, host: Option<&str>) -> Result<(), String> {
        if !read_only && self.scope == Scope::Read {
            return Err("this API key has scope \"read\": only requests that change nothing are allowed (GET, HEAD, and POST /admin/services/{h}/rules/test)".into());
        }
        match (host, &self.hostnames) {
            (Some(h), Some(list)) if !list.iter().any(|x| x == h) => Err(format!(
                "this API key is limited to {}; it may not act on {h}",
                list.join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// Whether a list (the service list) shows `host` to this key.
    pub fn sees(&self, host: &str) -> bool {
        self.hostnames
            .as_ref()
            .is_none_or(|list| list.iter().any(|x| x == host))
    }
}

/// One named key as stored: never the key itself, only its hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub grant: Grant,
    pub created_at: u64,
    pub created_by: Actor,
    pub last_used_at: Option<u64>,
    pub revoked: bool,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// Hex SHA-256 of the key.
    pub hash: String,
}

impl ApiKey {
    /// The key as the API lists it: everything but the hash.
    pub fn view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("hash");
        }
        v
    }
}

/// Hex SHA-256 of a presented key.
pub fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new key from 32 random bytes: (the key to show once, its hash, its id).
pub fn mint(random: &[u8; 32]) -> (String, String, String) {
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let h = hash(&key);
    let id = format!("key_{}", &h[..12]);
    (key, h, id)
}

/// Whether `id` has the form [`mint`] gives ids: `key_` and 12 lowercase hex digits.
pub fn is_key_id(id: &str) -> bool {
    id.strip_prefix("key_").is_some_and(|h| {
        h.len() == 12
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A create request: `{name, scope, hostnames?}`, checked field by field.
pub fn parse_new(body: &Value) -> Result<(String, Grant), Vec<ConfigError>> {
    let err = |path: &str, message: String| ConfigError {
        path: path.into(),
        message,
    };
    let Some(obj) = body.as_object() else {
        return Err(vec![err(
            "",
            "expected an object {name, scope, hostnames?}".into(),
        )]);
    };
    let mut errors = Vec::new();
    for k in obj.keys() {
        if !["name", "scope", "hostnames"].contains(&k.as_str()) {
            errors.push(err(
                k,
                format!("unknown key {k:?}; allowed: name, scope, hostnames"),
            ));
        }
    }
    let name = match obj.get("name").and_then(Value::as_str).map(str::trim) {
        Some(n)
            if !n.is_empty()
                && n.chars().count() <= MAX_NAME
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => {
            errors.push(err(
                "name",
                format!("required: a label of 1..={MAX_NAME} printable characters"),
            ));
            String::new()
        }
    };
    let scope = match obj.get("scope").and_then(Value::as_str) {
        Some("read") => Scope::Read,
        Some("write") => Scope::Write,
        _ => {
            errors.push(err(
                "scope",
                "required: \"read\" (GET only) or \"write\"".into(),
            ));
            Scope::Read
        }
    };
    let hostnames = match obj.get("hostnames") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_HOSTNAMES => {
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                match h.as_str().map(validate_hostname) {
                    Some(Ok(h)) => out.push(h),
                    Some(Err(e)) => errors.push(err(&format!("hostnames[{i}]"), e)),
                    None => errors.push(err(
                        &format!("hostnames[{i}]"),
                        "expected a hostname string".into(),
                    )),
                }
            }
            out.sort();
            out.dedup();
            Some(out)
        }
        Some(_) => {
            errors.push(err(
                "hostnames",
                format!("expected null or a list of 1..={MAX_HOSTNAMES} hostnames"),
            ));
            None
        }
    };
    if errors.is_empty() {
        Ok((name, Grant { scope, hostnames }))
    } else {
        Err(errors)
    }
}

/// Every key, revoked ones included (listed as revoked).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyRing {
    pub keys: Vec<ApiKey>,
}

impl KeyRing {
    /// Adds a key; refused when the ring is full of live keys.
    pub fn add(&mut self, key: ApiKey) -> Result<(), String> {
        if self.keys.len() >= MAX_KEYS {
            // Make room by forgetting the oldest revoked key.
            match self.keys.iter().position(|k| k.revoked) {
                Some(i) => {
                    self.keys.remove(i);
                }
                None => return Err(format!("at most {MAX_KEYS} API keys; revoke one first")),
            }
        }
        if self.keys.iter().any(|k| k.id == key.id) {
            return Err("key id collision; try again".into());
        }
        self.keys.push(key);
        Ok(())
    }

    /// Revokes the key `id`; None when there is no such key. Revoking twice is harmless.
    pub fn revoke(&mut self, id: &str, now_ms: u64) -> Option<&ApiKey> {
        let k = self.keys.iter_mut().find(|k| k.id == id)?;
        if !k.revoked {
            k.revoked = true;
            k.revoked_at = Some(now_ms);
        }
        Some(k)
    }

    /// The live key whose hash is `hash`. Every stored hash is compared, in constant time each.
    pub fn find(&self, hash: &str) -> Option<&ApiKey> {
        let mut found = None;
        for k in &self.keys {
            if ct_eq(k.hash.as_bytes(), hash.as_bytes()) && !k.revoked {
                found = Some(k);
            }
        }
        found
    }

    /// Notes a use of key `id`; true when the change is worth storing (the last stored use is
    /// older than [`LAST_USED_PRECISION_MS`]).
    pub fn touch(&mut self, id: &str, now_ms: u64) -> bool {
        let Some(k) = self.keys.iter_mut().find(|k| k.id == id) else {
            return false;
        };
        match k.last_used_at {
            Some(t) if now_ms.saturating_sub(t) < LAST_USED_PRECISION_MS => false,
            _ => {
                k.last_used_at = Some(now_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::control::audit::ActorKind;
    use serde_json::json;

    fn key(random: u8, grant: Grant) -> (String, ApiKey) {
        let (plain, hash, id) = mint(&[random; 32]);
        (
            plain,
            ApiKey {
                id,
                name: format!("k{random}"),
                grant,
                created_at: 1,
                created_by: Actor::new(ActorKind::ApiSecret, None),
                last_used_at: None,
                revoked: false,
                revoked_at: None,
                hash,
            },
        )
    }

    fn write() -> Grant {
        Grant {
            scope: Scope::Write,
            hostnames: None,
        }
    }

    #[test]
    fn minted_keys_are_prefixed_and_only_hashed() {
        let (plain, k) = key(7, write());
        assert!(plain.starts_with("fbk_") && plain.len() == 47);
        assert!(is_key_id(&k.id), "{}", k.id);
        for bad in [
            "key_",
            "key_0123456789aG",
            "{id}",
            "key_0123456789abc",
            "KEY_0123456789ab",
        ] {
            assert!(!is_key_id(bad), "{bad}");
        }
        assert_eq!(k.hash, hash(&plain));
        assert!(!k.view().to_string().contains(&k.hash));
        assert!(!k.view().to_string().contains(&plain));
        assert_eq!(k.view()["scope"], "write");
    }

    #[test]
    fn find_revoke_and_touch() {
        let mut ring = KeyRing::default();
        let (p1, k1) = key(1, write());
        let (p2, k2) = key(2, write());
        ring.add(k1.clone()).unwrap();
        ring.add(k2.clone()).unwrap();
        assert_eq!(ring.find(&hash(&p1)).map(|k| &k.id), Some(&k1.id));
        assert!(ring.find(&hash("fbk_nope")).is_none());
        assert!(ring.revoke(&k1.id, 5).is_some());
        assert!(ring.find(&hash(&p1)).is_none(), "revoked at once");
        assert!(ring.find(&hash(&p2)).is_some());
        assert!(ring.revoke("key_missing", 5).is_none());
        assert!(ring.touch(&k2.id, 1_000));
        assert!(!ring.touch(&k2.id, 1_000 + LAST_USED_PRECISION_MS - 1));
        assert!(ring.touch(&k2.id, 1_000 + LAST_USED_PRECISION_MS));
    }

    #[test]
    fn ring_is_bounded() {
        let mut ring = KeyRing::default();
        for i in 0..MAX_KEYS {
            let (_, mut k) = key(0, write());
            k.id = format!("id{i}");
            ring.add(k).unwrap();
        }
        let (_, extra) = key(9, write());
        assert!(ring.add(extra.clone()).is_err());
        ring.revoke("id3", 1);
        ring.add(extra).unwrap();
        assert_eq!(ring.keys.len(), MAX_KEYS);
        assert!(ring.keys.iter().all(|k| k.id != "id3"));
    }

    #[test]
    fn grants() {
        let read = Grant {
            scope: Scope::Read,
            hostnames: None,
        };
        assert!(read.permits(true, Some("a.test")).is_ok());
        assert!(read
            .permits(false, Some("a.test"))
            .unwrap_err()
            .contains("read"));
        let limited = Grant {
            scope: Scope::Write,
            hostnames: Some(vec!["a.test".into()]),
        };
        assert!(limited.permits(false, Some("a.test")).is_ok());
        assert!(limited
            .permits(true, Some("b.test"))
            .unwrap_err()
            .contains("a.test"));
        assert!(limited.permits(true, None).is_ok());
        assert!(limited.sees("a.test") && !limited.sees("b.test"));
        assert!(write().sees("anything"));
    }

    #[test]
    fn create_requests_are_checked_per_field() {
        let (name, g) =
            parse_new(&json!({"name": " ci ", "scope": "read", "hostnames": ["B.test", "a.test"]}))
                .unwrap();
        assert_eq!(name, "ci");
        assert_eq!(
            g.hostnames,
            Some(vec!["a.test".to_string(), "b.test".to_string()])
        );
        let errs =
            parse_new(&json!({"name": "", "scope": "admin", "hostnames": [], "x": 1})).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["x", "name", "scope", "hostnames"]);
        let errs = parse_new(&json!({"name": "n", "scope": "write", "hostnames": ["bad host", 3]}))
            .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["hostnames[0]", "hostnames[1]"]);
        assert!(parse_new(&json!([])).is_err());
    }
}
