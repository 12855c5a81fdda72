// The bill's arithmetic (tests/bench/cost.mjs) against hand-computed figures at the list prices in tests/bench/prices.mjs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { dollarsPerMillion, formatPerDay, freePlanPerDay, goals, perMillion } from "../bench/cost.mjs";
import { D1, DURABLE_OBJECTS, READ_ON, WORKERS } from "../bench/prices.mjs";

const close = (a, b, eps = 1e-9) => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

test("prices carry their source and the date read", () => {
  assert.match(READ_ON, /^\d{4}-\d{2}-\d{2}$/);
  for (const p of [WORKERS, DURABLE_OBJECTS, D1]) assert.match(p.source, /^https:\/\/developers\.cloudflare\.com\//);
});

test("usage scales to a million balanced requests", () => {
  const u = perMillion({ requests: 6000, workerRequests: 6000, cpuMs: 3000, objectRequests: 6012, d1RowsWritten: 18 });
  close(u.workerRequests, 1e6);
  close(u.workerCpuMs, 500_000);
  close(u.objectRequests, 1_002_000);
  close(u.d1RowsWritten, 3000);
  assert.throws(() => perMillion({ requests: 0, workerRequests: 0, cpuMs: 0, objectRequests: 0, d1RowsWritten: 0 }), /requests must be > 0/);
});

test("dollars per million: $0.30 requests, $0.02/M CPU ms, $0.15/M object requests, $12.50/M GB-s, $1/M rows", () => {
  const u = { workerRequests: 1e6, workerCpuMs: 1e6, objectRequests: 1e6, d1RowsWritten: 3e6 };
  const d = dollarsPerMillion(u, 100);
  close(d.workerRequests, 0.3);
  close(d.workerCpu, 0.02);
  close(d.objectRequests, 0.15);
  // 1e6 requests at 100/s keep the object active 10,000 s × 0.128 GB = 1,280 GB-s.
  close(d.objectDuration, 1280 * 12.5e-6);
  close(d.d1, 3);
  close(d.total, 0.3 + 0.02 + 0.15 + 0.016 + 3);
});

test("free plan: the first daily limit hit binds, per mode", () => {
  // Per-request mode with a log row (3 rows written) per request: D1 binds at 33,333 a day.
  const logged = freePlanPerDay({ workerRequests: 1e6, workerCpuMs: 1e6, objectRequests: 1e6, d1RowsWritten: 3e6 });
  assert.equal(logged.perDay, 33_333);
  assert.match(logged.limit, /D1 rows written/);
  // Lease mode with rollups: 4 object calls and 2 rows per 1,000: the Worker's 100,000 requests bind.
  const lease = freePlanPerDay({ workerRequests: 1e6, workerCpuMs: 8e5, objectRequests: 4000, d1RowsWritten: 2000 });
  assert.equal(lease.perDay, 100_000);
  assert.match(lease.limit, /Workers requests/);
  assert.equal(lease.limits.find((l) => /D1/.test(l.limit)).perDay, 50_000_000);
  // A mode over 10 ms CPU per request is refused at once on the free plan.
  assert.equal(freePlanPerDay({ workerRequests: 1e6, workerCpuMs: 11e6, objectRequests: 0, d1RowsWritten: 0 }).perDay, 0);
  assert.equal(formatPerDay(Infinity), "no limit");
  assert.equal(formatPerDay(33333.7), "33,333");
});

test("goals pass and fail at their thresholds", () => {
  const t = { passThrough: { rps: 1000, p99: 20 }, perRequest: { rps: 650, p99: 31 }, lease: { rps: 840, p99: 30 } };
  const g = goals(t, { perRequest: 10, lease: 3000 });
  assert.deepEqual(
    g.map((x) => x.pass),
    [true, false, false, true, true, false],
  );
  assert.equal(g[0].shown, "0.650×");
  assert.equal(g[5].shown, "3000.0");
});
