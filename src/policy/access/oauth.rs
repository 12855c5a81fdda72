//! GitHub and Google sign-in (OAuth 2.0 code flow per RFC 9700): settings from the environment, provider endpoints, PKCE S256, the signed one-time state cookie, reading the verified email, the allow list and the fixed error codes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::{Host, Url};

use crate::policy::access::auth::ct_eq;
use crate::policy::access::jwt::Key;
use crate::policy::access::session::{self};

/// How long a started sign-in may take before its state cookie expires (seconds).
pub const STATE_TTL_S: u64 = 600;
/// The state cookie's name; its Path is the auth routes only.
pub const STATE_COOKIE: &str = "fb_oauth_state";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Google,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "github" => Some(Provider::Github),
            "google" => Some(Provider::Google),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Google => "google",
        }
    }

    pub fn via(self) -> session::Via {
        match self {
            Provider::Github => session::Via::Github,
            Provider::Google => session::Via::Google,
        }
    }
}

/// Why a sign-in failed: a fixed code for the `?error=` redirect and a fixed text the console
/// shows, so nothing from the query is ever reflected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInError {
    StateMissing,
    StateMismatch,
    StateUsed,
    ProviderError,
    ProviderUnreachable,
    ExchangeFailed,
    EmailUnverified,
    NotAuthorized,
    NoAuthorizedUsers,
    NoJwtSecret,
    Misconfigured,
    ProviderDisabled,
    BadCredentials,
    Throttled,
    CrossSite,
}

impl SignInError {
    pub const ALL: [SignInError; 15] = [
        SignInError::StateMissing,
        SignInError::StateMismatch,
        SignInError::StateUsed,
        SignInError::ProviderError,
        SignInError::ProviderUnreachable,
        SignInError::ExchangeFailed,
        SignInError::EmailUnverified,
        SignInError::NotAuthorized,
        SignInError::NoAuthorizedUsers,
        SignInError::NoJwtSecret,
        SignInError::Misconfigured,
        SignInError::ProviderDisabled,
        SignInError::BadCredentials,
        SignInError::Throttled,
        SignInError::CrossSite,
    ];

    pub fn code(self) -> &'static str {
        match self {
            SignInError::StateMissing => "state_missing",
            SignInError::StateMismatch => "state_mismatch",
            SignInError::StateUsed => "state_used",
            SignInError::ProviderError => "provider_error",
            SignInError::ProviderUnreachable => "provider_unreachable",
            SignInError::ExchangeFailed => "exchange_failed",
            SignInError::EmailUnverified => "email_unverified",
            SignInError::NotAuthorized => "not_authorized",
            SignInError::NoAuthorizedUsers => "no_authorized_users",
            SignInError::NoJwtSecret => "no_jwt_secret",
            SignInError::Misconfigured => "misconfigured",
            SignInError::ProviderDisabled => "provider_disabled",
            SignInError::BadCredentials => "bad_credentials",
            SignInError::Throttled => "throttled",
            SignInError::CrossSite => "cross_site",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            SignInError::StateMissing => "The sign-in expired or was started in another browser. Please start again.",
            SignInError::StateMismatch => "The provider's answer does not belong to the sign-in this browser started, so it was refused. Please start again.",
            SignInError::StateUsed => "This sign-in answer was already used once and cannot be used again. Please start again.",
            SignInError::ProviderError => "The provider did not complete the sign-in (it was cancelled or refused).",
            SignInError::ProviderUnreachable => "The sign-in provider could not be reached. Please try again later.",
            SignInError::ExchangeFailed => "The provider did not accept the sign-in code. Please start again.",
            SignInError::EmailUnverified => "Your account has no primary email address that the provider has verified.",
            SignInError::NotAuthorized => "This email address is not allowed to use this console (it is not in AUTHORIZED_USERS).",
            SignInError::NoAuthorizedUsers => "AUTHORIZED_USERS is empty: nobody can sign in with GitHub or Google.",
            SignInError::NoJwtSecret => "Sign-in is disabled: JWT_SECRET is missing or shorter than 32 bytes.",
            SignInError::Misconfigured => "Sign-in is disabled by a configuration problem listed on this page.",
            SignInError::ProviderDisabled => "This sign-in method is not configured.",
            SignInError::BadCredentials => "Wrong username or password.",
            SignInError::Throttled => "Too many failed sign-in attempts from your address. Wait a while before trying again.",
            SignInError::CrossSite => "The request came from another site and was refused.",
        }
    }
}

