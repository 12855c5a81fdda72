// End to end: console sign-in (GitHub and Google against loopback fake providers, the password form), sessions and their JWT checks, logout and sign-out-everywhere, CSRF, the login throttle, the reserved prefix on balanced hostnames, ENABLE_WEB_INTERFACE=false, named API keys and the audit trail.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { startBalancer, API_SECRET } from "../support/runtime.mjs";
import { startBackend } from "../support/backends.mjs";
import { startOAuthFakes, CLIENTS } from "../support/oauth-fakes.mjs";

const JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef";
const WEB_USER = "admin";
const WEB_PASSWORD = "correct horse battery staple";
const quiet = { activeHealthChecks: { interval: 600, timeout: 2 } };

let fakes, backend, other, lb;

before(async () => {
  fakes = await startOAuthFakes();
  backend = await startBackend("auth-b1");
  other = await startBackend("auth-other");
  lb = await startBalancer({
    defaultBackends: [
      { hostname: "app.test", backends: [backend.url], ...quiet },
      // Not in ADMIN_PREFIX_HOSTNAMES: the reserved prefix is off there.
      { hostname: "plain.test", backends: [other.url], ...quiet },
    ],
    bindings: {
      ...fakes.env,
      ADMIN_PREFIX_HOSTNAMES: "app.test",
      JWT_SECRET,
      SESSION_TTL: "3600",
      AUTHORIZED_USERS: "ops@example.com, Second@Example.com",
      WEB_AUTH_USERNAME: WEB_USER,
      WEB_AUTH_PASSWORD: WEB_PASSWORD,
    },
  });
});

after(async () => {
  await lb?.stop();
  await backend?.kill();
  await other?.kill();
  await fakes?.stop();
});

let browsers = 0;

/** A browser: a cookie jar (name, value, path), manual redirects, the Worker for every non-loopback host.
 * Each has its own address unless given one: failed sign-ins count against the address (the login throttle). */
class Browser {
  constructor(ip = `198.18.${++browsers >> 8}.${browsers & 255}`) {
    this.jar = new Map();
    this.ip = ip;
  }
  cookieHeader(url) {
    const path = new URL(url).pathname;
    return [...this.jar.values()]
      .filter((c) => path.startsWith(c.path))
      .map((c) => `${c.name}=${c.value}`)
      .join("; ");
  }
  store(setCookies) {
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(";").map((s) => s.trim());
      const [name, value] = [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)];
      const attr = Object.fromEntries(attrs.map((a) => [a.split("=")[0].toLowerCase(), a.split("=")[1] ?? true]));
      if (attr["max-age"] === "0") this.jar.delete(name);
      else this.jar.set(name, { name, value, path: attr.path ?? "/", line });
    }
  }
  cookie(name) {
    return this.jar.get(name)?.value;
  }
  async request(url, { method = "GET", headers = {}, body } = {}) {
    const u = new URL(url);
    const cookie = this.cookieHeader(url);
    const h = { ...(cookie ? { cookie } : {}), "cf-connecting-ip": this.ip, ...headers };
    const res =
      u.hostname === "127.0.0.1"
        ? await fetch(url, { method, headers: h, body, redirect: "manual" })
        : await lb.mf.dispatchFetch(url, { method, headers: h, body, redirect: "manual" });
    const setCookies = res.headers.getSetCookie();
    this.store(setCookies);
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, location: res.headers.get("location"), setCookies, headers: res.headers, text, json };
  }
  /** A same-origin form POST, as the console's page would send it. */
  post(url, fields, headers = {}) {
    const origin = new URL(url).origin;
    return this.request(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin, "sec-fetch-site": "same-origin", ...headers },
      body: new URLSearchParams(fields).toString(),
    });
  }
}

/** Starts a sign-in, follows the provider's redirect, and stops before the callback. */
async function toCallback(browser, provider, origin = "http://localhost", root = "") {
  const start = await browser.request(`${origin}${root}/auth/${provider}/login`);
  assert.equal(start.status, 302, start.text);
  const auth = await browser.request(start.location);
  assert.equal(auth.status, 302, `fake authorize: ${auth.text}`);
  return { start, callbackUrl: auth.location };
}

/** A whole sign-in as `user`; answers the callback's response. */
async function signIn(browser, provider, user, origin, root) {
  if (user) fakes.setUser(provider, user);
  const { callbackUrl } = await toCallback(browser, provider, origin, root);
  return browser.request(callbackUrl);
}

const errorOf = (res) => new URL(res.location, "http://x").searchParams.get("error");

/** An HS256 token signed with `secret`, with the given header and claims (for forged sessions). */
function jwt(claims, { secret = JWT_SECRET, header = { alg: "HS256", typ: "JWT" } } = {}) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const input = `${enc(header)}.${enc(claims)}`;
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}

function claims(over = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { iss: "flowbalance", aud: "flowbalance-admin:localhost", sub: "ops@example.com", iat: now, nbf: now, exp: now + 600, jti: `forged-${Math.random()}`, via: "github", csrf: "t", iat_ms: Date.now(), ...over };
}

async function sessionWith(token) {
  return lb.mf.dispatchFetch("http://localhost/auth/session", { headers: { cookie: `fb_session=${token}` } });
}

// ---- providers and the login page's facts ----

