//! Console sessions: the `fb_session` JWT's claims, lifetime, cookie attributes, the sign-out-everywhere epoch and the CSRF / same-origin rules for cookie-authenticated writes.

use serde::{Deserialize, Serialize};

use crate::policy::access::auth::ct_eq;
use crate::policy::access::jwt::{self, Expect, Key, Registered};

/// The session cookie's name (fixed by the issue so scripts and docs can rely on it).
pub const COOKIE: &str = "fb_session";
pub const ISSUER: &str = "flowbalance";
pub const AUDIENCE: &str = "flowbalance-admin";
/// Session lifetime when `SESSION_TTL` is unset: 12 hours.
pub const DEFAULT_TTL_S: u64 = 12 * 3600;
const MIN_TTL_S: u64 = 60;
const MAX_TTL_S: u64 = 30 * 24 * 3600;

/// `SESSION_TTL` (seconds), or the problem that keeps anyone from signing in.
pub fn parse_ttl(raw: Option<&str>) -> Result<u64, String> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_TTL_S);
    };
    match raw.parse::<u64>() {
        Ok(n) if (MIN_TTL_S..=MAX_TTL_S).contains(&n) => Ok(n),
        _ => Err(format!(
            "SESSION_TTL: {raw:?} is not allowed; expected whole seconds {MIN_TTL_S}..={MAX_TTL_S} (default {DEFAULT_TTL_S}): nobody can sign in"
        )),
    }
}

/// How the operator signed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Github,
    Google,
    Password,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Github => "github",
            Via::Google => "google",
            Via::Password => "password",
        }
    }
}

/// The session token's claims: the registered ones plus the token's id (what logout revokes),
/// the sign-in method, the CSRF token the console echoes on writes, and the issue time in ms (the
/// sign-out-everywhere epoch is in ms, so a session started in the same second after it stays
/// valid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(flatten)]
    pub reg: Registered,
    pub jti: String,
    pub via: Via,
    pub csrf: String,
    pub iat_ms: u64,
}

/// The audience a session is issued for and checked against: the hostname it was signed in on,
/// so a session from one hostname is refused under another hostname's prefix (RFC 8725 §3.9).
pub fn audience(host: &str) -> String {
    format!("{AUDIENCE}:{host}")
}

/// What the server remembers against a verified session: the sign-out-everywhere epoch and
/// whether its id was revoked by a logout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    pub epoch_ms: u64,
    pub revoked: bool,
}

impl AsRef<Registered> for Claims {
    fn as_ref(&self) -> &Registered {
        &self.reg
    }
}

/// What a new session is: who, how, for which hostname, its id and CSRF token.
pub struct NewSession<'a> {
    pub sub: &'a str,
    pub via: Via,
    pub host: &'a str,
    pub jti: String,
    pub csrf: String,
}

/// A new session valid for `ttl_s` from `now_ms`.
pub fn issue(key: &Key, new: NewSession, now_ms: u64, ttl_s: u64) -> (String, Claims) {
    let now_s = now_ms / 1000;
    let claims = Claims {
        reg: Registered {
            iss: ISSUER.into(),
            aud: audience(new.host),
            sub: new.sub.into(),
            iat: now_s,
            nbf: now_s,
            exp: now_s + ttl_s,
        },
        jti: new.jti,
        via: new.via,
        csrf: new.csrf,
        iat_ms: now_ms,
    };
    (jwt::sign(key, &claims), claims)
}

/// The session's claims if the token is ours, unexpired and for `host`; or why it is refused.
/// Nothing stored is consulted yet: see [`admit`].
pub fn verify(key: &Key, token: &str, host: &str, now_ms: u64) -> Result<Claims, String> {
    let aud = audience(host);
    let claims: Claims = jwt::verify(
        key,
        token,
        Expect {
            iss: ISSUER,
            aud: &aud,
            now_s: now_ms / 1000,
        },
    )
    .map_err(|e| match e {
        jwt::JwtError::Audience => format!("token was not issued for {host}"),
        e => e.to_string(),
    })?;
    if claims.jti.is_empty() {
        return Err("token has no id (jti)".into());
    }
    Ok(claims)
}

