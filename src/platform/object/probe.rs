//! Active health probes: one monitor check per backend (HTTP(S) with the configured method, headers, expected codes and body, same-origin redirects; or a TCP connect) with a timeout, and health-path discovery.

use std::time::Duration;

use futures_util::future::{select, Either};
use serde::Serialize;
use worker::*;

use crate::platform::{cancel_body, fetch_raw, js_message, refuses_connections, FetchFailure};
use crate::policy::control::config::ActiveHealth;
use crate::policy::health::checks::{discover, Discovery};
use crate::policy::health::monitor::{
    http_base, is_redirect, redirect_target, tcp_target, Expect, MonitorType, BODY_PREFIX_CAP,
    MAX_REDIRECTS,
};
use crate::policy::traffic::failover::LostKind;
use crate::policy::traffic::forwarding::backend_url;

#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    pub url: String,
    pub ok: bool,
    pub status: Option<u16>,
    /// The path probed (`tcp` monitors: the `host:port` connected to).
    pub path: String,
    pub latency_ms: u64,
    /// Why the check failed: `expected 2xx, got 500`, `body did not contain "ok"`, a network error.
    pub error: Option<String>,
    /// The discovered health path to remember (`/` for the root fallback; None when a path is
    /// configured or the backend did not answer).
    pub discovered_path: Option<String>,
}

/// One answer to a probe request: what the verdict needs.
struct Answer {
    status: u16,
    /// The body's first bytes, when the monitor checks the body.
    body: Option<String>,
    location: Option<String>,
}

/// Why a probe's connection failed: the runtime's message when it says, else what a fresh
/// connection shows (workerd words a refusal and a reset alike).
async fn lost(url: &str, message: &str, timeout_ms: u64) -> String {
    match LostKind::of(message) {
        LostKind::Unknown => LostKind::checked(
            refuses_connections(url, timeout_ms.min(1000)).await,
            message,
        ),
        kind => kind.reason(message),
    }
}

/// Sends one probe request (redirects are never followed by the runtime: see [`check`]).
async fn request(
    url: &str,
    m: &ActiveHealth,
    timeout_ms: u64,
) -> std::result::Result<Answer, String> {
    let headers = web_sys::Headers::new().map_err(|e| js_message(&e))?;
    let _ = headers.set("user-agent", "FlowBalance-HealthCheck/1");
    for (name, value) in &m.headers {
        headers
            .set(name.as_str(), value.as_str())
            .map_err(|e| format!("header {name}: {}", js_message(&e)))?;
    }
    if m.headers.keys().any(|k| k.eq_ignore_ascii_case("host")) {
        return request_over_socket(url, m, timeout_ms).await;
    }
    let init = web_sys::RequestInit::new();
    init.set_method(m.method.as_str());
    init.set_headers(headers.as_ref());
    init.set_redirect(web_sys::RequestRedirect::Manual);
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| js_message(&e))?;
    let resp = match fetch_raw(&req, timeout_ms).await {
        Ok(resp) => resp,
        Err(FetchFailure::Timeout) => return Err(format!("no answer within {timeout_ms} ms")),
        Err(FetchFailure::Network(message)) => return Err(lost(url, &message, timeout_ms).await),
        Err(other) => return Err(other.to_string()),
    };
    let status = resp.status();
    let location = resp.headers().get("location").ok().flatten();
    let body = if m.expected_body.is_some() {
        let text = js_sys::futures::JsFuture::from(fb_body_prefix(&resp, BODY_PREFIX_CAP as f64))
            .await
            .map_err(|e| format!("body could not be read: {}", js_message(&e)))?;
        Some(text.as_string().unwrap_or_default())
    } else {
        cancel_body(&resp);
        None
    };
    Ok(Answer {
        status,
        body,
        location,
    })
}

/// One probe request as plain HTTP/1.1 over a TCP (or TLS) socket: the runtime's fetch always
/// sends the URL's authority as `Host`, so a configured `Host` can only be sent this way.
async fn request_over_socket(
    url: &str,
    m: &ActiveHealth,
    timeout_ms: u64,
) -> std::result::Result<Answer, String> {
    let mut pairs = vec![
        "User-Agent".to_string(),
        "FlowBalance-HealthCheck/1".to_string(),
    ];
    for (name, value) in &m.headers {
        pairs.push(name.to_string());
        pairs.push(value.to_string());
    }
    let cap = if m.expected_body.is_some() {
        BODY_PREFIX_CAP as f64
    } else {
        0.0
    };
    let answer = js_sys::futures::JsFuture::from(fb_raw_probe(
        url,
        m.method.as_str(),
        pairs,
        cap,
        timeout_ms as f64,
    ))
    .await
    .map_err(|e| js_message(&e))?;
    let parts: js_sys::Array = answer.into();
    let status = parts.get(0).as_f64().unwrap_or(0.0) as u16;
    if !(200..=599).contains(&status) {
        return Err(format!("invalid status {status} (not a final HTTP status)"));
    }
    Ok(Answer {
        status,
        location: parts.get(1).as_string(),
        body: m
            .expected_body
            .as_ref()
            .map(|_| parts.get(2).as_string().unwrap_or_default()),
    })
}

