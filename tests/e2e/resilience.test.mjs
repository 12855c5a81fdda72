// End to end: health checks, failover, retries and circuit breakers with real loopback backends that die, hang, reset and flap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startBalancer } from "../support/runtime.mjs";
import { waitFor } from "../support/backends.mjs";
import { backendStatus, serviceStatus as status } from "../support/admin.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";

// Fast thresholds so the tests run in seconds; the semantics are those of the defaults.
const fast = {
  activeHealthChecks: { interval: 0.5, timeout: 0.3, consecutive_up: 2, consecutive_down: 2 },
  passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 1000 } },
  connection_error_handling: { connection_timeout_ms: 500, immediate_failover: true, max_connection_retries: 2 },
  retries: 1,
};

/** A runtime balancing app.test over `backends` for test `t` (stopped when it ends). */
function setup(t, backends, extra = {}) {
  return balancerFor(t, { defaultBackends: { hostname: "app.test", backends: backends.map((b) => b.url), ...fast, ...extra } });
}

/** Waits until backend `b`'s status satisfies `pred`, and returns that status. */
function waitForBackend(lb, b, pred, what, timeoutMs = 5000) {
  return waitFor(
    async () => {
      const st = backendStatus(await status(lb), b);
      return pred(st) ? st : null;
    },
    { timeoutMs, what },
  );
}

test("a backend killed under a steady stream of GETs: zero failed responses, marked down within thresholds", async (t) => {
  const bs = await backendsFor(t, 3);
  const lb = await setup(t, bs);
  const failures = [];
  let sent = 0;
  let killedAt = 0;
  const worker = async () => {
    while (sent < 400) {
      sent++;
      if (sent === 120) {
        killedAt = Date.now();
        await bs[1].kill();
      }
      const res = await lb.fetch("app.test", `/r${sent}`);
      if (res.status !== 200) failures.push(`${res.status} ${await res.text()}`);
      else await res.arrayBuffer();
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  assert.deepEqual(failures, [], "clients saw failures");
  const st = await waitFor(async () => {
    const s = await status(lb);
    const b = backendStatus(s, bs[1]);
    return !b.healthy || b.breaker !== "closed" ? s : null;
  }, { what: "the dead backend to be marked down" });
  const dead = backendStatus(st, bs[1]);
  assert.ok(dead.last_error, "last error recorded");
  // With probes every 0.5 s and consecutive_down 2, or 3 request failures, detection is quick.
  assert.ok(Date.now() - killedAt < 5000);
});

test("a backend answering 503, one that hangs, and one that resets connections all fail over", async (t) => {
  for (const mode of ["503", "hang", "reset"]) {
    // A subtest per mode: its backends and runtime stop before the next mode starts.
    await t.test(mode, async (t) => {
      const bs = await backendsFor(t, 2);
      const lb = await setup(t, bs, { activeHealthChecks: { enabled: false } });
      bs[0].mode = mode;
      for (let i = 0; i < 6; i++) {
        const res = await lb.fetch("app.test", `/x${i}`);
        assert.equal(res.status, 200, `${mode}: ${await res.clone().text()}`);
        assert.equal((await res.json()).backend, "b2");
      }
      assert.ok(bs[0].requests().length >= 1, `${mode}: the failing backend was never tried`);
    });
  }
});

test("a POST that reached a failing backend is not replayed; a POST refused at connect is", async (t) => {
  const bs = await backendsFor(t, 2);
  const lb = await setup(t, bs, { activeHealthChecks: { enabled: false } });
  bs[0].mode = "reset";
  bs[1].mode = "reset";
  const res = await lb.raw("app.test", "/pay", { method: "POST", body: "charge-once" });
  const posts = [...bs[0].requests(), ...bs[1].requests()].filter((r) => r.method === "POST");
  assert.equal(posts.length, 1, "the POST was sent twice");
  assert.equal(res.status, 503);

  bs[0].mode = "ok";
  bs[1].mode = "ok";
  await bs[0].kill();
  for (let i = 0; i < 4; i++) {
    const r = await lb.raw("app.test", "/order", { method: "POST", body: `order-${i}` });
    assert.equal(r.status, 200, r.body);
    const echo = JSON.parse(r.body);
    assert.equal(echo.backend, "b2");
    assert.equal(echo.bodyLength, `order-${i}`.length);
  }
});

test("the breaker opens after N failures, admits exactly one trial after recovery, and closes on success", async (t) => {
  const bs = await backendsFor(t, 2);
  // Per request: every failure reaches the object (a lease ejects the backend locally after its
  // first; lease.test.mjs covers the breaker under leases).
  const lb = await setup(t, bs, { activeHealthChecks: { enabled: false }, decisions: { mode: "per_request" } });
  bs[0].mode = "503";
  for (let i = 0; i < 12; i++) assert.equal((await lb.fetch("app.test", `/a${i}`)).status, 200);
  // Failure reports reach the Durable Object after the responses.
  const opened = await waitForBackend(lb, bs[0], (b) => b.breaker === "open", "the breaker to open");
  assert.ok(opened.breaker_open_until_ms > 0, JSON.stringify(opened));
  const seenWhenOpen = bs[0].requests().length;
  assert.equal(seenWhenOpen, 3, "breaker should open after exactly 3 failures");
  for (let i = 0; i < 10; i++) assert.equal((await lb.fetch("app.test", `/b${i}`)).status, 200);
  assert.equal(bs[0].requests().length, seenWhenOpen, "an open breaker let traffic through");
  // After the recovery time, concurrent requests: exactly one trial reaches the backend.
  await waitFor(() => Date.now() > opened.breaker_open_until_ms, { timeoutMs: 5000, stepMs: 20, what: "the breaker's recovery time to pass" });
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => lb.fetch("app.test", `/c${i}`).then((r) => r.status)));
  assert.ok(results.every((s) => s === 200), JSON.stringify(results));
  assert.equal(bs[0].requests().length, seenWhenOpen + 1, "half-open must admit exactly one trial");
  // The trial's failure is reported after its response: the breaker re-opens, with a later deadline.
  await waitForBackend(
    lb,
    bs[0],
    (b) => b.breaker === "open" && b.breaker_open_until_ms > opened.breaker_open_until_ms,
    "the failed trial to re-open the breaker",
  );
  // Recovered backend: the next trial (after a doubled wait) closes the breaker and traffic returns.
  bs[0].mode = "ok";
  await waitFor(async () => {
    await (await lb.fetch("app.test", "/d")).arrayBuffer();
    return backendStatus(await status(lb), bs[0]).breaker === "closed";
  }, { timeoutMs: 6000, what: "breaker to close" });
  const counts = {};
  for (let i = 0; i < 10; i++) {
    const b = (await (await lb.fetch("app.test", `/e${i}`)).json()).backend;
    counts[b] = (counts[b] ?? 0) + 1;
  }
  assert.deepEqual(counts, { b1: 5, b2: 5 });
});

