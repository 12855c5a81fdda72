// Throughput, p99 and workerd CPU of two builds of FlowBalance side by side (alternating rounds), per-request and lease mode: `node tests/bench/ab.mjs <build dir A> [<build dir B>]` (B defaults to ./build; AB_WEBHOOK=1 adds B with a webhook configured).
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
const a = await startBalancer({ defaultBackends: { activeHealthChecks: { interval: 60 }, services: services.slice(0, 2) }, buildDir: path.resolve(dirA) });
const b = await startBalancer({ defaultBackends: { activeHealthChecks: { interval: 60 }, services }, buildDir: path.resolve(dirB) });
const subjects = [
  { name: `A per-request ${dirA}`, url: `http://${new URL(a.url).host}/`, host: "bench.test" },
  { name: `B per-request ${dirB}`, url: `http://${new URL(b.url).host}/`, host: "bench.test" },
  { name: `A lease`, url: `http://${new URL(a.url).host}/`, host: "lease.test" },
  { name: `B lease`, url: `http://${new URL(b.url).host}/`, host: "lease.test" },
  ...(process.env.AB_WEBHOOK ? [{ name: `B with a webhook configured`, url: `http://${new URL(b.url).host}/`, host: "hooked.test" }] : []),
];
const acc = subjects.map(() => ({ total: 0, secs: 0, errors: 0, cpu: 0, p50: [], p99: [] }));
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
    }
  }
} finally {
  await a.stop();
  await b.stop();
  child.kill();
}
console.log(`\n${CONNECTIONS} connections, ${ROUNDS} alternating rounds of ${SECONDS} s\n`);
console.log("| subject | req/s | p50 ms (median) | p99 ms (median) | workerd CPU µs/req | errors |\n|---|---:|---:|---:|---:|---:|");
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const rps = acc.map((x) => x.total / x.secs);
for (const [i, s] of subjects.entries()) {
  const cpu = (acc[i].cpu * 1e6) / acc[i].total;
  console.log(`| ${s.name} | ${rps[i].toFixed(0)} | ${median(acc[i].p50)} | ${median(acc[i].p99)} | ${cpu.toFixed(0)} | ${acc[i].errors} |`);
}
console.log(`\nB / A throughput: per-request ${(rps[1] / rps[0]).toFixed(3)}x, lease ${(rps[3] / rps[2]).toFixed(3)}x`);
if (process.env.AB_WEBHOOK) console.log(`B with a webhook / A per-request: ${(rps[4] / rps[0]).toFixed(3)}x`);
