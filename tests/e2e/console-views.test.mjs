// The console's service views beyond the basics, in headless Chromium against the built Worker: the add-backend form, the health history, webhook deliveries, service-wide analytics with the error breakdown, the config editor's syntax errors and the API docs' contents; and integers stay integers in the JSON the console reads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stopAll, waitFor } from "../support/backends.mjs";
import { backendsFor } from "../support/scoped.mjs";
import { startReceiver } from "../support/receiver.mjs";
import { api, consoleFor, logged, shot, signIn, traffic, watch } from "../support/console.mjs";
import { MINUTE, insertRollups } from "../support/rollups.mjs";

const HOOK_SECRET = "console-views-webhook-secret-0123";
/** Fields that count or identify something: integers, never `6.0`. */
const INTEGER_FIELDS = ["id", "requests", "errors", "retried", "t_ms", "ts_ms", "status", "attempts", "p50_ms", "p95_ms", "p99_ms", "max_latency_ms", "latency_ms", "window_s", "bucket_s", "now_ms"];

/** Asserts every number under an INTEGER_FIELDS key in the raw JSON `text` is written as an integer; returns how many it checked. */
function assertIntegers(text, what) {
  const found = [...text.matchAll(new RegExp(`"(${INTEGER_FIELDS.join("|")})":(-?[0-9][0-9.eE+-]*)`, "g"))];
  const floats = found.filter((m) => !/^-?\d+$/.test(m[2])).map((m) => `${m[1]}: ${m[2]}`);
  assert.deepEqual(floats, [], `${what}: counts and ids written as floats`);
  return found.length;
}

