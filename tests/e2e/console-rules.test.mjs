// Traffic rules in the console and the explain endpoint behind its "try a request" box, in headless Chromium against the built Worker: add, save, reorder, an error at its rule, and explanations of the draft and of the stored config.
import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "../support/backends.mjs";
import { backendsFor } from "../support/scoped.mjs";
import { api, consoleFor, shot, signIn } from "../support/console.mjs";

const HOST = "rules.test";
const API_RULE = {
  name: "api",
  when: { path_prefix: "/api/", not: { methods: ["DELETE"] } },
  then: { pool: "api", rewrite: { strip_prefix: "/api" }, request_headers: { set: { "x-from-rule": "api" } } },
};
const TRACE_RULE = { name: "no-trace", when: { methods: ["TRACE"] }, then: { respond: { status: 405, body: "not here" } } };
const API_SUMMARY = "api: path starts /api/, not DELETE → pool api, strip /api, set x-from-rule";
const TRACE_SUMMARY = "no-trace: TRACE → respond 405";

async function post(lb, body, headers = {}) {
  const res = await lb.admin(`/admin/services/${HOST}/rules/test`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

const paths = (r) => (r.body.errors ?? []).map((e) => e.path);

test("console: rules are added, saved, reordered, refused at their field and explained", async (t) => {
  const [web, apiBackend] = await backendsFor(t, ["web", "api"]);
  const { lb, base, page, w } = await consoleFor(t, {
    activeHealthChecks: { interval: 600, timeout: 2 },
    services: [{ hostname: HOST, backends: [web.url], pools: [{ name: "web", backends: [web.url] }, { name: "api", backends: [apiBackend.url] }] }],
  });

  await t.test("the explain endpoint: stored config, bad bodies at their fields, a draft's errors under config, read keys allowed", async () => {
    const plain = await post(lb, { request: { path: "/x?y=1" } });
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.deepEqual(plain.body.matched, []);
    assert.equal(plain.body.decided_by, null);
    assert.deepEqual(plain.body.action, { type: "steering" });
    assert.equal(plain.body.path, "/x?y=1");

    const unknown = await post(lb, { request: { path: "/", metod: "GET" }, draft: {} });
    assert.equal(unknown.status, 400);
    assert.ok(paths(unknown).includes("request.metod"), JSON.stringify(unknown.body));
    assert.ok(paths(unknown).includes("draft"), JSON.stringify(unknown.body));
    assert.deepEqual(paths(await post(lb, { request: {} })), ["request.path"]);
    const relative = await post(lb, { request: { path: "api" } });
    assert.equal(relative.status, 400);
    assert.deepEqual(paths(relative), ["request.path"]);
    const badDraft = await post(lb, { request: { path: "/" }, config: { backends: ["ftp://x"] } });
    assert.equal(badDraft.status, 400);
    assert.ok(paths(badDraft).every((p) => p.startsWith("config.")) && paths(badDraft).includes("config.backends[0]"), JSON.stringify(badDraft.body));
    const unknownPool = await post(lb, { request: { path: "/" }, config: { backends: [web.url], rules: [{ ...API_RULE, then: { pool: "nope" } }] } });
    assert.equal(unknownPool.status, 400);
    assert.deepEqual(paths(unknownPool), ["config.rules[0].then.pool"]);

    // A draft is explained and nothing is stored.
    const before = (await api(lb, `/admin/services/${HOST}/config`)).version;
    const draft = { ...(await api(lb, `/admin/services/${HOST}/config`)).config, rules: [API_RULE] };
    const drafted = await post(lb, { request: { method: "GET", path: "/api/users?page=2" }, config: draft });
    assert.equal(drafted.status, 200, JSON.stringify(drafted.body));
    assert.deepEqual(drafted.body.matched, ["api"]);
    assert.equal(drafted.body.decided_by, "api");
    assert.deepEqual(drafted.body.action, { type: "pool", pool: "api" });
    assert.equal(drafted.body.path, "/users?page=2");
    assert.deepEqual(drafted.body.request_headers.set, [["x-from-rule", "api"]]);
    const deleting = await post(lb, { request: { method: "DELETE", path: "/api/users" }, config: draft });
    assert.deepEqual([deleting.body.matched, deleting.body.action], [[], { type: "steering" }]);
    assert.equal((await api(lb, `/admin/services/${HOST}/config`)).version, before, "explaining a draft stored it");

    // A read-only key may ask (it stores nothing); it still may not write.
    const made = await lb.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "rules-reader", scope: "read" }) });
    const key = (await made.json()).key;
    const asReader = await post(lb, { request: { path: "/" } }, { authorization: `Bearer ${key}` });
    assert.equal(asReader.status, 200, JSON.stringify(asReader.body));
    const write = await lb.admin(`/admin/services/${HOST}/config/validate`, { method: "POST", headers: { authorization: `Bearer ${key}` }, body: "{}" });
    assert.equal(write.status, 403);
  });

  const rules = page.locator("#rules > li[data-rule]");
  const summaries = () => page.locator("#rules .rule-summary").allInnerTexts();
  const addRule = async (rule) => {
    await page.locator("#rules-add").click();
    const item = rules.last();
    await item.locator("textarea").fill(JSON.stringify(rule, null, 2));
    await item.getByRole("button", { name: "Done" }).click();
    await page.locator(`#rules > li[data-rule="${rule.name}"] .rule-summary`).waitFor();
  };
  const save = async () => {
    await page.locator("#rules-save").click();
    await page.locator("#rules-saved").waitFor();
  };

  await t.test("add two rules and save them: listed in order with their summaries", async () => {
    await signIn(page, base);
    await page.goto(`${base}#/services/${HOST}/rules`);
    await page.getByText("No rules: every request goes to the service's steering.").waitFor();
    await addRule(API_RULE);
    await addRule(TRACE_RULE);
    assert.deepEqual(await summaries(), [API_SUMMARY, TRACE_SUMMARY]);
    await save();
    const stored = await api(lb, `/admin/services/${HOST}/config`);
    assert.deepEqual(stored.config.rules.map((r) => r.name), ["api", "no-trace"]);
    assert.equal(stored.config.rules[0].then.pool, "api");
    assert.deepEqual(await summaries(), [API_SUMMARY, TRACE_SUMMARY], "the stored rules read back the same");
    await shot(page, "service-rules");
    w.check("adding rules");
  });

  await t.test("reorder: move the second rule up and save", async () => {
    const before = (await api(lb, `/admin/services/${HOST}/config`)).version;
    await page.locator('#rules > li[data-rule="no-trace"]').getByRole("button", { name: "↑" }).click();
    assert.deepEqual(await summaries(), [TRACE_SUMMARY, API_SUMMARY]);
    await save();
    const stored = await api(lb, `/admin/services/${HOST}/config`);
    assert.equal(stored.version, before + 1);
    assert.deepEqual(stored.config.rules.map((r) => r.name), ["no-trace", "api"]);
    w.check("reordering");
  });

  await t.test("an unknown pool is refused and shown at its rule; nothing is stored", async () => {
    const before = (await api(lb, `/admin/services/${HOST}/config`)).version;
    w.allow(`/admin/services/${HOST}/config`, 400);
    w.allow(`/admin/services/${HOST}/rules/test`, 400);
    const item = page.locator('#rules > li[data-rule="api"]');
    await item.getByRole("button", { name: "Edit" }).click();
    await item.locator("textarea").fill(JSON.stringify({ ...API_RULE, then: { ...API_RULE.then, pool: "nope" } }, null, 2));
    await page.locator("#rules-save").click();
    const error = item.locator('.rule-errors li[data-path="then.pool"]');
    await error.waitFor();
    assert.match(await error.innerText(), /nope/);
    assert.equal(await page.locator('#rules > li[data-rule="no-trace"] .rule-errors').count(), 0, "the error shown at another rule");
    assert.equal((await api(lb, `/admin/services/${HOST}/config`)).version, before);
    // The try box explains the draft: its error is at the same rule.
    await page.locator("#rules-try").getByRole("button", { name: "Explain" }).click();
    await waitFor(async () => (await item.locator('.rule-errors li[data-path="then.pool"]').count()) === 1, { what: "the draft's error at its rule after Explain" });
    await shot(page, "service-rules-error");
    w.check("a refused rule");
  });

  await t.test("try a request: the draft's deciding rule, then the stored config's", async () => {
    const item = page.locator('#rules > li[data-rule="api"]');
    await item.locator("textarea").fill(JSON.stringify({ ...API_RULE, then: { ...API_RULE.then, pool: "web" } }, null, 2));
    const form = page.locator("#rules-try");
    await form.locator('input[name="method"]').fill("GET");
    await form.locator('input[name="path"]').fill("/api/users?page=2");
    await form.locator('input[name="country"]').fill("DE");
    await form.locator('input[name="client_ip"]').fill("203.0.113.9");
    await form.locator('textarea[name="headers"]').fill("x-canary: 1");
    await form.getByRole("button", { name: "Explain" }).click();
    const out = page.locator("#rules-explained");
    await waitFor(async () => (await out.count()) === 1 && (await page.locator("#rules-decided").innerText()) === "api", { what: "the draft's explanation" });
    assert.match(await out.innerText(), /draft/);
    assert.equal(await out.locator('[data-key="Action"]').innerText(), "pool web");
    assert.equal(await out.locator('[data-key="Backend path"]').innerText(), "/users?page=2");
    assert.equal(await out.locator('[data-key="Request headers"]').innerText(), "set x-from-rule: api");
    assert.equal(await item.locator(".rule-errors").count(), 0, "the fixed rule still shows its error");
    assert.equal((await api(lb, `/admin/services/${HOST}/config`)).config.rules[1].then.pool, "api", "explaining stored the draft");

    // Discarded: the stored config answers, and a TRACE is answered by the first rule.
    await page.getByRole("button", { name: "Discard changes" }).click();
    await waitFor(async () => (await item.locator("textarea").count()) === 0, { what: "the editor closed on discard" });
    assert.equal(await page.locator("#rules-message").innerText(), "", "the refused save's message outlived the discard");
    await form.locator('input[name="method"]').fill("TRACE");
    await form.locator('input[name="path"]').fill("/anything");
    await form.getByRole("button", { name: "Explain" }).click();
    await waitFor(async () => (await page.locator("#rules-decided").innerText()) === "no-trace", { what: "the stored config's explanation" });
    assert.match(await out.innerText(), /stored config/);
    assert.equal(await out.locator('[data-key="Action"]').innerText(), "answered 405 by FlowBalance: not here");
    assert.equal(await out.locator('[data-key="Matched"]').innerText(), "no-trace");
    assert.equal(await out.locator('[data-key="Backend path"]').innerText(), "none: no backend is asked");

    // A bad sample is shown at its field of the box.
    await form.locator('input[name="path"]').fill("no-slash");
    await form.getByRole("button", { name: "Explain" }).click();
    await waitFor(async () => /\//.test(await form.locator('[data-field="path"] .field-error').innerText()), { what: "the path error under its field" });
    await shot(page, "service-rules-try");
    w.check("the try box");
  });
});
