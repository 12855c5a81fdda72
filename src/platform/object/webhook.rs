//! Sends one webhook delivery (an outbox entry made into a request by `policy::notify`) and reports the receiver's status or why there was none.

use crate::platform::{cancel_body, fetch_raw};
use crate::policy::telemetry::notify::Outgoing;

/// A receiver has this long to answer before the attempt counts as failed.
const DELIVERY_TIMEOUT_MS: u64 = 10_000;

/// `Ok(status)` for any HTTP answer (the outbox decides what a status means), `Err(why)` else.
pub async fn send(out: &Outgoing) -> Result<u16, String> {
    let headers = web_sys::Headers::new().map_err(|e| crate::platform::js_message(&e))?;
    for (k, v) in &out.headers {
        headers
            .set(k, v)
            .map_err(|e| crate::platform::js_message(&e))?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(headers.as_ref());
    init.set_body(&worker::wasm_bindgen::JsValue::from_str(&out.body));
    init.set_redirect(web_sys::RequestRedirect::Manual);
    let req = web_sys::Request::new_with_str_and_init(&out.url, &init)
        .map_err(|e| crate::platform::js_message(&e))?;
    match fetch_raw(&req, DELIVERY_TIMEOUT_MS).await {
        Ok(resp) => {
            cancel_body(&resp);
            Ok(resp.status())
        }
        Err(e) => Err(e.to_string()),
    }
}
