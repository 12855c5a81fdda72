// End to end: monitor options (expected body and codes, HEAD, headers incl. Host, redirects, tcp) against real loopback backends.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { waitFor } from "../support/backends.mjs";
import { backendStatus, serviceStatus as status } from "../support/admin.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";

/** A runtime balancing app.test over `urls` with monitor options `monitor`, probing only on demand unless `interval` is given. */
function setup(t, urls, monitor, extra = {}) {
  const activeHealthChecks = { interval: 60, timeout: 1, consecutive_up: 1, consecutive_down: 1, ...monitor };
  return balancerFor(t, { defaultBackends: { hostname: "app.test", backends: urls, activeHealthChecks, ...extra } });
}

/** One probe round now; results by backend URL. */
async function probeNow(lb) {
  const res = await lb.admin("/admin/services/app.test/health-check", { method: "POST" });
  assert.equal(res.status, 200);
  const { results } = await res.json();
  return Object.fromEntries(results.map((r) => [r.url, r]));
}

test("expected_body: a backend whose health body changes is marked down, with the reason shown, and traffic leaves it", async (t) => {
  const [a, b] = await backendsFor(t, ["a", "b"]);
  let body = "Status: OK";
  a.onProbe = (req, res) => res.writeHead(200, { "content-type": "text/plain" }).end(body);
  b.onProbe = (req, res) => res.writeHead(200).end("status: ok");
  const lb = await setup(t, [a.url, b.url], { path: "/health", expected_body: "ok", interval: 0.5, consecutive_down: 2 });
  // Case-insensitive: "OK" contains "ok".
  await waitFor(async () => backendStatus(await status(lb), a.url).monitor?.result === "up", { what: "a first good probe" });
  body = "status: degraded";
  const st = await waitFor(
    async () => {
      const s = backendStatus(await status(lb), a.url);
      return !s.healthy ? s : null;
    },
    { what: "a marked down by its body" },
  );
  assert.equal(st.monitor.result, "down");
  assert.equal(st.monitor.reason, 'body did not contain "ok"');
  assert.equal(st.monitor.status, 200);
  const before = a.requests().length;
  for (let i = 0; i < 10; i++) {
    const res = await lb.fetch("app.test", `/r${i}`);
    assert.equal((await res.json()).backend, "b");
  }
  assert.equal(a.requests().length, before, "a down backend got traffic");
  // A body beyond the 64 KiB prefix is not read: "ok" only after it does not count.
  body = "x".repeat(70 * 1024) + " ok";
  await waitFor(async () => backendStatus(await status(lb), a.url).monitor?.status === 200, { what: "another probe" });
  assert.equal(backendStatus(await status(lb), a.url).healthy, false);
  body = "ok again";
  await waitFor(async () => backendStatus(await status(lb), a.url).healthy, { what: "a back up" });
});

test("expected_codes: only the listed codes and classes pass; the reason names what was expected", async (t) => {
  const bs = await backendsFor(t, ["s204", "s301", "s500"]);
  const codes = { s204: 204, s301: 301, s500: 500 };
  for (const b of bs) b.onProbe = (req, res) => res.writeHead(codes[b.name], { location: "/elsewhere" }).end();
  const lb = await setup(t, bs.map((b) => b.url), { path: "/hc", expected_codes: "200,204" });
  let r = await probeNow(lb);
  assert.equal(r[bs[0].url].ok, true);
  assert.equal(r[bs[1].url].ok, false);
  assert.equal(r[bs[1].url].error, "expected 200,204, got 301");
  assert.equal(r[bs[2].url].error, "expected 200,204, got 500");
  const st = await status(lb);
  assert.equal(backendStatus(st, bs[2].url).monitor.reason, "expected 200,204, got 500");
  assert.equal(backendStatus(st, bs[2].url).healthy, false);
  assert.equal(st.config.activeHealthChecks.expected_codes, "200,204");
  // "2xx,301": the redirect passes now, the 500 still fails.
  const put = await lb.admin("/admin/services/app.test/config", {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...st.config, activeHealthChecks: { ...st.config.activeHealthChecks, expected_codes: "2xx,301" } }),
  });
  assert.equal(put.status, 200, await put.text());
  r = await probeNow(lb);
  assert.deepEqual(bs.map((b) => r[b.url].ok), [true, true, false]);
  assert.equal(r[bs[2].url].error, "expected 2xx,301, got 500");
  // A typo is refused at config time, naming the field, and nothing changes.
  const bad = await lb.admin("/admin/services/app.test/config", {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...st.config, activeHealthChecks: { ...st.config.activeHealthChecks, expected_codes: "2xx,3yy" } }),
  });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /activeHealthChecks\.expected_codes: "3yy"/);
  assert.equal((await status(lb)).config.activeHealthChecks.expected_codes, "2xx,301");
});