/// A provider endpoint variable: https, or http on a loopback host (local development and tests).
pub fn endpoint(name: &str, raw: Option<&str>, default: &str) -> Result<Url, String> {
    let text = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(default);
    let url = Url::parse(text).map_err(|e| format!("{name}: {text:?} is not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "{name}: {text:?} is not allowed; expected an https URL (http only on 127.0.0.1, ::1 or localhost)"
            ))
        }
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{name}: {text:?} is not allowed; expected a URL without query, fragment or credentials"
        ));
    }
    Ok(url)
}

/// `base` joined with `path` (a GitHub Enterprise base may itself have a path, e.g. `/api/v3`).
fn join(base: &Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

/// Where one provider's flow goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub authorize: String,
    pub token: String,
    /// GitHub: `/user`. Google: none (userinfo carries the email).
    pub user: Option<String>,
    /// GitHub: `/user/emails`. Google: userinfo.
    pub email: String,
}

/// One provider's settings: client credentials and endpoints, or why it is off.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub provider: Provider,
    pub client_id: Option<String>,
    client_secret: Option<String>,
    pub endpoints: Result<Endpoints, Vec<String>>,
}

impl ProviderSettings {
    /// Client id, secret and endpoints when the provider can be used.
    pub fn usable(&self) -> Option<(&str, &str, &Endpoints)> {
        match (&self.client_id, &self.client_secret, &self.endpoints) {
            (Some(id), Some(secret), Ok(e)) => Some((id, secret, e)),
            _ => None,
        }
    }
}

/// Every sign-in setting, read once from the environment through `var`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub key: Result<Key, &'static str>,
    pub ttl_s: Result<u64, String>,
    pub authorized: Vec<String>,
    pub github: ProviderSettings,
    pub google: ProviderSettings,
    pub password: Option<(String, String)>,
}

pub const GITHUB_OAUTH_DEFAULT: &str = "https://github.com";
pub const GITHUB_API_DEFAULT: &str = "https://api.github.com";
pub const GOOGLE_AUTH_DEFAULT: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GOOGLE_TOKEN_DEFAULT: &str = "https://oauth2.googleapis.com/token";
pub const GOOGLE_USERINFO_DEFAULT: &str = "https://openidconnect.googleapis.com/v1/userinfo";

/// Collects every error of a list of endpoint results, or the values when all are good.
fn all_ok(results: Vec<Result<Url, String>>) -> Result<Vec<Url>, Vec<String>> {
    let errors: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    if errors.is_empty() {
        Ok(results.into_iter().filter_map(Result::ok).collect())
    } else {
        Err(errors)
    }
}

impl Settings {
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Settings {
        let github_endpoints = all_ok(vec![
            endpoint(
                "GITHUB_OAUTH_BASE",
                var("GITHUB_OAUTH_BASE").as_deref(),
                GITHUB_OAUTH_DEFAULT,
            ),
            endpoint(
                "GITHUB_API_BASE",
                var("GITHUB_API_BASE").as_deref(),
                GITHUB_API_DEFAULT,
            ),
        ])
        .map(|u| Endpoints {
            authorize: join(&u[0], "/login/oauth/authorize"),
            token: join(&u[0], "/login/oauth/access_token"),
            user: Some(join(&u[1], "/user")),
            email: join(&u[1], "/user/emails"),
        });
        let google_endpoints = all_ok(vec![
            endpoint(
                "GOOGLE_AUTH_URL",
                var("GOOGLE_AUTH_URL").as_deref(),
                GOOGLE_AUTH_DEFAULT,
            ),
            endpoint(
                "GOOGLE_TOKEN_URL",
                var("GOOGLE_TOKEN_URL").as_deref(),
                GOOGLE_TOKEN_DEFAULT,
            ),
            endpoint(
                "GOOGLE_USERINFO_URL",
                var("GOOGLE_USERINFO_URL").as_deref(),
                GOOGLE_USERINFO_DEFAULT,
            ),
        ])
        .map(|u| Endpoints {
            authorize: u[0].to_string(),
            token: u[1].to_string(),
            user: None,
            email: u[2].to_string(),
        });
        let password = match (var("WEB_AUTH_USERNAME"), var("WEB_AUTH_PASSWORD")) {
            (Some(u), Some(p)) => Some((u, p)),
            _ => None,
        };
        Settings {
            key: Key::new(var("JWT_SECRET").as_deref()),
            ttl_s: session::parse_ttl(var("SESSION_TTL").as_deref()),
            authorized: parse_authorized(var("AUTHORIZED_USERS").as_deref().unwrap_or("")),
            github: ProviderSettings {
                provider: Provider::Github,
                client_id: var("GITHUB_CLIENT_ID"),
                client_secret: var("GITHUB_CLIENT_SECRET"),
                endpoints: github_endpoints,
            },
            google: ProviderSettings {
                provider: Provider::Google,
                client_id: var("GOOGLE_CLIENT_ID"),
                client_secret: var("GOOGLE_CLIENT_SECRET"),
                endpoints: google_endpoints,
            },
            password,
        }
    }

