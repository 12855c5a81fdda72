// End to end: the live tail streams request, health and config lines over a hibernatable WebSocket, bounded in tails and in unacknowledged lines.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { API_SECRET, startBalancer } from "../support/runtime.mjs";
import { startBackends, stopAll, waitFor } from "../support/backends.mjs";

const WINDOW = 500;
const MAX_TAILS = 8;

/** Opens a tail; `ack`: acknowledge every line as it arrives (a well-behaved consumer). */
function openTail(lb, host, { ack = true, auth = true } = {}) {
  const u = new URL(lb.url);
  const ws = new WebSocket(`ws://${u.host}/admin/services/${host}/tail`, {
    headers: auth ? { authorization: `Bearer ${API_SECRET}` } : {},
    // After the closing handshake the runtime may keep the TCP connection a while; the close
    // frame (code and reason) is what tells a consumer it was dropped.
    closeTimeout: 1000,
  });
  const tail = { ws, lines: [], closed: null, refused: null };
  ws.on("message", (data) => {
    const line = JSON.parse(String(data));
    tail.lines.push(line);
    if (ack && line.seq > 0) ws.send(String(line.seq));
  });
  ws.on("close", (code, reason) => (tail.closed = { code, reason: String(reason) }));
  ws.on("unexpected-response", (_req, res) => {
    let body = "";
    res.on("data", (c) => (body += c));
    res.on("end", () => (tail.refused = { status: res.statusCode, body }));
  });
  ws.on("error", () => {});
  tail.opened = new Promise((resolve) => {
    ws.once("open", () => resolve(true));
    ws.once("unexpected-response", () => resolve(false));
  });
  return tail;
}

async function send(lb, host, paths, parallel = 8) {
  let next = 0;
  const statuses = [];
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < paths.length) {
        const p = paths[next++];
        const res = await lb.fetch(host, p);
        statuses.push(res.status);
        await res.arrayBuffer();
      }
    }),
  );
  return statuses;
}

