//! A finished request as the edge records it: the one record the request log's row and the tail's line are both built from.

use serde::{Deserialize, Serialize};

/// What happened to one request: when, what was asked, who answered, how. The request log's
/// [`LogRow`] adds the hostname and the failed attempts; the tail's line adds why that backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub ts_ms: u64,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub backend: Option<String>,
    pub attempts: u32,
    pub latency_ms: u64,
}

/// Why a request's row is in the request log: every request an operator must be able to inspect
/// is kept; successes only as a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kept {
    /// Answered 5xx, or an attempt failed.
    Error,
    /// Answered after a retry or failover.
    Retried,
    /// Refused by FlowBalance itself (403, 421, 429, 508).
    Refused,
    /// Slower than `logging.slow_ms`.
    Slow,
    /// A successful request picked at `logging.success_sample_rate`.
    Sampled,
}

/// A request-log row (D1's `request_logs`; sampled successes ride in the minute's rollup row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub hostname: String,
    #[serde(flatten)]
    pub request: RequestRecord,
    /// Attempts of this request that failed (at other backends, or at the same before a retry),
    /// stored with the row as JSON (the rollups count them against their backends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedAttempt>,
    /// Why the row was kept (None: logged before the log was sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<Kept>,
    /// The traffic rule that decided the request (it ended the rules' walk), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(flatten)]
    pub asker: Asker,
}

/// What a decision read of the request besides its method and path: what a config preview
/// replays. Each is None when the request had none (or, for the country, when the service does
/// not read geography).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Asker {
    /// The raw query without `?`, bounded like the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Why a finished request must be kept (None: a success, left to sampling). `refused`: FlowBalance
/// answered it itself without asking a backend.
pub fn keep(r: &RequestRecord, failed_attempts: bool, refused: bool, slow_ms: u64) -> Option<Kept> {
    if refused {
        Some(Kept::Refused)
    } else if r.status >= 500 || failed_attempts {
        Some(Kept::Error)
    } else if r.attempts > 1 {
        Some(Kept::Retried)
    } else if r.latency_ms >= slow_ms {
        Some(Kept::Slow)
    } else {
        None
    }
}

/// One failed attempt of a logged request: its backend, the status it answered (none when the
/// connection failed or timed out) and how long it took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub backend: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RequestRecord {
        RequestRecord {
            ts_ms: 5,
            method: "GET".into(),
            path: "/a".into(),
            status: 200,
            backend: Some("http://b:1".into()),
            attempts: 2,
            latency_ms: 3,
        }
    }

    #[test]
    fn failures_retries_refusals_and_slow_requests_are_kept() {
        let r = |status, attempts, latency_ms| RequestRecord {
            status,
            attempts,
            latency_ms,
            ..record()
        };
        assert_eq!(keep(&r(200, 1, 5), false, false, 1000), None);
        assert_eq!(keep(&r(404, 1, 5), false, false, 1000), None);
        assert_eq!(keep(&r(502, 1, 5), false, false, 1000), Some(Kept::Error));
        assert_eq!(keep(&r(200, 2, 5), true, false, 1000), Some(Kept::Error));
        assert_eq!(keep(&r(200, 2, 5), false, false, 1000), Some(Kept::Retried));
        assert_eq!(keep(&r(200, 1, 1000), false, false, 1000), Some(Kept::Slow));
        assert_eq!(keep(&r(429, 0, 0), false, true, 1000), Some(Kept::Refused));
    }

    #[test]
    fn a_log_row_is_one_flat_object_with_the_request_log_columns() {
        let row = LogRow {
            hostname: "a.test".into(),
            rule: None,
            request: record(),
            failed: vec![FailedAttempt {
                backend: "http://c:1".into(),
                status: None,
                latency_ms: 1,
            }],
            kept: Some(Kept::Error),
            asker: Asker {
                query: Some("b=1".into()),
                client_ip: Some("192.0.2.1".into()),
                country: None,
            },
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"hostname": "a.test", "ts_ms": 5, "method": "GET", "path": "/a",
                "status": 200, "backend": "http://b:1", "attempts": 2, "latency_ms": 3,
                "failed": [{"backend": "http://c:1", "status": null, "latency_ms": 1}], "kept": "error",
                "query": "b=1", "client_ip": "192.0.2.1"})
        );
        assert_eq!(serde_json::from_value::<LogRow>(v).unwrap(), row);
        // Read back as stored: D1 has no `failed` column, and no failures are written as none.
        let stored = serde_json::json!({"hostname": "a.test", "ts_ms": 5, "method": "GET",
            "path": "/a", "status": 200, "backend": null, "attempts": 1, "latency_ms": 3});
        let back: LogRow = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(back.request.backend, None);
        assert!(back.failed.is_empty());
        assert_eq!(serde_json::to_value(&back).unwrap(), stored);
    }
}
