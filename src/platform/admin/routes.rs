//! The admin surface: authentication and the `/admin/...` REST routes, forwarding service questions to each hostname's Durable Object.

use worker::*;

use crate::platform::admin::accounts::{self, Call};
use crate::platform::admin::body::read_body;
use crate::platform::admin::console;
use crate::platform::admin::metrics;
use crate::platform::admin::session;
use crate::platform::admin::throttle;
use crate::platform::object::tail;
use crate::platform::relay::call_object;
use crate::platform::store::healthlog;
use crate::platform::store::registry::{self, service_hosts};
use crate::platform::store::usage;
use crate::platform::store::{analytics, requestlog};
use crate::platform::{env_string, error_response, random_bytes};
use crate::policy::access::auth::{self, AuthOutcome, Credentials, Secrets};
use crate::policy::access::keys::{self, ApiKey, Grant};
use crate::policy::access::prefix;
use crate::policy::control::audit::{Actor, ActorKind};
use crate::policy::control::config;
use crate::policy::telemetry::logquery::{
    LogQuery, MetricsQuery, DEFAULT_METRICS_WINDOW_S, MAX_METRICS_WINDOW_S,
};

pub use crate::policy::access::prefix::RESERVED_PREFIX;

/// The Worker's own hostnames serve the admin surface; every other hostname is balanced.
pub fn is_admin_host(host: &str, env: &Env) -> bool {
    registry::defaults(env).deployment.is_admin_host(host)
}

thread_local! {
    /// `ADMIN_PREFIX_HOSTNAMES`, read once per isolate (bindings never change within one).
    static PREFIX_HOSTS: std::cell::OnceCell<Vec<String>> = const { std::cell::OnceCell::new() };
}

/// Whether the balanced hostname `host` serves the reserved prefix (`ADMIN_PREFIX_HOSTNAMES`).
/// Off unless listed: with it on, every backend of `host` shares an origin with the console.
/// An unreadable setting keeps it off everywhere (fail closed) and says why in the log.
pub fn prefix_enabled(host: &str, env: &Env) -> bool {
    PREFIX_HOSTS.with(|hosts| {
        hosts
            .get_or_init(|| {
                match prefix::parse_hostnames(env_string(env, "ADMIN_PREFIX_HOSTNAMES").as_deref())
                {
                    Ok(list) => list,
                    Err(e) => {
                        console_error!("{e}");
                        Vec::new()
                    }
                }
            })
            .iter()
            .any(|h| h == host)
    })
}

