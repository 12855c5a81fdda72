// The operator console in a real headless Chromium against the built Worker in workerd and real loopback backends: every main screen driven like an operator, failing on any page error or unexpected failed request.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { API_SECRET } from "../support/runtime.mjs";
import { MINUTE, insertRollups } from "../support/rollups.mjs";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";
import { api, browserFor, consoleFor, JWT_SECRET, logged, OPERATOR, shot, SHOTS, signIn, traffic, watch } from "../support/console.mjs";

test("console: an operator runs the balancer from the browser", async (t) => {
  const shop = await backendsFor(t, ["s1", "s2", "s3"]);
  const api1 = await backendsFor(t, ["a1", "a2"]);
  const [fresh] = await backendsFor(t, ["n1"]);
  for (const b of shop) {
    b.handler = (req, res) => {
      if (req.url.startsWith("/missing")) return res.writeHead(404, { "content-type": "text/plain" }).end("no such page");
      res.writeHead(200, { "content-type": "application/json", "x-backend": b.name }).end(JSON.stringify({ backend: b.name }));
    };
  }
  const { lb, base, browser, page, w } = await consoleFor(t, {
    activeHealthChecks: { interval: 60, timeout: 2 },
    services: [
      // Every success sampled: the log page is exercised on successes too (the default keeps 1%).
      { hostname: "shop.test", backends: shop.map((b) => b.url), logging: { success_sample_rate: 1, max_success_rows_per_minute: 1000 } },
      { hostname: "api.test", backends: api1.map((b) => b.url), load_balancer: { session_affinity: { type: "cookie" } } },
    ],
  }, { bindings: { ADMIN_PREFIX_HOSTNAMES: "shop.test" } });

  // Some traffic first, so the overview and the charts have something to show.
  assert.deepEqual(new Set(await traffic(lb, "shop.test", 30)), new Set([200]));
  await traffic(lb, "api.test", 10);

  await t.test("sign in and see the demo services", async () => {
    await signIn(page, base);
    const rows = page.locator("#services tbody tr");
    await waitFor(async () => (await rows.count()) === 2, { what: "two services in the overview" });
    assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.host)), ["api.test", "shop.test"]);
    const shopRow = page.locator('#services tr[data-host="shop.test"]');
    assert.match(await shopRow.innerText(), /healthy/);
    assert.match(await shopRow.innerText(), /3 \/ 3/);
    await shot(page, "overview");
    w.check("the overview");
  });

  await t.test("drain a backend and watch traffic stop reaching it", async () => {
    await page.locator('#services a:text("shop.test")').click();
    const row = page.locator(`#backends tr[data-backend="${shop[1].url}"]`);
    await row.waitFor();
    // The health score column: a number in a coloured pill (green for a backend that answers everything).
    assert.equal((await page.locator("#backends th").allTextContents()).indexOf("Score"), 3);
    const score = row.locator("td.score .pill");
    assert.match(await score.innerText(), /^\d{1,3}$/);
    assert.match(await score.getAttribute("class"), /\bok\b/);
    await row.getByRole("button", { name: "Drain" }).click();
    await waitFor(async () => /draining/.test(await row.innerText()), { what: "the drained backend shown as draining" });
    await shot(page, "service-backends");
    const before = shop.map((b) => b.requests().length);
    await traffic(lb, "shop.test", 30);
    const after = shop.map((b) => b.requests().length);
    assert.equal(after[1], before[1], "the drained backend received traffic");
    assert.equal(after[0] - before[0] + (after[2] - before[2]), 30);
    // Disable asks first; cancelling changes nothing.
    await row.getByRole("button", { name: "Disable" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Cancel" }).click();
    assert.match(await row.innerText(), /draining/);
    await row.getByRole("button", { name: "Enable" }).click();
    await waitFor(async () => /enabled/.test(await row.innerText()), { what: "the backend enabled again" });
    // Health checks on demand show each probe's result.
    await page.getByRole("button", { name: "Run health checks now" }).click();
    await page.locator("#probe-table tbody tr").nth(2).waitFor();
    assert.equal(await page.locator("#probe-table tbody tr", { hasText: "passed" }).count(), 3);
    w.check("the backends table");
  });

  await t.test("edit the config with a mistake, see the error at its field, fix it, see the diff and the new version", async () => {
    await page.getByRole("link", { name: "Configuration" }).click();
    const editor = page.locator("#config-editor");
    await editor.waitFor();
    assert.match(await page.locator("#config-readable").innerText(), /Circuit breaker/);
    const stored = JSON.parse(await editor.inputValue());
    const version = (await api(lb, "/admin/services/shop.test/config")).version;
    w.allow("/config/validate", 400);
    await editor.fill(JSON.stringify({ ...stored, retries: 99 }, null, 2));
    await page.getByRole("button", { name: "Review changes" }).click();
    const err = page.locator('#config-errors li[data-path="retries"]');
    await err.waitFor();
    assert.match(await err.innerText(), /retries.*line \d+.*0\.\.=10|retries/);
    await shot(page, "config-error");
    await editor.fill(JSON.stringify({ ...stored, retries: 3 }, null, 2));
    await page.getByRole("button", { name: "Review changes" }).click();
    const review = page.locator("#config-review");
    await review.waitFor();
    assert.match(await review.locator(".diff-body .del").innerText(), /"retries": 1/);
    assert.match(await review.locator(".diff-body .add").innerText(), /"retries": 3/);
    // The review replays recent traffic under the draft: retries move no request.
    const preview = review.locator("#config-preview");
    await preview.waitFor();
    assert.match(await preview.innerText(), /[1-9]\d* recent requests replayed: 0% would change backend, 0% would be refused/);
    assert.equal(await preview.locator("tbody tr").count(), 3);
    await shot(page, "config-diff");
    await page.getByRole("button", { name: `Save as version ${version + 1}` }).click();
    await page.locator("#config-saved").waitFor();
    const now = await api(lb, "/admin/services/shop.test/config");
    assert.deepEqual([now.version, now.config.retries], [version + 1, 3]);

    // Someone else writes while the editor is open: the save is refused and their version shown.
    const theirs = await lb.admin("/admin/services/shop.test/backends", { method: "PATCH", body: JSON.stringify({ url: shop[2].url, weight: 5 }) });
    assert.equal(theirs.status, 200);
    await theirs.arrayBuffer();
    w.allow("/admin/services/shop.test/config", 412);
    const mine = JSON.parse(await editor.inputValue());
    await editor.fill(JSON.stringify({ ...mine, retries: 2 }, null, 2));
    await page.getByRole("button", { name: "Review changes" }).click();
    await page.getByRole("button", { name: `Save as version ${version + 2}` }).click();
    const conflict = page.locator("#config-conflict");
    await conflict.waitFor();
    assert.match(await conflict.innerText(), new RegExp(`stored version is now ${version + 2}`));
    assert.match(await conflict.innerText(), /"weight": 5/);
    await page.getByRole("button", { name: `Review mine against version ${version + 2}` }).click();
    await page.getByRole("button", { name: `Save as version ${version + 3}` }).click();
    await page.locator("#config-saved").waitFor();
    const merged = await api(lb, "/admin/services/shop.test/config");
    assert.equal(merged.version, version + 3);
    assert.equal(merged.config.retries, 2);
    w.check("the config editor");
  });

  await t.test("roll back to an earlier version, seeing the diff first", async () => {
    await page.getByRole("link", { name: "Versions" }).click();
    const live = (await api(lb, "/admin/services/shop.test/config")).version;
    const target = live - 2; // retries 3, s3 at weight 1
    const row = page.locator(`#versions tr[data-version="${target}"]`);
    await row.waitFor();
    await row.getByRole("button", { name: "Roll back…" }).click();
    const dialog = page.getByRole("dialog");
    assert.match(await dialog.locator(".diff-body").innerText(), /"retries": 3/);
    await shot(page, "rollback");
    await dialog.getByRole("button", { name: `Roll back to v${target}` }).click();
    await page.locator(`#versions tr[data-version="${live + 1}"]`).waitFor();
    const now = await api(lb, "/admin/services/shop.test/config");
    assert.equal(now.version, live + 1);
    assert.equal(now.config.retries, 3);
    assert.equal(now.config.backends.find((b) => b.url === shop[2].url).weight, 1);
    w.check("the version history");
  });

  await t.test("charts and the audit panel render", async () => {
    await logged(lb, "shop.test", 60);
    // The charts read the object's rollups: rows of known figures from before this runtime
    // started, so they never meet the minutes the object writes itself.
    const t_ms = Math.floor(Date.now() / MINUTE) * MINUTE - 12 * MINUTE;
    await insertRollups(lb, [
      ...shop.map((b, i) => ({ hostname: "shop.test", t_ms, backend: b.url, c2xx: 10 + i, latencies: Array(10 + i).fill(20 + i) })),
      { hostname: "shop.test", t_ms, backend: "", c2xx: 33 },
    ]);
    await page.getByRole("link", { name: "Analytics" }).click();
    const totals = page.locator("#metrics-table tbody tr");
    await totals.first().waitFor();
    assert.equal(await page.locator(".chart svg polyline").count() > 0, true);
    await page.getByRole("button", { name: "1 hour" }).click();
    await page.getByRole("button", { name: "24 hours" }).click();
    await page.locator('.segmented button[aria-pressed="true"]:text("24 hours")').waitFor();
    await totals.first().waitFor();
    await shot(page, "analytics");
    await page.getByRole("link", { name: "Audit" }).click();
    // The changes made from this browser are recorded under the signed-in email.
    await waitFor(async () => (await page.locator("#audit").innerText()).includes(OPERATOR), { what: "the audit panel naming the operator" });
    assert.match(await page.locator("#audit").innerText(), /config\.(replaced|rolled_back)/);
    w.check("analytics and audit");
  });

  await t.test("filter the request log and page through it", async () => {
    await traffic(lb, "shop.test", 6, (i) => `/missing/${i}`);
    await traffic(lb, "shop.test", 4, "/api/orders", { method: "POST", body: "{}" });
    const rows = await logged(lb, "shop.test", 100);
    await page.getByRole("link", { name: "Request log" }).click();
    const table = page.locator("#log-table tbody tr");
    await table.first().waitFor();
    const form = page.locator("#log-filters");
    await form.locator('select[name="status_class"]').selectOption("4xx");
    await form.getByRole("button", { name: "Apply" }).click();
    await waitFor(async () => (await table.count()) === 6 && /404/.test(await table.first().innerText()), { what: "six 404 rows" });
    for (const text of await table.allInnerTexts()) assert.match(text, /\/missing\/\d.*404/s);
    await form.locator('select[name="status_class"]').selectOption("");
    await form.locator('select[name="method"]').selectOption("POST");
    await form.locator('input[name="path_prefix"]').fill("/api/");
    await form.getByRole("button", { name: "Apply" }).click();
    await waitFor(async () => (await table.count()) === 4 && /POST/.test(await table.first().innerText()), { what: "four POST rows" });
    await shot(page, "request-log");
    // Paging: 25 a page over every logged row, no row twice.
    await form.locator('select[name="method"]').selectOption("");
    await form.locator('input[name="path_prefix"]').fill("");
    await form.locator('select[name="limit"]').selectOption("25");
    await form.getByRole("button", { name: "Apply" }).click();
    await waitFor(async () => (await table.count()) === 25, { what: "a page of 25" });
    const first = await table.allInnerTexts();
    await page.locator("#log-older").click();
    await waitFor(async () => /Page 2/.test(await page.locator(".pager").innerText()), { what: "page 2" });
    const second = await table.allInnerTexts();
    assert.equal(second.length, Math.min(25, rows.length - 25));
    assert.notDeepEqual(second[0], first[0]);
    w.check("the request log");
  });

  await t.test("add a service through the form and send traffic to it", async () => {
    await page.getByRole("link", { name: "Add service" }).first().click();
    const form = page.locator("#add-service");
    await form.locator('input[name="hostname"]').fill("new.test");
    await form.locator('textarea[name="backends"]').fill(`${fresh.url}\nftp://nope`);
    await form.locator('input[name="interval"]').fill("30");
    w.allow("/admin/services/new.test/config", 400);
    await form.getByRole("button", { name: "Add service" }).click();
    const backendsError = form.locator('[data-field="backends"] .field-error');
    await waitFor(async () => /backends\[1\]/.test(await backendsError.innerText()), { what: "the error under the backends field" });
    await shot(page, "add-service-error");
    await form.locator('textarea[name="backends"]').fill(fresh.url);
    await form.getByRole("button", { name: "Add service" }).click();
    await page.getByRole("heading", { name: "new.test" }).waitFor();
    await page.locator(`#backends tr[data-backend="${fresh.url}"]`).waitFor();
    // No decisions block: auto, and nothing in the form needs every request at the object.
    assert.match(await page.locator("#decisions").innerText(), /lease mode \(1000 ms\).* · auto: no feature needs every request at the object/);
    const statuses = await traffic(lb, "new.test", 5, "/hello");
    assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
    assert.equal(fresh.requests().filter((r) => r.url === "/hello").length, 5);
    w.check("adding a service");
  });

  await t.test("pool health and steering on the service page, and requests in the live tail", async () => {
    // new.test (the page shown now) becomes one failover pool, decided in lease mode.
    const put = await lb.admin("/admin/services/new.test/config", {
      method: "PUT",
      body: JSON.stringify({ load_balancer: { steering: "failover" }, pools: [{ name: "primary", backends: [fresh.url] }], decisions: { mode: "lease", lease_ms: 500 } }),
    });
    assert.equal(put.status, 200, await put.text());
    await page.getByRole("link", { name: "Backends", exact: true }).click();
    const pool = page.locator('#pools li[data-pool="primary"]');
    await waitFor(async () => (await pool.count()) === 1, { timeoutMs: 15000, what: "the Pools card" });
    assert.match(await pool.innerText(), /primary.*healthy.*1 \/ 1 healthy/s);
    assert.match(await page.locator("#steering").innerText(), /round robin within a pool · pools by failover/);
    assert.match(await page.locator("#decisions").innerText(), /lease mode \(500 ms\).* · decisions\.mode is "lease"/);

    await page.getByRole("link", { name: "Live", exact: true }).click();
    await waitFor(async () => /Connected/.test(await page.locator("#live-state").innerText()), { what: "the tail connected" });
    assert.deepEqual(await traffic(lb, "new.test", 3, (i) => `/live/${i}`), [200, 200, 200]);
    const lines = page.locator("#live-lines li.live-request");
    await waitFor(async () => (await lines.count()) === 3, { what: "three request lines in the tail" });
    const texts = await lines.allInnerTexts();
    // Newest first, each with method, path, status and backend.
    texts.forEach((text, i) => assert.match(text, new RegExp(`GET\\s+/live/${2 - i}\\s+200\\s+${fresh.url.replace(/[.]/g, "\\.")}`)));
    // Paused, lines are held (and still acknowledged) and shown on resume.
    await page.getByRole("button", { name: "Pause" }).click();
    await traffic(lb, "new.test", 2, "/while-paused");
    await waitFor(async () => /Paused: 2 new lines held/.test(await page.locator("#live-state").innerText()), { what: "two lines held while paused" });
    assert.equal(await lines.count(), 3);
    await page.getByRole("button", { name: "Resume" }).click();
    await waitFor(async () => (await lines.count()) === 5, { what: "held lines shown on resume" });
    assert.match(await lines.first().innerText(), /while-paused/);
    await shot(page, "live-tail");
    // Leaving the tab closes the tail cleanly (a failed socket would be a console error).
    await page.getByRole("link", { name: "Backends", exact: true }).click();
    await pool.waitFor();
    w.check("pools and the live tail");
  });

  await t.test("API keys page and API docs", async () => {
    await page.getByRole("link", { name: "API keys" }).click();
    await page.locator('#key-form input[name="name"]').fill("ci-bot");
    await page.locator("#key-form").getByRole("button", { name: "Create key" }).click();
    const key = await page.locator("#new-key").innerText();
    assert.match(key, /^fbk_/);
    await page.locator('#keys tr[data-key="ci-bot"]').waitFor();
    // The key shown once works for scripts.
    const listed = await fetch(new URL("/admin/services", base), { headers: { authorization: `Bearer ${key.trim()}` } });
    assert.equal(listed.status, 200);
    await shot(page, "api-keys");
    await page.getByRole("link", { name: "API docs" }).click();
    await page.locator('[id="op-get-/admin/services/{hostname}/logs"]').waitFor();
    assert.match(await page.locator('[id="op-get-/admin/services/{hostname}/logs"]').innerText(), /status_class/);
    await shot(page, "api-docs");
    w.check("keys and docs");
  });

  await t.test("on a phone-sized screen the overview stays usable", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    t.after(() => phone.close());
    await phone.setExtraHTTPHeaders({ authorization: `Bearer ${API_SECRET}` });
    const p = await phone.newPage();
    const pw = watch(p);
    await p.goto(`${base}#/services/shop.test`);
    await p.locator("#backends tbody tr").first().waitFor();
    // Nothing but the table's own scroller may be wider than the screen.
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
    await p.screenshot({ path: path.join(SHOTS, "phone-service.png") });
    await p.goto(`${base}#/`);
    await p.locator("#services tbody tr").first().waitFor();
    await p.screenshot({ path: path.join(SHOTS, "phone-overview.png") });
    pw.check("the phone view");
  });

  await t.test("the console works under /__lb_admin__/ on a balanced hostname, and nothing of it reaches a backend", async () => {
    const seenBefore = shop.map((b) => b.requests().length);
    const port = new URL(base).port;
    await page.goto(`http://shop.test:${port}/__lb_admin__`);
    assert.equal(new URL(page.url()).pathname, "/__lb_admin__/");
    // Another origin, so another session: sign in again, through the callback under /__lb_admin__.
    await page.getByRole("link", { name: "Sign in with GitHub" }).click();
    await page.locator('#services tr[data-host="new.test"]').waitFor();
    assert.equal(new URL(page.url()).host, `shop.test:${port}`);
    await page.locator('#services a:text("api.test")').click();
    await page.locator("#backends tbody tr").first().waitFor();
    assert.deepEqual(shop.map((b) => b.requests().length), seenBefore, "console requests leaked to a backend");
    w.check("the balanced-hostname root");
    await page.goto(base);
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    // The overview's rates and p95 read the last five minutes of rollups: make sure shop.test has
    // a minute there (the object's own row for that minute, once it writes one, is kept).
    const last = Math.floor(Date.now() / MINUTE) * MINUTE - MINUTE;
    await insertRollups(lb, [{ hostname: "shop.test", t_ms: last, backend: shop[0].url, c2xx: 5, latencies: [40, 40, 40, 40, 40] }, { hostname: "shop.test", t_ms: last, backend: "", c2xx: 5 }], { ifAbsent: true });
    await waitFor(async () => !/–/.test(await page.locator('#services tr[data-host="shop.test"] td:nth-child(6)').innerText()), { what: "shop.test's p95 in the overview" });
    await shot(page, "overview-traffic");
  });

  await t.test("sign out", async () => {
    await page.locator("#sign-out").click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.waitForLoadState("networkidle");
    await page.reload();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    assert.equal(await page.locator("#services").count(), 0);
    await shot(page, "sign-in");
    w.check("signing out");
  });
});

