// End to end: WebSocket upgrades through the balancer to real loopback echo backends: messages both ways, affinity, upgrade failover.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";
import { sleep, waitFor } from "../support/backends.mjs";
import { serviceStatus } from "../support/admin.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";

/** Makes backend `b` a WebSocket echo server: greets with `hello from <name>`, echoes `<name>:<text>` and binary as is. */
function speakWebSocket(t, b) {
  const wss = new WebSocketServer({ server: b.server });
  b.sockets = [];
  wss.on("connection", (ws, req) => {
    const entry = { ws, url: req.url, headers: req.headers, closed: null };
    b.sockets.push(entry);
    ws.send(`hello from ${b.name}`);
    ws.on("message", (data, isBinary) => ws.send(isBinary ? data : `${b.name}:${data}`, { binary: isBinary }));
    ws.on("close", (code, reason) => (entry.closed = { code, reason: String(reason) }));
  });
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  return b;
}

const fast = {
  activeHealthChecks: { interval: 60, timeout: 0.5 },
  connection_error_handling: { connection_timeout_ms: 500, max_connection_retries: 2 },
};

function setup(t, backends, extra = {}) {
  return balancerFor(t, { defaultBackends: { hostname: "app.test", backends: backends.map((b) => b.url), ...fast, ...extra } });
}

/**
 * Opens a WebSocket to app.test through the balancer. Resolves with the socket, the handshake
 * response headers and a message queue, or with `{ refused: status }` when no upgrade happened.
 */
