//! Field values that check themselves: string newtypes, ranged integers, percentages, seconds.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

use super::*;
use crate::policy::traffic::forwarding::UrlParts;

// ---- Newtypes: each checks itself on construction ----

macro_rules! string_newtype {
    ($name:ident, $check:path, $schema:expr) => {
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub(super) String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $check(&s).map($name)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $schema
            }
        }
    };
}
// The rules' own field types (`rules.rs`) are made the same way.
pub(super) use string_newtype;

string_newtype!(
    Hostname,
    validate_hostname,
    schemars::json_schema!({"type": "string", "description": "DNS name, IPv4 or IPv6 literal, no port (lowercased, trailing dot dropped)"})
);
string_newtype!(
    BackendUrl,
    validate_backend_url,
    schemars::json_schema!({"type": "string", "pattern": "^[hH][tT][tT][pP][sS]?://", "description": "http(s) URL with optional port and base path; no query, fragment, userinfo or dot segments"})
);
string_newtype!(
    HealthPath,
    check_health_path,
    schemars::json_schema!({"type": "string", "pattern": "^/[!-~]*$"})
);
string_newtype!(
    PoolName,
    check_pool_name,
    schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"})
);
string_newtype!(
    Token,
    check_token,
    schemars::json_schema!({"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"})
);
string_newtype!(
    HeaderValue,
    check_header_value,
    schemars::json_schema!({"type": "string", "maxLength": 1024, "pattern": "^[\\t -~]*$"})
);
string_newtype!(
    ExpectedBody,
    check_expected_body,
    schemars::json_schema!({"type": "string", "minLength": 1, "maxLength": 1024})
);
string_newtype!(
    ZoneId,
    check_zone_id,
    schemars::json_schema!({"type": "string", "pattern": "^[0-9a-f]{32}$"})
);
string_newtype!(
    RegionCode,
    check_region,
    schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z]{2}$"})
);

impl BackendUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        validate_backend_url(s).map(BackendUrl)
    }

    /// The host part (bracketed for IPv6), as normalised.
    pub fn host(&self) -> &str {
        UrlParts::of(&self.0).host
    }
}

fn check_health_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} must start with '/' and contain no spaces or control characters"
        ))
    }
}

pub(super) fn check_header_value(s: &str) -> Result<String, String> {
    if s.len() <= 1024 && s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid header value (at most 1024 visible ASCII characters, spaces or tabs)"
        ))
    }
}

fn check_expected_body(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 1024 {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: expected 1 to 1024 bytes of text"))
    }
}

fn check_pool_name(s: &str) -> Result<String, String> {
    check_name(s, "pool")
}

/// A pool's or a rule's name: 1-64 of `A-Z a-z 0-9 _ . -`.
pub(super) fn check_name(s: &str, what: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid {what} name (1-64 of A-Z a-z 0-9 _ . -)"
        ))
    }
}

// RFC 7230 tchar; cookie names (RFC 6265) use the same token grammar.
pub(super) fn check_token(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid name (RFC 7230 token)"))
    }
}

fn check_zone_id(s: &str) -> Result<String, String> {
    if s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a Cloudflare zone id (32 lowercase hexadecimal characters)"
        ))
    }
}

fn check_region(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    if upper.len() == 2 && upper.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(upper)
    } else {
        Err(format!(
            "{s:?} is not a region code (ISO country code or one of AF AN AS EU NA OC SA)"
        ))
    }
}

// ---- Numbers: ranges are part of the type's deserialisation, so errors name them ----

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// An integer in `MIN..=MAX`.
pub(super) fn int<'de, const MIN: u64, const MAX: u64, T: TryFrom<u64>, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    let v = Value::deserialize(d)?;
    let range = if MAX >= u64::from(u32::MAX) {
        format!("an integer >= {MIN}")
    } else {
        format!("an integer {MIN}..={MAX}")
    };
    match v.as_u64() {
        Some(n) if (MIN..=MAX).contains(&n) => {
            T::try_from(n).map_err(|_| de::Error::custom(format!("expected {range}, found {n}")))
        }
        _ => Err(de::Error::custom(format!(
            "expected {range}, found {}",
            describe(&v)
        ))),
    }
}

pub(super) fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    match v.as_f64() {
        Some(f) if f > 0.0 && f <= 100.0 => Ok(f),
        _ => Err(de::Error::custom(format!(
            "expected a percentage > 0 and <= 100, found {}",
            describe(&v)
        ))),
    }
}

/// A share from 0 to 1 inclusive (`logging.success_sample_rate`).
pub(super) fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    match v.as_f64() {
        Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(de::Error::custom(format!(
            "expected a number from 0 to 1, found {}",
            describe(&v)
        ))),
    }
}

/// Seconds in the config (fractions allowed), milliseconds inside.
macro_rules! seconds_field {
    ($module:ident, $min_ms:expr, $max_ms:expr, $range:expr) => {
        pub(super) mod $module {
            use super::*;
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
                let v = Value::deserialize(d)?;
                let ms = v.as_f64().map(|s| (s * 1000.0).round());
                match ms {
                    Some(ms) if ms >= $min_ms as f64 && ms <= $max_ms as f64 => Ok(ms as u64),
                    _ => Err(de::Error::custom(format!(
                        "expected seconds {}, found {}",
                        $range,
                        describe(&v)
                    ))),
                }
            }
            pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
                // Whole seconds stay integers so the canonical JSON reads like hand-written config.
                if ms % 1000 == 0 {
                    s.serialize_u64(ms / 1000)
                } else {
                    s.serialize_f64(*ms as f64 / 1000.0)
                }
            }
        }
    };
}

seconds_field!(secs_100ms_1d, 100, 86_400_000, "0.1..=86400");
seconds_field!(secs_1ms_60s, 1, 60_000, "0.001..=60");
seconds_field!(secs_0_1h, 0, 3_600_000, "0..=3600");
