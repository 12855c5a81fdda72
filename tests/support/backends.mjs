// Real HTTP backends on loopback for the end-to-end tests; each can echo, fail, hang, reset or die on demand.
import http from "node:http";

/**
 * Starts a backend. `mode` can be switched at runtime: "ok" (echo), "503", "hang", "reset", "down",
 * "status:<n>" (a raw `HTTP/1.1 <n>` head with no body, e.g. 100, 103, 199 or 600: statuses Node's
 * own response API would not send as final), "truncate" (headers promising 100,000 bytes, then
 * 1,000 bytes and a destroyed socket), "slow:<ms>" (answers after <ms> ms; health probes stay fast).
 * Records every request it receives. `onProbe(req, res)`, when set, answers health probes instead.
 * `host` (or `address`): the loopback address to listen on (127.0.0.2, ... give backends distinct IPs).
 */
export async function startBackend(name, { health = "/health", host, address } = {}) {
  const bind = address ?? host ?? "127.0.0.1";
  const seen = [];
  const sockets = new Set();
  const state = { mode: "ok", name, seen, health, port: 0, server: null, handler: null };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const isProbe = (req.headers["user-agent"] ?? "").startsWith("FlowBalance-HealthCheck");
      seen.push({ method: req.method, url: req.url, headers: req.headers, bodyLength: body.length, probe: isProbe, at: Date.now() });
      if (state.mode === "hang") return; // never answers
      if (state.mode === "reset") {
        req.socket.destroy();
        return;
      }
      const raw = /^status:(\d+)$/.exec(state.mode);
      if (raw) {
        req.socket.end(`HTTP/1.1 ${raw[1]} Odd\r\ncontent-length: 0\r\n\r\n`);
        return;
      }
      if (state.mode === "truncate") {
        res.writeHead(200, { "content-type": "text/plain", "content-length": "100000" });
        res.write("x".repeat(1000), () => req.socket.destroy());
        return;
      }
      if (state.mode === "503") {
        res.writeHead(503, { "content-type": "text/plain" }).end(`${name} unavailable`);
        return;
      }
      if (isProbe) {
        state.probeCount = (state.probeCount ?? 0) + 1;
        if (state.onProbe) return state.onProbe(req, res);
        if (state.mode === "flap") return res.writeHead(state.probeCount % 2 ? 200 : 500).end("flap");
        if (state.health && req.url === state.health) return res.writeHead(200).end("ok");
        if (!state.health && req.url === "/") return res.writeHead(200).end("root");
        return res.writeHead(404).end("not found");
      }
      if (state.handler) return state.handler(req, res, body);
      const answer = () => {
        res.writeHead(200, {
          "content-type": "application/json",
          "x-backend": name,
        });
        res.end(JSON.stringify({ backend: name, method: req.method, url: req.url, headers: req.headers, bodyLength: body.length }));
      };
      const slow = /^slow:(\d+)$/.exec(state.mode);
      if (slow) return void setTimeout(answer, Number(slow[1]));
      answer();
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, bind, r));
  state.port = server.address().port;
  state.url = `http://${bind}:${state.port}`;
  state.server = server;
  state.requests = () => seen.filter((r) => !r.probe);
  state.probes = () => seen.filter((r) => r.probe);
  /** Stops listening and drops open connections: the port now refuses. */
  state.kill = async () => {
    await new Promise((r) => {
      server.close(() => r());
      for (const s of sockets) s.destroy();
    });
  };
  /** Listens again on the same port. */
  state.revive = async () => {
    await new Promise((r) => server.listen(state.port, bind, r));
  };
  return state;
}

export async function startBackends(n, opts) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await startBackend(`b${i + 1}`, opts));
  return out;
}

export async function stopAll(backends) {
  for (const b of backends) if (b.server.listening) await b.kill();
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(fn, { timeoutMs = 10000, stepMs = 100, what = "condition" } = {}) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(stepMs);
  }
}
