// End to end: the admin and Durable Object defects of issue #7 (login throttle, If-Match, affinity key, unknown hostnames, body limits).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { startBalancer, API_SECRET } from "../support/runtime.mjs";
import { startBackend, stopAll, waitFor } from "../support/backends.mjs";
import { adminCall as admin } from "../support/admin.mjs";
import { quiet } from "../support/scoped.mjs";

/** An admin call from `ip` with `token`; answers { status, headers, body }. */
async function login(lb, ip, token) {
  const res = await lb.mf.dispatchFetch("http://localhost/admin/services", {
    headers: { authorization: `Bearer ${token}`, "cf-connecting-ip": ip },
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text };
}

function tempDir() {
  return mkdtempSync(path.join(tmpdir(), "fb-admin-defects-"));
}

/** Every file under `dir` (recursively). */
function countFiles(dir) {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    n += e.isDirectory() ? countFiles(path.join(dir, e.name)) : 1;
  }
  return n;
}

// ---- 1. login throttle: its own object, canonical addresses, lockouts kept in storage ----

test("login failures from ::ffff:1.2.3.4 and 1.2.3.4 count together", async () => {
  const lb = await startBalancer({ defaultBackends: "" });
  try {
    const spellings = ["::ffff:198.51.100.7", "198.51.100.7", "::FFFF:198.51.100.7", "198.51.100.7", "::ffff:c633:6407"];
    const statuses = [];
    for (const ip of spellings) statuses.push((await login(lb, ip, "wrong")).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 401]);
    // Five failures between the spellings lock the address out, in either spelling.
    for (const ip of ["198.51.100.7", "::ffff:198.51.100.7"]) {
      const res = await login(lb, ip, API_SECRET);
      assert.equal(res.status, 429, `${ip} got in after five failures of one address: ${res.body}`);
    }
    // Another address is not affected.
    assert.equal((await login(lb, "198.51.100.8", API_SECRET)).status, 200);
  } finally {
    await lb.stop();
  }
});