test("GET /auth/providers: methods, exact redirect URIs under both roots, error texts, no secrets", async () => {
  const b = new Browser();
  const own = await b.request("http://localhost/auth/providers");
  assert.equal(own.status, 200);
  assert.equal(own.headers.get("cache-control"), "no-store");
  assert.equal(own.json.github.enabled, true);
  assert.equal(own.json.google.enabled, true);
  assert.equal(own.json.password.enabled, true);
  assert.equal(own.json.github.redirect_uri, "http://localhost/auth/github/callback");
  assert.equal(own.json.google.login_url, "/auth/google/login");
  assert.deepEqual(own.json.problems, []);
  assert.equal(own.json.authorized_users_empty, false);
  for (const code of ["state_mismatch", "state_missing", "provider_error", "provider_unreachable", "email_unverified", "not_authorized", "no_jwt_secret", "exchange_failed", "throttled", "bad_credentials"]) {
    assert.equal(typeof own.json.error_texts[code], "string", code);
  }
  for (const secret of [JWT_SECRET, CLIENTS.github.secret, CLIENTS.google.secret, WEB_PASSWORD, API_SECRET]) {
    assert.ok(!own.text.includes(secret), "a secret leaked into /auth/providers");
  }
  const balanced = await b.request("http://app.test/__lb_admin__/auth/providers");
  assert.equal(balanced.json.github.redirect_uri, "http://app.test/__lb_admin__/auth/github/callback");
  assert.equal(balanced.json.google.login_url, "/__lb_admin__/auth/google/login");
  assert.equal(backend.requests().length, 0, "an auth route leaked through to the backend");
});

// ---- successful sign-ins ----

test("GitHub sign-in: state + PKCE S256, code exchanged server-side, HttpOnly session, API usable", async () => {
  const b = new Browser();
  const { start, callbackUrl } = await toCallback(b, "github");
  const authorize = new URL(start.location);
  assert.equal(authorize.origin + authorize.pathname, `${fakes.github.oauthBase}/login/oauth/authorize`);
  assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
  const state = b.jar.get("fb_oauth_state");
  assert.match(state.line, /Path=\/auth\/; Max-Age=600; HttpOnly; SameSite=Lax/);
  // The cookie binds this browser to the state; the PKCE verifier never leaves the server side.
  const flow = JSON.parse(Buffer.from(state.value.split(".")[0], "base64url").toString());
  assert.equal(flow.state, authorize.searchParams.get("state"));
  assert.ok(!start.location.includes(flow.verifier), "the verifier was sent to the provider");
  const done = await b.request(callbackUrl);
  assert.equal(done.status, 302);
  assert.equal(done.location, "/");
  assert.ok(!done.location.includes("token") && !callbackUrl.includes("access_token"), "no token in any URL");
  const session = b.jar.get("fb_session");
  assert.ok(session, "no fb_session cookie");
  assert.match(session.line, /^fb_session=[^;]+; Path=\/; Max-Age=3600; HttpOnly; SameSite=Lax$/);
  assert.equal(b.cookie("fb_oauth_state"), undefined, "the state cookie was not cleared");
  const info = await b.request("http://localhost/auth/session");
  assert.equal(info.status, 200);
  assert.equal(info.json.email, "ops@example.com");
  assert.equal(info.json.via, "github");
  assert.ok(info.json.csrf_token.length >= 32);
  assert.ok(Math.abs(info.json.expires_at - (Date.now() + 3600_000)) < 60_000, `expires_at ${info.json.expires_at}`);
  const services = await b.request("http://localhost/admin/services");
  assert.equal(services.status, 200, services.text);
  assert.deepEqual(services.json.services.map((s) => s.hostname), ["app.test", "plain.test"]);
});

test("Google sign-in: userinfo email_verified, allow list matched case-insensitively", async () => {
  const b = new Browser();
  const done = await signIn(b, "google", { email: "second@EXAMPLE.com", verified: true });
  assert.equal(done.status, 302, done.text);
  assert.equal(done.location, "/");
  const info = await b.request("http://localhost/auth/session");
  assert.equal(info.json.email, "second@EXAMPLE.com");
  assert.equal(info.json.via, "google");
  assert.ok(fakes.events.some((e) => e.provider === "google" && e.kind === "token" && e.ok));
});

test("sign-in on a balanced hostname stays under /__lb_admin__ and never reaches the backend", async () => {
  const b = new Browser();
  fakes.setUser("github", { email: "ops@example.com" });
  const { start, callbackUrl } = await toCallback(b, "github", "http://app.test", "/__lb_admin__");
  assert.equal(new URL(start.location).searchParams.get("redirect_uri"), "http://app.test/__lb_admin__/auth/github/callback");
  assert.equal(b.jar.get("fb_oauth_state").path, "/__lb_admin__/auth/");
  const done = await b.request(callbackUrl);
  assert.equal(done.location, "/__lb_admin__/");
  // Scoped to the reserved prefix: the session never travels to the hostname's backends.
  assert.match(b.jar.get("fb_session").line, /; Path=\/__lb_admin__\/; Max-Age=3600; HttpOnly; SameSite=Lax$/);
  const info = await b.request("http://app.test/__lb_admin__/auth/session");
  assert.equal(info.status, 200);
  assert.equal(backend.requests().length, 0);
  const csrf = info.json.csrf_token;
  const out = await b.request("http://app.test/__lb_admin__/auth/logout", { method: "POST", headers: { origin: "http://app.test", "x-csrf-token": csrf } });
  assert.equal(out.location, "/__lb_admin__/");
  assert.ok(out.setCookies.some((c) => c.startsWith("fb_session=; Path=/__lb_admin__/; Max-Age=0")), out.setCookies.join(" | "));
});

// ---- refused sign-ins ----

test("an email outside AUTHORIZED_USERS, or not verified, gets no session", async () => {
  for (const [provider, user, code] of [
    ["github", { email: "intruder@example.com" }, "not_authorized"],
    ["google", { email: "ops@example.com.evil.test" }, "not_authorized"],
    ["github", { email: "ops@example.com", verified: false }, "email_unverified"],
    ["github", { email: "ops@example.com", primary: false }, "email_unverified"],
    ["google", { email: "ops@example.com", verified: false }, "email_unverified"],
  ]) {
    const b = new Browser();
    const res = await signIn(b, provider, user);
    assert.equal(res.status, 302);
    assert.equal(errorOf(res), code, `${provider} ${JSON.stringify(user)}`);
    assert.equal(b.cookie("fb_session"), undefined);
    assert.equal(b.cookie("fb_oauth_state"), undefined, "state cookie kept after a failure");
  }
});