    pub fn provider(&self, p: Provider) -> &ProviderSettings {
        match p {
            Provider::Github => &self.github,
            Provider::Google => &self.google,
        }
    }

    /// The key and lifetime that sign sessions, or the error that refuses every sign-in.
    pub fn signer(&self) -> Result<(&Key, u64), SignInError> {
        let key = self.key.as_ref().map_err(|_| SignInError::NoJwtSecret)?;
        let ttl = *self
            .ttl_s
            .as_ref()
            .map_err(|_| SignInError::Misconfigured)?;
        Ok((key, ttl))
    }

    /// Everything that keeps someone from signing in, in words an operator can act on. Never
    /// includes a secret's value.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = &self.key {
            out.push((*e).to_string());
        }
        if let Err(e) = &self.ttl_s {
            out.push(e.clone());
        }
        let any_oauth = [&self.github, &self.google]
            .iter()
            .any(|p| p.client_id.is_some() && p.client_secret.is_some());
        if self.authorized.is_empty() && any_oauth {
            out.push("AUTHORIZED_USERS is empty: nobody can sign in with GitHub or Google".into());
        }
        for p in [&self.github, &self.google] {
            let name = p.provider.as_str().to_ascii_uppercase();
            match (&p.client_id, &p.client_secret) {
                (Some(_), None) => out.push(format!(
                    "{name}_CLIENT_SECRET is missing: {} sign-in is off",
                    p.provider.as_str()
                )),
                (None, Some(_)) => out.push(format!(
                    "{name}_CLIENT_ID is missing: {} sign-in is off",
                    p.provider.as_str()
                )),
                _ => {}
            }
            if let Err(errs) = &p.endpoints {
                for e in errs {
                    out.push(format!("{e}: {} sign-in is off", p.provider.as_str()));
                }
            }
        }
        if !any_oauth && self.password.is_none() {
            out.push("no sign-in method is configured: set GITHUB_CLIENT_ID/GITHUB_CLIENT_SECRET, GOOGLE_CLIENT_ID/GOOGLE_CLIENT_SECRET or WEB_AUTH_USERNAME/WEB_AUTH_PASSWORD".into());
        }
        out
    }

    /// Whether a session's subject is still allowed as configured now: a password session's user
    /// is still WEB_AUTH_USERNAME, an OAuth session's email still in AUTHORIZED_USERS.
    pub fn still_allows(&self, via: session::Via, sub: &str) -> bool {
        match via {
            session::Via::Password => self
                .password
                .as_ref()
                .is_some_and(|(user, _)| ct_eq(user.as_bytes(), sub.as_bytes())),
            session::Via::Github | session::Via::Google => self.allows(sub),
        }
    }

    /// Whether `email` is in AUTHORIZED_USERS (case-insensitive, exact).
    pub fn allows(&self, email: &str) -> bool {
        let email = email.trim().to_lowercase();
        !email.is_empty() && self.authorized.contains(&email)
    }
}

