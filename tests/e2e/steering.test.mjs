// End to end: routing policy (weights, session affinity, geo pools, rate limits, access lists) and the
// admin API that changes it at runtime (config writes, validation, versions, rollback, backend edits, auth).
// Each test starts its own backends and runtime, which stop when it ends.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startBalancer, API_SECRET } from "../support/runtime.mjs";
import { waitFor } from "../support/backends.mjs";
import { backendsFor, balancerFor, quiet, serve } from "../support/scoped.mjs";
import { adminCall as admin } from "../support/admin.mjs";
import { backendOf, send } from "../support/requests.mjs";
import { geoService, reachedFrom } from "../support/geo.mjs";
import { changeUnderLoad, sentAt } from "../support/load.mjs";

const urls = (xs) => xs.map((x) => x.url);

// ---- helpers ----

async function counts(r, host, n, init = {}) {
  const c = {};
  for (let i = 0; i < n; i++) {
    const b = await backendOf(r, host, `/n${i}`, init);
    c[b] = (c[b] ?? 0) + 1;
  }
  return c;
}

function lbCookie(headers, name = "lb_session") {
  return headers.getSetCookie().find((c) => c.startsWith(`${name}=`));
}

function cookieValue(setCookie) {
  return setCookie.split(";")[0].slice(setCookie.indexOf("=") + 1);
}

// ---- 1. weights ----

test("weights 3:1: exactly 3 heavy and 1 light pick per cycle of 4, never more than 3 heavy in a row", async (t) => {
  const [wHeavy, wLight] = await backendsFor(t, ["w-heavy", "w-light"]);
  // Per request: exact cycles of 4 are the object's one round robin (each lease starts at its own
  // offset; lease.test.mjs checks the ratio under leases).
  const lb = await serve(t, [{ hostname: "weights.test", backends: [{ url: wHeavy.url, weight: 3 }, wLight.url], decisions: { mode: "per_request" } }]);
  const picks = [];
  for (let i = 0; i < 400; i++) picks.push(await backendOf(lb, "weights.test", `/w${i}`));
  const heavy = picks.filter((p) => p === "w-heavy").length;
  assert.equal(heavy, 300, `heavy got ${heavy} of 400`);
  assert.equal(picks.length - heavy, 100);
  for (let c = 0; c < 400; c += 4) {
    const cycle = picks.slice(c, c + 4);
    assert.equal(cycle.filter((p) => p === "w-heavy").length, 3, `cycle at ${c}: ${cycle.join(",")}`);
  }
  let run = 0;
  let maxRun = 0;
  for (const p of picks) {
    run = p === "w-heavy" ? run + 1 : 0;
    maxRun = Math.max(maxRun, run);
  }
  assert.ok(maxRun <= 3, `heavy backend picked ${maxRun} times in a row`);
});

// ---- 2. cookie affinity ----

