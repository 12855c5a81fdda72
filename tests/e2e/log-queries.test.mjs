// End to end: the request log's filters and paging over kept rows and the rollups' sampled successes, and metrics read from rollup rows of known values (exact counts, interpolated percentiles, buckets, hour rows for long windows).
import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";
import { BUCKETS_MS, HOUR, MINUTE, insertRollups } from "../support/rollups.mjs";

const B1 = "http://127.0.0.1:9/one";
const B2 = "http://127.0.0.1:9/two";

/** Inserts rows straight into the log table (the Worker writes the same columns in batches). */
async function insert(lb, rows) {
  const db = await lb.mf.getD1Database("DB");
  for (const r of rows) {
    await db
      .prepare("INSERT INTO request_logs (ts_ms, hostname, method, path, status, backend, attempts, latency_ms, kept, failed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
      .bind(r.ts_ms, r.hostname ?? "log.test", r.method ?? "GET", r.path ?? "/", r.status ?? 200, r.backend === undefined ? B1 : r.backend, r.attempts ?? 1, r.latency_ms ?? 10, r.kept ?? null, r.failed ? JSON.stringify(r.failed) : null)
      .run();
  }
}

async function setup(t) {
  const [b] = await backendsFor(t, ["x1"]);
  return balancerFor(t, { defaultBackends: { activeHealthChecks: { interval: 60, timeout: 2 }, hostname: "log.test", backends: [b.url] } });
}

const json = async (lb, path) => {
  const res = await lb.admin(path);
  return { status: res.status, body: await res.json() };
};

test("the log (kept rows and sampled successes) is filtered by status class, backend, method and path prefix, and paged by cursor without gaps or repeats", async (t) => {
  const lb = await setup(t);
  const now = Date.now();
  const rows = [];
  for (let i = 0; i < 60; i++) {
    const status = i % 5 === 0 ? 503 : i % 7 === 0 ? 404 : 200;
    rows.push({
      ts_ms: now - 60_000 + i * 500,
      method: i % 3 === 0 ? "POST" : "GET",
      path: i % 4 === 0 ? `/api/50%_/${i}` : `/web/${i}`,
      status,
      backend: i % 2 ? B2 : B1,
      // Some successes are samples inside the minute's rollup row; the other rows are kept rows.
      sampled: status === 200 && i % 3 === 1,
      kept: status === 503 ? "error" : status === 200 ? "slow" : null,
    });
  }
  // Two rows in the same millisecond: the cursor must still split them correctly.
  rows.push({ ts_ms: now - 1000, path: "/same/a", kept: "slow" }, { ts_ms: now - 1000, path: "/same/b", kept: "slow" });
  rows[5].failed = [{ backend: B2, status: null, latency_ms: 3 }];
  await insert(lb, rows.filter((r) => !r.sampled));
  const minutes = new Map();
  for (const r of rows.filter((r) => r.sampled)) {
    const t_ms = Math.floor(r.ts_ms / MINUTE) * MINUTE;
    const sample = { hostname: "log.test", ts_ms: r.ts_ms, method: r.method, path: r.path, status: r.status, backend: r.backend, attempts: 1, latency_ms: 10, kept: "sampled" };
    minutes.set(t_ms, [...(minutes.get(t_ms) ?? []), sample]);
  }
  assert.ok(minutes.size >= 1 && [...minutes.values()].flat().length === 13, "13 samples");
  await insertRollups(lb, [...minutes].map(([t_ms, samples]) => ({ hostname: "log.test", t_ms, backend: "", c2xx: samples.length * 100, samples })));
  // Another hostname's samples are not in this log.
  await insertRollups(lb, [{ hostname: "other.test", t_ms: Math.floor(now / MINUTE) * MINUTE, samples: [{ hostname: "other.test", ts_ms: now - 5, method: "GET", path: "/other", status: 200, backend: B1, attempts: 1, latency_ms: 1 }] }]);
  const expected = (pred) =>
    rows
      .map((r, i) => ({ ...r, i }))
      .filter(pred)
      .sort((a, b) => b.ts_ms - a.ts_ms || b.i - a.i)
      .map((r) => r.path);

  const all = [];
  let before = null;
  for (let pages = 0; pages < 10; pages++) {
    const { status, body } = await json(lb, `/admin/services/log.test/logs?limit=7${before ? `&before=${before}` : ""}`);
    assert.equal(status, 200);
    assert.ok(body.requests.length <= 7);
    all.push(...body.requests.map((r) => r.path));
    before = body.next_before;
    if (!before) break;
  }
  assert.deepEqual(all, expected(() => true), "pages join into the whole log, newest first");

  // Each row says why it was kept, and its failed attempts come back as objects.
  const { body: whole } = await json(lb, "/admin/services/log.test/logs?limit=1000");
  const byPath = new Map(whole.requests.map((r) => [r.path, r]));
  for (const r of rows) assert.equal(byPath.get(r.path).kept, r.sampled ? "sampled" : (r.kept ?? undefined), r.path);
  assert.deepEqual(byPath.get(rows[5].path).failed, rows[5].failed);
  assert.ok(whole.requests.filter((r) => r.kept === "sampled").every((r) => r.id < 0), "samples have negative ids");
  assert.equal(new Set(whole.requests.map((r) => r.id)).size, whole.requests.length, "ids are unique");

  const cases = [
    ["status_class=5xx", (r) => r.status >= 500],
    ["status_class=4xx", (r) => r.status >= 400 && r.status < 500],
    [`backend=${encodeURIComponent(B2)}`, (r) => r.backend === B2],
    ["method=post", (r) => r.method === "POST"],
    // '%' and '_' are literal characters in a prefix, not LIKE wildcards.
    [`path_prefix=${encodeURIComponent("/api/50%_")}`, (r) => r.path.startsWith("/api/50%_")],
    [`path_prefix=${encodeURIComponent("/api/5_")}`, () => false],
    [`status_class=2xx&method=GET&path_prefix=/web/&backend=${encodeURIComponent(B1)}`, (r) => r.status < 300 && r.method === "GET" && r.path.startsWith("/web/") && r.backend === B1],
  ];
  for (const [q, pred] of cases) {
    const { status, body } = await json(lb, `/admin/services/log.test/logs?limit=1000&${q}`);
    assert.equal(status, 200, q);
    assert.deepEqual(body.requests.map((r) => r.path), expected(pred), q);
    assert.equal(body.next_before, null, q);
  }

  for (const [q, param] of [
    ["status_class=6xx", "status_class"],
    ["method=GET%20X", "method"],
    ["path_prefix=api", "path_prefix"],
    ["before=yesterday", "before"],
    ["limit=0", "limit"],
    ["status=5xx", "status"],
  ]) {
    const { status, body } = await json(lb, `/admin/services/log.test/logs?${q}`);
    assert.equal(status, 400, q);
    assert.ok(body.error.startsWith(`${param}:`), `${q}: ${body.error}`);
  }
});

test("metrics from rollups: per-backend counts, success rate and interpolated p50/p95/p99, host totals, buckets, errors by status, hour rows for long windows", async (t) => {
  const lb = await setup(t);
  const bucket = 60_000;
  // Two whole minutes in the past, so the rows sit at known bucket starts.
  const t0 = (Math.floor(Date.now() / bucket) - 2) * bucket;
  const range = (n, f) => Array.from({ length: n }, (_, i) => f(i));
  await insertRollups(lb, [
    // B1: 100 attempts of 1..100 ms in the first minute: 85 2xx, 5 4xx, 10 5xx; 3 retried.
    { hostname: "log.test", t_ms: t0, backend: B1, c2xx: 85, c4xx: 5, c5xx: 10, retried: 3, latencies: range(100, (i) => i + 1) },
    // B2: 20 attempts of (5, 10] ms in the second minute, 2 of them failed connections.
    { hostname: "log.test", t_ms: t0 + bucket, backend: B2, c2xx: 18, cerr: 2, latencies: range(20, () => 7) },
    // The hostname as clients saw it: 118 answered, 8 of them 5xx (B2's failures were retried at B1... or not).
    { hostname: "log.test", t_ms: t0, backend: "", requests: 100, c2xx: 85, c4xx: 5, c5xx: 10, retried: 3, latencies: [9999] },
    { hostname: "log.test", t_ms: t0 + bucket, backend: "", requests: 18, c2xx: 18, latencies: [9999] },
    // Outside the window, and another hostname: neither counts.
    { hostname: "log.test", t_ms: t0 - HOUR, backend: B1, c2xx: 50, latencies: range(50, () => 9999) },
    { hostname: "other.test", t_ms: t0, backend: B1, c2xx: 50, latencies: range(50, () => 9999) },
  ]);
  // Kept rows give exact error codes: 5xx from backends, and FlowBalance's own answers.
  await insert(lb, [
    ...range(3, (i) => ({ ts_ms: t0 + i, status: 503, kept: "error" })),
    ...range(2, (i) => ({ ts_ms: t0 + 10 + i, status: 502, backend: null, kept: "error" })),
    { ts_ms: t0 + 20, status: 429, backend: null, kept: "refused" },
    // A backend's 404 in the log (an old unsampled row) is counted from the rollups, not here.
    { ts_ms: t0 + 30, status: 404 },
  ]);

  const { status, body } = await json(lb, "/admin/services/log.test/metrics?window=900&bucket=60");
  assert.equal(status, 200);
  assert.equal(body.window_s, 900);
  assert.equal(body.bucket_s, 60);
  assert.equal(body.source, "rollups");
  assert.deepEqual(body.buckets_ms, BUCKETS_MS);
  const one = body.backends.find((b) => b.backend === B1);
  const two = body.backends.find((b) => b.backend === B2);
  assert.deepEqual(body.backends.map((b) => b.backend), [B1, B2], "backend '' is not a backend");
  // 1..100 ms spread evenly: interpolation gives the exact ranks back.
  assert.deepEqual(
    { requests: one.requests, errors: one.errors, success_rate: one.success_rate, avg: one.avg_latency_ms, p50: one.p50_ms, p95: one.p95_ms, p99: one.p99_ms, max: one.max_latency_ms, retried: one.retried },
    { requests: 100, errors: 10, success_rate: 0.9, avg: 50.5, p50: 50, p95: 95, p99: 99, max: null, retried: 3 },
  );
  // 20 in (5, 10]: p50 at rank 10 of 20 is 5 + 5 * 0.5 = 7.5 -> 8; p95 5 + 5 * 0.95 = 9.75 -> 10.
  assert.deepEqual(
    { requests: two.requests, errors: two.errors, success_rate: two.success_rate, p50: two.p50_ms, p95: two.p95_ms, p99: two.p99_ms },
    { requests: 20, errors: 2, success_rate: 0.9, p50: 8, p95: 10, p99: 10 },
  );
  assert.deepEqual(
    body.series.map((p) => [p.backend, p.t_ms - t0, p.requests, p.p95_ms]),
    [
      [B1, 0, 100, 95],
      [B2, bucket, 20, 10],
    ],
  );
  // The service total: clients' answers from the '' rows; latency from the backends' histograms
  // (120 attempts: 5 <=5, 25 <=10, 15 <=25, 25 <=50, 50 <=100): p50 at rank 60 is 25 + 25 * 15/25 = 40,
  // p95 at 114 is 50 + 50 * 44/50 = 94, p99 at 118.8 is 50 + 50 * 48.8/50 = 98.8 -> 99.
  assert.deepEqual(
    { requests: body.total.requests, errors: body.total.errors, retried: body.total.retried, p50: body.total.p50_ms, p95: body.total.p95_ms, p99: body.total.p99_ms },
    { requests: 118, errors: 10, retried: 3, p50: 40, p95: 94, p99: 99 },
  );
  assert.deepEqual(body.errors_by_status, [
    { status: 503, class: "5xx", source: "backend", requests: 3 },
    { status: null, class: "4xx", source: "backend", requests: 5 },
    { status: 502, class: "5xx", source: "flowbalance", requests: 2 },
    { status: 429, class: "4xx", source: "flowbalance", requests: 1 },
  ].sort((a, b) => b.requests - a.requests));

  // Without a bucket: totals only. A short window leaves the older minute out.
  const short = await json(lb, "/admin/services/log.test/metrics?window=60");
  assert.equal(short.body.series, null);
  assert.deepEqual(short.body.backends.map((b) => [b.backend, b.requests]), [[B2, 20]]);

  // Windows over a day read the hour rows (and only them): three days, by the hour.
  const h0 = (Math.floor(Date.now() / HOUR) - 48) * HOUR;
  await insertRollups(
    lb,
    [
      { hostname: "log.test", t_ms: h0, backend: B1, c2xx: 400, c5xx: 100, latencies: [...range(250, () => 20), ...range(250, () => 200)] },
      { hostname: "log.test", t_ms: h0 + HOUR, backend: B1, c2xx: 10, latencies: range(10, () => 20) },
      { hostname: "log.test", t_ms: h0, backend: "", requests: 500, c2xx: 400, c5xx: 100 },
      { hostname: "log.test", t_ms: h0 - 4 * 24 * HOUR, backend: B1, c2xx: 1000, latencies: range(1000, () => 1) },
    ],
    { table: "rollup_hours" },
  );
  const long = await json(lb, "/admin/services/log.test/metrics?window=259200&bucket=3600");
  assert.equal(long.status, 200);
  assert.deepEqual(long.body.backends.map((b) => [b.backend, b.requests, b.errors, b.p50_ms]), [[B1, 510, 100, 25]]);
  assert.deepEqual(long.body.series.map((p) => [p.t_ms - h0, p.requests]), [[0, 500], [HOUR, 10]]);
  assert.equal(long.body.total.requests, 500);
  assert.equal((await json(lb, "/admin/services/log.test/metrics?window=7776000")).status, 200);

  // The overview reads the same rollups per hostname.
  // Its health is unknown until the first probe, which the first look at the object starts.
  const svc = await waitFor(async () => {
    const list = await json(lb, "/admin/services?window=900");
    const s = list.body.services.find((x) => x.hostname === "log.test");
    return s.health === "unknown" ? null : s;
  }, { what: "the first probe's result" });
  assert.equal(svc.traffic.requests, 118);
  assert.equal(svc.traffic.p50_ms, 40);
  assert.equal(svc.health, "healthy");

  for (const [q, param] of [
    ["window=0", "window"],
    ["window=7776001", "window"],
    ["window=86400&bucket=30", "bucket"],
    ["window=172800&bucket=600", "bucket"],
    ["window=60&bucket=61", "bucket"],
    ["span=60", "span"],
  ]) {
    const r = await json(lb, `/admin/services/log.test/metrics?${q}`);
    assert.equal(r.status, 400, q);
    assert.ok(r.body.error.startsWith(`${param}:`), `${q}: ${r.body.error}`);
  }
});

test("config validation runs the write parser without storing: canonical config, or every error at its path", async (t) => {
  const lb = await setup(t);
  const post = (body) => lb.admin("/admin/services/new.test/config/validate", { method: "POST", body: JSON.stringify(body) });
  let res = await post({ hostname: "new.test", backends: ["http://127.0.0.1:9/a"] });
  assert.equal(res.status, 200);
  const ok = await res.json();
  assert.equal(ok.valid, true);
  assert.equal(ok.config.retries, 1, "defaults are explicit in the canonical form");
  res = await post({ hostname: "new.test", backends: ["ftp://x"], retries: 99 });
  assert.equal(res.status, 400);
  const bad = await res.json();
  assert.deepEqual(bad.errors.map((e) => e.path).sort(), ["backends[0]", "retries"]);
  // Nothing was stored.
  res = await lb.admin("/admin/services/new.test/config");
  assert.equal(res.status, 404);
  await res.arrayBuffer();
});
