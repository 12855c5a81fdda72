//! Active health probes: one HTTP GET per backend with a timeout, and health-path discovery.

use serde::Serialize;
use worker::*;

use crate::platform::fetch_with_timeout;
use crate::policy::forwarding::backend_url;
use crate::policy::health::{discover, probe_ok, Discovery};

#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    pub url: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub path: String,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The discovered health path to remember (`/` for the root fallback; None when a path is
    /// configured or the backend did not answer).
    pub discovered_path: Option<String>,
}

/// GETs `path` on the backend; redirects are not followed off the backend.
async fn get_status(
    base: &str,
    path: &str,
    timeout_ms: u64,
) -> (std::result::Result<u16, String>, u64) {
    let started = Date::now().as_millis();
    let mut init = RequestInit::new();
    init.with_method(Method::Get)
        .with_redirect(RequestRedirect::Manual);
    let headers = Headers::new();
    let _ = headers.set("user-agent", "FlowBalance-HealthCheck/1");
    init.with_headers(headers);
    let result = match Request::new_with_init(&backend_url(base, path), &init) {
        Ok(req) => match fetch_with_timeout(req, timeout_ms).await {
            Ok(resp) => Ok(resp.status_code()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    (result, Date::now().as_millis().saturating_sub(started))
}

/// Probes one backend: a configured path, else the remembered discovered path, else discovery.
pub async fn probe_backend(
    url: &str,
    configured: Option<&str>,
    discovered: Option<&str>,
    timeout_ms: u64,
) -> ProbeResult {
    if let Some(path) = configured {
        let (r, latency) = get_status(url, path, timeout_ms).await;
        return result(url, path, r, latency, false, None);
    }
    if let Some(path) = discovered {
        let root = path == "/";
        let (r, latency) = get_status(url, path, timeout_ms).await;
        // A remembered health path that vanished (404) is rediscovered rather than failing the
        // backend; on the root fallback a 404 is an answer like any other below 500.
        if root || !matches!(r, Ok(404)) {
            return result(url, path, r, latency, root, Some(path.to_string()));
        }
    }
    let mut seen: Vec<Option<u16>> = Vec::new();
    let mut last_error = None;
    let mut total_latency = 0;
    loop {
        match discover(&seen) {
            Discovery::Try(path) => {
                let (r, latency) = get_status(url, path, timeout_ms).await;
                total_latency = latency;
                match r {
                    Ok(s) => seen.push(Some(s)),
                    Err(e) => {
                        last_error = Some(e);
                        seen.push(None);
                    }
                }
            }
            Discovery::Found(path) => {
                let status = seen
                    .last()
                    .copied()
                    .flatten()
                    .ok_or_else(|| "no status".to_string());
                return result(
                    url,
                    path,
                    status,
                    total_latency,
                    false,
                    Some(path.to_string()),
                );
            }
            Discovery::FallbackRoot => {
                // Remembered too, so later rounds probe `/` once instead of rediscovering.
                let (r, latency) = get_status(url, "/", timeout_ms).await;
                return result(url, "/", r, latency, true, Some("/".to_string()));
            }
            Discovery::Unreachable => {
                let err = last_error.unwrap_or_else(|| "unreachable".to_string());
                return result(url, "/health", Err(err), total_latency, false, None);
            }
        }
    }
}

fn result(
    url: &str,
    path: &str,
    r: std::result::Result<u16, String>,
    latency_ms: u64,
    root_fallback: bool,
    discovered_path: Option<String>,
) -> ProbeResult {
    let (ok, status, error) = match r {
        Ok(s) => {
            let ok = probe_ok(s, root_fallback);
            (
                ok,
                Some(s),
                (!ok).then(|| format!("probe {path} answered {s}")),
            )
        }
        Err(e) => (false, None, Some(format!("probe {path}: {e}"))),
    };
    ProbeResult {
        url: url.to_string(),
        ok,
        status,
        path: path.to_string(),
        latency_ms,
        error,
        discovered_path,
    }
}