test("state missing, from another browser, or replayed is refused", async () => {
  fakes.setUser("github", { email: "ops@example.com" });
  // Missing: the callback arrives in a browser that never started the flow.
  const a = new Browser();
  const { callbackUrl } = await toCallback(a, "github");
  const stranger = new Browser();
  const missing = await stranger.request(callbackUrl);
  assert.equal(errorOf(missing), "state_missing");
  assert.equal(stranger.cookie("fb_session"), undefined);

  // Another browser: B has its own state cookie, but gets A's callback (A's state and code).
  const b = new Browser();
  await toCallback(b, "github");
  const crossed = await b.request(callbackUrl);
  assert.equal(errorOf(crossed), "state_mismatch");
  assert.equal(b.cookie("fb_session"), undefined);

  // Replay: A finishes, then the same callback is sent again with A's saved state cookie.
  const savedState = a.jar.get("fb_oauth_state");
  const first = await a.request(callbackUrl);
  assert.equal(first.location, "/");
  const replayer = new Browser();
  replayer.jar.set("fb_oauth_state", savedState);
  const replayed = await replayer.request(callbackUrl);
  assert.equal(errorOf(replayed), "state_used");
  assert.equal(replayer.cookie("fb_session"), undefined);
});

test("a code obtained with another PKCE challenge is refused by the provider (wrong verifier)", async () => {
  fakes.setUser("github", { email: "ops@example.com" });
  // The attacker gets a code bound to their own challenge...
  const attacker = new Browser("192.0.2.66");
  const { callbackUrl: attackerCallback } = await toCallback(attacker, "github");
  const code = new URL(attackerCallback).searchParams.get("code");
  // ...and injects it into the victim's flow (with the victim's valid state).
  const victim = new Browser();
  const { callbackUrl: victimCallback } = await toCallback(victim, "github");
  const injected = new URL(victimCallback);
  injected.searchParams.set("code", code);
  const before = fakes.events.length;
  const res = await victim.request(injected.toString());
  assert.equal(errorOf(res), "exchange_failed");
  assert.equal(victim.cookie("fb_session"), undefined);
  assert.ok(
    fakes.events.slice(before).some((e) => e.kind === "token" && !e.ok && e.reason === "pkce"),
    `the fake did not see a PKCE mismatch: ${JSON.stringify(fakes.events.slice(before))}`,
  );
});

test("provider error (access_denied) and provider down", async () => {
  const b = new Browser();
  fakes.failNext("github", "access_denied");
  const denied = await signIn(b, "github");
  assert.equal(errorOf(denied), "provider_error");
  assert.equal(b.cookie("fb_session"), undefined);

  const c = new Browser();
  const { callbackUrl } = await toCallback(c, "google");
  fakes.setDown("google", true);
  try {
    const down = await c.request(callbackUrl);
    assert.equal(errorOf(down), "provider_unreachable");
    assert.equal(c.cookie("fb_session"), undefined);
  } finally {
    fakes.setDown("google", false);
  }
  // The error page never reflects the query: the code maps to a fixed text.
  const texts = (await b.request("http://localhost/auth/providers")).json.error_texts;
  assert.match(texts.provider_error, /did not complete/);
});

// ---- the session token ----

test("tampered, expired, alg none, wrong-aud, wrong-secret and kid JWTs are refused; a correct one works", async () => {
  assert.equal((await sessionWith(jwt(claims()))).status, 200, "control: a correctly signed token works");
  const good = jwt(claims());
  const [h, , s] = good.split(".");
  const tampered = `${h}.${Buffer.from(JSON.stringify(claims({ sub: "evil@example.com" }))).toString("base64url")}.${s}`;
  const now = Math.floor(Date.now() / 1000);
  const bad = {
    tampered,
    expired: jwt(claims({ iat: now - 7200, nbf: now - 7200, exp: now - 3600 })),
    "nbf in the future": jwt(claims({ nbf: now + 3600 })),
    "alg none": `${Buffer.from('{"alg":"none","typ":"JWT"}').toString("base64url")}.${good.split(".")[1]}.`,
    "alg HS512": jwt(claims(), { header: { alg: "HS512", typ: "JWT" } }),
    "kid header": jwt(claims(), { header: { alg: "HS256", typ: "JWT", kid: "other" } }),
    "wrong aud": jwt(claims({ aud: "someone-else" })),
    "the old shared aud": jwt(claims({ aud: "flowbalance-admin" })),
    "another hostname's aud": jwt(claims({ aud: "flowbalance-admin:app.test" })),
    "no jti": jwt(claims({ jti: undefined })),
    "wrong iss": jwt(claims({ iss: "evil" })),
    "wrong secret": jwt(claims(), { secret: "another-secret-another-secret-0123" }),
  };
  for (const [what, token] of Object.entries(bad)) {
    const res = await sessionWith(token);
    assert.equal(res.status, 401, what);
    const api = await lb.mf.dispatchFetch("http://localhost/admin/services", { headers: { cookie: `fb_session=${token}` } });
    assert.equal(api.status, 401, `${what} was accepted by the admin API`);
  }
});

// ---- logout, sign-out-everywhere and CSRF ----

