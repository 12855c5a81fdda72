//! The Worker-to-object relay: one call to a hostname's Durable Object and the internal headers it reads.

use worker::*;

use crate::platform::object_stub_at;
use crate::policy::control::audit::Actor;
use crate::policy::health::regions::Region;

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
    // A config write that names a location hint creates a new object there (Cloudflare applies a
    // hint only when it creates the object).
    let hint = body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| {
            v["decisions"]["location_hint"]
                .as_str()
                .and_then(Region::parse)
        })
        .or_else(|| crate::platform::store::registry::location_hint(env, host));
    if let Some(b) = body {
        init.with_body(Some(b.into()));
    }
    object_stub_at(env, host, hint)?
        .fetch_with_request(Request::new_with_init(
            &format!("https://balancer{path_and_query}"),
            &init,
        )?)
        .await
}
