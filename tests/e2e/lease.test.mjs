// End to end: lease mode. The Worker decides locally under a lease from the hostname's Durable
// Object; spread, weights, stickiness, geo, failover, config changes, rollback and breaker trials
// behave as in per-request mode, and what lease mode cannot do is refused. Auto mode (the
// default) leases unless the service needs every request at the object.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { API_SECRET } from "../support/runtime.mjs";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor, quiet, serve } from "../support/scoped.mjs";
import { adminCall as admin } from "../support/admin.mjs";
import { backendOf, readResponse as read } from "../support/requests.mjs";
import { geoService, reachedFrom } from "../support/geo.mjs";
import { changeUnderLoad, sentAt } from "../support/load.mjs";

const lease = (ms = 1000) => ({ decisions: { mode: "lease", lease_ms: ms } });

async function decisions(r, host) {
  const st = await admin(r, `/admin/services/${host}`);
  assert.equal(st.status, 200, st.text);
  return st.body.decisions;
}

const tally = (xs) => xs.reduce((c, x) => ({ ...c, [x]: (c[x] ?? 0) + 1 }), {});

test("lease mode: even spread and 3:1 weights decided in the Worker, with few calls to the object", async (t) => {
  const bs = await backendsFor(t, ["e1", "e2", "e3"]);
  const [heavy, light] = await backendsFor(t, ["w-heavy", "w-light"]);
  const lb = await serve(t, [
    { hostname: "even.test", backends: bs.map((b) => b.url), ...lease() },
    { hostname: "weights.test", backends: [{ url: heavy.url, weight: 3 }, light.url], ...lease() },
  ]);
  const even = [];
  for (let i = 0; i < 300; i++) even.push(await backendOf(lb, "even.test", `/e${i}`));
  const c = tally(even);
  for (const b of ["e1", "e2", "e3"]) assert.ok(Math.abs((c[b] ?? 0) - 100) <= 2, `uneven spread: ${JSON.stringify(c)}`);
  // The object was asked for the first decision and for a few refreshes, not per request.
  const d = await decisions(lb, "even.test");
  assert.equal(d.mode, "lease");
  assert.equal(d.lease_ms, 1000);
  assert.ok(d.lease_grants >= 1, JSON.stringify(d));
  assert.ok(d.leases_outstanding >= 1, `no lease outstanding right after traffic: ${JSON.stringify(d)}`);
  assert.ok(d.lease_grants + d.lease_refreshes < 30, `too many lease calls for 300 requests: ${JSON.stringify(d)}`);

  const picks = [];
  for (let i = 0; i < 400; i++) picks.push(await backendOf(lb, "weights.test", `/w${i}`));
  const h = picks.filter((p) => p === "w-heavy").length;
  assert.ok(Math.abs(h - 300) <= 3, `heavy got ${h} of 400`);
  let run = 0;
  let maxRun = 0;
  for (const p of picks) {
    run = p === "w-heavy" ? run + 1 : 0;
    maxRun = Math.max(maxRun, run);
  }
  assert.ok(maxRun <= 4, `heavy picked ${maxRun} times in a row: 3:1 must interleave`);

  // The object's counters still see every request: successes ride on the refreshes (one more
  // request makes the isolate refresh, carrying the last batch).
  await waitFor(
    async () => {
      await backendOf(lb, "even.test", "/tick");
      const m = await admin(lb, "/admin/metrics");
      const total = [...m.text.matchAll(/^flowbalance_requests_total\{([^}]*)\} (\d+)/gm)]
        .filter(([, labels]) => labels.includes('hostname="even.test"'))
        .reduce((s, [, , n]) => s + Number(n), 0);
      return total >= 300;
    },
    { stepMs: 300, what: "all 300 requests counted by the object" },
  );
  const prom = (await admin(lb, "/admin/metrics")).text;
  const grants = /^flowbalance_lease_events_total\{hostname="even.test",event="grant"\} (\d+)$/m.exec(prom);
  assert.ok(grants && Number(grants[1]) >= 1, `no lease grants in the metrics:\n${prom.slice(0, 400)}`);
  assert.match(prom, /^flowbalance_leases_outstanding\{hostname="even.test"\} \d+$/m);
});

