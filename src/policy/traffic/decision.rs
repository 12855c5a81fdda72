//! Messages between the edge Worker and a hostname's Durable Object: the routing decision and the outcome reports.

use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::policy::control::config::Logging;
use crate::policy::telemetry::answers::Answered;
use crate::policy::telemetry::record::LogRow;
use crate::policy::traffic::rules::{RequestLine, RuleAnswer, RuleEffects, RuleNeeds};

/// Worker -> Durable Object, the `decide` RPC method's one string (this as URL query pairs): the
/// request facts a decision needs, plus the successes the Worker batched since its last decision.
/// Query pairs are the cheapest form to write and read on every request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    /// The client's whole Cookie header: only the Durable Object knows the cookie's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies: Option<String>,
    /// The value of the header that keys header affinity, once the Worker knows its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_key: Option<String>,
    /// Carried as one JSON text: a query pair holds a string.
    /// The request's body streams: it cannot be replayed (see `RequestFacts::streamed_body`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub streamed_body: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "json_text")]
    pub successes: Vec<Outcome>,
    /// Tickets of this Worker instance's requests that finished since its last message.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "id_list")]
    pub done: Vec<u64>,
    /// Responses this Worker gave clients of the hostname since its last message.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "answered_text")]
    pub answered: Vec<Answered>,
    /// What the service's rules read of the request, as one JSON text (only what they name).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "line_text")]
    pub line: Option<RequestLine>,
}

