// End to end: how a hostname's object stores and serves its config: writes stored before they go live (413 over the size limit, nothing changed on a failed write, versions never reused), history one key per version, secrets redacted in every read, and the way back to the deployed config.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startBalancer } from "../support/runtime.mjs";
import { stopAll, waitFor } from "../support/backends.mjs";
import { adminCall as admin } from "../support/admin.mjs";
import { backendsFor, balancerFor } from "../support/scoped.mjs";
import { startReceiver } from "../support/receiver.mjs";

const LIMIT = 256 * 1024;
// No probes: the big configs below list many URLs of one backend.
const noProbes = { activeHealthChecks: { enabled: false } };

/** A config of `n` backends on `backend`, each a distinct URL with a `pad`-character path. */
function bigConfig(backend, n, pad, tag = "v") {
  const backends = Array.from({ length: n }, (_, i) => `${backend.url}/${tag}${i}/${"p".repeat(pad)}`);
  return { backends, ...noProbes };
}

async function served(lb, host) {
  const res = await lb.fetch(host, "/");
  const text = await res.text();
  return { status: res.status, backend: res.status === 200 ? JSON.parse(text).backend : null, text };
}

function tempDir() {
  return mkdtempSync(path.join(tmpdir(), "fb-config-store-"));
}

// ---- item 1: stored first, bounded, never half done ----

