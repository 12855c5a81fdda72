// Throughput of two builds of FlowBalance side by side (alternating rounds): `node tests/bench/ab.mjs <build dir A> [<build dir B>]` (B defaults to ./build).
import autocannon from "autocannon";
import { fork } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startBalancer } from "../support/runtime.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const [dirA, dirB = path.join(here, "../../build")] = process.argv.slice(2);
if (!dirA) throw new Error("usage: node tests/bench/ab.mjs <build dir A> [<build dir B>]");

const child = fork(path.join(here, "backend-process.mjs"), ["3"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
const { urls } = await new Promise((r) => child.once("message", r));
const services = [
  { hostname: "bench.test", backends: urls },
  // Webhooks configured (nothing listens; no transition happens, so nothing is sent): the
  // cost of watching for transitions on every batch of outcomes.
  { hostname: "hooked.test", backends: urls, notifications: { webhooks: [{ url: "http://127.0.0.1:9/hook", secret: "0123456789abcdef" }] } },
];
// Per-request mode in both, as the A/B figures have always been.
const a = await startBalancer({ defaultBackends: { activeHealthChecks: { interval: 60 }, decisions: { mode: "per_request" }, services: services.slice(0, 1) }, buildDir: path.resolve(dirA) });
const b = await startBalancer({ defaultBackends: { activeHealthChecks: { interval: 60 }, decisions: { mode: "per_request" }, services }, buildDir: path.resolve(dirB) });
const subjects = [
  { name: `A ${dirA}`, url: `http://${new URL(a.url).host}/`, host: "bench.test" },
  { name: `B ${dirB}`, url: `http://${new URL(b.url).host}/`, host: "bench.test" },
  { name: `B with a webhook configured`, url: `http://${new URL(b.url).host}/`, host: "hooked.test" },
];
const acc = subjects.map(() => ({ total: 0, secs: 0, errors: 0, p50: [] }));
try {
  for (const s of subjects) await autocannon({ url: s.url, connections: CONNECTIONS, duration: 1, headers: { host: s.host } });
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, s] of subjects.entries()) {
      const r = await autocannon({ url: s.url, connections: CONNECTIONS, duration: SECONDS, headers: { host: s.host } });
      acc[i].total += r.requests.total;
      acc[i].secs += r.duration;
      acc[i].errors += r.errors + r.non2xx;
      acc[i].p50.push(r.latency.p50);
    }
  }
} finally {
  await a.stop();
  await b.stop();
  child.kill();
}
console.log(`\n${CONNECTIONS} connections, ${ROUNDS} alternating rounds of ${SECONDS} s\n`);
console.log("| subject | req/s | p50 ms (median) | errors |\n|---|---:|---:|---:|");
const rps = acc.map((x) => x.total / x.secs);
for (const [i, s] of subjects.entries()) {
  const p50 = [...acc[i].p50].sort((x, y) => x - y)[Math.floor(acc[i].p50.length / 2)];
  console.log(`| ${s.name} | ${rps[i].toFixed(0)} | ${p50} | ${acc[i].errors} |`);
}
console.log(`\nB / A: ${(rps[1] / rps[0]).toFixed(3)}x; B with a webhook / A: ${(rps[2] / rps[0]).toFixed(3)}x`);
