// One admin API call with JSON in and out, as API_SECRET or a given token.
import { API_SECRET } from "./runtime.mjs";

/** Answers { status, headers, body (parsed JSON or null), text }. */
export async function adminCall(lb, pathname, { method = "GET", body, headers = {}, token = API_SECRET } = {}) {
  const res = await lb.mf.dispatchFetch(`http://localhost${pathname}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body: parsed, text };
}