test("lease mode: sticky sessions pin locally, and re-pin once when the pinned backend dies", async (t) => {
  const ss = await backendsFor(t, ["s1", "s2", "s3"]);
  const lb = await serve(t, [
    { hostname: "sticky.test", backends: ss.map((b) => b.url), load_balancer: { session_affinity: { type: "cookie" } }, ...lease() },
  ]);
  let res = await read(await lb.fetch("sticky.test", "/first"));
  const setCookie = res.headers.getSetCookie().find((c) => c.startsWith("lb_session="));
  assert.ok(setCookie, "no affinity cookie");
  let cookie = setCookie.split(";")[0].slice("lb_session=".length);
  const first = res.body.backend;
  for (let i = 0; i < 30; i++) {
    res = await read(await lb.fetch("sticky.test", `/p${i}`, { headers: { cookie: `lb_session=${cookie}` } }));
    assert.equal(res.body.backend, first, `request ${i} left its pin`);
    assert.equal(res.headers.getSetCookie().length, 0, "a pinned client got a new cookie");
  }
  await ss.find((b) => b.name === first).kill();
  const after = [];
  let repins = 0;
  for (let i = 0; i < 12; i++) {
    res = await read(await lb.fetch("sticky.test", `/a${i}`, { headers: { cookie: `lb_session=${cookie}` } }));
    assert.equal(res.status, 200, res.text);
    after.push(res.body.backend);
    const sc = res.headers.getSetCookie().find((c) => c.startsWith("lb_session="));
    if (sc) {
      repins++;
      cookie = sc.split(";")[0].slice("lb_session=".length);
    }
  }
  assert.ok(!after.includes(first), `the dead backend served: ${after}`);
  assert.equal(repins, 1, `re-pinned ${repins} times: ${after}`);
  assert.equal(new Set(after).size, 1, `the re-pinned client wandered: ${after}`);
});

test("lease mode: geo pools are chosen in the Worker from the request's country and continent", async (t) => {
  const eu = await backendsFor(t, ["eu1", "eu2"]);
  const us = await backendsFor(t, ["us1"]);
  const lb = await balancerFor(t, {
    defaultBackends: { ...geoService(eu, us), ...quiet, ...lease() },
  });
  const from = (cf, n = 8) => reachedFrom(lb, cf, n);
  assert.deepEqual(await from({ country: "DE", continent: "EU" }), ["eu1", "eu2"]);
  assert.deepEqual(await from({ country: "FR", continent: "EU" }), ["eu1", "eu2"]);
  assert.deepEqual(await from({ country: "US", continent: "NA" }), ["us1"]);
  assert.deepEqual(await from(null), ["us1"]);
  assert.ok((await decisions(lb, "geo.test")).lease_grants >= 1);
});

test("lease mode: a backend killed under a stream of GETs costs zero failed responses and leaves the lease", async (t) => {
  const bs = await backendsFor(t, 3);
  const lb = await balancerFor(t, {
    defaultBackends: {
      hostname: "kill.test",
      backends: bs.map((b) => b.url),
      activeHealthChecks: { interval: 0.5, timeout: 0.3, consecutive_up: 2, consecutive_down: 2 },
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 1000 } },
      connection_error_handling: { connection_timeout_ms: 500, immediate_failover: true, max_connection_retries: 2 },
      ...lease(500),
    },
  });
  const failures = [];
  let sent = 0;
  let killedAt = 0;
  const worker = async () => {
    while (sent < 600) {
      const n = ++sent;
      if (n === 150) {
        await bs[1].kill();
        killedAt = Date.now();
      }
      const res = await read(await lb.fetch("kill.test", `/r${n}`));
      if (res.status !== 200) failures.push(`${n}: ${res.status} ${res.text}`);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  assert.deepEqual(failures, [], "clients saw failures");
  const st = await waitFor(
    async () => {
      const s = (await admin(lb, "/admin/services/kill.test")).body;
      const b = s.backends.find((x) => x.url === bs[1].url);
      return !b.healthy || b.breaker !== "closed" ? s : null;
    },
    { what: "the dead backend to be marked down" },
  );
  assert.equal(st.decisions.mode, "lease");
  // The attempts that reached the dead port: each isolate ejects it after its first failure, so
  // only a handful of requests ever tried it before the object's view excluded it.
  assert.ok(Date.now() - killedAt < 5000);
});