function connect(lb, path = "/chat", headers = {}, protocols = []) {
  const u = new URL(lb.url);
  const ws = new WebSocket(`ws://${u.host}${path}`, protocols, { headers: { host: "app.test", ...headers } });
  const inbox = [];
  const waiters = [];
  ws.on("message", (data, isBinary) => {
    inbox.push(isBinary ? Buffer.from(data) : String(data));
    while (waiters.length && inbox.length) waiters.shift()(inbox.shift());
  });
  const next = (what = "a message") =>
    new Promise((resolve, reject) => {
      if (inbox.length) return resolve(inbox.shift());
      const timer = setTimeout(() => reject(new Error(`no message within 5 s: waiting for ${what}`)), 5000);
      waiters.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  return new Promise((resolve, reject) => {
    let headersSeen = {};
    ws.on("upgrade", (res) => (headersSeen = res.headers));
    ws.on("open", () => resolve({ ws, headers: headersSeen, next }));
    ws.on("unexpected-response", (req, res) => {
      res.resume();
      resolve({ refused: res.statusCode });
    });
    ws.on("error", reject);
  });
}

/** Per backend URL, its entry in the status view. */
async function backendStates(lb) {
  return Object.fromEntries((await serviceStatus(lb)).backends.map((b) => [b.url, b]));
}

const closed = (ws) => new Promise((r) => (ws.readyState === WebSocket.CLOSED ? r({}) : ws.on("close", (code, reason) => r({ code, reason: String(reason) }))));

test("messages flow both ways through the balancer, and a close on either side reaches the other", async (t) => {
  const bs = (await backendsFor(t, 2)).map((b) => speakWebSocket(t, b));
  const lb = await setup(t, bs);
  const c = await connect(lb, "/chat?room=1", {}, ["chat.v1"]);
  const hello = await c.next();
  const name = hello.replace("hello from ", "");
  const backend = bs.find((b) => b.name === name);
  assert.ok(backend, `greeting ${hello}`);
  assert.equal(backend.sockets.at(-1).url, "/chat?room=1");
  assert.equal(c.ws.protocol, "chat.v1", "the backend's chosen subprotocol reaches the client");
  c.ws.send("ping");
  assert.equal(await c.next("ping's echo"), `${name}:ping`);
  c.ws.send(Buffer.from([0, 1, 2, 255]));
  assert.deepEqual([...(await c.next("the binary echo"))], [0, 1, 2, 255]);
  // The connection outlives the 0.5 s connection timeout: that bound is for the handshake only.
  await sleep(1200);
  c.ws.send("still there");
  assert.equal(await c.next("an echo after the timeout"), `${name}:still there`);
  c.ws.close(4001, "bye");
  await waitFor(() => backend.sockets.at(-1).closed, { what: "the backend to see the close" });
  assert.deepEqual(backend.sockets.at(-1).closed, { code: 4001, reason: "bye" });
  // The backend closing reaches the client.
  const d = await connect(lb);
  const dName = (await d.next()).replace("hello from ", "");
  const dBackend = bs.find((b) => b.name === dName);
  dBackend.sockets.at(-1).ws.close(4002, "server done");
  assert.deepEqual(await closed(d.ws), { code: 4002, reason: "server done" });
  // Plain HTTP on the same hostname is unaffected.
  const res = await lb.fetch("app.test", "/plain");
  assert.equal(res.status, 200);
  assert.ok(["b1", "b2"].includes((await res.json()).backend));
});

test("cookie affinity keeps a client's WebSockets on its backend", async (t) => {
  const bs = (await backendsFor(t, 3)).map((b) => speakWebSocket(t, b));
  const lb = await setup(t, bs, { load_balancer: { session_affinity: { type: "cookie", cookie_name: "fb", ttl: 600 } } });
  const first = await connect(lb);
  const name = (await first.next()).replace("hello from ", "");
  const cookie = first.headers["set-cookie"];
  assert.ok(cookie && /^fb=/.test(String(cookie)), `no affinity cookie on the 101: ${JSON.stringify(first.headers)}`);
  first.ws.close();
  const pin = String(cookie).split(";")[0];
  for (let i = 0; i < 6; i++) {
    const c = await connect(lb, "/chat", { cookie: pin });
    assert.equal(await c.next(), `hello from ${name}`, `connection ${i} left the pinned backend`);
    c.ws.close();
  }
  // Without the cookie, clients spread over the backends.
  const seen = new Set();
  for (let i = 0; i < 6; i++) {
    const c = await connect(lb);
    seen.add(await c.next());
    c.ws.close();
  }
  assert.ok(seen.size > 1, `all unpinned connections went to one backend: ${[...seen]}`);
});

test("the upgrade fails over past a backend that is down and one that refuses upgrades; none accepting gives the refusal", async (t) => {
  const [down, plain, good] = await backendsFor(t, ["down", "plain", "good"]);
  speakWebSocket(t, good);
  await down.kill();
  // No probes: a failed probe of a backend this test kills would overwrite the last error that the
  // socket's own report sets (a suspect backend is re-probed within 2 s), and the check below reads it.
  const lb = await setup(t, [down, plain, good], { activeHealthChecks: { enabled: false } });
  for (let i = 0; i < 6; i++) {
    const c = await connect(lb);
    assert.equal(await c.next(), "hello from good", `connection ${i}`);
    c.ws.send(`m${i}`);
    assert.equal(await c.next(), `good:m${i}`);
    c.ws.close();
  }
  assert.ok(plain.requests().length > 0, "the refusing backend was never tried");
  assert.equal(good.sockets.length, 6);
  // Outcomes reach the object: the dead backend's refusals as failures; the refusing one is up, and
  // sockets that closed normally blame nobody.
  const st = await waitFor(async () => {
    const s = await backendStates(lb);
    return s[down.url].last_error ? s : null;
  }, { what: "the dead backend's failures to be reported" });
  // Named as the upgrade found it: refused, or (the runtime not telling) lost or refused.
  assert.match(st[down.url].last_error, /^connection (lost or )?refused/);
  assert.equal(st[plain.url].last_error, null);
  assert.equal(st[good.url].last_error, null);
  // Once connected, a lost backend is not retried: the client sees the close.
  const c = await connect(lb);
  await c.next();
  await good.kill();
  const end = await closed(c.ws);
  assert.notEqual(end.code, 1000);
  assert.equal(good.sockets.length, 7, "a lost connection was retried");
  // Reported when the socket closed, not at the upgrade: the backend's side broke off.
  await waitFor(async () => /WebSocket to the backend/.test((await backendStates(lb))[good.url].last_error ?? ""), {
    what: "the broken socket's report",
  });
  // With no backend accepting, the refusing backend's own answer goes back.
  const refused = await connect(lb);
  assert.equal(refused.refused, 200);
});