test("method HEAD and configured headers (Host included) reach the backend", async (t) => {
  const [a] = await backendsFor(t, ["a"]);
  a.onProbe = (req, res) => res.writeHead(req.headers.host === "status.internal" ? 200 : 421).end();
  const lb = await setup(t, [a.url], { path: "/hc", method: "HEAD", headers: { Host: "status.internal", "X-Probe": "fb" } });
  const r = await probeNow(lb);
  assert.equal(r[a.url].ok, true, r[a.url].error);
  const p = a.probes().at(-1);
  assert.equal(p.method, "HEAD");
  assert.equal(p.url, "/hc");
  assert.equal(p.headers.host, "status.internal");
  assert.equal(p.headers["x-probe"], "fb");
  assert.match(p.headers["user-agent"], /^FlowBalance-HealthCheck/);
  // GET with Host and a body check: the socket path reads a chunked body too.
  a.onProbe = (req, res) => {
    res.writeHead(req.headers.host === "status.internal" ? 200 : 421, { "content-type": "text/plain" });
    res.write("status: ");
    setTimeout(() => res.end(req.headers.host === "status.internal" ? "Healthy" : "wrong host"), 20);
  };
  const st = await status(lb);
  const put = await lb.admin("/admin/services/app.test/config", {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...st.config, activeHealthChecks: { ...st.config.activeHealthChecks, method: "GET", expected_body: "healthy" } }),
  });
  assert.equal(put.status, 200, await put.text());
  let again = await probeNow(lb);
  assert.equal(again[a.url].ok, true, again[a.url].error);
  assert.equal(a.probes().at(-1).headers["transfer-encoding"], undefined, "a probe sent a body");
  a.onProbe = (req, res) => res.writeHead(200).end("status: sick");
  again = await probeNow(lb);
  assert.equal(again[a.url].error, 'body did not contain "healthy"');
  // Requests still carry the backend's own address as Host.
  await (await lb.fetch("app.test", "/x")).arrayBuffer();
  assert.equal(a.requests().at(-1).headers.host, `127.0.0.1:${a.port}`);
});

test("follow_redirects: off judges the redirect itself; on follows it on the backend's origin only", async (t) => {
  const [a, other] = await backendsFor(t, ["a", "other"]);
  let offOrigin = false;
  a.onProbe = (req, res) => {
    if (req.url === "/health") {
      const location = offOrigin ? `${other.url}/health` : "/health/ready";
      return res.writeHead(302, { location }).end();
    }
    if (req.url === "/health/ready") return res.writeHead(200).end("ready");
    res.writeHead(404).end();
  };
  other.onProbe = (req, res) => res.writeHead(200).end("ready");
  const lb = await setup(t, [a.url], { path: "/health", expected_codes: "2xx", expected_body: "ready" });
  let r = await probeNow(lb);
  assert.equal(r[a.url].ok, false);
  assert.equal(r[a.url].error, "expected 2xx, got 302");
  assert.ok(!a.probes().some((p) => p.url === "/health/ready"), "followed a redirect while follow_redirects is off");

  const st = await status(lb);
  const on = { ...st.config, activeHealthChecks: { ...st.config.activeHealthChecks, follow_redirects: true } };
  const put = await lb.admin("/admin/services/app.test/config", { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(on) });
  assert.equal(put.status, 200, await put.text());
  r = await probeNow(lb);
  assert.equal(r[a.url].ok, true, r[a.url].error);
  assert.equal(r[a.url].status, 200);
  assert.equal(a.probes().at(-1).url, "/health/ready");

  offOrigin = true;
  const otherBefore = other.probes().length;
  r = await probeNow(lb);
  assert.equal(r[a.url].ok, false);
  assert.match(r[a.url].error, /leaves the backend's origin/);
  assert.equal(other.probes().length, otherBefore, "a redirect off the backend's origin was followed");
});

test("a tcp monitor is up while a plain TCP listener accepts, down once it is closed", async (t) => {
  const accepted = [];
  const listener = net.createServer((s) => {
    accepted.push(Date.now());
    s.end();
  });
  await new Promise((r) => listener.listen(0, "127.0.0.1", r));
  const port = listener.address().port;
  t.after(() => listener.listening && new Promise((r) => listener.close(() => r())));
  // The backend URL names the listener; a second service probes an HTTP backend's tcp `port`.
  const lb = await setup(t, [`http://127.0.0.1:${port}`], { type: "tcp" });
  let r = await probeNow(lb);
  const url = `http://127.0.0.1:${port}`;
  assert.equal(r[url].ok, true, r[url].error);
  assert.equal(r[url].path, `127.0.0.1:${port}`);
  await waitFor(() => accepted.length > 0, { what: "the listener to see the connection" });
  await new Promise((res) => listener.close(() => res()));
  r = await probeNow(lb);
  assert.equal(r[url].ok, false);
  assert.match(r[url].error, new RegExp(`connect to 127\\.0\\.0\\.1:${port}`));
  const st = backendStatus(await status(lb), url);
  assert.equal(st.healthy, false);
  assert.equal(st.monitor.type, "tcp");
  assert.equal(st.monitor.result, "down");
  assert.equal(st.monitor.method, null);
});

test("a tcp monitor with `port` checks that port, not the backend's", async (t) => {
  const [a] = await backendsFor(t, ["a"]);
  const listener = net.createServer((s) => s.end());
  await new Promise((r) => listener.listen(0, "127.0.0.1", r));
  const port = listener.address().port;
  t.after(() => listener.listening && new Promise((r) => listener.close(() => r())));
  const lb = await setup(t, [a.url], { type: "tcp", port });
  let r = await probeNow(lb);
  assert.equal(r[a.url].ok, true, r[a.url].error);
  assert.equal(r[a.url].path, `127.0.0.1:${port}`);
  assert.equal(a.probes().length, 0, "the HTTP port was probed");
  await new Promise((res) => listener.close(() => res()));
  r = await probeNow(lb);
  assert.equal(r[a.url].ok, false, "the backend's own port answered for the closed one");
  // HTTP options on a tcp monitor are refused, naming the field.
  const bad = await lb.admin("/admin/services/app.test/config", {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ backends: [a.url], activeHealthChecks: { type: "tcp", expected_body: "ok" } }),
  });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /activeHealthChecks\.expected_body: only for http and https monitors/);
});

