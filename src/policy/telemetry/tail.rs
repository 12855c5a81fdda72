//! The live tail's lines, their bounds (tails per hostname, unacknowledged lines per consumer) and why a request went where it went.

use serde::{Deserialize, Serialize};

use crate::policy::control::config::{AffinityKind, EndpointSteering, PoolSteering, ServiceConfig};
use crate::policy::health::transitions::HealthEvent;
use crate::policy::telemetry::record::RequestRecord;
use crate::policy::traffic::decision::Route;
use crate::policy::traffic::rules::RuleAnswer;

/// Tails open at once per hostname; one more is refused (429).
pub const MAX_TAILS: usize = 8;
/// Lines a consumer may have unacknowledged; one more and it is dropped (closed with
/// [`SLOW_CLOSE_CODE`]) rather than buffered for.
pub const WINDOW: u64 = 500;
pub const SLOW_CLOSE_CODE: u16 = 4008;
/// A request line carries at most this many bytes of the path.
pub const MAX_PATH: usize = 256;

/// One consumer's position: lines sent and lines it acknowledged (kept with its WebSocket, so it
/// survives the object hibernating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub sent: u64,
    pub acked: u64,
}

impl Cursor {
    /// Takes the sequence number of the next line, or None when the consumer is too far behind.
    pub fn advance(&mut self) -> Option<u64> {
        if self.sent - self.acked >= WINDOW {
            return None;
        }
        self.sent += 1;
        Some(self.sent)
    }

    /// A consumer's message: the `seq` of the last line it has read.
    pub fn ack(&mut self, text: &str) -> Result<(), String> {
        match text.trim().parse::<u64>() {
            Ok(n) => {
                self.acked = self.acked.max(n.min(self.sent));
                Ok(())
            }
            Err(_) => Err(format!(
                "unreadable acknowledgement {:?}: send the seq of the last line read, e.g. \"{}\"",
                text.chars().take(40).collect::<String>(),
                self.sent
            )),
        }
    }
}

/// A finished request as the edge reports it (only while a tail listens).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    /// The request, its path cut to [`MAX_PATH`] bytes.
    #[serde(flatten)]
    pub request: RequestRecord,
    /// Why that backend: `round robin`, `affinity pin`, `affinity hash`, `geo pool NAME`, `panic`,
    /// `rule NAME → pool NAME, ...`, and `retry` when an attempt after the first answered;
    /// `refused: ...` when none was tried, `rule NAME → respond STATUS` when a rule answered.
    pub why: String,
}

/// What a tail shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// First line on a new tail: the bounds the consumer must respect.
    Hello {
        hostname: String,
        window: u64,
        max_tails: usize,
    },
    Request(RequestLine),
    Health(HealthEvent),
    Config {
        hostname: String,
        at_ms: u64,
        version: u64,
        action: String,
    },
    /// The consumer sent something the tail cannot read.
    Error {
        message: String,
    },
}

#[derive(Serialize)]
struct Framed<'a> {
    seq: u64,
    #[serde(flatten)]
    line: &'a Line,
}

/// The line as sent: one JSON object with its sequence number.
pub fn encode(seq: u64, line: &Line) -> String {
    serde_json::to_string(&Framed { seq, line }).unwrap_or_default()
}