/// Probes `path` and judges the answer, following same-origin redirects when configured.
/// Returns the verdict and the final status.
async fn check(
    base: &str,
    path: &str,
    m: &ActiveHealth,
    timeout_ms: u64,
    root_fallback: bool,
) -> (std::result::Result<(), String>, Option<u16>) {
    let started = Date::now().as_millis();
    let expect = m.expectation();
    let mut url = backend_url(base, path);
    let mut hops = 0;
    loop {
        let left = timeout_ms.saturating_sub(Date::now().as_millis().saturating_sub(started));
        let answer = match request(&url, m, left.max(1)).await {
            Ok(a) => a,
            Err(e) => return (Err(e), None),
        };
        let status = answer.status;
        if !(m.follow_redirects && is_redirect(status)) {
            return (judge(&expect, &answer, root_fallback), Some(status));
        }
        let Some(location) = answer.location.as_deref() else {
            return (judge(&expect, &answer, root_fallback), Some(status));
        };
        hops += 1;
        if hops > MAX_REDIRECTS {
            return (
                Err(format!("more than {MAX_REDIRECTS} redirects")),
                Some(status),
            );
        }
        match redirect_target(base, &url, location) {
            Ok(next) => url = next,
            Err(why) => return (Err(why), Some(status)),
        }
    }
}

fn judge(expect: &Expect, a: &Answer, root_fallback: bool) -> std::result::Result<(), String> {
    expect.judge(a.status, a.body.as_deref(), root_fallback)
}

/// A tcp monitor: up when a connection opens within the timeout.
async fn connect(
    backend: &str,
    port: Option<u16>,
    timeout_ms: u64,
) -> (std::result::Result<(), String>, String) {
    let (host, port) = tcp_target(backend, port);
    let target = format!("{host}:{port}");
    let mut socket = match Socket::builder().connect(host, port) {
        Ok(s) => s,
        Err(e) => return (Err(format!("connect to {target}: {e}")), target),
    };
    let opened = {
        let opened = socket.opened();
        let timer = Delay::from(Duration::from_millis(timeout_ms));
        futures_util::pin_mut!(opened);
        futures_util::pin_mut!(timer);
        match select(opened, timer).await {
            Either::Left((Ok(_), _)) => Ok(()),
            Either::Left((Err(e), _)) => Err(format!("connect to {target}: {e}")),
            Either::Right(_) => Err(format!(
                "connect to {target}: no answer within {timeout_ms} ms"
            )),
        }
    };
    let _ = socket.close().await;
    (opened, target)
}

/// Probes one backend: a tcp connect; or an HTTP check of the configured path, else the
/// remembered discovered path, else discovery.
pub async fn probe_backend(url: &str, m: &ActiveHealth, discovered: Option<&str>) -> ProbeResult {
    let timeout_ms = m.timeout_ms;
    let started = Date::now().as_millis();
    let elapsed = || Date::now().as_millis().saturating_sub(started);
    if m.kind == MonitorType::Tcp {
        let (r, target) = connect(url, m.port, timeout_ms).await;
        return result(url, &target, r, None, elapsed(), None);
    }
    let base = http_base(url, m.kind, m.port);
    if let Some(path) = m.path.as_deref() {
        let (r, status) = check(&base, path, m, timeout_ms, false).await;
        return result(url, path, r, status, elapsed(), None);
    }
    if let Some(path) = discovered {
        let root = path == "/";
        let (r, status) = check(&base, path, m, timeout_ms, root).await;
        // A remembered health path that vanished (404) is rediscovered rather than failing the
        // backend; on the root fallback a 404 is an answer like any other below 500.
        if root || status != Some(404) {
            return result(url, path, r, status, elapsed(), Some(path.to_string()));
        }
    }
    let mut seen: Vec<Option<u16>> = Vec::new();
    let mut last: Option<Answer> = None;
    let mut last_error = None;
    loop {
        match discover(&seen) {
            Discovery::Try(path) => match request(&backend_url(&base, path), m, timeout_ms).await {
                Ok(a) => {
                    seen.push(Some(a.status));
                    last = Some(a);
                }
                Err(e) => {
                    last_error = Some(e);
                    seen.push(None);
                }
            },
            Discovery::Found(path) => {
                // The answer that found the path is judged as a check of it would be.
                let (r, status) = match &last {
                    Some(a) => (judge(&m.expectation(), a, false), Some(a.status)),
                    None => (Err("no answer".to_string()), None),
                };
                return result(url, path, r, status, elapsed(), Some(path.to_string()));
            }
            Discovery::FallbackRoot => {
                // Remembered too, so later rounds probe `/` once instead of rediscovering.
                let (r, status) = check(&base, "/", m, timeout_ms, true).await;
                return result(url, "/", r, status, elapsed(), Some("/".to_string()));
            }
            Discovery::Unreachable => {
                let err = last_error.unwrap_or_else(|| "unreachable".to_string());
                return result(url, "/health", Err(err), None, elapsed(), None);
            }
        }
    }
}