test("a dead backend comes back only after consecutive_up good probes", async (t) => {
  const bs = await backendsFor(t, 2);
  const lb = await setup(t, bs);
  await bs[0].kill();
  await waitFor(async () => !backendStatus(await status(lb), bs[0]).healthy, { what: "marked down" });
  for (let i = 0; i < 6; i++) assert.equal((await (await lb.fetch("app.test", "/x")).json()).backend, "b2");
  await bs[0].revive();
  const revivedAt = Date.now();
  await waitFor(async () => backendStatus(await status(lb), bs[0]).healthy, { what: "marked up" });
  // consecutive_up 2 at 0.5 s intervals: not before ~0.5 s.
  assert.ok(Date.now() - revivedAt >= 400, "came back after a single probe");
  const seen = new Set();
  for (let i = 0; i < 6; i++) seen.add((await (await lb.fetch("app.test", "/y")).json()).backend);
  assert.deepEqual([...seen].sort(), ["b1", "b2"]);
});

test("a flapping backend does not flip faster than the thresholds allow", async (t) => {
  const bs = await backendsFor(t, 2);
  const lb = await setup(t, bs, { activeHealthChecks: { interval: 0.2, timeout: 0.3, consecutive_up: 3, consecutive_down: 2 } });
  bs[0].mode = "flap";
  await status(lb); // the hostname's Durable Object starts probing once the hostname is seen
  const start = bs[0].probeCount ?? 0;
  await waitFor(async () => (bs[0].probeCount ?? 0) - start >= 10, { what: "10 probes" });
  const st = backendStatus(await status(lb), bs[0]);
  assert.equal(st.healthy, true, "alternating probes flipped the backend");
  assert.ok(st.consecutive_failures <= 1);
});

test("health-path discovery picks /healthz when only that exists, and falls back to /", async (t) => {
  const [hz] = await backendsFor(t, ["hz"], { health: "/healthz" });
  const [root] = await backendsFor(t, ["root"], { health: null });
  // Probes only on demand here (no alarm round within the test), so probe counts are exact.
  const lb = await setup(t, [hz, root], { activeHealthChecks: { interval: 60, timeout: 0.3 } });
  const res = await lb.admin("/admin/services/app.test/health-check", { method: "POST" });
  assert.equal(res.status, 200);
  const { results } = await res.json();
  const byUrl = Object.fromEntries(results.map((r) => [r.url, r]));
  assert.equal(byUrl[hz.url].ok, true);
  assert.equal(byUrl[hz.url].path, "/healthz");
  assert.equal(byUrl[root.url].ok, true);
  assert.equal(byUrl[root.url].path, "/");
  const st = await status(lb);
  assert.equal(backendStatus(st, hz).health_path, "/healthz");
  assert.ok(backendStatus(st, hz).last_probe_ms > 0);
  assert.equal(backendStatus(st, root).health_path, "/");
  // Once found, the path is remembered: the next round sends one probe per backend, not a rediscovery.
  const before = [hz.probes().length, root.probes().length];
  const again = await lb.admin("/admin/services/app.test/health-check", { method: "POST" });
  assert.equal(again.status, 200);
  await again.arrayBuffer();
  assert.deepEqual([hz.probes().length - before[0], root.probes().length - before[1]], [1, 1]);
});