test("cookie affinity: signed lb_session cookie pins the client, survives its backend's death by re-pinning, tampered cookies do not pin", async (t) => {
  const ss = await backendsFor(t, ["s1", "s2", "s3"]);
  const lb = await serve(t, [{ hostname: "sticky.test", backends: urls(ss), load_balancer: { session_affinity: { type: "cookie" } } }]);
  let res = await send(lb, "sticky.test", "/first");
  assert.equal(res.status, 200);
  const setCookie = lbCookie(res.headers);
  assert.ok(setCookie, `no lb_session cookie in ${JSON.stringify(res.headers.getSetCookie())}`);
  const attrs = setCookie.split(";").map((s) => s.trim().toLowerCase());
  assert.ok(attrs.includes("httponly"), setCookie);
  assert.ok(attrs.includes("samesite=lax"), setCookie);
  assert.ok(attrs.includes("path=/"), setCookie);
  assert.ok(!attrs.includes("secure"), `Secure on plain http: ${setCookie}`);
  let cookie = cookieValue(setCookie);
  const first = res.body.backend;

  for (let i = 0; i < 20; i++) {
    res = await send(lb, "sticky.test", `/pinned${i}`, { headers: { cookie: `other=1; lb_session=${cookie}` } });
    assert.equal(res.status, 200);
    assert.equal(res.body.backend, first, `request ${i} left the pinned backend`);
    assert.equal(lbCookie(res.headers), undefined, "a pinned client got a new cookie");
  }

  // Its backend dies: the port now refuses connections.
  const dead = ss.find((b) => b.name === first);
  await dead.kill();
  const after = [];
  let newCookies = 0;
  for (let i = 0; i < 12; i++) {
    res = await send(lb, "sticky.test", `/after${i}`, { headers: { cookie: `lb_session=${cookie}` } });
    assert.equal(res.status, 200, `request ${i} after the kill failed: ${res.text}`);
    after.push(res.body.backend);
    const sc = lbCookie(res.headers);
    if (sc) {
      newCookies++;
      assert.notEqual(cookieValue(sc), cookie);
      cookie = cookieValue(sc);
    }
    if (i === 0) assert.ok(sc, "the re-pinned client got no new cookie");
  }
  assert.ok(!after.includes(first), `the dead backend served: ${after.join(",")}`);
  assert.equal(newCookies, 1, "the client should be re-pinned once and then stay");
  assert.deepEqual(new Set(after).size, 1, `the re-pinned client wandered: ${after.join(",")}`);

  // A tampered cookie (one signature character changed) is ignored: the client gets a fresh cookie.
  const [payload, sig] = cookie.split(".");
  const tampered = `${payload}.${sig[0] === "A" ? "B" : "A"}${sig.slice(1)}`;
  res = await send(lb, "sticky.test", "/tampered", { headers: { cookie: `lb_session=${tampered}` } });
  assert.equal(res.status, 200);
  const fresh = lbCookie(res.headers);
  assert.ok(fresh, "a tampered cookie was accepted as a pin (no fresh cookie)");
  assert.notEqual(cookieValue(fresh), tampered);
});

// ---- 3. header affinity ----

test("header affinity: the same x-user always lands on the same backend, different users spread", async (t) => {
  const hs = await backendsFor(t, ["h1", "h2", "h3"]);
  const lb = await serve(t, [{ hostname: "hdr.test", backends: urls(hs), load_balancer: { session_affinity: { type: "header", header_name: "x-user" } } }]);
  // The Worker learns which request header keys affinity from the Durable Object's first decision for
  // the hostname; on that first request it asks again with the key, so even the very first request
  // of a fresh isolate is keyed (it is part of alice's 20 below).
  const alice = [];
  for (let i = 0; i < 20; i++) alice.push(await backendOf(lb, "hdr.test", `/a${i}`, { headers: { "x-user": "alice" } }));
  assert.equal(new Set(alice).size, 1, `alice moved: ${alice.join(",")}`);

  const byUser = {};
  for (let u = 0; u < 12; u++) {
    const user = `user-${u}`;
    const got = new Set();
    for (let i = 0; i < 3; i++) got.add(await backendOf(lb, "hdr.test", `/u${u}-${i}`, { headers: { "x-user": user } }));
    assert.equal(got.size, 1, `${user} moved between ${[...got]}`);
    byUser[user] = [...got][0];
  }
  assert.ok(new Set(Object.values(byUser)).size > 1, `all users on one backend: ${JSON.stringify(byUser)}`);
});

// ---- 4. geo steering ----

test("geo steering: country, then continent, then fallback; an unhealthy pool falls back", async (t) => {
  const eu = await backendsFor(t, ["eu1", "eu2"]);
  const us = await backendsFor(t, ["us1"]);
  const r = await balancerFor(t, {
    defaultBackends: { ...geoService(eu, us), activeHealthChecks: { interval: 0.5, timeout: 0.3, consecutive_down: 2 } },
  });
  const from = (cf, n = 6) => reachedFrom(r, cf, n);
  assert.deepEqual(await from({ country: "DE", continent: "EU" }), ["eu1", "eu2"]);
  assert.deepEqual(await from({ country: "FR", continent: "EU" }), ["eu1", "eu2"]);
  assert.deepEqual(await from({ country: "JP", continent: "AS" }), ["us1"]);
  assert.deepEqual(await from(null), ["us1"]);

  await eu[0].kill();
  await eu[1].kill();
  await waitFor(
    async () => {
      const st = await admin(r, "/admin/services/geo.test");
      assert.equal(st.status, 200);
      return eu.every((b) => st.body.backends.find((x) => x.url === b.url)?.healthy === false);
    },
    { what: "the eu backends to be marked unhealthy" },
  );
  assert.deepEqual(await from({ country: "DE", continent: "EU" }), ["us1"]);
});