test("logout clears the cookie; sign out everywhere revokes every earlier session", async () => {
  fakes.setUser("github", { email: "ops@example.com" });
  const a = new Browser();
  const b = new Browser();
  await signIn(a, "github");
  await signIn(b, "github");
  const csrfA = (await a.request("http://localhost/auth/session")).json.csrf_token;

  // Without the CSRF token: refused, nobody signed out.
  const forged = await a.post("http://localhost/auth/logout-all", {});
  assert.equal(forged.status, 403, forged.text);
  assert.equal((await b.request("http://localhost/auth/session")).status, 200);

  const out = await a.post("http://localhost/auth/logout-all", { csrf: csrfA });
  assert.equal(out.status, 303, out.text);
  assert.equal(out.location, "/");
  assert.ok(out.setCookies.some((c) => /^fb_session=; Path=\/; Max-Age=0/.test(c)));
  // B's session (a still-valid token) is refused, by the console and by the API.
  const stale = await b.request("http://localhost/auth/session");
  assert.equal(stale.status, 401);
  assert.match(stale.json.error, /sign out everywhere/);
  assert.equal((await b.request("http://localhost/admin/services")).status, 401);
  // A new sign-in after it works at once.
  const c = new Browser();
  await signIn(c, "github");
  assert.equal((await c.request("http://localhost/auth/session")).status, 200);
  // Plain logout with the header token.
  const csrfC = (await c.request("http://localhost/auth/session")).json.csrf_token;
  const bye = await c.request("http://localhost/auth/logout", { method: "POST", headers: { origin: "http://localhost", "x-csrf-token": csrfC } });
  assert.equal(bye.status, 303);
  assert.equal(c.cookie("fb_session"), undefined);
  assert.equal((await c.request("http://localhost/auth/session")).status, 401);
  // The deployment trail names who signed everyone out.
  const trail = await lb.admin("/admin/audit").then((r) => r.json());
  assert.ok(trail.entries.some((e) => e.action === "sessions.revoked" && e.actor.kind === "session" && e.actor.name === "ops@example.com"));
});

test("logout revokes the token server-side: the same cookie replayed is refused until it expires", async () => {
  fakes.setUser("github", { email: "ops@example.com" });
  const b = new Browser();
  await signIn(b, "github");
  const token = b.cookie("fb_session");
  const other = new Browser();
  await signIn(other, "github");
  const csrf = (await b.request("http://localhost/auth/session")).json.csrf_token;
  const out = await b.request("http://localhost/auth/logout", { method: "POST", headers: { origin: "http://localhost", "x-csrf-token": csrf } });
  assert.equal(out.status, 303, out.text);
  // The browser forgot it; a copy of the token is refused by the console and by the API.
  const replayed = await sessionWith(token);
  assert.equal(replayed.status, 401);
  assert.match((await replayed.json()).error, /signed out/);
  const api = await lb.mf.dispatchFetch("http://localhost/admin/services", { headers: { cookie: `fb_session=${token}` } });
  assert.equal(api.status, 401);
  await api.text();
  // Only that session: another one of the same user still works.
  assert.equal((await other.request("http://localhost/auth/session")).status, 200);
});

test("a user removed from AUTHORIZED_USERS (or a changed WEB_AUTH_USERNAME) loses access at the next request", async () => {
  fakes.setUser("github", { email: "second@example.com" });
  const b = new Browser();
  await signIn(b, "github");
  const oauthToken = b.cookie("fb_session");
  const p = new Browser("198.51.100.90");
  await p.post("http://localhost/auth/password", { username: WEB_USER, password: WEB_PASSWORD });
  const passwordToken = p.cookie("fb_session");
  assert.equal((await sessionWith(oauthToken)).status, 200, "control: the session works");
  assert.equal((await sessionWith(passwordToken)).status, 200, "control: the password session works");
  // The same deployment (same JWT_SECRET), redeployed with the allow-list shortened and another password user.
  const after = await startBalancer({
    defaultBackends: [{ hostname: "app.test", backends: [backend.url], ...quiet }],
    bindings: { ...fakes.env, JWT_SECRET, AUTHORIZED_USERS: "ops@example.com", WEB_AUTH_USERNAME: "someone-else", WEB_AUTH_PASSWORD: WEB_PASSWORD },
  });
  try {
    for (const token of [oauthToken, passwordToken]) {
      const res = await after.mf.dispatchFetch("http://localhost/auth/session", { headers: { cookie: `fb_session=${token}` } });
      assert.equal(res.status, 401);
      assert.match((await res.json()).error, /no longer an authorized user/);
      const api = await after.mf.dispatchFetch("http://localhost/admin/services", { headers: { cookie: `fb_session=${token}` } });
      assert.equal(api.status, 401);
      await api.text();
    }
  } finally {
    await after.stop();
  }
});

test("CSRF: a cookie-authenticated write needs the token and a same-origin request", async () => {
  fakes.setUser("github", { email: "ops@example.com" });
  const b = new Browser();
  await signIn(b, "github");
  const csrf = (await b.request("http://localhost/auth/session")).json.csrf_token;
  const url = "http://localhost/admin/services/app.test/health-check";
  const cases = [
    ["no token", { origin: "http://localhost" }, 403],
    ["wrong token", { origin: "http://localhost", "x-csrf-token": "x" + csrf.slice(1) }, 403],
    ["cross-origin", { origin: "https://evil.example", "x-csrf-token": csrf }, 403],
    ["cross-site fetch metadata", { "sec-fetch-site": "cross-site", "x-csrf-token": csrf }, 403],
    ["neither Origin nor Sec-Fetch-Site", { "x-csrf-token": csrf }, 403],
    ["same origin with token", { origin: "http://localhost", "x-csrf-token": csrf }, 200],
    ["Sec-Fetch-Site same-origin with token", { "sec-fetch-site": "same-origin", "x-csrf-token": csrf }, 200],
  ];
  for (const [what, headers, status] of cases) {
    const res = await b.request(url, { method: "POST", headers });
    assert.equal(res.status, status, `${what}: ${res.text}`);
    if (status === 403) assert.match(res.json.error, /CSRF/);
  }
  // Reads need no token; Bearer callers are unaffected by CSRF rules.
  assert.equal((await b.request("http://localhost/admin/services/app.test")).status, 200);
  assert.equal((await lb.admin("/admin/services/app.test/health-check", { method: "POST" })).status, 200);
});

// ---- password form ----

