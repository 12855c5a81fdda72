//! HS256 JSON Web Tokens (RFC 7519) with the algorithm pinned per RFC 8725: signing and strict verification of the console's session tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::policy::access::auth::ct_eq;

/// RFC 8725 §3.5: an HMAC key needs at least as many bytes as the hash output.
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
pub const LEEWAY_S: u64 = 30;
/// Tokens longer than this are refused before any work (a session token is a few hundred bytes).
const MAX_TOKEN_LEN: usize = 4096;

/// The only header this verifier accepts, field for field: no `kid`, `jku`, `jwk`, `x5u`, `crit`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// A signing key of acceptable length.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// The key, or why it cannot sign (missing or under 32 bytes).
    pub fn new(secret: Option<&str>) -> Result<Key, &'static str> {
        match secret {
            None => Err("JWT_SECRET is missing or shorter than 32 bytes: nobody can sign in"),
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                Err("JWT_SECRET is missing or shorter than 32 bytes: nobody can sign in")
            }
            Some(s) => Ok(Key(s.as_bytes().to_vec())),
        }
    }

    /// HMAC-SHA256 of `data` under this key, with a purpose label so one secret never produces
    /// the same MAC for two kinds of message (a session token and an OAuth state cookie).
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, &[purpose.as_bytes(), &[0], data])
    }
}

/// HMAC-SHA256 over the concatenated `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length: this `else` is never taken.
    let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The registered claims every token carries, checked on every verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// What the verifier expects of the registered claims.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub now_s: u64,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtError {
    Malformed(&'static str),
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    Issuer,
    Audience,
    Subject,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::Algorithm => f.write_str("token algorithm is not HS256"),
            JwtError::Signature => f.write_str("token signature is invalid"),
            JwtError::Expired => f.write_str("token has expired"),
            JwtError::NotYetValid => f.write_str("token is not valid yet (nbf)"),
            JwtError::IssuedInFuture => f.write_str("token is issued in the future (iat)"),
            JwtError::Issuer => f.write_str("token issuer is wrong"),
            JwtError::Audience => f.write_str("token audience is wrong"),
            JwtError::Subject => f.write_str("token has no subject"),
        }
    }
}

/// Signs `claims` (a struct flattening [`Registered`] plus private claims) as an HS256 JWT.
pub fn sign<C: Serialize>(key: &Key, claims: &C) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{header}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(hs256(key, input.as_bytes()));
    format!("{input}.{sig}")
}

/// Plain HS256 (no purpose label): the JWT signature as RFC 7518 defines it, so tokens are
/// verifiable by any standard library holding the secret.
fn hs256(key: &Key, input: &[u8]) -> [u8; 32] {
    hmac_sha256(&key.0, &[input])
}