/// AUTHORIZED_USERS: a comma list of emails, trimmed and lower-cased; blanks dropped.
pub fn parse_authorized(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The exact callback URI for `provider` under `root` ("" or "/__lb_admin__") at `origin`.
pub fn redirect_uri(origin: &str, root: &str, provider: Provider) -> String {
    format!("{origin}{root}/auth/{}/callback", provider.as_str())
}

/// PKCE S256: base64url(SHA-256(verifier)) without padding (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// 32 random bytes as base64url: a state value or a PKCE verifier (43 characters).
pub fn random_token(bytes: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The provider's authorization URL for this flow.
pub fn authorize_url(
    endpoints: &Endpoints,
    provider: Provider,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    verifier: &str,
) -> String {
    let scope = match provider {
        Provider::Github => "read:user user:email",
        Provider::Google => "openid email",
    };
    let mut pairs = vec![
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("scope", scope),
        ("response_type", "code"),
        ("code_challenge_method", "S256"),
    ];
    let challenge = pkce_challenge(verifier);
    pairs.push(("code_challenge", &challenge));
    if provider == Provider::Github {
        pairs.push(("allow_signup", "false"));
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("{}?{query}", endpoints.authorize)
}

/// The token request's form body (client_secret_post; the verifier proves this browser's flow).
pub fn token_form(
    client_id: &str,
    client_secret: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> String {
    serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ])
    .unwrap_or_default()
}

/// What the state cookie holds: the provider, the state, the PKCE verifier and its expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowState {
    pub provider: Provider,
    pub state: String,
    pub verifier: String,
    pub exp: u64,
}

const STATE_PURPOSE: &str = "oauth-state";

/// The signed cookie value: base64url(json) "." base64url(HMAC).
pub fn seal(key: &Key, flow: &FlowState) -> String {
    let json = serde_json::to_vec(flow).unwrap_or_default();
    let mac = key.mac(STATE_PURPOSE, &json);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(mac)
    )
}

/// Checks the callback against the browser's state cookie: signed by us, unexpired, for this
/// provider, and its state equal (in constant time) to the one the provider sent back.
pub fn open(
    key: &Key,
    cookie: Option<&str>,
    provider: Provider,
    returned_state: Option<&str>,
    now_s: u64,
) -> Result<FlowState, SignInError> {
    let cookie = cookie
        .filter(|c| !c.is_empty())
        .ok_or(SignInError::StateMissing)?;
    let (body, mac) = cookie.split_once('.').ok_or(SignInError::StateMismatch)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| SignInError::StateMismatch)?;
    let mac = URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| SignInError::StateMismatch)?;
    if !ct_eq(&mac, &key.mac(STATE_PURPOSE, &json)) {
        return Err(SignInError::StateMismatch);
    }
    let flow: FlowState = serde_json::from_slice(&json).map_err(|_| SignInError::StateMismatch)?;
    if flow.exp <= now_s {
        return Err(SignInError::StateMissing);
    }
    let returned = returned_state.ok_or(SignInError::StateMismatch)?;
    if flow.provider != provider || !ct_eq(returned.as_bytes(), flow.state.as_bytes()) {
        return Err(SignInError::StateMismatch);
    }
    Ok(flow)
}

/// The access token from a token endpoint's JSON answer (GitHub answers 200 with `error`).
pub fn access_token(body: &serde_json::Value) -> Result<String, SignInError> {
    if body.get("error").is_some() {
        return Err(SignInError::ExchangeFailed);
    }
    body.get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or(SignInError::ExchangeFailed)
}

/// GitHub `/user/emails`: the address that is both primary and verified.
pub fn github_email(emails: &serde_json::Value) -> Result<String, SignInError> {
    let list = emails.as_array().ok_or(SignInError::ExchangeFailed)?;
    list.iter()
        .find(|e| e["primary"] == true && e["verified"] == true)
        .and_then(|e| e["email"].as_str())
        .map(str::to_string)
        .ok_or(SignInError::EmailUnverified)
}

