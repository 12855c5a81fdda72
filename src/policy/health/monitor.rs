//! What an active health monitor checks: its kind and method, expected status codes and body, where it connects, which redirects it follows, and the verdict on one answer.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::traffic::forwarding::UrlParts;

/// How much of a probe's response body is read when `expected_body` is set: enough for any
/// health page, bounded so a backend that streams forever cannot hold the probe round.
pub const BODY_PREFIX_CAP: usize = 64 * 1024;

/// Redirects followed in one probe (same origin only) before it counts as failed.
pub const MAX_REDIRECTS: u32 = 5;

/// What a monitor speaks to the backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum MonitorType {
    /// An HTTP request over the backend URL's own scheme.
    #[default]
    Http,
    /// An HTTP request over TLS, whatever the backend URL's scheme.
    Https,
    /// A TCP connection: up when it opens.
    Tcp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
pub enum ProbeMethod {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
}

impl ProbeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMethod::Get => "GET",
            ProbeMethod::Head => "HEAD",
        }
    }
}

/// One item of an `expected_codes` list: a class (`2xx`) or a single code (`204`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeSpec {
    Class(u16),
    Code(u16),
}

/// The statuses a monitor accepts, e.g. `"2xx"`, `"200,204"`, `"2xx,301"`: parsed once, at
/// config time, so a typo is an error there and matching is a plain comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExpectedCodes(Vec<CodeSpec>);

impl ExpectedCodes {
    /// What a monitor without `expected_codes` accepts.
    pub fn default_codes() -> Self {
        ExpectedCodes(vec![CodeSpec::Class(2), CodeSpec::Class(3)])
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let allowed = "a comma-separated list of classes 1xx-5xx and codes 100-599, e.g. \"2xx\", \"200,204\" or \"2xx,301\"";
        let mut specs = Vec::new();
        for item in s.split(',') {
            let t = item.trim().to_ascii_lowercase();
            let spec = match t.as_bytes() {
                [d @ b'1'..=b'5', b'x', b'x'] => CodeSpec::Class(u16::from(d - b'0')),
                [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => {
                    CodeSpec::Code(t.parse().map_err(|_| format!("{t:?}: {allowed}"))?)
                }
                [] => return Err(format!("empty item in {s:?}; expected {allowed}")),
                _ => {
                    return Err(format!(
                        "{:?} in {s:?} is not a status code or class; expected {allowed}",
                        item.trim()
                    ))
                }
            };
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
        Ok(ExpectedCodes(specs))
    }

    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|s| match *s {
            CodeSpec::Class(c) => status / 100 == c,
            CodeSpec::Code(c) => status == c,
        })
    }
}

impl fmt::Display for ExpectedCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match s {
                CodeSpec::Class(c) => write!(f, "{c}xx")?,
                CodeSpec::Code(c) => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

impl TryFrom<String> for ExpectedCodes {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ExpectedCodes::parse(&s)
    }
}

impl From<ExpectedCodes> for String {
    fn from(v: ExpectedCodes) -> String {
        v.to_string()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl schemars::JsonSchema for ExpectedCodes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExpectedCodes".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*[1-5]([0-9]{2}|[xX]{2})\\s*(,\\s*[1-5]([0-9]{2}|[xX]{2})\\s*)*$",
            "description": "Accepted statuses: classes and codes, comma-separated (\"2xx\", \"200,204\", \"2xx,301\")"
        })
    }
}

/// What one HTTP probe answer must show.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expect {
    /// None: 2xx/3xx (or, for the root fallback of discovery, anything below 500).
    pub codes: Option<ExpectedCodes>,
    /// A case-insensitive substring of the body's first [`BODY_PREFIX_CAP`] bytes.
    pub body: Option<String>,
}

impl Expect {
    /// Whether the body must be read at all.
    pub fn wants_body(&self) -> bool {
        self.body.is_some()
    }