test("console: add a backend, read health history, webhook deliveries and service-wide analytics", async (t) => {
  const [g1, g2, g3, g4] = await backendsFor(t, ["g1", "g2", "g3", "g4"]);
  for (const b of [g1, g2, g3, g4]) {
    b.handler = (req, res) => {
      if (req.url.startsWith("/missing")) return res.writeHead(404, { "content-type": "text/plain" }).end("no such page");
      res.writeHead(200, { "content-type": "text/plain" }).end(b.name);
    };
  }
  const [gone] = await backendsFor(t, ["gone"]);
  const goneUrl = gone.url;
  await gone.kill();
  const ok = await startReceiver("hook-ok", { secret: HOOK_SECRET });
  const failing = await startReceiver("hook-failing", { secret: HOOK_SECRET });
  t.after(() => stopAll([ok, failing]));
  failing.handler = (req, res) => res.writeHead(500, { "content-type": "text/plain" }).end("receiver broken");
  const { lb, base, page, w } = await consoleFor(
    t,
    {
      activeHealthChecks: { interval: 60, timeout: 2 },
      services: [
        {
          hostname: "views.test",
          backends: [g1.url, g2.url],
          notifications: { webhooks: [{ url: `${ok.url}/hook`, secret: HOOK_SECRET }, { url: `${failing.url}/hook`, secret: HOOK_SECRET }] },
        },
        { hostname: "dead.test", backends: [goneUrl], retries: 0 },
      ],
    },
    { viewport: { width: 1280, height: 900 } },
  );
  await signIn(page, base);

  await t.test("add a backend from the Backends tab, with errors at their fields", async () => {
    await page.goto(`${base}#/services/views.test`);
    const form = page.locator("#add-backend");
    await page.locator(`#backends tr[data-backend="${g1.url}"]`).waitFor();
    const before = await api(lb, "/admin/services/views.test/config");
    w.allow("/admin/services/views.test/backends", 400);
    // Not a URL the balancer can use: the error is under the URL field.
    await form.locator('input[name="url"]').fill("ftp://nope");
    await form.getByRole("button", { name: "Add backend" }).click();
    const urlError = form.locator('[data-field="url"] .field-error');
    await waitFor(async () => /http/.test(await urlError.innerText()), { what: "the URL error under its field" });
    assert.equal(await form.locator('input[name="url"]').getAttribute("aria-invalid"), "true");
    // A weight out of range: under the weight field, and the URL error is gone.
    await form.locator('input[name="url"]').fill(g3.url);
    await form.locator('input[name="weight"]').fill("5000");
    await form.getByRole("button", { name: "Add backend" }).click();
    const weightError = form.locator('[data-field="weight"] .field-error');
    await waitFor(async () => /1000/.test(await weightError.innerText()), { what: "the weight error under its field" });
    assert.equal(await urlError.innerText(), "");
    // Already a backend: said under the URL.
    await form.locator('input[name="url"]').fill(g1.url);
    await form.locator('input[name="weight"]').fill("");
    await form.getByRole("button", { name: "Add backend" }).click();
    await waitFor(async () => /already a backend/.test(await urlError.innerText()), { what: "the duplicate named under the URL" });
    assert.equal((await api(lb, "/admin/services/views.test/config")).version, before.version, "a refused add stored something");
    await shot(page, "add-backend-error");
    // A good one: stored on top of the version shown, and in the table.
    await form.locator('input[name="url"]').fill(g3.url);
    await form.locator('input[name="weight"]').fill("3");
    await form.locator('select[name="state"]').selectOption("draining");
    await form.getByRole("button", { name: "Add backend" }).click();
    const row = page.locator(`#backends tr[data-backend="${g3.url}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /draining/);
    const after = await api(lb, "/admin/services/views.test/config");
    assert.equal(after.version, before.version + 1);
    assert.deepEqual(
      after.config.backends.filter((b) => b.url === g3.url).map((b) => [b.weight, b.state]),
      [[3, "draining"]],
    );
    assert.equal(await form.locator('input[name="url"]').inputValue(), "", "the form is cleared after adding");
    // Enabled from the table, it takes traffic with the others.
    await row.getByRole("button", { name: "Enable" }).click();
    await waitFor(async () => /enabled/.test(await row.innerText()), { what: "the new backend enabled" });
    await traffic(lb, "views.test", 12);
    assert.ok(g3.requests().length > 0, "the added backend got no traffic");
    await page.getByRole("button", { name: "Run health checks now" }).click();
    await waitFor(async () => !/never/.test(await row.locator("td").nth(7).innerText()), { what: "the new backend's probe in the table" });
    await shot(page, "service-backends-add");
    w.check("the add-backend form");
  });

  await t.test("adding on top of a version someone else replaced is refused (412) and the table reloaded", async () => {
    // Timers frozen: the table's 5 s refresh cannot pick the other write up before the submit.
    const p2 = await page.context().newPage();
    t.after(() => p2.close());
    const w2 = watch(p2);
    await p2.clock.install();
    await p2.goto(`${base}#/services/views.test`);
    await p2.locator(`#backends tr[data-backend="${g3.url}"]`).waitFor();
    const theirs = await lb.admin("/admin/services/views.test/backends", { method: "PATCH", body: JSON.stringify({ url: g3.url, weight: 7 }) });
    assert.equal(theirs.status, 200, await theirs.text());
    const version = (await api(lb, "/admin/services/views.test/config")).version;
    w2.allow("/admin/services/views.test/backends", 412);
    const form = p2.locator("#add-backend");
    await form.locator('input[name="url"]').fill(g4.url);
    await form.getByRole("button", { name: "Add backend" }).click();
    await waitFor(async () => /Someone else changed this service/.test(await p2.locator("#add-backend-message").innerText()), { what: "the 412 explained" });
    assert.equal((await api(lb, "/admin/services/views.test/config")).version, version, "the stale add was stored");
    // The table now shows their change; adding again goes on top of it.
    await waitFor(async () => /\b7\b/.test(await p2.locator(`#backends tr[data-backend="${g3.url}"] td`).nth(5).innerText()), { what: "their weight in the reloaded table" });
    await form.getByRole("button", { name: "Add backend" }).click();
    await p2.locator(`#backends tr[data-backend="${g4.url}"]`).waitFor();
    assert.equal((await api(lb, "/admin/services/views.test/config")).version, version + 1);
    w2.check("the add-backend conflict");
    await p2.close();
  });

  await t.test("the health history shows a backend going down, filtered by backend", async () => {
    await g2.kill();
    // Probes on demand until the history (D1, written off the request path) holds g2's fall.
    await waitFor(
      async () => {
        await (await lb.admin("/admin/services/views.test/health-check", { method: "POST" })).arrayBuffer();
        const { events } = await api(lb, "/admin/services/views.test/health-history");
        return events.some((e) => e.backend === g2.url && e.kind === "health" && e.to === "down");
      },
      { timeoutMs: 30000, stepMs: 300, what: "g2 down in the health history" },
    );
    await page.getByRole("link", { name: "Health history" }).click();
    const down = page.locator(`#health-events tr[data-backend="${g2.url}"][data-kind="health"]`);
    await down.first().waitFor();
    assert.match(await down.first().innerText(), /up\s*→\s*down/);
    await page.locator('select[name="backend"]').selectOption(g1.url);
    await waitFor(async () => (await page.locator(`#health-events tr[data-backend="${g2.url}"]`).count()) === 0, { what: "g2's rows filtered out" });
    for (const b of await page.locator("#health-events tbody tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.backend))) assert.equal(b, g1.url);
    await page.locator('select[name="backend"]').selectOption("");
    await down.first().waitFor();
    await shot(page, "health-history");
    w.check("the health history");
  });

  await t.test("webhook deliveries: delivered, failing with its status and error, and a test event", async () => {
    await page.getByRole("link", { name: "Webhooks" }).click();
    await page.locator("#webhook-summary").waitFor();
    await page.getByRole("button", { name: "Send a test event" }).click();
    const okRow = page.locator(`#deliveries tr[data-event="test"][data-url="${ok.url}/hook"]`);
    const badRow = page.locator(`#deliveries tr[data-event="test"][data-url="${failing.url}/hook"]`);
    await waitFor(async () => (await okRow.count()) === 1 && /delivered/.test(await okRow.innerText()), { timeoutMs: 20000, what: "the test event delivered to the working receiver" });
    await waitFor(async () => (await badRow.count()) === 1 && /\b500\b/.test(await badRow.innerText()), { timeoutMs: 20000, what: "the failing receiver's 500 in its row" });
    const cells = await badRow.locator("td").allInnerTexts();
    assert.match(cells[3], /pending|given up/);
    assert.ok(Number(cells[4]) >= 1, `attempts: ${cells[4]}`);
    assert.ok(cells[6].length > 0, "the last error is shown");
    assert.equal(ok.ofKind("test").length, 1);
    // g2's fall was an event too.
    assert.ok((await page.locator('#deliveries tr[data-event="backend.down"]').count()) >= 1);
    assert.match(await page.locator("#webhook-summary").innerText(), /\d+ pending · \d+ dropped/);
    await shot(page, "webhooks");
    w.check("webhook deliveries");
  });

  await t.test("analytics: service-wide totals and errors by status and source", async () => {
    // The analytics read the object's rollups: rows of known figures, a few minutes back (the
    // object writes the current minutes), and FlowBalance's own 5xx from real requests' kept rows.
    const t_ms = Math.floor(Date.now() / MINUTE) * MINUTE - 10 * MINUTE;
    await insertRollups(lb, [
      { hostname: "views.test", t_ms, backend: g1.url, c2xx: 10, c4xx: 3, latencies: [...Array(10).fill(20), 2, 2, 2] },
      { hostname: "views.test", t_ms, backend: g2.url, c2xx: 10, c4xx: 2, latencies: [...Array(10).fill(30), 3, 3] },
      {
        hostname: "views.test",
        t_ms,
        backend: "",
        requests: 25,
        c2xx: 20,
        c4xx: 5,
        samples: [{ hostname: "views.test", ts_ms: t_ms + 1000, method: "GET", path: "/sampled/one", status: 200, backend: g1.url, attempts: 1, latency_ms: 20, kept: "sampled" }],
      },
    ]);
    for (const s of await traffic(lb, "dead.test", 3)) assert.ok(s >= 500, `dead.test answered ${s}`);
    await logged(lb, "dead.test", 3);
    await page.getByRole("link", { name: "Analytics" }).click();
    const totals = page.locator("#service-totals");
    await totals.waitFor();
    const m = await api(lb, "/admin/services/views.test/metrics?window=900&bucket=30");
    const db = await lb.mf.getD1Database("DB");
    const answered = await db.prepare("SELECT SUM(requests) AS n FROM rollup_minutes WHERE hostname = 'views.test' AND backend = '' AND t_ms >= ?1").bind(m.now_ms - 960_000).first();
    assert.equal(m.total.requests, answered.n, "the service total is what clients were answered (backend '' rows)");
    assert.ok(m.total.requests >= 25);
    await waitFor(async () => (await totals.locator('[data-total="Requests"] strong').innerText()) === String(m.total.requests), { what: "the requests tile" });
    // A backend's 4xx are counted by class (the rollups do not keep exact 4xx codes).
    const missing = page.locator('#errors-table tr[data-status="4xx"][data-source="backend"]');
    await missing.waitFor();
    assert.match(await missing.innerText(), /4xx\s+a backend\s+5\b/);
    await shot(page, "analytics");
    // FlowBalance's own answers, when no backend could answer, are told apart.
    await page.goto(`${base}#/services/dead.test/analytics`);
    const ours = page.locator('#errors-table tr[data-source="flowbalance"]');
    await ours.first().waitFor();
    assert.match(await ours.first().innerText(), /FlowBalance/);
    w.check("analytics");
  });

  await t.test("the request log says why each row was kept and at what rate successes are sampled", async () => {
    await page.goto(`${base}#/services/views.test/logs`);
    const note = page.locator("#log-sampling");
    await note.waitFor();
    assert.match(await note.innerText(), /successes are sampled at 1%/);
    const form = page.locator("#log-filters");
    await form.locator('input[name="path_prefix"]').fill("/sampled/");
    await form.getByRole("button", { name: "Apply" }).click();
    const rows = page.locator("#log-table tbody tr");
    await waitFor(async () => (await rows.count()) === 1 && /\/sampled\/one/.test(await rows.first().innerText()), { what: "the sampled success in the log" });
    assert.equal(await rows.first().locator("td[data-kept]").innerText(), "sampled");
    await shot(page, "request-log-kept");
    w.check("the request log's kept column");
  });

  await t.test("counts and ids are integers in the API's JSON", async () => {
    let checked = 0;
    for (const p of ["/admin/services/views.test/logs?limit=50", "/admin/services/views.test/metrics?window=900&bucket=30", "/admin/services/dead.test/metrics?window=900", "/admin/services?window=900"]) {
      const text = await (await lb.admin(p)).text();
      checked += assertIntegers(text, p);
    }
    assert.ok(checked > 50, `only ${checked} numbers checked`);
  });

  await t.test("a JSON syntax error in the config editor names one line and column", async () => {
    await page.goto(`${base}#/services/views.test/config`);
    const editor = page.locator("#config-editor");
    await editor.waitFor();
    await waitFor(async () => (await editor.inputValue()).length > 0, { what: "the config in the editor" });
    const lines = (await editor.inputValue()).split("\n");
    // Drop the comma ending a line deep in the text.
    const k = lines.findIndex((l, i) => i > 20 && /,\s*$/.test(l) && /^\s+"/.test(lines[i + 1] ?? ""));
    assert.ok(k > 0);
    lines[k] = lines[k].replace(/,\s*$/, "");
    const broken = lines.join("\n");
    const wantLine = k + 2;
    const wantColumn = lines[k + 1].search(/\S/) + 1;
    await editor.fill(broken);
    await page.getByRole("button", { name: "Review changes" }).click();
    const errors = page.locator("#config-errors");
    await errors.waitFor();
    const text = await errors.innerText();
    assert.match(text, new RegExp(`line ${wantLine}, column ${wantColumn}: `));
    assert.equal(text.match(/line \d+/g).length, 1, `more than one line named: ${text}`);
    assert.doesNotMatch(text, /position \d+/);
    // The link selects the place in the editor.
    await errors.getByRole("button", { name: `line ${wantLine}, column ${wantColumn}` }).click();
    const start = await editor.evaluate((el) => el.selectionStart);
    assert.equal(broken.slice(0, start).split("\n").length, wantLine);
    await shot(page, "config-syntax-error");
    w.check("the config editor's syntax error");
  });

  await t.test("the API docs open with a table of contents that jumps to each endpoint", async () => {
    await page.getByRole("link", { name: "API docs" }).click();
    const toc = page.locator("#docs-toc");
    await toc.waitFor();
    const doc = await api(lb, "/admin/openapi.json");
    const operations = Object.values(doc.paths).flatMap((item) => Object.keys(item).filter((k) => ["get", "post", "put", "patch", "delete"].includes(k)));
    assert.equal(await toc.locator('a[href^="#op-"]').count(), operations.length, "every endpoint is in the contents");
    assert.equal(await toc.locator('a[href^="#schema-"]').count(), Object.keys(doc.components.schemas).length);
    await shot(page, "api-docs-contents");
    await toc.locator('a[href="#op-get-/admin/services/{hostname}/health-history"]').click();
    const target = page.locator('[id="op-get-/admin/services/{hostname}/health-history"]');
    await waitFor(async () => {
      const box = await target.boundingBox();
      return box && box.y > -2 && box.y < 200;
    }, { what: "the endpoint scrolled to the top" });
    assert.equal(new URL(page.url()).hash, "#/docs", "the contents changed the console's route");
    await toc.locator('a[href="#schema-Backend"]').click();
    await waitFor(async () => page.locator('[id="schema-Backend"]').evaluate((d) => d.open), { what: "the schema opened" });
    w.check("the API docs contents");
  });

  await t.test("deleting an API-edited service with a deployed config puts the deployed config back", async () => {
    const before = await api(lb, "/admin/services/views.test/config");
    assert.equal(before.source, "api", "the add-backend step above edited views.test through the API");
    await page.goto(`${base}#/services/views.test/config`);
    await page.locator("#delete-service").click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Type views.test to confirm").fill("views.test");
    await dialog.getByRole("button", { name: "Delete service" }).click();
    await waitFor(async () => /back on its deployed config/.test(await page.locator("#toasts").innerText()), { what: "the fall-back notice" });
    const after = await api(lb, "/admin/services/views.test/config");
    assert.equal(after.source, "DEFAULT_BACKENDS");
    assert.equal(after.version, before.version + 1, "the deployed config came back as a new version");
    assert.deepEqual(after.config.backends.map((b) => b.url).sort(), [g1.url, g2.url].sort());
    // The page stays on the service and shows the restored version.
    assert.match(new URL(page.url()).hash, /^#\/services\/views\.test/);
    await waitFor(async () => (await page.locator("#config-editor").inputValue()).includes(g2.url), { what: "the editor showing the deployed config" });
    w.check("deleting back to the deployed config");
  });
});

test("console: a watched change shows a banner on the service page; its automatic rollback is marked in the versions", async (t) => {
  const [good, bad] = await backendsFor(t, ["good", "bad"]);
  bad.handler = (req, res) => res.writeHead(500, { "content-type": "text/plain" }).end("broken");
  const { lb, base, page, w } = await consoleFor(t, {
    hostname: "watch.test",
    backends: [good.url],
    activeHealthChecks: { interval: 600, timeout: 2 },
    // Long enough to look at the banner; a few requests decide.
    change_safety: { watch_s: 120, min_requests: 10 },
  });
  await signIn(page, base);
  for (const s of await traffic(lb, "watch.test", 20)) assert.equal(s, 200);
  const cfg = await api(lb, "/admin/services/watch.test/config");
  const put = await lb.admin("/admin/services/watch.test/config", { method: "PUT", body: JSON.stringify({ ...cfg.config, backends: [bad.url] }) });
  assert.equal(put.status, 200);

  await page.goto(`${base}#/services/watch.test`);
  const banner = page.locator("#change-watch");
  await banner.waitFor();
  assert.match(await banner.innerText(), /Watching config v1 · \d+ s left · errors [\d.]+% of \d+ requests? since the change, 0% of \d+ requests in the 5 minutes before\. It is rolled back to v0 automatically if errors rise by more than 20 points over at least 10 requests\./);
  await shot(page, "change-watch");

  // Answers reported in the first seconds still count as before the change.
  const { judged_from_ms } = (await api(lb, "/admin/services/watch.test")).change_watch;
  await waitFor(() => Date.now() > judged_from_ms + 100, { what: "the change to settle" });
  for (const s of await traffic(lb, "watch.test", 10)) assert.equal(s, 500);
  await waitFor(async () => (await api(lb, "/admin/services/watch.test/config")).version === 2, { timeoutMs: 15000, what: "the automatic rollback" });
  // The backends tab polls: the banner goes once nothing is watched.
  await banner.waitFor({ state: "detached", timeout: 15000 });

  await page.getByRole("link", { name: "Versions" }).click();
  const row = page.locator('#versions tr[data-version="2"]');
  await row.waitFor();
  const text = await row.innerText();
  assert.match(text, /automatic rollback/);
  assert.match(text, /by flowbalance/);
  assert.match(text, /automatic rollback of version 1 to version 0: error rate \d+\.\d% over \d+ requests after the change, 0\.0% over \d+ requests/);
  assert.match(await page.locator('#versions tr[data-version="1"]').innerText(), /by token/);
  assert.doesNotMatch(await page.locator('#versions tr[data-version="1"]').innerText(), /automatic rollback/);
  await shot(page, "versions-auto-rollback");
  w.check("the change watch banner and the automatic rollback in the versions");
});
