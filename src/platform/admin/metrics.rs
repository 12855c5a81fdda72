//! `GET /admin/metrics`: asks every hostname's Durable Object for its counters in parallel and renders the Prometheus exposition.

use worker::*;

use crate::platform::relay::call_object;
use crate::platform::store::registry::{self, service_hosts};
use crate::platform::store::usage;
use crate::policy::access::keys::Grant;
use crate::policy::telemetry::metrics::{self, Format, HostMetrics};

/// A key limited to some hostnames (`grant`) sees only their series.
pub async fn scrape(req: &Request, env: &Env, grant: Option<&Grant>) -> Result<Response> {
    let format = Format::negotiate(req.headers().get("accept")?.as_deref());
    let mut hosts = service_hosts(env).await;
    hosts.retain(|h| grant.is_none_or(|g| g.sees(h)));
    let calls = hosts.iter().map(|h| host_metrics(env, h));
    // D1 is probed beside the objects, not before them: a refusal costs the scrape no extra wait.
    let probe = usage::rows_today(env, Date::now().as_millis());
    let (answers, probed) = futures_util::join!(futures_util::future::join_all(calls), probe);
    if let Err(e) = &probed {
        console_error!("D1 probe for /admin/metrics: {e}");
    }
    let mut found: Vec<HostMetrics> = Vec::with_capacity(answers.len());
    for (host, answer) in hosts.iter().zip(answers) {
        match answer {
            Ok(Some(m)) => found.push(m),
            // A service without a usable config has no series; its error shows elsewhere.
            Ok(None) => {}
            Err(e) => console_error!("metrics of {host} unavailable: {e}"),
        }
    }
    let body = metrics::render(
        &found,
        registry::defaults(env).errors.len(),
        probed.is_ok(),
        format,
    );
    let mut resp = Response::ok(body)?;
    resp.headers_mut()
        .set("content-type", format.content_type())?;
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

async fn host_metrics(env: &Env, host: &str) -> Result<Option<HostMetrics>> {
    let mut resp = call_object(env, host, Method::Get, "/metrics", None, None, None).await?;
    if resp.status_code() != 200 {
        return Ok(None);
    }
    Ok(Some(resp.json().await?))
}
