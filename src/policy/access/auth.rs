//! Admin API authentication: credential parsing, constant-time checks and a brute-force throttle.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::policy::access::clients::{bounded_key, client_network, make_room};

/// Constant time for equal lengths. On different lengths it still walks `a` (against itself) so
/// the time depends only on `a.len()`, never on where the content differs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let same_len = a.len() == b.len();
    let other = if same_len { b } else { a };
    let diff = a.iter().zip(other).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    same_len & (std::hint::black_box(diff) == 0)
}

#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Bearer(String),
    Basic { user: String, password: String },
    None,
    Malformed(&'static str),
}

/// Redacted: credentials must never reach logs.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, .. }}"),
            Credentials::None => f.write_str("None"),
            Credentials::Malformed(why) => write!(f, "Malformed({why:?})"),
        }
    }
}

/// Basic credentials from real clients are padded, but accept unpadded too: padding carries no
/// security meaning and strictness here only produces confusing 401s.
const BASIC_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses an `Authorization` header. Scheme is case-insensitive; Basic is base64 of
/// `user:password`, split at the first ':' (the password may contain ':').
pub fn parse_authorization(header: Option<&str>) -> Credentials {
    let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Credentials::None;
    };
    let (scheme, rest) = match h.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((s, r)) => (s, r.trim()),
        None => (h, ""),
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Credentials::Malformed("empty bearer token");
        }
        if rest.contains(|c: char| c.is_ascii_whitespace()) {
            return Credentials::Malformed("bearer token contains whitespace");
        }
        Credentials::Bearer(rest.to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        if rest.is_empty() {
            return Credentials::Malformed("empty basic credentials");
        }
        let Ok(bytes) = BASIC_B64.decode(rest) else {
            return Credentials::Malformed("basic credentials are not base64");
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Credentials::Malformed("basic credentials are not utf-8");
        };
        match text.split_once(':') {
            Some((user, password)) => Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            },
            None => Credentials::Malformed("basic credentials lack ':'"),
        }
    } else {
        Credentials::Malformed("unsupported authorization scheme")
    }
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub api_secret: Option<String>,
    pub basic_user: Option<String>,
    pub basic_password: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Secrets")
            .field("api_secret", &set(&self.api_secret))
            .field("basic_user", &set(&self.basic_user))
            .field("basic_password", &set(&self.basic_password))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    Ok,
    Denied(&'static str),
    NotConfigured,
}

/// An empty secret would accept an empty token, i.e. run open: treat it as unset.
fn configured(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Bearer is checked against `api_secret`; Basic against user and password. With neither an
/// api secret nor a full basic pair configured the admin API refuses to run open.
pub fn check(secrets: &Secrets, creds: &Credentials) -> AuthOutcome {
    let api = configured(&secrets.api_secret);
    let basic = match (
        configured(&secrets.basic_user),
        configured(&secrets.basic_password),
    ) {
        (Some(u), Some(p)) => Some((u, p)),
        _ => None,
    };
    if api.is_none() && basic.is_none() {
        return AuthOutcome::NotConfigured;
    }
    match creds {
        Credentials::Bearer(token) => match api {
            Some(secret) if ct_eq(token.as_bytes(), secret.as_bytes()) => AuthOutcome::Ok,
            Some(_) => AuthOutcome::Denied("invalid credentials"),
            None => AuthOutcome::Denied("bearer authentication not configured"),
        },
        Credentials::Basic { user, password } => match basic {
            Some((u, p)) => {
                // Both compared, combined without short-circuit: timing does not reveal
                // whether the user name alone was right.
                let user_ok = ct_eq(user.as_bytes(), u.as_bytes());
                let pass_ok = ct_eq(password.as_bytes(), p.as_bytes());
                if user_ok & pass_ok {
                    AuthOutcome::Ok
                } else {
                    AuthOutcome::Denied("invalid credentials")
                }
            }
            None => AuthOutcome::Denied("basic authentication not configured"),
        },
        Credentials::None => AuthOutcome::Denied("missing credentials"),
        Credentials::Malformed(why) => AuthOutcome::Denied(why),
    }
}

const BACKOFF_START_MS: u64 = 1_000;
const BACKOFF_MAX_MS: u64 = 15 * 60 * 1_000;

/// Credential identities whose failures one client entry tells apart; further ones still count
/// toward the client's lockout but no success can clear them.
const MAX_IDENTITIES: usize = 8;

/// One client's failed logins: the unit the throttle keeps, in memory and in storage. `failures`
/// is the total; `by_identity` the part of it attributed to a credential identity (a user name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Strikes {
    failures: u32,
    last_failure_ms: u64,
    blocked_until_ms: u64,
    #[serde(default)]
    by_identity: BTreeMap<String, u32>,
}

