//! Messages between the edge Worker and a hostname's Durable Object: the routing decision and the outcome reports.

use serde::{Deserialize, Serialize};

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
