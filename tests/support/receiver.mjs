// A loopback webhook receiver: verifies X-FlowBalance-Signature, de-duplicates event ids, and can be taken down and brought back.
import crypto from "node:crypto";
import { startBackend } from "./backends.mjs";

/** Checks `t=<s>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>"); false when absent or wrong. */
export function verifySignature(secret, header, body, { toleranceS = 300, nowS = Date.now() / 1000 } = {}) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? "");
  if (!m) return false;
  if (Math.abs(nowS - Number(m[1])) > toleranceS) return false; // replayed or stale
  const want = crypto.createHmac("sha256", secret).update(`${m[1]}.${body}`).digest();
  return crypto.timingSafeEqual(want, Buffer.from(m[2], "hex"));
}

export async function startReceiver(name, { secret } = {}) {
  const r = await startBackend(name);
  r.posts = 0;
  r.badSignatures = 0;
  /** id -> { event, body (parsed), headers, count, receivedMs (first arrival) } */
  r.events = new Map();
  r.handler = (req, res, body) => {
    r.posts++;
    const text = body.toString();
    if (secret && !verifySignature(secret, req.headers["x-flowbalance-signature"], text)) {
      r.badSignatures++;
      return res.writeHead(401).end("bad signature");
    }
    const id = req.headers["x-flowbalance-event-id"];
    const seen = r.events.get(id);
    if (seen) seen.count++;
    else r.events.set(id, { event: req.headers["x-flowbalance-event"], body: JSON.parse(text), headers: req.headers, count: 1, receivedMs: Date.now() });
    res.writeHead(204).end();
  };
  r.ofKind = (kind) => [...r.events.values()].filter((e) => e.event === kind);
  return r;
}