test("console: the sign-in screen shows a sign-in error as text, never as HTML", async (t) => {
  const [b] = await backendsFor(t, ["x1"]);
  const lb = await balancerFor(t, { defaultBackends: { hostname: "x.test", backends: [b.url] } });
  const browser = await browserFor(t);
  const page = await browser.newPage();
  const w = watch(page);
  w.allow("/auth/providers", 404);
  await page.goto(`${lb.url}?error=${encodeURIComponent('<img src=x onerror="window.pwned=1">')}`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.locator("img[src=x]").count(), 0);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.match(await page.locator("#login-error").innerText(), /Sign-in failed/);
  // A pasted API key signs in (kept for this tab only).
  // Without sign-in providers the API key form is already open.
  if (!(await page.locator("details.api-key").evaluate((d) => d.open))) await page.getByText("Use an API key instead").click();
  await page.getByLabel("API key").fill(API_SECRET);
  await page.getByRole("button", { name: "Use key" }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  w.check("the sign-in screen");
  // With an API key the Live tab says it needs a session, and nothing claims to be waiting. The
  // route changes in the page (a reload would abort the overview's requests still in flight).
  await page.evaluate(() => (location.hash = "#/services/x.test/live"));
  await page.locator("#live-closed").waitFor();
  assert.match(await page.locator("#live-closed").innerText(), /needs a signed-in session/);
  assert.equal(await page.locator("#live-lines").count(), 0, "an empty tail list (\"Waiting for requests…\") is shown");
  assert.doesNotMatch(await page.locator(".tab-body").innerText(), /Waiting|Connecting/);
  w.check("the Live tab without a session");
});

test("console: with JWT_SECRET and WEB_AUTH_* alone (npm run dev), the sign-in page names no problem and the password form signs in", async (t) => {
  const [b] = await backendsFor(t, ["p1"]);
  const lb = await balancerFor(t, {
    defaultBackends: { hostname: "p.test", backends: [b.url] },
    bindings: { JWT_SECRET, WEB_AUTH_USERNAME: "admin", WEB_AUTH_PASSWORD: "dev-password" },
  });
  const browser = await browserFor(t);
  const page = await browser.newPage();
  const w = watch(page);
  await page.goto(String(lb.url));
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.locator("ul.problems").count(), 0, await page.locator("main").innerText());
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password", { exact: true }).fill("dev-password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  w.check("the password sign-in");
});
