// End to end: the built Worker in workerd routes each hostname through its Durable Object to real loopback backends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
import { API_SECRET } from "../support/runtime.mjs";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";

const quiet = { activeHealthChecks: { interval: 60, timeout: 2 } };

/**
 * One test's own runtime balancing three hostnames: svc-a.test over b1-b3, svc-b.test over c1-c2 and
 * based.test over a backend with a base path. Everything stops when the test ends.
 */
async function setup(t) {
  const a = await backendsFor(t, 3);
  const b = await backendsFor(t, ["c1", "c2"]);
  const [based] = await backendsFor(t, ["based"]);
  const lb = await balancerFor(t, {
    defaultBackends: {
      ...quiet,
      services: [
        // Per request: these tests count exactly what the object's one round robin hands out
        // (90 concurrent requests 30/30/30, 40 in a row 20/20; a lease starts at a random offset),
        // and based.test's log rows and metrics agree at any moment.
        { hostname: "svc-a.test", backends: a.map((x) => x.url), decisions: { mode: "per_request" } },
        { hostname: "svc-b.test", backends: b.map((x) => x.url), decisions: { mode: "per_request" } },
        // based.test samples every success into the log (the default keeps 1%), so the log test sees them all.
        { hostname: "based.test", backends: [`${based.url}/base/`], decisions: { mode: "per_request" }, logging: { success_sample_rate: 1, max_success_rows_per_minute: 1000 } },
      ],
    },
    // The reserved prefix is off on balanced hostnames unless listed.
    bindings: { ADMIN_PREFIX_HOSTNAMES: "svc-a.test,svc-b.test" },
  });
  return { lb, a, b, based };
}

async function hit(lb, host, n, path = "/") {
  const counts = {};
  for (let i = 0; i < n; i++) {
    const res = await lb.fetch(host, path);
    assert.equal(res.status, 200);
    const body = await res.json();
    counts[body.backend] = (counts[body.backend] ?? 0) + 1;
  }
  return counts;
}

test("round robin spreads evenly over three backends", async (t) => {
  const { lb } = await setup(t);
  const counts = await hit(lb, "svc-a.test", 300);
  assert.deepEqual(Object.keys(counts).sort(), ["b1", "b2", "b3"]);
  for (const n of Object.values(counts)) assert.ok(n >= 95 && n <= 105, `uneven spread ${JSON.stringify(counts)}`);
});

test("concurrent requests are still spread evenly", async (t) => {
  const { lb } = await setup(t);
  const results = await Promise.all(Array.from({ length: 90 }, () => lb.fetch("svc-a.test", "/c").then((r) => r.json())));
  const counts = {};
  for (const r of results) counts[r.backend] = (counts[r.backend] ?? 0) + 1;
  assert.deepEqual(Object.values(counts).sort(), [30, 30, 30], JSON.stringify(counts));
});

test("two hostnames are routed independently", async (t) => {
  const { lb, a } = await setup(t);
  const before = a.map((x) => x.requests().length);
  const counts = await hit(lb, "svc-b.test", 40);
  assert.deepEqual(counts, { c1: 20, c2: 20 });
  assert.deepEqual(a.map((x) => x.requests().length), before, "svc-b traffic reached svc-a backends");
});

test("method, path, query, headers and body pass through; X-Forwarded-* added; hop-by-hop dropped", async (t) => {
  const { lb, b } = await setup(t);
  const res = await lb.fetch("svc-b.test", "/echo/p%20q?x=1&y=two", {
    method: "PUT",
    headers: { "x-custom": "v1", "content-type": "text/plain", "x-forwarded-for": "9.9.9.9", "keep-alive": "timeout=5", te: "trailers" },
    body: "hello body",
  });
  assert.equal(res.status, 200);
  const echo = await res.json();
  assert.equal(echo.method, "PUT");
  assert.equal(echo.url, "/echo/p%20q?x=1&y=two");
  assert.equal(echo.headers["x-custom"], "v1");
  assert.equal(echo.bodyLength, "hello body".length);
  assert.equal(echo.headers["x-forwarded-host"], "svc-b.test");
  assert.equal(echo.headers["x-forwarded-proto"], "http");
  assert.equal(echo.headers["x-forwarded-for"], "9.9.9.9, 127.0.0.1");
  assert.equal(echo.headers["keep-alive"], undefined);
  assert.equal(echo.headers["te"], undefined);
  assert.equal(echo.headers["host"], `127.0.0.1:${b[0].port === Number(echo.headers.host?.split(":")[1]) ? b[0].port : b[1].port}`);
});

test("a backend base path is prefixed to the client's path", async (t) => {
  const { lb } = await setup(t);
  const echo = await (await lb.fetch("based.test", "/x/y?z=1")).json();
  assert.equal(echo.url, "/base/x/y?z=1");
});

