// `npm run bench`, the bill: a steady open-loop rate per decision mode, with the Worker requests, workerd CPU, object requests and D1 rows written it cost.
import http from "node:http";
import { workerdCpuSeconds } from "./bench.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Sums the samples of Prometheus family `name` whose labels include `hostname="<host>"`; `undefined` when there are none. */
export function sumSamples(text, name, host) {
  let sum;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) || !line.includes(`hostname="${host}"`)) continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

async function scrape(lb) {
  const res = await lb.admin("/admin/metrics");
  if (res.status !== 200) throw new Error(`/admin/metrics: ${res.status}`);
  return res.text();
}

/**
 * Rows in each D1 table and the indexes each has (automatic ones included): an insert writes one row
 * plus one entry per index, which is what D1 bills as rows written.
 */
async function d1Tables(lb) {
  const db = await lb.mf.getD1Database("DB");
  const { results } = await db.prepare("SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')").all();
  const tables = results.filter((r) => r.type === "table" && !/^(sqlite_|_cf_|d1_migrations$)/.test(r.name)).map((r) => r.name);
  const out = {};
  for (const t of tables) {
    const { n } = await db.prepare(`SELECT COUNT(*) AS n FROM "${t}"`).first();
    out[t] = { rows: n, indexes: results.filter((r) => r.type === "index" && r.tbl_name === t).length };
  }
  return out;
}

/** Rows written between two `d1Tables` snapshots, by table: new rows × (1 + indexes). Inserts only: updates and deletes are not seen. */
export function rowsWrittenBetween(before, after) {
  const by = {};
  for (const [t, a] of Object.entries(after)) {
    const d = a.rows - (before[t]?.rows ?? 0);
    if (d > 0) by[t] = d * (1 + a.indexes);
  }
  return by;
}

/**
 * Sends `rps` requests a second for `seconds` to `host` on its own schedule (open loop: a slow answer
 * does not delay the next send), at most `maxInFlight` at once (a send due while full is counted as
 * skipped). Resolves when every request sent has been answered or failed.
 */
async function openLoop(url, host, rps, seconds, maxInFlight = 64) {
  const u = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: maxInFlight });
  const total = Math.round(rps * seconds);
  const t0 = performance.now();
  let inFlight = 0;
  const c = { sent: 0, ok: 0, failed: 0, skipped: 0 };
  const pending = new Set();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rps;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    if (inFlight >= maxInFlight) {
      c.skipped++;
      continue;
    }
    inFlight++;
    c.sent++;
    const p = new Promise((resolve) => {
      const req = http.get({ host: u.hostname, port: u.port, path: `/steady/${i}`, agent, headers: { host } }, (res) => {
        res.resume();
        res.on("end", () => {
          if (res.statusCode >= 200 && res.statusCode < 300) c.ok++;
          else c.failed++;
          resolve();
        });
      });
      req.on("error", () => {
        c.failed++;
        resolve();
      });
    }).finally(() => {
      inFlight--;
      pending.delete(p);
    });
    pending.add(p);
  }
  await Promise.all(pending);
  agent.destroy();
  return { ...c, seconds: (performance.now() - t0) / 1000 };
}

/**
 * One mode's bill: `rps` for `seconds` to `host`, then a wait until the minute of the last request has
 * closed plus `flushSlackMs` (the object writes a minute's rollup once the minute is over). Workerd CPU
 * covers the sending only; object requests and D1 rows the whole phase including the flush.
 */
export async function steadyPhase(lb, host, { rps = 100, seconds = 60, flushSlackMs = 15_000 } = {}) {
  const m0 = await scrape(lb);
  const d0 = await d1Tables(lb);
  const cpu0 = workerdCpuSeconds();
  const load = await openLoop(lb.url, host, rps, seconds);
  const cpuMs = (workerdCpuSeconds() - cpu0) * 1000;
  const minuteOver = Math.ceil(Date.now() / 60_000) * 60_000;
  await sleep(minuteOver - Date.now() + flushSlackMs);
  const m1 = await scrape(lb);
  const d1 = await d1Tables(lb);
  // The scrape that reads the counter is one object request itself.
  const objectRequests = (sumSamples(m1, "flowbalance_object_requests_total", host) ?? NaN) - (sumSamples(m0, "flowbalance_object_requests_total", host) ?? 0) - 1;
  const byTable = rowsWrittenBetween(d0, d1);
  const counted = Object.values(byTable).reduce((a, b) => a + b, 0);
  const metric1 = sumSamples(m1, "flowbalance_d1_rows_written_total", host);
  const d1RowsWritten = metric1 !== undefined ? metric1 - (sumSamples(m0, "flowbalance_d1_rows_written_total", host) ?? 0) : counted;
  return {
    host,
    load,
    measured: { requests: load.sent, workerRequests: load.sent, cpuMs, objectRequests, d1RowsWritten },
    d1Method: metric1 !== undefined ? "flowbalance_d1_rows_written_total (D1's own rows_written)" : "row counts of the local D1 before/after × (1 + indexes of the table); inserts only",
    d1ByTable: byTable,
    d1RowsCounted: counted,
  };
}
