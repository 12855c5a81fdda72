// Fake GitHub and Google OAuth providers: real HTTP servers on 127.0.0.1 speaking the real protocol (authorize redirect, token endpoint with PKCE S256 verification and one-time codes, GitHub /user and /user/emails, Google userinfo and id_token).
import http from "node:http";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";

export const CLIENTS = {
  github: { id: "gh-client-id", secret: "gh-client-secret-value" },
  google: { id: "google-client-id.apps.example", secret: "google-client-secret-value" },
};

const b64url = (buf) => Buffer.from(buf).toString("base64url");
const s256 = (verifier) => b64url(createHash("sha256").update(verifier).digest());

/**
 * Starts both fake providers on one loopback server (GitHub under /gh and /gh-api, so base URLs
 * with a path are exercised as for GitHub Enterprise; Google under /google).
 * Returns { env, github, google, setUser, failNext, setDown, events, stop }:
 * - `env` holds the Worker bindings that point at the fakes (client ids, secrets, endpoint URLs);
 * - `setUser(provider, { email, verified = true, primary = true, login })` picks who signs in next;
 * - `failNext(provider, error)` makes the next authorize answer `?error=<error>` (e.g. access_denied);
 * - `setDown(provider, true)` drops every connection to that provider's token and user endpoints;
 * - `events` lists what the fakes saw ({ provider, kind, ok, reason }), e.g. a PKCE mismatch.
 */