test("password form: same-origin only, wrong password refused, throttled like Basic auth", async () => {
  const b = new Browser("198.51.100.23");
  const cross = await b.post("http://localhost/auth/password", { username: WEB_USER, password: WEB_PASSWORD }, { origin: "https://evil.example", "sec-fetch-site": "cross-site" });
  assert.equal(cross.status, 303);
  assert.equal(errorOf(cross), "cross_site");
  assert.equal(b.cookie("fb_session"), undefined);

  const ok = await b.post("http://localhost/auth/password", { username: WEB_USER, password: WEB_PASSWORD });
  assert.equal(ok.status, 303);
  assert.equal(ok.location, "/");
  const info = await b.request("http://localhost/auth/session");
  assert.equal(info.json.user, WEB_USER);
  assert.equal(info.json.via, "password");

  const t = new Browser("198.51.100.24");
  const codes = [];
  for (let i = 0; i < 5; i++) codes.push(errorOf(await t.post("http://localhost/auth/password", { username: WEB_USER, password: `wrong-${i}` })));
  assert.deepEqual(codes, Array(5).fill("bad_credentials"));
  const locked = await t.post("http://localhost/auth/password", { username: WEB_USER, password: WEB_PASSWORD });
  assert.equal(errorOf(locked), "throttled");
  assert.equal(t.cookie("fb_session"), undefined);
  // The same lockout holds for the API's Basic auth from that address.
  const basic = await lb.mf.dispatchFetch("http://localhost/admin/services", {
    headers: { authorization: `Basic ${Buffer.from(`${WEB_USER}:${WEB_PASSWORD}`).toString("base64")}`, "cf-connecting-ip": "198.51.100.24" },
  });
  assert.equal(basic.status, 429);
});

// ---- API keys and the audit trail ----

async function api(pathname, { method = "GET", body, token = API_SECRET, headers = {} } = {}) {
  const res = await lb.mf.dispatchFetch(`http://localhost${pathname}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "cf-connecting-ip": "203.0.113.50", ...(body ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text };
}

test("named keys: shown once, hashed, read scope, hostname limits, revocation at once, last use", async () => {
  const bad = await api("/admin/keys", { method: "POST", body: { name: "", scope: "admin" } });
  assert.equal(bad.status, 400);
  assert.deepEqual(bad.json.errors.map((e) => e.path), ["name", "scope"]);

  const read = await api("/admin/keys", { method: "POST", body: { name: "dashboard-reader", scope: "read" } });
  assert.equal(read.status, 201, read.text);
  assert.match(read.json.key, /^fbk_[A-Za-z0-9_-]{43}$/);
  const list = await api("/admin/keys");
  assert.ok(!list.text.includes(read.json.key), "the key itself is listed");
  assert.ok(!list.text.includes("hash"), "the hash is listed");
  const listed = list.json.keys.find((k) => k.id === read.json.id);
  assert.equal(listed.scope, "read");
  assert.equal(listed.hostnames, null);
  assert.equal(listed.revoked, false);
  assert.deepEqual(listed.created_by, { kind: "api_secret", name: null });

  // A read key reads, and is refused on any write.
  assert.equal((await api("/admin/services/app.test", { token: read.json.key })).status, 200);
  const write = await api("/admin/services/app.test/health-check", { method: "POST", token: read.json.key });
  assert.equal(write.status, 403);
  assert.match(write.json.error, /read/);
  // Keys cannot manage keys.
  assert.equal((await api("/admin/keys", { token: read.json.key })).status, 403);
  const used = (await api("/admin/keys")).json.keys.find((k) => k.id === read.json.id);
  assert.ok(used.last_used_at > Date.now() - 60_000, `last_used_at ${used.last_used_at}`);

  // Revoked: refused at the very next request.
  const revoked = await api(`/admin/keys/${read.json.id}`, { method: "DELETE" });
  assert.equal(revoked.status, 200);
  assert.equal(revoked.json.revoked, true);
  assert.equal((await api("/admin/services/app.test", { token: read.json.key })).status, 401);
  assert.equal((await api("/admin/keys/key_000000000000", { method: "DELETE" })).status, 404);
  assert.equal((await api("/admin/keys/nope", { method: "DELETE" })).status, 400);

  // A write key limited to one hostname.
  const limited = await api("/admin/keys", { method: "POST", body: { name: "app-deployer", scope: "write", hostnames: ["APP.test"] } });
  assert.equal(limited.status, 201, limited.text);
  assert.deepEqual(limited.json.hostnames, ["app.test"]);
  const own = await api("/admin/services", { token: limited.json.key });
  assert.deepEqual(own.json.services.map((s) => s.hostname), ["app.test"]);
  const other = await api("/admin/services/other.test/config", { method: "POST", token: limited.json.key, body: { backends: [backend.url] } });
  assert.equal(other.status, 403);
  assert.match(other.json.error, /app\.test/);
  assert.equal((await api("/admin/services/other.test/logs", { token: limited.json.key })).status, 403);
  assert.equal((await api("/admin/services/bad%20host/logs", { token: limited.json.key })).status, 403);
  assert.equal((await api("/admin/services/app.test/health-check", { method: "POST", token: limited.json.key })).status, 200);
  // Its metrics scrape holds only its own hostname's series.
  const made = await api("/admin/services/other.test/config", { method: "POST", body: { backends: [backend.url], ...quiet } });
  assert.ok(made.status === 200 || made.status === 201, made.text);
  const all = await api("/admin/metrics");
  assert.match(all.text, /hostname="other\.test"/);
  const mine = await api("/admin/metrics", { token: limited.json.key });
  assert.equal(mine.status, 200);
  assert.match(mine.text, /hostname="app\.test"/);
  assert.doesNotMatch(mine.text, /hostname="other\.test"/);
  assert.equal((await api("/admin/services/other.test/config", { method: "DELETE" })).status, 200);
});

test("audit trail names who changed what: key name, Basic user, signed-in email, API_SECRET", async () => {
  const cfg = "/admin/services/app.test";
  const key = await api("/admin/keys", { method: "POST", body: { name: "ci-bot", scope: "write" } });
  // API_SECRET replaces the config.
  const v1 = await api(`${cfg}/config`, { method: "POST", body: { backends: [backend.url], ...quiet } });
  assert.ok(v1.status === 200 || v1.status === 201, v1.text);
  // The key drains the backend.
  const v2 = await api(`${cfg}/backends`, { method: "PATCH", token: key.json.key, body: { url: backend.url, state: "draining" } });
  assert.equal(v2.status, 200, v2.text);
  // Basic auth sets the weight.
  const basic = await lb.mf.dispatchFetch(`http://localhost${cfg}/backends`, {
    method: "PATCH",
    headers: { authorization: `Basic ${Buffer.from(`${WEB_USER}:${WEB_PASSWORD}`).toString("base64")}`, "cf-connecting-ip": "203.0.113.51" },
    body: JSON.stringify({ url: backend.url, weight: 7, state: "enabled" }),
  });
  assert.equal(basic.status, 200, await basic.text());
  // A signed-in operator rolls back.
  fakes.setUser("google", { email: "Second@Example.com" });
  const b = new Browser();
  await signIn(b, "google");
  const csrf = (await b.request("http://localhost/auth/session")).json.csrf_token;
  const rb = await b.request(`http://localhost${cfg}/config/rollback`, {
    method: "POST",
    headers: { origin: "http://localhost", "x-csrf-token": csrf, "content-type": "application/json" },
    body: JSON.stringify({ version: v1.json.version }),
  });
  assert.equal(rb.status, 200, rb.text);

  const trail = await api(`${cfg}/audit`);
  assert.equal(trail.status, 200);
  assert.equal(trail.json.hostname, "app.test");
  const [e4, e3, e2, e1] = trail.json.entries;
  assert.deepEqual([e1.action, e2.action, e3.action, e4.action], [v1.status === 201 ? "config.created" : "config.replaced", "backend.updated", "backend.updated", "config.rolled_back"]);
  assert.deepEqual(e1.actor, { kind: "api_secret", name: null });
  assert.deepEqual(e2.actor, { kind: "key", name: "ci-bot" });
  assert.match(e2.summary, /state draining/);
  assert.deepEqual(e3.actor, { kind: "basic", name: WEB_USER });
  assert.match(e3.summary, /weight 7/);
  assert.deepEqual(e4.actor, { kind: "session", name: "Second@Example.com" });
  assert.match(e4.summary, new RegExp(`version ${v1.json.version}`));
  assert.deepEqual([e1.version, e2.version, e3.version, e4.version], [v1.json.version, v1.json.version + 1, v1.json.version + 2, v1.json.version + 3]);
  assert.ok(e4.at >= e1.at && e1.at > Date.now() - 120_000);

  // A signed-in operator can manage keys (with the CSRF token); the key records who made it.
  const made = await b.request("http://localhost/admin/keys", {
    method: "POST",
    headers: { origin: "http://localhost", "x-csrf-token": csrf, "content-type": "application/json" },
    body: JSON.stringify({ name: "made-in-console", scope: "read" }),
  });
  assert.equal(made.status, 201, made.text);
  assert.deepEqual(made.json.created_by, { kind: "session", name: "Second@Example.com" });

  // A delete is recorded too, and the trail outlives the service.
  const basicAuth = `Basic ${Buffer.from(`${WEB_USER}:${WEB_PASSWORD}`).toString("base64")}`;
  const created = await api("/admin/services/gone.test/config", { method: "POST", body: { backends: [backend.url], ...quiet } });
  assert.equal(created.status, 201, created.text);
  const del = await api("/admin/services/gone.test/config", { method: "DELETE", headers: { authorization: basicAuth } });
  assert.equal(del.status, 200, del.text);
  const gone = await api("/admin/services/gone.test/audit");
  assert.deepEqual(gone.json.entries.map((e) => [e.action, e.actor.kind, e.version]), [
    ["config.deleted", "basic", created.json.version],
    ["config.created", "api_secret", created.json.version],
  ]);

  // Key creation and revocation land in the deployment trail.
  await api(`/admin/keys/${key.json.id}`, { method: "DELETE", headers: { authorization: `Basic ${Buffer.from(`${WEB_USER}:${WEB_PASSWORD}`).toString("base64")}` } });
  const deployment = await api("/admin/audit");
  const [revoked] = deployment.json.entries;
  assert.equal(revoked.action, "key.revoked");
  assert.deepEqual(revoked.actor, { kind: "basic", name: WEB_USER });
  assert.match(revoked.summary, /ci-bot/);
  assert.ok(deployment.json.entries.some((e) => e.action === "key.created" && e.summary.includes("ci-bot") && e.actor.kind === "api_secret"));
});

