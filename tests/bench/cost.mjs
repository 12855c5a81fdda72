// The bill's arithmetic: measured usage per balanced request → cost per million at list prices, free-plan requests per day, and the goals (pure, unit-tested).
import { D1, DURABLE_OBJECTS, WORKERS } from "./prices.mjs";

const M = 1_000_000;
const SECONDS_PER_DAY = 86_400;

/**
 * Usage per million balanced requests from one measured phase.
 * `m`: { requests, workerRequests, cpuMs, objectRequests, d1RowsWritten } counted over the phase.
 */
export function perMillion(m) {
  if (!(m.requests > 0)) throw new Error("perMillion: requests must be > 0");
  const k = M / m.requests;
  return {
    workerRequests: m.workerRequests * k,
    workerCpuMs: m.cpuMs * k,
    objectRequests: m.objectRequests * k,
    d1RowsWritten: m.d1RowsWritten * k,
  };
}

/**
 * Dollars per million balanced requests at the paid plan's marginal list prices (beyond the included
 * amounts, which a busy account has used up). Durable Object duration depends on the rate, not the
 * count: at `rps` requests a second the object is active for 1e6/rps seconds per million, billed at
 * 128 MB.
 */
export function dollarsPerMillion(u, rps) {
  const workerRequests = (u.workerRequests / M) * WORKERS.paid.usdPerMillionRequests;
  const workerCpu = (u.workerCpuMs / M) * WORKERS.paid.usdPerMillionCpuMs;
  const objectRequests = (u.objectRequests / M) * DURABLE_OBJECTS.paid.usdPerMillionRequests;
  const objectDuration = ((DURABLE_OBJECTS.memoryGb * (M / rps)) / M) * DURABLE_OBJECTS.paid.usdPerMillionGbSeconds;
  const d1 = (u.d1RowsWritten / M) * D1.paid.usdPerMillionRowsWritten;
  return { workerRequests, workerCpu, objectRequests, objectDuration, d1, total: workerRequests + workerCpu + objectRequests + objectDuration + d1 };
}

/**
 * Balanced requests a day the free plan carries before its first limit, from usage per million:
 * each daily allowance divided by the usage per request; `Infinity` where a mode uses none of it.
 * The 10 ms CPU limit is per invocation, not per day: a mode whose CPU per request exceeds it carries 0.
 * One hostname's object active all day (86,400 s × 128 MB = 11,059 GB-s) fits the 13,000 GB-s a day.
 */
export function freePlanPerDay(u) {
  const per = (allowance, usePerMillion) => (usePerMillion > 0 ? Math.floor((allowance * M) / usePerMillion) : Infinity);
  const cpuMsPerRequest = u.workerCpuMs / M;
  const limits = [
    { limit: "Workers requests (100,000/day)", perDay: per(WORKERS.free.requestsPerDay, u.workerRequests) },
    { limit: "Durable Object requests (100,000/day)", perDay: per(DURABLE_OBJECTS.free.requestsPerDay, u.objectRequests) },
    { limit: "D1 rows written (100,000/day)", perDay: per(D1.free.rowsWrittenPerDay, u.d1RowsWritten) },
    { limit: "Workers CPU (10 ms per invocation)", perDay: cpuMsPerRequest <= WORKERS.free.cpuMsPerInvocation ? Infinity : 0 },
    {
      limit: "Durable Object duration (13,000 GB-s/day, one object always active)",
      perDay: DURABLE_OBJECTS.memoryGb * SECONDS_PER_DAY <= DURABLE_OBJECTS.free.gbSecondsPerDay ? Infinity : 0,
    },
  ];
  const first = limits.reduce((a, b) => (b.perDay < a.perDay ? b : a));
  return { perDay: first.perDay, limit: first.limit, limits };
}

/**
 * The goals against measured figures. `t`: { passThrough, perRequest, lease } each
 * { rps, p99 } from one alternating run; `d1RowsPer1000`: { perRequest, lease } at the steady rate.
 */
export function goals(t, d1RowsPer1000) {
  const g = (goal, value, pass, shown) => ({ goal, value, shown, pass });
  const ratio = (a, b) => a / b;
  const rows = [
    ["per-request throughput ≥ 0.65× pass-through", ratio(t.perRequest.rps, t.passThrough.rps), (v) => v >= 0.65, (v) => `${v.toFixed(3)}×`],
    ["lease throughput ≥ 0.85× pass-through", ratio(t.lease.rps, t.passThrough.rps), (v) => v >= 0.85, (v) => `${v.toFixed(3)}×`],
    ["per-request p99 ≤ 1.5× pass-through p99", ratio(t.perRequest.p99, t.passThrough.p99), (v) => v <= 1.5, (v) => `${v.toFixed(3)}×`],
    ["lease p99 ≤ 1.5× pass-through p99", ratio(t.lease.p99, t.passThrough.p99), (v) => v <= 1.5, (v) => `${v.toFixed(3)}×`],
  ].map(([goal, v, ok, show]) => g(goal, v, ok(v), show(v)));
  for (const [mode, v] of [["per-request", d1RowsPer1000.perRequest], ["lease", d1RowsPer1000.lease]]) {
    rows.push(g(`${mode}: D1 rows written ≤ 10 per 1,000 successful requests at ≥ 100 req/s`, v, v <= 10, v.toFixed(1)));
  }
  return rows;
}

/** `Infinity` → "no limit", else the count with thousands separators. */
export function formatPerDay(n) {
  return Number.isFinite(n) ? Math.floor(n).toLocaleString("en-US") : "no limit";
}