test("lease mode: a config change under load is fenced, so nothing decided after the 2xx reaches the removed backend", async (t) => {
  const [a, b, c] = await backendsFor(t, ["la", "lb", "lc"]);
  const lb = await serve(t, [{ hostname: "load.test", backends: [a, b, c].map((x) => x.url), ...lease(1000) }]);
  const { res, changedAt, writeMs, failures } = await changeUnderLoad(
    lb,
    "load.test",
    { backends: [a.url, b.url], ...lease(1000) },
    { at: 200 },
  );
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(failures, [], "clients saw failures");
  const all = [a, b, c].flatMap((x) => x.requests());
  assert.ok(all.filter((r) => sentAt(r) > changedAt).length >= 30, "too few requests after the change to test anything");
  assert.ok(c.requests().length > 0, "C never got traffic before the change");
  const late = c.requests().filter((r) => sentAt(r) > changedAt);
  assert.deepEqual(late.map((r) => `${r.url} received ${r.at - changedAt} ms after the 2xx`), [], "C got requests sent after the change");
  // The write waited for the old leases, at most about one lease.
  assert.ok(writeMs < 1000 + 1500, `the admin write took ${writeMs} ms`);
  const d = await decisions(lb, "load.test");
  assert.ok(d.lease_early_returns >= 1, `the old lease was not handed back early: ${JSON.stringify(d)}`);
});

test("lease mode: rollback takes effect for every request decided after its 2xx", async (t) => {
  const [h1, h2] = await backendsFor(t, ["hist1", "hist2"]);
  const lb = await serve(t, [{ hostname: "hist.test", backends: [h2.url], ...lease(2000) }]);
  const cfgPath = "/admin/services/hist.test/config";
  assert.equal(await backendOf(lb, "hist.test", "/0"), "hist2");
  // Version 1 (hist1), then version 2 (hist2); each answered only once the old leases are gone.
  let res = await admin(lb, cfgPath, { method: "POST", body: { backends: [h1.url], ...lease(2000) } });
  assert.equal(res.status, 200, res.text);
  assert.equal(await backendOf(lb, "hist.test", "/1"), "hist1");
  res = await admin(lb, cfgPath, { method: "POST", body: { backends: [h2.url], ...lease(2000) } });
  assert.equal(res.status, 200, res.text);
  for (let i = 0; i < 5; i++) assert.equal(await backendOf(lb, "hist.test", `/a${i}`), "hist2");
  res = await admin(lb, `${cfgPath}/rollback`, { method: "POST", body: { version: 1 } });
  assert.equal(res.status, 200, res.text);
  for (let i = 0; i < 5; i++) assert.equal(await backendOf(lb, "hist.test", `/b${i}`), "hist1");
  // Back to per-request mode: also at once.
  res = await admin(lb, cfgPath, { method: "POST", body: { backends: [h2.url], decisions: { mode: "per_request" } } });
  assert.equal(res.status, 200, res.text);
  assert.equal(await backendOf(lb, "hist.test", "/c"), "hist2");
  assert.equal((await decisions(lb, "hist.test")).mode, "per_request");
});

