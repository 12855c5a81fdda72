//! WebSocket upgrades on the balanced path: drive the upgrade plan over the decision's candidates, relay the connected socket both ways, report its outcome when it closes.

use js_sys::futures::JsFuture;
use wasm_bindgen::JsCast;
use worker::*;

use crate::platform::edge::forward::{build_request, Forwarded, Outbound};
use crate::platform::edge::report::Reporter;
use crate::platform::{cancel_body, error_response, js_message};
use crate::policy::telemetry::answers::Source;
use crate::policy::traffic::affinity;
use crate::policy::traffic::attempts::{Answer, Step};
use crate::policy::traffic::decision::Route;
use crate::policy::traffic::upgrade::{UpgradePlan, UpgradeResult};

/// Headers of the client's handshake that the runtime makes anew for its own connection to the
/// backend (it negotiates key, version and extensions itself); the subprotocol list is kept.
const HANDSHAKE_HEADERS: [&str; 4] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
];

/// True for a client asking to switch to WebSocket (its `Upgrade` header says `websocket`; the runtime does not
/// show the `Connection` header, so `Upgrade` alone decides).
pub fn is_upgrade(upgrade: Option<&str>) -> bool {
    upgrade.is_some_and(|u| {
        u.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
    })
}

/// Connects the client to the first backend of `route` that accepts the upgrade and relays the
/// socket. Outcomes go to `report`: failed attempts at once, the socket's when it closes.
pub async fn forward(report: &Reporter<'_>, out: Outbound, route: Route) -> Result<Forwarded> {
    let Outbound {
        pq, headers, https, ..
    } = out;
    let host = report.host;
    // The forwarded headers drop `Upgrade` as hop-by-hop; the runtime's fetch needs it to upgrade.
    headers.set("upgrade", "websocket")?;
    for h in HANDSHAKE_HEADERS {
        headers.delete(h)?;
    }
    let mut plan = UpgradePlan::new(&route, host);
    let mut answered: Option<(usize, web_sys::Response, u64)> = None;
    let mut step = plan.start();
    let answer = loop {
        step = match step {
            Step::Try { index, url, .. } => {
                let started = Date::now().as_millis();
                let outbound = build_request(&url, &pq, "GET", &headers, None)?;
                let fetched =
                    JsFuture::from(fb_fetch_upgrade(&outbound, route.timeout_ms as f64)).await;
                let latency_ms = Date::now().as_millis().saturating_sub(started);
                let result = match fetched.map(JsCast::unchecked_into::<web_sys::Response>) {
                    Ok(resp) if resp.status() == 101 && has_socket(&resp) => {
                        answered = Some((index, resp, latency_ms));
                        UpgradeResult::Switched
                    }
                    Ok(resp) if (200..=599).contains(&resp.status()) => {
                        let status = resp.status();
                        if let Some((_, earlier, _)) = answered.replace((index, resp, latency_ms)) {
                            cancel_body(&earlier);
                        }
                        UpgradeResult::Refused(status)
                    }
                    Ok(resp) => {
                        cancel_body(&resp);
                        UpgradeResult::Lost(format!("invalid status {}", resp.status()))
                    }
                    Err(e) => UpgradeResult::Lost(js_message(&e)),
                };
                plan.on_result(index, result, latency_ms)
            }
            Step::CheckRefused(_) => break None, // never asked for by the upgrade plan
            Step::Answer(answer) => break Some(answer),
        };
    };
    let tries = plan.tries();
    report.flush(plan.take_outcomes());
    // The request's outstanding ticket: given back at once unless a socket opens, else at its close.
    let ticket = route.ticket;
    match answer {
        Some(Answer::Backend(index)) => {
            let (Some((_, resp, latency_ms)), Some(attempt)) = (
                answered.filter(|(i, _, _)| *i == index),
                route.attempts.get(index),
            ) else {
                return Err(Error::RustError(
                    "upgrade plan answered with a response it was never given".into(),
                ));
            };
            let url = attempt.url.clone();
            if resp.status() != 101 {
                // No backend upgraded: the last one's own refusal goes back as it is.
                report.complete(ticket);
                return Ok(upgrade_answer(resp, Some(url), tries));
            }
            let cookie = match (&route.cookie, attempt.pin.as_deref()) {
                (Some(spec), Some(value)) => {
                    Some(affinity::set_cookie(&spec.name, value, spec.ttl_s, https))
                }
                _ => None,
            };
            let parts = fb_relay(&resp, cookie);
            let closed: js_sys::Promise = parts.get(1).unchecked_into();
            // The close hook: the connection stays in flight until either side closes it.
            let outcome = move |broken: String| {
                plan.closed(index, latency_ms, (!broken.is_empty()).then_some(broken))
            };
            report.socket_closed(outcome, ticket, closed);
            Ok(upgrade_answer(
                parts.get(0).unchecked_into(),
                Some(url),
                tries,
            ))
        }
        Some(Answer::Failed {
            status,
            message,
            retry_after_s,
        }) => {
            report.complete(ticket);
            Ok(upgrade_answer(
                error_response(status, &message, retry_after_s)?.into(),
                None,
                tries,
            ))
        }
        None => Err(Error::RustError(
            "upgrade plan asked for a refusal check".into(),
        )),
    }
}