// ---- turned off, and misconfigured ----

test("ENABLE_WEB_INTERFACE=false: console and /auth routes 404, sessions ignored, the API keeps working", async () => {
  const off = await startBalancer({
    defaultBackends: [{ hostname: "app.test", backends: [backend.url], ...quiet }],
    bindings: { ...fakes.env, JWT_SECRET, AUTHORIZED_USERS: "ops@example.com", ENABLE_WEB_INTERFACE: "false", ADMIN_PREFIX_HOSTNAMES: "app.test" },
  });
  try {
    for (const url of ["http://localhost/", "http://localhost/auth/providers", "http://localhost/auth/github/login", "http://localhost/auth/github/callback?code=x&state=y", "http://app.test/__lb_admin__/auth/providers", "http://app.test/__lb_admin__/"]) {
      const res = await off.mf.dispatchFetch(url, { redirect: "manual" });
      assert.equal(res.status, 404, url);
      await res.text();
    }
    const post = await off.mf.dispatchFetch("http://localhost/auth/password", { method: "POST", body: "username=a&password=b", headers: { "content-type": "application/x-www-form-urlencoded" } });
    assert.equal(post.status, 404);
    await post.text();
    const withBearer = await off.admin("/admin/services");
    assert.equal(withBearer.status, 200);
    await withBearer.text();
    const withSession = await off.mf.dispatchFetch("http://localhost/admin/services", { headers: { cookie: `fb_session=${jwt(claims())}` } });
    assert.equal(withSession.status, 401, "a session cookie still works with the console off");
    await withSession.text();
  } finally {
    await off.stop();
  }
});

