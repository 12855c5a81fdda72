// The admin API as the console calls it: the root it is served under, who is signed in, and
// requests that carry the session's CSRF token (or an API key the operator pasted).

/** "" on the Worker's own hostnames, "/__lb_admin__" on a balanced hostname. */
export const root = location.pathname.startsWith("/__lb_admin__") ? "/__lb_admin__" : "";

const KEY_STORE = "fb-api-key";

/** How this browser is signed in: by a session cookie, or by API credentials it sends. */
export const auth = { mode: null, user: "", via: "", csrf: "", expiresAt: null };

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.body = body ?? {};
    /** Validation errors, each `{path, message}`. */
    this.errors = Array.isArray(body?.errors) ? body.errors : [];
  }
}

/** Called when the API answers 401 to a signed-in console (the session ended). */
let onSignedOut = () => {};
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

function keyHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { authorization: `Bearer ${key}` } : {};
}

/**
 * Calls the admin API at `root + path`. Resolves `{ body, headers, status }` for a 2xx and throws
 * an ApiError otherwise. Session requests carry the cookie (same-origin) and, when they change
 * something, the CSRF token. Otherwise no cookie or browser-cached credentials go along, so the
 * browser never pops up its own Basic-auth prompt.
 */
export async function api(path, { method = "GET", body, ifMatch, headers = {} } = {}) {
  const h = { accept: "application/json", ...keyHeaders(), ...headers };
  if (body !== undefined) h["content-type"] = "application/json";
  if (ifMatch != null) h["if-match"] = `"${ifMatch}"`;
  if (auth.mode === "session" && method !== "GET") h["x-csrf-token"] = auth.csrf;
  const res = await fetch(root + path, {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    credentials: auth.mode === "session" ? "same-origin" : "omit",
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { error: text.slice(0, 300) };
  }
  if (!res.ok) {
    if (res.status === 401 && auth.mode) onSignedOut();
    throw new ApiError(res.status, parsed);
  }
  return { body: parsed, headers: res.headers, status: res.status };
}

/** GET returning only the body. */
export const get = async (path) => (await api(path)).body;

/** Asks the Worker who this browser is: always a 200, `signed_in` true or false. */
async function whoami(init) {
  const res = await fetch(`${root}/auth/whoami`, { ...init, headers: { accept: "application/json", ...(init.headers ?? {}) } }).catch(() => null);
  return res?.ok ? res.json() : null;
}

/**
 * Finds out whether this browser is signed in: a session cookie (or an Authorization header the
 * browser is made to send) first, then a key pasted into the console. Nothing here answers 401:
 * a signed-out console leaves no error in the browser's log.
 */
export async function detectAuth() {
  Object.assign(auth, { mode: null, user: "", via: "", csrf: "", expiresAt: null });
  const first = await whoami({ credentials: "same-origin" });
  if (first?.signed_in && first.mode === "session") {
    Object.assign(auth, { mode: "session", user: first.email || first.user || first.sub || "", via: first.via || "", csrf: first.csrf_token || "", expiresAt: first.expires_at ?? null });
    return true;
  }
  const pasted = Boolean(sessionStorage.getItem(KEY_STORE));
  const found = first?.signed_in ? first : pasted ? await whoami({ credentials: "omit", headers: keyHeaders() }) : null;
  if (found?.signed_in) {
    Object.assign(auth, { mode: "credentials", user: pasted ? "API key" : "API credentials", via: "api" });
    return true;
  }
  return false;
}

/** Remembers an API key for this tab (sessionStorage) and checks it. */
export async function useApiKey(key) {
  sessionStorage.setItem(KEY_STORE, key);
  if (await detectAuth()) return true;
  sessionStorage.removeItem(KEY_STORE);
  return false;
}

/** Signs out: ends the session (or everywhere), or forgets a pasted key. */
export async function signOut({ everywhere = false } = {}) {
  if (auth.mode === "session") {
    await fetch(`${root}/auth/${everywhere ? "logout-all" : "logout"}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": auth.csrf },
    });
  }
  sessionStorage.removeItem(KEY_STORE);
  Object.assign(auth, { mode: null, user: "", via: "", csrf: "", expiresAt: null });
}

/** `/admin/services/<host>` with the hostname encoded. */
export const svc = (host, rest = "") => `/admin/services/${encodeURIComponent(host)}${rest}`;
