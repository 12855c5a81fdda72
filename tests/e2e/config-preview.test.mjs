// End to end: config preview replays the request log's recent requests under a draft and stores nothing; it names a new backend that does not answer, refuses a bad draft with the field path, and answers with a warning when D1 cannot be read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { waitFor } from "../support/backends.mjs";
import { adminCall } from "../support/admin.mjs";
import { freePort } from "../support/prometheus.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";

const HOST = "preview.test";
const SENT = 90;

function service(backends) {
  return {
    hostname: HOST,
    backends,
    activeHealthChecks: { enabled: false },
    decisions: { mode: "per_request" },
    // Every success logged, so the log holds every request to replay.
    logging: { success_sample_rate: 1, max_success_rows_per_minute: 1000 },
  };
}

const preview = (lb, body) => adminCall(lb, `/admin/services/${HOST}/config/preview`, { method: "POST", body });

test("a draft removing one of three backends moves about a third of the logged requests, and nothing is stored", async (t) => {
  const bs = await backendsFor(t, 3);
  const urls = bs.map((b) => b.url);
  const lb = await balancerFor(t, { defaultBackends: service(urls) });
  for (let i = 0; i < SENT; i++) {
    const res = await lb.fetch(HOST, `/item/${i}?page=${i % 4}`, { headers: { "cf-connecting-ip": `198.51.100.${i % 20}` } });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  }
  // The samples reach the object with the isolate's next report: wait until the log shows them all.
  const rows = await waitFor(async () => {
    const r = await adminCall(lb, `/admin/services/${HOST}/logs?limit=200`);
    return r.status === 200 && r.body.requests.length >= SENT ? r.body.requests : null;
  }, { timeoutMs: 15000, what: `${SENT} logged requests` });
  // The row keeps what a replay needs besides the method and path.
  const row = rows.find((r) => r.path === "/item/5");
  assert.equal(row.query, "page=1");
  assert.equal(row.client_ip, "198.51.100.5");
  assert.equal(row.country, undefined, "no geography read: no country");

  const before = await adminCall(lb, `/admin/services/${HOST}/config`);
  const draft = { ...before.body.config, backends: urls.slice(0, 2) };
  const p = await preview(lb, draft);
  assert.equal(p.status, 200, p.text);
  assert.equal(p.body.requests, SENT);
  assert.equal(p.body.version, before.body.version);
  for (const u of urls) assert.ok(Math.abs(p.body.before[u] - 1 / 3) < 0.02, `before ${u}: ${p.body.before[u]}`);
  assert.deepEqual(p.body.after, { [urls[0]]: 0.5, [urls[1]]: 0.5 });
  assert.ok(Math.abs(p.body.changed - 1 / 3) < 0.05, `changed ${p.body.changed}`);
  assert.equal(p.body.refused, 0);
  assert.deepEqual(p.body.warnings, []);

  // Nothing stored: same version, same backends, traffic still reaches the third backend.
  const after = await adminCall(lb, `/admin/services/${HOST}/config`);
  assert.equal(after.body.version, before.body.version);
  assert.equal(after.body.config.backends.length, 3);

  // A new backend on a closed loopback port: probed once, named in a warning.
  const dead = `http://127.0.0.1:${await freePort()}`;
  const added = await preview(lb, { ...before.body.config, backends: [...urls, dead] });
  assert.equal(added.status, 200, added.text);
  const warning = added.body.warnings.find((w) => w.includes(dead));
  assert.ok(warning, `a warning names ${dead}: ${JSON.stringify(added.body.warnings)}`);
  assert.match(warning, /did not answer a probe/);

  // A bad draft: the usual 400 with the field path, nothing stored.
  const bad = await preview(lb, { ...before.body.config, backends: [urls[0], "ftp://nope"] });
  assert.equal(bad.status, 400, bad.text);
  assert.ok(bad.body.errors.some((e) => e.path.startsWith("backends[1]")), JSON.stringify(bad.body.errors));
  const still = await adminCall(lb, `/admin/services/${HOST}/config`);
  assert.equal(still.body.version, before.body.version);
});

test("with D1 unavailable the preview still answers, saying the log could not be read", async (t) => {
  const bs = await backendsFor(t, 2);
  const urls = bs.map((b) => b.url);
  const lb = await balancerFor(t, { defaultBackends: service(urls), migrations: false });
  const res = await lb.fetch(HOST, "/");
  assert.equal(res.status, 200);
  await res.arrayBuffer();
  const cfg = await adminCall(lb, `/admin/services/${HOST}/config`);
  const p = await preview(lb, { ...cfg.body.config, backends: urls.slice(0, 1) });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.body.requests, 0);
  assert.match(p.body.warnings[0], /^the request log could not be read \(D1 refused the query: .*no such table/);
  assert.doesNotMatch(p.body.warnings[0], /D1Error|cloudflare-internal|Error: /);
  assert.deepEqual(p.body.after, { [urls[0]]: 0 });
});