/// The upgrade's answer: a backend's own (its 101, or its refusal) or one FlowBalance made.
/// Failed attempts are not logged one by one for upgrades.
fn upgrade_answer(resp: web_sys::Response, backend: Option<String>, attempts: u32) -> Forwarded {
    let source = if backend.is_some() {
        Source::Backend
    } else {
        Source::Flowbalance
    };
    Forwarded {
        resp,
        backend,
        attempts,
        source,
        failed: Vec::new(),
    }
}

/// True when the response carries a WebSocket (a 101 from an upgrade fetch). Read here rather
/// than in the snippet below: wasm-bindgen 0.2.130 lists a snippet module once per function it
/// imports without glue, and a second such function made a duplicate key that esbuild warned
/// about on every build and deploy.
fn has_socket(resp: &web_sys::Response) -> bool {
    js_sys::Reflect::get(resp, &wasm_bindgen::JsValue::from_str("webSocket"))
        .is_ok_and(|ws| !ws.is_null() && !ws.is_undefined())
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
// The upgrade request, aborted if no answer comes within `timeoutMs`. The timer is cleared once
// the backend answers: an abort signal still armed later would tear the connected socket down.
export async function fb_fetch_upgrade(req, timeoutMs) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  try {
    return await fetch(req, { signal: ctl.signal });
  } catch (e) {
    throw ctl.signal.aborted ? ctl.signal.reason : e;
  } finally {
    clearTimeout(timer);
  }
}

// Terminates the backend's socket and a new client socket here and copies messages both ways
// (a JS listener per direction: no Rust call per message). Returns [the client's 101 Response,
// Promise<"" when closed normally | why the backend's side broke off>]. A close on one side
// closes the other with the same code and reason.
export function fb_relay(resp, cookie) {
  const upstream = resp.webSocket;
  const pair = new WebSocketPair();
  const client = pair[0];
  const server = pair[1];
  upstream.accept();
  server.accept();
  const closed = new Promise((resolve) => {
    let done = false;
    const finish = (why) => {
      if (!done) {
        done = true;
        resolve(why);
      }
    };
    const link = (from, to, backendSide) => {
      from.addEventListener("message", (e) => {
        try {
          to.send(e.data);
        } catch {}
      });
      from.addEventListener("close", (e) => {
        closeWith(to, e.code, e.reason);
        finish(backendSide && e.code === 1006 ? "WebSocket to the backend lost (1006)" : "");
      });
      from.addEventListener("error", (e) => {
        closeWith(to, 1011, backendSide ? "backend error" : "client error");
        finish(backendSide ? `WebSocket to the backend failed: ${(e && e.message) || "error"}` : "");
      });
    };
    link(server, upstream, false);
    link(upstream, server, true);
  });
  const headers = new Headers(resp.headers);
  for (const h of ["connection", "upgrade", "sec-websocket-accept", "sec-websocket-extensions", "content-length"]) headers.delete(h);
  if (cookie !== undefined) headers.append("set-cookie", cookie);
  return [new Response(null, { status: 101, webSocket: client, headers }), closed];
}

// Codes 1005/1006/1015 describe a close and may not be sent: those become 1000 (or 1011 for a lost peer).
function closeWith(ws, code, reason) {
  const sendable = code === 1000 || (code >= 1001 && code <= 1014 && ![1004, 1005, 1006].includes(code)) || (code >= 3000 && code <= 4999);
  try {
    if (sendable) ws.close(code, reason);
    else ws.close(code === 1006 ? 1011 : 1000, code === 1006 ? "peer connection lost" : "");
  } catch {}
}
"#)]
extern "C" {
    /// Promise of the backend's answer to the upgrade request (rejects after `timeout_ms`).
    fn fb_fetch_upgrade(req: &web_sys::Request, timeout_ms: f64) -> js_sys::Promise;

    /// `[client Response (101), Promise<string: "" or why the backend's side broke off>]`.
    fn fb_relay(resp: &web_sys::Response, cookie: Option<String>) -> js_sys::Array;
}