    /// The verdict on one answer: Ok, or why it fails (`expected 2xx, got 500`,
    /// `body did not contain "ok"`). `body` is the prefix read (None when not read).
    /// `root_fallback`: discovery found no health path and probes `/`, where any answer below
    /// 500 proves the server is up (unless codes were configured).
    pub fn judge(
        &self,
        status: u16,
        body: Option<&str>,
        root_fallback: bool,
    ) -> Result<(), String> {
        match &self.codes {
            Some(codes) if !codes.matches(status) => {
                return Err(format!("expected {codes}, got {status}"))
            }
            Some(_) => {}
            None if root_fallback && status >= 500 => {
                return Err(format!("expected a status below 500, got {status}"))
            }
            None if !root_fallback && !ExpectedCodes::default_codes().matches(status) => {
                return Err(format!("expected 2xx or 3xx, got {status}"))
            }
            None => {}
        }
        if let Some(want) = &self.body {
            if !contains_ignore_case(body.unwrap_or(""), want) {
                return Err(format!("body did not contain {want:?}"));
            }
        }
        Ok(())
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Where an HTTP monitor sends its requests: the backend URL with the scheme `kind` asks for
/// and `port` if set (a backend's base path is kept; an implicit port follows the scheme).
pub fn http_base(backend: &str, kind: MonitorType, port: Option<u16>) -> String {
    let u = UrlParts::of(backend);
    let scheme = match kind {
        MonitorType::Https => "https",
        _ => u.scheme,
    };
    let port = port.or(u.port);
    let base = u.path.trim_end_matches('/');
    match port {
        Some(p) => format!("{scheme}://{}:{p}{base}", u.host),
        None => format!("{scheme}://{}{base}", u.host),
    }
}

/// Where a tcp monitor connects: the backend's host (unbracketed) and `port`, else its own port.
pub fn tcp_target(backend: &str, port: Option<u16>) -> (String, u16) {
    let u = UrlParts::of(backend);
    let host = u.host.trim_start_matches('[').trim_end_matches(']');
    (
        host.to_string(),
        port.unwrap_or_else(|| u.port_or_default()),
    )
}

/// The URL a redirect from `current` to `location` leads to, if it stays on the origin
/// (scheme, host and port) of `origin_url`; else why it is not followed.
pub fn redirect_target(origin_url: &str, current: &str, location: &str) -> Result<String, String> {
    let location = location.trim();
    let cur = UrlParts::of(current);
    let next = if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{}://{rest}", cur.scheme)
    } else {
        let origin = origin_of(current);
        if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            // Relative to the current path's directory.
            let dir = &cur.path[..cur.path.rfind('/').map_or(0, |i| i + 1)];
            format!("{origin}{dir}{location}")
        }
    };
    if origin_of(&next) == origin_of(origin_url) {
        Ok(next)
    } else {
        Err(format!(
            "redirect to {next} leaves the backend's origin {}: not followed",
            origin_of(origin_url)
        ))
    }
}

/// `scheme://host:port`, lowercased, with the port explicit.
fn origin_of(url: &str) -> String {
    let u = UrlParts::of(url);
    format!(
        "{}://{}:{}",
        u.scheme.to_ascii_lowercase(),
        u.host.to_ascii_lowercase(),
        u.port_or_default()
    )
}