/// Until when a signed-out session's id must be remembered: as long as the verifier would still
/// accept the token (its expiry plus the clock-skew leeway).
pub fn revoked_until(claims: &Claims) -> u64 {
    claims.reg.exp.saturating_add(jwt::LEEWAY_S)
}

/// A verified session still stands: not revoked by its logout, not issued before a sign-out
/// everywhere, and its subject still allowed (`allowed`: the allow-list as configured now).
pub fn admit(claims: &Claims, standing: Standing, allowed: bool) -> Result<(), String> {
    if standing.revoked {
        return Err("session was signed out".into());
    }
    if claims.iat_ms < standing.epoch_ms {
        return Err("session was revoked by \"sign out everywhere\"".into());
    }
    if !allowed {
        return Err(format!(
            "{} is no longer an authorized user",
            claims.reg.sub
        ));
    }
    Ok(())
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Lax always (Lax, so the provider's top-level
/// redirect back carries the state cookie), Secure on https.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_s: u64, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}")
}

/// A `Set-Cookie` value that deletes the cookie `name` set with `path`.
pub fn clear_cookie(name: &str, path: &str, https: bool) -> String {
    set_cookie(name, "", path, 0, https)
}

/// The browser-side half of the CSRF check for a cookie-authenticated write: `Sec-Fetch-Site`
/// (when sent) must be `same-origin`, and `Origin` (when sent) must be this origin; one of the two
/// must be present. A request carrying neither is refused (fail closed).
pub fn same_origin(
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
    self_origin: &str,
) -> Result<(), &'static str> {
    if let Some(site) = sec_fetch_site {
        if !site.eq_ignore_ascii_case("same-origin") {
            return Err("cross-site request refused (Sec-Fetch-Site is not same-origin)");
        }
    }
    match origin {
        Some(o) if o.eq_ignore_ascii_case(self_origin) => Ok(()),
        Some(_) => Err("cross-origin request refused (Origin is not this console's origin)"),
        None if sec_fetch_site.is_some() => Ok(()),
        None => Err("request refused: neither Origin nor Sec-Fetch-Site shows it is same-origin"),
    }
}