pub async fn handle(req: Request, env: &Env, path: &str) -> Result<Response> {
    if path.is_empty() {
        // `/__lb_admin__` alone: the console's relative asset paths need the trailing slash.
        let query = req
            .url()?
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let mut resp = Response::empty()?.with_status(301);
        resp.headers_mut()
            .set("location", &format!("{RESERVED_PREFIX}/{query}"))?;
        return Ok(resp);
    }
    if !path.starts_with("/admin") && !session::web_enabled(env) {
        return error_response(
            404,
            "the web interface is off (ENABLE_WEB_INTERFACE=false); the admin API is at /admin/",
            None,
        );
    }
    if path == "/auth/whoami" && req.method() == Method::Get {
        return whoami(&req, env).await;
    }
    if path.starts_with("/auth/") {
        let root = if req.path().starts_with(RESERVED_PREFIX) {
            RESERVED_PREFIX
        } else {
            ""
        };
        return session::handle(req, env, root, path).await;
    }
    if let Some(resp) = console::serve(path) {
        return resp;
    }
    if !path.starts_with("/admin/") && path != "/admin" {
        return error_response(404, &format!("no admin route {path}"), None);
    }
    if path == "/admin/openapi.json" {
        // The API description holds no secrets; tools fetch it before they have credentials.
        return openapi();
    }
    let caller = match authorize(&req, env).await? {
        Ok(c) => c,
        Err(denied) => return Ok(denied),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    if let Some(refused) = caller.refusal(&method, &segments)? {
        return Ok(refused);
    }
    match (method.clone(), segments.as_slice()) {
        (Method::Get, ["admin", "metrics"]) => {
            metrics::scrape(&req, env, caller.grant.as_ref()).await
        }
        (Method::Get, ["admin", "d1"]) => Response::from_json(&usage::status(env).await),
        (Method::Get, ["admin", "services"]) => {
            list_services(&req, env, caller.grant.as_ref()).await
        }
        (Method::Get, ["admin", "services", host]) => {
            relay(req, env, host, "/status", false, None).await
        }
        (Method::Post, ["admin", "services", host, "health-check"]) => {
            relay(req, env, host, "/probe", false, None).await
        }
        (Method::Get, ["admin", "services", host, "events"]) => {
            relay(req, env, host, "/events", false, None).await
        }
        (Method::Post, ["admin", "services", host, "events", "test"]) => {
            relay(req, env, host, "/events/test", false, Some(&caller.actor)).await
        }
        (Method::Get, ["admin", "services", host, "logs"]) => logs(&req, env, host).await,
        (Method::Get, ["admin", "services", host, "metrics"]) => {
            service_metrics(&req, env, host).await
        }
        (Method::Get, ["admin", "services", host, "health-history"]) => {
            let limit = match query_number(&req, "limit", 100, 1, 1000)? {
                Ok(n) => n,
                Err(resp) => return Ok(resp),
            };
            let events = match healthlog::recent(env, host, limit as u32).await {
                Ok(e) => e,
                Err(e) => return d1_unavailable("the health history", &e),
            };
            Response::from_json(&serde_json::json!({ "hostname": host, "events": events }))
        }
        (Method::Get, ["admin", "services", host, "tail"]) => tail::relay(&req, env, host).await,
        // The object validates: it knows the stored secrets a redacted value stands for.
        (Method::Post, ["admin", "services", host, "config", "validate"]) => {
            relay(req, env, host, "/config/validate", false, None).await
        }
        // What the rules would do with a sample request: stored config or a draft; stores nothing.
        (Method::Post, ["admin", "services", host, "rules", "test"]) => {
            relay(req, env, host, "/rules/test", false, None).await
        }
        // The object holds the fleet the draft is compared with, and reads the log itself.
        (Method::Post, ["admin", "services", host, "config", "preview"]) => {
            relay(req, env, host, "/config/preview", false, None).await
        }
        (
            Method::Get | Method::Post | Method::Put | Method::Delete,
            ["admin", "services", host, "config"],
        )
        | (Method::Get, ["admin", "services", host, "config", "history"])
        | (Method::Post, ["admin", "services", host, "config", "rollback" | "reset"])
        | (
            Method::Post | Method::Patch | Method::Delete,
            ["admin", "services", host, "backends"],
        ) => {
            let object_path = format!("/{}", segments[3..].join("/"));
            relay(req, env, host, &object_path, true, Some(&caller.actor)).await
        }
        (Method::Get, ["admin", "services", host, "audit"]) => {
            relay(req, env, host, "/audit", false, None).await
        }
        (_, ["admin", "services", ..]) => error_response(
            405,
            &format!("{method} {path} is not an admin route; see /admin/openapi.json"),
            None,
        ),
        (Method::Get, ["admin", "keys"]) => {
            let (status, body) = accounts::call(env, &Call::ListKeys).await?;
            Ok(Response::from_json(&body)?.with_status(status))
        }
        (Method::Post, ["admin", "keys"]) => create_key(req, env, caller.actor).await,
        (Method::Delete, ["admin", "keys", id]) => {
            if !keys::is_key_id(id) {
                return error_response(
                    400,
                    &format!("id: {id:?} is not a key id; expected key_ and 12 hex digits (see GET /admin/keys)"),
                    None,
                );
            }
            let call = Call::RevokeKey {
                id: id.to_string(),
                actor: caller.actor,
            };
            let (status, body) = accounts::call(env, &call).await?;
            Ok(Response::from_json(&body)?.with_status(status))
        }
        (Method::Get, ["admin", "audit"]) => {
            let (status, body) = accounts::call(env, &Call::Audit).await?;
            Ok(Response::from_json(&body)?.with_status(status))
        }
        (_, ["admin", "keys", ..] | ["admin", "audit"]) => error_response(
            405,
            &format!("{method} {path} is not an admin route; see /admin/openapi.json"),
            None,
        ),
        _ => error_response(
            404,
            &format!("no admin route {path}; see /admin/openapi.json"),
            None,
        ),
    }
}

/// The query pairs of a request, owned (parsers borrow them as `(&str, &str)`).
fn query_pairs(req: &Request) -> Result<Vec<(String, String)>> {
    Ok(req
        .url()?
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

fn borrowed(pairs: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// `GET /admin/services/{h}/logs`: one page of the request log, filtered, newest first.
async fn logs(req: &Request, env: &Env, host: &str) -> Result<Response> {
    let query = match LogQuery::parse(borrowed(&query_pairs(req)?)) {
        Ok(q) => q,
        Err(e) => return error_response(400, &e.to_string(), None),
    };
    flush_first(env, host).await;
    let (rows, next_before) = match requestlog::page(env, host, &query).await {
        Ok(page) => page,
        Err(e) => return d1_unavailable("the request log", &e),
    };
    Response::from_json(&serde_json::json!({
        "hostname": host,
        "requests": rows,
        "next_before": next_before,
    }))
}

/// Asks the hostname's object to write what it holds (the open minute, kept rows) before D1 is
/// read, so the figures are current to the request. A failure only makes them a minute older.
async fn flush_first(env: &Env, host: &str) {
    if let Err(e) = call_object(env, host, Method::Post, "/flush", None, None, None).await {
        console_error!("flush before reading {host}'s analytics failed: {e}");
    }
}

/// `GET /admin/services/{h}/metrics`: service-wide and per-backend totals over a window, the
/// error statuses, and buckets when asked.
async fn service_metrics(req: &Request, env: &Env, host: &str) -> Result<Response> {
    let query = match MetricsQuery::parse(borrowed(&query_pairs(req)?)) {
        Ok(q) => q,
        Err(e) => return error_response(400, &e.to_string(), None),
    };
    flush_first(env, host).await;
    let found = futures_util::try_join!(
        analytics::metrics(env, host, &query),
        analytics::service_total(env, host, query.window_s),
        analytics::errors_by_status(env, host, query.window_s),
    );
    let ((backends, series), total, errors) = match found {
        Ok(f) => f,
        Err(e) => return d1_unavailable("analytics", &e),
    };
    Response::from_json(&serde_json::json!({
        "hostname": host,
        "window_s": query.window_s,
        "bucket_s": query.bucket_s,
        "now_ms": Date::now().as_millis(),
        "source": "rollups",
        // The histogram's upper bounds (ms; one more bucket above the last): the percentiles are
        // interpolated within them.
        "buckets_ms": crate::policy::telemetry::metrics::BUCKETS_MS,
        "total": total,
        "errors_by_status": errors,
        "backends": backends,
        "series": series,
    }))
}

/// The answer of a view D1 holds when D1 refused the query (quota, outage, missing table): 503
/// with D1's own message, which the console shows in place of the view. Nothing else depends on
/// D1, so only this view is unavailable.
fn d1_unavailable(view: &str, e: &Error) -> Result<Response> {
    let reason = usage::reason(e);
    console_error!("{view} unavailable: {reason}");
    Ok(Response::from_json(&serde_json::json!({
        "error": format!("{view} is unavailable: D1 refused the query ({reason})"),
        "status": 503,
        "unavailable": "d1",
        "reason": reason,
    }))?
    .with_status(503))
}

/// An integer query parameter within bounds, or the 400 that names it and the allowed range.
fn query_number(
    req: &Request,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<std::result::Result<u64, Response>> {
    let url = req.url()?;
    let Some((_, raw)) = url.query_pairs().find(|(k, _)| k == name) else {
        return Ok(Ok(default));
    };
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Ok(n)),
        _ => Ok(Err(error_response(
            400,
            &format!("{name}: {raw:?} is not allowed; expected an integer {min}..={max}"),
            None,
        )?)),
    }
}

fn openapi() -> Result<Response> {
    let mut resp = Response::ok(OPENAPI)?;
    resp.headers_mut().set("content-type", "application/json")?;
    Ok(resp)
}

/// The OpenAPI 3 description of this admin API (kept true by an end-to-end test).
const OPENAPI: &str = include_str!("openapi.json");

/// Passes an admin request to the hostname's Durable Object (method, query, If-Match, body) and
/// its JSON answer back. When `records` and the request changed the config, the D1 registry
/// learns the hostname for `GET /admin/services`.
async fn relay(
    mut req: Request,
    env: &Env,
    host: &str,
    object_path: &str,
    records: bool,
    actor: Option<&Actor>,
) -> Result<Response> {
    let host = match config::validate_hostname(host) {
        Ok(h) => h,
        Err(e) => return error_response(400, &format!("hostname: {e}"), None),
    };
    let method = req.method();
    let if_match = req.headers().get("if-match")?;
    let body = if matches!(method, Method::Post | Method::Put | Method::Patch) {
        match read_body(&mut req).await? {
            Ok(text) => Some(text),
            Err(refused) => return Ok(refused),
        }
    } else {
        None
    };
    let query = req
        .url()?
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let path = format!("{object_path}{query}");
    let mut resp = call_object(env, &host, method.clone(), &path, if_match, body, actor).await?;
    let status = resp.status_code();
    let text = resp.text().await?;
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) else {
        return error_response(status.max(400), &text, None);
    };
    if records && (200..300).contains(&status) && method != Method::Get {
        // A DELETE that fell back to the deployed config answers a version, not `deleted`.
        let deleted = body["deleted"].is_string();
        let version = body["version"].as_u64().unwrap_or(0);
        if let Err(e) = registry::record(env, &host, version, deleted).await {
            console_error!("service registry update for {host} failed: {e}");
        }
    }
    let mut out = Response::from_json(&body)?.with_status(status);
    if let Some(etag) = resp.headers().get("etag")? {
        out.headers_mut().set("etag", &etag)?;
    }
    Ok(out)
}

/// Who an authorised admin request comes from, and what a named key limits it to.
pub struct Caller {
    pub actor: Actor,
    /// Some for a named API key: its scope and hostnames.
    pub grant: Option<Grant>,
}

impl Caller {
    /// Some(403) when a named key may not make this request: a read key writing, a key limited to
    /// other hostnames, or any key managing keys or reading the deployment trail.
    fn refusal(&self, method: &Method, segments: &[&str]) -> Result<Option<Response>> {
        let Some(grant) = &self.grant else {
            return Ok(None);
        };
        if matches!(segments, ["admin", "keys", ..] | ["admin", "audit"]) {
            return error_response(
                403,
                "API keys cannot manage API keys or read the deployment audit trail; use API_SECRET, Basic auth or a console session",
                None,
            )
            .map(Some);
        }
        let host = match segments {
            // Unreadable names are compared as sent, so a limited key never gets past with one.
            ["admin", "services", host, ..] => {
                Some(config::validate_hostname(host).unwrap_or_else(|_| host.to_string()))
            }
            _ => None,
        };
        // Explaining a sample request stores nothing: whoever may read the config may ask.
        let read_only = matches!(method, Method::Get | Method::Head)
            || matches!(
                (method, segments),
                (Method::Post, ["admin", "services", _, "rules", "test"])
            );
        match grant.permits(read_only, host.as_deref()) {
            Ok(()) => Ok(None),
            Err(why) => error_response(403, &format!("forbidden: {why}"), None).map(Some),
        }
    }
}

/// `GET /auth/whoami`: whether this browser is signed in, answered 200 either way, so a signed-out
/// console asks without an error in its log. A session cookie answers for itself; credentials
/// (a pasted key, Basic) go through `authorize`, throttle included, as any admin call would.
async fn whoami(req: &Request, env: &Env) -> Result<Response> {
    let nobody = |reason: String| {
        session::no_store_json(&serde_json::json!({ "signed_in": false, "reason": reason }))
    };
    if req.headers().get("authorization")?.is_none() {
        return match session::current(req, env).await? {
            Some(Ok(claims)) => {
                let mut view = session::session_view(&claims);
                view["signed_in"] = true.into();
                view["mode"] = "session".into();
                session::no_store_json(&view)
            }
            Some(Err(why)) => nobody(format!("session {why}")),
            None => nobody("no session and no credentials".into()),
        };
    }
    match authorize(req, env).await? {
        Ok(caller) => session::no_store_json(&serde_json::json!({
            "signed_in": true,
            "mode": "credentials",
            "actor": caller.actor.label(),
        })),
        // A lockout or an unconfigured API keeps its status: the console shows why.
        Err(resp) if matches!(resp.status_code(), 429 | 503) => Ok(resp),
        Err(_) => nobody("invalid credentials".into()),
    }
}

/// Checks credentials: Bearer (API_SECRET or a named key), Basic, or the console's session
/// cookie (whose writes must also pass the CSRF check). Err(response) means refused.
pub async fn authorize(req: &Request, env: &Env) -> Result<std::result::Result<Caller, Response>> {
    let header = req.headers().get("authorization")?;
    if header.is_none() && session::web_enabled(env) {
        if let Some(found) = session::current(req, env).await? {
            let claims = match found {
                Ok(c) => c,
                Err(why) => {
                    return error_response(401, &format!("unauthorized: session {why}"), None)
                        .map(Err)
                }
            };
            if !matches!(req.method(), Method::Get | Method::Head) {
                if let Some(refused) = session::csrf_refusal(req, &claims, None)? {
                    return Ok(Err(refused));
                }
            }
            // A WebSocket upgrade has no CORS: any page of the site could read the tail with
            // this cookie, so the cookie opens one only from the console's own origin.
            if req.headers().get("upgrade")?.is_some() {
                if let Some(refused) = session::cross_origin_refusal(req)? {
                    return Ok(Err(refused));
                }
            }
            return Ok(Ok(Caller {
                actor: session::actor(&claims),
                grant: None,
            }));
        }
    }
    let secrets = Secrets {
        api_secret: env_string(env, "API_SECRET"),
        basic_user: env_string(env, "WEB_AUTH_USERNAME"),
        basic_password: env_string(env, "WEB_AUTH_PASSWORD"),
    };
    let creds = auth::parse_authorization(header.as_deref());
    // A named key is looked up only when the token is not API_SECRET (compared first, in constant time).
    let mut key: Option<ApiKey> = None;
    let mut outcome = auth::check(&secrets, &creds);
    if let Credentials::Bearer(token) = &creds {
        if outcome != AuthOutcome::Ok && token.starts_with(keys::KEY_PREFIX) {
            key = accounts::verify_key(env, keys::hash(token)).await?;
            outcome = if key.is_some() {
                AuthOutcome::Ok
            } else {
                AuthOutcome::Denied("invalid credentials (unknown or revoked API key)")
            };
        }
    }
    if matches!(outcome, AuthOutcome::NotConfigured) {
        return not_configured().map(Err);
    }
    if !matches!(creds, Credentials::None) {
        let client = req
            .headers()
            .get("cf-connecting-ip")?
            .unwrap_or_else(|| "unknown".to_string());
        let ok = matches!(outcome, AuthOutcome::Ok);
        // A Basic guess is attributed to the user it names; a bearer token proves no guessed
        // identity, so its success clears nothing.
        let identity = match &creds {
            Credentials::Basic { user, .. } => Some(user.as_str()),
            _ => None,
        };
        if let Some(wait_s) = throttle::login_attempt(env, &client, ok, identity).await? {
            return error_response(
                429,
                "too many failed login attempts from this address; wait before retrying",
                Some(wait_s),
            )
            .map(Err);
        }
    }
    match outcome {
        AuthOutcome::Ok => Ok(Ok(match (&creds, key) {
            (_, Some(k)) => Caller {
                actor: Actor::new(ActorKind::Key, Some(&k.name)),
                grant: Some(k.grant),
            },
            (Credentials::Basic { user, .. }, None) => Caller {
                actor: Actor::new(ActorKind::Basic, Some(user)),
                grant: None,
            },
            _ => Caller {
                actor: Actor::new(ActorKind::ApiSecret, None),
                grant: None,
            },
        })),
        AuthOutcome::Denied(why) => {
            let mut resp = error_response(401, &format!("unauthorized: {why}"), None)?;
            resp.headers_mut().set(
                "www-authenticate",
                "Bearer realm=\"FlowBalance admin\", Basic realm=\"FlowBalance admin\"",
            )?;
            Ok(Err(resp))
        }
        AuthOutcome::NotConfigured => not_configured().map(Err),
    }
}

/// `POST /admin/keys`: mints a key, stores only its hash, and shows the key this once.
async fn create_key(mut req: Request, env: &Env, actor: Actor) -> Result<Response> {
    let text = match read_body(&mut req).await? {
        Ok(t) => t,
        Err(refused) => return Ok(refused),
    };
    let body: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return error_response(400, &format!("malformed JSON body: {e}"), None),
    };
    let (name, grant) = match keys::parse_new(&body) {
        Ok(k) => k,
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Ok(Response::from_json(&serde_json::json!({
                "error": format!("invalid request: {}", list.join("; ")),
                "errors": errors,
                "status": 400,
            }))?
            .with_status(400));
        }
    };
    let random = random_bytes();
    if random.iter().all(|b| *b == 0) {
        return error_response(500, "no random source to mint a key", None);
    }
    let (plain, hash, id) = keys::mint(&random);
    let key = ApiKey {
        id,
        name,
        grant,
        created_at: Date::now().as_millis(),
        created_by: actor,
        last_used_at: None,
        revoked: false,
        revoked_at: None,
        hash,
    };
    let (status, mut view) = accounts::call(env, &Call::AddKey { key }).await?;
    if status == 201 {
        view["key"] = plain.into();
        view["note"] = "the key is shown only now: store it; only its hash is kept".into();
    }
    Ok(Response::from_json(&view)?.with_status(status))
}