test("a config over 256 KiB gets 413 naming the limit and its size; nothing changes, and a backend edit that pushes over is refused too", async (t) => {
  const [a, b] = await backendsFor(t, ["a", "b"]);
  const lb = await balancerFor(t, { defaultBackends: { hostname: "size.test", backends: [a.url], ...noProbes } });
  const cfgPath = "/admin/services/size.test/config";
  let res = await admin(lb, cfgPath, { method: "PUT", body: { backends: [b.url], ...noProbes } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 1);

  // Over the limit (and denying everyone, so a config that went live would show at once).
  const huge = { ...bigConfig(b, 100, 2700), access_control: { deny: ["0.0.0.0/0", "::/0"] } };
  res = await admin(lb, cfgPath, { method: "PUT", body: huge });
  assert.equal(res.status, 413, res.text.slice(0, 300));
  assert.match(res.body.error, /config too large: \d+ bytes of canonical JSON; the limit is 262144 bytes \(256 KiB\)/);
  assert.ok(Number(/(\d+) bytes/.exec(res.body.error)[1]) > LIMIT);
  assert.equal(res.body.limit_bytes, LIMIT);
  // Validation says the same without storing.
  res = await admin(lb, `${cfgPath}/validate`, { method: "POST", body: huge });
  assert.equal(res.status, 413, res.text.slice(0, 300));
  res = await admin(lb, cfgPath);
  assert.equal(res.body.version, 1);
  assert.deepEqual(res.body.config.backends.map((x) => x.url), [b.url]);
  assert.equal((await served(lb, "size.test")).backend, "b");
  res = await admin(lb, `${cfgPath}/history`);
  assert.deepEqual(res.body.versions.map((v) => v.version), [1, 0]);

  // Just under the limit: stored. Its exact size is read from the 413 of a longer one.
  const probe = bigConfig(b, 90, 2600);
  probe.backends[89] += "q".repeat(40_000);
  res = await admin(lb, `${cfgPath}/validate`, { method: "POST", body: probe });
  assert.equal(res.status, 413, res.text.slice(0, 300));
  const over = Number(/(\d+) bytes/.exec(res.body.error)[1]) - LIMIT;
  probe.backends[89] = probe.backends[89].slice(0, probe.backends[89].length - over - 1);
  res = await admin(lb, cfgPath, { method: "PUT", body: probe });
  assert.equal(res.status, 200, res.text.slice(0, 300));
  assert.equal(res.body.version, 2);
  // One byte to spare: a weight of 1000 adds three, and is refused; the config stays.
  res = await admin(lb, "/admin/services/size.test/backends", { method: "PATCH", body: { url: probe.backends[0], weight: 1000 } });
  assert.equal(res.status, 413, res.text.slice(0, 300));
  assert.match(res.body.error, new RegExp(`${LIMIT + 2} bytes of canonical JSON`));
  res = await admin(lb, "/admin/services/size.test/backends", { method: "POST", body: { url: `${b.url}/one-more` } });
  assert.equal(res.status, 413, res.text.slice(0, 300));
  res = await admin(lb, cfgPath);
  assert.equal(res.body.version, 2);
  assert.equal(res.body.config.backends[0].weight, 1);
  assert.equal((await served(lb, "size.test")).backend, "b");
});

test("history is one stored value per version: 25 writes of a ~120 KiB config all succeed, 20 are kept, and numbering survives a restart", async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [a, b] = await backendsFor(t, ["a", "b"]);
  const defaults = { hostname: "hist.test", backends: [a.url], ...noProbes };
  const cfgPath = "/admin/services/hist.test/config";
  let lb = await startBalancer({ defaultBackends: defaults, persistDir: dir });
  try {
    for (let v = 1; v <= 25; v++) {
      const res = await admin(lb, cfgPath, { method: "PUT", body: bigConfig(b, 48, 2400, `w${v}-`) });
      assert.equal(res.status, 200, `write ${v}: ${res.status} ${res.text.slice(0, 300)}`);
      assert.equal(res.body.version, v);
    }
    const res = await admin(lb, `${cfgPath}/history`);
    assert.equal(res.status, 200, res.text.slice(0, 300));
    const kept = res.body.versions.filter((v) => v.version > 0);
    assert.deepEqual(kept.map((v) => v.version), Array.from({ length: 20 }, (_, i) => 25 - i));
    assert.match(kept[19].config.backends[0].url, /\/w6-0\//);
  } finally {
    await lb.stop();
  }
  lb = await startBalancer({ defaultBackends: defaults, persistDir: dir });
  try {
    let res = await admin(lb, cfgPath);
    assert.equal(res.body.version, 25);
    assert.equal((await served(lb, "hist.test")).backend, "b");
    res = await admin(lb, `${cfgPath}/history`);
    assert.equal(res.body.versions.filter((v) => v.version > 0).length, 20);
    res = await admin(lb, `${cfgPath}/rollback`, { method: "POST", body: { version: 6 } });
    assert.equal(res.status, 200, res.text.slice(0, 300));
    assert.equal(res.body.version, 26);
    assert.match(res.body.config.backends[0].url, /\/w6-0\//);
    res = await admin(lb, `${cfgPath}/history`);
    assert.deepEqual(res.body.versions.slice(0, 2).map((v) => v.version), [26, 25]);
    assert.equal(res.body.versions.filter((v) => v.version > 0).length, 20);
  } finally {
    await lb.stop();
  }
});

test("a write storage refuses answers 503 with a plain message and changes nothing: not the config, traffic, history, audit nor the version, even after a restart", async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [a, b, c] = await backendsFor(t, ["a", "b", "c"]);
  const defaults = { hostname: "fail.test", backends: [a.url], ...noProbes };
  const cfgPath = "/admin/services/fail.test/config";
  let lb = await startBalancer({ defaultBackends: defaults, persistDir: dir });
  try {
    const res = await admin(lb, cfgPath, { method: "PUT", body: { backends: [b.url], ...noProbes } });
    assert.equal(res.body.version, 1, res.text);
  } finally {
    await lb.stop();
  }
  // Every config write of this runtime fails in storage (a value over the storage limit rides along).
  lb = await startBalancer({ defaultBackends: defaults, persistDir: dir, bindings: { FB_TEST_OVERSIZE_WRITE: "1" } });
  try {
    const audit = (await admin(lb, "/admin/services/fail.test/audit")).body.entries.length;
    const writes = [
      { path: cfgPath, method: "PUT", body: { backends: [c.url], access_control: { deny: ["0.0.0.0/0", "::/0"] }, ...noProbes } },
      { path: "/admin/services/fail.test/backends", method: "POST", body: { url: c.url } },
      { path: `${cfgPath}/rollback`, method: "POST", body: { version: 0 } },
      { path: `${cfgPath}/reset`, method: "POST" },
      { path: cfgPath, method: "DELETE" },
    ];
    for (const w of writes) {
      const res = await admin(lb, w.path, w);
      assert.equal(res.status, 503, `${w.method} ${w.path}: ${res.status} ${res.text}`);
      assert.equal(res.body.error, "the config could not be stored; nothing changed. Retry, and see the Worker's log if it persists");
      const now = await admin(lb, cfgPath);
      assert.equal(now.body.version, 1, `${w.method} ${w.path} changed the version in memory`);
      assert.deepEqual(now.body.config.backends.map((x) => x.url), [b.url]);
      assert.deepEqual((await served(lb, "fail.test")).backend, "b", `${w.method} ${w.path} changed traffic`);
    }
    assert.deepEqual((await admin(lb, `${cfgPath}/history`)).body.versions.map((v) => v.version), [1, 0]);
    assert.equal((await admin(lb, "/admin/services/fail.test/audit")).body.entries.length, audit);
  } finally {
    await lb.stop();
  }
  lb = await startBalancer({ defaultBackends: defaults, persistDir: dir });
  try {
    let res = await admin(lb, cfgPath);
    assert.equal(res.body.version, 1);
    res = await admin(lb, cfgPath, { method: "PUT", body: { backends: [c.url], ...noProbes } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.version, 2, "a version number was reused");
    assert.equal((await served(lb, "fail.test")).backend, "c");
  } finally {
    await lb.stop();
  }
});

// ---- item 4: webhook secrets are never read back ----

const SECRET = "whsec-store-0123456789-1a2b";

test("read keys see webhook secrets only redacted (config, status, history); a PUT of the GET result keeps signing with the stored secret", async (t) => {
  const [a] = await backendsFor(t, ["a"]);
  const rx = await startReceiver("rx", { secret: SECRET });
  t.after(() => stopAll([rx]));
  const lb = await balancerFor(t, {
    defaultBackends: { hostname: "sec.test", backends: [a.url], ...noProbes, notifications: { webhooks: [{ url: `${rx.url}/hook`, secret: SECRET }] } },
  });
  const key = await admin(lb, "/admin/keys", { method: "POST", body: { name: "reader", scope: "read" } });
  assert.equal(key.status, 201, key.text);
  const reads = ["/admin/services/sec.test/config", "/admin/services/sec.test", "/admin/services/sec.test/config/history"];
  const check = async (label) => {
    for (const p of reads) {
      for (const token of [key.body.key, undefined]) {
        const res = await admin(lb, p, token ? { token } : {});
        assert.equal(res.status, 200, `${p}: ${res.text}`);
        assert.ok(!res.text.includes(SECRET) && !res.text.includes(SECRET.slice(0, 12)), `${label}: ${p} shows the secret: ${res.text}`);
        assert.ok(res.text.includes('"secret":"••••1a2b"'), `${label}: ${p} has no redacted secret: ${res.text}`);
      }
    }
  };
  await check("deployed");

  // The GET result, edited and sent back: the stored secret stays and signs the next events.
  const got = await admin(lb, "/admin/services/sec.test/config");
  assert.equal(got.body.config.notifications.webhooks[0].secret, "••••1a2b");
  const edited = { ...got.body.config, retries: 2 };
  let res = await admin(lb, "/admin/services/sec.test/config/validate", { method: "POST", body: edited });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.config.notifications.webhooks[0].secret, "••••1a2b");
  res = await admin(lb, "/admin/services/sec.test/config", { method: "PUT", body: edited, headers: { "if-match": got.headers.get("etag") } });
  assert.equal(res.status, 200, res.text);
  assert.ok(!res.text.includes(SECRET), res.text);
  const changed = await waitFor(() => rx.ofKind("config.changed")[0], { timeoutMs: 15000, what: "config.changed" });
  assert.equal(changed.body.details.version, 1);
  assert.equal(rx.badSignatures, 0, "a delivery was signed with something other than the stored secret");
  await check("after the PUT");
  // Events and audit never carried it either.
  for (const p of ["/admin/services/sec.test/events", "/admin/services/sec.test/audit"]) {
    assert.ok(!(await admin(lb, p)).text.includes(SECRET), p);
  }

  // A redacted value no stored secret matches is refused by name, and nothing changes.
  const wrong = structuredClone(edited);
  wrong.notifications.webhooks[0].secret = "••••zzzz";
  res = await admin(lb, "/admin/services/sec.test/config", { method: "PUT", body: wrong });
  assert.equal(res.status, 400, res.text);
  assert.equal(res.body.errors[0].path, "notifications.webhooks[0].secret");
  assert.match(res.body.errors[0].message, /redacted/);
  // A new secret replaces it: deliveries are signed with the new one.
  const fresh = structuredClone(edited);
  fresh.notifications.webhooks[0].secret = "a-new-signing-secret-77";
  res = await admin(lb, "/admin/services/sec.test/config", { method: "PUT", body: fresh });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.config.notifications.webhooks[0].secret, "••••t-77");
  await waitFor(() => rx.badSignatures > 0, { timeoutMs: 15000, what: "a delivery signed with the new secret (refused by the old receiver)" });
});

