//! The console's sign-in routes (`/auth/...`): providers, GitHub and Google OAuth, the password form, session info, logout and sign-out-everywhere; and reading the `fb_session` cookie for the admin API.

use std::cell::RefCell;
use std::rc::Rc;

use worker::*;

use crate::platform::admin::accounts::{self, Call};
use crate::platform::admin::body::read_body;
use crate::platform::admin::throttle;
use crate::platform::{env_string, error_response, fetch_with_timeout, random_bytes};
use crate::policy::access::auth::{self, AuthOutcome, Credentials, Secrets};
use crate::policy::access::jwt::Key;
use crate::policy::access::oauth::{
    self, FlowState, Provider, Settings, SignInError, STATE_COOKIE, STATE_TTL_S,
};
use crate::policy::access::session::{self, Claims, NewSession, Via, COOKIE};
use crate::policy::control::audit::{Actor, ActorKind};
use crate::policy::traffic::affinity::cookie_value;

/// How long the Worker waits for each provider answer.
const PROVIDER_TIMEOUT_MS: u64 = 10_000;

thread_local! {
    /// An isolate's bindings never change: the sign-in settings are read once.
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}

pub fn settings(env: &Env) -> Rc<Settings> {
    SETTINGS.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| Rc::new(Settings::from_env(|name| env_string(env, name))))
            .clone()
    })
}

/// `ENABLE_WEB_INTERFACE`: on unless set to false/0/no/off. Anything else unrecognised turns the
/// console off too (fail closed) and says so in the log.
pub fn web_enabled(env: &Env) -> bool {
    match env_string(env, "ENABLE_WEB_INTERFACE").map(|v| v.trim().to_ascii_lowercase()) {
        None => true,
        Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
        Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
        Some(v) => {
            console_error!(
                "ENABLE_WEB_INTERFACE={v:?} is not true or false: the web interface stays off"
            );
            false
        }
    }
}

/// 32 random bytes; refuses rather than mint a predictable secret.
fn secure_random() -> Result<[u8; 32]> {
    let b = random_bytes();
    if b.iter().all(|x| *x == 0) {
        return Err(Error::RustError("no random source".into()));
    }
    Ok(b)
}

/// The request's origin (`https://host[:port]`) and whether it came over https.
pub fn origin(req: &Request) -> Result<(String, bool)> {
    let url = req.url()?;
    Ok((url.origin().ascii_serialization(), url.scheme() == "https"))
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Routes `/auth/...` (below `root`, which is "" or "/__lb_admin__").
pub async fn handle(req: Request, env: &Env, root: &str, path: &str) -> Result<Response> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["auth", "providers"]) => providers(&req, env, root),
        (Method::Get, ["auth", "session"]) => session_info(&req, env).await,
        (Method::Get, ["auth", p, "login"]) => match Provider::parse(p) {
            Some(p) => login(&req, env, root, p),
            None => error_response(404, &format!("no sign-in provider {p:?}"), None),
        },
        (Method::Get, ["auth", p, "callback"]) => match Provider::parse(p) {
            Some(p) => callback(&req, env, root, p).await,
            None => error_response(404, &format!("no sign-in provider {p:?}"), None),
        },
        (Method::Post, ["auth", "password"]) => password(req, env, root).await,
        (Method::Post, ["auth", "logout"]) => logout(req, env, root, false).await,
        (Method::Post, ["auth", "logout-all"]) => logout(req, env, root, true).await,
        (_, ["auth", "providers" | "session" | "password" | "logout" | "logout-all"])
        | (_, ["auth", _, "login" | "callback"]) => error_response(
            405,
            &format!("{} {path} is not allowed", req.method()),
            None,
        ),
        _ => error_response(404, &format!("no sign-in route {path}"), None),
    }
}

/// What the login page needs: which methods are on, the exact redirect URIs to register, every
/// configuration problem and the texts of the error codes. No secret values.
fn providers(req: &Request, env: &Env, root: &str) -> Result<Response> {
    let s = settings(env);
    let (origin, _) = origin(req)?;
    let provider = |p: Provider| {
        serde_json::json!({
            "enabled": s.provider(p).usable().is_some(),
            "login_url": format!("{root}/auth/{}/login", p.as_str()),
            "redirect_uri": oauth::redirect_uri(&origin, root, p),
        })
    };
    let texts: serde_json::Map<String, serde_json::Value> = SignInError::ALL
        .iter()
        .map(|e| (e.code().to_string(), e.text().into()))
        .collect();
    no_store(Response::from_json(&serde_json::json!({
        "github": provider(Provider::Github),
        "google": provider(Provider::Google),
        "password": { "enabled": s.password.is_some(), "action": format!("{root}/auth/password") },
        "problems": s.problems(),
        "authorized_users_empty": s.authorized.is_empty(),
        "error_texts": texts,
    }))?)
}