/// Refuses to run the admin API open when no credentials are configured.
fn not_configured() -> Result<Response> {
    error_response(
        503,
        "the admin API is disabled: set API_SECRET (wrangler secret put API_SECRET, or .dev.vars locally)",
        None,
    )
}

/// Hostnames from DEFAULT_BACKENDS, each with its health summary from its Durable Object and its traffic over the last `window` seconds (default 300) from the request log.
async fn list_services(req: &Request, env: &Env, grant: Option<&Grant>) -> Result<Response> {
    let window_s = match query_number(
        req,
        "window",
        DEFAULT_METRICS_WINDOW_S,
        1,
        MAX_METRICS_WINDOW_S,
    )? {
        Ok(n) => n,
        Err(resp) => return Ok(resp),
    };
    let defaults = registry::defaults(env);
    let errors: Vec<String> = defaults.errors.iter().map(|e| e.to_string()).collect();
    let mut hosts = service_hosts(env).await;
    // A key limited to some hostnames sees only those.
    hosts.retain(|h| grant.is_none_or(|g| g.sees(h)));
    // Without D1 the overview still lists each service and its health, and says why traffic is missing.
    let (traffic, traffic_unavailable) = match analytics::by_host(env, window_s).await {
        Ok(rows) => (rows, None),
        Err(e) => {
            console_error!("request log unavailable for the overview: {e}");
            let reason = usage::reason(&e);
            (
                vec![],
                Some(serde_json::json!({ "unavailable": "d1", "reason": reason })),
            )
        }
    };
    // Every object is asked at once: the overview polls this, and a deployment may have many.
    let statuses = futures_util::future::join_all(hosts.iter().map(|h| object_json(env, h))).await;
    let mut services = Vec::new();
    for (host, status) in hosts.into_iter().zip(statuses) {
        let status = status.ok();
        // The object counts what takes traffic (one rule, in policy).
        let count = |k: &str| status.as_ref().and_then(|s| s[k].as_u64()).unwrap_or(0);
        let (healthy, total) = (count("healthy_backends"), count("total_backends"));
        let stats = traffic
            .iter()
            .find(|t| t.hostname == host)
            .map(|t| &t.stats);
        services.push(serde_json::json!({
            "healthy": total > 0 && healthy > 0,
            // The object judges health (one rule, in policy); no answer counts as critical.
            "health": status.as_ref().and_then(|s| s["health"].as_str()).unwrap_or("critical"),
            "hostname": host,
            "backends": total,
            "healthy_backends": healthy,
            "version": status.as_ref().map(|s| s["version"].clone()),
            "traffic": stats,
        }));
    }
    Response::from_json(&serde_json::json!({
        "services": services,
        "config_errors": errors,
        "window_s": window_s,
        "traffic_unavailable": traffic_unavailable,
    }))
}

async fn object_json(env: &Env, host: &str) -> Result<serde_json::Value> {
    let mut resp = call_object(env, host, Method::Get, "/status", None, None, None).await?;
    if resp.status_code() != 200 {
        return Err(Error::RustError(resp.text().await.unwrap_or_default()));
    }
    resp.json().await
}
