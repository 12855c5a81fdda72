// Balanced requests as tests read them: a response read whole, and which backend served it.
import assert from "node:assert/strict";

/** Reads a response whole: { status, headers, body (parsed JSON, or null), text }. */
export async function readResponse(res) {
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body, text };
}

/** One balanced request to `host` through runtime `lb`, read whole. */
export async function send(lb, host, path = "/", init = {}) {
  return readResponse(await lb.fetch(host, path, init));
}

/** Which backend served a balanced request (asserts it succeeded). */
export async function backendOf(lb, host, path = "/", init = {}) {
  const res = await send(lb, host, path, init);
  assert.equal(res.status, 200, `${host}${path}: ${res.text}`);
  return res.body.backend;
}
