// Throughput, p99 and workerd CPU of two builds of FlowBalance side by side (alternating rounds, in two sessions started in opposite orders), per-request and lease mode: `node tests/bench/ab.mjs <build dir A> [<build dir B>]` (B defaults to ./build; AB_WEBHOOK=1 adds B with a webhook configured).
import autocannon from "autocannon";
import { fork } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startBalancer } from "../support/runtime.mjs";
import { workerdCpuSeconds } from "./bench.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const [dirA, dirB = path.join(here, "../../build")] = process.argv.slice(2);
if (!dirA) throw new Error("usage: node tests/bench/ab.mjs <build dir A> [<build dir B>]");

const child = fork(path.join(here, "backend-process.mjs"), ["3"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
const { urls } = await new Promise((r) => child.once("message", r));
const services = [
  // Per request, as the A/B figures have always been (auto would pick lease).
  { hostname: "bench.test", backends: urls, decisions: { mode: "per_request" } },
  { hostname: "lease.test", backends: urls, decisions: { mode: "lease", lease_ms: 1000 } },
  // Webhooks configured (nothing listens; no transition happens, so nothing is sent): the
  // cost of watching for transitions on every batch of outcomes.
  { hostname: "hooked.test", backends: urls, decisions: { mode: "per_request" }, notifications: { webhooks: [{ url: "http://127.0.0.1:9/hook", secret: "0123456789abcdef" }] } },
];
// Two sessions, fresh runtimes each, the second started in the opposite order: on this machine
// a runtime process can run a few percent faster than its twin for its whole life (an A/A run
// showed 1.09x), which alternating rounds alone do not cancel.
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
/** A subject's throughput (req/s) and workerd CPU per request (µs) over all its rounds. */
const rate = (x) => x.total / x.secs;
const cpuOf = (x) => (x.cpu * 1e6) / x.total;

/** One session: both builds running, subjects in alternating rounds. Per subject: totals and per-round req/s. */
async function session(order) {
  const started = {};
  for (const which of order) {
    const dir = which === "A" ? dirA : dirB;
    const list = which === "A" ? services.slice(0, 2) : services;
    started[which] = await startBalancer({ defaultBackends: { activeHealthChecks: { interval: 60 }, services: list }, buildDir: path.resolve(dir) });
  }
  const { A: a, B: b } = started;
  const subjects = [
    { name: `A per-request ${dirA}`, url: `http://${new URL(a.url).host}/`, host: "bench.test" },
    { name: `B per-request ${dirB}`, url: `http://${new URL(b.url).host}/`, host: "bench.test" },
    { name: `A lease`, url: `http://${new URL(a.url).host}/`, host: "lease.test" },
    { name: `B lease`, url: `http://${new URL(b.url).host}/`, host: "lease.test" },
    ...(process.env.AB_WEBHOOK ? [{ name: `B with a webhook configured`, url: `http://${new URL(b.url).host}/`, host: "hooked.test" }] : []),
  ];
  const acc = subjects.map((s) => ({ name: s.name, total: 0, secs: 0, errors: 0, cpu: 0, p50: [], p99: [], rounds: [] }));
  try {
    for (const s of subjects) await autocannon({ url: s.url, connections: CONNECTIONS, duration: 1, headers: { host: s.host } });
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, s] of subjects.entries()) {
        const cpu0 = workerdCpuSeconds();
        const r = await autocannon({ url: s.url, connections: CONNECTIONS, duration: SECONDS, headers: { host: s.host } });
        acc[i].cpu += workerdCpuSeconds() - cpu0;
        acc[i].total += r.requests.total;
        acc[i].secs += r.duration;
        acc[i].errors += r.errors + r.non2xx;
        acc[i].p50.push(r.latency.p50);
        acc[i].p99.push(r.latency.p99);
        acc[i].rounds.push(r.requests.total / r.duration);
      }
    }
  } finally {
    await a.stop();
    await b.stop();
  }
  return acc;
}

const sessions = [];
try {
  for (const order of [["A", "B"], ["B", "A"]]) {
    const acc = await session(order);
    sessions.push(acc);
    console.log(`\nsession ${sessions.length} (started ${order.join(" then ")}): ${CONNECTIONS} connections, ${ROUNDS} alternating rounds of ${SECONDS} s\n`);
    console.log("| subject | req/s | p50 ms (median) | p99 ms (median) | workerd CPU µs/req | errors |\n|---|---:|---:|---:|---:|---:|");
    for (const x of acc) console.log(`| ${x.name} | ${rate(x).toFixed(0)} | ${median(x.p50)} | ${median(x.p99)} | ${cpuOf(x).toFixed(0)} | ${x.errors} |`);
    // Per round, B against the A measured just before it: how far one round strays.
    const spread = (ia, ib) => {
      const r = acc[ib].rounds.map((v, k) => v / acc[ia].rounds[k]).sort((x, y) => x - y);
      return `${(rate(acc[ib]) / rate(acc[ia])).toFixed(3)}x (rounds ${r[0].toFixed(2)}-${r[r.length - 1].toFixed(2)})`;
    };
    console.log(`\nB / A throughput: per-request ${spread(0, 1)}, lease ${spread(2, 3)}`);
    if (process.env.AB_WEBHOOK) console.log(`B with a webhook / A per-request: ${spread(0, 4)}`);
  }
} finally {
  child.kill();
}
const geo = (ia, ib, f) => Math.sqrt(sessions.map((acc) => f(acc[ib]) / f(acc[ia])).reduce((p, v) => p * v, 1));
console.log(`\nboth sessions (geometric mean): B / A throughput per-request ${geo(0, 1, rate).toFixed(3)}x, lease ${geo(2, 3, rate).toFixed(3)}x; CPU per request per-request ${geo(0, 1, cpuOf).toFixed(3)}x, lease ${geo(2, 3, cpuOf).toFixed(3)}x`);