test("lease mode: an open breaker is never leased, and its half-open trial is still single", async (t) => {
  const bs = await backendsFor(t, 2);
  const lb = await balancerFor(t, {
    defaultBackends: {
      hostname: "trial.test",
      backends: bs.map((b) => b.url),
      activeHealthChecks: { enabled: false },
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 1500 } },
      connection_error_handling: { connection_timeout_ms: 500, immediate_failover: true, max_connection_retries: 2 },
      retries: 1,
      ...lease(200),
    },
  });
  const status = async () => (await admin(lb, "/admin/services/trial.test")).body.backends.find((x) => x.url === bs[0].url);
  bs[0].mode = "503";
  // Each isolate ejects a failing backend for the rest of its lease, so the three failures that
  // open the breaker take a few leases.
  const opened = await waitFor(
    async () => {
      assert.equal((await lb.fetch("trial.test", "/a")).status, 200);
      const b = await status();
      return b.breaker === "open" ? b : null;
    },
    { stepMs: 20, what: "the breaker to open" },
  );
  const seen = bs[0].requests().length;
  assert.equal(seen, 3, "the breaker opens after exactly 3 failures");
  for (let i = 0; i < 20; i++) assert.equal((await lb.fetch("trial.test", `/b${i}`)).status, 200);
  assert.equal(bs[0].requests().length, seen, "an open breaker's backend got traffic from a lease");
  await waitFor(() => Date.now() > opened.breaker_open_until_ms + 50, { timeoutMs: 5000, stepMs: 20, what: "the recovery time to pass" });
  const results = await Promise.all(Array.from({ length: 16 }, (_, i) => lb.fetch("trial.test", `/c${i}`).then((r) => r.status)));
  assert.ok(results.every((s) => s === 200), JSON.stringify(results));
  // More requests over a few leases: still exactly one trial.
  for (let i = 0; i < 20; i++) assert.equal((await lb.fetch("trial.test", `/d${i}`)).status, 200);
  assert.equal(bs[0].requests().length, seen + 1, "half-open must admit exactly one trial");
  // Recovered: the next trial closes the breaker and leases include the backend again.
  bs[0].mode = "ok";
  await waitFor(
    async () => {
      await (await lb.fetch("trial.test", "/e")).arrayBuffer();
      return (await status()).breaker === "closed";
    },
    { timeoutMs: 8000, stepMs: 50, what: "the breaker to close" },
  );
  const got = [];
  for (let i = 0; i < 20; i++) got.push(await backendOf(lb, "trial.test", `/f${i}`));
  assert.ok(got.includes("b1") && got.includes("b2"), `traffic did not return: ${got}`);
});

test("lease mode refuses rate_limit and in-flight steering with a 400 naming both fields, and stores nothing", async (t) => {
  const [x] = await backendsFor(t, ["x1"]);
  const lb = await serve(t, [{ hostname: "refuse.test", backends: [x.url] }]);
  const cfgPath = "/admin/services/refuse.test/config";
  const before = await admin(lb, cfgPath);
  let res = await admin(lb, cfgPath, {
    method: "POST",
    body: { backends: [x.url], rate_limit: { requests: 10, window: 1 }, ...lease() },
  });
  assert.equal(res.status, 400, res.text);
  const e = res.body.errors.find((er) => er.path === "rate_limit");
  assert.ok(e, res.text);
  assert.match(e.message, /decisions\.mode "lease"/);
  res = await admin(lb, cfgPath, {
    method: "POST",
    body: { backends: [x.url], load_balancer: { endpoint_steering: "least_outstanding_requests" }, ...lease() },
  });
  assert.equal(res.status, 400, res.text);
  assert.ok(res.body.errors.some((er) => er.path === "load_balancer.endpoint_steering" && /decisions\.mode "lease"/.test(er.message)), res.text);
  res = await admin(lb, cfgPath, { method: "POST", body: { backends: [x.url], decisions: { mode: "lease", lease_ms: 20000 } } });
  assert.equal(res.status, 400, res.text);
  assert.ok(res.body.errors.some((er) => er.path === "decisions.lease_ms"), res.text);
  const after = await admin(lb, cfgPath);
  assert.equal(after.body.version, before.body.version, "a refused config changed the version");
  const d = await decisions(lb, "refuse.test");
  assert.deepEqual([d.mode, d.effective_mode], ["auto", "lease"]);
});