/// At most [`MAX_PATH`] bytes of `path`, cut at a character boundary.
pub fn bounded_path(path: &str) -> String {
    if path.len() <= MAX_PATH {
        return path.to_string();
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// Why the decision chose `route`'s first backend. `keyed`: the request carried the hash
/// affinity key (the header value, or the client address for `ip_cookie`). A traffic rule that
/// decided comes first: `rule api → pool api, round robin`.
pub fn why(cfg: &ServiceConfig, route: &Route, keyed: bool) -> String {
    let ruled = rule_why(cfg, route);
    if route.panic {
        return match ruled {
            Some(rule) => format!("{rule}, panic"),
            None => "panic".to_string(),
        };
    }
    let first = route.attempts.first();
    let choice = match cfg.affinity().map(|a| a.kind) {
        // A cookie pin is honoured by sending no new pin for that backend.
        Some(AffinityKind::Cookie | AffinityKind::IpCookie)
            if route.cookie.is_some() && first.is_some_and(|a| a.pin.is_none()) =>
        {
            "affinity pin"
        }
        Some(AffinityKind::Header | AffinityKind::IpCookie) if keyed => "affinity hash",
        _ => match cfg.load_balancer.endpoint_steering {
            EndpointSteering::RoundRobin => "round robin",
            EndpointSteering::LeastOutstandingRequests => "least outstanding requests",
            EndpointSteering::Latency => "lowest latency of two",
            EndpointSteering::Hash => "client hash",
        },
    };
    let steering = match cfg.load_balancer.steering {
        PoolSteering::Failover => Some("failover pool"),
        PoolSteering::Geo if cfg.geo.is_some() => Some("geo pool"),
        PoolSteering::Geo => None,
        PoolSteering::Dynamic => Some("dynamic pool"),
    };
    // A rule that chose the pool bypassed pool steering.
    let chose_pool = route.rules.as_ref().is_some_and(|r| r.pool.is_some());
    // Dynamic steering says which region it read and the latencies it compared.
    let dynamic = route.pool_why.clone().filter(|_| !chose_pool);
    let pool = dynamic.or_else(|| {
        steering.filter(|_| !chose_pool).and_then(|kind| {
            let url = first?.url.as_str();
            cfg.pools
                .iter()
                .find(|p| p.backends.iter().any(|b| b.url == url))
                .map(|p| format!("{kind} {}", p.name))
        })
    });
    match (ruled, pool) {
        (Some(rule), _) => format!("{rule}, {choice}"),
        (None, Some(pool)) => format!("{pool}, {choice}"),
        (None, None) => choice.to_string(),
    }
}

/// The rule that decided a routed request and what it chose: `rule api → pool api`,
/// `rule shop-canary → split web 95 / canary 5 → canary`, or `rule strip-api` (no pool).
fn rule_why(cfg: &ServiceConfig, route: &Route) -> Option<String> {
    let effects = route.rules.as_ref()?;
    let name = effects.decided_by.as_deref()?;
    let rule = cfg.rules.iter().find(|r| r.name.as_str() == name);
    Some(
        match (&effects.pool, rule.and_then(|r| r.then.split.as_ref())) {
            (Some(chosen), Some(split)) => {
                let shares: Vec<String> = split
                    .iter()
                    .map(|s| format!("{} {}", s.pool, s.weight))
                    .collect();
                format!("rule {name} → split {} → {chosen}", shares.join(" / "))
            }
            (Some(pool), None) => format!("rule {name} → pool {pool}"),
            (None, _) => format!("rule {name}"),
        },
    )
}

/// The reason for a request a traffic rule answered itself: `rule no-trace → respond 405`,
/// `rule old-docs → redirect 308 https://docs.example.com/old-docs/`, kept to one short line.
pub fn answered_by_rule(answer: &RuleAnswer) -> String {
    let why = match &answer.location {
        Some(to) => format!("rule {} → redirect {} {to}", answer.rule, answer.status),
        None => format!("rule {} → respond {}", answer.rule, answer.status),
    };
    if why.len() > MAX_PATH {
        bounded_path(&why)
    } else {
        why
    }
}

/// The reason for a request the object refused before any backend (access list, rate limit,
/// no enabled backend), kept to one short line.
pub fn refused(message: &str) -> String {
    let mut why = format!("refused: {message}");
    if why.len() > MAX_PATH {
        why = bounded_path(&why);
    }
    why
}

/// The decision's reason, plus `retry` when the answer came from a later attempt.
pub fn answered_why(decided: &str, attempts: u32) -> String {
    if attempts > 1 {
        format!("{decided}, retry ({attempts} attempts)")
    } else {
        decided.to_string()
    }
}

/// The object's decide reply: the verdict's JSON, then, only while a tail listens, a newline and
/// the reason (compact JSON never holds a raw newline, so the split is unambiguous).
pub fn reply(verdict_json: Vec<u8>, why: Option<&str>) -> Vec<u8> {
    let mut out = verdict_json;
    if let Some(w) = why {
        out.push(b'\n');
        out.extend_from_slice(w.replace('\n', " ").as_bytes());
    }
    out
}

/// Reads [`reply`]: the verdict's JSON and the reason when a tail listens.
pub fn split_reply(text: &str) -> (&str, Option<&str>) {
    match text.split_once('\n') {
        Some((json, why)) => (json, Some(why)),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::control::config::{self, Deployment};
    use crate::policy::traffic::decision::CookieSpec;

    fn cfg(v: serde_json::Value) -> ServiceConfig {
        config::parse_service(&v, "", &Deployment::default()).unwrap()
    }

    fn route(urls: &[&str], pins: bool, cookie: bool, panic: bool) -> Route {
        let mut r = Route {
            retries: 1,
            conn_retries: 1,
            panic,
            cookie: cookie.then(|| CookieSpec {
                name: "fb".into(),
                ttl_s: 60,
            }),
            ..Route::to(urls)
        };
        for a in &mut r.attempts {
            a.pin = pins.then(|| "p".to_string());
        }
        r
    }

    #[test]
    fn cursor_drops_a_consumer_that_stops_acknowledging() {
        let mut c = Cursor::default();
        for i in 1..=WINDOW {
            assert_eq!(c.advance(), Some(i));
        }
        assert_eq!(c.advance(), None, "a full window is not buffered further");
        c.ack("10").unwrap();
        assert_eq!(c.advance(), Some(WINDOW + 1));
        // An ack past what was sent acknowledges only what was sent; an old ack changes nothing.
        c.ack("999999").unwrap();
        assert_eq!(c.acked, WINDOW + 1);
        c.ack(" 3 ").unwrap();
        assert_eq!(c.acked, WINDOW + 1);
        let e = c.ack("ok").unwrap_err();
        assert!(e.contains("\"ok\""), "{e}");
    }

    #[test]
    fn lines_are_one_json_object_with_seq_and_type() {
        let line = Line::Request(RequestLine {
            request: RequestRecord {
                ts_ms: 5,
                method: "GET".into(),
                path: "/a?b=1".into(),
                status: 200,
                backend: Some("http://b:1".into()),
                attempts: 1,
                latency_ms: 3,
            },
            why: "round robin".into(),
        });
        let v: serde_json::Value = serde_json::from_str(&encode(7, &line)).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["type"], "request");
        assert_eq!(v["status"], 200);
        assert_eq!(v["why"], "round robin");
        // The line's fields, flat, as the console reads them; the object reads the line back.
        let Line::Request(request) = &line else {
            unreachable!()
        };
        assert_eq!(
            serde_json::to_value(request).unwrap(),
            serde_json::json!({"ts_ms": 5, "method": "GET", "path": "/a?b=1", "status": 200,
                "backend": "http://b:1", "attempts": 1, "latency_ms": 3, "why": "round robin"})
        );
        let back: RequestLine =
            serde_json::from_str(&serde_json::to_string(request).unwrap()).unwrap();
        assert_eq!(&back, request);
        let err: serde_json::Value = serde_json::from_str(&encode(
            1,
            &Line::Error {
                message: "x".into(),
            },
        ))
        .unwrap();
        assert_eq!(
            (err["type"].as_str(), err["message"].as_str()),
            (Some("error"), Some("x"))
        );
    }

    #[test]
    fn long_paths_are_cut_at_a_char_boundary() {
        assert_eq!(bounded_path("/short"), "/short");
        let long = format!("/{}", "é".repeat(300));
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_PATH + "…".len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn why_names_the_traffic_rule_that_decided() {
        use crate::policy::traffic::rules::RuleEffects;
        let c = cfg(serde_json::json!({"hostname": "a.test",
        "pools": [{"name": "web", "backends": ["http://127.0.0.1:1"]}, {"name": "canary", "backends": ["http://127.0.0.1:2"]}],
        "geo_steering": {"regions": {"EU": "web"}, "fallback_pool": "web"},
        "rules": [
            {"name": "api", "when": {"path_prefix": "/api/"}, "then": {"pool": "canary"}},
            {"name": "shop-canary", "then": {"split": [{"pool": "web", "weight": 95}, {"pool": "canary", "weight": 5}]}},
            {"name": "strip", "then": {"rewrite": {"strip_prefix": "/x"}}}
        ]}));
        let ruled = |decided: Option<&str>, pool: Option<&str>, panic: bool| Route {
            rules: Some(RuleEffects {
                matched: decided.into_iter().map(str::to_string).collect(),
                decided_by: decided.map(str::to_string),
                pool: pool.map(str::to_string),
                ..RuleEffects::default()
            }),
            ..route(&["http://127.0.0.1:2"], false, false, panic)
        };
        assert_eq!(
            why(&c, &ruled(Some("api"), Some("canary"), false), false),
            "rule api → pool canary, round robin"
        );
        assert_eq!(
            why(
                &c,
                &ruled(Some("shop-canary"), Some("canary"), false),
                false
            ),
            "rule shop-canary → split web 95 / canary 5 → canary, round robin"
        );
        // A deciding rule without a pool: steering chose the pool, and says so.
        assert_eq!(
            why(&c, &ruled(Some("strip"), None, false), false),
            "rule strip, round robin"
        );
        assert_eq!(
            why(&c, &ruled(None, None, false), false),
            "geo pool canary, round robin"
        );
        assert_eq!(
            why(&c, &ruled(Some("api"), Some("canary"), true), false),
            "rule api → pool canary, panic"
        );
        let answer = |location: Option<&str>, status: u16| RuleAnswer {
            log: Default::default(),
            rule: "old-docs".into(),
            matched: vec!["old-docs".into()],
            status,
            location: location.map(str::to_string),
            body: String::new(),
            content_type: None,
            response_headers: Default::default(),
        };
        assert_eq!(
            answered_by_rule(&answer(Some("https://docs.example.com/a"), 308)),
            "rule old-docs → redirect 308 https://docs.example.com/a"
        );
        assert_eq!(
            answered_by_rule(&answer(None, 405)),
            "rule old-docs → respond 405"
        );
        let long = answered_by_rule(&answer(
            Some(&format!("https://x.test/{}", "a".repeat(1000))),
            302,
        ));
        assert!(long.len() <= MAX_PATH + "…".len());
    }

    #[test]
    fn why_names_the_rule_that_chose() {
        let plain =
            cfg(serde_json::json!({"hostname": "a.test", "backends": ["http://127.0.0.1:1"]}));
        assert_eq!(
            why(
                &plain,
                &route(&["http://127.0.0.1:1"], false, false, false),
                false
            ),
            "round robin"
        );
        assert_eq!(
            why(
                &plain,
                &route(&["http://127.0.0.1:1"], false, false, true),
                false
            ),
            "panic"
        );
        let sticky = cfg(
            serde_json::json!({"hostname": "a.test", "backends": ["http://127.0.0.1:1"],
            "load_balancer": {"session_affinity": {"type": "cookie"}}}),
        );
        assert_eq!(
            why(
                &sticky,
                &route(&["http://127.0.0.1:1"], false, true, false),
                false
            ),
            "affinity pin"
        );
        // A new client gets a pin to sign: it was chosen by round robin.
        assert_eq!(
            why(
                &sticky,
                &route(&["http://127.0.0.1:1"], true, true, false),
                false
            ),
            "round robin"
        );
        let ordered = cfg(serde_json::json!({"hostname": "a.test",
            "load_balancer": {"steering": "failover", "endpoint_steering": "least_outstanding_requests"},
            "pools": [{"name": "primary", "backends": ["http://127.0.0.1:1"]},
                      {"name": "spare", "backends": ["http://127.0.0.1:2"]}]}));
        assert_eq!(
            why(
                &ordered,
                &route(&["http://127.0.0.1:2"], false, false, false),
                false
            ),
            "failover pool spare, least outstanding requests"
        );
        let hashed = cfg(
            serde_json::json!({"hostname": "a.test", "backends": ["http://127.0.0.1:1"],
            "load_balancer": {"session_affinity": {"type": "header", "header_name": "x-user"}}}),
        );
        assert_eq!(
            why(
                &hashed,
                &route(&["http://127.0.0.1:1"], false, false, false),
                true
            ),
            "affinity hash"
        );
        assert_eq!(
            why(
                &hashed,
                &route(&["http://127.0.0.1:1"], false, false, false),
                false
            ),
            "round robin"
        );
        let geo = cfg(serde_json::json!({"hostname": "a.test",
            "pools": [{"name": "eu", "backends": ["http://127.0.0.1:1"]}, {"name": "us", "backends": ["http://127.0.0.1:2"]}],
            "geo_steering": {"regions": {"EU": "eu"}, "fallback_pool": "us"}}));
        assert_eq!(
            why(
                &geo,
                &route(&["http://127.0.0.1:2"], false, false, false),
                false
            ),
            "geo pool us, round robin"
        );
        assert_eq!(
            refused("rate limit for a.test exceeded"),
            "refused: rate limit for a.test exceeded"
        );
        assert!(refused(&"x".repeat(1000)).len() <= MAX_PATH + "…".len());
        assert_eq!(answered_why("round robin", 1), "round robin");
        assert_eq!(
            answered_why("round robin", 2),
            "round robin, retry (2 attempts)"
        );
    }

    #[test]
    fn reply_carries_the_reason_only_while_listening() {
        let json = br#"{"kind":"route","x":"a\nb"}"#.to_vec();
        let quiet = reply(json.clone(), None);
        assert_eq!(quiet, json);
        let quiet = String::from_utf8(quiet).unwrap();
        assert_eq!(split_reply(&quiet), (quiet.as_str(), None));
        let loud = String::from_utf8(reply(json, Some("geo pool eu,\nround robin"))).unwrap();
        let (verdict, why) = split_reply(&loud);
        assert_eq!(verdict, r#"{"kind":"route","x":"a\nb"}"#);
        assert_eq!(why, Some("geo pool eu, round robin"));
    }
}
