//! Session affinity: HMAC-signed pin cookies, cookie header helpers and rendezvous hashing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Result of checking a pin cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    Valid { backend_id: String, expires_s: u64 },
    Invalid,
    Expired,
}

/// MAC over `hostname|backend_id|expires_s`: binding the hostname stops a cookie minted for one
/// balanced hostname from pinning a client on another that shares the secret.
fn mac(secret: &[u8], hostname: &str, payload: &str) -> Option<HmacSha256> {
    // HMAC accepts keys of any length, so this never fails; Option keeps the code panic-free.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).ok()?;
    m.update(hostname.as_bytes());
    m.update(b"|");
    m.update(payload.as_bytes());
    Some(m)
}

/// Cookie value: base64url(`backend_id|expires_s`) `.` base64url(HMAC-SHA256).
pub fn sign(secret: &[u8], hostname: &str, backend_id: &str, expires_s: u64) -> String {
    let payload = format!("{backend_id}|{expires_s}");
    match mac(secret, hostname, &payload) {
        Some(m) => format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        ),
        // Unreachable (see `mac`); an empty value simply never verifies.
        None => String::new(),
    }
}

/// Checks a pin cookie. Tampered, foreign-host, wrong-secret and garbage values are `Invalid`;
/// a genuine cookie at or past its expiry is `Expired`.
pub fn verify(secret: &[u8], hostname: &str, value: &str, now_s: u64) -> Pin {
    let Some((payload_b64, sig_b64)) = value.split_once('.') else {
        return Pin::Invalid;
    };
    // The base64 engine rejects padding and non-zero trailing bits, so decoding is injective:
    // no two distinct strings decode to the same bytes (no malleable re-encodings).
    let (Ok(payload), Ok(sig)) = (
        URL_SAFE_NO_PAD.decode(payload_b64),
        URL_SAFE_NO_PAD.decode(sig_b64),
    ) else {
        return Pin::Invalid;
    };
    let Ok(payload) = String::from_utf8(payload) else {
        return Pin::Invalid;
    };
    let Some(m) = mac(secret, hostname, &payload) else {
        return Pin::Invalid;
    };
    // Constant-time comparison: no timing oracle for forging a signature byte by byte.
    if m.verify_slice(&sig).is_err() {
        return Pin::Invalid;
    }
    // rsplit: the expiry is the last field, so an opaque backend id may itself contain '|'.
    let Some((backend_id, exp)) = payload.rsplit_once('|') else {
        return Pin::Invalid;
    };
    let Some(expires_s) = parse_canonical_u64(exp) else {
        return Pin::Invalid;
    };
    if now_s >= expires_s {
        return Pin::Expired;
    }
    Pin::Valid {
        backend_id: backend_id.to_string(),
        expires_s,
    }
}

/// Only the exact form `sign` writes: digits, no sign, no leading zeros.
fn parse_canonical_u64(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// Short stable id for a backend URL: first 12 hex chars of SHA-256(url). Keeps the URL itself
/// out of the cookie while staying stable across config reloads.
pub fn backend_id(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Set-Cookie value: `name=value; Path=/; Max-Age=ttl; HttpOnly; SameSite=Lax` (+ `; Secure`).
pub fn set_cookie(name: &str, value: &str, ttl_s: u64, https: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; Max-Age={ttl_s}; HttpOnly; SameSite=Lax");
    if https {
        c.push_str("; Secure");
    }
    c
}

/// Finds a cookie by exact name in a Cookie request header (`a=1; b=2`); first match wins.
/// Surrounding double quotes (allowed by RFC 6265) are stripped.
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k.trim() != name {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v),
        )
    })
}

/// Rendezvous (highest random weight) hashing: each candidate scores SHA-256(key, candidate) and
/// the highest wins, so removing a candidate only moves the keys that were on it.
pub fn rendezvous(key: &str, candidates: &[&str]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // Tie-break on the candidate text, not its position, so order does not matter.
            (hrw_hash(key, c), *c, std::cmp::Reverse(i))
        })
        .max()
        .map(|(_, _, std::cmp::Reverse(i))| i)
}

