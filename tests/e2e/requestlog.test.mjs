// End to end: the request log survives a runtime stop right after a burst, old rows (log, health history, rollups) go by the retention cron in bounded batches, and health transitions are kept in D1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startBalancer } from "../support/runtime.mjs";
import { startBackends, stopAll, waitFor } from "../support/backends.mjs";
import { MINUTE, insertRollups } from "../support/rollups.mjs";

const count = async (lb, sql, ...args) => (await (await lb.mf.getD1Database("DB")).prepare(sql).bind(...args).first()).n;
const logged = (lb, host) => count(lb, "SELECT COUNT(*) AS n FROM request_logs WHERE hostname = ?1", host);

test("a burst of 150 failed requests followed at once by a runtime stop: all 150 rows are found afterwards", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "fb-log-"));
  const bs = await startBackends(2);
  for (const b of bs) b.handler = (req, res) => res.writeHead(500, { "content-type": "text/plain" }).end("broken");
  const config = {
    hostname: "burst.test",
    backends: bs.map((b) => b.url),
    activeHealthChecks: { enabled: false },
    passiveHealthChecks: { circuit_breaker: { failure_threshold: 1000 } },
    decisions: { mode: "per_request" },
  };
  let lb = await startBalancer({ defaultBackends: config, persistDir: dir });
  try {
    const SENT = 150;
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
    assert.ok(statuses.every((s) => s === 500));
    // Stopped at once: each row was handed to the hostname's object before its client got the 500.
    await lb.stop();
    lb = await startBalancer({ defaultBackends: config, persistDir: dir });
    // The object writes what it holds from its alarm (or when the admin API reads the log).
    await waitFor(async () => (await logged(lb, "burst.test")) === SENT, { timeoutMs: 15000, what: `${SENT} rows in D1 after the restart` });
    const db = await lb.mf.getD1Database("DB");
    assert.equal((await db.prepare("SELECT COUNT(DISTINCT path) AS n FROM request_logs").first()).n, SENT, "each request logged once");
    assert.equal((await db.prepare("SELECT COUNT(*) AS n FROM request_logs WHERE kept = 'error'").first()).n, SENT, "kept as errors");
  } finally {
    await stopAll(bs);
    await lb.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("successes are counted exactly in the rollups and only sampled into the log; slow requests are kept", async () => {
  const bs = await startBackends(2);
  const lb = await startBalancer({
    defaultBackends: [
      { hostname: "quiet.test", backends: bs.map((b) => b.url), activeHealthChecks: { enabled: false }, logging: { success_sample_rate: 0 }, decisions: { mode: "per_request" } },
      { hostname: "sampled.test", backends: bs.map((b) => b.url), activeHealthChecks: { enabled: false }, logging: { success_sample_rate: 1, max_success_rows_per_minute: 5, slow_ms: 200 }, decisions: { mode: "lease" } },
    ],
  });
  const db = await lb.mf.getD1Database("DB");
  try {
    const SENT = 60;
    for (const host of ["quiet.test", "sampled.test"]) {
      for (let i = 0; i < SENT; i++) {
        const res = await lb.fetch(host, `/ok/${i}`);
        assert.equal(res.status, 200);
        await res.arrayBuffer();
      }
    }
    // The admin API asks the object to write its open minute before it reads.
    const host = async (h) => {
      await lb.admin(`/admin/services/${h}/logs`);
      return db.prepare("SELECT COALESCE(SUM(requests), 0) AS n, COALESCE(SUM(c2xx), 0) AS ok FROM rollup_minutes WHERE hostname = ?1 AND backend = ''").bind(h).first();
    };
    for (const h of ["quiet.test", "sampled.test"]) {
      const row = await waitFor(async () => {
        const r = await host(h);
        return r.n === SENT ? r : null;
      }, { what: `${SENT} requests of ${h} in the rollups` });
      assert.equal(row.ok, SENT);
      const perBackend = await db.prepare("SELECT backend, SUM(requests) AS n FROM rollup_minutes WHERE hostname = ?1 AND backend <> '' GROUP BY backend ORDER BY backend").bind(h).all();
      const counts = perBackend.results.map((r) => r.n);
      assert.equal(counts.length, 2, `${h}: both backends`);
      assert.equal(counts[0] + counts[1], SENT, `${h}: every attempt counted once`);
      // Per request the object's round robin alternates exactly; a lease starts at a random offset.
      if (h === "quiet.test") assert.deepEqual(counts, [SENT / 2, SENT / 2], "round robin");
      const hours = await db.prepare("SELECT SUM(requests) AS n FROM rollup_hours WHERE hostname = ?1 AND backend = ''").bind(h).first();
      assert.equal(hours.n, SENT, `${h}: the hour's row holds the same count`);
    }
    assert.equal(await logged(lb, "quiet.test"), 0, "no success is logged at rate 0");
    // Rate 1, capped at 5 a minute: the samples ride in the minute's rollup row, not as rows.
    const samples = await waitFor(async () => {
      const r = await db.prepare("SELECT SUM(json_array_length(samples)) AS n FROM rollup_minutes WHERE hostname = 'sampled.test' AND samples IS NOT NULL").first();
      await lb.admin("/admin/services/sampled.test/logs");
      return r.n >= 5 ? r.n : null;
    }, { what: "the sampled successes" });
    assert.ok(samples <= 10, `at most the cap per minute (the test may straddle a minute): ${samples}`);
    assert.equal(await logged(lb, "sampled.test"), 0, "samples cost no request_logs row");
    // A slow request is always kept, with why.
    bs[0].mode = "slow:300";
    bs[1].mode = "slow:300";
    const res = await lb.fetch("sampled.test", "/slow");
    await res.arrayBuffer();
    await waitFor(async () => {
      await lb.admin("/admin/services/sampled.test/logs");
      const r = await db.prepare("SELECT kept FROM request_logs WHERE hostname = 'sampled.test' AND path = '/slow'").first();
      return r?.kept === "slow";
    }, { what: "the slow request kept as slow" });
  } finally {
    await stopAll(bs);
    await lb.stop();
  }
});

test("a runtime restart neither loses nor double-counts a written minute", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "fb-roll-"));
  const bs = await startBackends(1);
  const config = { hostname: "restart.test", backends: [bs[0].url], activeHealthChecks: { enabled: false }, decisions: { mode: "per_request" } };
  let lb = await startBalancer({ defaultBackends: config, persistDir: dir });
  const total = async () => {
    await lb.admin("/admin/services/restart.test/logs");
    const db = await lb.mf.getD1Database("DB");
    return (await db.prepare("SELECT COALESCE(SUM(requests), 0) AS n FROM rollup_minutes WHERE hostname = 'restart.test' AND backend = ''").first()).n;
  };
  try {
    for (let i = 0; i < 20; i++) await (await lb.fetch("restart.test", `/a${i}`)).arrayBuffer();
    await waitFor(async () => (await total()) === 20, { what: "20 requests written" });
    await lb.stop();
    lb = await startBalancer({ defaultBackends: config, persistDir: dir });
    for (let i = 0; i < 10; i++) await (await lb.fetch("restart.test", `/b${i}`)).arrayBuffer();
    // The minute written before the stop is written again whole, with the new requests added once.
    await waitFor(async () => (await total()) === 30, { what: "30 requests after the restart" });
    assert.equal(await total(), 30, "and no more");
  } finally {
    await stopAll(bs);
    await lb.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("D1 rows written are counted per table, exported, and the day's ledger holds them", async () => {
  const bs = await startBackends(1);
  const lb = await startBalancer({ defaultBackends: { hostname: "ledger.test", backends: [bs[0].url], activeHealthChecks: { enabled: false } } });
  try {
    for (let i = 0; i < 20; i++) await (await lb.fetch("ledger.test", `/x${i}`)).arrayBuffer();
    await waitFor(async () => {
      await lb.admin("/admin/services/ledger.test/logs");
      const st = await (await lb.admin("/admin/services/ledger.test")).json();
      return st.d1?.rows_written?.rollup_minutes > 0;
    }, { what: "rollup rows written" });
    const text = await (await lb.admin("/admin/metrics")).text();
    const line = text.split("\n").find((l) => l.startsWith('flowbalance_d1_rows_written_total{hostname="ledger.test",table="rollup_minutes"}'));
    assert.ok(line && Number(line.split(" ").pop()) > 0, `exported: ${line}`);
    const db = await lb.mf.getD1Database("DB");
    const usage = await db.prepare("SELECT rows FROM d1_usage WHERE tbl = 'all'").first();
    assert.ok(usage.rows > 0, "the day's ledger counts the rows");
  } finally {
    await stopAll(bs);
    await lb.stop();
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

/** `n` minute rollup rows per backend of `backends` for `host`, in `table`, the newest `ageMs` old, one minute apart. */
async function backdateRollups(lb, host, n, ageMs, { table = "rollup_minutes", backends = ["", "http://127.0.0.1:1"] } = {}) {
  const newest = Math.floor((Date.now() - ageMs) / MINUTE) * MINUTE;
  const rows = [];
  for (let i = 0; i < n; i++) for (const backend of backends) rows.push({ hostname: host, t_ms: newest - i * MINUTE, backend, c2xx: 1 });
  // One statement for the lot: a few thousand single inserts would take long.
  const db = await lb.mf.getD1Database("DB");
  await db
    .prepare(`INSERT INTO ${table} (hostname, t_ms, backend, requests, c2xx, hist) SELECT j.value ->> 'hostname', j.value ->> 't_ms', j.value ->> 'backend', 1, 1, '[1]' FROM json_each(?1) AS j`)
    .bind(JSON.stringify(rows))
    .run();
}

test("retention: the cron deletes rows past LOG_RETENTION_DAYS (log, health history, minute rollups) and ROLLUP_RETENTION_DAYS (hour rollups) in batches and keeps the rest; a bad value deletes nothing", async () => {
  const lb = await startBalancer({ defaultBackends: "", bindings: { LOG_RETENTION_DAYS: "2", ROLLUP_RETENTION_DAYS: "10" } });
  try {
    await backdate(lb, "old.test", 2500, 3 * DAY); // three DELETE statements of 1000
    await backdate(lb, "old.test", 7, 1 * DAY);
    await backdate(lb, "new.test", 5, 60_000);
    // Minute rollups: 1,200 keys past retention for one hostname (two statements), 4 for another; 6 kept.
    await backdateRollups(lb, "old.test", 600, 3 * DAY);
    await backdateRollups(lb, "b.test", 2, 3 * DAY);
    await backdateRollups(lb, "old.test", 3, 1 * DAY);
    // Hour rollups follow their own retention: 11 days goes, 9 days stays.
    await backdateRollups(lb, "old.test", 5, 11 * DAY, { table: "rollup_hours" });
    await backdateRollups(lb, "old.test", 4, 9 * DAY, { table: "rollup_hours" });
    const worker = await lb.mf.getWorker();
    await worker.scheduled({ cron: "*/5 * * * *" });
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM request_logs"), 12);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM health_events"), 12);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM request_logs WHERE ts_ms < ?1", Date.now() - 2 * DAY), 0);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM rollup_minutes"), 6);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM rollup_minutes WHERE t_ms < ?1", Date.now() - 2 * DAY), 0);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM rollup_hours"), 8);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM rollup_hours WHERE t_ms < ?1", Date.now() - 10 * DAY), 0);
    // Idempotent: a second run finds nothing more to delete.
    await worker.scheduled({ cron: "*/5 * * * *" });
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM request_logs"), 12);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM rollup_minutes"), 6);
    assert.equal(await count(lb, "SELECT COUNT(*) AS n FROM rollup_hours"), 8);
  } finally {
    await lb.stop();
  }
  // Each variable fails closed on its own: a bad LOG_RETENTION_DAYS keeps the log and minute rows,
  // while hour rows still follow ROLLUP_RETENTION_DAYS' default (90 days); and the other way round.
  const bad = await startBalancer({ defaultBackends: "", bindings: { LOG_RETENTION_DAYS: "0" } });
  try {
    await backdate(bad, "old.test", 3, 30 * DAY);
    await backdateRollups(bad, "old.test", 3, 30 * DAY);
    await backdateRollups(bad, "old.test", 2, 91 * DAY, { table: "rollup_hours" });
    await (await bad.mf.getWorker()).scheduled({ cron: "*/5 * * * *" });
    assert.equal(await count(bad, "SELECT COUNT(*) AS n FROM request_logs"), 3, "an unreadable retention deletes nothing");
    assert.equal(await count(bad, "SELECT COUNT(*) AS n FROM rollup_minutes"), 6);
    assert.equal(await count(bad, "SELECT COUNT(*) AS n FROM rollup_hours"), 0, "hour rows past the default 90 days go");
  } finally {
    await bad.stop();
  }
  const badRollups = await startBalancer({ defaultBackends: "", bindings: { ROLLUP_RETENTION_DAYS: "90d" } });
  try {
    await backdateRollups(badRollups, "old.test", 2, 100 * DAY, { table: "rollup_hours" });
    await backdateRollups(badRollups, "old.test", 2, 30 * DAY);
    await (await badRollups.mf.getWorker()).scheduled({ cron: "*/5 * * * *" });
    assert.equal(await count(badRollups, "SELECT COUNT(*) AS n FROM rollup_hours"), 4, "an unreadable ROLLUP_RETENTION_DAYS deletes nothing");
    assert.equal(await count(badRollups, "SELECT COUNT(*) AS n FROM rollup_minutes"), 0, "minute rows still follow LOG_RETENTION_DAYS (default 7)");
  } finally {
    await badRollups.stop();
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

test("a failed attempt is logged with its request, against the backend that failed it, and a refused connection is named so", async () => {
  const bs = await startBackends(2);
  const lb = await startBalancer({
    defaultBackends: {
      hostname: "fail.test",
      backends: bs.map((b) => b.url),
      retries: 1,
      // Probes and the breaker stay out of the way: every request meets the dead backend's turn.
      activeHealthChecks: { enabled: false },
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 1000 } },
      logging: { success_sample_rate: 0 },
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
    // Successes reach the object in batches (within a second of the last request).
    const [dead, alive] = await waitFor(async () => {
      const m = await metrics();
      const d = m.find((b) => b.backend === bs[0].url);
      const a = m.find((b) => b.backend === bs[1].url);
      return d?.requests >= SENT / 2 && a?.requests === SENT ? [d, a] : null;
    }, { what: "every attempt in the metrics" });
    assert.equal(dead.errors, dead.requests, "every attempt at the dead backend failed");
    assert.equal(alive.errors, 0);
    // The log keeps every request that met a failure (one row each, answered by the live
    // backend after its retry); the others were successes, counted but not logged at rate 0.
    await waitFor(async () => (await logged(lb, "fail.test")) === dead.requests, { what: `${dead.requests} rows` });
    const rows = (await (await lb.admin("/admin/services/fail.test/logs?limit=100")).json()).requests;
    assert.ok(rows.every((r) => r.backend === bs[1].url && r.status === 200 && r.kept === "error"), JSON.stringify(rows));
    const failed = rows.flatMap((r) => r.failed ?? []);
    assert.equal(failed.length, dead.requests, "each failed attempt is stored with its request's row");
    assert.ok(failed.every((f) => f.backend === bs[0].url && f.status === null), JSON.stringify(failed));
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
