// End to end: a config change that makes clients get 500s is rolled back by FlowBalance within watch_s while traffic flows (signed webhook, history, audit); a good change is kept. Both decision modes; the watch survives a restart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startBalancer } from "../support/runtime.mjs";
import { startReceiver } from "../support/receiver.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";
import { waitFor } from "../support/backends.mjs";

const SECRET = "whsec-0123456789abcdef";
const WATCH_S = 5;

/** Requests to app.test one after another until stopped (at most `max`): what each got, in order. */
function traffic(lb, max = 20000) {
  const got = [];
  let stop = false;
  const done = (async () => {
    while (!stop && got.length < max) {
      const res = await lb.fetch("app.test", "/");
      const text = await res.text();
      got.push({ status: res.status, backend: res.headers.get("x-backend"), at: Date.now(), text });
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    got,
    /** What was answered after `t` (ms). */
    since: (t) => got.filter((g) => g.at > t),
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

/** Responses to app.test clients the object has counted (`flowbalance_responses_total`). */
async function answered(lb) {
  const text = await (await lb.admin("/admin/metrics")).text();
  return [...text.matchAll(/^flowbalance_responses_total\{hostname="app\.test",[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

for (const mode of ["lease", "per_request"]) {
  test(`${mode}: a change to a backend answering 500 is rolled back automatically; a good change is kept`, async (t) => {
    const [good1, good2, bad, spare] = await backendsFor(t, ["good1", "good2", "bad", "spare"]);
    // Probes pass (the backend is up); clients get 500: only their answers show the change is bad.
    bad.handler = (req, res) => res.writeHead(500, { "x-backend": "bad" }).end("broken");
    const rx = await startReceiver("rx", { secret: SECRET });
    t.after(() => rx.kill());
    const lb = await balancerFor(t, {
      defaultBackends: {
        hostname: "app.test",
        backends: [good1.url, good2.url],
        activeHealthChecks: { interval: 600, timeout: 2 },
        decisions: { mode },
        change_safety: { watch_s: WATCH_S },
        notifications: { webhooks: [{ url: `${rx.url}/hook`, secret: SECRET, events: ["config.auto_rolled_back", "config.changed"] }] },
      },
    });
    const load = traffic(lb);
    t.after(() => load.stop());
    // A baseline: the service answers well before the change, and the object has heard of it
    // (Workers carry what clients got within about a second).
    await waitFor(async () => (await answered(lb)) >= 40, { timeoutMs: 20000, what: "baseline traffic reported" });
    assert.ok(load.got.every((g) => g.status === 200), "the baseline is clean");

    const cfg = await (await lb.admin("/admin/services/app.test/config")).json();
    const changedAt = Date.now();
    const put = await lb.admin("/admin/services/app.test/config", {
      method: "PUT",
      headers: { "if-match": `"${cfg.version}"` },
      body: JSON.stringify({ ...cfg.config, backends: [bad.url] }),
    });
    assert.equal(put.status, 200, await put.clone().text());
    const bad_version = (await put.json()).version;
    assert.equal(bad_version, 1);
    // The status view shows the change being watched.
    const watched = (await (await lb.admin("/admin/services/app.test")).json()).change_watch;
    if (watched) {
      // (Null only if the rollback already happened, which takes at least 30 requests.)
      assert.equal(watched.version, 1);
      assert.equal(watched.previous_version, 0);
      assert.ok(watched.seconds_left <= WATCH_S && watched.seconds_left >= 0, JSON.stringify(watched));
      assert.equal(watched.min_requests, 30);
      assert.equal(watched.max_error_rate_increase, 20);
      assert.equal(watched.before.error_rate, 0);
    }
    await waitFor(() => load.since(changedAt).some((g) => g.status === 500), { timeoutMs: 10000, what: "the bad backend answering" });

    // Rolled back within watch_s + 10 s: version 2 holds version 0's config, by flowbalance.
    const rolled = await waitFor(
      async () => {
        const c = await (await lb.admin("/admin/services/app.test/config")).json();
        return c.version === 2 && c;
      },
      { timeoutMs: (WATCH_S + 10) * 1000, what: "the automatic rollback" },
    );
    assert.ok(Date.now() - changedAt < (WATCH_S + 10) * 1000);
    assert.deepEqual(rolled.config.backends.map((b) => b.url), [good1.url, good2.url]);
    // The previous backends serve again.
    // (Leases of the bad version may still decide for up to lease_ms; give them that long.)
    const after = Date.now() + 1500;
    const served = await waitFor(() => load.since(after).length >= 20 && load.since(after), { timeoutMs: 10000, what: "answers after the rollback" });
    assert.ok(served.every((g) => g.status === 200 && ["good1", "good2"].includes(g.backend)), JSON.stringify(served.slice(0, 5)));

    // The webhook arrives, signed: the receiver keeps only deliveries whose signature verifies.
    const hook = await waitFor(() => rx.ofKind("config.auto_rolled_back")[0], { timeoutMs: 15000, what: "config.auto_rolled_back" });
    assert.equal(rx.badSignatures, 0);
    assert.match(hook.headers["x-flowbalance-signature"], /^t=\d+,v1=[0-9a-f]{64}$/);
    const d = hook.body.details;
    assert.equal(d.version, 2);
    assert.equal(d.rolled_back_version, 1);
    assert.equal(d.restored_version, 0);
    assert.equal(d.previous_version, 1);
    assert.equal(d.actor, "flowbalance");
    assert.equal(d.baseline_error_rate, 0);
    assert.ok(d.error_rate > 20 && d.requests >= 30, JSON.stringify(d));
    assert.ok(d.baseline_requests >= 10, JSON.stringify(d));
    assert.equal(hook.body.hostname, "app.test");

    // The history and the audit trail show it.
    const hist = await (await lb.admin("/admin/services/app.test/config/history")).json();
    const v2 = hist.versions.find((v) => v.version === 2);
    assert.equal(v2.actor, "flowbalance");
    assert.equal(v2.action, "config.auto_rolled_back");
    assert.match(v2.summary, /automatic rollback of version 1 to version 0: error rate \d+\.\d% over \d+ requests after the change, 0\.0% over \d+ requests/);
    assert.equal(hist.versions.find((v) => v.version === 1).actor, "token");
    const audit = (await (await lb.admin("/admin/services/app.test/audit")).json()).entries;
    assert.equal(audit[0].action, "config.auto_rolled_back");
    assert.equal(audit[0].actor.kind, "flowbalance");
    assert.equal(audit[0].version, 2);
    // An automatic rollback is not watched itself.
    assert.equal((await (await lb.admin("/admin/services/app.test")).json()).change_watch, null);

    // A good change under the same traffic is watched and kept.
    const good = await lb.admin("/admin/services/app.test/config", {
      method: "PUT",
      headers: { "if-match": '"2"' },
      body: JSON.stringify({ ...rolled.config, backends: [good1.url, good2.url, spare.url] }),
    });
    assert.equal(good.status, 200);
    const goodAt = Date.now();
    const w = (await (await lb.admin("/admin/services/app.test")).json()).change_watch;
    assert.equal(w?.version, 3);
    assert.equal(w.previous_version, 2);
    const ended = await waitFor(
      async () => {
        const st = await (await lb.admin("/admin/services/app.test")).json();
        return st.change_watch === null && st;
      },
      { timeoutMs: (WATCH_S + 10) * 1000, what: "the good change's watch to end" },
    );
    assert.equal(ended.version, 3, "the good change stays");
    assert.ok(load.since(goodAt).filter((g) => g.status === 200).length >= 30, "it was watched under traffic");
    assert.ok(load.since(goodAt).some((g) => g.backend === "spare"), "the new backend took traffic");
    await load.stop();
    assert.equal(rx.ofKind("config.auto_rolled_back").length, 1, "one automatic rollback, no loop");
  });
}

test("a change with auto_rollback off is not watched, and a service without traffic is never rolled back", async (t) => {
  const [good, bad] = await backendsFor(t, ["good", "bad"]);
  bad.handler = (req, res) => res.writeHead(500).end("broken");
  const lb = await balancerFor(t, {
    defaultBackends: { hostname: "app.test", backends: [good.url], activeHealthChecks: { interval: 600, timeout: 2 }, change_safety: { watch_s: WATCH_S } },
  });
  assert.equal((await lb.fetch("app.test", "/")).status, 200);
  const put = (body) => lb.admin("/admin/services/app.test/config", { method: "PUT", body: JSON.stringify(body) });
  // Out of range: a 400 naming the field; nothing stored.
  const wrong = await put({ backends: [bad.url], change_safety: { watch_s: 1 } });
  assert.equal(wrong.status, 400);
  assert.match((await wrong.json()).error, /change_safety\.watch_s/);
  assert.equal((await (await lb.admin("/admin/services/app.test/config")).json()).version, 0);
  // Without traffic the bad change is watched, then kept.
  assert.equal((await put({ backends: [bad.url], change_safety: { watch_s: WATCH_S } })).status, 200);
  assert.equal((await (await lb.admin("/admin/services/app.test")).json()).change_watch.version, 1);
  await waitFor(async () => (await (await lb.admin("/admin/services/app.test")).json()).change_watch === null, { timeoutMs: (WATCH_S + 10) * 1000, what: "the watch to end" });
  assert.equal((await (await lb.admin("/admin/services/app.test/config")).json()).version, 1);
  // Off: no watch at all.
  assert.equal((await put({ backends: [bad.url], change_safety: { auto_rollback: false } })).status, 200);
  assert.equal((await (await lb.admin("/admin/services/app.test")).json()).change_watch, null);
});

test("the watch of a change survives a restart of the runtime (same storage)", async (t) => {
  const [good, bad] = await backendsFor(t, ["good", "bad"]);
  const dir = mkdtempSync(path.join(os.tmpdir(), "fb-auto-rollback-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = { hostname: "app.test", backends: [good.url], activeHealthChecks: { interval: 600, timeout: 2 }, change_safety: { watch_s: 600 } };
  let lb = await startBalancer({ defaultBackends: config, persistDir: dir });
  try {
    assert.equal((await lb.fetch("app.test", "/")).status, 200);
    const put = await lb.admin("/admin/services/app.test/config", { method: "PUT", body: JSON.stringify({ ...config, backends: [bad.url] }) });
    assert.equal(put.status, 200);
    const before = (await (await lb.admin("/admin/services/app.test")).json()).change_watch;
    assert.equal(before.version, 1);
    await lb.stop();
    lb = await startBalancer({ defaultBackends: config, persistDir: dir });
    const after = (await (await lb.admin("/admin/services/app.test")).json()).change_watch;
    assert.deepEqual([after.version, after.previous_version, after.until_ms], [1, 0, before.until_ms]);
    assert.ok(after.seconds_left > 500, JSON.stringify(after));
  } finally {
    await lb.stop();
  }
});