/// What one recorded attempt changed, for a caller that mirrors the table in storage: at most
/// one client to write, and the clients whose entries are gone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub put: Option<(String, Strikes)>,
    pub delete: Vec<String>,
}

/// One login attempt as the throttle sees it. `identity` is the credential identity the attempt
/// claimed (the user name of Basic auth or the password form); None when the attempt cannot be
/// attributed to a credential (a bearer token, an OAuth callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub ok: bool,
    pub identity: Option<&'a str>,
}

/// Brute-force throttle per client (`client_network`: an IPv4 address or an IPv6 /64, so
/// spellings of one address and rotation inside a /64 count together). After `free` failures,
/// each further attempt is refused until a backoff passes (1 s, doubling, capped at 15 min),
/// whatever its credentials. The count is forgotten once a client stays quiet for a whole window
/// after its last failure or block, so a persistent attacker keeps escalating while a user who
/// mistyped a few times is forgiven. A success clears only the failures of the identity it
/// proved: a valid read key (a bearer success proves no guessed identity) clears nothing, so
/// guesses interleaved with successes of another credential still lock the client out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throttle {
    free: u32,
    window_ms: u64,
    max_clients: usize,
    clients: BTreeMap<String, Strikes>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(5, 60_000, 10_000)
    }
}

impl Throttle {
    pub fn new(free: u32, window_ms: u64, max_clients: usize) -> Self {
        Throttle {
            free,
            window_ms,
            // At least one slot, so the most recent offender is always tracked.
            max_clients: max_clients.max(1),
            clients: BTreeMap::new(),
        }
    }

    fn quiet_since(s: &Strikes) -> u64 {
        s.last_failure_ms.max(s.blocked_until_ms)
    }

    fn is_stale(&self, s: &Strikes, now_ms: u64) -> bool {
        now_ms.saturating_sub(Self::quiet_since(s)) >= self.window_ms
    }

    /// Reloads entries kept in storage. Returns the clients not taken back (forgiven by now, or
    /// beyond the table's bound), whose stored entries can go.
    pub fn restore(
        &mut self,
        entries: impl IntoIterator<Item = (String, Strikes)>,
        now_ms: u64,
    ) -> Vec<String> {
        let mut dropped = Vec::new();
        for (client, strikes) in entries {
            if self.is_stale(&strikes, now_ms) || self.clients.len() >= self.max_clients {
                dropped.push(client);
            } else {
                self.clients.insert(client, strikes);
            }
        }
        dropped
    }

    /// One login attempt: `Err(retry_after_ms)` while the client is locked out (nothing is
    /// recorded then), else the attempt is recorded and its changes returned.
    pub fn attempt(&mut self, client: &str, attempt: Attempt, now_ms: u64) -> Result<Changes, u64> {
        self.check(client, now_ms)?;
        Ok(if attempt.ok {
            self.record_success(client, attempt.identity)
        } else {
            self.record_failure(client, attempt.identity, now_ms)
        })
    }

    /// `Err(retry_after_ms)` while the client is inside a backoff.
    pub fn check(&self, client: &str, now_ms: u64) -> Result<(), u64> {
        match self.clients.get(&client_network(client)) {
            Some(s) if s.blocked_until_ms > now_ms => Err(s.blocked_until_ms - now_ms),
            _ => Ok(()),
        }
    }

    pub fn record_failure(&mut self, client: &str, identity: Option<&str>, now_ms: u64) -> Changes {
        let client = client_network(client);
        let mut delete = Vec::new();
        if !self.clients.contains_key(&client) && self.clients.len() >= self.max_clients {
            delete = self.make_room(now_ms);
        }
        let stale = self
            .clients
            .get(&client)
            .is_some_and(|s| self.is_stale(s, now_ms));
        // free = 0 behaves like 1: the first failure starts the 1 s backoff.
        let free = self.free.max(1);
        let s = self.clients.entry(client.clone()).or_insert(Strikes {
            failures: 0,
            last_failure_ms: now_ms,
            blocked_until_ms: 0,
            by_identity: BTreeMap::new(),
        });
        if stale {
            s.failures = 0;
            s.blocked_until_ms = 0;
            s.by_identity.clear();
        }
        s.failures = s.failures.saturating_add(1);
        s.last_failure_ms = now_ms;
        if let Some(id) = identity.map(|i| bounded_key(i).to_string()) {
            if s.by_identity.contains_key(&id) || s.by_identity.len() < MAX_IDENTITIES {
                let n = s.by_identity.entry(id).or_insert(0);
                *n = n.saturating_add(1);
            }
        }
        if s.failures >= free {
            // The `free`-th failure blocks for 1 s, each further one doubles, capped.
            let doublings = (s.failures - free).min(20);
            let backoff = (BACKOFF_START_MS << doublings).min(BACKOFF_MAX_MS);
            s.blocked_until_ms = now_ms.saturating_add(backoff);
        }
        Changes {
            put: Some((client, s.clone())),
            delete,
        }
    }

