// End to end: health-checked DNS records against a loopback fake of the Cloudflare v4 API; the set follows the healthy backends, is held when none is, leaves foreign records alone, and a refused token is reported without ever showing it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { balancerFor, backendsFor } from "../support/scoped.mjs";
import { waitFor } from "../support/backends.mjs";
import { startReceiver } from "../support/receiver.mjs";
import { startCloudflareDns } from "../support/cloudflare-dns.mjs";
import { serviceStatus } from "../support/admin.mjs";
import { consoleFor, shot, signIn } from "../support/console.mjs";

const ZONE = "0123456789abcdef0123456789abcdef";
const NAME = "origin.example.test";
const MARKER = "flowbalance:app.test";
const TOKEN = "cf-test-token-3f9a1c0d7e5b";
const fast = { interval: 1, timeout: 1, consecutive_down: 1, consecutive_up: 1 };

async function fakeFor(t, token, opts = {}) {
  const cf = await startCloudflareDns({ token, ...opts });
  t.after(() => cf.stop());
  return cf;
}

/** Two backends on distinct loopback addresses, as the records list them. */
async function twoBackends(t) {
  const [a] = await backendsFor(t, ["a"], { host: "127.0.0.2" });
  const [b] = await backendsFor(t, ["b"], { host: "127.0.0.3" });
  return [a, b];
}

const service = (bs, extra = {}) => ({
  hostname: "app.test",
  backends: bs.map((b) => b.url),
  activeHealthChecks: fast,
  dns: { zone_id: ZONE, name: NAME, ttl: 60 },
  ...extra,
});

/** The addresses of the records FlowBalance manages, sorted. */
const managed = (cf) =>
  cf
    .records(ZONE, NAME)
    .filter((r) => r.comment === MARKER)
    .map((r) => r.content)
    .sort();

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

test("the record set follows the healthy backends, is held when none is, and foreign records survive", async (t) => {
  const cf = await fakeFor(t, TOKEN);
  const foreign = [
    cf.seed(ZONE, { type: "A", name: NAME, content: "192.0.2.99", ttl: 300 }),
    cf.seed(ZONE, { type: "A", name: NAME, content: "127.0.0.2", comment: "added by hand" }),
  ];
  const [a, b] = await twoBackends(t);
  const lb = await balancerFor(t, {
    defaultBackends: { services: [service([a, b])] },
    bindings: { CLOUDFLARE_API_TOKEN: TOKEN, CLOUDFLARE_API_BASE: cf.base },
  });
  // The object starts (and probes, and syncs) on its first request.
  await (await lb.fetch("app.test", "/")).arrayBuffer();
  const both = ["127.0.0.2", "127.0.0.3"];
  await waitFor(() => same(managed(cf), both), { timeoutMs: 20000, what: "both backends' records" });
  for (const r of cf.records(ZONE, NAME).filter((r) => r.comment === MARKER)) {
    assert.deepEqual([r.type, r.ttl, r.proxied], ["A", 60, false]);
  }
  let st = await serviceStatus(lb);
  assert.deepEqual(st.dns.records, both.map((content) => ({ type: "A", content })));
  assert.equal(st.dns.name, NAME);
  assert.equal(st.dns.held, false);
  assert.equal(st.dns.last_sync.result, "synced");
  assert.equal(st.dns.last_sync.error, null);

  // A backend whose probes fail leaves the set; its recovery brings it back.
  await b.kill();
  await waitFor(() => same(managed(cf), ["127.0.0.2"]), { timeoutMs: 20000, what: "b's record removed" });
  st = await waitFor(async () => {
    const s = await serviceStatus(lb);
    return same(s.dns.records.map((r) => `${r.type} ${r.content}`), ["A 127.0.0.2"]) && s;
  }, { timeoutMs: 10000, what: "the status showing a's record only" });
  await b.revive();
  await waitFor(() => same(managed(cf), both), { timeoutMs: 20000, what: "b's record back" });

  // Nothing healthy: the last set stays, and the status says it is held.
  await a.kill();
  await b.kill();
  const downAt = Date.now();
  st = await waitFor(async () => {
    const s = await serviceStatus(lb);
    // A sync that ended after both went down found nothing healthy.
    return s.healthy_backends === 0 && s.dns.held && s.dns.last_sync.at_ms >= downAt && s;
  }, { timeoutMs: 20000, what: "a sync holding the set" });
  const held = managed(cf);
  assert.ok(held.length > 0, "the set is never emptied");
  st = await serviceStatus(lb);
  assert.equal(st.dns.held, true);
  assert.deepEqual(st.dns.wanted, []);
  assert.deepEqual(st.dns.records.map((r) => r.content), held);
  await a.revive();
  await b.revive();
  await waitFor(() => same(managed(cf), both), { timeoutMs: 20000, what: "both back after the outage" });

  // Records anyone else made were never touched.
  for (const f of foreign) assert.ok(cf.records(ZONE, NAME).some((r) => r.id === f.id && r.content === f.content), `foreign ${f.content} kept`);
  assert.ok(!cf.calls.some((c) => c.method === "DELETE" && foreign.some((f) => c.path.endsWith(f.id))), "no foreign record was deleted");
  assert.ok(cf.calls.every((c) => c.auth === `Bearer ${TOKEN}`));
});

