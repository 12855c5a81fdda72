// End to end: traffic rules in both decision modes against real loopback backends: respond, redirect,
// continue with header actions, pool by header, pool with rewrite and request/response header edits, a
// weighted split that is stable per client, client-address conditions, counted and logged by rule name,
// and a rules change in effect at the next request.

import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, serve } from "../support/scoped.mjs";
import { adminCall as admin } from "../support/admin.mjs";
import { send } from "../support/requests.mjs";

const RULES = [
  { name: "no-trace", when: { methods: ["TRACE"] }, then: { respond: { status: 405, body: "not here" } } },
  { name: "old-docs", when: { path_prefix: "/old-docs/" }, then: { redirect: { location: "https://docs.example.com", status: 308, preserve_path: true } } },
  { name: "debug", when: { query: { debug: "1" } }, then: { response_headers: { set: { "x-debug": "on" } }, continue: true } },
  { name: "canary", when: { headers: { "X-Canary": "1" } }, then: { pool: "canary" } },
  {
    name: "api",
    when: { path_prefix: "/api/", not: { methods: ["DELETE"] } },
    then: {
      pool: "api",
      rewrite: { strip_prefix: "/api" },
      request_headers: { set: { "x-from-rule": "api" }, remove: ["x-internal-token"] },
      response_headers: { set: { "x-served-by": "api" }, remove: ["x-backend"] },
    },
  },
  { name: "shop-canary", when: { path_prefix: "/shop/" }, then: { split: [{ pool: "web", weight: 80 }, { pool: "canary", weight: 20 }] } },
  { name: "office-only", when: { path_prefix: "/internal/", not: { client_ips: ["10.0.0.0/8"] } }, then: { respond: { status: 403 } } },
];

function service(host, [web, api, canary], mode, rules = RULES) {
  return {
    hostname: host,
    backends: [web.url],
    pools: [
      { name: "web", backends: [web.url] },
      { name: "api", backends: [api.url] },
      { name: "canary", backends: [canary.url] },
    ],
    rules,
    decisions: { mode },
  };
}

const ip = (i) => `198.51.${(i >> 8) & 255}.${i & 255}`;
const from = (addr, headers = {}) => ({ headers: { "cf-connecting-ip": addr, ...headers } });