test("probe schedule: a failing backend is re-probed within seconds while a healthy one keeps its own interval", async (t) => {
  const [good, bad] = await backendsFor(t, ["good", "bad"]);
  bad.onProbe = (req, res) => res.writeHead(500).end("down");
  // interval 4 s (±10%): a failing backend is re-probed every 2 s, the healthy one is not.
  const lb = await setup(t, [good.url, bad.url], { path: "/health", interval: 4 });
  await waitFor(async () => !backendStatus(await status(lb), bad.url).healthy, { what: "bad marked down by its probes", timeoutMs: 15000 });
  const since = Date.now();
  const after = (b) => b.probes().filter((p) => p.at >= since).length;
  // Six re-probes of the failing backend take about 12 s: three of the healthy one's intervals.
  await waitFor(() => after(bad) >= 6, { what: "six re-probes of bad", timeoutMs: 20000, stepMs: 50 });
  const elapsed = Date.now() - since;
  const n = after(good);
  assert.ok(n >= 1 && n <= Math.ceil(elapsed / 3600) + 1, `good probed ${n} times in ${elapsed} ms (interval 4 s), bad ${after(bad)}`);
});

test("service health: a backend not probed yet is unknown (and still takes traffic); a draining one does not degrade the service", async (t) => {
  const [a, b] = await backendsFor(t, ["a", "b"]);
  const held = [];
  b.onProbe = (req, res) => held.push(res); // b's first probe waits for the test
  const lb = await setup(t, [a.url, b.url], { path: "/health", timeout: 5 });
  const overview = async () => (await (await lb.admin("/admin/services")).json()).services.find((s) => s.hostname === "app.test");
  // The first request wakes the object, which probes at once; that round waits on b's probe,
  // so there is no result yet for either backend.
  await waitFor(async () => (await status(lb)) && held.length > 0, { what: "b's first probe" });
  let st = await status(lb);
  assert.deepEqual(st.backends.map((x) => [x.health, x.healthy]), [["unknown", true], ["unknown", true]]);
  assert.equal(backendStatus(st, b.url).last_probe_ms, null);
  assert.equal(st.health, "unknown");
  assert.equal((await overview()).health, "unknown");
  const served = new Set();
  for (let i = 0; i < 6; i++) served.add((await (await lb.fetch("app.test", `/u${i}`)).json()).backend);
  assert.ok(served.has("b"), "a backend not probed yet takes traffic");
  b.onProbe = null;
  for (const res of held) res.writeHead(200).end("ok");
  st = await waitFor(async () => {
    const s = await status(lb);
    return s.health === "healthy" ? s : null;
  }, { what: "b's probe result" });
  assert.equal(backendStatus(st, b.url).health, "healthy");
  // Draining a healthy backend: it takes no new traffic, so it is not one the service misses.
  const res = await lb.admin("/admin/services/app.test/backends", {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ url: b.url, state: "draining" }),
  });
  assert.equal(res.status, 200, await res.text());
  st = await status(lb);
  assert.equal(backendStatus(st, b.url).state, "draining");
  assert.equal(st.health, "healthy");
  assert.equal((await overview()).health, "healthy");
});