test("geo steering switched on by a config change steers the very next request", async (t) => {
  const eu = await backendsFor(t, ["eu1"]);
  const us = await backendsFor(t, ["us1"]);
  const r = await balancerFor(t, { defaultBackends: { ...quiet, hostname: "geoswitch.test", backends: urls(us) } });
  const de = { cf: { country: "DE", continent: "EU" } };
  // Without geo steering the Worker learns not to read the client's geography (request.cf).
  assert.equal(await backendOf(r, "geoswitch.test", "/a", de), "us1");
  assert.equal(await backendOf(r, "geoswitch.test", "/b", de), "us1");
  const res = await admin(r, "/admin/services/geoswitch.test/config", {
    method: "PUT",
    body: {
      ...quiet,
      pools: [
        { name: "eu", backends: urls(eu) },
        { name: "us", backends: urls(us) },
      ],
      geo_steering: { regions: { DE: "eu" }, fallback_pool: "us" },
    },
  });
  assert.equal(res.status, 200, res.text);
  // The first decision after the change says geo matters: the Worker asks again with it.
  for (let i = 0; i < 3; i++) assert.equal(await backendOf(r, "geoswitch.test", `/c${i}`, de), "eu1");
  assert.equal(await backendOf(r, "geoswitch.test", "/d", { cf: { country: "JP", continent: "AS" } }), "us1");
});

// ---- 5. config API: create, read, replace, list, delete ----

test("config API: create a service, read it back with version and ETag, replace it via vars, list it, delete it", async (t) => {
  const [n1, n2, n3] = await backendsFor(t, ["n1", "n2", "n3"]);
  // Services from DEFAULT_BACKENDS, listed beside the one created through the API.
  const [other] = await backendsFor(t, ["other"]);
  const lb = await serve(
    t,
    ["weights.test", "sticky.test", "oa.test"].map((hostname) => ({ hostname, backends: [other.url] })),
  );
  // Per request: the exact 2:2 below is the object's round robin (a lease starts at a random offset).
  let res = await admin(lb, "/admin/services/new.test/config", { method: "POST", body: { backends: [n1.url, n2.url], decisions: { mode: "per_request" } } });
  assert.equal(res.status, 201, res.text);
  assert.equal(res.body.version, 1);
  assert.deepEqual((await counts(lb, "new.test", 4)), { n1: 2, n2: 2 });

  res = await admin(lb, "/admin/services/new.test/config");
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 1);
  assert.equal(res.headers.get("etag"), '"1"');
  assert.equal(res.body.config.hostname, "new.test");
  assert.deepEqual(res.body.config.backends.map((b) => (typeof b === "string" ? b : b.url)), [n1.url, n2.url]);

  res = await admin(lb, "/admin/services/new.test/config", {
    method: "POST",
    body: { vars: { DEFAULT_BACKENDS: JSON.stringify({ hostname: "new.test", backends: [n3.url] }) } },
  });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 2);
  assert.deepEqual(await counts(lb, "new.test", 3), { n3: 3 });

  res = await admin(lb, "/admin/services");
  assert.equal(res.status, 200);
  const listed = res.body.services.map((s) => s.hostname);
  for (const h of ["new.test", "weights.test", "sticky.test", "oa.test"]) assert.ok(listed.includes(h), `${h} not listed: ${listed}`);
  assert.equal(res.body.services.find((s) => s.hostname === "new.test").backends, 1);

  res = await admin(lb, "/admin/services/new.test/config", { method: "DELETE" });
  assert.equal(res.status, 200, res.text);
  const gone = await send(lb, "new.test", "/");
  assert.equal(gone.status, 421);
  assert.match(gone.body.error, /new\.test/);
  assert.equal(n3.requests().length, 3, "a deleted service's backend got traffic");
  res = await admin(lb, "/admin/services");
  assert.ok(!res.body.services.map((s) => s.hostname).includes("new.test"), "a deleted service is still listed");
  assert.ok(res.body.services.map((s) => s.hostname).includes("weights.test"));
  // Like any hostname without a service: 404 with a JSON error naming it.
  res = await admin(lb, "/admin/services/new.test/config");
  assert.equal(res.status, 404, `GET config of a deleted service: ${res.status} ${res.text}`);
  assert.match(res.body?.error ?? "", /new\.test/);
});

