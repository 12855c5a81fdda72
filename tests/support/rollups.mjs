// Inserts analytics rollup rows straight into the runtime's local D1, as the hostname's object writes them, so tests check exact figures read from the rollups.

/** Upper bounds (ms) of the duration histogram's buckets (metrics::BUCKETS_MS); one more bucket, +Inf, follows. */
export const BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];
export const MINUTE = 60_000;
export const HOUR = 3_600_000;

/** The histogram (counts per bucket, then +Inf) of a list of latencies. */
export function histogram(latencies) {
  const h = new Array(BUCKETS_MS.length + 1).fill(0);
  for (const l of latencies) {
    const i = BUCKETS_MS.findIndex((b) => l <= b);
    h[i === -1 ? BUCKETS_MS.length : i] += 1;
  }
  return h;
}

const COUNTS = ["c2xx", "c3xx", "c4xx", "c5xx", "cerr", "rate_limited", "denied", "no_backend", "retried", "failed_over"];

/**
 * Inserts rows into `rollup_minutes` (or `table`). Each row: `hostname`, `t_ms` (the period's
 * start), `backend` ('' = the hostname as clients saw it), any of the counts above, and either
 * `latencies` (sets hist and latency_sum_ms) or `hist`/`latency_sum_ms`; `requests` defaults to
 * the sum of the status classes and cerr; `samples` (minute rows of backend '') is a list of log rows.
 * `ifAbsent`: keep a row the object already wrote for that key (the test only needs some figures there).
 */
export async function insertRollups(lb, rows, { table = "rollup_minutes", ifAbsent = false } = {}) {
  const db = await lb.mf.getD1Database("DB");
  for (const r of rows) {
    const counts = Object.fromEntries(COUNTS.map((k) => [k, r[k] ?? 0]));
    const requests = r.requests ?? counts.c2xx + counts.c3xx + counts.c4xx + counts.c5xx + counts.cerr;
    const hist = r.hist ?? histogram(r.latencies ?? []);
    const latencySum = r.latency_sum_ms ?? (r.latencies ?? []).reduce((a, b) => a + b, 0);
    const cols = ["hostname", "t_ms", "backend", "requests", ...COUNTS, "latency_sum_ms", "hist"];
    const values = [r.hostname, r.t_ms, r.backend ?? "", requests, ...COUNTS.map((k) => counts[k]), latencySum, JSON.stringify(hist)];
    if (table === "rollup_minutes" && r.samples) {
      cols.push("samples");
      values.push(JSON.stringify(r.samples));
    }
    await db
      .prepare(`INSERT${ifAbsent ? " OR IGNORE" : ""} INTO ${table} (${cols.join(", ")}) VALUES (${cols.map((_, i) => `?${i + 1}`).join(", ")})`)
      .bind(...values)
      .run();
  }
}
