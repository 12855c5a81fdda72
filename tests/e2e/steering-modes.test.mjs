// End to end: endpoint steering modes (least outstanding requests, latency, client hash) with one slow
// backend under concurrent load, and pool steering (failover order, minimum_healthy, pool health).
// Each test starts its own backends and runtime, which stop when it ends.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";

// Probes far apart so they never interfere (a test that needs probes sets its own).
const quiet = { activeHealthChecks: { interval: 600, timeout: 2 } };
const SLOW_MS = 2000;
const CLIENTS = 10;

/**
 * `clients` closed-loop clients send requests to `host` for `ms`; counts the requests answered
 * within the window per backend. Requests still in flight at the end are awaited but not counted.
 */
async function load(lb, host, ms, { clients = CLIENTS } = {}) {
  const end = Date.now() + ms;
  const perBackend = {};
  let done = 0;
  let errors = 0;
  const client = async (c) => {
    for (let i = 0; Date.now() < end; i++) {
      const res = await lb.fetch(host, `/c${c}/${i}`);
      const text = await res.text();
      if (Date.now() > end) break;
      if (res.status !== 200) {
        errors++;
        continue;
      }
      const b = JSON.parse(text).backend;
      perBackend[b] = (perBackend[b] ?? 0) + 1;
      done++;
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  return { perBackend, done, errors, rps: (done * 1000) / ms };
}

async function status(lb, host) {
  return (await lb.admin(`/admin/services/${host}`)).json();
}

/** All-fast throughput, then the same service with one backend answering in 2 s. */
async function slowBackendRun(t, mode) {
  const [f1, f2, slow] = await backendsFor(t, ["fast-1", "fast-2", "slow"]);
  const lb = await balancerFor(t, {
    defaultBackends: {
      ...quiet,
      services: [
        { hostname: "base.test", backends: [f1.url, f2.url, slow.url], load_balancer: { endpoint_steering: mode } },
        { hostname: "mode.test", backends: [f1.url, f2.url, slow.url], load_balancer: { endpoint_steering: mode } },
      ],
    },
  });
  await load(lb, "base.test", 500); // warm-up: the first requests of a runtime are slower
  const base = await load(lb, "base.test", 3000);
  slow.mode = `slow:${SLOW_MS}`;
  const run = await load(lb, "mode.test", 5000);
  const share = (run.perBackend.slow ?? 0) / run.done;
  const ratio = run.rps / base.rps;
  t.diagnostic(
    `${mode}: all-fast ${base.rps.toFixed(0)} req/s; one slow backend ${run.rps.toFixed(0)} req/s (${ratio.toFixed(2)}x), slow share ${(share * 100).toFixed(1)}% ${JSON.stringify(run.perBackend)}`,
  );
  assert.equal(base.errors + run.errors, 0);
  assert.ok(base.done > 100, `baseline too small to compare: ${base.done}`);
  return { base, run, share, ratio, lb };
}

test("least_outstanding_requests: a 2 s backend gets far less than a third, throughput stays near all-fast", async (t) => {
  const { share, ratio, lb } = await slowBackendRun(t, "least_outstanding_requests");
  // Round robin gives the slow backend exactly a third and keeps ~5% of the throughput. Least
  // outstanding balances requests in flight, so the slow backend holds about a third of the
  // clients at a time: some throughput is lost by design, far less than with round robin.
  assert.ok(share < 0.1, `slow backend share ${share}`);
  assert.ok(ratio > 0.4, `throughput ${ratio}x of all-fast`);
  // Every request completed: the object's counts fall back to zero promptly.
  await waitFor(async () => (await status(lb, "mode.test")).backends.every((b) => b.outstanding === 0), {
    timeoutMs: SLOW_MS + 3000,
    what: "outstanding counts back to 0",
  });
  const st = await status(lb, "mode.test");
  assert.equal(st.endpoint_steering, "least_outstanding_requests");
});

test("latency: p2c over response time sends a 2 s backend almost nothing once its first answers arrive", async (t) => {
  const { share, ratio, lb } = await slowBackendRun(t, "latency");
  assert.ok(share < 0.1, `slow backend share ${share}`);
  assert.ok(ratio > 0.5, `throughput ${ratio}x of all-fast`);
  const st = await status(lb, "mode.test");
  const slow = st.backends[2]; // config order: fast-1, fast-2, slow
  assert.ok(slow.ewma_ms >= SLOW_MS * 0.9, `slow backend's EWMA ${slow.ewma_ms} ms`);
  assert.ok(st.backends[0].ewma_ms < 500, `fast backend's EWMA ${st.backends[0].ewma_ms} ms`);
});

test("hash: a client IP stays on its backend; removing a backend moves only its clients", async (t) => {
  const bs = await backendsFor(t, 3);
  const lb = await balancerFor(t, {
    defaultBackends: { ...quiet, hostname: "hash.test", backends: bs.map((b) => b.url), load_balancer: { endpoint_steering: "hash" } },
  });
  const ips = Array.from({ length: 24 }, (_, i) => `203.0.113.${i + 1}`);
  const backendFor = async (ip, n) => {
    const res = await lb.fetch("hash.test", `/h/${n}`, { headers: { "cf-connecting-ip": ip } });
    assert.equal(res.status, 200);
    return (await res.json()).backend;
  };
  const home = {};
  for (const ip of ips) {
    home[ip] = await backendFor(ip, 0);
    for (let n = 1; n < 3; n++) assert.equal(await backendFor(ip, n), home[ip], `${ip} moved`);
  }
  const used = new Set(Object.values(home));
  assert.ok(used.size >= 2, `24 clients on ${[...used]}`);
  const gone = bs.find((b) => b.name === Object.values(home)[0]);
  const res = await lb.admin(`/admin/services/hash.test/backends?url=${encodeURIComponent(gone.url)}`, { method: "DELETE" });
  assert.equal(res.status, 200, await res.text());
  for (const ip of ips) {
    const now = await backendFor(ip, 9);
    if (home[ip] === gone.name) assert.notEqual(now, gone.name);
    else assert.equal(now, home[ip], `${ip} of a kept backend moved`);
  }
});

test("failover steering: the first healthy pool takes all traffic; minimum_healthy moves it on", async (t) => {
  const [p1, p2, s1, l1] = await backendsFor(t, ["p1", "p2", "s1", "l1"]);
  const lb = await balancerFor(t, {
    defaultBackends: {
      hostname: "pools.test",
      activeHealthChecks: { interval: 0.3, timeout: 0.5, consecutive_down: 1, consecutive_up: 1, path: "/health" },
      load_balancer: { steering: "failover" },
      // Per request: traffic moves at the next request after a pool turns critical (a lease would
      // keep the old pools for up to lease_ms).
      decisions: { mode: "per_request" },
      pools: [
        { name: "primary", backends: [p1.url, p2.url], minimum_healthy: 2 },
        { name: "secondary", backends: [s1.url] },
        { name: "last", backends: [l1.url] },
      ],
    },
  });
  const served = async (n) => {
    const seen = new Set();
    for (let i = 0; i < n; i++) {
      const res = await lb.fetch("pools.test", `/f/${i}`);
      assert.equal(res.status, 200);
      seen.add((await res.json()).backend);
    }
    return [...seen].sort();
  };
  const poolHealth = async () => Object.fromEntries((await status(lb, "pools.test")).pools.map((p) => [p.name, p.health]));
  assert.deepEqual(await served(8), ["p1", "p2"]);
  assert.deepEqual(await poolHealth(), { primary: "healthy", secondary: "healthy", last: "healthy" });
  assert.equal((await status(lb, "pools.test")).steering, "failover");
  // One of primary's two down: below its minimum_healthy of 2, so all traffic moves to secondary
  // although p1 is still up.
  await p2.kill();
  await waitFor(async () => (await poolHealth()).primary === "critical", { what: "primary critical" });
  assert.deepEqual(await served(8), ["s1"]);
  // Secondary down too: the next pool in order.
  await s1.kill();
  await waitFor(async () => (await poolHealth()).secondary === "critical", { what: "secondary critical" });
  assert.deepEqual(await served(6), ["l1"]);
  // Primary whole again: it takes everything back.
  await p2.revive();
  await waitFor(async () => (await poolHealth()).primary === "healthy", { what: "primary healthy" });
  assert.deepEqual(await served(8), ["p1", "p2"]);
});