/// Verifies signature, algorithm and every registered claim, then returns the claims. The header
/// is checked before the signature only for its shape: nothing in it chooses a key or algorithm.
pub fn verify<C: DeserializeOwned + AsRef<Registered>>(
    key: &Key,
    token: &str,
    expect: Expect,
) -> Result<C, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(b), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwtError::Malformed("header is not {alg, typ}"))?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(JwtError::Malformed("typ is not JWT"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let expected = hs256(key, format!("{h}.{b}").as_bytes());
    if !ct_eq(&sig, &expected) {
        return Err(JwtError::Signature);
    }
    let body = URL_SAFE_NO_PAD
        .decode(b)
        .map_err(|_| JwtError::Malformed("payload is not base64url"))?;
    let claims: C = serde_json::from_slice(&body)
        .map_err(|_| JwtError::Malformed("payload lacks a required claim"))?;
    check_registered(claims.as_ref(), expect)?;
    Ok(claims)
}

fn check_registered(r: &Registered, e: Expect) -> Result<(), JwtError> {
    if r.iss != e.iss {
        return Err(JwtError::Issuer);
    }
    if r.aud != e.aud {
        return Err(JwtError::Audience);
    }
    if r.sub.trim().is_empty() {
        return Err(JwtError::Subject);
    }
    if e.now_s >= r.exp.saturating_add(LEEWAY_S) {
        return Err(JwtError::Expired);
    }
    if r.nbf > e.now_s.saturating_add(LEEWAY_S) {
        return Err(JwtError::NotYetValid);
    }
    if r.iat > e.now_s.saturating_add(LEEWAY_S) {
        return Err(JwtError::IssuedInFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Claims {
        #[serde(flatten)]
        reg: Registered,
        csrf: String,
    }
    impl AsRef<Registered> for Claims {
        fn as_ref(&self) -> &Registered {
            &self.reg
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn key() -> Key {
        Key::new(Some(SECRET)).unwrap()
    }
    fn claims() -> Claims {
        Claims {
            reg: Registered {
                iss: "flowbalance".into(),
                aud: "flowbalance-admin".into(),
                sub: "ops@example.com".into(),
                iat: NOW,
                nbf: NOW,
                exp: NOW + 3600,
            },
            csrf: "c".into(),
        }
    }
    fn expect(now_s: u64) -> Expect<'static> {
        Expect {
            iss: "flowbalance",
            aud: "flowbalance-admin",
            now_s,
        }
    }
    fn check(token: &str, now: u64) -> Result<Claims, JwtError> {
        verify::<Claims>(&key(), token, expect(now))
    }
    fn forge(header: &str, payload: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn short_or_missing_secret_is_refused_with_the_reason() {
        assert!(Key::new(None).unwrap_err().contains("JWT_SECRET"));
        assert!(Key::new(Some(&"x".repeat(31))).is_err());
        assert!(Key::new(Some(&"x".repeat(32))).is_ok());
    }

    #[test]
    fn round_trip_and_standard_hs256() {
        let t = sign(&key(), &claims());
        assert_eq!(check(&t, NOW).unwrap(), claims());
        // The signature is plain HS256 over `header.payload` (interoperable).
        let (input, sig) = t.rsplit_once('.').unwrap();
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(input.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.decode(sig).unwrap(),
            m.finalize().into_bytes().to_vec()
        );
    }

    #[test]
    fn tampered_payload_and_wrong_secret_are_refused() {
        let t = sign(&key(), &claims());
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims();
        c.reg.sub = "attacker@example.com".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], body, parts[2]);
        assert_eq!(check(&tampered, NOW), Err(JwtError::Signature));
        let other = Key::new(Some("another-secret-another-secret-123")).unwrap();
        assert_eq!(
            verify::<Claims>(&other, &t, expect(NOW)),
            Err(JwtError::Signature)
        );
        // One flipped signature bit.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(check(&flipped, NOW), Err(JwtError::Signature));
    }

    #[test]
    fn time_claims_with_leeway() {
        let t = sign(&key(), &claims());
        assert!(check(&t, NOW + 3600 + LEEWAY_S - 1).is_ok());
        assert_eq!(check(&t, NOW + 3600 + LEEWAY_S), Err(JwtError::Expired));
        let mut c = claims();
        c.reg.nbf = NOW + 600;
        assert_eq!(check(&sign(&key(), &c), NOW), Err(JwtError::NotYetValid));
        let mut c = claims();
        c.reg.iat = NOW + 600;
        assert_eq!(check(&sign(&key(), &c), NOW), Err(JwtError::IssuedInFuture));
    }

    #[test]
    fn wrong_issuer_audience_or_empty_subject() {
        let mut c = claims();
        c.reg.aud = "someone-else".into();
        assert_eq!(check(&sign(&key(), &c), NOW), Err(JwtError::Audience));
        let mut c = claims();
        c.reg.iss = "evil".into();
        assert_eq!(check(&sign(&key(), &c), NOW), Err(JwtError::Issuer));
        let mut c = claims();
        c.reg.sub = " ".into();
        assert_eq!(check(&sign(&key(), &c), NOW), Err(JwtError::Subject));
    }

    #[test]
    fn algorithm_is_pinned() {
        let payload = serde_json::to_string(&claims()).unwrap();
        // alg none with an empty signature.
        let none = forge(r#"{"alg":"none","typ":"JWT"}"#, &payload, b"");
        assert_eq!(check(&none, NOW), Err(JwtError::Algorithm));
        for alg in ["HS384", "HS512", "RS256", "ES256", "hs256", "NONE"] {
            let t = forge(&format!(r#"{{"alg":"{alg}"}}"#), &payload, b"x");
            assert_eq!(check(&t, NOW), Err(JwtError::Algorithm), "{alg}");
        }
        // Key-selection headers are refused even with a valid HS256 signature over them.
        for extra in [
            r#","kid":"../../dev/null""#,
            r#","jku":"https://evil/jwks""#,
            r#","jwk":{}"#,
            r#","crit":["x"]"#,
        ] {
            let header = format!(r#"{{"alg":"HS256","typ":"JWT"{extra}}}"#);
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(&payload)
            );
            let sig = URL_SAFE_NO_PAD.encode(hs256(&key(), input.as_bytes()));
            assert!(
                matches!(
                    check(&format!("{input}.{sig}"), NOW),
                    Err(JwtError::Malformed(_))
                ),
                "{extra}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        for t in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(5000)] {
            assert!(matches!(check(t, NOW), Err(JwtError::Malformed(_))), "{t}");
        }
        // Valid signature but a payload without the registered claims.
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
        );
        let sig = URL_SAFE_NO_PAD.encode(hs256(&key(), input.as_bytes()));
        assert!(matches!(
            check(&format!("{input}.{sig}"), NOW),
            Err(JwtError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(t in ".{0,300}", dots in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,43}") {
            let _ = check(&t, NOW);
            let _ = check(&dots, NOW);
        }
    }

    #[test]
    fn purpose_labels_separate_macs() {
        assert_ne!(key().mac("a", b"x"), key().mac("b", b"x"));
        assert_eq!(key().mac("a", b"x"), key().mac("a", b"x"));
    }
}
