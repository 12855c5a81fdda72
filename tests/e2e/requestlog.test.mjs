// End to end: the request log survives a runtime stop right after a burst, old rows go by the retention cron in bounded batches, and health transitions are kept in D1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startBalancer } from "../support/runtime.mjs";
import { startBackends, stopAll, waitFor } from "../support/backends.mjs";

const count = async (lb, sql, ...args) => (await (await lb.mf.getD1Database("DB")).prepare(sql).bind(...args).first()).n;
const logged = (lb, host) => count(lb, "SELECT COUNT(*) AS n FROM request_logs WHERE hostname = ?1", host);

test("a burst followed by a runtime stop loses no request-log row", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "fb-log-"));
  const bs = await startBackends(2);
  const config = { hostname: "burst.test", backends: bs.map((b) => b.url) };
  let lb = await startBalancer({ defaultBackends: config, persistDir: dir });
  try {
    // Not a multiple of any batch size: before, the tail of a burst waited in isolate memory
    // for a later request (200 rows or 2 s) and a stop lost it.
    const SENT = 137;
    let next = 0;
    const statuses = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < SENT) {
          const i = next++;
          const res = await lb.fetch("burst.test", `/burst/${i}`);
          statuses.push(res.status);
          await res.arrayBuffer();
        }
      }),
    );
    assert.equal(statuses.length, SENT);
    assert.ok(statuses.every((s) => s === 200));
    // No further request: every row must reach D1 within its own request's waitUntil.
    await waitFor(async () => (await logged(lb, "burst.test")) === SENT, { timeoutMs: 5000, stepMs: 50, what: `${SENT} rows in D1 with no later request` });
    await lb.stop();
    lb = await startBalancer({ defaultBackends: config, persistDir: dir });
    assert.equal(await logged(lb, "burst.test"), SENT, "rows in D1 after the restart");
    const paths = await (await lb.mf.getD1Database("DB")).prepare("SELECT COUNT(DISTINCT path) AS n FROM request_logs").first();
    assert.equal(paths.n, SENT, "each request logged once");
  } finally {
    await stopAll(bs);
    await lb.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Inserts `n` rows `ageMs` old into request_logs and health_events for `host`. */
async function backdate(lb, host, n, ageMs) {
  const db = await lb.mf.getD1Database("DB");
  const at = Date.now() - ageMs;
  const rows = JSON.stringify(Array.from({ length: n }, (_, i) => ({ ts: at - i, path: `/old/${i}` })));
  await db
    .prepare("INSERT INTO request_logs (ts_ms, hostname, method, path, status, backend, attempts, latency_ms) SELECT j.value ->> 'ts', ?2, 'GET', j.value ->> 'path', 200, 'http://127.0.0.1:1', 1, 1 FROM json_each(?1) AS j")
    .bind(rows, host)
    .run();
  await db
    .prepare("INSERT INTO health_events (hostname, backend, at_ms, kind, from_state, to_state, reason) SELECT ?2, 'http://127.0.0.1:1', j.value ->> 'ts', 'health', 'up', 'down', 'probe' FROM json_each(?1) AS j")
    .bind(rows, host)
    .run();
}

const DAY = 24 * 3600 * 1000;

test("retention: the cron deletes rows past LOG_RETENTION_DAYS in batches and keeps the rest; a bad value deletes nothing", async () => {
  const lb = await startBalancer({ defaultBackends: "", bindings: { LOG_RETENTION_DAYS: "2" } });
  try {
    await backdate(lb, "old.test", 2500, 3 * DAY); // three DELETE statements of 1000
    await backdate(lb, "old.test", 7, 1 * DAY);
    await backdate(lb, "new.test", 5, 60_000);
    const worker = await lb.mf.getWorker();
    await worker.scheduled({ cron: "*/5 * * * *" });
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM request_logs"), 12);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM health_events"), 12);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM request_logs WHERE ts_ms < ?1", Date.now() - 2 * DAY), 0);
    // Idempotent: a second run finds nothing more to delete.
    await worker.scheduled({ cron: "*/5 * * * *" });
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM request_logs"), 12);
  } finally {
    await lb.stop();
  }
  const bad = await startBalancer({ defaultBackends: "", bindings: { LOG_RETENTION_DAYS: "0" } });
  try {
    await backdate(bad, "old.test", 3, 30 * DAY);
    await (await bad.mf.getWorker()).scheduled({ cron: "*/5 * * * *" });
    assert.equal(await count(bad, "SELECT COUNT(*) AS n FROM request_logs"), 3, "an unreadable retention deletes nothing");
  } finally {
    await bad.stop();
  }
});