fn result(
    url: &str,
    path: &str,
    r: std::result::Result<(), String>,
    status: Option<u16>,
    latency_ms: u64,
    discovered_path: Option<String>,
) -> ProbeResult {
    ProbeResult {
        url: url.to_string(),
        ok: r.is_ok(),
        status,
        path: path.to_string(),
        latency_ms,
        error: r.err(),
        discovered_path,
    }
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
import { connect } from "cloudflare:sockets";

// One HTTP/1.1 exchange over a socket, for probes that send their own Host header. Resolves to
// [status, location | null, the body's first `cap` bytes as text]; rejects on a connection
// error, a malformed answer or after `timeoutMs`.
export async function fb_raw_probe(url, method, pairs, cap, timeoutMs) {
  const u = new URL(url);
  const tls = u.protocol === "https:";
  const port = Number(u.port || (tls ? 443 : 80));
  const socket = connect({ hostname: u.hostname.replace(/^\[|\]$/g, ""), port }, { secureTransport: tls ? "on" : "off" });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([exchange(socket, u, method, pairs, cap), timeout]);
  } finally {
    clearTimeout(timer);
    socket.close().catch(() => {});
  }
}

async function exchange(socket, u, method, pairs, cap) {
  let head = `${method} ${u.pathname}${u.search} HTTP/1.1\r\n`;
  for (let i = 0; i + 1 < pairs.length; i += 2) head += `${pairs[i]}: ${pairs[i + 1]}\r\n`;
  head += "Connection: close\r\n\r\n";
  const writer = socket.writable.getWriter();
  await writer.write(new TextEncoder().encode(head));
  writer.releaseLock();
  const reader = socket.readable.getReader();
  let buf = new Uint8Array(0);
  let end = -1;
  const limit = 64 * 1024 + cap;
  for (;;) {
    end = headEnd(buf);
    if (end >= 0 && (cap === 0 || method === "HEAD" || buf.length - end >= cap)) break;
    const { done, value } = await reader.read();
    if (done) break;
    const next = new Uint8Array(buf.length + value.length);
    next.set(buf);
    next.set(value, buf.length);
    buf = next;
    if (end < 0 && buf.length > 64 * 1024 && headEnd(buf) < 0) throw new Error("response head over 64 KiB");
    if (buf.length > limit) break;
  }
  reader.cancel().catch(() => {});
  end = headEnd(buf);
  if (end < 0) throw new Error("connection closed before a complete response head");
  const lines = new TextDecoder().decode(buf.subarray(0, end)).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  if (!m) throw new Error(`not an HTTP/1.x answer: ${JSON.stringify(lines[0].slice(0, 40))}`);
  let location = null;
  let chunked = false;
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    if (name === "location") location = value;
    if (name === "transfer-encoding" && /chunked/i.test(value)) chunked = true;
  }
  let body = buf.subarray(end);
  if (chunked) body = unchunk(body);
  return [Number(m[1]), location, new TextDecoder().decode(body.subarray(0, cap))];
}

// Index just past the blank line that ends the head, or -1.
function headEnd(buf) {
  for (let i = 3; i < buf.length; i++) {
    if (buf[i - 3] === 13 && buf[i - 2] === 10 && buf[i - 1] === 13 && buf[i] === 10) return i + 1;
  }
  return -1;
}

// The data of the complete chunks in `buf`.
function unchunk(buf) {
  const out = [];
  let at = 0;
  for (;;) {
    let eol = -1;
    for (let i = at + 1; i < buf.length; i++) if (buf[i - 1] === 13 && buf[i] === 10) { eol = i; break; }
    if (eol < 0) break;
    const size = parseInt(new TextDecoder().decode(buf.subarray(at, eol - 1)), 16);
    if (!(size > 0) || eol + 1 + size > buf.length) {
      if (size > 0) out.push(buf.subarray(eol + 1));
      break;
    }
    out.push(buf.subarray(eol + 1, eol + 1 + size));
    at = eol + 1 + size + 2;
  }
  const all = new Uint8Array(out.reduce((n, c) => n + c.length, 0));
  let i = 0;
  for (const c of out) { all.set(c, i); i += c.length; }
  return all;
}

// The body's first `cap` bytes as text (lossy UTF-8); the rest is cancelled unread.
export async function fb_body_prefix(resp, cap) {
  if (resp.body === null) return "";
  const reader = resp.body.getReader();
  const chunks = [];
  let n = 0;
  try {
    while (n < cap) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.length;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  const all = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all.subarray(0, cap));
}
"#)]
extern "C" {
    /// Promise of `[status, location | null, body prefix]` of one HTTP/1.1 exchange over a socket.
    fn fb_raw_probe(
        url: &str,
        method: &str,
        pairs: Vec<String>,
        cap: f64,
        timeout_ms: f64,
    ) -> js_sys::Promise;

    /// Promise of the body's first `cap` bytes as text.
    fn fb_body_prefix(resp: &web_sys::Response, cap: f64) -> js_sys::Promise;
}