test("a login lockout survives a restart of the runtime", async () => {
  const dir = tempDir();
  const ip = "203.0.113.9";
  try {
    let lb = await startBalancer({ defaultBackends: "", persistDir: dir });
    try {
      // Five failures lock out for 1 s; each failure after a lockout doubles it: the 8th locks 8 s.
      for (let n = 1; n <= 8; n++) {
        await waitFor(async () => (await login(lb, ip, `wrong-${n}`)).status === 401, {
          timeoutMs: 15000,
          stepMs: 200,
          what: `failure ${n} to be counted`,
        });
      }
      const locked = await login(lb, ip, API_SECRET);
      assert.equal(locked.status, 429);
      assert.ok(Number(locked.headers.get("retry-after")) >= 5, `Retry-After ${locked.headers.get("retry-after")}`);
    } finally {
      await lb.stop();
    }
    lb = await startBalancer({ defaultBackends: "", persistDir: dir });
    try {
      const res = await login(lb, ip, API_SECRET);
      assert.equal(res.status, 429, `the lockout was forgotten by the restart: ${res.status} ${res.body}`);
      assert.ok(Number(res.headers.get("retry-after")) >= 1);
      assert.equal((await login(lb, "203.0.113.10", API_SECRET)).status, 200);
    } finally {
      await lb.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- 2. If-Match fails closed ----

test("If-Match: malformed values are 400 naming the header, unmatched tags 412, and neither stores anything", async () => {
  const [b1, b2] = [await startBackend("im1"), await startBackend("im2")];
  const lb = await startBalancer({ defaultBackends: { hostname: "im.test", backends: [b1.url], ...quiet } });
  const cfgPath = "/admin/services/im.test/config";
  const write = (ifMatch, method = "POST") =>
    admin(lb, cfgPath, { method, body: { backends: [b2.url] }, headers: { "if-match": ifMatch } });
  const version = async () => (await admin(lb, cfgPath)).body?.version;
  try {
    assert.equal(await version(), 0);
    // (An empty If-Match never reaches the Worker: the runtime drops empty header values. An empty
    // list is the closest a client can send.)
    for (const bad of ["abc", "-1", '"-1"', ",", " , ,", "1.5", '"0", abc', "*, 0", 'W/"x"', '""']) {
      const res = await write(bad);
      assert.equal(res.status, 400, `If-Match ${JSON.stringify(bad)}: ${res.status} ${res.text}`);
      assert.equal(res.body.errors[0].path, "If-Match", res.text);
      assert.match(res.body.errors[0].message, /W\/"N"/, res.text);
      assert.equal(await version(), 0, `If-Match ${JSON.stringify(bad)} changed the config`);
    }
    for (const stale of ["7", '"5", W/"6"', '"1"']) {
      const res = await write(stale, "PUT");
      assert.equal(res.status, 412, `If-Match ${stale}: ${res.status} ${res.text}`);
      assert.equal(res.body.current_version, 0);
      assert.equal(await version(), 0, `If-Match ${stale} changed the config`);
    }
    // Accepted forms: "*" (a config exists), a list naming the current version, a weak tag.
    let res = await write("*");
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.version, 1);
    res = await write('"7", "1"');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.version, 2);
    res = await write('W/"2"', "PUT");
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.version, 3);

    // The other writes refuse the same way.
    const other = [
      { what: "delete config", path: cfgPath, method: "DELETE" },
      { what: "rollback", path: `${cfgPath}/rollback`, method: "POST", body: { version: 1 } },
      { what: "reset", path: `${cfgPath}/reset`, method: "POST" },
      { what: "add backend", path: "/admin/services/im.test/backends", method: "POST", body: { url: "http://127.0.0.1:9" } },
      { what: "remove backend", path: `/admin/services/im.test/backends?url=${encodeURIComponent(b2.url)}`, method: "DELETE" },
    ];
    for (const o of other) {
      for (const [ifMatch, status] of [["nope", 400], ["-3", 400], ["2", 412], ['"1", "2"', 412]]) {
        res = await admin(lb, o.path, { method: o.method, body: o.body, headers: { "if-match": ifMatch } });
        assert.equal(res.status, status, `${o.what} with If-Match ${ifMatch}: ${res.status} ${res.text}`);
        assert.equal(await version(), 3, `${o.what} with If-Match ${ifMatch} changed the config`);
      }
    }
    res = await admin(lb, `${cfgPath}/history`);
    // Version 0 last: the deployed config (DEFAULT_BACKENDS), restorable like a kept version.
    assert.deepEqual(res.body.versions.map((v) => v.version), [3, 2, 1, 0]);
    assert.equal((await (await lb.fetch("im.test", "/")).json()).backend, "im2");

    // "*" needs a current config: a hostname without one is not created.
    res = await admin(lb, "/admin/services/none.test/config", { method: "PUT", body: { backends: [b1.url] }, headers: { "if-match": "*" } });
    assert.equal(res.status, 412, res.text);
    res = await admin(lb, "/admin/services/none.test/config");
    assert.equal(res.status, 404, `If-Match * created a service: ${res.text}`);
  } finally {
    await lb.stop();
    await stopAll([b1, b2]);
  }
});

// ---- 3. the affinity cookie is no oracle for the admin secret ----

function cookieOf(headers) {
  const sc = headers.getSetCookie().find((c) => c.startsWith("lb_session="));
  return sc?.split(";")[0].slice("lb_session=".length);
}

test("without AFFINITY_SECRET the cookie is signed with a stored per-hostname key, not API_SECRET, and pins survive a restart", async () => {
  const dir = tempDir();
  const bs = [await startBackend("p1"), await startBackend("p2"), await startBackend("p3")];
  const opts = {
    defaultBackends: { hostname: "pin.test", backends: bs.map((b) => b.url), load_balancer: { session_affinity: { type: "cookie" } }, ...quiet },
    persistDir: dir,
  };
  try {
    let lb = await startBalancer(opts);
    let cookie, pinned;
    try {
      const res = await lb.fetch("pin.test", "/first");
      assert.equal(res.status, 200);
      pinned = (await res.json()).backend;
      cookie = cookieOf(res.headers);
      assert.ok(cookie, "no lb_session cookie");
      // The format of src/policy/affinity.rs: base64url(payload) "." base64url(HMAC-SHA256(key, "host|payload")).
      const [payloadB64, sig] = cookie.split(".");
      const payload = Buffer.from(payloadB64, "base64url").toString();
      assert.match(payload, /^[^|]+\|\d+$/, `unexpected cookie payload ${payload}`);
      const withAdminSecret = createHmac("sha256", API_SECRET).update(`pin.test|${payload}`).digest("base64url");
      assert.notEqual(sig, withAdminSecret, "the public cookie is signed with API_SECRET");
    } finally {
      await lb.stop();
    }
    lb = await startBalancer(opts);
    try {
      for (let i = 0; i < 6; i++) {
        const res = await lb.fetch("pin.test", `/again${i}`, { headers: { cookie: `lb_session=${cookie}` } });
        assert.equal(res.status, 200);
        assert.equal((await res.json()).backend, pinned, `request ${i} after the restart left the pinned backend`);
        assert.equal(cookieOf(res.headers), undefined, "the pin was not recognised after the restart (a new cookie was set)");
      }
    } finally {
      await lb.stop();
    }
  } finally {
    await stopAll(bs);
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- 4. an unknown hostname leaves no durable state ----

test("unknown hostnames create no Durable Object storage; an API-created service works at once and a deleted one is 421", async () => {
  const dir = tempDir();
  const [k1, f1] = [await startBackend("k1"), await startBackend("f1")];
  const lb = await startBalancer({ defaultBackends: { hostname: "known.test", backends: [k1.url], ...quiet }, persistDir: dir });
  try {
    // Objects that legitimately exist: the known hostname's and the login throttle's.
    assert.equal((await lb.fetch("known.test", "/")).status, 200);
    assert.equal((await admin(lb, "/admin/services")).status, 200);
    const doDir = path.join(dir, "do");
    const before = countFiles(doDir);
    for (let i = 0; i < 200; i++) {
      const host = `r${Math.random().toString(36).slice(2)}-${i}.test`;
      const res = await lb.fetch(host, "/");
      assert.equal(res.status, 421, `${host}: ${res.status}`);
      assert.match((await res.json()).error, new RegExp(host.replace(/\./g, "\\.")));
    }
    assert.equal(countFiles(doDir), before, "requests for unknown hostnames left files in the Durable Object store");

    // Unknown, then created through the API: served at the very next request; deleted: 421 again.
    assert.equal((await lb.fetch("fresh.test", "/")).status, 421);
    let res = await admin(lb, "/admin/services/fresh.test/config", { method: "PUT", body: { backends: [f1.url] } });
    assert.equal(res.status, 201, res.text);
    res = await lb.fetch("fresh.test", "/x");
    assert.equal(res.status, 200);
    assert.equal((await res.json()).backend, "f1");
    res = await admin(lb, "/admin/services/fresh.test/config", { method: "DELETE" });
    assert.equal(res.status, 200, res.text);
    res = await lb.fetch("fresh.test", "/y");
    assert.equal(res.status, 421);
    await res.arrayBuffer();
    assert.equal(f1.requests().length, 1, "a deleted service's backend got traffic");
    // A DEFAULT_BACKENDS service keeps working.
    assert.equal((await lb.fetch("known.test", "/")).status, 200);
  } finally {
    await lb.stop();
    await stopAll([k1, f1]);
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- 5. admin body size limit ----

/** POSTs `chunks` with Transfer-Encoding: chunked (no Content-Length) over real HTTP. */
function chunkedPost(lb, pathname, chunks) {
  const u = new URL(lb.url);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path: pathname,
        method: "POST",
        headers: { host: "localhost", authorization: `Bearer ${API_SECRET}`, "content-type": "application/json", "transfer-encoding": "chunked" },
      },
      (res) => {
        answered = true;
        const got = [];
        res.on("data", (c) => got.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(got).toString() }));
      },
    );
    // The server may answer and close before the whole body is sent: that is the point.
    req.on("error", (e) => (answered ? undefined : reject(e)));
    (async () => {
      for (const c of chunks) {
        if (answered || req.destroyed) break;
        if (!req.write(c)) await new Promise((r) => req.once("drain", r));
      }
      req.end();
    })();
  });
}

test("admin bodies over 1 MiB get 413 whether declared or chunked, and nothing is stored; a body just under is accepted", async () => {
  const b = await startBackend("big1");
  const lb = await startBalancer({ defaultBackends: { hostname: "big.test", backends: ["http://127.0.0.1:9"], ...quiet } });
  const cfgPath = "/admin/services/big.test/config";
  const MiB = 1024 * 1024;
  // A valid config padded with whitespace: without a limit it would be stored.
  const padded = (size) => {
    const json = JSON.stringify({ backends: [b.url] });
    return json + " ".repeat(size - json.length);
  };
  const version = async () => (await admin(lb, cfgPath)).body?.version;
  try {
    let res = await lb.raw("localhost", cfgPath, {
      method: "POST",
      headers: { authorization: `Bearer ${API_SECRET}`, "content-type": "application/json" },
      body: padded(MiB + 1),
    });
    assert.equal(res.status, 413, `declared length over 1 MiB: ${res.status} ${res.body.slice(0, 200)}`);
    assert.match(JSON.parse(res.body).error, /1 MiB/);
    assert.equal(await version(), 0);

    const chunk = " ".repeat(64 * 1024);
    res = await chunkedPost(lb, cfgPath, [JSON.stringify({ backends: [b.url] }), ...Array(24).fill(chunk)]);
    assert.equal(res.status, 413, `chunked body over 1 MiB: ${res.status} ${res.body.slice(0, 200)}`);
    assert.match(JSON.parse(res.body).error, /1 MiB/);
    assert.equal(await version(), 0);
    assert.equal((await lb.fetch("big.test", "/")).status >= 500, true, "the refused config reached traffic");

    // Exactly at the limit is fine, declared or chunked.
    res = await lb.raw("localhost", cfgPath, {
      method: "POST",
      headers: { authorization: `Bearer ${API_SECRET}`, "content-type": "application/json" },
      body: padded(MiB),
    });
    assert.equal(res.status, 200, res.body.slice(0, 300));
    res = await chunkedPost(lb, cfgPath, [JSON.stringify({ backends: [b.url] }), ...Array(15).fill(chunk)]);
    assert.equal(res.status, 200, res.body.slice(0, 300));
    assert.equal(await version(), 2);
    assert.equal((await (await lb.fetch("big.test", "/")).json()).backend, "big1");
  } finally {
    await lb.stop();
    await stopAll([b]);
  }
});
