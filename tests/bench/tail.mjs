// `node tests/bench/tail.mjs`: where FlowBalance's tail latency comes from. Closed-loop load at 16 connections
// saturates workerd, so its p99 mixes queueing with stalls. Here the load is open-loop at a fixed rate every
// subject sustains (TAIL_RATE, default 600 req/s, latency counted from each request's due time): p50, p99 and max
// for the pass-through, the bare JS Worker -> Durable Object -> backend hop, and FlowBalance in both modes, in
// alternating rounds of one run. Then V8's sampling heap profiler gives the JS heap bytes per request that
// reach the old generation, whose growth sets how often a major GC pauses the isolate, by allocation site.
import http from "node:http";
import { inspector } from "./inspector.mjs";
import { startBackendProcess } from "./bench.mjs";
import { startBalancer } from "../support/runtime.mjs";
import { startBareHop, startPassThrough } from "./subjects.mjs";

const RATE = Number(process.env.TAIL_RATE ?? 600);
const SECONDS = Number(process.env.TAIL_SECONDS ?? 4);
const ROUNDS = 3;

/** Open-loop load: RATE requests a second for `secs`; latency of each from its due time (no coordinated omission). */
async function openLoop(url, host, secs) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const u = new URL(url);
  const lat = [];
  let errors = 0;
  const pending = [];
  const t0 = performance.now();
  for (let i = 0; i < RATE * secs; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(
      new Promise((done) => {
        const req = http.request({ host: u.hostname, port: u.port, path: "/tail", agent, headers: { host } }, (res) => {
          res.resume();
          res.on("end", () => {
            if (res.statusCode !== 200) errors++;
            lat.push(performance.now() - due);
            done();
          });
        });
        req.on("error", () => {
          errors++;
          done();
        });
        req.end();
      }),
    );
  }
  await Promise.all(pending);
  agent.destroy();
  return { lat, errors };
}

/** Old-generation JS heap bytes per request under the same open-loop load, total and by allocation site. */
async function oldGeneration(port, url, host) {
  const insp = await inspector(port);
  await insp.send("HeapProfiler.enable");
  // Objects a minor GC collects are left out: what remains reached the old generation (or is still live).
  await insp.send("HeapProfiler.startSampling", { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: false });
  const { lat } = await openLoop(url, host, SECONDS);
  const { result } = await insp.send("HeapProfiler.stopSampling");
  insp.close();
  const bySite = new Map();
  const walk = (node) => {
    const f = node.callFrame;
    const site = f.functionName || (f.url ? "(anonymous)" : "(runtime)");
    if (node.selfSize) bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    for (const c of node.children) walk(c);
  };
  walk(result.profile.head);
  const n = lat.length;
  const total = [...bySite.values()].reduce((a, b) => a + b, 0) / n;
  const top = [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([s, b]) => `${s.slice(0, 40)} ${(b / n).toFixed(0)}`);
  return { total, top };
}

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];

async function main() {
  const { child, urls } = await startBackendProcess(3);
  const pt = await startPassThrough(urls[0]);
  const hop = await startBareHop(urls, 0, { inspectorPort: 9311 });
  const lb = await startBalancer({
    defaultBackends: {
      activeHealthChecks: { interval: 60 },
      services: [
        { hostname: "per.test", backends: urls, decisions: { mode: "per_request" } },
        { hostname: "lease.test", backends: urls, decisions: { mode: "lease" } },
      ],
    },
    miniflare: { inspectorPort: 9312 },
  });
  const fb = `http://${new URL(lb.url).host}`;
  const subjects = [
    { name: "pass-through", url: pt.url, host: "pt.test" },
    { name: "bare hop", url: hop.url, host: "hop.test", port: 9311 },
    { name: "FlowBalance per-request", url: fb, host: "per.test", port: 9312 },
    { name: "FlowBalance lease", url: fb, host: "lease.test", port: 9312 },
  ];
  const rows = subjects.map(() => ({ lat: [], errors: 0 }));
  try {
    for (const s of subjects) await openLoop(s.url, s.host, 1); // warm up
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, s] of subjects.entries()) {
        const { lat, errors } = await openLoop(s.url, s.host, SECONDS);
        rows[i].lat.push(...lat);
        rows[i].errors += errors;
      }
    }
    const heap = [];
    for (const s of subjects) heap.push(s.port ? await oldGeneration(s.port, s.url, s.host) : null);
    console.log(`\ntail latency: open loop at ${RATE} req/s, ${ROUNDS} alternating rounds of ${SECONDS} s, one run\n`);
    console.log("| subject | p50 ms | p99 ms | max ms | errors | old-generation bytes/request | largest old-generation sites (bytes/request) |");
    console.log("|---|---:|---:|---:|---:|---:|---|");
    for (const [i, s] of subjects.entries()) {
      const lat = rows[i].lat.sort((a, b) => a - b);
      const h = heap[i];
      console.log(`| ${s.name} | ${pct(lat, 0.5).toFixed(1)} | ${pct(lat, 0.99).toFixed(1)} | ${lat[lat.length - 1].toFixed(0)} | ${rows[i].errors} | ${h ? h.total.toFixed(0) : "–"} | ${h ? h.top.join(", ") : "–"} |`);
    }
    const p99 = (i) => pct(rows[i].lat, 0.99);
    console.log(`\nFlowBalance p99 / pass-through p99: per-request ${(p99(2) / p99(0)).toFixed(2)}x, lease ${(p99(3) / p99(0)).toFixed(2)}x (goal <= 1.5x)`);
    console.log(`FlowBalance p99 / bare hop p99:     per-request ${(p99(2) / p99(1)).toFixed(2)}x, lease ${(p99(3) / p99(1)).toFixed(2)}x`);
  } finally {
    await lb.stop();
    await hop.mf.dispose();
    await pt.mf.dispose();
    child.kill();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