/// Sign-in answers are per browser and per moment: never cached.
fn no_store(mut resp: Response) -> Result<Response> {
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

/// The signed-in operator's session, checked against the key and the sign-out-everywhere epoch.
/// None when the request carries no session cookie.
pub async fn current(
    req: &Request,
    env: &Env,
) -> Result<Option<std::result::Result<Claims, String>>> {
    let cookies = req.headers().get("cookie")?.unwrap_or_default();
    let Some(token) = cookie_value(&cookies, COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let s = settings(env);
    let key = match &s.key {
        Ok(k) => k,
        Err(why) => return Ok(Some(Err((*why).to_string()))),
    };
    // Signature, expiry and hostname first: a forged token never reaches the accounts object.
    let claims = match session::verify(key, token, &host_of(req)?, now_ms()) {
        Ok(c) => c,
        Err(why) => return Ok(Some(Err(why))),
    };
    let standing = accounts::standing(env, &claims.jti).await?;
    let allowed = s.still_allows(claims.via, &claims.reg.sub);
    Ok(Some(
        session::admit(&claims, standing, allowed).map(|()| claims),
    ))
}

/// The hostname a request was sent to, as sessions are bound to it.
fn host_of(req: &Request) -> Result<String> {
    let url = req.url()?;
    Ok(url
        .host_str()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase())
}

/// A new session cookie value for `sub` on this request's hostname.
fn new_session(req: &Request, key: &Key, sub: &str, via: Via, ttl: u64) -> Result<String> {
    let (token, _) = session::issue(
        key,
        NewSession {
            sub,
            via,
            host: &host_of(req)?,
            jti: oauth::random_token(&secure_random()?),
            csrf: oauth::random_token(&secure_random()?),
        },
        now_ms(),
        ttl,
    );
    Ok(token)
}

/// The actor a session acts as.
pub fn actor(claims: &Claims) -> Actor {
    Actor::new(ActorKind::Session, Some(&claims.reg.sub))
}

/// The browser-side half of the CSRF check alone (`Origin` / `Sec-Fetch-Site` name this origin).
/// Some(refusal) when it fails.
pub fn cross_origin_refusal(req: &Request) -> Result<Option<Response>> {
    let (self_origin, _) = origin(req)?;
    let h = req.headers();
    match session::same_origin(
        h.get("origin")?.as_deref(),
        h.get("sec-fetch-site")?.as_deref(),
        &self_origin,
    ) {
        Ok(()) => Ok(None),
        Err(why) => error_response(403, &format!("CSRF check failed: {why}"), None).map(Some),
    }
}

/// The CSRF check for a cookie-authenticated write: same origin, and the session's token sent in
/// `X-CSRF-Token` (or `form_token`, the form field `csrf`). Some(refusal) when it fails.
pub fn csrf_refusal(
    req: &Request,
    claims: &Claims,
    form_token: Option<&str>,
) -> Result<Option<Response>> {
    if let Some(refused) = cross_origin_refusal(req)? {
        return Ok(Some(refused));
    }
    let header = req.headers().get("x-csrf-token")?;
    if !session::csrf_matches(header.as_deref().or(form_token), claims) {
        return error_response(
            403,
            "CSRF check failed: send the session's csrf_token (from GET /auth/session) in X-CSRF-Token",
            None,
        )
        .map(Some);
    }
    Ok(None)
}

async fn session_info(req: &Request, env: &Env) -> Result<Response> {
    match current(req, env).await? {
        Some(Ok(c)) => no_store(Response::from_json(&session_view(&c))?),
        Some(Err(why)) => error_response(401, &format!("not signed in: {why}"), None),
        None => error_response(401, "not signed in", None),
    }
}

/// What the console learns of its session: who, how, its CSRF token and when it ends.
pub fn session_view(c: &Claims) -> serde_json::Value {
    let who = if c.via == Via::Password {
        "user"
    } else {
        "email"
    };
    serde_json::json!({
        who: c.reg.sub,
        "sub": c.reg.sub,
        "via": c.via.as_str(),
        "csrf_token": c.csrf,
        "expires_at": c.reg.exp * 1000,
    })
}

/// A JSON answer that no cache keeps.
pub fn no_store_json(body: &serde_json::Value) -> Result<Response> {
    no_store(Response::from_json(body)?)
}

/// A redirect (302 or 303) to `location` with the given cookies.
fn redirect(status: u16, location: &str, cookies: &[String]) -> Result<Response> {
    let mut resp = Response::empty()?.with_status(status);
    let h = resp.headers_mut();
    h.set("location", location)?;
    h.set("cache-control", "no-store")?;
    for c in cookies {
        h.append("set-cookie", c)?;
    }
    Ok(resp)
}

/// The session cookie's Path: `/` on the Worker's own hostnames; on a balanced hostname only the
/// reserved prefix, so the session never travels to that hostname's backends.
fn session_path(root: &str) -> String {
    format!("{root}/")
}

fn state_path(root: &str) -> String {
    format!("{root}/auth/")
}

/// Back to the console with a fixed error code (its text comes from `/auth/providers`).
fn fail(status: u16, root: &str, e: SignInError, cookies: &[String]) -> Result<Response> {
    redirect(status, &format!("{root}/?error={}", e.code()), cookies)
}

/// Starts a flow: a fresh state and PKCE verifier, held in a signed cookie scoped to the auth
/// routes; the browser goes to the provider with the state and the S256 challenge.
fn login(req: &Request, env: &Env, root: &str, p: Provider) -> Result<Response> {
    let s = settings(env);
    let Some((client_id, _, endpoints)) = s.provider(p).usable() else {
        return fail(302, root, SignInError::ProviderDisabled, &[]);
    };
    let key = match s.signer() {
        Ok((key, _)) => key,
        Err(e) => return fail(302, root, e, &[]),
    };
    if s.authorized.is_empty() {
        return fail(302, root, SignInError::NoAuthorizedUsers, &[]);
    }
    let (origin, https) = origin(req)?;
    let flow = FlowState {
        provider: p,
        state: oauth::random_token(&secure_random()?),
        verifier: oauth::random_token(&secure_random()?),
        exp: now_ms() / 1000 + STATE_TTL_S,
    };
    let cookie = session::set_cookie(
        STATE_COOKIE,
        &oauth::seal(key, &flow),
        &state_path(root),
        STATE_TTL_S,
        https,
    );
    let redirect_uri = oauth::redirect_uri(&origin, root, p);
    let to = oauth::authorize_url(
        endpoints,
        p,
        client_id,
        &redirect_uri,
        &flow.state,
        &flow.verifier,
    );
    redirect(302, &to, &[cookie])
}

/// Finishes a flow. Every outcome clears the state cookie; a failure goes back with a fixed code.
async fn callback(req: &Request, env: &Env, root: &str, p: Provider) -> Result<Response> {
    let (origin, https) = origin(req)?;
    let clear = session::clear_cookie(STATE_COOKIE, &state_path(root), https);
    match finish(req, env, root, p, &origin).await? {
        Ok(email) => {
            let s = settings(env);
            let Ok((key, ttl)) = s.signer() else {
                return fail(302, root, SignInError::NoJwtSecret, &[clear]);
            };
            let token = new_session(req, key, &email, p.via(), ttl)?;
            let cookie = session::set_cookie(COOKIE, &token, &session_path(root), ttl, https);
            redirect(302, &format!("{root}/"), &[cookie, clear])
        }
        Err(e) => {
            console_log!("{} sign-in refused: {}", p.as_str(), e.code());
            // An unauthenticated caller's failed callbacks count as failed logins of its
            // address, so forging them is throttled like guessing a password. A provider that
            // is down is nobody's attempt.
            let counted = !matches!(e, SignInError::Throttled | SignInError::ProviderUnreachable);
            let e = if counted
                && throttle::login_attempt(env, &client_of(req)?, false, None)
                    .await?
                    .is_some()
            {
                SignInError::Throttled
            } else {
                e
            };
            fail(302, root, e, &[clear])
        }
    }
}

/// The checks and the server-side exchange; the verified, authorised email on success.
async fn finish(
    req: &Request,
    env: &Env,
    root: &str,
    p: Provider,
    origin: &str,
) -> Result<std::result::Result<String, SignInError>> {
    let s = settings(env);
    let key = match s.signer() {
        Ok((key, _)) => key,
        Err(e) => return Ok(Err(e)),
    };
    let Some((client_id, client_secret, endpoints)) = s.provider(p).usable() else {
        return Ok(Err(SignInError::ProviderDisabled));
    };
    let url = req.url()?;
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
    };
    let cookies = req.headers().get("cookie")?.unwrap_or_default();
    let flow = match oauth::open(
        key,
        cookie_value(&cookies, STATE_COOKIE),
        p,
        param("state").as_deref(),
        now_ms() / 1000,
    ) {
        Ok(f) => f,
        // A provider error with no usable state is still reported as the provider's error.
        Err(_) if param("error").is_some() => return Ok(Err(SignInError::ProviderError)),
        Err(e) => return Ok(Err(e)),
    };
    // Nothing is stored for a callback that cannot finish (a provider error, no code) or from
    // a client that is locked out: the one-time state is recorded only past these checks.
    if param("error").is_some() {
        return Ok(Err(SignInError::ProviderError));
    }
    let Some(code) = param("code").filter(|c| !c.is_empty()) else {
        return Ok(Err(SignInError::ProviderError));
    };
    if throttle::locked_out(env, &client_of(req)?).await?.is_some() {
        return Ok(Err(SignInError::Throttled));
    }
    let (_, body) = accounts::call(
        env,
        &Call::ConsumeState {
            state: flow.state.clone(),
            exp_s: flow.exp,
        },
    )
    .await?;
    if body["fresh"] != true {
        return Ok(Err(SignInError::StateUsed));
    }
    let redirect_uri = oauth::redirect_uri(origin, root, p);
    let form = oauth::token_form(
        client_id,
        client_secret,
        &code,
        &redirect_uri,
        &flow.verifier,
    );
    let token = match provider_json(Method::Post, &endpoints.token, None, Some(form)).await? {
        Ok(body) => match oauth::access_token(&body) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        },
        Err(e) => return Ok(Err(e)),
    };
    let email = match p {
        Provider::Github => {
            if let Some(user_url) = &endpoints.user {
                if let Err(e) = provider_json(Method::Get, user_url, Some(&token), None).await? {
                    return Ok(Err(e));
                }
            }
            match provider_json(Method::Get, &endpoints.email, Some(&token), None).await? {
                Ok(list) => oauth::github_email(&list),
                Err(e) => Err(e),
            }
        }
        Provider::Google => {
            match provider_json(Method::Get, &endpoints.email, Some(&token), None).await? {
                Ok(info) => oauth::google_email(&info),
                Err(e) => Err(e),
            }
        }
    };
    Ok(email.and_then(|email| {
        if s.allows(&email) {
            Ok(email)
        } else {
            Err(SignInError::NotAuthorized)
        }
    }))
}

