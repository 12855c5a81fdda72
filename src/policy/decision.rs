//! Messages between the edge Worker and a hostname's Durable Object: the routing decision and the outcome reports.

use serde::{Deserialize, Serialize};

/// Worker -> Durable Object, `GET /decide?<this as query pairs>`: the request facts a decision
/// needs, plus the successes the Worker batched since its last decision. Plain pairs (`h`, `ip`,
/// `co`, `ct`, `ck`, `k`; `ok` holds the successes as JSON) are the cheapest form to write and
/// read on every request; see [`DecideRequest::to_query`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideRequest {
    pub host: String,
    pub client_ip: Option<String>,
    pub country: Option<String>,
    pub continent: Option<String>,
    /// The client's whole Cookie header: only the Durable Object knows the cookie's name.
    pub cookies: Option<String>,
    /// The value of the header that keys header affinity, once the Worker knows its name.
    pub affinity_key: Option<String>,
    pub successes: Vec<Outcome>,
}

impl DecideRequest {
    /// The message as a URL query (without the `?`).
    pub fn to_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::with_capacity(96));
        q.append_pair("h", &self.host);
        let optional = [
            ("ip", &self.client_ip),
            ("co", &self.country),
            ("ct", &self.continent),
            ("ck", &self.cookies),
            ("k", &self.affinity_key),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                q.append_pair(name, v);
            }
        }
        if !self.successes.is_empty() {
            // Serializing plain structs of strings and numbers cannot fail.
            if let Ok(json) = serde_json::to_string(&self.successes) {
                q.append_pair("ok", &json);
            }
        }
        q.finish()
    }

    /// Reads [`DecideRequest::to_query`]'s form back; an unknown or repeated pair, a missing
    /// host or unreadable successes are errors, not silently missing facts.
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut msg = DecideRequest::default();
        let mut host = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "h" => &mut host,
                "ip" => &mut msg.client_ip,
                "co" => &mut msg.country,
                "ct" => &mut msg.continent,
                "ck" => &mut msg.cookies,
                "k" => &mut msg.affinity_key,
                "ok" => {
                    if !msg.successes.is_empty() {
                        return Err("\"ok\" given twice".into());
                    }
                    msg.successes = serde_json::from_str(&value)
                        .map_err(|e| format!("\"ok\" is not a list of outcomes: {e}"))?;
                    continue;
                }
                other => return Err(format!("unknown field \"{other}\"")),
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(format!("\"{name}\" given twice"));
            }
        }
        msg.host = host.ok_or("\"h\" (the hostname) is missing")?;
        Ok(msg)
    }
}

/// Worker -> Durable Object, `POST /report` with this as the JSON body: outcomes of finished
/// attempts (failures, trials, retries, and successes batched before them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub host: String,
    pub outcomes: Vec<Outcome>,
}

/// The Durable Object's answer to "where does this request go?".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    Route(Route),
    Reject(Reject),
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
        assert_eq!(bare.to_query(), "h=a.test");
        assert_eq!(DecideRequest::from_query("h=a.test").unwrap(), bare);
        let full = DecideRequest {
            host: "a.test".into(),
            client_ip: Some("203.0.113.9".into()),
            country: Some("DE".into()),
            continent: Some("EU".into()),
            cookies: Some("fb=1; x=2&y=%3".into()),
            affinity_key: Some("user 7".into()),
            successes: vec![Outcome {
                url: "http://b:1/?a=1&b=2".into(),
                failure: None,
                latency_ms: 4,
                trial: false,
                retry: false,
                count: 3,
            }],
        };
        let text = full.to_query();
        assert_eq!(DecideRequest::from_query(&text).unwrap(), full);
        // A typo, a repeat or a missing host is an error, not a silently missing fact.
        assert!(DecideRequest::from_query("h=a&ipp=1.2.3.4").is_err());
        assert!(DecideRequest::from_query("h=a&ip=1&ip=2").is_err());
        assert!(DecideRequest::from_query("ip=1.2.3.4").is_err());
        assert!(DecideRequest::from_query("h=a&ok=%5Bx").is_err());
    }

    #[test]
    fn report_request_roundtrip() {
        let r = ReportRequest {
            host: "a.test".into(),
            outcomes: vec![],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ReportRequest>(&text).unwrap(), r);
    }
}
