// `npm run bench`, decision modes: per-request and lease mode against the bare Durable Object hop and a JS pass-through in one run, object calls per 1,000 requests, admin write latency per mode, and a distant object.
import autocannon from "autocannon";
import http from "node:http";
import { compare, startBackendProcess } from "./bench.mjs";
import { startBalancer } from "../support/runtime.mjs";
import { startBareHop, startPassThrough } from "./subjects.mjs";
import { steadyPhase } from "./bill.mjs";
import { dollarsPerMillion, formatPerDay, freePlanPerDay, goals, perMillion } from "./cost.mjs";
import { D1, DURABLE_OBJECTS, READ_ON, WORKERS } from "./prices.mjs";

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const LEASE_MS = 1000;
const DISTANT_MS = 50;
// The bill's steady phase: the D1 goal is stated at >= 100 req/s on one hostname with 3 backends.
const STEADY_RPS = Number(process.env.BENCH_STEADY_RPS ?? 100);
const STEADY_SECONDS = Number(process.env.BENCH_STEADY_SECONDS ?? 60);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const services = (urls) => ({
  activeHealthChecks: { interval: 60 },
  services: [
    { hostname: "per.test", backends: urls, decisions: { mode: "per_request" } },
    { hostname: "lease.test", backends: urls, decisions: { mode: "lease", lease_ms: LEASE_MS } },
  ],
});

async function decisions(lb, host) {
  return (await (await lb.admin(`/admin/services/${host}`)).json()).decisions;
}

/** Median latency of config writes to `host` (each a real change: weights alternate), while `connections` clients load it. */
async function writeLatency(lb, host, urls, connections) {
  const mode = host === "lease.test" ? { decisions: { mode: "lease", lease_ms: LEASE_MS } } : { decisions: { mode: "per_request" } };
  const load = connections
    ? autocannon({ url: `http://${new URL(lb.url).host}/`, connections, duration: 6, headers: { host } })
    : null;
  await sleep(connections ? 1000 : LEASE_MS + 200);
  const times = [];
  for (let i = 0; i < 5; i++) {
    const body = { ...mode, backends: urls.map((url, j) => ({ url, weight: 1 + ((i + j) % 2) })) };
    const t0 = performance.now();
    const res = await lb.admin(`/admin/services/${host}/config`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`config write for ${host}: ${res.status} ${text}`);
    times.push(performance.now() - t0);
    // Idle: let the Worker's lease run on undisturbed, as an idle isolate's would.
    await sleep(connections ? 300 : 200);
  }
  if (load) await load;
  return median(times);
}

/** `n` requests one after another on one kept-alive connection; each one's latency in ms (sub-ms precision). */
async function sequential(url, host, n) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const u = new URL(url);
  const out = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const status = await new Promise((resolve, reject) => {
        const req = http.get({ host: u.hostname, port: u.port, path: `/s${i}`, agent, headers: host ? { host } : {} }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode));
        });
        req.on("error", reject);
      });
      if (status !== 200) throw new Error(`${host ?? url}: status ${status}`);
      out.push(performance.now() - t0);
    }
  } finally {
    agent.destroy();
  }
  return out;
}

/** Unloaded latency of each subject, in alternating rounds: p50 and mean over all samples. */
async function latencies(subjects, rounds = 3) {
  const samples = subjects.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, s] of subjects.entries()) samples[i].push(...(await sequential(s.url, s.host, s.n)));
  }
  return subjects.map((s, i) => {
    const xs = samples[i];
    return { name: s.name, n: xs.length, p50: median(xs), mean: xs.reduce((a, b) => a + b, 0) / xs.length, p99: [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)] };
  });
}