for (const mode of ["per_request", "lease"]) {
  test(`rules (${mode}): respond and redirect answer without a backend; continue, pool, rewrite, header edits, split and client addresses route`, async (t) => {
    const bs = await backendsFor(t, ["r-web", "r-api", "r-canary"]);
    const [web, api, canary] = bs;
    const host = `rules-${mode.replace("_", "-")}.test`;
    const lb = await serve(t, [service(host, bs, mode)]);
    const hits = () => bs.reduce((n, b) => n + b.requests().length, 0);

    // Default steering: no rule matches.
    let res = await send(lb, host, "/plain", from(ip(1)));
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.backend, "r-web");

    // respond and redirect: answered by FlowBalance, no backend contacted.
    const before = hits();
    // TRACE over a real socket: fetch() refuses to send one.
    const trace = await lb.raw(host, "/anything", { method: "TRACE", headers: { "cf-connecting-ip": ip(1) } });
    assert.equal(trace.status, 405);
    assert.equal(trace.body, "not here");
    assert.match(trace.headers["content-type"] ?? "", /^text\/plain/);
    res = await lb.fetch(host, "/old-docs/guide/intro?lang=en", { redirect: "manual", ...from(ip(1)) });
    assert.equal(res.status, 308);
    assert.equal(res.headers.get("location"), "https://docs.example.com/old-docs/guide/intro?lang=en");
    await res.text();
    assert.equal(hits(), before, "respond and redirect must not reach a backend");

    // continue: the header action applies, and routing goes on to the next rules.
    res = await send(lb, host, "/plain?debug=1", from(ip(1)));
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get("x-debug"), "on");
    assert.equal(res.body.backend, "r-web");
    res = await send(lb, host, "/plain?debug=1", from(ip(1), { "x-canary": "1" }));
    assert.equal(res.body.backend, "r-canary", "a header rule after a continue rule still routes");
    assert.equal(res.headers.get("x-debug"), "on", "the continue rule's header applies with the deciding rule");

    // pool + rewrite + header edits: the backend sees the rewritten path and headers, the client the response edits.
    res = await send(lb, host, "/api/users/7?full=1", from(ip(1), { "x-internal-token": "secret", "x-keep": "yes" }));
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.backend, "r-api");
    assert.equal(res.body.url, "/users/7?full=1");
    assert.equal(res.body.headers["x-from-rule"], "api");
    assert.equal(res.body.headers["x-internal-token"], undefined, "removed before forwarding");
    assert.equal(res.body.headers["x-keep"], "yes");
    assert.equal(res.headers.get("x-served-by"), "api");
    assert.equal(res.headers.get("x-backend"), null, "removed from the response");
    // not: DELETE is not the api rule's.
    res = await send(lb, host, "/api/users/7", { method: "DELETE", ...from(ip(1)) });
    assert.equal(res.body.backend, "r-web");
    assert.equal(res.body.url, "/api/users/7");

    // split: shares near 80/20 over many clients, and each client keeps its pool.
    const got = { "r-web": 0, "r-canary": 0 };
    const choice = new Map();
    for (let i = 0; i < 200; i++) {
      const b = (await send(lb, host, `/shop/item${i}`, from(ip(i)))).body.backend;
      got[b] += 1;
      choice.set(i, b);
    }
    assert.ok(got["r-canary"] >= 20 && got["r-canary"] <= 65, `canary share of 200 clients: ${JSON.stringify(got)}`);
    for (let i = 0; i < 40; i++) {
      const b = (await send(lb, host, `/shop/again${i}`, from(ip(i)))).body.backend;
      assert.equal(b, choice.get(i), `client ${ip(i)} flapped between versions`);
    }

    // client_ips under not: only the office reaches /internal/.
    const beforeInternal = hits();
    res = await send(lb, host, "/internal/report", from("203.0.113.9"));
    assert.equal(res.status, 403);
    assert.equal(hits(), beforeInternal);
    res = await send(lb, host, "/internal/report", from("10.20.30.40"));
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.backend, "r-web");

    // Counted by rule name, and the request log names the rule.
    await waitFor(
      async () => {
        const text = await (await lb.admin("/admin/metrics")).text();
        const n = (rule) => Number(new RegExp(`flowbalance_rule_matches_total\\{hostname="${host}",rule="${rule}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
        return n("no-trace") === 1 && n("old-docs") === 1 && n("debug") === 2 && n("api") === 1 && n("shop-canary") === 240 && n("office-only") === 1;
      },
      { timeoutMs: 15000, what: "rule matches counted in Prometheus" },
    );
    await waitFor(
      async () => {
        const rows = (await (await lb.admin(`/admin/services/${host}/logs?limit=100`)).json()).requests ?? [];
        return rows.some((r) => r.status === 405 && r.rule === "no-trace" && r.kept === "refused") && rows.some((r) => r.status === 403 && r.rule === "office-only");
      },
      { timeoutMs: 15000, what: "rule answers in the request log with the rule's name" },
    );
    void web;
    void api;
    void canary;
  });

  test(`rules (${mode}): a rules change takes effect at the next request; bad rules are a 400 at their path and change nothing`, async (t) => {
    const bs = await backendsFor(t, ["c-web", "c-api", "c-canary"]);
    const host = `rules-change-${mode.replace("_", "-")}.test`;
    const lb = await serve(t, [service(host, bs, mode, [])]);
    const cfgPath = `/admin/services/${host}/config`;
    assert.equal((await send(lb, host, "/x", from(ip(1), { "x-canary": "1" }))).body.backend, "c-web");
    let res = await admin(lb, cfgPath, { method: "POST", body: service(host, bs, mode, [{ name: "canary", when: { headers: { "x-canary": "1" } }, then: { pool: "canary" } }]) });
    assert.equal(res.status, 200, res.text);
    assert.equal((await send(lb, host, "/x", from(ip(1), { "x-canary": "1" }))).body.backend, "c-canary", "a header rule added at runtime applies at once");
    assert.equal((await send(lb, host, "/x", from(ip(1)))).body.backend, "c-web");

    const bad = [
      [{ name: "a", then: { pool: "nope" } }, "rules[0].then.pool"],
      [{ name: "a", when: { metods: ["GET"] }, then: { pool: "web" } }, "rules[0].when.metods"],
      [{ name: "a", then: { pool: "web", continue: true } }, "rules[0].then.continue"],
      [{ name: "a", then: { request_headers: { set: { "x-flowbalance-hop": "0" } } } }, "rules[0].then.request_headers"],
    ];
    for (const [rule, path] of bad) {
      res = await admin(lb, cfgPath, { method: "POST", body: service(host, bs, mode, [rule]) });
      assert.equal(res.status, 400, `${JSON.stringify(rule)}: ${res.text}`);
      assert.ok(res.text.includes(path), `the error names ${path}: ${res.text}`);
    }
    assert.equal((await send(lb, host, "/x", from(ip(1), { "x-canary": "1" }))).body.backend, "c-canary", "the stored rules are unchanged");
  });
}
