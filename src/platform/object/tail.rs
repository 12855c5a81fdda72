//! The live tail: hibernatable WebSockets held by the hostname's Durable Object, fed request, health and config lines only while someone listens.

use std::cell::Cell;

use wasm_bindgen::JsValue;
use worker::*;

use crate::platform::relay::HOST_HEADER;
use crate::platform::{error_response, object_stub};
use crate::policy::control::config;
use crate::policy::telemetry::tail::{
    encode, Cursor, Line, RequestLine, MAX_TAILS, SLOW_CLOSE_CODE, WINDOW,
};

/// The object's route that takes a request line from the edge.
pub const LINE_PATH: &str = "/tail/line";
/// The object's route that opens a tail.
pub const OPEN_PATH: &str = "/tail";

/// `GET /admin/services/{hostname}/tail`: hands the WebSocket upgrade to the hostname's object,
/// which accepts it (the admin check has been passed already).
pub async fn relay(req: &Request, env: &Env, host: &str) -> Result<Response> {
    let host = match config::validate_hostname(host) {
        Ok(h) => h,
        Err(e) => return error_response(400, &format!("hostname: {e}"), None),
    };
    if !is_upgrade(req)? {
        return upgrade_required();
    }
    let headers = Headers::new();
    headers.set("upgrade", "websocket")?;
    headers.set(HOST_HEADER, &host)?;
    let mut init = RequestInit::new();
    init.with_headers(headers);
    let inner = Request::new_with_init(&format!("https://balancer{OPEN_PATH}"), &init)?;
    object_stub(env, &host)?.fetch_with_request(inner).await
}

fn is_upgrade(req: &Request) -> Result<bool> {
    Ok(req
        .headers()
        .get("upgrade")?
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")))
}

fn upgrade_required() -> Result<Response> {
    error_response(
        426,
        "the tail is a WebSocket: send Upgrade: websocket (e.g. websocat -H 'Authorization: Bearer TOKEN' ws://HOST/admin/services/NAME/tail)",
        None,
    )
}

/// Sends a finished request's line to the hostname's object after the response (only called
/// when the decision said a tail listens).
pub fn report_line(env: &Env, ctx: &Context, host: &str, line: RequestLine) {
    let Ok(body) = serde_json::to_string(&line) else {
        return;
    };
    let Ok(stub) = object_stub(env, host) else {
        return;
    };
    ctx.wait_until(async move {
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(JsValue::from_str(&body)));
        if let Ok(req) = Request::new_with_init(&format!("https://balancer{LINE_PATH}"), &init) {
            let _ = stub.fetch_with_request(req).await;
        }
    });
}

/// The tails of one object. The count is cached so a decision's "anyone listening?" reads one
/// number; the runtime's list is consulted once per object lifetime and on every line sent.
#[derive(Default)]
pub struct Tails {
    count: Cell<Option<usize>>,
}

/// 1: OPEN. A socket being closed is neither counted nor written to.
const OPEN: u16 = 1;

fn open_sockets(state: &State) -> Vec<WebSocket> {
    state
        .get_websockets()
        .into_iter()
        .filter(|ws| AsRef::<web_sys::WebSocket>::as_ref(ws).ready_state() == OPEN)
        .collect()
}

impl Tails {
    pub fn listening(&self, state: &State) -> bool {
        let n = match self.count.get() {
            Some(n) => n,
            None => {
                let n = open_sockets(state).len();
                self.count.set(Some(n));
                n
            }
        };
        n > 0
    }

    /// Accepts a tail as a hibernatable WebSocket: while idle it costs the object nothing.
    pub fn open(&self, state: &State, req: &Request, host: &str) -> Result<Response> {
        if !is_upgrade(req)? {
            return upgrade_required();
        }
        if open_sockets(state).len() >= MAX_TAILS {
            return error_response(
                429,
                &format!(
                    "{host} has {MAX_TAILS} tails open already (the most allowed); close one first"
                ),
                Some(5),
            );
        }
        let pair = WebSocketPair::new()?;
        state.accept_web_socket(&pair.server);
        pair.server.serialize_attachment(Cursor::default())?;
        pair.server.send_with_str(encode(
            0,
            &Line::Hello {
                hostname: host.to_string(),
                window: WINDOW,
                max_tails: MAX_TAILS,
            },
        ))?;
        self.count.set(None);
        Response::from_websocket(pair.client)
    }

    /// Sends `line` to every tail; a tail with a full window of unacknowledged lines is closed
    /// instead (dropped, not buffered for).
    pub fn broadcast(&self, state: &State, line: &Line) {
        let sockets = open_sockets(state);
        self.count.set(Some(sockets.len()));
        for ws in sockets {
            let mut cursor: Cursor = ws
                .deserialize_attachment()
                .ok()
                .flatten()
                .unwrap_or_default();
            match cursor.advance() {
                Some(seq) => {
                    if ws.send_with_str(encode(seq, line)).is_ok() {
                        let _ = ws.serialize_attachment(cursor);
                    }
                }
                None => {
                    let _ = ws.close(
                        Some(SLOW_CLOSE_CODE),
                        Some(format!("slow consumer: {WINDOW} lines unacknowledged")),
                    );
                    self.count.set(None);
                }
            }
        }
    }

    /// A consumer's message acknowledges lines read (the `seq` of the last one).
    pub fn on_message(&self, ws: &WebSocket, text: &str) {
        let mut cursor: Cursor = ws
            .deserialize_attachment()
            .ok()
            .flatten()
            .unwrap_or_default();
        match cursor.ack(text) {
            Ok(()) => {
                let _ = ws.serialize_attachment(cursor);
            }
            Err(message) => {
                let _ = ws.send_with_str(encode(0, &Line::Error { message }));
            }
        }
    }

    pub fn on_close(&self, ws: &WebSocket) {
        // Completes the closing handshake the consumer started.
        let _ = ws.close(Some(1000), Some("tail closed"));
        self.count.set(None);
    }
}