impl DecideRequest {
    /// The message as a URL query (without the `?`).
    pub fn to_query(&self) -> String {
        // Strings, options and a JSON text: nothing here can fail to serialise.
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    /// Reads [`DecideRequest::to_query`]'s form back; an unknown or repeated pair, a missing
    /// host or unreadable successes are errors, not silently missing facts.
    pub fn from_query(query: &str) -> Result<Self, String> {
        serde_urlencoded::from_str(query).map_err(|e| e.to_string())
    }
}

/// Ticket ids as one comma-separated query value.
mod id_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = v.iter().map(u64::to_string).collect();
        s.serialize_str(&text.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let text = String::deserialize(d)?;
        text.split(',')
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// A list of outcomes as one JSON text (inside a query pair).
mod answered_text {
    use super::Answered;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Answered], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Answered::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Answered>, D::Error> {
        Answered::decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The request line as one text inside a query pair: method, path and query, then per header
/// its name and "" (absent) or "=" and its value, all joined by newlines. None of them holds a
/// newline (the URL's parts are percent-encoded, and a header value cannot hold one), and this
/// is cheaper to write and read on every request than JSON.
mod line_text {
    use super::RequestLine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<RequestLine>, s: S) -> Result<S::Ok, S::Error> {
        let Some(line) = v else {
            return s.serialize_none();
        };
        let mut text = format!("{}\n{}\n{}", line.method, line.path, line.query);
        for (name, value) in &line.headers {
            text.push('\n');
            text.push_str(name);
            text.push('\n');
            if let Some(value) = value {
                text.push('=');
                text.push_str(value);
            }
        }
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RequestLine>, D::Error> {
        let text = String::deserialize(d)?;
        let mut parts = text.split('\n');
        let mut next = |what: &str| {
            parts
                .next()
                .map(str::to_string)
                .ok_or_else(|| serde::de::Error::custom(format!("request line without {what}")))
        };
        let method = next("a method")?;
        let path = next("a path")?;
        let query = next("a query")?;
        let mut headers = Vec::new();
        while let Ok(name) = next("") {
            let value = next("a header value")?;
            let value = match value.strip_prefix('=') {
                Some(v) => Some(v.to_string()),
                None if value.is_empty() => None,
                None => return Err(serde::de::Error::custom("malformed header in request line")),
            };
            headers.push((name, value));
        }
        Ok(Some(RequestLine {
            method,
            path,
            query,
            headers,
        }))
    }
}

mod json_text {
    use super::Outcome;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Outcome], s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(v).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Outcome>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Worker -> Durable Object, `POST /report` with this as the JSON body: outcomes of finished
/// attempts (failures, trials, retries, and successes batched before them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub host: String,
    pub outcomes: Vec<Outcome>,
    /// Tickets of finished requests (see [`Route::ticket`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<u64>,
    /// Responses the Worker gave clients (see [`DecideRequest::answered`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<Answered>,
    /// Successful requests the Worker sampled for the request log (`logging`); the object keeps
    /// them in the minute's rollup row, up to the per-minute cap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<LogRow>,
    /// Rule matches a Worker counted while deciding under a lease: (rule name, count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_hits: Vec<(String, u64)>,
}

/// The Durable Object's answer to "where does this request go?".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// `Route` is the common case and is matched at once: boxing it would add an allocation per
// request to shrink the rare answers.
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    Route(Route),
    Reject(Reject),
    /// A traffic rule answers the request itself (`respond`, `redirect`).
    Answer(RuleAnswer),
    /// The service's rules read more of the request than the Worker sent: send these and ask again.
    More(RuleNeeds),
}

impl Verdict {
    /// Names of the traffic rules this verdict applied, in order.
    pub fn rules_matched(&self) -> &[String] {
        match self {
            Verdict::Route(Route {
                rules: Some(effects),
                ..
            }) => &effects.matched,
            Verdict::Answer(answer) => &answer.matched,
            _ => &[],
        }
    }
}

/// Backends to try, in order, and how hard to try.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub attempts: Vec<Attempt>,
    /// Extra attempts allowed after a failed response (502/503/504, timeout).
    pub retries: u32,
    /// Extra attempts allowed after a connection error.
    pub conn_retries: u32,
    pub timeout_ms: u64,
    pub immediate_failover: bool,
    /// Every backend looked unhealthy: these attempts are a last try, not a healthy choice.
    pub panic: bool,
    /// Session-affinity cookie to set when the serving backend differs from the client's pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieSpec>,
    /// For header affinity: the request header whose value keys the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_header: Option<String>,
    /// The request counts as outstanding at its backend until this ticket comes back in a
    /// completion (`done`); only in steering modes that count requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u64>,
    /// The service steers by the client's geography: the Worker reads `request.cf` (costly)
    /// only for such hostnames, and asks again with it when it had not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub geo: bool,
    /// What the request log keeps of this request (the service's `logging`; absent: the defaults).
    #[serde(default, skip_serializing_if = "is_default_logging")]
    pub log: Logging,
    /// What the service's traffic rules did to this request (None: no rule applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RuleEffects>,
    /// Why dynamic steering chose the pool (the region and the latencies compared), for the tail;
    /// read where the route is decided, never sent.
    #[serde(skip)]
    pub pool_why: Option<String>,
    /// What the service's rules read of a request, for the Worker to read by from its next
    /// ask on. None: what the Worker sent is exactly that already (most asks), so the reply
    /// need not carry it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_needs: Option<Rc<RuleNeeds>>,
}

fn is_default_logging(l: &Logging) -> bool {
    *l == Logging::default()
}

#[cfg(test)]
impl Outcome {
    /// A test outcome: one failed connection to `url`.
    pub fn connect_failure(url: &str) -> Outcome {
        Outcome {
            url: url.into(),
            failure: Some("connect".into()),
            latency_ms: 1,
            trial: false,
            retry: false,
            count: 1,
            status: None,
            retry_reason: None,
        }
    }
}

