// End to end: defects of the balanced request path — odd backend statuses, clients that hang up mid-upload, backends that break responses off, and request loops.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startBalancer } from "../support/runtime.mjs";
import { startBackend, startBackends, stopAll, waitFor } from "../support/backends.mjs";
import { serviceStatus } from "../support/admin.mjs";

const running = [];
after(async () => {
  for (const r of running) await r.stop().catch(() => {});
});

const quiet = {
  activeHealthChecks: { enabled: false },
  passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 60000 } },
  retries: 1,
};

const tolerant = { passiveHealthChecks: { circuit_breaker: { failure_threshold: 1000, min_requests: 1000 } } };
// Per request: round robin keeps sending requests to the failing backend (a lease ejects it
// locally after its first failure), so each test sees the failure as often as it counts.
const perRequest = { decisions: { mode: "per_request" } };

async function start(services) {
  const lb = await startBalancer({ defaultBackends: { services } });
  running.push(lb);
  return lb;
}

async function backendsOf(lb, host) {
  return (await serviceStatus(lb, host)).backends;
}

/** Raw HTTP/1.1 to the runtime's socket; resolves with status, headers and body. */
function rawRequest(lb, host, path, { method = "GET", headers = {}, body } = {}) {
  const u = new URL(lb.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, method, headers: { host, ...headers } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

test("no backend status can crash the Worker: requests in flight survive, odd statuses fail over or give 502", async () => {
  const slow = await startBackend("slow");
  let release;
  const gate = new Promise((r) => (release = r));
  slow.handler = async (req, res) => {
    await gate;
    res.writeHead(200, { "content-type": "text/plain" }).end("slow done");
  };
  const [bad, good] = await startBackends(2);
  const lonely = await startBackend("lonely");
  const lb = await start([
    { hostname: "slow.test", backends: [slow.url], ...quiet, connection_error_handling: { connection_timeout_ms: 20000 } },
    // A high threshold keeps the odd backends in rotation, so every status reaches the Worker.
    { hostname: "odd.test", backends: [bad.url, good.url], ...quiet, ...tolerant, ...perRequest },
    { hostname: "only-odd.test", backends: [lonely.url], ...quiet, ...tolerant, ...perRequest },
  ]);
  try {
    // Requests held in flight on the same instance while the odd statuses arrive.
    const inFlight = Array.from({ length: 6 }, (_, i) => lb.fetch("slow.test", `/held${i}`));
    await waitFor(() => slow.requests().length === 6, { what: "the held requests to reach their backend" });
    for (const status of [100, 101, 103, 199, 600]) {
      bad.mode = `status:${status}`;
      for (let i = 0; i < 2; i++) {
        const res = await lb.fetch("odd.test", `/odd${status}-${i}`);
        const text = await res.text();
        assert.equal(res.status, 200, `status ${status}: ${text}`);
        assert.equal(JSON.parse(text).backend, good.name);
      }
      lonely.mode = `status:${status}`;
      const res = await lb.fetch("only-odd.test", `/alone${status}`);
      const body = await res.json();
      assert.equal(res.status, 502, `status ${status} alone: ${JSON.stringify(body)}`);
      assert.match(body.error, new RegExp(`invalid status ${status} \\(not a final HTTP status\\)`));
    }
    assert.ok(bad.requests().length >= 5, "the odd backend was never asked");
    release();
    const held = await Promise.all(inFlight.map(async (p) => {
      const r = await p;
      return `${r.status} ${await r.text()}`;
    }));
    assert.deepEqual(held, Array(6).fill("200 slow done"), "requests in flight failed with the odd statuses");
    // `Expect: 100-continue` (curl sends it with uploads over 1 MiB) is not forwarded, so the
    // backend has no reason to answer 100; GETs carry it too sometimes.
    lonely.mode = "ok";
    const get = await lb.fetch("only-odd.test", "/expect", { headers: { expect: "100-continue" } });
    assert.equal(get.status, 200, await get.clone().text());
    assert.equal((await get.json()).headers.expect, undefined);
    for (const size of [1000, 3 * 1024 * 1024]) {
      const res = await rawRequest(lb, "only-odd.test", "/upload", {
        method: "PUT",
        headers: { expect: "100-continue", "content-length": String(size) },
        body: Buffer.alloc(size, 7),
      });
      assert.equal(res.status, 200, `${size}: ${res.body}`);
      const echo = JSON.parse(res.body);
      assert.equal(echo.bodyLength, size);
      assert.equal(echo.headers["content-length"], String(size), "the upload lost its length");
    }
  } finally {
    release();
    await stopAll([slow, bad, good, lonely]);
  }
});

/** Starts an upload, waits until the backend sees it begin, then destroys the client socket. */
async function abortedUpload(lb, host, path, method, started, chunked) {
  const u = new URL(lb.url);
  const before = started();
  const headers = { host, ...(chunked ? {} : { "content-length": String(4 * 1024 * 1024) }) };
  const req = http.request({ host: u.hostname, port: u.port, path, method, headers });
  req.on("error", () => {});
  req.write(Buffer.alloc(64 * 1024, 1));
  await waitFor(() => started() > before, { what: "the upload to reach a backend" });
  req.destroy();
}

test("clients that hang up mid-upload open no breaker, and traffic still spreads", async () => {
  const bs = await startBackends(3);
  let starts = 0;
  for (const b of bs) b.server.on("request", () => starts++);
  const lb = await start([{ hostname: "up.test", backends: bs.map((b) => b.url), ...quiet }]);
  try {
    for (let i = 0; i < 18; i++) {
      await abortedUpload(lb, "up.test", `/upload${i}`, i % 2 ? "POST" : "PUT", () => starts, i % 3 === 0);
    }
    // Ordinary traffic afterwards: every backend serves, and their reports arrive.
    const served = {};
    for (let i = 0; i < 30; i++) {
      const res = await lb.fetch("up.test", `/after${i}`);
      assert.equal(res.status, 200, await res.clone().text());
      const who = (await res.json()).backend;
      served[who] = (served[who] ?? 0) + 1;
    }
    assert.deepEqual(Object.keys(served).sort(), ["b1", "b2", "b3"], JSON.stringify(served));
    const st = await waitFor(async () => {
      // Successes ride on a later decision once their batch is due (32 or 250 ms): keep deciding.
      await (await lb.fetch("up.test", "/nudge")).arrayBuffer();
      const list = await backendsOf(lb, "up.test");
      return list.every((b) => b.latency_ms !== null) ? list : null;
    }, { what: "reports for every backend" });
    for (const b of st) {
      assert.equal(b.breaker, "closed", `${b.url}: ${JSON.stringify(b)}`);
      assert.equal(b.last_error, null, `${b.url} was blamed: ${b.last_error}`);
    }
  } finally {
    await stopAll(bs);
  }
});

test("a backend that breaks every large response off mid-body has its breaker opened", async () => {
  const [cut, fine] = await startBackends(2);
  cut.mode = "truncate";
  const lb = await start([{ hostname: "cut.test", backends: [cut.url, fine.url], ...quiet, ...perRequest }]);
  try {
    let broken = 0;
    for (let i = 0; i < 12; i++) {
      const res = await rawRequest(lb, "cut.test", `/dl${i}`).catch(() => null);
      if (res === null || res.body.length < Number(res.headers["content-length"] ?? 0)) broken++;
    }
    assert.ok(broken >= 3, `only ${broken} truncated responses reached the client`);
    const st = await waitFor(async () => {
      const b = (await backendsOf(lb, "cut.test")).find((x) => x.url === cut.url);
      return b.breaker === "open" ? b : null;
    }, { what: "the truncating backend's breaker to open" });
    assert.match(st.last_error, /broken off/);
    const ok = (await backendsOf(lb, "cut.test")).find((x) => x.url === fine.url);
    assert.equal(ok.breaker, "closed");
    assert.equal(ok.last_error, null);
  } finally {
    await stopAll([cut, fine]);
  }
});

test("a small response body broken off is a 502 naming it, and a failure of its backend", async () => {
  const [cut, fine] = await startBackends(2);
  // Small and of known length, so a watched answer is read in whole before answering: the first
  // answer of each backend is watched, and every one after a body broke off.
  cut.handler = (req, res) => {
    res.writeHead(200, { "content-type": "text/plain", "content-length": "2000" });
    res.write("x".repeat(500), () => req.socket.destroy());
  };
  const lb = await start([{ hostname: "cutsmall.test", backends: [cut.url, fine.url], ...quiet, ...perRequest }]);
  try {
    let named = 0;
    for (let i = 0; i < 12; i++) {
      const res = await rawRequest(lb, "cutsmall.test", `/s${i}`);
      if (res.status === 502) {
        assert.match(JSON.parse(res.body).error, /broke its response body off/);
        named++;
      } else {
        assert.equal(res.status, 200, res.body);
      }
    }
    assert.ok(named >= 3, `only ${named} broken bodies were answered 502`);
    const st = await waitFor(async () => {
      const b = (await backendsOf(lb, "cutsmall.test")).find((x) => x.url === cut.url);
      return b.breaker === "open" ? b : null;
    }, { what: "the breaking backend's breaker to open" });
    assert.match(st.last_error, /broken off/);
    const ok = (await backendsOf(lb, "cutsmall.test")).find((x) => x.url === fine.url);
    assert.equal(ok.breaker, "closed");
    assert.equal(ok.last_error, null);
  } finally {
    await stopAll([cut, fine]);
  }
});

test("successful answers are watched one in eight per backend: a backend that starts breaking bodies is caught at its next sample, then watched on every answer until its breaker opens", async () => {
  const flaky = await startBackend("flaky");
  let served = 0;
  const GOOD = 10;
  flaky.handler = (req, res) => {
    served++;
    res.writeHead(200, { "content-type": "text/plain", "content-length": "2000" });
    if (served <= GOOD) res.end("x".repeat(2000));
    else res.write("x".repeat(500), () => req.socket.destroy());
  };
  const lb = await start([{ hostname: "flaky.test", backends: [flaky.url], ...quiet, ...perRequest }]);
  try {
    const seen = [];
    for (let i = 0; i < 40 && (!seen.includes(502) || seen.length - seen.indexOf(502) < 6); i++) {
      const res = await rawRequest(lb, "flaky.test", `/f${i}`).catch(() => null);
      if (res === null || (res.status === 200 && res.body.length < 2000)) seen.push("cut");
      else seen.push(res.status);
    }
    const first502 = seen.indexOf(502);
    assert.deepEqual(seen.slice(0, GOOD), Array(GOOD).fill(200), seen.join(" "));
    // Answers 1, 9, 17, ... are sampled: 11 to 16 pass straight through, cut short at the client.
    const cut = seen.slice(GOOD, first502);
    assert.ok(cut.length >= 1 && cut.length < 8 && cut.every((x) => x === "cut"), `unwatched answers before the first sample: ${seen.join(" ")}`);
    // From the first broken sample on, every answer is watched: a 502 naming the break (or a
    // 503 once the breaker, threshold 3, has opened), never a body cut short.
    assert.ok(first502 > GOOD, seen.join(" "));
    assert.ok(seen.slice(first502).every((x) => x === 502 || x === 503), seen.join(" "));
    const st = await waitFor(async () => {
      const b = (await backendsOf(lb, "flaky.test"))[0];
      return b.breaker === "open" ? b : null;
    }, { what: "the flaky backend's breaker to open" });
    assert.match(st.last_error, /broken off/);
  } finally {
    await stopAll([flaky]);
  }
});

test("connection_timeout_ms bounds the wait for response headers only: a body that takes longer still arrives whole", async () => {
  const [stream, late] = await startBackends(2);
  const pace = (res, parts, ms) => {
    let i = 0;
    const next = () => (i < parts.length ? res.write(parts[i++], () => setTimeout(next, ms)) : res.end());
    next();
  };
  // Headers at once, then the body over ~1.5 s against a 400 ms timeout: unsized (streamed
  // through) and sized and small (read whole before answering).
  stream.handler = (req, res) => {
    const parts = Array.from({ length: 6 }, (_, i) => `part${i};`);
    if (req.url.startsWith("/sized")) res.writeHead(200, { "content-type": "text/plain", "content-length": String(parts.join("").length) });
    else res.writeHead(200, { "content-type": "text/plain" });
    pace(res, parts, 250);
  };
  // No headers within the timeout: that is the timeout.
  late.handler = (req, res) => void setTimeout(() => res.writeHead(200).end("late"), 1500);
  const lb = await start([
    { hostname: "slowbody.test", backends: [stream.url], ...quiet, ...perRequest, connection_error_handling: { connection_timeout_ms: 400 } },
    { hostname: "slowbody-lease.test", backends: [stream.url], ...quiet, decisions: { mode: "lease" }, connection_error_handling: { connection_timeout_ms: 400 } },
    { hostname: "lateheaders.test", backends: [late.url], ...quiet, ...perRequest, connection_error_handling: { connection_timeout_ms: 400 } },
  ]);
  try {
    const whole = "part0;part1;part2;part3;part4;part5;";
    for (const host of ["slowbody.test", "slowbody-lease.test"]) {
      for (const path of ["/streamed", "/sized"]) {
        const started = Date.now();
        const res = await rawRequest(lb, host, path);
        assert.equal(res.status, 200, `${host}${path}: ${res.body}`);
        assert.equal(res.body, whole, `${host}${path}`);
        assert.ok(Date.now() - started >= 1000, `${host}${path} took the body's whole time`);
      }
    }
    const st = (await backendsOf(lb, "slowbody.test")).find((b) => b.url === stream.url);
    assert.equal(st.last_error, null, "a slow body is not a failure");
    const res = await rawRequest(lb, "lateheaders.test", "/late");
    assert.ok(res.status >= 500, `headers after the timeout: ${res.status}`);
    assert.match(JSON.parse(res.body).error, /timed out|no answer|timeout/i);
  } finally {
    await stopAll([stream, late]);
  }
});

test("a streamed upload that keeps moving may outlast connection_timeout_ms; the wait for headers counts from its end", async () => {
  const [sink, slowAnswer] = await startBackends(2);
  sink.handler = (req, res, body) => res.writeHead(200, { "content-type": "text/plain" }).end(`got ${body.length}`);
  // Takes the whole upload, then keeps the headers back past the timeout.
  slowAnswer.handler = (req, res, body) => void setTimeout(() => res.writeHead(200).end(`late ${body.length}`), 1200);
  const lb = await start([
    { hostname: "upload.test", backends: [sink.url], ...quiet, ...perRequest, connection_error_handling: { connection_timeout_ms: 400 } },
    { hostname: "upload-late.test", backends: [slowAnswer.url], ...quiet, ...perRequest, connection_error_handling: { connection_timeout_ms: 400 } },
  ]);
  /** POSTs 6 chunks of 1 KiB, 250 ms apart, with no Content-Length (so the Worker streams it). */
  const trickle = (host) =>
    new Promise((resolve, reject) => {
      const u = new URL(lb.url);
      const req = http.request({ host: u.hostname, port: u.port, path: "/up", method: "POST", headers: { host, "content-type": "application/octet-stream" } }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      });
      req.on("error", reject);
      let i = 0;
      const next = () => (i++ < 6 ? req.write(Buffer.alloc(1024, 97), () => setTimeout(next, 250)) : req.end());
      next();
    });
  try {
    const started = Date.now();
    const ok = await trickle("upload.test");
    assert.equal(ok.status, 200, ok.body);
    assert.equal(ok.body, "got 6144");
    assert.ok(Date.now() - started >= 1200, "the upload took longer than the timeout");
    const late = await trickle("upload-late.test");
    assert.ok(late.status >= 500, `no headers within the timeout of the upload's end: ${late.status} ${late.body}`);
    assert.match(JSON.parse(late.body).error, /timed out|no answer|timeout/i);
  } finally {
    await stopAll([sink, slowAnswer]);
  }
});

test("a client that hangs up mid-download is not blamed on the backend", async () => {
  const big = await startBackend("big");
  big.handler = (req, res) => {
    if (req.url === "/small") return res.writeHead(200).end("small");
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(8 * 1024 * 1024) });
    const chunk = Buffer.alloc(64 * 1024, 2);
    let sent = 0;
    const pump = () => {
      while (sent < 128) {
        sent++;
        if (!res.write(chunk)) return res.once("drain", pump);
      }
      res.end();
    };
    res.on("close", () => (sent = 128));
    pump();
  };
  const lb = await start([{ hostname: "dl.test", backends: [big.url], ...quiet }]);
  const u = new URL(lb.url);
  try {
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => {
        const req = http.get({ host: u.hostname, port: u.port, path: `/big${i}`, headers: { host: "dl.test" } }, (res) => {
          res.once("data", () => {
            req.destroy();
            resolve();
          });
        });
        req.on("error", resolve);
      });
    }
    const full = await lb.fetch("dl.test", "/full");
    assert.equal((await full.arrayBuffer()).byteLength, 8 * 1024 * 1024);
    // Successes are batched onto later decisions: small requests until they have arrived.
    const b = await waitFor(async () => {
      await (await lb.fetch("dl.test", "/small")).arrayBuffer();
      const x = (await backendsOf(lb, "dl.test"))[0];
      return x.latency_ms !== null ? x : null;
    }, { what: "the downloads' reports" });
    assert.equal(b.breaker, "closed");
    assert.equal(b.last_error, null, `blamed: ${b.last_error}`);
  } finally {
    await stopAll([big]);
  }
});