test("tail: request lines with their decision, a health event, a config event; bounded tails; a consumer that stops acknowledging is dropped", async () => {
  const bs = await startBackends(2);
  const lb = await startBalancer({
    defaultBackends: {
      hostname: "tail.test",
      backends: bs.map((b) => b.url),
      activeHealthChecks: { interval: 1, timeout: 1, consecutive_up: 1, consecutive_down: 1 },
    },
  });
  const tails = [];
  try {
    await (await lb.fetch("tail.test", "/warm")).arrayBuffer();
    const anonymous = openTail(lb, "tail.test", { auth: false });
    assert.equal(await anonymous.opened, false);
    await waitFor(() => anonymous.refused, { what: "refusal" });
    assert.equal(anonymous.refused.status, 401);
    const plain = await lb.admin("/admin/services/tail.test/tail");
    assert.equal(plain.status, 426, "a tail needs a WebSocket upgrade");
    assert.match((await plain.json()).error, /Upgrade: websocket/);

    const good = openTail(lb, "tail.test");
    tails.push(good);
    assert.equal(await good.opened, true);
    await waitFor(() => good.lines.find((l) => l.type === "hello"), { what: "hello line" });
    assert.deepEqual(
      { ...good.lines[0] },
      { seq: 0, type: "hello", hostname: "tail.test", window: WINDOW, max_tails: MAX_TAILS },
    );

    const paths = Array.from({ length: 6 }, (_, i) => `/seen/${i}?q=${i}`);
    const before = Date.now();
    assert.ok((await send(lb, "tail.test", paths, 1)).every((s) => s === 200));
    const requests = await waitFor(
      () => {
        const r = good.lines.filter((l) => l.type === "request" && l.path.startsWith("/seen/"));
        return r.length === paths.length && r;
      },
      { what: "a line per request" },
    );
    for (const line of requests) {
      assert.equal(line.method, "GET");
      assert.equal(line.status, 200);
      assert.equal(line.attempts, 1);
      assert.equal(line.why, "round robin");
      assert.ok(bs.some((b) => b.url === line.backend), line.backend);
      assert.ok(line.latency_ms >= 0 && line.latency_ms < 5000);
      assert.ok(line.ts_ms >= before - 1000 && line.ts_ms <= Date.now());
      assert.ok(line.seq > 0);
    }
    // The path as the request log keeps it: without the query (which may carry secrets).
    assert.deepEqual(requests.map((l) => l.path).sort(), paths.map((p) => p.split("?")[0]).sort());
    assert.equal(new Set(requests.map((l) => l.backend)).size, 2, "round robin shows both backends");

    // A health event: a backend dies.
    await bs[1].kill();
    const down = await waitFor(() => good.lines.find((l) => l.type === "health" && l.to === "down"), {
      timeoutMs: 15000,
      what: "a health line",
    });
    assert.equal(down.backend, bs[1].url);
    assert.equal(down.kind, "health");
    assert.match(down.reason, /^probe/);

    // A config event: a new version, which denies one client address.
    const current = await (await lb.admin("/admin/services/tail.test/config")).json();
    const put = await lb.admin("/admin/services/tail.test/config", {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...current.config, access_control: { deny: ["192.0.2.1"] } }),
    });
    assert.equal(put.status, 200);
    const version = (await put.json()).version;
    await waitFor(() => good.lines.find((l) => l.type === "config" && l.version === version && l.action === "changed"), {
      what: "a config line",
    });

    // A request the object refuses is a line too: no backend, no attempt, and why.
    const denied = await lb.fetch("tail.test", "/denied", { headers: { "cf-connecting-ip": "192.0.2.1" } });
    assert.equal(denied.status, 403);
    await denied.arrayBuffer();
    const refusal = await waitFor(() => good.lines.find((l) => l.type === "request" && l.path === "/denied"), { what: "a refused line" });
    assert.equal(refusal.status, 403);
    assert.equal(refusal.backend, null);
    assert.equal(refusal.attempts, 0);
    assert.match(refusal.why, /^refused: .*192\.0\.2\.1/);

    // Bounded: at most MAX_TAILS at once.
    const slow = openTail(lb, "tail.test", { ack: false });
    tails.push(slow);
    assert.equal(await slow.opened, true);
    const extra = [];
    for (let i = 2; i < MAX_TAILS; i++) {
      const t = openTail(lb, "tail.test");
      extra.push(t);
      tails.push(t);
      assert.equal(await t.opened, true);
    }
    const refused = openTail(lb, "tail.test");
    tails.push(refused);
    assert.equal(await refused.opened, false);
    await waitFor(() => refused.refused, { what: "refusal" });
    assert.equal(refused.refused.status, 429);
    assert.match(refused.refused.body, /8 tails/);
    for (const t of extra) t.ws.close();
    await waitFor(() => extra.every((t) => t.closed), { what: "extra tails closed" });

    // The consumer that never acknowledges is dropped after a window of lines; requests and
    // the well-behaved tail carry on.
    const burst = Array.from({ length: WINDOW + 40 }, (_, i) => `/burst/${i}`);
    const statuses = await send(lb, "tail.test", burst);
    assert.ok(statuses.every((s) => s === 200), "requests unharmed by a slow tail");
    await waitFor(() => slow.closed, { timeoutMs: 15000, what: "the slow consumer dropped" });
    assert.equal(slow.closed.code, 4008);
    assert.match(slow.closed.reason, /slow consumer/);
    assert.ok(slow.lines.length <= WINDOW + 1, `slow consumer got ${slow.lines.length} lines, not more than the window`);
    await waitFor(() => good.lines.filter((l) => l.type === "request" && l.path.startsWith("/burst/")).length === burst.length, {
      timeoutMs: 15000,
      what: "every burst line on the acknowledging tail",
    });
    assert.equal(good.closed, null, "the acknowledging tail stays open");
    // Sequence numbers have no gaps: nothing was dropped for the consumer that keeps up.
    const seqs = good.lines.filter((l) => l.seq > 0).map((l) => l.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1));

    // An unreadable acknowledgement is answered with an error line, not ignored.
    good.ws.send("not a number");
    const err = await waitFor(() => good.lines.find((l) => l.type === "error"), { what: "error line" });
    assert.match(err.message, /acknowledgement/);
  } finally {
    for (const t of tails) t.ws.terminate();
    await stopAll(bs);
    await lb.stop();
  }
});
