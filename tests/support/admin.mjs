// Admin API calls from tests: JSON in and out, as API_SECRET or a given token, and a service's status.
import assert from "node:assert/strict";
import { API_SECRET } from "./runtime.mjs";
import { readResponse } from "./requests.mjs";

/** Answers { status, headers, body (parsed JSON or null), text }. */
export async function adminCall(lb, pathname, { method = "GET", body, headers = {}, token = API_SECRET } = {}) {
  const res = await lb.mf.dispatchFetch(`http://localhost${pathname}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return readResponse(res);
}

/** `GET /admin/services/{host}` (asserts 200): the service's status view. */
export async function serviceStatus(lb, host = "app.test") {
  const res = await lb.admin(`/admin/services/${host}`);
  assert.equal(res.status, 200);
  return res.json();
}

/** One backend's entry in a status view; `backend` is a started backend or its URL. */
export function backendStatus(st, backend) {
  const url = typeof backend === "string" ? backend : backend.url;
  return st.backends.find((x) => x.url === url);
}