test("a short JWT_SECRET, an empty AUTHORIZED_USERS and a plain-http provider URL are named, and nobody signs in", async () => {
  const bad = await startBalancer({
    defaultBackends: "",
    bindings: { ...fakes.env, JWT_SECRET: "too-short", GOOGLE_TOKEN_URL: "http://oauth.example.com/token", WEB_AUTH_USERNAME: WEB_USER, WEB_AUTH_PASSWORD: WEB_PASSWORD },
  });
  try {
    const p = await (await bad.mf.dispatchFetch("http://localhost/auth/providers")).json();
    assert.ok(p.problems.includes("JWT_SECRET is missing or shorter than 32 bytes: nobody can sign in"), JSON.stringify(p.problems));
    assert.ok(p.problems.includes("AUTHORIZED_USERS is empty: nobody can sign in with GitHub or Google"));
    assert.ok(p.problems.some((m) => m.startsWith("GOOGLE_TOKEN_URL")), JSON.stringify(p.problems));
    assert.equal(p.authorized_users_empty, true);
    assert.equal(p.google.enabled, false);
    assert.equal(p.github.enabled, true);
    const login = await bad.mf.dispatchFetch("http://localhost/auth/github/login", { redirect: "manual" });
    assert.equal(login.status, 302);
    assert.equal(login.headers.get("location"), "/?error=no_jwt_secret");
    assert.equal(login.headers.getSetCookie().length, 0);
    const pw = await bad.mf.dispatchFetch("http://localhost/auth/password", {
      method: "POST",
      redirect: "manual",
      headers: { origin: "http://localhost", "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ username: WEB_USER, password: WEB_PASSWORD }).toString(),
    });
    assert.equal(pw.headers.get("location"), "/?error=no_jwt_secret");
    assert.equal(pw.headers.getSetCookie().length, 0);
  } finally {
    await bad.stop();
  }
});

// ---- the login throttle ----

/** An admin API request from `ip` with `authorization`; answers the status. */
async function apiStatus(ip, authorization) {
  const res = await lb.mf.dispatchFetch("http://localhost/admin/services/app.test", { headers: { authorization, "cf-connecting-ip": ip } });
  await res.arrayBuffer();
  return res.status;
}

const basicAuth = (user, password) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

test("a success clears only its own credential's failures: guesses between read-key calls still lock out at the 6th", async () => {
  const key = (await api("/admin/keys", { method: "POST", body: { name: "throttle-reader", scope: "read" } })).json.key;
  const read = `Bearer ${key}`;
  // Basic guesses, a wrong API_SECRET, and the password form, each interleaved with the read key.
  const guesses = {
    "192.0.2.201": () => apiStatus("192.0.2.201", basicAuth(WEB_USER, "guess")),
    "192.0.2.202": () => apiStatus("192.0.2.202", "Bearer not-the-api-secret"),
    "192.0.2.203": async () => {
      const res = await new Browser("192.0.2.203").post("http://localhost/auth/password", { username: WEB_USER, password: "guess" });
      return errorOf(res);
    },
  };
  for (const [ip, guess] of Object.entries(guesses)) {
    const seen = [];
    for (let i = 0; i < 5; i++) {
      assert.equal(await apiStatus(ip, read), 200, `${ip}: the read key before guess ${i + 1}`);
      seen.push(await guess());
    }
    seen.push(await guess());
    const wrong = seen[0];
    assert.ok([401, "bad_credentials"].includes(wrong), `${ip}: ${seen}`);
    assert.deepEqual(seen, [...Array(5).fill(wrong), wrong === 401 ? 429 : "throttled"], `${ip}: lockout at the 6th guess`);
    // Locked out: every credential is refused, the valid read key too.
    assert.equal(await apiStatus(ip, read), 429, `${ip}: the read key while locked out`);
  }
});

test("IPv6 clients are counted per /64: rotating addresses inside it buys no attempts; IPv4 per address", async () => {
  const statuses = [];
  for (let i = 1; i <= 12; i++) statuses.push(await apiStatus(`2001:db8:17:64::${i.toString(16)}`, basicAuth(WEB_USER, `guess-${i}`)));
  assert.deepEqual(statuses, [...Array(5).fill(401), ...Array(7).fill(429)]);
  // The next /64 and a neighbouring IPv4 address are other clients.
  assert.equal(await apiStatus("2001:db8:17:65::1", basicAuth(WEB_USER, WEB_PASSWORD)), 200);
  for (let i = 1; i <= 5; i++) assert.equal(await apiStatus("192.0.2.220", basicAuth(WEB_USER, `g${i}`)), 401);
  assert.equal(await apiStatus("192.0.2.220", basicAuth(WEB_USER, "g6")), 429);
  assert.equal(await apiStatus("192.0.2.221", basicAuth(WEB_USER, WEB_PASSWORD)), 200);
});

// ---- forged OAuth callbacks ----

/** Sends the accounts object the Worker's own "consume this state" call: fresh means it was never stored. */
async function stateWasUnused(state) {
  const ns = await lb.mf.getDurableObjectNamespace("ACCOUNTS");
  const res = await ns.get(ns.idFromName("accounts")).fetch("https://accounts/call", {
    method: "POST",
    body: JSON.stringify({ op: "consume_state", state, exp_s: Math.floor(Date.now() / 1000) + 600 }),
  });
  return (await res.json()).fresh === true;
}

test("forged callbacks (a real state cookie, no code) store nothing and are throttled", async () => {
  const b = new Browser("203.0.113.77");
  const codes = [];
  const states = [];
  for (let i = 0; i < 300; i++) {
    const start = await b.request("http://localhost/auth/github/login");
    const state = new URL(start.location).searchParams.get("state");
    states.push(state);
    codes.push(errorOf(await b.request(`http://localhost/auth/github/callback?state=${encodeURIComponent(state)}`)));
  }
  assert.deepEqual(codes.slice(0, 5), Array(5).fill("provider_error"));
  assert.ok(codes.slice(5).every((c) => c === "throttled" || c === "provider_error"), codes.join(","));
  assert.ok(codes.filter((c) => c === "throttled").length >= 290, `throttled ${codes.filter((c) => c === "throttled").length} of 300`);
  // None of the 300 states was stored by the accounts object.
  const unused = [];
  for (const s of states) unused.push(await stateWasUnused(s));
  assert.equal(unused.filter((u) => !u).length, 0, "forged callbacks stored states");
  // With a made-up code, from a fresh address: the five free failures reach the accounts object
  // (and fail at the provider); from then on a throttled answer has stored nothing.
  const c = new Browser("203.0.113.78");
  const outcomes = [];
  for (let i = 0; i < 20; i++) {
    const start = await c.request("http://localhost/auth/github/login");
    const state = new URL(start.location).searchParams.get("state");
    const code = errorOf(await c.request(`http://localhost/auth/github/callback?state=${state}&code=made-up`));
    outcomes.push({ code, stored: !(await stateWasUnused(state)) });
  }
  assert.deepEqual(outcomes.slice(0, 5).map((o) => o.code), Array(5).fill("exchange_failed"));
  const throttled = outcomes.filter((o) => o.code === "throttled");
  assert.ok(throttled.length >= 10, JSON.stringify(outcomes));
  assert.ok(throttled.every((o) => !o.stored), `a throttled callback stored its state: ${JSON.stringify(outcomes)}`);
});

// ---- the reserved prefix on balanced hostnames ----

test("the reserved prefix is off on a balanced hostname unless ADMIN_PREFIX_HOSTNAMES lists it", async () => {
  const before = backend.requests().length;
  // Not listed: the prefix and its variants are ordinary paths of the hostname, balanced to its backend.
  for (const p of ["/__lb_admin__/", "/__lb_admin__/auth/session", "/__lb_admin__/admin/services", "/__LB_ADMIN__/", "/%5F%5Flb_admin__/", "//__lb_admin__/"]) {
    const res = await lb.fetch("plain.test", p, { headers: { authorization: `Bearer ${API_SECRET}` } });
    assert.equal(res.status, 200, p);
    const echo = await res.json();
    assert.equal(echo.backend, "auth-other", p);
    assert.equal(echo.url, p);
  }
  // Listed: the exact spelling is the admin surface; variants get a 404 naming it and never reach the backend.
  const served = await lb.fetch("app.test", "/__lb_admin__/admin/services/app.test", { headers: { authorization: `Bearer ${API_SECRET}` } });
  assert.equal(served.status, 200);
  assert.equal((await served.json()).hostname, "app.test");
  for (const p of ["/__LB_ADMIN__/", "/__Lb_Admin__/admin/services", "/%5F%5Flb_admin__/", "/%5f%5flb_admin__/auth/session", "//__lb_admin__/", "///__lb_admin__/admin/keys"]) {
    const res = await lb.fetch("app.test", p, { headers: { authorization: `Bearer ${API_SECRET}` } });
    assert.equal(res.status, 404, p);
    const body = await res.json();
    assert.match(body.error, /variant spelling of the reserved prefix; the admin surface is only at \/__lb_admin__\//, p);
  }
  // Paths that only look alike are the backend's.
  const near = await lb.fetch("app.test", "/__lb_admin__x/");
  assert.equal((await near.json()).url, "/__lb_admin__x/");
  assert.equal(backend.requests().length, before + 1, "only /__lb_admin__x/ reached the backend");
});

test("a session is bound to its hostname: the admin host's cookie is refused under a balanced hostname's prefix", async () => {
  fakes.setUser("github", { email: "ops@example.com" });
  const b = new Browser();
  await signIn(b, "github");
  const token = b.cookie("fb_session");
  assert.equal((await sessionWith(token)).status, 200, "control: valid on the admin host");
  for (const url of ["http://app.test/__lb_admin__/auth/session", "http://app.test/__lb_admin__/admin/services"]) {
    const res = await lb.mf.dispatchFetch(url, { headers: { cookie: `fb_session=${token}` } });
    assert.equal(res.status, 401, url);
    assert.match((await res.json()).error, /not issued for app\.test/);
  }
  // And the other way round: a session from app.test's prefix is refused on the admin host.
  const c = new Browser();
  await signIn(c, "github", undefined, "http://app.test", "/__lb_admin__");
  const appToken = c.cookie("fb_session");
  assert.equal((await c.request("http://app.test/__lb_admin__/auth/session")).status, 200);
  assert.equal((await sessionWith(appToken)).status, 401);
});

test("GET /auth/whoami answers 200 whoever asks: signed out, a session, a key, a wrong key (which still counts toward the throttle)", async () => {
  const nobody = await new Browser().request("http://localhost/auth/whoami");
  assert.equal(nobody.status, 200, nobody.text);
  assert.equal(nobody.json.signed_in, false);
  assert.equal(nobody.headers.get("cache-control"), "no-store");

  const b = new Browser();
  await signIn(b, "github");
  const me = await b.request("http://localhost/auth/whoami");
  assert.equal(me.status, 200);
  assert.deepEqual([me.json.signed_in, me.json.mode, me.json.email], [true, "session", "ops@example.com"]);
  assert.equal(me.json.csrf_token, (await b.request("http://localhost/auth/session")).json.csrf_token);

  const keyed = await new Browser().request("http://localhost/auth/whoami", { headers: { authorization: `Bearer ${API_SECRET}` } });
  assert.deepEqual([keyed.status, keyed.json.signed_in, keyed.json.mode], [200, true, "credentials"]);

  // A wrong key is "not signed in", not a 401; guessing through whoami is still throttled.
  const guesser = new Browser();
  const statuses = [];
  for (let i = 0; i < 6; i++) {
    const r = await guesser.request("http://localhost/auth/whoami", { headers: { authorization: "Bearer fbk_wrong-guess" } });
    statuses.push(r.status === 200 ? `200 ${r.json.signed_in}` : String(r.status));
  }
  assert.deepEqual(statuses, ["200 false", "200 false", "200 false", "200 false", "200 false", "429"]);
});