// ---- item 15: the way back to the deployed config ----

test("reset to the deployed config: a new version with history and audit entries, If-Match honoured; rollback to version 0 does the same; 409/404 without one", async (t) => {
  const [a, b] = await backendsFor(t, ["a", "b"]);
  const lb = await balancerFor(t, { defaultBackends: { hostname: "dep.test", backends: [a.url], ...noProbes } });
  const cfgPath = "/admin/services/dep.test/config";
  let res = await admin(lb, `${cfgPath}/history`);
  assert.deepEqual(res.body.versions.map((v) => [v.version, v.source, v.current]), [[0, "DEFAULT_BACKENDS", true]]);
  res = await admin(lb, cfgPath, { method: "PUT", body: { backends: [b.url], ...noProbes } });
  assert.equal(res.body.version, 1);
  assert.equal(res.body.source, "api");
  assert.equal((await served(lb, "dep.test")).backend, "b");

  res = await admin(lb, `${cfgPath}/reset`, { method: "POST", headers: { "if-match": '"0"' } });
  assert.equal(res.status, 412, res.text);
  assert.equal((await served(lb, "dep.test")).backend, "b");
  res = await admin(lb, `${cfgPath}/reset`, { method: "POST", headers: { "if-match": '"1"' } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 2);
  assert.equal(res.body.source, "DEFAULT_BACKENDS");
  assert.equal(res.headers.get("etag"), '"2"');
  assert.equal((await served(lb, "dep.test")).backend, "a");
  res = await admin(lb, cfgPath);
  assert.deepEqual([res.body.version, res.body.source], [2, "DEFAULT_BACKENDS"]);
  res = await admin(lb, `${cfgPath}/history`);
  assert.deepEqual(res.body.versions.map((v) => [v.version, v.source]), [[2, "DEFAULT_BACKENDS"], [1, "api"], [0, "DEFAULT_BACKENDS"]]);
  const trail = (await admin(lb, "/admin/services/dep.test/audit")).body.entries;
  assert.equal(trail[0].action, "config.reset");
  assert.equal(trail[0].version, 2);
  assert.match(trail[0].summary, /deployed config/);

  // Rollback: to version 1 and back to version 0, the deployed config.
  res = await admin(lb, `${cfgPath}/rollback`, { method: "POST", body: { version: 1 } });
  assert.equal(res.body.version, 3, res.text);
  assert.equal((await served(lb, "dep.test")).backend, "b");
  res = await admin(lb, `${cfgPath}/rollback`, { method: "POST", body: { version: 0 } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 4);
  assert.equal((await served(lb, "dep.test")).backend, "a");

  // No deployed config: 409 for a service made through the API, 404 for no service at all.
  res = await admin(lb, "/admin/services/apionly.test/config", { method: "PUT", body: { backends: [b.url], ...noProbes } });
  assert.equal(res.status, 201, res.text);
  res = await admin(lb, "/admin/services/apionly.test/config/reset", { method: "POST" });
  assert.equal(res.status, 409, res.text);
  assert.match(res.body.error, /"apionly\.test" has no deployed config to reset to/);
  res = await admin(lb, "/admin/services/apionly.test/config/rollback", { method: "POST", body: { version: 0 } });
  assert.equal(res.status, 400, res.text);
  res = await admin(lb, "/admin/services/nothing.test/config/reset", { method: "POST" });
  assert.equal(res.status, 404, res.text);
  assert.equal((await admin(lb, "/admin/services/apionly.test/config")).body.version, 1);
  // A read key cannot reset.
  const key = await admin(lb, "/admin/keys", { method: "POST", body: { name: "reader", scope: "read" } });
  res = await admin(lb, `${cfgPath}/reset`, { method: "POST", token: key.body.key });
  assert.equal(res.status, 403, res.text);
});

test("DELETE of an API-edited service with a deployed config falls back to it as a new version; deleting the deployed config then deletes the service, and reset brings it back", async (t) => {
  const [a, b] = await backendsFor(t, ["a", "b"]);
  const lb = await balancerFor(t, { defaultBackends: { hostname: "fb.test", backends: [a.url], ...noProbes } });
  const cfgPath = "/admin/services/fb.test/config";
  let res = await admin(lb, cfgPath, { method: "PUT", body: { backends: [b.url], ...noProbes } });
  assert.equal(res.body.version, 1);
  res = await admin(lb, cfgPath, { method: "DELETE" });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 2);
  assert.equal(res.body.source, "DEFAULT_BACKENDS");
  assert.equal(res.body.deleted, undefined);
  assert.equal((await served(lb, "fb.test")).backend, "a");
  let list = (await admin(lb, "/admin/services")).body.services.map((s) => s.hostname);
  assert.ok(list.includes("fb.test"), `the fallen-back service is not listed: ${list}`);
  assert.equal((await admin(lb, "/admin/services/fb.test/audit")).body.entries[0].action, "config.reset");

  // Already on the deployed config: DELETE deletes the service.
  res = await admin(lb, cfgPath, { method: "DELETE" });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.deleted, "fb.test");
  assert.equal((await served(lb, "fb.test")).status, 421);
  list = (await admin(lb, "/admin/services")).body.services.map((s) => s.hostname);
  assert.ok(!list.includes("fb.test"), `a deleted service is listed: ${list}`);
  // Reset serves the deployed config again, continuing the numbering.
  res = await admin(lb, `${cfgPath}/reset`, { method: "POST" });
  assert.equal(res.status, 201, res.text);
  assert.equal(res.body.version, 3);
  assert.equal((await served(lb, "fb.test")).backend, "a");
  list = (await admin(lb, "/admin/services")).body.services.map((s) => s.hostname);
  assert.ok(list.includes("fb.test"), `the reset service is not listed: ${list}`);
});