/// Google userinfo: the email, only when `email_verified` is true.
pub fn google_email(userinfo: &serde_json::Value) -> Result<String, SignInError> {
    let email = userinfo["email"]
        .as_str()
        .ok_or(SignInError::EmailUnverified)?;
    // Google has sent the flag as a string in some endpoints' answers.
    let verified = userinfo["email_verified"] == true || userinfo["email_verified"] == "true";
    if verified {
        Ok(email.to_string())
    } else {
        Err(SignInError::EmailUnverified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn key() -> Key {
        Key::new(Some("0123456789abcdef0123456789abcdef")).unwrap()
    }

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(random_token(&[0; 32]).len(), 43);
    }

    #[test]
    fn endpoints_must_be_https_except_loopback() {
        assert!(endpoint("X", None, "https://github.com").is_ok());
        assert!(endpoint("X", Some("http://127.0.0.1:9000/gh"), "").is_ok());
        assert!(endpoint("X", Some("http://[::1]:9000"), "").is_ok());
        assert!(endpoint("X", Some("http://localhost:1"), "").is_ok());
        for bad in [
            "http://github.com",
            "ftp://x",
            "not a url",
            "https://x/?a=1",
            "https://u:p@x",
            "javascript:alert(1)",
        ] {
            let e = endpoint("GITHUB_OAUTH_BASE", Some(bad), "").unwrap_err();
            assert!(e.starts_with("GITHUB_OAUTH_BASE"), "{bad}: {e}");
        }
    }

    #[test]
    fn settings_and_problems() {
        let s = settings(&[]);
        let p = s.problems();
        assert!(p.iter().any(|m| m.contains("JWT_SECRET")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("no sign-in method")), "{p:?}");
        // An empty allow list matters only once an OAuth provider is set up.
        assert!(!p.iter().any(|m| m.contains("AUTHORIZED_USERS")), "{p:?}");
        let p = settings(&[("GITHUB_CLIENT_ID", "i"), ("GITHUB_CLIENT_SECRET", "s")]).problems();
        let empty = "AUTHORIZED_USERS is empty: nobody can sign in with GitHub or Google";
        assert!(p.contains(&empty.to_string()), "{p:?}");
        assert!(s.github.usable().is_none());
        assert!(matches!(s.signer(), Err(SignInError::NoJwtSecret)));

        let s = settings(&[
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("AUTHORIZED_USERS", " Ops@Example.com, ,b@x.io "),
            ("GITHUB_CLIENT_ID", "id"),
            ("GITHUB_CLIENT_SECRET", "sec"),
            ("GITHUB_OAUTH_BASE", "https://ghe.example.com/"),
            ("GITHUB_API_BASE", "https://ghe.example.com/api/v3"),
            ("GOOGLE_CLIENT_ID", "gid"),
            ("GOOGLE_CLIENT_SECRET", "gsec"),
            ("GOOGLE_TOKEN_URL", "http://evil.example/token"),
        ]);
        assert!(
            s.problems().iter().all(|m| !m.contains("sec")),
            "no secret values"
        );
        let (_, _, e) = s.github.usable().unwrap();
        assert_eq!(e.authorize, "https://ghe.example.com/login/oauth/authorize");
        assert_eq!(e.email, "https://ghe.example.com/api/v3/user/emails");
        assert!(s.google.usable().is_none());
        assert!(s
            .problems()
            .iter()
            .any(|m| m.starts_with("GOOGLE_TOKEN_URL") && m.ends_with("google sign-in is off")));
        assert!(s.allows("OPS@example.COM"));
        assert!(s.allows("b@x.io"));
        assert!(!s.allows("ops@example.com.evil"));
        assert!(!s.allows(""));
        assert_eq!(s.signer().map(|(_, t)| t), Ok(session::DEFAULT_TTL_S));

        let s = settings(&[("JWT_SECRET", "short"), ("SESSION_TTL", "forever")]);
        assert!(s.problems().iter().any(|m| m.contains("SESSION_TTL")));
    }

    #[test]
    fn sessions_are_rechecked_against_the_current_allow_list() {
        let s = settings(&[
            ("AUTHORIZED_USERS", "ops@example.com"),
            ("WEB_AUTH_USERNAME", "admin"),
            ("WEB_AUTH_PASSWORD", "pw"),
        ]);
        assert!(s.still_allows(session::Via::Github, "ops@example.com"));
        assert!(!s.still_allows(session::Via::Google, "gone@example.com"));
        assert!(s.still_allows(session::Via::Password, "admin"));
        assert!(!s.still_allows(session::Via::Password, "ops@example.com"));
        let no_password = settings(&[("AUTHORIZED_USERS", "ops@example.com")]);
        assert!(!no_password.still_allows(session::Via::Password, "admin"));
    }

    #[test]
    fn authorize_url_carries_state_and_s256_challenge() {
        let s = settings(&[("GITHUB_CLIENT_ID", "id"), ("GITHUB_CLIENT_SECRET", "x")]);
        let (_, _, e) = s.github.usable().unwrap();
        let u = authorize_url(
            e,
            Provider::Github,
            "id",
            "https://lb/auth/github/callback",
            "st",
            "ver",
        );
        let parsed = Url::parse(&u).unwrap();
        let q: HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st");
        assert_eq!(q["code_challenge"], pkce_challenge("ver"));
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://lb/auth/github/callback");
        assert!(!u.contains("ver&"), "the verifier never leaves the server");
        assert_eq!(
            redirect_uri("https://api.example.com", "/__lb_admin__", Provider::Google),
            "https://api.example.com/__lb_admin__/auth/google/callback"
        );
    }

    #[test]
    fn state_cookie_is_signed_bound_and_expires() {
        let flow = FlowState {
            provider: Provider::Github,
            state: "abc".into(),
            verifier: "v".into(),
            exp: 1000,
        };
        let c = seal(&key(), &flow);
        assert_eq!(
            open(&key(), Some(&c), Provider::Github, Some("abc"), 999),
            Ok(flow.clone())
        );
        assert_eq!(
            open(&key(), None, Provider::Github, Some("abc"), 1),
            Err(SignInError::StateMissing)
        );
        assert_eq!(
            open(&key(), Some(&c), Provider::Github, Some("abc"), 1000),
            Err(SignInError::StateMissing)
        );
        assert_eq!(
            open(&key(), Some(&c), Provider::Github, Some("abd"), 1),
            Err(SignInError::StateMismatch)
        );
        assert_eq!(
            open(&key(), Some(&c), Provider::Github, None, 1),
            Err(SignInError::StateMismatch)
        );
        assert_eq!(
            open(&key(), Some(&c), Provider::Google, Some("abc"), 1),
            Err(SignInError::StateMismatch)
        );
        // A cookie re-signed with another secret, or with its body edited, is refused.
        let other = Key::new(Some("ffffffffffffffffffffffffffffffff")).unwrap();
        assert_eq!(
            open(&other, Some(&c), Provider::Github, Some("abc"), 1),
            Err(SignInError::StateMismatch)
        );
        let mut edited = flow.clone();
        edited.exp = u64::MAX;
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&edited).unwrap());
        let forged = format!("{body}.{}", c.split_once('.').unwrap().1);
        assert_eq!(
            open(&key(), Some(&forged), Provider::Github, Some("abc"), 1),
            Err(SignInError::StateMismatch)
        );
        assert_eq!(
            open(&key(), Some("garbage"), Provider::Github, Some("abc"), 1),
            Err(SignInError::StateMismatch)
        );
    }

    #[test]
    fn provider_answers() {
        assert_eq!(access_token(&json!({"access_token": "t"})), Ok("t".into()));
        assert_eq!(
            access_token(&json!({"error": "invalid_grant"})),
            Err(SignInError::ExchangeFailed)
        );
        assert_eq!(
            access_token(&json!({"access_token": ""})),
            Err(SignInError::ExchangeFailed)
        );
        let emails = json!([
            {"email": "old@x.io", "primary": false, "verified": true},
            {"email": "me@x.io", "primary": true, "verified": true},
        ]);
        assert_eq!(github_email(&emails), Ok("me@x.io".into()));
        let unverified = json!([{"email": "me@x.io", "primary": true, "verified": false}, {"email": "o@x.io", "primary": false, "verified": true}]);
        assert_eq!(github_email(&unverified), Err(SignInError::EmailUnverified));
        assert_eq!(
            github_email(&json!({"message": "Bad credentials"})),
            Err(SignInError::ExchangeFailed)
        );
        assert_eq!(
            google_email(&json!({"email": "a@b.c", "email_verified": true})),
            Ok("a@b.c".into())
        );
        assert_eq!(
            google_email(&json!({"email": "a@b.c", "email_verified": false})),
            Err(SignInError::EmailUnverified)
        );
        assert_eq!(
            google_email(&json!({"email": "a@b.c"})),
            Err(SignInError::EmailUnverified)
        );
    }

    #[test]
    fn error_codes_are_unique_and_texts_fixed() {
        let mut codes: Vec<_> = SignInError::ALL.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), SignInError::ALL.len());
        assert!(SignInError::ALL.iter().all(|e| !e.text().contains('<')));
    }
}