/// The token half of the CSRF check: `sent` (header or form field) equals the session's token.
pub fn csrf_matches(sent: Option<&str>, claims: &Claims) -> bool {
    sent.is_some_and(|s| !s.is_empty() && ct_eq(s.as_bytes(), claims.csrf.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_800_000_000_123;

    fn key() -> Key {
        Key::new(Some("0123456789abcdef0123456789abcdef")).unwrap()
    }

    fn issue(
        key: &Key,
        sub: &str,
        via: Via,
        csrf: String,
        now_ms: u64,
        ttl_s: u64,
    ) -> (String, Claims) {
        super::issue(
            key,
            NewSession {
                sub,
                via,
                host: "lb.example.com",
                jti: "id-1".into(),
                csrf,
            },
            now_ms,
            ttl_s,
        )
    }

    /// Verified and admitted with nothing revoked.
    fn check(key: &Key, token: &str, now_ms: u64, epoch_ms: u64) -> Result<Claims, String> {
        let c = verify(key, token, "lb.example.com", now_ms)?;
        admit(
            &c,
            Standing {
                epoch_ms,
                revoked: false,
            },
            true,
        )?;
        Ok(c)
    }

    #[test]
    fn ttl_is_validated() {
        assert_eq!(parse_ttl(None), Ok(DEFAULT_TTL_S));
        assert_eq!(parse_ttl(Some(" ")), Ok(DEFAULT_TTL_S));
        assert_eq!(parse_ttl(Some("3600")), Ok(3600));
        for bad in ["12h", "-1", "0", "59", "2592001", "1e3"] {
            assert!(
                parse_ttl(Some(bad)).unwrap_err().contains("SESSION_TTL"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sessions_round_trip_and_expire() {
        let (t, c) = issue(
            &key(),
            "ops@example.com",
            Via::Github,
            "tok".into(),
            NOW_MS,
            3600,
        );
        assert_eq!(check(&key(), &t, NOW_MS, 0), Ok(c.clone()));
        assert_eq!(c.reg.exp, NOW_MS / 1000 + 3600);
        assert!(check(&key(), &t, NOW_MS + 3_700_000, 0)
            .unwrap_err()
            .contains("expired"));
    }

    #[test]
    fn the_epoch_revokes_earlier_sessions_only() {
        let (t, _) = issue(&key(), "a@b.c", Via::Password, "x".into(), NOW_MS, 3600);
        assert!(check(&key(), &t, NOW_MS, NOW_MS).is_ok());
        assert!(check(&key(), &t, NOW_MS + 5, NOW_MS + 1)
            .unwrap_err()
            .contains("sign out everywhere"));
    }

    #[test]
    fn wrong_audience_is_refused() {
        let mut c = issue(&key(), "a@b.c", Via::Google, "x".into(), NOW_MS, 3600).1;
        c.reg.aud = "other".into();
        let t = jwt::sign(&key(), &c);
        assert!(check(&key(), &t, NOW_MS, 0)
            .unwrap_err()
            .contains("not issued for"));
    }

    #[test]
    fn a_session_is_bound_to_its_hostname() {
        let (t, c) = issue(&key(), "a@b.c", Via::Github, "x".into(), NOW_MS, 3600);
        assert_eq!(c.reg.aud, "flowbalance-admin:lb.example.com");
        assert!(verify(&key(), &t, "lb.example.com", NOW_MS).is_ok());
        let e = verify(&key(), &t, "app.example.com", NOW_MS).unwrap_err();
        assert!(e.contains("not issued for app.example.com"), "{e}");
    }

    #[test]
    fn a_signed_out_or_no_longer_allowed_session_is_refused() {
        let (t, c) = issue(&key(), "a@b.c", Via::Github, "x".into(), NOW_MS, 3600);
        assert_eq!(verify(&key(), &t, "lb.example.com", NOW_MS), Ok(c.clone()));
        let fine = Standing::default();
        assert_eq!(admit(&c, fine, true), Ok(()));
        let out = Standing {
            revoked: true,
            ..fine
        };
        assert!(admit(&c, out, true).unwrap_err().contains("signed out"));
        assert!(admit(&c, fine, false)
            .unwrap_err()
            .contains("no longer an authorized user"));
        // Remembered for as long as the verifier would accept the token.
        assert!(verify(&key(), &t, "lb.example.com", (revoked_until(&c) - 1) * 1000).is_ok());
        assert!(verify(&key(), &t, "lb.example.com", revoked_until(&c) * 1000).is_err());
        // A token without an id cannot be revoked: refused.
        let mut c = c;
        c.jti = String::new();
        let t = jwt::sign(&key(), &c);
        assert!(verify(&key(), &t, "lb.example.com", NOW_MS)
            .unwrap_err()
            .contains("jti"));
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie(COOKIE, "v", "/", 60, true),
            "fb_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert_eq!(
            clear_cookie("s", "/auth/", false),
            "s=; Path=/auth/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn same_origin_rules() {
        let me = "https://lb.example.com";
        assert!(same_origin(Some(me), None, me).is_ok());
        assert!(same_origin(Some(me), Some("same-origin"), me).is_ok());
        assert!(same_origin(None, Some("same-origin"), me).is_ok());
        assert!(same_origin(None, None, me).is_err());
        assert!(same_origin(Some("https://evil.example"), None, me).is_err());
        assert!(same_origin(Some("null"), None, me).is_err());
        assert!(same_origin(Some(me), Some("cross-site"), me).is_err());
        assert!(same_origin(None, Some("same-site"), me).is_err());
        assert!(same_origin(Some("http://lb.example.com"), None, me).is_err());
    }

    #[test]
    fn csrf_token_must_match() {
        let c = issue(&key(), "a@b.c", Via::Github, "abc".into(), NOW_MS, 60).1;
        assert!(csrf_matches(Some("abc"), &c));
        assert!(!csrf_matches(Some("abd"), &c));
        assert!(!csrf_matches(Some(""), &c));
        assert!(!csrf_matches(None, &c));
    }
}