/// SHA-256 of (key, candidate), first 8 bytes: the per-pair score of rendezvous hashing.
fn hrw_hash(key: &str, candidate: &str) -> u64 {
    let mut h = Sha256::new();
    // Length prefix makes (key, candidate) unambiguous: ("ab","c") != ("a","bc").
    h.update((key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(candidate.as_bytes());
    let d = h.finalize();
    let mut score = [0u8; 8];
    score.copy_from_slice(&d[..8]);
    u64::from_be_bytes(score)
}

/// Weighted rendezvous hashing (Schindelhauer and Schomaker's logarithmic method): candidate
/// `(name, weight)` scores `weight / -ln(u)` with `u` the pair's hash mapped into (0, 1), so a
/// candidate's share of keys is proportional to its weight, and removing one moves only its keys.
pub fn rendezvous_weighted(key: &str, candidates: &[(&str, u32)]) -> Option<usize> {
    let mut best: Option<(f64, &str, usize)> = None;
    for (i, &(c, w)) in candidates.iter().enumerate() {
        // 53 bits plus a half step: strictly inside (0, 1), so ln(u) is finite and negative.
        let u = ((hrw_hash(key, c) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(w.max(1)) / -u.ln();
        let better = match best {
            None => true,
            Some((s, name, _)) => score > s || (score == s && c > name),
        };
        if better {
            best = Some((score, c, i));
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: &[u8] = b"secret-key";

    #[test]
    fn round_trip() {
        let v = sign(S, "app.example", "abc123def456", 1_000);
        assert_eq!(
            verify(S, "app.example", &v, 999),
            Pin::Valid {
                backend_id: "abc123def456".into(),
                expires_s: 1_000
            }
        );
        // Backend ids containing the separator still round-trip.
        let v = sign(S, "h", "a|b", 5);
        assert_eq!(
            verify(S, "h", &v, 0),
            Pin::Valid {
                backend_id: "a|b".into(),
                expires_s: 5
            }
        );
    }

    #[test]
    fn pinned_format() {
        let v = sign(S, "h", "id", 7);
        let (p, sig) = v.split_once('.').unwrap();
        assert_eq!(p, URL_SAFE_NO_PAD.encode("id|7"));
        assert_eq!(sig.len(), 43); // 32 bytes, unpadded base64
    }

    #[test]
    fn rejections() {
        let v = sign(S, "h", "id", 100);
        assert_eq!(verify(S, "h", &v, 100), Pin::Expired);
        assert_eq!(verify(S, "other", &v, 0), Pin::Invalid);
        assert_eq!(verify(b"other-secret", "h", &v, 0), Pin::Invalid);
        // Tampered payload with the original signature (pick a different backend).
        let (_, sig) = v.split_once('.').unwrap();
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("id2|100"));
        assert_eq!(verify(S, "h", &forged, 0), Pin::Invalid);
        // Extended expiry.
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("id|99999"));
        assert_eq!(verify(S, "h", &forged, 0), Pin::Invalid);
        // Tampered signature.
        let mut bad = v.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(verify(S, "h", &bad, 0), Pin::Invalid);
        for garbage in ["", ".", "nodot", "!!!.???", "a.b.c", "aWR8MTAw."] {
            assert_eq!(verify(S, "h", garbage, 0), Pin::Invalid, "{garbage:?}");
        }
    }

    #[test]
    fn non_utf8_and_noncanonical_payloads_rejected() {
        // Properly MACed but not something sign() would produce.
        let forge = |payload: &[u8]| {
            let mut m = <HmacSha256 as Mac>::new_from_slice(S).unwrap();
            m.update(b"h|");
            m.update(payload);
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
            )
        };
        assert_eq!(verify(S, "h", &forge(b"\xff\xfe|5"), 0), Pin::Invalid);
        assert_eq!(verify(S, "h", &forge(b"id|+5"), 0), Pin::Invalid);
        assert_eq!(verify(S, "h", &forge(b"id|05"), 0), Pin::Invalid);
        assert_eq!(verify(S, "h", &forge(b"id5"), 0), Pin::Invalid);
        assert_eq!(
            verify(S, "h", &forge(b"id|5"), 0),
            Pin::Valid {
                backend_id: "id".into(),
                expires_s: 5
            }
        );
    }

    #[test]
    fn backend_id_is_short_and_stable() {
        // SHA-256("") = e3b0c44298fc1c14...
        assert_eq!(backend_id(""), "e3b0c44298fc");
        assert_eq!(backend_id("https://a"), backend_id("https://a"));
        assert_ne!(backend_id("https://a"), backend_id("https://b"));
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie("fb", "v", 60, false),
            "fb=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie("fb", "v", 60, true),
            "fb=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let h = "a=1; fb_x=2;fb= 3 ; q=\"4\"";
        assert_eq!(cookie_value(h, "a"), Some("1"));
        assert_eq!(cookie_value(h, "fb"), Some("3"));
        assert_eq!(cookie_value(h, "q"), Some("4"));
        assert_eq!(cookie_value(h, "f"), None);
        assert_eq!(cookie_value("", "a"), None);
        assert_eq!(cookie_value("junk;;=", "a"), None);
    }

    #[test]
    fn rendezvous_basics() {
        assert_eq!(rendezvous("k", &[]), None);
        assert_eq!(rendezvous("k", &["only"]), Some(0));
        // Order of candidates does not change the chosen candidate.
        let a = rendezvous("client-1", &["x", "y", "z"]).unwrap();
        let b = rendezvous("client-1", &["z", "y", "x"]).unwrap();
        assert_eq!(["x", "y", "z"][a], ["z", "y", "x"][b]);
    }

    proptest! {
        #[test]
        fn single_byte_change_never_valid(
            id in "[a-f0-9]{12}",
            exp in 1u64..u64::MAX,
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let v = sign(S, "h", &id, exp);
            let mut bytes = v.clone().into_bytes();
            let p = pos.index(bytes.len());
            prop_assume!(bytes[p] != byte);
            bytes[p] = byte;
            if let Ok(s) = String::from_utf8(bytes) {
                let valid = matches!(verify(S, "h", &s, 0), Pin::Valid { .. });
                prop_assert!(!valid);
            }
        }

        #[test]
        fn rendezvous_stable_on_removal(keys in prop::collection::vec("[a-z0-9.]{1,16}", 1..40), removed in 0usize..5) {
            let all = ["b0", "b1", "b2", "b3", "b4"];
            let rest: Vec<&str> = all.iter().copied().filter(|c| *c != all[removed]).collect();
            for k in &keys {
                let before = all[rendezvous(k, &all).unwrap()];
                let after = rest[rendezvous(k, &rest).unwrap()];
                if before != all[removed] {
                    prop_assert_eq!(before, after);
                }
            }
        }
    }
}