export async function startOAuthFakes({ port = 0, email = "ops@example.com" } = {}) {
  const users = {
    github: { email, verified: true, primary: true, login: "ops" },
    google: { email, verified: true },
  };
  const nextError = { github: null, google: null };
  const down = { github: false, google: false };
  const codes = new Map(); // code -> { provider, user, challenge, redirectUri, used }
  const tokens = new Map(); // access token -> { provider, user }
  const events = [];
  const sockets = new Set();

  const json = (res, status, body) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };

  function authorize(provider, url, res) {
    const q = url.searchParams;
    const problems = [];
    if (q.get("client_id") !== CLIENTS[provider].id) problems.push("client_id");
    if (q.get("code_challenge_method") !== "S256") problems.push("code_challenge_method");
    if (!/^[A-Za-z0-9_-]{43}$/.test(q.get("code_challenge") ?? "")) problems.push("code_challenge");
    if (!q.get("state")) problems.push("state");
    if (q.get("response_type") !== "code") problems.push("response_type");
    const redirectUri = q.get("redirect_uri") ?? "";
    if (!/^https?:\/\//.test(redirectUri)) problems.push("redirect_uri");
    if (problems.length) {
      events.push({ provider, kind: "authorize", ok: false, reason: problems.join(",") });
      return json(res, 400, { error: "invalid_request", fields: problems });
    }
    const back = new URL(redirectUri);
    back.searchParams.set("state", q.get("state"));
    if (nextError[provider]) {
      back.searchParams.set("error", nextError[provider]);
      events.push({ provider, kind: "authorize", ok: false, reason: nextError[provider] });
      nextError[provider] = null;
    } else {
      const code = b64url(randomBytes(16));
      codes.set(code, { provider, user: { ...users[provider] }, challenge: q.get("code_challenge"), redirectUri, used: false });
      back.searchParams.set("code", code);
      events.push({ provider, kind: "authorize", ok: true });
    }
    res.writeHead(302, { location: back.toString() });
    res.end();
  }

  function token(provider, form, res) {
    const refuse = (reason) => {
      events.push({ provider, kind: "token", ok: false, reason });
      // GitHub answers 200 with an error object; Google a 400.
      return json(res, provider === "github" ? 200 : 400, { error: "invalid_grant", error_description: reason });
    };
    if (form.get("client_id") !== CLIENTS[provider].id || form.get("client_secret") !== CLIENTS[provider].secret) {
      events.push({ provider, kind: "token", ok: false, reason: "client" });
      return json(res, 401, { error: "invalid_client" });
    }
    const grant = codes.get(form.get("code") ?? "");
    if (!grant || grant.provider !== provider) return refuse("unknown code");
    if (grant.used) return refuse("code already used");
    grant.used = true;
    if (form.get("redirect_uri") !== grant.redirectUri) return refuse("redirect_uri mismatch");
    const verifier = form.get("code_verifier") ?? "";
    if (s256(verifier) !== grant.challenge) return refuse("pkce");
    const accessToken = `${provider}-at-${b64url(randomBytes(16))}`;
    tokens.set(accessToken, { provider, user: grant.user });
    events.push({ provider, kind: "token", ok: true });
    if (provider === "github") return json(res, 200, { access_token: accessToken, token_type: "bearer", scope: "read:user,user:email" });
    const now = Math.floor(Date.now() / 1000);
    const idToken = [
      b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })),
      b64url(JSON.stringify({ iss: "https://accounts.google.com", aud: CLIENTS.google.id, sub: "g-" + grant.user.email, email: grant.user.email, email_verified: grant.user.verified, iat: now, exp: now + 3600 })),
    ];
    idToken.push(createHmac("sha256", CLIENTS.google.secret).update(idToken.join(".")).digest("base64url"));
    return json(res, 200, { access_token: accessToken, token_type: "Bearer", expires_in: 3599, scope: "openid email", id_token: idToken.join(".") });
  }

  function bearer(provider, req) {
    const m = /^(?:bearer|token)\s+(\S+)$/i.exec(req.headers.authorization ?? "");
    const t = m && tokens.get(m[1]);
    return t && t.provider === provider ? t.user : null;
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url, "http://fake");
      const p = url.pathname;
      const provider = p.startsWith("/gh") ? "github" : p.startsWith("/google") ? "google" : null;
      const isAuthorize = p === "/gh/login/oauth/authorize" || p === "/google/o/oauth2/v2/auth";
      if (provider && down[provider] && !isAuthorize) {
        events.push({ provider, kind: "down", ok: false, reason: p });
        return req.socket.destroy();
      }
      if (req.method === "GET" && isAuthorize) return authorize(provider, url, res);
      const form = new URLSearchParams(Buffer.concat(chunks).toString());
      if (req.method === "POST" && (p === "/gh/login/oauth/access_token" || p === "/google/token")) {
        return token(provider, form, res);
      }
      if (req.method === "GET" && p === "/gh-api/user") {
        if (!req.headers["user-agent"]) return json(res, 403, { message: "User-Agent required" });
        const u = bearer("github", req);
        return u ? json(res, 200, { login: u.login ?? "octo", id: 1, email: null }) : json(res, 401, { message: "Bad credentials" });
      }
      if (req.method === "GET" && p === "/gh-api/user/emails") {
        const u = bearer("github", req);
        if (!u) return json(res, 401, { message: "Bad credentials" });
        return json(res, 200, [
          { email: `noreply-${u.login ?? "octo"}@users.noreply.example`, primary: false, verified: true, visibility: null },
          { email: u.email, primary: u.primary ?? true, verified: u.verified ?? true, visibility: "private" },
        ]);
      }
      if (req.method === "GET" && p === "/google/v1/userinfo") {
        const u = bearer("google", req);
        if (!u) return json(res, 401, { error: "invalid_token" });
        return json(res, 200, { sub: "g-" + u.email, email: u.email, email_verified: u.verified ?? true });
      }
      json(res, 404, { error: `fake provider has no ${req.method} ${p}` });
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const github = { oauthBase: `${base}/gh`, apiBase: `${base}/gh-api` };
  const google = { authUrl: `${base}/google/o/oauth2/v2/auth`, tokenUrl: `${base}/google/token`, userinfoUrl: `${base}/google/v1/userinfo` };
  return {
    base,
    github,
    google,
    events,
    env: {
      GITHUB_CLIENT_ID: CLIENTS.github.id,
      GITHUB_CLIENT_SECRET: CLIENTS.github.secret,
      GITHUB_OAUTH_BASE: github.oauthBase,
      GITHUB_API_BASE: github.apiBase,
      GOOGLE_CLIENT_ID: CLIENTS.google.id,
      GOOGLE_CLIENT_SECRET: CLIENTS.google.secret,
      GOOGLE_AUTH_URL: google.authUrl,
      GOOGLE_TOKEN_URL: google.tokenUrl,
      GOOGLE_USERINFO_URL: google.userinfoUrl,
    },
    setUser(provider, user) {
      users[provider] = { verified: true, primary: true, ...user };
    },
    failNext(provider, error) {
      nextError[provider] = error;
    },
    setDown(provider, isDown) {
      down[provider] = isDown;
    },
    async stop() {
      await new Promise((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

// `node tests/support/oauth-fakes.mjs [port] [email]`: runs the fakes for local development (every
// sign-in is `email`, default ops@example.com) and prints the .dev.vars lines that point at them.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const fakes = await startOAuthFakes({ port: Number(process.argv[2] ?? 9120), email: process.argv[3] ?? "ops@example.com" });
  console.log(`# Fake GitHub and Google sign-in on ${fakes.base}; add to .dev.vars (plus JWT_SECRET and AUTHORIZED_USERS):`);
  for (const [k, v] of Object.entries(fakes.env)) console.log(`${k}=${v}`);
  const stop = () => fakes.stop().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