test("a backend that points back at the balancer gets 508 Loop Detected, not a request storm", async () => {
  let lbUrl;
  let hops = 0;
  // Stands in for DNS that resolves a backend's name to FlowBalance itself: relays every
  // request back to the runtime with the balanced Host, headers and all (capped, so the old
  // behaviour ends too).
  const relay = await startBackend("relay");
  relay.handler = (req, res, body) => {
    hops++;
    if (hops > 20) return res.writeHead(500).end("relay: too many hops");
    const u = new URL(lbUrl);
    const headers = { ...req.headers, host: "loop.test" };
    delete headers.connection;
    const out = http.request({ host: u.hostname, port: u.port, path: req.url, method: req.method, headers }, (back) => {
      res.writeHead(back.statusCode, back.headers);
      back.pipe(res);
    });
    out.on("error", () => res.writeHead(502).end("relay failed"));
    out.end(body);
  };
  const lb = await start([{ hostname: "loop.test", backends: [relay.url], ...quiet }]);
  lbUrl = lb.url;
  try {
    const t0 = Date.now();
    const res = await lb.fetch("loop.test", "/spin");
    const body = await res.json();
    assert.equal(res.status, 508, JSON.stringify(body));
    assert.match(body.error, /loop/i);
    assert.match(body.error, /loop\.test/);
    assert.equal(hops, 1, "the request went round more than once");
    assert.ok(Date.now() - t0 < 5000);
    // A client sending the marker itself is refused the same way, without any backend request.
    const direct = await lb.fetch("loop.test", "/spin", { headers: { "x-flowbalance-hop": "1" } });
    assert.equal(direct.status, 508);
    assert.equal(hops, 1);
  } finally {
    await stopAll([relay]);
  }
});