test("all backends down: panic attempts, then 503 with Retry-After naming the hostname", async (t) => {
  const bs = await backendsFor(t, 3);
  const lb = await setup(t, bs);
  for (const b of bs) await b.kill();
  await waitFor(async () => (await status(lb)).backends.every((b) => !b.healthy), { what: "all marked down" });
  const res = await lb.fetch("app.test", "/");
  assert.equal(res.status, 503);
  assert.ok(Number(res.headers.get("retry-after")) > 0);
  const body = await res.json();
  assert.match(body.error, /app\.test/);
  assert.match(body.error, /tried anyway/);
  // Panic mode still tries: a backend that comes back answers before the probes notice.
  await bs[2].revive();
  const ok = await lb.fetch("app.test", "/");
  assert.equal(ok.status, 200);
});

test("health and breaker state survive a runtime restart", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "fb-persist-"));
  const bs = await backendsFor(t, 2);
  // A long recovery time in both runs: the breaker must still be open after the restart, however long
  // the restart takes (it is persisted with its deadline).
  const cfg = {
    hostname: "app.test",
    backends: bs.map((b) => b.url),
    ...fast,
    activeHealthChecks: { enabled: false },
    passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 60000 } },
    // Per request: the 8 requests below bring 3 failures to the object (a lease ejects locally).
    decisions: { mode: "per_request" },
  };
  try {
    let lb = await startBalancer({ defaultBackends: cfg, persistDir: dir });
    try {
      bs[0].mode = "503";
      for (let i = 0; i < 8; i++) await (await lb.fetch("app.test", `/p${i}`)).arrayBuffer();
      await waitForBackend(lb, bs[0], (b) => b.breaker === "open", "the breaker to open");
    } finally {
      await lb.stop();
    }
    // The restart also changes a breaker setting, which must not reset the stored state.
    const changed = { ...cfg, passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 120000 } } };
    lb = await startBalancer({ defaultBackends: changed, persistDir: dir });
    try {
      const st = backendStatus(await status(lb), bs[0]);
      assert.equal(st.breaker, "open", "breaker state was lost in the restart");
      const before = bs[0].requests().length;
      for (let i = 0; i < 4; i++) assert.equal((await lb.fetch("app.test", `/q${i}`)).status, 200);
      assert.equal(bs[0].requests().length, before);
    } finally {
      await lb.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A loopback port nothing listens on (bound, then closed): connections to it are refused. */
async function closedPort() {
  const net = await import("node:net");
  const server = net.createServer();
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

test("a dead backend added to a healthy service costs no POST a 503", async (t) => {
  const bs = await backendsFor(t, ["a", "b"]);
  // The defaults, as an operator would have them: probes every 60 s, one retry, two connection retries.
  const lb = await balancerFor(t, { defaultBackends: { hostname: "app.test", backends: bs.map((b) => b.url) } });
  // Even POSTs as curl sends them (a small body with its length, which FlowBalance buffers and
  // may replay once the backend is known to refuse), odd ones streamed without a length (as
  // fetch() sends a stream): those cannot be replayed, so only avoiding the dead backend helps.
  const post = async (i) => {
    const body = JSON.stringify({ i });
    if (i % 2 === 0) return lb.raw("app.test", `/p${i}`, { method: "POST", headers: { "content-type": "application/json" }, body });
    const res = await lb.fetch("app.test", `/p${i}`, { method: "POST", body: new Blob([body]).stream(), duplex: "half" });
    return { status: res.status, body: await res.text() };
  };
  assert.equal((await post(0)).status, 200);
  assert.equal((await post(1)).status, 200);
  const dead = `http://127.0.0.1:${await closedPort()}`;
  const added = await lb.admin("/admin/services/app.test/backends", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ url: dead }) });
  assert.equal(added.status, 200, await added.text());
  // At once, 300 POSTs, 10 at a time.
  const statuses = {};
  const failures = [];
  for (let wave = 0; wave < 30; wave++) {
    const answers = await Promise.all(Array.from({ length: 10 }, (_, k) => post(wave * 10 + k + 1)));
    for (const res of answers) {
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status !== 200 && failures.length < 3) failures.push(res.body);
    }
  }
  assert.deepEqual(statuses, { 200: 300 }, failures.join("\n"));
});
