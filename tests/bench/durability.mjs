// `npm run bench` (part): what the durable request log and the live tail cost per request. Compares this build with and
// without a tail listening, and, when FB_BASELINE_BUILD names another build (e.g. main's), that build, in alternating rounds.
import autocannon from "autocannon";
import { fork } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { API_SECRET, startBalancer } from "../support/runtime.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 9);
const ROUNDS = 3;

function startBackendProcess(ports) {
  const child = fork(path.join(here, "backend-process.mjs"), [String(ports)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve) => child.once("message", (m) => resolve({ child, urls: m.urls })));
}

const services = (urls) => ({
  activeHealthChecks: { interval: 60 },
  decisions: { mode: "per_request" },
  services: [
    { hostname: "quiet.test", backends: urls },
    { hostname: "tailed.test", backends: urls },
  ],
});

async function rowsIn(lb) {
  const db = await lb.mf.getD1Database("DB");
  return (await db.prepare("SELECT COUNT(*) AS n FROM request_logs").first()).n;
}

async function main() {
  const { child, urls } = await startBackendProcess(3);
  const lb = await startBalancer({ defaultBackends: services(urls) });
  const baseline = process.env.FB_BASELINE_BUILD
    ? await startBalancer({ defaultBackends: services(urls), buildDir: path.resolve(process.env.FB_BASELINE_BUILD) })
    : null;
  const u = new URL(lb.url);
  // A well-behaved consumer: acknowledges every line.
  const tail = new WebSocket(`ws://${u.host}/admin/services/tailed.test/tail`, { headers: { authorization: `Bearer ${API_SECRET}` } });
  let lines = 0;
  tail.on("message", (d) => {
    const line = JSON.parse(String(d));
    if (line.type === "request") lines++;
    if (line.seq > 0) tail.send(String(line.seq));
  });
  await new Promise((r, j) => (tail.once("open", r), tail.once("error", j)));
  const subjects = [
    ...(baseline ? [{ name: "baseline build (FB_BASELINE_BUILD)", url: `http://${new URL(baseline.url).host}/`, host: "quiet.test" }] : []),
    { name: "this build, no tail", url: `http://${u.host}/`, host: "quiet.test" },
    { name: "this build, one tail listening", url: `http://${u.host}/`, host: "tailed.test" },
  ];
  const acc = subjects.map(() => ({ total: 0, secs: 0, errors: 0, p50: [], p99: [] }));
  try {
    for (const s of subjects) await autocannon({ url: s.url, connections: CONNECTIONS, duration: 1, headers: { host: s.host } });
    const linesBefore = lines;
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, s] of subjects.entries()) {
        const r = await autocannon({ url: s.url, connections: CONNECTIONS, duration: SECONDS / ROUNDS, headers: { host: s.host } });
        acc[i].total += r.requests.total;
        acc[i].secs += r.duration;
        acc[i].errors += r.errors + r.non2xx;
        acc[i].p50.push(r.latency.p50);
        acc[i].p99.push(r.latency.p99);
      }
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`\nRequest log durability and live tail: ${CONNECTIONS} connections, ${SECONDS} s per subject in ${ROUNDS} alternating rounds\n`);
    console.log("| subject | req/s | p50 ms | p99 ms | errors |");
    console.log("|---|---:|---:|---:|---:|");
    for (const [i, s] of subjects.entries()) {
      const a = acc[i];
      console.log(`| ${s.name} | ${(a.total / a.secs).toFixed(0)} | ${median(a.p50)} | ${median(a.p99)} | ${a.errors} |`);
    }
    // Every request of this build is in D1 shortly after the load stops (no later request needed).
    const sent = acc.slice(baseline ? 1 : 0).reduce((n, a) => n + a.total, 0);
    const deadline = Date.now() + 10000;
    let rows = await rowsIn(lb);
    while (rows < sent && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      rows = await rowsIn(lb);
    }
    console.log(`\nthis build: ${rows} request-log rows in D1 for at least ${sent} measured requests (plus warm-up); tail lines received: ${lines - linesBefore}`);
  } finally {
    tail.terminate();
    await lb.stop();
    if (baseline) await baseline.stop();
    child.kill();
  }
}

await main();
