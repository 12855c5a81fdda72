//! The Worker-to-object relay: one call to a hostname's Durable Object and the internal headers it reads.

use worker::*;

use crate::platform::object_stub;
use crate::policy::control::audit::Actor;

/// The internal header that carries the caller to a service's Durable Object, for the audit trail.
/// Only the Worker can reach the object, so the object trusts it.
pub const ACTOR_HEADER: &str = "x-fb-actor";

/// The internal header that names the hostname an object serves, so it loads that service.
pub const HOST_HEADER: &str = "x-fb-host";

/// One request to the Durable Object of `host` (already a validated hostname).
pub async fn call_object(
    env: &Env,
    host: &str,
    method: Method,
    path_and_query: &str,
    if_match: Option<String>,
    body: Option<String>,
    actor: Option<&Actor>,
) -> Result<Response> {
    let h = Headers::new();
    h.set(HOST_HEADER, host)?;
    // Who asks, for the audit trail. Only the Worker can reach the object, so this is trusted.
    if let Some(a) = actor {
        h.set(ACTOR_HEADER, &serde_json::to_string(a)?)?;
    }
    if let Some(v) = if_match {
        h.set("if-match", &v)?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(h);
    if let Some(b) = body {
        init.with_body(Some(b.into()));
    }
    object_stub(env, host)?
        .fetch_with_request(Request::new_with_init(
            &format!("https://balancer{path_and_query}"),
            &init,
        )?)
        .await
}
