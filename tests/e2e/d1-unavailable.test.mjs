// End to end: with D1 refusing every query (no migrations applied: its tables are missing), balancing, failover, config writes, an API-created service, health checks, webhooks and Prometheus go on; the D1 views answer 503 unavailable:d1 and the console shows them as unavailable; once D1 answers, /admin/d1 says so and the budget banner follows the day's rows written.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stopAll, waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";
import { startReceiver } from "../support/receiver.mjs";
import { applyMigrations } from "../support/runtime.mjs";
import { api, consoleFor, shot, signIn } from "../support/console.mjs";

const SECRET = "whsec-d1-unavailable-0123456789";
const BUDGET = 2000;
/** What D1 (Miniflare's SQLite) says when the migrations never ran. */
const MISSING_TABLE = /no such table/;

/** A reason is D1's message: no debug dump, no stack. */
function assertReason(reason, what) {
  assert.match(reason, MISSING_TABLE, what);
  assert.doesNotMatch(reason, /D1Error|cloudflare-internal|^Error: /, what);
}

/** Sends one request to `host` and returns its status and the backend that answered. */
async function served(lb, host) {
  const res = await lb.fetch(host, "/");
  const text = await res.text();
  let backend = null;
  try {
    backend = JSON.parse(text).backend ?? null;
  } catch {}
  return { status: res.status, backend };
}

async function backendState(lb, host, url) {
  const st = await api(lb, `/admin/services/${host}`);
  return st.backends?.find((b) => b.url === url);
}

function assertUnavailable(res, body, what) {
  assert.equal(res.status, 503, `${what}: ${JSON.stringify(body)}`);
  assert.equal(body.unavailable, "d1", what);
  assertReason(body.reason, what);
  assert.match(body.error, /unavailable: D1 refused the query/, what);
}