test("status, headers and several Set-Cookie headers come back unchanged", async (t) => {
  const { lb, b } = await setup(t);
  for (const x of b)
    x.handler = (req, res) => {
      res.writeHead(201, [
        ["x-backend", x.name],
        ["set-cookie", "a=1; Path=/"],
        ["set-cookie", "b=2; HttpOnly"],
        ["content-type", "text/plain"],
      ]);
      res.end("created");
    };
  const res = await lb.fetch("svc-b.test", "/cookies", { method: "POST", body: "x" });
  assert.equal(res.status, 201);
  assert.deepEqual(res.headers.getSetCookie(), ["a=1; Path=/", "b=2; HttpOnly"]);
  assert.equal(await res.text(), "created");
});

test("redirects from a backend are passed to the client, not followed", async (t) => {
  const { lb, b } = await setup(t);
  for (const x of b) x.handler = (req, res) => res.writeHead(302, { location: "/elsewhere" }).end();
  const res = await lb.fetch("svc-b.test", "/old", { redirect: "manual" });
  assert.equal(res.status, 302);
  assert.equal(res.headers.get("location"), "/elsewhere");
});

test("a several-MB body streams intact both ways", async (t) => {
  const { lb, b } = await setup(t);
  const size = 6 * 1024 * 1024;
  const payload = Buffer.alloc(size);
  for (let i = 0; i < size; i++) payload[i] = (i * 31 + 7) & 0xff;
  const digest = createHash("sha256").update(payload).digest("hex");
  for (const x of b)
    x.handler = (req, res, body) => {
      res.writeHead(200, { "x-sha": createHash("sha256").update(body).digest("hex") });
      res.end(body);
    };
  const res = await lb.fetch("svc-b.test", "/upload", { method: "POST", body: payload });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-sha"), digest, "backend received a different body");
  const back = Buffer.from(await res.arrayBuffer());
  assert.equal(back.length, size);
  assert.equal(createHash("sha256").update(back).digest("hex"), digest);
});

test("a response streams: the first chunk arrives before the backend has finished", async (t) => {
  const { lb, b } = await setup(t);
  for (const x of b)
    x.handler = (req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("first;");
      setTimeout(() => res.end("second"), 800);
    };
  // Real HTTP to the runtime's socket (Miniflare's dispatchFetch buffers bodies).
  const u = new URL(lb.url);
  const started = Date.now();
  const chunks = await new Promise((resolve, reject) => {
    const got = [];
    http
      .get({ host: u.hostname, port: u.port, path: "/stream", headers: { host: "svc-b.test" } }, (res) => {
        res.on("data", (c) => got.push({ at: Date.now() - started, text: c.toString() }));
        res.on("end", () => resolve(got));
      })
      .on("error", reject);
  });
  assert.equal(chunks.map((c) => c.text).join(""), "first;second");
  assert.equal(chunks[0].text, "first;");
  assert.ok(chunks[0].at < 600, `first chunk took ${chunks[0].at} ms: the response was buffered`);
});

test("an unknown hostname gets a clear 421 naming it", async (t) => {
  const { lb } = await setup(t);
  const res = await lb.fetch("nobody.test", "/");
  assert.equal(res.status, 421);
  const body = await res.json();
  assert.match(body.error, /nobody\.test/);
});

test("admin API: 401 without or with a wrong token, 200 with the right one", async (t) => {
  const { lb, a } = await setup(t);
  let res = await lb.mf.dispatchFetch("http://localhost/admin/services");
  assert.equal(res.status, 401);
  assert.ok(res.headers.get("www-authenticate"));
  assert.match((await res.json()).error, /unauthorized/);
  res = await lb.mf.dispatchFetch("http://localhost/admin/services", { headers: { authorization: "Bearer wrong" } });
  assert.equal(res.status, 401);
  await res.arrayBuffer();
  res = await lb.admin("/admin/services");
  assert.equal(res.status, 200);
  const list = await res.json();
  assert.deepEqual(list.services.map((s) => s.hostname).sort(), ["based.test", "svc-a.test", "svc-b.test"]);
  res = await lb.admin("/admin/services/svc-a.test");
  assert.equal(res.status, 200);
  const svc = await res.json();
  assert.deepEqual(svc.backends.map((x) => x.url), a.map((x) => x.url));
  assert.equal(svc.config.hostname, "svc-a.test");
  // A hostname without a service: 404 whose error names it (the object's JSON, not re-wrapped).
  res = await lb.admin("/admin/services/nobody.test");
  assert.equal(res.status, 404);
  const missing = await res.json();
  assert.match(missing.error, /^FlowBalance has no service configured for hostname "nobody\.test"$/);
});