test("health history: a killed backend's down and its revival's up are stored in D1 and listed", async () => {
  const bs = await startBackends(2);
  const lb = await startBalancer({
    defaultBackends: {
      hostname: "hist.test",
      backends: bs.map((b) => b.url),
      activeHealthChecks: { interval: 1, timeout: 1, consecutive_up: 1, consecutive_down: 1 },
    },
  });
  const history = async () => (await (await lb.admin("/admin/services/hist.test/health-history?limit=50")).json()).events;
  try {
    // The first request creates the object, which starts probing.
    await (await lb.fetch("hist.test", "/")).arrayBuffer();
    await bs[1].kill();
    const down = await waitFor(async () => (await history()).find((e) => e.backend === bs[1].url && e.kind === "health" && e.to === "down"), {
      timeoutMs: 15000,
      what: "a down transition in the health history",
    });
    assert.equal(down.from, "up");
    assert.equal(down.hostname, "hist.test");
    assert.match(down.reason, /^probe: /);
    assert.ok(Math.abs(down.at_ms - Date.now()) < 20000);
    await bs[1].revive();
    const up = await waitFor(async () => (await history()).find((e) => e.backend === bs[1].url && e.kind === "health" && e.to === "up"), {
      timeoutMs: 15000,
      what: "an up transition in the health history",
    });
    assert.ok(up.at_ms >= down.at_ms);
    const events = await history();
    assert.equal(events[0].at_ms >= events.at(-1).at_ms, true, "newest first");
    assert.ok(events.every((e) => e.backend !== bs[0].url), "the healthy backend has no transitions");
    const bad = await lb.admin("/admin/services/hist.test/health-history?limit=0");
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error, /limit/);
  } finally {
    await stopAll(bs);
    await lb.stop();
  }
});

test("a failed attempt counts against the backend that failed it, and a refused connection is named so", async () => {
  const bs = await startBackends(2);
  const lb = await startBalancer({
    defaultBackends: {
      hostname: "fail.test",
      backends: bs.map((b) => b.url),
      retries: 1,
      // Probes and the breaker stay out of the way: every request meets the dead backend's turn.
      activeHealthChecks: { enabled: false },
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 1000 } },
      // Per request: a lease would eject the dead backend locally after its first failure.
      decisions: { mode: "per_request" },
    },
  });
  try {
    await bs[0].kill(); // its port now refuses connections
    const SENT = 10;
    for (let i = 0; i < SENT; i++) {
      const res = await lb.fetch("fail.test", `/f${i}`);
      assert.equal(res.status, 200, "the other backend covers");
      await res.arrayBuffer();
    }
    const metrics = async () => (await (await lb.admin("/admin/services/fail.test/metrics?window=300")).json()).backends;
    const dead = await waitFor(async () => (await metrics()).find((b) => b.backend === bs[0].url && b.requests >= SENT / 2), {
      what: "the dead backend's failed attempts in the metrics",
    });
    assert.equal(dead.errors, dead.requests, "every attempt at the dead backend failed");
    const alive = (await metrics()).find((b) => b.backend === bs[1].url);
    assert.equal(alive.requests, SENT);
    assert.equal(alive.errors, 0);
    // The log keeps one row per client request, answered by the live backend.
    await waitFor(async () => (await logged(lb, "fail.test")) === SENT, { what: `${SENT} rows` });
    // Why: a refused connection, in those words, in the status view and in a 503 once both are down.
    const st = await (await lb.admin("/admin/services/fail.test")).json();
    assert.equal(st.backends.find((b) => b.url === bs[0].url).last_error, "connection refused");
    await bs[1].kill();
    const res = await lb.fetch("fail.test", "/none");
    assert.equal(res.status, 503);
    assert.match((await res.json()).error, /last: connection refused/);
  } finally {
    await stopAll(bs);
    await lb.stop();
  }
});