test("auto mode (the default): no decisions section runs in lease mode; rate_limit or in-flight steering per request, and each says why", async (t) => {
  const [x] = await backendsFor(t, ["x1"]);
  const lb = await serve(t, [
    { hostname: "plain.test", backends: [x.url] },
    { hostname: "limited.test", backends: [x.url], rate_limit: { requests: 1000, window: 60 } },
    { hostname: "latency.test", backends: [x.url], load_balancer: { endpoint_steering: "latency" } },
  ]);
  for (const host of ["plain.test", "limited.test", "latency.test"]) {
    for (let i = 0; i < 20; i++) assert.equal(await backendOf(lb, host, `/${i}`), "x1");
  }
  const plain = await decisions(lb, "plain.test");
  assert.deepEqual([plain.mode, plain.effective_mode, plain.why], ["auto", "lease", "no feature needs every request at the object"]);
  assert.equal(plain.lease_ms, 1000);
  assert.ok(plain.lease_grants >= 1 && plain.lease_grants + plain.lease_refreshes < 10, `20 requests under leases: ${JSON.stringify(plain)}`);
  const limited = await decisions(lb, "limited.test");
  assert.deepEqual([limited.mode, limited.effective_mode, limited.why], ["auto", "per_request", "rate_limit needs every request at the object"]);
  assert.equal(limited.lease_grants, 0, JSON.stringify(limited));
  const latency = await decisions(lb, "latency.test");
  assert.deepEqual([latency.mode, latency.effective_mode, latency.why], ["auto", "per_request", 'endpoint_steering "latency" needs every request at the object']);
  assert.equal(latency.lease_grants, 0, JSON.stringify(latency));
  // A config change that adds rate_limit moves the service to per-request mode at once.
  const res = await admin(lb, "/admin/services/plain.test/config", { method: "POST", body: { backends: [x.url], rate_limit: { requests: 1000, window: 60 } } });
  assert.equal(res.status, 200, res.text);
  const after = await decisions(lb, "plain.test");
  assert.deepEqual([after.effective_mode, after.why], ["per_request", "rate_limit needs every request at the object"]);
  // Once the old leases are gone every request asks the object, so each one counts toward the limit.
  const grants = after.lease_grants + after.lease_refreshes;
  for (let i = 0; i < 10; i++) assert.equal(await backendOf(lb, "plain.test", `/r${i}`), "x1");
  const later = await decisions(lb, "plain.test");
  assert.equal(later.lease_grants + later.lease_refreshes, grants, `leases granted in per-request mode: ${JSON.stringify(later)}`);
  assert.equal(later.leases_outstanding, 0, JSON.stringify(later));
});

test("lease mode: a live tail opened while a lease is held sees every request decided after it connects", async (t) => {
  const bs = await backendsFor(t, ["t1", "t2"]);
  const lb = await serve(t, [{ hostname: "tail.test", backends: bs.map((b) => b.url), ...lease(1500) }]);
  // The isolate holds a lease granted while nobody listened.
  for (let i = 0; i < 5; i++) await backendOf(lb, "tail.test", `/before${i}`);
  const u = new URL(lb.url);
  const lines = [];
  const ws = new WebSocket(`ws://${u.host}/admin/services/tail.test/tail`, { headers: { authorization: `Bearer ${API_SECRET}` } });
  t.after(() => ws.close());
  ws.on("message", (data) => {
    const line = JSON.parse(String(data));
    lines.push(line);
    if (line.seq > 0) ws.send(String(line.seq));
  });
  ws.on("error", () => {});
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("unexpected-response", (_q, res) => reject(new Error(`tail refused: ${res.statusCode}`)));
  });
  for (let i = 0; i < 6; i++) await backendOf(lb, "tail.test", `/after${i}`);
  await waitFor(() => lines.filter((l) => l.type === "request").length >= 6, { what: "six request lines" });
  const paths = lines.filter((l) => l.type === "request").map((l) => l.path);
  for (let i = 0; i < 6; i++) assert.ok(paths.includes(`/after${i}`), `no line for /after${i}: ${paths}`);
  const line = lines.find((l) => l.path === "/after0");
  assert.equal(line.status, 200);
  assert.match(line.why, /round robin/);
});