/// One request to a provider: a form POST or a GET with the access token; its JSON answer. A
/// network failure, timeout or 5xx is `ProviderUnreachable`, any other refusal `ExchangeFailed`.
async fn provider_json(
    method: Method,
    url: &str,
    bearer: Option<&str>,
    form: Option<String>,
) -> Result<std::result::Result<serde_json::Value, SignInError>> {
    let h = Headers::new();
    h.set("accept", "application/json")?;
    // GitHub's API refuses requests without a User-Agent.
    h.set("user-agent", "FlowBalance")?;
    if let Some(t) = bearer {
        h.set("authorization", &format!("Bearer {t}"))?;
    }
    if form.is_some() {
        h.set("content-type", "application/x-www-form-urlencoded")?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(h);
    if let Some(f) = form {
        init.with_body(Some(f.into()));
    }
    let Ok(request) = Request::new_with_init(url, &init) else {
        return Ok(Err(SignInError::ProviderUnreachable));
    };
    let mut resp = match fetch_with_timeout(request, PROVIDER_TIMEOUT_MS).await {
        Ok(r) => r,
        Err(e) => {
            console_error!("sign-in provider {url} unreachable: {e}");
            return Ok(Err(SignInError::ProviderUnreachable));
        }
    };
    let status = resp.status_code();
    if status >= 500 {
        return Ok(Err(SignInError::ProviderUnreachable));
    }
    let body: serde_json::Value = match resp.json().await {
        Ok(b) => b,
        Err(_) => return Ok(Err(SignInError::ExchangeFailed)),
    };
    if !(200..300).contains(&status) {
        return Ok(Err(SignInError::ExchangeFailed));
    }
    Ok(Ok(body))
}

/// The client address the throttle counts.
fn client_of(req: &Request) -> Result<String> {
    Ok(req
        .headers()
        .get("cf-connecting-ip")?
        .unwrap_or_else(|| "unknown".to_string()))
}

/// A url-encoded form body as pairs (read no further than the admin body limit); empty when it
/// is too large or not a form.
async fn read_form(req: &mut Request) -> Result<Vec<(String, String)>> {
    Ok(match read_body(req).await? {
        Ok(text) => serde_urlencoded::from_str(&text).unwrap_or_default(),
        Err(_) => vec![],
    })
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The password form: same-origin only, throttled per client address like the API's Basic auth.
async fn password(mut req: Request, env: &Env, root: &str) -> Result<Response> {
    let (self_origin, https) = origin(&req)?;
    let h = req.headers();
    if session::same_origin(
        h.get("origin")?.as_deref(),
        h.get("sec-fetch-site")?.as_deref(),
        &self_origin,
    )
    .is_err()
    {
        return fail(303, root, SignInError::CrossSite, &[]);
    }
    let s = settings(env);
    let Some((user, pass)) = s.password.clone() else {
        return fail(303, root, SignInError::ProviderDisabled, &[]);
    };
    let (key, ttl) = match s.signer() {
        Ok(k) => k,
        Err(e) => return fail(303, root, e, &[]),
    };
    let form = read_form(&mut req).await?;
    let secrets = Secrets {
        api_secret: None,
        basic_user: Some(user),
        basic_password: Some(pass),
    };
    let creds = Credentials::Basic {
        user: field(&form, "username").unwrap_or_default().to_string(),
        password: field(&form, "password").unwrap_or_default().to_string(),
    };
    let ok = auth::check(&secrets, &creds) == AuthOutcome::Ok;
    let identity = field(&form, "username").unwrap_or_default();
    if throttle::login_attempt(env, &client_of(&req)?, ok, Some(identity))
        .await?
        .is_some()
    {
        return fail(303, root, SignInError::Throttled, &[]);
    }
    if !ok {
        return fail(303, root, SignInError::BadCredentials, &[]);
    }
    let Credentials::Basic { user, .. } = creds else {
        return fail(303, root, SignInError::BadCredentials, &[]);
    };
    let token = new_session(&req, key, &user, Via::Password, ttl)?;
    redirect(
        303,
        &format!("{root}/"),
        &[session::set_cookie(
            COOKIE,
            &token,
            &session_path(root),
            ttl,
            https,
        )],
    )
}

/// Logout signs this session out server-side (its id is refused until it expires) and clears the
/// cookie; logout-all moves the epoch instead, so every earlier session is refused.
/// Both need a live session and pass the CSRF check (header or form field `csrf`).
async fn logout(mut req: Request, env: &Env, root: &str, everywhere: bool) -> Result<Response> {
    let (_, https) = origin(&req)?;
    let clear = session::clear_cookie(COOKIE, &session_path(root), https);
    let claims = match current(&req, env).await? {
        Some(Ok(c)) => c,
        // Clearing a cookie that no longer works needs no proof; revoking everyone does.
        _ if !everywhere => return redirect(303, &format!("{root}/"), &[clear]),
        Some(Err(why)) => return error_response(401, &format!("not signed in: {why}"), None),
        None => return error_response(401, "not signed in", None),
    };
    let form = if req.headers().get("x-csrf-token")?.is_none() {
        read_form(&mut req).await?
    } else {
        vec![]
    };
    if let Some(refused) = csrf_refusal(&req, &claims, field(&form, "csrf"))? {
        return Ok(refused);
    }
    let call = if everywhere {
        Call::SignOutEverywhere {
            actor: actor(&claims),
        }
    } else {
        // The token stays refused server-side until it would have expired, not only forgotten
        // by this browser.
        Call::RevokeSession {
            jti: claims.jti.clone(),
            exp_s: session::revoked_until(&claims),
        }
    };
    let (status, _) = accounts::call(env, &call).await?;
    if status != 200 {
        console_error!("sign-out failed in the accounts object: status {status}");
        return error_response(503, "sign-out could not be recorded; try again", None);
    }
    redirect(303, &format!("{root}/"), &[clear])
}
