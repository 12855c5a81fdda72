// End to end: the request log's filters and paging, and metrics with percentiles and buckets computed by SQLite in D1, against rows of known values.
import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";

const B1 = "http://127.0.0.1:9/one";
const B2 = "http://127.0.0.1:9/two";

/** Inserts rows straight into the log table (the Worker writes the same columns in batches). */
async function insert(lb, rows) {
  const db = await lb.mf.getD1Database("DB");
  for (const r of rows) {
    await db
      .prepare("INSERT INTO request_logs (ts_ms, hostname, method, path, status, backend, attempts, latency_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
      .bind(r.ts_ms, r.hostname ?? "log.test", r.method ?? "GET", r.path ?? "/", r.status ?? 200, r.backend === undefined ? B1 : r.backend, r.attempts ?? 1, r.latency_ms ?? 10)
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

test("the log is filtered by status class, backend, method and path prefix, and paged by cursor without gaps or repeats", async (t) => {
  const lb = await setup(t);
  const now = Date.now();
  const rows = [];
  for (let i = 0; i < 60; i++) {
    rows.push({
      ts_ms: now - 60_000 + i * 500,
      method: i % 3 === 0 ? "POST" : "GET",
      path: i % 4 === 0 ? `/api/50%_/${i}` : `/web/${i}`,
      status: i % 5 === 0 ? 503 : i % 7 === 0 ? 404 : 200,
      backend: i % 2 ? B2 : B1,
    });
  }
  // Two rows in the same millisecond: the cursor must still split them correctly.
  rows.push({ ts_ms: now - 1000, path: "/same/a" }, { ts_ms: now - 1000, path: "/same/b" });
  await insert(lb, rows);
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

test("metrics: per-backend counts, success rate and nearest-rank p50/p95/p99 over the window, and aligned buckets", async (t) => {
  const lb = await setup(t);
  const bucket = 60_000;
  // Two whole buckets in the past, so the rows sit at known bucket starts.
  const t0 = (Math.floor(Date.now() / bucket) - 2) * bucket;
  const rows = [];
  // B1: latencies 1..100 ms in the first bucket, 10 of them 5xx; B2: 20 rows of 7 ms in the second.
  for (let i = 1; i <= 100; i++) rows.push({ ts_ms: t0 + i * 100, backend: B1, latency_ms: i, status: i <= 10 ? 502 : 200, attempts: i <= 3 ? 2 : 1 });
  for (let i = 0; i < 20; i++) rows.push({ ts_ms: t0 + bucket + i * 100, backend: B2, latency_ms: 7 });
  // Outside the window, and another hostname: neither counts.
  rows.push({ ts_ms: t0 - 3_600_000, backend: B1, latency_ms: 9999 }, { ts_ms: t0 + 50, hostname: "other.test", latency_ms: 9999 });
  await insert(lb, rows);

  const { status, body } = await json(lb, "/admin/services/log.test/metrics?window=900&bucket=60");
  assert.equal(status, 200);
  assert.equal(body.window_s, 900);
  assert.equal(body.bucket_s, 60);
  const one = body.backends.find((b) => b.backend === B1);
  const two = body.backends.find((b) => b.backend === B2);
  assert.deepEqual(
    { requests: one.requests, errors: one.errors, success_rate: one.success_rate, p50: one.p50_ms, p95: one.p95_ms, p99: one.p99_ms, max: one.max_latency_ms, retried: one.retried },
    { requests: 100, errors: 10, success_rate: 0.9, p50: 50, p95: 95, p99: 99, max: 100, retried: 3 },
  );
  assert.deepEqual({ requests: two.requests, p50: two.p50_ms, p99: two.p99_ms, success_rate: two.success_rate }, { requests: 20, p50: 7, p99: 7, success_rate: 1 });
  assert.deepEqual(
    body.series.map((p) => [p.backend, p.t_ms - t0, p.requests, p.p95_ms]),
    [
      [B1, 0, 100, 95],
      [B2, bucket, 20, 7],
    ],
  );

  // Without a bucket: totals only. A short window leaves the old rows out.
  const short = await json(lb, "/admin/services/log.test/metrics?window=60");
  assert.equal(short.body.series, null);
  assert.ok(short.body.backends.every((b) => b.requests < 100), JSON.stringify(short.body.backends));

  // The overview reads the same log per hostname.
  // Its health is unknown until the first probe, which the first look at the object starts.
  const svc = await waitFor(async () => {
    const list = await json(lb, "/admin/services?window=900");
    const s = list.body.services.find((x) => x.hostname === "log.test");
    return s.health === "unknown" ? null : s;
  }, { what: "the first probe's result" });
  assert.equal(svc.traffic.requests, 120);
  assert.equal(svc.health, "healthy");

  for (const [q, param] of [
    ["window=0", "window"],
    ["window=86400&bucket=30", "bucket"],
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