test("the reserved admin prefix works on a balanced hostname and never reaches a backend", async (t) => {
  const { lb, b } = await setup(t);
  const before = b.map((x) => x.requests().length);
  let res = await lb.fetch("svc-b.test", "/__lb_admin__/admin/services");
  assert.equal(res.status, 401);
  await res.arrayBuffer();
  res = await lb.fetch("svc-b.test", "/__lb_admin__/admin/services/svc-b.test", { headers: { authorization: `Bearer ${API_SECRET}` } });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).hostname, "svc-b.test");
  assert.deepEqual(b.map((x) => x.requests().length), before);
  // Other paths of a balanced hostname are not shadowed by the admin surface.
  const echo = await (await lb.fetch("svc-b.test", "/admin/services")).json();
  assert.equal(echo.url, "/admin/services");
});

test("admin API refuses to run open when API_SECRET is unset; invalid config is a clear 503 for its hostname only", async (t) => {
  const [c1] = await backendsFor(t, ["c1"]);
  const bad = await balancerFor(t, {
    defaultBackends: { services: [{ hostname: "ok.test", backends: [c1.url] }, { hostname: "bad.test", backends: ["ftp://x"] }] },
    bindings: { API_SECRET: "" },
  });
  let res = await bad.mf.dispatchFetch("http://localhost/admin/services", { headers: { authorization: "Bearer anything" } });
  assert.equal(res.status, 503);
  assert.match((await res.json()).error, /API_SECRET/);
  res = await bad.fetch("bad.test", "/");
  assert.equal(res.status, 503);
  const body = await res.json();
  assert.match(body.error, /services\[1\]\.backends\[0\]/);
  assert.match(body.error, /ftp:\/\/x/);
  // One service's mistake does not take the other hostname down.
  res = await bad.fetch("ok.test", "/");
  assert.equal(res.status, 200);
  assert.equal((await res.json()).backend, "c1");
});

test("the dashboard is served on the admin hostname with a strict CSP, and needs the API secret for data", async (t) => {
  const { lb, a } = await setup(t);
  const page = await lb.mf.dispatchFetch("http://localhost/");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /text\/html/);
  assert.match(page.headers.get("content-security-policy"), /default-src 'self'/);
  const html = await page.text();
  // Relative asset paths: the same page works at / and at /__lb_admin__/.
  assert.match(html, /<script type="module" src="assets\/app\.js">/);
  const js = await lb.mf.dispatchFetch("http://localhost/assets/api.js");
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type"), /javascript/);
  assert.match(await js.text(), /\/admin\/services/);
  // On a balanced hostname the console lives under /__lb_admin__/; none of it reaches a backend.
  const seen = a.map((x) => x.requests().length);
  const bare = await lb.fetch("svc-a.test", "/__lb_admin__", { redirect: "manual" });
  assert.equal(bare.status, 301);
  assert.equal(bare.headers.get("location"), "/__lb_admin__/");
  for (const [p, status] of [["/__lb_admin__/", 200], ["/__lb_admin__/assets/app.css", 200], ["/__lb_admin__/assets/nope.js", 404]]) {
    const res = await lb.fetch("svc-a.test", p);
    assert.equal(res.status, status, p);
    await res.arrayBuffer();
  }
  assert.deepEqual(a.map((x) => x.requests().length), seen, "console paths reached a backend");
  // The page itself holds no data: the API behind it still refuses requests without credentials.
  const data = await lb.mf.dispatchFetch("http://localhost/admin/services");
  assert.equal(data.status, 401);
  await data.arrayBuffer();
});

test("every request is counted in the rollups and sampled successes reach the log; logs and metrics are served per hostname", async (t) => {
  const { lb, based } = await setup(t);
  const sent = [];
  for (let i = 0; i < 30; i++) {
    sent.push(`/log/${i}`);
    await (await lb.fetch("based.test", `/log/${i}`)).arrayBuffer();
  }
  const logged = async () => (await (await lb.admin("/admin/services/based.test/logs?limit=1000")).json()).requests;
  // Samples ride to the hostname's object with the next report (within a second), and reading
  // the log asks the object to write what it holds.
  const rows = await waitFor(async () => {
    const r = await logged();
    return r.length >= 30 ? r : null;
  }, { timeoutMs: 15000, stepMs: 200, what: "the 30 sampled requests in the log" });
  assert.deepEqual(
    rows.map((r) => r.path),
    [...sent].reverse(),
    "every request is logged exactly once, newest first",
  );
  assert.deepEqual(
    { method: rows[0].method, status: rows[0].status, backend: rows[0].backend, attempts: rows[0].attempts, kept: rows[0].kept },
    { method: "GET", status: 200, backend: `${based.url}/base`, attempts: 1, kept: "sampled" },
  );
  const m = await waitFor(async () => {
    const r = await (await lb.admin("/admin/services/based.test/metrics?window=600")).json();
    return r.backends.length === 1 && r.backends[0].requests === 30 ? r : null;
  }, { what: "30 requests counted in the rollups" });
  assert.equal(m.backends[0].errors, 0);
  assert.equal(m.total.requests, 30);
  const bad = await lb.admin("/admin/services/based.test/logs?limit=0");
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /limit/);
});