// ---- 6. validation ----

test("invalid configs get 400 with every error by field path, and nothing changes", async (t) => {
  const [i1, i2] = await backendsFor(t, ["inv1", "inv2"]);
  // Per request: the exact 2:2 at the end is the object's round robin.
  const lb = await serve(t, [{ hostname: "inv.test", backends: urls([i1, i2]), decisions: { mode: "per_request" } }]);
  const before = await admin(lb, "/admin/services/inv.test/config");
  assert.equal(before.status, 200);
  const cases = [
    { what: "malformed JSON", body: '{"backends": [', path: null },
    { what: "ftp backend", body: { backends: ["ftp://x"] }, path: "backends[0]", message: /ftp:\/\/x/ },
    { what: "string weight", body: { backends: [{ url: i1.url, weight: "3" }] }, path: "backends[0].weight" },
    { what: "unknown key", body: { backends: [i1.url], colour: "blue" }, path: "colour", message: /unknown key/ },
    { what: "zero backends", body: { backends: [] }, path: "backends", message: /at least one backend/ },
    {
      what: "missing fallback pool",
      body: { pools: [{ name: "eu", backends: [i1.url] }], geo_steering: { regions: { DE: "eu" }, fallback_pool: "asia" } },
      path: "geo_steering.fallback_pool",
      message: /asia/,
    },
    { what: "userinfo in URL", body: { backends: ["http://user:pw@127.0.0.1:1"] }, path: "backends[0]", message: /userinfo/ },
  ];
  for (const c of cases) {
    const res = await admin(lb, "/admin/services/inv.test/config", { method: "POST", body: c.body });
    assert.equal(res.status, 400, `${c.what}: ${res.status} ${res.text}`);
    assert.ok(Array.isArray(res.body?.errors) && res.body.errors.length > 0, `${c.what}: no errors array: ${res.text}`);
    for (const e of res.body.errors) {
      assert.equal(typeof e.path, "string", `${c.what}: ${JSON.stringify(e)}`);
      assert.equal(typeof e.message, "string", `${c.what}: ${JSON.stringify(e)}`);
    }
    if (c.path !== null) {
      const hit = res.body.errors.find((e) => e.path === c.path);
      assert.ok(hit, `${c.what}: no error at ${c.path}: ${JSON.stringify(res.body.errors)}`);
      if (c.message) assert.match(hit.message, c.message, c.what);
    } else {
      assert.match(res.body.errors[0].message, /JSON/i);
    }
  }
  const afterCfg = await admin(lb, "/admin/services/inv.test/config");
  assert.deepEqual(afterCfg.body, before.body);
  assert.equal(afterCfg.headers.get("etag"), before.headers.get("etag"));
  assert.deepEqual(await counts(lb, "inv.test", 4), { inv1: 2, inv2: 2 });
  assert.deepEqual([i1, i2].map((b) => b.requests().length), [2, 2]);
});

// ---- 7. versions, If-Match, history, rollback, durability ----