/// True for the statuses that carry a `Location` to follow.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codes(s: &str) -> ExpectedCodes {
        ExpectedCodes::parse(s).unwrap()
    }

    #[test]
    fn expected_codes_parse_and_match() {
        let c = codes("2xx");
        assert!(c.matches(200) && c.matches(299));
        assert!(!c.matches(300) && !c.matches(199));
        let c = codes("200, 204");
        assert!(c.matches(200) && c.matches(204) && !c.matches(201));
        let c = codes("2XX,301");
        assert!(c.matches(250) && c.matches(301) && !c.matches(302));
        assert_eq!(c.to_string(), "2xx,301");
        assert_eq!(codes(" 200 ,200,2xx").to_string(), "200,2xx");
        assert_eq!(ExpectedCodes::default_codes().to_string(), "2xx,3xx");
    }

    #[test]
    fn expected_codes_errors_name_the_item() {
        for bad in [
            "", "2xx,", "600", "099", "2x", "abc", "20", "2000", "6xx", "200;204",
        ] {
            let e = ExpectedCodes::parse(bad).unwrap_err();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
        let e = ExpectedCodes::parse("200,2yy").unwrap_err();
        assert!(e.starts_with("\"2yy\""), "{e}");
    }

    #[test]
    fn expected_codes_serde_roundtrip() {
        let c: ExpectedCodes = serde_json::from_str("\"2xx, 301\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"2xx,301\"");
        assert!(serde_json::from_str::<ExpectedCodes>("\"7xx\"").is_err());
    }

    #[test]
    fn judge_codes_and_body() {
        let plain = Expect::default();
        assert_eq!(plain.judge(204, None, false), Ok(()));
        assert_eq!(plain.judge(302, None, false), Ok(()));
        assert_eq!(
            plain.judge(500, None, false),
            Err("expected 2xx or 3xx, got 500".into())
        );
        assert_eq!(plain.judge(404, None, true), Ok(()));
        assert_eq!(
            plain.judge(503, None, true),
            Err("expected a status below 500, got 503".into())
        );
        let strict = Expect {
            codes: Some(codes("2xx")),
            body: Some("OK".into()),
        };
        assert_eq!(
            strict.judge(500, Some("ok"), false),
            Err("expected 2xx, got 500".into())
        );
        // Configured codes apply on the root fallback too.
        assert_eq!(
            strict.judge(404, Some("ok"), true),
            Err("expected 2xx, got 404".into())
        );
        assert_eq!(strict.judge(200, Some("status: ok\n"), false), Ok(()));
        assert_eq!(strict.judge(200, Some("all Ok"), false), Ok(()));
        assert_eq!(
            strict.judge(200, Some("degraded"), false),
            Err("body did not contain \"OK\"".into())
        );
        assert_eq!(
            strict.judge(200, None, false),
            Err("body did not contain \"OK\"".into())
        );
        assert!(strict.wants_body() && !plain.wants_body());
    }

    #[test]
    fn http_base_follows_type_and_port() {
        assert_eq!(
            http_base("http://10.0.0.1:8080", MonitorType::Http, None),
            "http://10.0.0.1:8080"
        );
        assert_eq!(
            http_base("https://a.test/base/", MonitorType::Http, None),
            "https://a.test/base"
        );
        assert_eq!(
            http_base("http://a.test", MonitorType::Https, None),
            "https://a.test"
        );
        assert_eq!(
            http_base("http://[::1]:81/b", MonitorType::Https, Some(9443)),
            "https://[::1]:9443/b"
        );
    }

    #[test]
    fn tcp_target_uses_port_or_the_backends() {
        assert_eq!(tcp_target("http://[::1]:81", None), ("::1".into(), 81));
        assert_eq!(tcp_target("https://a.test", None), ("a.test".into(), 443));
        assert_eq!(
            tcp_target("http://a.test", Some(5432)),
            ("a.test".into(), 5432)
        );
    }

    #[test]
    fn redirects_stay_on_the_backends_origin() {
        let o = "http://127.0.0.1:8080";
        let cur = "http://127.0.0.1:8080/health/live";
        assert_eq!(
            redirect_target(o, cur, "/ready").unwrap(),
            "http://127.0.0.1:8080/ready"
        );
        assert_eq!(
            redirect_target(o, cur, "deep").unwrap(),
            "http://127.0.0.1:8080/health/deep"
        );
        assert_eq!(
            redirect_target(o, cur, "HTTP://127.0.0.1:8080/x").unwrap(),
            "HTTP://127.0.0.1:8080/x"
        );
        assert_eq!(
            redirect_target(o, cur, "//127.0.0.1:8080/y").unwrap(),
            "http://127.0.0.1:8080/y"
        );
        assert_eq!(
            redirect_target("https://a.test", "https://a.test/h", "https://a.test:443/z").unwrap(),
            "https://a.test:443/z"
        );
        for off in [
            "http://127.0.0.1:8081/x",
            "https://127.0.0.1:8080/x",
            "http://example.com/x",
            "//example.com/x",
        ] {
            let e = redirect_target(o, cur, off).unwrap_err();
            assert!(e.contains("leaves the backend's origin"), "{off}: {e}");
        }
        assert!(is_redirect(302) && is_redirect(308) && !is_redirect(304) && !is_redirect(300));
    }

    proptest! {
        #[test]
        fn a_single_code_matches_only_itself(code in 100u16..600, other in 100u16..600) {
            let c = codes(&code.to_string());
            prop_assert_eq!(c.matches(other), code == other);
        }

        #[test]
        fn a_class_matches_its_hundred(class in 1u16..6, status in 100u16..600) {
            let c = codes(&format!("{class}xx"));
            prop_assert_eq!(c.matches(status), status / 100 == class);
        }

        #[test]
        fn display_parses_back_to_the_same(items in proptest::collection::vec((1u16..6, any::<bool>(), 0u16..100), 1..6)) {
            let text: Vec<String> = items.iter().map(|(c, class, rest)| {
                if *class { format!("{c}xx") } else { format!("{}", c * 100 + rest) }
            }).collect();
            let c = codes(&text.join(","));
            prop_assert_eq!(codes(&c.to_string()), c);
        }
    }
}