    /// Clears the failures `identity` made from this client, and only those (None clears
    /// nothing). The change is empty when there was nothing to clear, so a routine successful
    /// login costs no storage write.
    pub fn record_success(&mut self, client: &str, identity: Option<&str>) -> Changes {
        let client = client_network(client);
        let Some(id) = identity.map(|i| bounded_key(i).to_string()) else {
            return Changes::default();
        };
        let Some(s) = self.clients.get_mut(&client) else {
            return Changes::default();
        };
        let Some(n) = s.by_identity.remove(&id) else {
            return Changes::default();
        };
        s.failures = s.failures.saturating_sub(n);
        if s.failures == 0 {
            self.clients.remove(&client);
            return Changes {
                put: None,
                delete: vec![client],
            };
        }
        Changes {
            put: Some((client, s.clone())),
            delete: vec![],
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Drop forgiven clients first; if still full, evict the one with the oldest activity.
    fn make_room(&mut self, now_ms: u64) -> Vec<String> {
        let window = self.window_ms;
        make_room(
            &mut self.clients,
            self.max_clients,
            |s| now_ms.saturating_sub(Self::quiet_since(s)) >= window,
            Self::quiet_since,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    #[test]
    fn ct_eq_cases() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
        // Lengths differing by 256 must not alias.
        assert!(!ct_eq(&[0u8; 256], &[]));
    }

    fn basic(s: &str) -> String {
        format!("Basic {}", STANDARD.encode(s))
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_authorization(None), Credentials::None);
        assert_eq!(parse_authorization(Some("  ")), Credentials::None);
        assert_eq!(
            parse_authorization(Some("bEaReR tok-1")),
            Credentials::Bearer("tok-1".into())
        );
        assert_eq!(
            parse_authorization(Some(&basic("admin:pa:ss"))),
            Credentials::Basic {
                user: "admin".into(),
                password: "pa:ss".into()
            }
        );
        let unpadded = format!("basic {}", STANDARD.encode("a:b").trim_end_matches('='));
        assert_eq!(
            parse_authorization(Some(&unpadded)),
            Credentials::Basic {
                user: "a".into(),
                password: "b".into()
            }
        );
        for bad in [
            "Bearer",
            "Bearer a b",
            "Basic",
            "Basic !!!",
            "Digest x",
            "tok",
        ] {
            assert!(
                matches!(parse_authorization(Some(bad)), Credentials::Malformed(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_authorization(Some(&basic("nocolon"))),
            Credentials::Malformed(_)
        ));
        let non_utf8 = format!("Basic {}", STANDARD.encode([0xff, b':', 0xfe]));
        assert!(matches!(
            parse_authorization(Some(&non_utf8)),
            Credentials::Malformed(_)
        ));
    }

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::Bearer("topsecret".into());
        assert!(!format!("{c:?}").contains("topsecret"));
        let s = Secrets {
            api_secret: Some("topsecret".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("topsecret"));
    }

    #[test]
    fn checking() {
        let none = Secrets::default();
        let bearer = Credentials::Bearer("s3cret".into());
        assert_eq!(check(&none, &bearer), AuthOutcome::NotConfigured);
        let empty = Secrets {
            api_secret: Some(String::new()),
            basic_user: Some("u".into()),
            basic_password: None,
        };
        assert_eq!(
            check(&empty, &Credentials::Bearer(String::new())),
            AuthOutcome::NotConfigured
        );

        let api = Secrets {
            api_secret: Some("s3cret".into()),
            ..Default::default()
        };
        assert_eq!(check(&api, &bearer), AuthOutcome::Ok);
        assert!(matches!(
            check(&api, &Credentials::Bearer("s3cre".into())),
            AuthOutcome::Denied(_)
        ));
        let b = Credentials::Basic {
            user: "u".into(),
            password: "p".into(),
        };
        assert!(matches!(check(&api, &b), AuthOutcome::Denied(_)));
        assert_eq!(
            check(&api, &Credentials::None),
            AuthOutcome::Denied("missing credentials")
        );
        assert_eq!(
            check(&api, &Credentials::Malformed("x")),
            AuthOutcome::Denied("x")
        );

        let pair = Secrets {
            api_secret: None,
            basic_user: Some("u".into()),
            basic_password: Some("p".into()),
        };
        assert_eq!(check(&pair, &b), AuthOutcome::Ok);
        assert!(matches!(check(&pair, &bearer), AuthOutcome::Denied(_)));
        for (u, p) in [("u", "x"), ("x", "p"), ("", "")] {
            let c = Credentials::Basic {
                user: u.into(),
                password: p.into(),
            };
            assert!(matches!(check(&pair, &c), AuthOutcome::Denied(_)));
        }
    }

    #[test]
    fn throttle_backoff_sequence() {
        let mut t = Throttle::new(3, 60_000, 10);
        let mut now = 0;
        for _ in 0..2 {
            assert_eq!(t.check("ip", now), Ok(()));
            t.record_failure("ip", None, now);
        }
        // Third failure uses up the free attempts: blocked 1 s.
        t.record_failure("ip", None, now);
        assert_eq!(t.check("ip", now), Err(1_000));
        assert_eq!(t.check("ip", now + 999), Err(1));
        assert_eq!(t.check("other", now), Ok(()));
        // Each further failure doubles: 2 s, 4 s, 8 s ...
        let mut expected = vec![];
        let mut got = vec![];
        for k in 1..=12 {
            now = t
                .clients
                .get("ip")
                .map(|s| s.blocked_until_ms)
                .unwrap_or(now);
            assert_eq!(t.check("ip", now), Ok(()));
            t.record_failure("ip", None, now);
            got.push(t.check("ip", now).unwrap_err());
            expected.push((1_000u64 << k).min(BACKOFF_MAX_MS));
        }
        assert_eq!(got, expected);
        assert_eq!(*got.last().unwrap(), 900_000);
        // A success that proves no identity clears nothing; here every failure was unattributed.
        assert_eq!(t.record_success("ip", Some("admin")), Changes::default());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn throttle_forgets_after_quiet_window() {
        let mut t = Throttle::new(2, 1_000, 10);
        t.record_failure("ip", None, 0);
        // Quiet for a whole window: count restarts, so this is failure 1 again.
        t.record_failure("ip", None, 1_000);
        assert_eq!(t.check("ip", 1_000), Ok(()));
        t.record_failure("ip", None, 1_500);
        assert_eq!(t.check("ip", 1_500), Err(1_000));
    }

    #[test]
    fn throttle_memory_is_bounded() {
        let mut t = Throttle::new(1, 60_000, 3);
        for i in 0..10u64 {
            t.record_failure(&format!("c{i}"), None, i);
            assert!(t.len() <= 3);
        }
        // Oldest evicted, newest kept.
        assert!(t.check("c9", 9).is_err());
        assert_eq!(t.check("c0", 9), Ok(()));
    }

    #[test]
    fn spellings_of_one_address_count_together() {
        let mut t = Throttle::new(2, 60_000, 10);
        t.record_failure("::ffff:1.2.3.4", None, 0);
        t.record_failure("1.2.3.4", None, 0);
        assert_eq!(t.check("1.2.3.4", 0), Err(1_000));
        assert_eq!(t.check("::FFFF:1.2.3.4", 0), Err(1_000));
        t.record_failure("2001:0DB8:0:0::1", None, 0);
        t.record_failure("2001:db8::1", None, 0);
        assert_eq!(t.check("[2001:db8::1]", 0), Err(1_000));
        assert_eq!(t.len(), 2);
        // Rotating inside one /64 is one client; the next /64 is another.
        assert_eq!(t.check("2001:db8::ffff:1", 0), Err(1_000));
        assert_eq!(t.check("2001:db8:0:1::1", 0), Ok(()));
    }

    #[test]
    fn changes_name_what_to_store() {
        let mut t = Throttle::new(1, 60_000, 2);
        // A success with nothing to clear writes nothing.
        let ok = Attempt {
            ok: true,
            identity: Some("u"),
        };
        let bad = Attempt {
            ok: false,
            identity: Some("u"),
        };
        assert_eq!(t.attempt("::ffff:9.9.9.9", ok, 0), Ok(Changes::default()));
        let c = t.attempt("::ffff:9.9.9.9", bad, 0).unwrap();
        assert_eq!(c.put.as_ref().map(|(k, _)| k.as_str()), Some("9.9.9.9"));
        assert!(c.delete.is_empty());
        // Locked out: refused and nothing recorded, even with the right credentials.
        assert_eq!(t.attempt("9.9.9.9", ok, 10), Err(990));
        assert_eq!(t.len(), 1);
        // A full table evicts the oldest, and says so.
        t.record_failure("a", None, 5);
        let c = t.record_failure("b", Some("u"), 6);
        assert_eq!(c.delete, ["9.9.9.9"]);
        // Success of the same identity after the backoff clears and deletes.
        let c = t.attempt("b", ok, 5_000).unwrap();
        assert_eq!(
            c,
            Changes {
                put: None,
                delete: vec!["b".into()]
            }
        );
    }

    #[test]
    fn restore_keeps_live_entries_and_drops_forgiven_ones() {
        let mut t = Throttle::new(1, 1_000, 2);
        let live = t.record_failure("live", None, 10).put.unwrap();
        let old = t.record_failure("old", None, 0).put.unwrap();
        let mut fresh = Throttle::new(1, 1_000, 2);
        // At 2_005 "old" (quiet since its block ended at 1_000) is forgiven; "live" (1_010) is not.
        let dropped = fresh.restore([live.clone(), old.clone()], 2_005);
        assert_eq!(dropped, ["old"]);
        assert_eq!(fresh.len(), 1);
        fresh.record_failure("live", None, 2_005);
        assert_eq!(
            fresh.check("live", 2_005),
            Err(2_000),
            "the restored count kept escalating"
        );
        // Beyond the bound: not taken back.
        let mut small = Throttle::new(1, 60_000, 1);
        assert_eq!(small.restore([live, old], 0), ["old"]);
    }

    #[test]
    fn a_success_clears_only_the_failures_of_the_identity_it_proved() {
        let bearer_ok = Attempt {
            ok: true,
            identity: None,
        };
        let guess = Attempt {
            ok: false,
            identity: Some("admin"),
        };
        // The attack: wrong Basic guesses interleaved with a valid read key's successes.
        let mut t = Throttle::new(5, 60_000, 10);
        for i in 0..5u64 {
            assert_eq!(
                t.attempt("198.51.100.7", bearer_ok, i),
                Ok(Changes::default())
            );
            assert!(t.attempt("198.51.100.7", guess, i).is_ok(), "guess {i}");
        }
        // The fifth guess locked the client: the sixth is refused, and so is the valid key.
        assert_eq!(t.attempt("198.51.100.7", guess, 5), Err(999));
        assert_eq!(t.attempt("198.51.100.7", bearer_ok, 5), Err(999));

        // Failures of an identity are cleared by a success of that identity only.
        let mut t = Throttle::new(5, 60_000, 10);
        t.record_failure("c", Some("admin"), 0);
        t.record_failure("c", Some("admin"), 0);
        t.record_failure("c", Some("other"), 0);
        t.record_failure("c", None, 0);
        assert!(t.record_success("c", None).put.is_none());
        assert_eq!(t.record_success("c", Some("nobody")), Changes::default());
        let c = t.record_success("c", Some("admin"));
        assert_eq!(c.put.map(|(_, s)| s.failures), Some(2));
        t.record_failure("c", None, 0);
        t.record_failure("c", None, 0);
        t.record_failure("c", None, 0);
        assert!(
            t.check("c", 0).is_err(),
            "the two cleared no longer count, the rest do"
        );
        // Clearing the last attributed failures of a client deletes it.
        let mut t = Throttle::new(5, 60_000, 10);
        t.record_failure("d", Some("admin"), 0);
        assert_eq!(
            t.record_success("d", Some("admin")),
            Changes {
                put: None,
                delete: vec!["d".into()]
            }
        );
    }

    #[test]
    fn identities_per_client_are_bounded() {
        let mut t = Throttle::new(100, 60_000, 10);
        for i in 0..20 {
            t.record_failure("c", Some(&format!("user{i}")), 0);
        }
        let s = t.clients.get("c").unwrap();
        assert_eq!(s.failures, 20);
        assert_eq!(s.by_identity.len(), MAX_IDENTITIES);
        // Beyond the bound an identity's failures still count but cannot be cleared.
        t.record_success("c", Some("user19"));
        assert_eq!(t.clients.get("c").unwrap().failures, 20);
    }

    #[test]
    fn strikes_stored_before_identities_still_load() {
        let old: Strikes =
            serde_json::from_str(r#"{"failures":3,"last_failure_ms":1,"blocked_until_ms":0}"#)
                .unwrap();
        assert!(old.by_identity.is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse_authorization(Some(&s));
        }

        #[test]
        fn basic_round_trip(u in "[^:]{0,12}", p in ".{0,12}") {
            let h = basic(&format!("{u}:{p}"));
            prop_assert_eq!(parse_authorization(Some(&h)), Credentials::Basic { user: u, password: p });
        }
    }
}