test("versions: each accepted change bumps the version and ETag; a stale If-Match is 412 and changes nothing; the current one succeeds", async (t) => {
  const [v1, v2, v3] = await backendsFor(t, ["v1", "v2", "v3"]);
  // Per request: the exact 2:2 after the backend edit is the object's round robin.
  const lb = await serve(t, [{ hostname: "ver.test", backends: [v1.url], decisions: { mode: "per_request" } }]);
  const cfgPath = "/admin/services/ver.test/config";
  let res = await admin(lb, cfgPath);
  assert.equal(res.body.version, 0, "a DEFAULT_BACKENDS service starts at version 0");
  assert.equal(res.headers.get("etag"), '"0"');

  res = await admin(lb, cfgPath, { method: "POST", body: { backends: [v2.url], decisions: { mode: "per_request" } } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 1);
  assert.equal(res.headers.get("etag"), '"1"');
  res = await admin(lb, cfgPath, { method: "PUT", body: { backends: [v3.url], decisions: { mode: "per_request" } } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 2);
  assert.deepEqual(await counts(lb, "ver.test", 3), { v3: 3 });
  res = await admin(lb, `/admin/services/ver.test/backends`, { method: "POST", body: { url: v2.url } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 3, "a backend edit is a new version too");

  // Stale If-Match: 412, nothing stored, traffic unchanged.
  const before = await admin(lb, cfgPath);
  assert.equal(before.body.version, 3);
  res = await admin(lb, cfgPath, { method: "POST", body: { backends: [v1.url] }, headers: { "if-match": '"2"' } });
  assert.equal(res.status, 412, res.text);
  res = await admin(lb, `/admin/services/ver.test/backends?url=${encodeURIComponent(v2.url)}`, { method: "DELETE", headers: { "if-match": "1" } });
  assert.equal(res.status, 412, res.text);
  const after = await admin(lb, cfgPath);
  assert.deepEqual(after.body, before.body);
  assert.deepEqual(await counts(lb, "ver.test", 4), { v3: 2, v2: 2 });

  // Current If-Match (the ETag as given): accepted.
  res = await admin(lb, cfgPath, { method: "POST", body: { backends: [v1.url] }, headers: { "if-match": before.headers.get("etag") } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 4);
  assert.deepEqual(await counts(lb, "ver.test", 2), { v1: 2 });
});

test("config history lists accepted versions newest first; rollback restores an older config as a new version and traffic follows", async (t) => {
  const [h1, h2, h3] = await backendsFor(t, ["hist1", "hist2", "hist3"]);
  const lb = await serve(t, [{ hostname: "hist.test", backends: [h1.url] }]);
  const cfgPath = "/admin/services/hist.test/config";
  for (const b of [h2, h3]) {
    const res = await admin(lb, cfgPath, { method: "POST", body: { backends: [b.url] } });
    assert.equal(res.status, 200, res.text);
  }
  assert.deepEqual(await counts(lb, "hist.test", 2), { hist3: 2 });

  let res = await admin(lb, `${cfgPath}/history`);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.current, 2);
  let versions = res.body.versions.map((v) => v.version);
  // Version 0 last: the deployed config (DEFAULT_BACKENDS).
  assert.deepEqual(versions, [2, 1, 0], `history after two changes: ${res.text}`);
  assert.equal(res.body.versions[0].current, true);
  assert.deepEqual(res.body.versions[1].config.backends.map((b) => b.url ?? b), [h2.url]);

  res = await admin(lb, `${cfgPath}/rollback`, { method: "POST", body: { version: 1 } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.version, 3);
  assert.deepEqual(await counts(lb, "hist.test", 2), { hist2: 2 });
  res = await admin(lb, cfgPath);
  assert.equal(res.body.version, 3);
  assert.deepEqual(res.body.config.backends.map((b) => b.url ?? b), [h2.url]);
  res = await admin(lb, `${cfgPath}/history`);
  versions = res.body.versions.map((v) => v.version);
  assert.deepEqual(versions, [3, 2, 1, 0]);

  // Rollback honours If-Match too.
  res = await admin(lb, `${cfgPath}/rollback`, { method: "POST", body: { version: 2 }, headers: { "if-match": '"1"' } });
  assert.equal(res.status, 412, res.text);
  assert.deepEqual(await counts(lb, "hist.test", 2), { hist2: 2 });
  assert.equal(h1.requests().length, 0, "the DEFAULT_BACKENDS backend got traffic after the API took over");
});

test("a config stored through the API survives a restart of the runtime (same storage)", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "fb-steering-"));
  const [d1, d2] = await backendsFor(t, ["d1", "d2"]);
  try {
    let r = await startBalancer({ defaultBackends: { hostname: "durable.test", backends: [d1.url], ...quiet }, persistDir: dir });
    let res;
    try {
      res = await admin(r, "/admin/services/durable.test/config", { method: "POST", body: { backends: [d2.url] } });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.version, 1);
    } finally {
      await r.stop();
    }
    r = await startBalancer({ defaultBackends: { hostname: "durable.test", backends: [d1.url], ...quiet }, persistDir: dir });
    try {
      res = await admin(r, "/admin/services/durable.test/config");
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.version, 1, `after a restart: ${res.text}`);
      assert.deepEqual(await counts(r, "durable.test", 2), { d2: 2 });
    } finally {
      await r.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- 8. backend operations ----

test("backend operations: add, disable, reweight, remove; removing the last backend is refused", async (t) => {
  const [o1, o2, o3] = await backendsFor(t, ["o1", "o2", "o3"]);
  // Per request: exact counts right after each backend edit are the object's round robin.
  const lb = await serve(t, [{ hostname: "ops.test", backends: urls([o1, o2]), decisions: { mode: "per_request" } }]);
  const base = "/admin/services/ops.test/backends";
  let res = await admin(lb, base, { method: "POST", body: { url: o3.url } });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(await counts(lb, "ops.test", 6), { o1: 2, o2: 2, o3: 2 });

  res = await admin(lb, base, { method: "PATCH", body: { url: o3.url, state: "disabled" } });
  assert.equal(res.status, 200, res.text);
  const o3Before = o3.requests().length;
  assert.deepEqual(await counts(lb, "ops.test", 6), { o1: 3, o2: 3 });
  assert.equal(o3.requests().length, o3Before, "a disabled backend got traffic");

  res = await admin(lb, base, { method: "PATCH", body: { url: o1.url, weight: 3 } });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(await counts(lb, "ops.test", 8), { o1: 6, o2: 2 });
  const st = await admin(lb, "/admin/services/ops.test");
  assert.equal(st.body.backends.find((b) => b.url === o1.url).weight, 3);

  res = await admin(lb, `${base}?url=${encodeURIComponent(o3.url)}`, { method: "DELETE" });
  assert.equal(res.status, 200, res.text);
  res = await admin(lb, `${base}?url=${encodeURIComponent(o2.url)}`, { method: "DELETE" });
  assert.equal(res.status, 200, res.text);
  let cfg = await admin(lb, "/admin/services/ops.test/config");
  assert.deepEqual(cfg.body.config.backends.map((b) => (typeof b === "string" ? b : b.url)), [o1.url]);
  assert.deepEqual(await counts(lb, "ops.test", 3), { o1: 3 });

  res = await admin(lb, `${base}?url=${encodeURIComponent(o1.url)}`, { method: "DELETE" });
  assert.equal(res.status, 400, res.text);
  assert.ok(Array.isArray(res.body.errors) && res.body.errors.length > 0, res.text);
  const cfgAfter = await admin(lb, "/admin/services/ops.test/config");
  assert.deepEqual(cfgAfter.body, cfg.body);
  assert.deepEqual(await counts(lb, "ops.test", 2), { o1: 2 });
});

// ---- 9. a config change under load ----

test("a config change under load takes effect at once: nothing sent after the 2xx reaches the removed backend", async (t) => {
  const [a, b, c] = await backendsFor(t, ["la", "lb", "lc"]);
  const lb = await serve(t, [{ hostname: "load.test", backends: urls([a, b, c]) }]);
  const { res, changedAt, failures } = await changeUnderLoad(lb, "load.test", { backends: [a.url, b.url] });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(failures, [], "clients saw failures");
  const all = [a, b, c].flatMap((x) => x.requests());
  const afterChange = all.filter((r) => sentAt(r) > changedAt);
  assert.ok(afterChange.length >= 30, `only ${afterChange.length} requests were sent after the change: not a test of anything`);
  assert.ok(c.requests().length > 0, "C never got traffic before the change");
  const late = c.requests().filter((r) => sentAt(r) > changedAt);
  assert.deepEqual(late.map((r) => `${r.url} received ${r.at - changedAt} ms after the 2xx`), [], "C got requests sent after the change");
  assert.ok(
    c.requests().every((r) => r.at <= changedAt + 1000),
    "C kept receiving traffic long after the change",
  );
});

// ---- 10. auth ----

test("admin auth: Bearer and Basic accepted, wrong Basic is 401, repeated failures are throttled with 429", async (t) => {
  const r = await balancerFor(t, {
    defaultBackends: { hostname: "auth.test", backends: ["http://127.0.0.1:9"], ...quiet },
    bindings: { WEB_AUTH_USERNAME: "operator", WEB_AUTH_PASSWORD: "correct horse" },
  });
  const basic = (u, p) => `Basic ${Buffer.from(`${u}:${p}`).toString("base64")}`;
  const call = (authorization) => r.mf.dispatchFetch("http://localhost/admin/services", { headers: authorization ? { authorization } : {} });

  let res = await call(`Bearer ${API_SECRET}`);
  assert.equal(res.status, 200);
  assert.ok(Array.isArray((await res.json()).services));
  res = await call(basic("operator", "correct horse"));
  assert.equal(res.status, 200);
  assert.ok(Array.isArray((await res.json()).services));

  const statuses = [];
  for (let i = 0; i < 5; i++) {
    res = await call(basic("operator", `wrong-${i}`));
    statuses.push(res.status);
    if (res.status === 401) assert.match(res.headers.get("www-authenticate") ?? "", /Basic/);
    await res.arrayBuffer();
  }
  assert.deepEqual(statuses, [401, 401, 401, 401, 401]);
  // From the 5th failure on the address is locked out: the next attempt, even a correct one, gets 429.
  res = await call(basic("operator", "wrong-again"));
  assert.equal(res.status, 429);
  const retryAfter = Number(res.headers.get("retry-after"));
  assert.ok(retryAfter >= 1, `Retry-After: ${res.headers.get("retry-after")}`);
  assert.match((await res.json()).error, /too many/);
  res = await call(basic("operator", "correct horse"));
  assert.equal(res.status, 429, "a locked-out address got in");
  await res.arrayBuffer();
});

// ---- 11. rate limit and access lists ----

test("rate limit: the 6th request in the window is 429 with Retry-After; another hostname is unaffected", async (t) => {
  const [r1] = await backendsFor(t, ["rl1"]);
  const lb = await serve(t, [
    { hostname: "rl.test", backends: [r1.url], rate_limit: { requests: 5, window: 60 } },
    { hostname: "rl2.test", backends: [r1.url], rate_limit: { requests: 5, window: 60 } },
  ]);
  const before = r1.requests().length;
  for (let i = 0; i < 5; i++) assert.equal((await send(lb, "rl.test", `/r${i}`)).status, 200);
  const res = await send(lb, "rl.test", "/r6");
  assert.equal(res.status, 429, res.text);
  const retryAfter = Number(res.headers.get("retry-after"));
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${res.headers.get("retry-after")}`);
  assert.match(res.body.error, /rate limit/);
  assert.match(res.body.error, /rl\.test/);
  assert.equal(r1.requests().length, before + 5, "the limited request reached the backend");
  for (let i = 0; i < 5; i++) assert.equal((await send(lb, "rl2.test", `/q${i}`)).status, 200, "rl2.test was limited by rl.test's traffic");
});

test("access lists: deny wins, a non-matching allow list refuses, a matching one admits", async (t) => {
  const [b] = await backendsFor(t, ["acl1"]);
  const lb = await serve(t, [
    { hostname: "deny.test", backends: [b.url], access_control: { deny: ["127.0.0.1"] } },
    { hostname: "allow10.test", backends: [b.url], access_control: { allow: ["10.0.0.0/8"] } },
    { hostname: "allow127.test", backends: [b.url], access_control: { allow: ["127.0.0.0/8"] } },
  ]);
  const before = b.requests().length;
  let res = await send(lb, "deny.test", "/");
  assert.equal(res.status, 403, res.text);
  assert.match(res.body.error, /127\.0\.0\.1/);
  res = await send(lb, "allow10.test", "/");
  assert.equal(res.status, 403, res.text);
  assert.equal(b.requests().length, before, "a refused client reached the backend");
  res = await send(lb, "allow127.test", "/");
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.backend, "acl1");
});

// ---- 12. isolation ----

test("two services are isolated: one service's failing backends and open breakers do not touch another's", async (t) => {
  const isoA = await backendsFor(t, ["fa1", "fa2"]);
  const isoB = await backendsFor(t, ["gb1", "gb2"]);
  // Per request: every failure reaches iso-a's object, and iso-b's 10:10 is the object's round
  // robin (a lease starts at a random offset).
  const perRequest = { decisions: { mode: "per_request" } };
  const lb = await serve(t, [
    {
      hostname: "iso-a.test",
      backends: urls(isoA),
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 600000 } },
      ...perRequest,
    },
    { hostname: "iso-b.test", backends: urls(isoB), ...perRequest },
  ]);
  for (const x of isoA) x.mode = "503";
  for (let i = 0; i < 8; i++) await send(lb, "iso-a.test", `/f${i}`);
  const st = await waitFor(
    async () => {
      const s = await admin(lb, "/admin/services/iso-a.test");
      return s.body.backends.every((x) => x.breaker === "open") ? s : null;
    },
    { timeoutMs: 5000, what: "iso-a breakers to open" },
  );
  assert.equal(st.body.backends.length, 2);
  const res = await send(lb, "iso-a.test", "/still-failing");
  assert.equal(res.status, 503);

  assert.deepEqual(await counts(lb, "iso-b.test", 20), { gb1: 10, gb2: 10 });
  const b = await admin(lb, "/admin/services/iso-b.test");
  for (const x of b.body.backends) {
    assert.equal(x.healthy, true, JSON.stringify(x));
    assert.equal(x.breaker, "closed", JSON.stringify(x));
    assert.equal(x.consecutive_request_failures, 0, JSON.stringify(x));
  }
  const list = await admin(lb, "/admin/services");
  const byHost = Object.fromEntries(list.body.services.map((s) => [s.hostname, s]));
  assert.equal(byHost["iso-a.test"].healthy, false);
  assert.equal(byHost["iso-b.test"].healthy, true);
  assert.equal(byHost["iso-b.test"].healthy_backends, 2);
});

// ---- 13. OpenAPI ----

test("OpenAPI: the document is valid 3.x and every route it lists exists", async (t) => {
  const [p1, p2] = await backendsFor(t, ["oa1", "oa2"]);
  const lb = await serve(t, [{ hostname: "oa.test", backends: urls([p1, p2]) }]);
  const res = await admin(lb, "/admin/openapi.json");
  assert.equal(res.status, 200);
  assert.ok(res.body, `not JSON: ${res.text.slice(0, 200)}`);
  const doc = res.body;
  assert.match(String(doc.openapi), /^3\.\d+(\.\d+)?$/);
  assert.ok(doc.paths && Object.keys(doc.paths).length > 0, "no paths");
  // Mutating calls carry a stale If-Match: the route is reached, validation runs, and nothing changes.
  const stale = { "if-match": '"999999"' };
  const bodies = {
    "post /admin/services/{hostname}/config": { body: { backends: [p1.url, p2.url] }, headers: stale },
    "put /admin/services/{hostname}/config": { body: { backends: [p1.url, p2.url] }, headers: stale },
    "delete /admin/services/{hostname}/config": { headers: stale },
    "post /admin/services/{hostname}/config/rollback": { body: { version: 999999 } },
    "post /admin/services/{hostname}/config/reset": { headers: stale },
    "post /admin/services/{hostname}/backends": { body: { url: "http://127.0.0.1:9" }, headers: stale },
    "patch /admin/services/{hostname}/backends": { body: { url: p2.url, weight: 2 }, headers: stale },
    "delete /admin/services/{hostname}/backends": { query: `?url=${encodeURIComponent(p2.url)}`, headers: stale },
    "post /admin/services/{hostname}/rules/test": { body: { request: { path: "/" } } },
  };
  const methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
  const results = [];
  for (const [template, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item).filter((k) => methods.includes(k))) {
      const spec = bodies[`${method} ${template}`] ?? {};
      const path = template.replace("{hostname}", "oa.test") + (spec.query ?? "");
      const r = await admin(lb, path, { method: method.toUpperCase(), body: spec.body, headers: spec.headers });
      results.push({ route: `${method.toUpperCase()} ${template}`, status: r.status, error: r.body?.error });
    }
  }
  assert.ok(results.length >= 10, `only ${results.length} operations documented`);
  const missing = results.filter((r) => r.status === 405 || r.status === 404 || r.status >= 500 || /no admin route/.test(r.error ?? ""));
  assert.deepEqual(missing, [], "documented routes that do not exist");
  // The calls changed nothing.
  const cfg = await admin(lb, "/admin/services/oa.test/config");
  assert.equal(cfg.status, 200);
  assert.equal(cfg.body.version, 0);
});