test("a refused token is reported (status, health history, webhook, metric) and never shown", async (t) => {
  const SECRET = "whsec-0123456789abcdef";
  const WRONG = "wrong-cf-token-7c2e9d41b8a6";
  // The fake quotes the header it got in its error: the token must be redacted everywhere.
  const cf = await fakeFor(t, TOKEN, { echo: true });
  const [a, b] = await twoBackends(t);
  const rx = await startReceiver("rx", { secret: SECRET });
  t.after(() => rx.kill());
  const lb = await balancerFor(t, {
    defaultBackends: {
      services: [service([a, b], { notifications: { webhooks: [{ url: `${rx.url}/hook`, secret: SECRET, events: ["dns.sync_failed"] }] } })],
    },
    bindings: { CLOUDFLARE_API_TOKEN: WRONG, CLOUDFLARE_API_BASE: cf.base },
  });
  await (await lb.fetch("app.test", "/")).arrayBuffer();
  const st = await waitFor(async () => {
    const s = await serviceStatus(lb);
    return s.dns?.last_sync?.result === "failed" && s;
  }, { timeoutMs: 20000, what: "a failed sync in the status" });
  assert.match(st.dns.last_sync.error, /401/);
  assert.match(st.dns.last_sync.error, /Authentication error \(got Bearer \[redacted\]\) \(10000\)/);
  assert.ok(st.dns.last_sync.consecutive_failures >= 1);
  assert.ok(cf.calls.some((c) => c.auth === `Bearer ${WRONG}`), "the token was sent to the API");
  assert.deepEqual(managed(cf), [], "nothing was written");

  const hook = await waitFor(() => rx.ofKind("dns.sync_failed")[0], { timeoutMs: 20000, what: "dns.sync_failed" });
  assert.equal(hook.body.details.name, NAME);
  assert.match(hook.body.details.error, /Authentication error/);

  const history = await waitFor(async () => {
    const h = await (await lb.admin("/admin/services/app.test/health-history")).text();
    return JSON.parse(h).events.some((e) => e.kind === "dns" && e.to === "failed") && h;
  }, { timeoutMs: 10000, what: "the failure in the health history" });
  const metrics = await waitFor(async () => {
    const m = await (await lb.admin("/admin/metrics")).text();
    return /flowbalance_dns_syncs_total\{hostname="app.test",result="failure"\} [1-9]/.test(m) && m;
  }, { timeoutMs: 10000, what: "the failure metric" });

  const answers = [
    JSON.stringify(st),
    history,
    metrics,
    JSON.stringify(hook.body),
    await (await lb.admin("/admin/services/app.test/events")).text(),
    await (await lb.admin("/admin/services/app.test/config")).text(),
    await (await lb.admin("/admin/services/app.test")).text(),
  ];
  for (const text of answers) assert.ok(!text.includes(WRONG), `the token leaked: ${text.slice(0, 200)}`);
});