async function main() {
  const { child, urls } = await startBackendProcess(3);
  const pt = await startPassThrough(urls[0]);
  const hop = await startBareHop(urls);
  const lb = await startBalancer({ defaultBackends: services(urls) });
  const base = `http://${new URL(lb.url).host}/`;
  let rows;
  let calls;
  let writes;
  let distant;
  try {
    const before = await decisions(lb, "lease.test");
    rows = await compare([
      { name: "JS pass-through Worker", url: `${pt.url}/` },
      { name: "JS Worker + Durable Object hop, no policy (architecture floor)", url: `${hop.url}/` },
      { name: "FlowBalance per-request mode (round robin)", url: base, headers: { host: "per.test" } },
      { name: "FlowBalance lease mode (round robin, lease_ms 1000)", url: base, headers: { host: "lease.test" } },
    ]);
    const after = await decisions(lb, "lease.test");
    const leaseRow = rows[3];
    // Every call from the Worker to the object in lease mode asks for a lease (first grant or
    // refresh); outcomes ride on those calls. The warm-up request count is not in the total, so
    // this slightly overstates calls per request.
    const n = after.lease_grants + after.lease_refreshes - (before.lease_grants + before.lease_refreshes);
    calls = { n, per1000: (n * 1000) / leaseRow.total, grants: after.lease_grants - before.lease_grants, returns: after.lease_early_returns - before.lease_early_returns };
    writes = {
      perIdle: await writeLatency(lb, "per.test", urls, 0),
      perLoad: await writeLatency(lb, "per.test", urls, 4),
      leaseIdle: await writeLatency(lb, "lease.test", urls, 0),
      leaseLoad: await writeLatency(lb, "lease.test", urls, 4),
    };
  } finally {
    await lb.stop();
  }
  // A distant object: every Worker -> object call waits 50 ms inside the object (test-only variable).
  const far = await startBalancer({ defaultBackends: services(urls), bindings: { FB_TEST_OBJECT_DELAY_MS: String(DISTANT_MS) } });
  const farBase = `http://${new URL(far.url).host}/`;
  try {
    // Warm: the lease-mode isolate holds a lease before measuring (its first request waits once).
    await sequential(farBase, "lease.test", 5);
    distant = await latencies([
      { name: "JS pass-through", url: pt.url, n: 500 },
      { name: `FlowBalance per-request, object ${DISTANT_MS} ms away`, url: farBase, host: "per.test", n: 40 },
      { name: `FlowBalance lease mode, object ${DISTANT_MS} ms away`, url: farBase, host: "lease.test", n: 500 },
    ]);
  } finally {
    await far.stop();
    await pt.mf.dispose();
    await hop.mf.dispose();
  }
  // The bill: each mode alone on a fresh runtime's hostname, at a steady rate, one after the other.
  const bill = {};
  const steady = await startBalancer({
    defaultBackends: {
      activeHealthChecks: { interval: 60 },
      services: [
        { hostname: "steady-per.test", backends: urls, decisions: { mode: "per_request" } },
        { hostname: "steady-lease.test", backends: urls, decisions: { mode: "lease", lease_ms: LEASE_MS } },
      ],
    },
  });
  try {
    for (const [mode, host] of [["perRequest", "steady-per.test"], ["lease", "steady-lease.test"]]) {
      await steady.fetch(host, "/warm").then((r) => r.arrayBuffer());
      bill[mode] = await steadyPhase(steady, host, { rps: STEADY_RPS, seconds: STEADY_SECONDS });
    }
  } finally {
    await steady.stop();
    child.kill();
  }

  console.log(`\nDecision modes: ${CONNECTIONS} connections, alternating rounds, loopback, one run\n`);
  console.log("| subject | req/s | p50 ms | p99 ms | errors | workerd CPU µs/req |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const r of rows) console.log(`| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.cpuUsPerReq.toFixed(0)} |`);
  const [p, h, per, lease] = rows;
  const x = (a, b) => (a / b).toFixed(2);
  console.log(`\nper-request / pass-through throughput: ${x(per.rps, p.rps)}x (goal >= 0.65x); per-request / bare hop: ${x(per.rps, h.rps)}x (goal >= 0.92x)`);
  console.log(`per-request CPU / bare hop CPU: ${x(per.cpuUsPerReq, h.cpuUsPerReq)}x (goal <= 1.15x)`);
  console.log(`lease / pass-through throughput: ${x(lease.rps, p.rps)}x (goal >= 0.85x); lease CPU / pass-through CPU: ${x(lease.cpuUsPerReq, p.cpuUsPerReq)}x (goal <= 1.2x)`);
  console.log(`lease mode object calls: ${calls.n} for ${lease.total} requests = ${calls.per1000.toFixed(2)} per 1,000 (goal <= 5); first grants ${calls.grants}, leases handed back early ${calls.returns}`);
  console.log(`admin config write latency (median of 5), per-request mode: idle ${writes.perIdle.toFixed(1)} ms, under load ${writes.perLoad.toFixed(1)} ms`);
  console.log(`admin config write latency (median of 5), lease mode (lease_ms ${LEASE_MS}): idle ${writes.leaseIdle.toFixed(1)} ms, under load ${writes.leaseLoad.toFixed(1)} ms`);
  console.log(`\nDistant object (${DISTANT_MS} ms added inside the object per call), one request at a time, 3 alternating rounds:\n`);
  console.log("| subject | requests | p50 ms | mean ms | p99 ms |");
  console.log("|---|---:|---:|---:|---:|");
  for (const r of distant) console.log(`| ${r.name} | ${r.n} | ${r.p50.toFixed(2)} | ${r.mean.toFixed(2)} | ${r.p99.toFixed(2)} |`);
  const [dp, dper, dlease] = distant;
  printBill(bill, { passThrough: p, perRequest: per, lease });
  console.log(`\nadded latency vs pass-through, p50: per-request ${(dper.p50 - dp.p50).toFixed(2)} ms, lease ${(dlease.p50 - dp.p50).toFixed(2)} ms (goal < 1 ms); mean: per-request ${(dper.mean - dp.mean).toFixed(2)} ms, lease ${(dlease.mean - dp.mean).toFixed(2)} ms`);
}

/** The cost table per million balanced requests, the free plan's requests a day, and the goals with measured values. */
function printBill(bill, throughput) {
  const modes = [["per-request", bill.perRequest], ["lease", bill.lease]];
  console.log(`\nThe bill: ${STEADY_RPS} req/s for ${STEADY_SECONDS} s per mode (open loop, one hostname, 3 backends), each mode alone on a fresh runtime\n`);
  for (const [name, b] of modes) {
    const l = b.load;
    console.log(`${name}: sent ${l.sent} (${(l.sent / l.seconds).toFixed(1)} req/s), ${l.ok} ok, ${l.failed} failed, ${l.skipped} skipped (over 64 in flight); D1 rows by table: ${JSON.stringify(b.d1ByTable)}; D1 method: ${b.d1Method}`);
  }
  const rows = modes.map(([name, b]) => {
    const u = perMillion(b.measured);
    return { name, u, usd: dollarsPerMillion(u, STEADY_RPS), free: freePlanPerDay(u) };
  });
  console.log(`\nPer million balanced requests (list prices read ${READ_ON}: ${WORKERS.source}, ${DURABLE_OBJECTS.source}, ${D1.source}; paid plan beyond its included amounts; Durable Object duration at ${STEADY_RPS} req/s, 128 MB)\n`);
  console.log("| mode | Worker requests | workerd CPU ms | object requests | D1 rows written | $ Workers | $ CPU | $ DO requests | $ DO duration | $ D1 | $ total | free plan requests/day (first limit) |");
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
  for (const { name, u, usd, free } of rows) {
    const $ = (x) => x.toFixed(3);
    console.log(
      `| ${name} | ${u.workerRequests.toFixed(0)} | ${u.workerCpuMs.toFixed(0)} | ${u.objectRequests.toFixed(0)} | ${u.d1RowsWritten.toFixed(0)} | ${$(usd.workerRequests)} | ${$(usd.workerCpu)} | ${$(usd.objectRequests)} | ${$(usd.objectDuration)} | ${$(usd.d1)} | ${$(usd.total)} | ${formatPerDay(free.perDay)} (${free.limit}) |`,
    );
  }
  console.log("workerd CPU is the whole runtime process (Worker, object, sockets): an upper bound on the Worker CPU Cloudflare bills.");
  const per1000 = (b) => (b.measured.d1RowsWritten * 1000) / Math.max(1, b.load.ok);
  console.log(`\nGoals (issue 19), measured in this run:\n`);
  console.log("| goal | measured | result |");
  console.log("|---|---:|---|");
  for (const g of goals(throughput, { perRequest: per1000(bill.perRequest), lease: per1000(bill.lease) })) {
    console.log(`| ${g.goal} | ${g.shown} | ${g.pass ? "pass" : "FAIL"} |`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