#[cfg(test)]
impl Route {
    /// A test route to `urls` in order: no retries, no pins, no affinity, one-second timeout.
    pub fn to(urls: &[&str]) -> Route {
        Route {
            attempts: urls
                .iter()
                .map(|u| Attempt {
                    url: u.to_string(),
                    trial: false,
                    pin: None,
                })
                .collect(),
            retries: 0,
            conn_retries: 0,
            timeout_ms: 1000,
            immediate_failover: true,
            panic: false,
            cookie: None,
            affinity_header: None,
            ticket: None,
            geo: false,
            log: Logging::default(),
            rules: None,
            rule_needs: None,
            pool_why: None,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub url: String,
    /// The half-open breaker's single trial: its outcome is reported at once.
    #[serde(default)]
    pub trial: bool,
    /// Signed affinity value for this backend, when the client must be (re-)pinned to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CookieSpec {
    pub name: String,
    pub ttl_s: u64,
}

/// A request the Durable Object refuses before any backend is tried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    pub status: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// What happened on one attempt, as the Worker reports it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub url: String,
    /// None on success; otherwise a short reason (`connect`, `timeout`, `status 503`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub latency_ms: u64,
    #[serde(default)]
    pub trial: bool,
    /// This attempt was a retry, spending retry budget.
    #[serde(default)]
    pub retry: bool,
    /// Number of requests this outcome stands for (successes are batched).
    #[serde(default = "one")]
    pub count: u32,
    /// The HTTP status the backend answered with (None: no HTTP answer), for the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For a retry: why the attempt before it failed (`connect`, `timeout`, `status_5xx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_reason: Option<String>,
}

fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_request_roundtrip_and_compact() {
        let bare = DecideRequest {
            host: "a.test".into(),
            ..Default::default()
        };
        assert_eq!(bare.to_query(), "host=a.test");
        assert_eq!(DecideRequest::from_query("host=a.test").unwrap(), bare);
        let full = DecideRequest {
            host: "a.test".into(),
            client_ip: Some("203.0.113.9".into()),
            country: Some("DE".into()),
            continent: Some("EU".into()),
            cookies: Some("fb=1; x=2&y=%3".into()),
            affinity_key: Some("user 7".into()),
            streamed_body: true,
            successes: vec![Outcome {
                url: "http://b:1/?a=1&b=2".into(),
                failure: None,
                latency_ms: 4,
                trial: false,
                retry: false,
                count: 3,
                status: Some(200),
                retry_reason: None,
            }],
            done: vec![17, 4_000_000_000_000],
            answered: vec![Answered {
                code: 508,
                source: crate::policy::telemetry::answers::Source::Flowbalance,
                count: 2,
            }],
            line: Some(RequestLine {
                method: "GET".into(),
                path: "/a b/%2F".into(),
                query: "x=1&y=%26".into(),
                headers: vec![
                    ("x-canary".into(), Some("1".into())),
                    ("x-gone".into(), None),
                ],
            }),
        };
        let text = full.to_query();
        assert_eq!(DecideRequest::from_query(&text).unwrap(), full);
        // A typo, a repeat or a missing host is an error, not a silently missing fact.
        assert!(DecideRequest::from_query("host=a&ipp=1.2.3.4").is_err());
        assert!(DecideRequest::from_query("host=a&client_ip=1&client_ip=2").is_err());
        assert!(DecideRequest::from_query("client_ip=1.2.3.4").is_err());
        assert!(DecideRequest::from_query("host=a&successes=%5Bx").is_err());
        assert!(DecideRequest::from_query("host=a&done=1,x").is_err());
        // The request line: an empty header value is not an absent header; a line cut short
        // or a header value without its marker is an error.
        for line in [
            RequestLine::default(),
            RequestLine {
                method: String::new(),
                path: "/".into(),
                query: String::new(),
                headers: vec![
                    ("x-empty".into(), Some(String::new())),
                    ("x-b".into(), None),
                ],
            },
        ] {
            let msg = DecideRequest {
                host: "a.test".into(),
                line: Some(line),
                ..Default::default()
            };
            assert_eq!(DecideRequest::from_query(&msg.to_query()).unwrap(), msg);
        }
        assert!(DecideRequest::from_query("host=a&line=GET%0A%2F").is_err());
        assert!(DecideRequest::from_query("host=a&line=GET%0A%2F%0A%0Ax-a").is_err());
        assert!(DecideRequest::from_query("host=a&line=GET%0A%2F%0A%0Ax-a%0Avalue").is_err());
    }

    #[test]
    fn report_request_roundtrip() {
        let r = ReportRequest {
            host: "a.test".into(),
            outcomes: vec![],
            done: vec![3],
            answered: vec![],
            samples: vec![],
            rule_hits: vec![("api".into(), 3)],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ReportRequest>(&text).unwrap(), r);
    }
}