test("console: the service page shows the record set, the last sync, and a held set", async (t) => {
  const cf = await fakeFor(t, TOKEN);
  const [a, b] = await twoBackends(t);
  const { base, page, w } = await consoleFor(t, { services: [service([a, b])] }, { bindings: { CLOUDFLARE_API_TOKEN: TOKEN, CLOUDFLARE_API_BASE: cf.base } });
  await signIn(page, base);
  await page.goto(`${base}#/services/app.test`);
  const card = page.locator("#dns");
  const text = () => card.textContent({ timeout: 1000 }).catch(() => "");
  await waitFor(async () => /A 127\.0\.0\.2.*A 127\.0\.0\.3/.test(await text()) && /synced/.test(await text()), { timeoutMs: 20000, what: "the record set on the page" });
  assert.match(await text(), new RegExp(NAME.replaceAll(".", "\\.")));
  assert.doesNotMatch(await text(), /held/);
  await a.kill();
  await b.kill();
  // The page refreshes every 5 s.
  await waitFor(async () => /held\s*no healthy backend, the last set stays/.test(await text()), { timeoutMs: 30000, what: "the held notice" });
  assert.match(await text(), /A 127\.0\.0\./, "the last set is still listed");
  await shot(page, "dns-held");
  w.check("the DNS records card");
});

test("with probe regions, one region failing keeps the record; a quorum failing removes it; recovery restores it", async (t) => {
  const REGIONS = ["wnam", "weur", "apac"];
  const cf = await fakeFor(t, TOKEN);
  const [a, b] = await twoBackends(t);
  // Each backend fails the probes of the regions in its `failing` set.
  for (const x of [a, b]) {
    x.failing = new Set();
    x.onProbe = (req, res) => res.writeHead(x.failing.has(req.headers["x-flowbalance-probe-region"]) ? 500 : 200).end();
  }
  const lb = await balancerFor(t, {
    defaultBackends: { services: [service([a, b], { activeHealthChecks: { ...fast, interval: 0.5, regions: REGIONS } })] },
    bindings: { CLOUDFLARE_API_TOKEN: TOKEN, CLOUDFLARE_API_BASE: cf.base },
  });
  await (await lb.fetch("app.test", "/")).arrayBuffer();
  const both = ["127.0.0.2", "127.0.0.3"];
  await waitFor(() => same(managed(cf), both), { timeoutMs: 20000, what: "both backends' records" });
  const viewOf = async (x) => (await serviceStatus(lb)).backends.find((s) => s.url === x.url);

  // One region of three sees b down: b is degraded, not out, and its record stays.
  b.failing.add("apac");
  await waitFor(async () => (await viewOf(b)).regions?.apac === "down", { timeoutMs: 15000, what: "apac to see b down" });
  assert.equal((await viewOf(b)).healthy, true);
  const syncsBefore = cf.calls.length;
  // Two more probe rounds from every region, and any sync they caused, leave the set alone.
  await waitFor(() => b.probes().filter((p) => p.headers["x-flowbalance-probe-region"] === "wnam").length >= 4, { timeoutMs: 15000, what: "more wnam probes" });
  assert.deepEqual(managed(cf), both, "a minority of regions does not remove the record");
  assert.ok(!cf.calls.slice(syncsBefore).some((c) => c.method === "DELETE"), "no record was deleted");

  // A quorum (two of three) sees b down: b leaves traffic and the set.
  b.failing.add("weur");
  await waitFor(async () => !(await viewOf(b)).healthy, { timeoutMs: 15000, what: "the quorum to take b out" });
  await waitFor(() => same(managed(cf), ["127.0.0.2"]), { timeoutMs: 20000, what: "b's record removed" });

  // Recovery in every region brings it back.
  b.failing.clear();
  await waitFor(async () => (await viewOf(b)).healthy, { timeoutMs: 15000, what: "b healthy again" });
  await waitFor(() => same(managed(cf), both), { timeoutMs: 20000, what: "b's record back" });
});