test("D1 unavailable: balancing, config, health, webhooks and Prometheus go on; D1 views say unavailable; D1's return is seen", async (t) => {
  const [a1, a2, a3, n1] = await backendsFor(t, ["a1", "a2", "a3", "n1"]);
  const rx = await startReceiver("rx", { secret: SECRET });
  t.after(() => stopAll([rx]));
  const { lb, base, page, w } = await consoleFor(
    t,
    {
      hostname: "down.test",
      backends: [a1.url, a2.url],
      activeHealthChecks: { interval: 0.5, timeout: 0.3, consecutive_up: 1, consecutive_down: 1 },
      connection_error_handling: { connection_timeout_ms: 500, immediate_failover: true, max_connection_retries: 2 },
      retries: 1,
      notifications: { webhooks: [{ url: `${rx.url}/hook`, secret: SECRET }] },
    },
    { runtime: { migrations: false }, bindings: { D1_DAILY_ROWS_BUDGET: String(BUDGET) } },
  );

  await t.test("a DEFAULT_BACKENDS hostname balances over both backends", async () => {
    const seen = new Set();
    for (let i = 0; i < 10; i++) {
      const r = await served(lb, "down.test");
      assert.equal(r.status, 200);
      seen.add(r.backend);
    }
    assert.deepEqual([...seen].sort(), ["a1", "a2"]);
  });

  await t.test("a killed backend fails over, is marked down by health checks, and the webhook is delivered", async () => {
    await a1.kill();
    for (let i = 0; i < 10; i++) {
      const r = await served(lb, "down.test");
      assert.equal(r.status, 200);
      assert.equal(r.backend, "a2");
    }
    await waitFor(async () => (await backendState(lb, "down.test", a1.url))?.healthy === false, { timeoutMs: 15000, what: "a1 marked down" });
    const down = await waitFor(() => rx.ofKind("backend.down")[0], { timeoutMs: 20000, what: "backend.down webhook" });
    assert.equal(down.body.details.backend, a1.url);
    assert.equal(down.body.hostname, "down.test");
  });

  await t.test("a config write through the API takes effect", async () => {
    const cfg = await api(lb, "/admin/services/down.test/config");
    const res = await lb.admin("/admin/services/down.test/config", {
      method: "PUT",
      headers: { "if-match": `"${cfg.version}"` },
      body: JSON.stringify({ ...cfg.config, backends: [a3.url] }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json()).version, cfg.version + 1);
    for (let i = 0; i < 5; i++) assert.deepEqual(await served(lb, "down.test"), { status: 200, backend: "a3" });
    await waitFor(() => rx.ofKind("config.changed")[0], { timeoutMs: 15000, what: "config.changed webhook" });
  });

  await t.test("a service created through the API balances without the D1 registry", async () => {
    const res = await lb.admin("/admin/services/new.test/config", {
      method: "PUT",
      body: JSON.stringify({ backends: [n1.url], activeHealthChecks: { interval: 600, timeout: 2 } }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    for (let i = 0; i < 3; i++) assert.deepEqual(await served(lb, "new.test"), { status: 200, backend: "n1" });
    // An unknown hostname is still refused, by its object now that the registry cannot filter.
    const unknown = await lb.fetch("nobody.test", "/");
    assert.equal(unknown.status, 421);
    await unknown.arrayBuffer();
  });

  await t.test("Prometheus scrapes, with flowbalance_d1_up 0", async () => {
    const res = await lb.admin("/admin/metrics");
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /^flowbalance_d1_up 0$/m);
    assert.match(text, /^flowbalance_requests_total\{hostname="down\.test",backend="[^"]+",code_class="2xx"\} \d+$/m);
    assert.ok(text.includes(`flowbalance_backend_up{hostname="down.test",backend="${a3.url}"} 1\n`), "the new backend's series");
  });

  await t.test("the D1 views answer 503 unavailable:d1 with D1's reason; /admin/d1 says down", async () => {
    for (const path of ["/admin/services/down.test/logs", "/admin/services/down.test/metrics?window=300&bucket=60", "/admin/services/down.test/health-history"]) {
      const res = await lb.admin(path);
      assertUnavailable(res, await res.json(), path);
    }
    const list = await api(lb, "/admin/services");
    assert.deepEqual(
      list.services.map((s) => s.hostname),
      ["down.test"],
    );
    // Health comes from the object: a3 alone since the config write, probed healthy.
    assert.deepEqual([list.services[0].health, list.services[0].healthy_backends, list.services[0].backends], ["healthy", 1, 1]);
    assert.equal(list.traffic_unavailable.unavailable, "d1");
    assertReason(list.traffic_unavailable.reason, "/admin/services");
    const d1 = await api(lb, "/admin/d1");
    assert.equal(d1.up, false);
    assertReason(d1.reason, "/admin/d1");
    assert.deepEqual({ budget: d1.budget, rows_today: d1.rows_today, state: d1.state }, { budget: BUDGET, rows_today: 0, state: "ok" });
  });

  await t.test("the console shows D1 as unavailable on the overview and unavailable cards in the D1 views", async () => {
    for (const part of ["/logs", "/health-history", "/metrics?window"]) w.allow(part, 503);
    await signIn(page, base);
    const tile = page.locator("#d1-state");
    await tile.getByText("unavailable", { exact: true }).waitFor();
    assert.match(await tile.innerText(), MISSING_TABLE);
    await page.getByRole("heading", { name: "Traffic figures unavailable" }).waitFor();
    await page.locator('#services tr[data-host="down.test"]').waitFor();
    await shot(page, "d1-unavailable-overview");
    for (const [tab, title] of [
      ["analytics", "Analytics unavailable"],
      ["logs", "The request log unavailable"],
      ["health", "The health history unavailable"],
    ]) {
      await page.goto(`${base}#/services/down.test/${tab}`);
      const card = page.locator('[data-unavailable="d1"]');
      await card.getByRole("heading", { name: title }).waitFor();
      assert.match(await card.innerText(), MISSING_TABLE);
      assert.equal(await page.locator(".error").count(), 0, `${tab}: no error text`);
    }
    w.check("the D1 views while D1 is down");
  });

  await t.test("once D1 answers, /admin/d1 and Prometheus say up, and the budget banner follows the day's rows", async () => {
    await applyMigrations(lb.db);
    const d1 = await api(lb, "/admin/d1");
    // The objects write what they held while D1 was away as soon as it answers: a few rows, counted.
    assert.deepEqual({ up: d1.up, reason: d1.reason, budget: d1.budget, state: d1.state }, { up: true, reason: null, budget: BUDGET, state: "ok" });
    assert.ok(d1.rows_today < 200, `only the held rows so far: ${d1.rows_today}`);
    assert.match(await (await lb.admin("/admin/metrics")).text(), /^flowbalance_d1_up 1$/m);
    const logs = await lb.admin("/admin/services/down.test/logs");
    assert.equal(logs.status, 200);
    await logs.arrayBuffer();

    const today = new Date().toISOString().slice(0, 10);
    // 80% of the budget: sampled successes stop. Two tables, summed.
    await lb.db.prepare("INSERT INTO d1_usage (day, tbl, rows) VALUES (?1, 'request_logs', 1000), (?1, 'rollup_minutes', 600)").bind(today).run();
    // Yesterday's rows count against yesterday's budget only.
    await lb.db.prepare("INSERT INTO d1_usage (day, tbl, rows) VALUES ('2000-01-01', 'request_logs', 99999)").run();
    const at80 = await api(lb, "/admin/d1");
    assert.equal(at80.state, "samples_stopped");
    // The objects' own writes are in the day's count too (1600 inserted here, a few from the writers).
    assert.ok(at80.rows_today >= 1600 && at80.rows_today < 1800, `${at80.rows_today} rows today`);
    await page.goto(`${base}#/`);
    const banner = page.locator("#d1-budget");
    await banner.getByRole("heading", { name: "D1 daily budget at 80%: sampled successes stopped" }).waitFor();
    await page.locator("#d1-state").getByText(/^1[67]\d\d \/ 2000 rows today$/).waitFor();

    await lb.db.prepare("UPDATE d1_usage SET rows = 1400 WHERE day = ?1 AND tbl = 'request_logs'").bind(today).run();
    assert.equal((await api(lb, "/admin/d1")).state, "exhausted");
    await banner.getByRole("heading", { name: "D1 daily budget reached: request-log rows are counted, not written" }).waitFor({ timeout: 15000 });
    assert.match(await banner.innerText(), /2\d\d\d of 2000 rows written today/);
    await shot(page, "d1-budget-reached");
    w.check("the budget banner");
  });
});

test("a D1_DAILY_ROWS_BUDGET that cannot be read falls back to the default", { timeout: 60000 }, async (t) => {
  const lb = await balancerFor(t, { defaultBackends: { hostname: "x.test", backends: ["http://127.0.0.1:9"] }, bindings: { D1_DAILY_ROWS_BUDGET: "lots" } });
  const d1 = await api(lb, "/admin/d1");
  assert.deepEqual(d1, { up: true, reason: null, budget: 50000, rows_today: 0, state: "ok" });
});
