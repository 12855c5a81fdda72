// `npm run bench`: throughput, latency and workerd CPU per request of the backend directly, a JS pass-through Worker, and FlowBalance.
import autocannon from "autocannon";
import { fork } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startBalancer } from "../support/runtime.mjs";
import { startBareHop, startPassThrough } from "./subjects.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const DURATION = Number(process.env.BENCH_SECONDS ?? 9);
const ROUNDS = 3;

const TICKS = 100; // USER_HZ on Linux
/**
 * CPU seconds (user + system) of the workerd processes this benchmark started (Miniflare spawns each
 * as a child of this process): other sessions' workerd on a shared machine do not count.
 */
export function workerdCpuSeconds() {
  let total = 0;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      if (!comm.startsWith("workerd")) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) !== process.pid) continue;
      total += (Number(fields[11]) + Number(fields[12])) / TICKS;
    } catch {}
  }
  return total;
}

async function measure(url, headers, connections, duration) {
  const cpu0 = workerdCpuSeconds();
  const r = await autocannon({ url, connections, duration, headers });
  return { r, cpu: workerdCpuSeconds() - cpu0 };
}

/**
 * Measures several subjects in alternating short rounds, so drift in this noisy machine's speed
 * hits every subject alike; per subject: summed requests and CPU, median of the round latencies.
 */
export async function compare(subjects, { connections = CONNECTIONS, rounds = ROUNDS, duration = DURATION / ROUNDS } = {}) {
  for (const s of subjects) await autocannon({ url: s.url, connections, duration: 1, headers: s.headers ?? {} });
  const acc = subjects.map(() => ({ total: 0, secs: 0, cpu: 0, errors: 0, p50: [], p99: [], mean: [] }));
  for (let round = 0; round < rounds; round++) {
    for (const [i, s] of subjects.entries()) {
      const { r, cpu } = await measure(s.url, s.headers ?? {}, connections, duration);
      const a = acc[i];
      a.total += r.requests.total;
      a.secs += r.duration;
      a.cpu += cpu;
      a.errors += r.errors + r.non2xx;
      a.p50.push(r.latency.p50);
      a.p99.push(r.latency.p99);
      a.mean.push(r.latency.average);
    }
  }
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  return subjects.map((s, i) => {
    const a = acc[i];
    return {
      name: s.name,
      rps: a.total / a.secs,
      p50: median(a.p50),
      p99: median(a.p99),
      mean: median(a.mean),
      errors: a.errors,
      total: a.total,
      cpuUsPerReq: a.total ? (a.cpu * 1e6) / a.total : NaN,
    };
  });
}

export function startBackendProcess(ports) {
  const child = fork(path.join(here, "backend-process.mjs"), [String(ports)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve) => child.once("message", (m) => resolve({ child, urls: m.urls })));
}

export function ask(child, msg) {
  return new Promise((resolve) => {
    child.once("message", resolve);
    child.send(msg);
  });
}

/** One of three backends is killed mid-load: count client failures and how long it kept receiving traffic. */
async function failoverRun() {
  const { child, urls } = await startBackendProcess(3);
  const lb = await startBalancer({
    defaultBackends: { hostname: "failover.test", backends: urls, activeHealthChecks: { interval: 5, timeout: 1 }, decisions: { mode: "per_request" } },
  });
  const target = `http://${new URL(lb.url).host}/`;
  const run = autocannon({ url: target, connections: CONNECTIONS, duration: 8, headers: { host: "failover.test" } });
  await new Promise((r) => setTimeout(r, 3000));
  const killedAt = Date.now();
  await ask(child, { kill: 1 });
  // The dead backend stops receiving traffic once the DO's view excludes it (breaker open or probe down).
  let excludedAfterMs = NaN;
  for (let i = 0; i < 200; i++) {
    const st = await (await lb.admin("/admin/services/failover.test")).json();
    const b = st.backends.find((x) => x.url === urls[1]);
    if (b && (b.breaker !== "closed" || !b.healthy)) {
      excludedAfterMs = Date.now() - killedAt;
      break;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const r = await run;
  await lb.stop();
  child.kill();
  return { sent: r.requests.total, failed: r.errors + r.non2xx, rps: r.requests.average, excludedAfterMs };
}

async function main() {
  const { child, urls } = await startBackendProcess(3);
  const passThrough = await startPassThrough(urls[0]);
  const ptUrl = new URL(passThrough.url);
  // The floor of this architecture: the same Worker -> Durable Object -> backend hop in plain
  // JavaScript with no policy at all (round robin counter in memory).
  const doHop = await startBareHop(urls);
  const doHopUrl = new URL(doHop.url);
  const lb = await startBalancer({
    defaultBackends: {
      activeHealthChecks: { interval: 60 },
      // Per-request mode, as these figures have always been (lease.mjs measures both modes).
      decisions: { mode: "per_request" },
      services: [
        { hostname: "bench.test", backends: urls },
        {
          hostname: "sticky.test",
          backends: [{ url: urls[0], weight: 3 }, { url: urls[1], weight: 1 }, { url: urls[2], weight: 1 }],
          load_balancer: { session_affinity: { type: "cookie" } },
        },
      ],
    },
  });
  const lbUrl = new URL(lb.url);
  const rows = [];
  const idle = [];
  const fbHeaders = { host: "bench.test" };
  const lbBase = `http://${lbUrl.host}/`;
  try {
    const first = await lb.fetch("sticky.test", "/");
    const cookie = first.headers.getSetCookie()[0].split(";")[0];
    await first.arrayBuffer();
    rows.push(...(await compare([{ name: "backend direct", url: `${urls[0]}/` }], { rounds: 1, duration: 3 })));
    rows.push(
      ...(await compare([
        { name: "JS pass-through Worker", url: `${ptUrl.origin}/` },
        { name: "JS Worker + Durable Object hop, no policy (architecture floor)", url: `${doHopUrl.origin}/` },
        { name: "FlowBalance (round robin, 3 backends)", url: lbBase, headers: fbHeaders },
        // Weights 3:1:1 with cookie affinity: a request without a cookie is pinned (signs a
        // cookie); a returning client sends its cookie (verifies it).
        { name: "FlowBalance weights + affinity, new clients", url: lbBase, headers: { host: "sticky.test" } },
        { name: "FlowBalance weights + affinity, returning client", url: lbBase, headers: { host: "sticky.test", cookie } },
      ])),
    );
    // Added latency is read unloaded (one connection), where queueing does not hide it.
    idle.push(
      ...(await compare(
        [
          { name: "JS pass-through, 1 connection", url: `${ptUrl.origin}/` },
          { name: "FlowBalance, 1 connection", url: lbBase, headers: fbHeaders },
        ],
        { connections: 1, duration: 2 },
      )),
    );
  } finally {
    await passThrough.mf.dispose();
    await doHop.mf.dispose();
    await lb.stop();
    child.kill();
  }
  console.log(`\n${CONNECTIONS} connections, ${DURATION} s per subject in ${ROUNDS} alternating rounds, loopback, one run\n`);
  console.log("| subject | req/s | p50 ms | p99 ms | errors | workerd CPU µs/req |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const r of rows)
    console.log(`| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.name.startsWith("backend") ? "-" : r.cpuUsPerReq.toFixed(0)} |`);
  for (const r of idle)
    console.log(`| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.cpuUsPerReq.toFixed(0)} |`);
  const [, pt, hop, fb, stickyNew, stickyBack] = rows;
  const [ptIdle, fbIdle] = idle;
  console.log(`\nFlowBalance / pass-through throughput: ${(fb.rps / pt.rps).toFixed(2)}x (goal >= 0.7x)`);
  console.log(`bare Durable Object hop / pass-through: ${(hop.rps / pt.rps).toFixed(2)}x`);
  console.log(`added latency, 1 connection: mean ${(fbIdle.mean - ptIdle.mean).toFixed(2)} ms, p50 ${fbIdle.p50 - ptIdle.p50} ms (goal <= 1.5 ms)`);
  console.log(`FlowBalance / bare hop throughput: ${(fb.rps / hop.rps).toFixed(2)}x (goal >= 0.92x)`);
  console.log(`workerd CPU per request: FlowBalance ${fb.cpuUsPerReq.toFixed(0)} µs, bare hop ${hop.cpuUsPerReq.toFixed(0)} µs, pass-through ${pt.cpuUsPerReq.toFixed(0)} µs`);
  console.log(`FlowBalance / bare hop CPU per request: ${(fb.cpuUsPerReq / hop.cpuUsPerReq).toFixed(2)}x (goal <= 1.15x)`);
  console.log(`weights + affinity vs plain round robin: new clients ${(stickyNew.rps / fb.rps).toFixed(2)}x, returning clients ${(stickyBack.rps / fb.rps).toFixed(2)}x`);
  if (process.env.BENCH_SKIP_FAILOVER) return;
  const f = await failoverRun();
  console.log(`\nfailover run: 1 of 3 backends killed 3 s into 8 s of load at ${CONNECTIONS} connections`);
  console.log(`  requests sent ${f.sent}, failed ${f.failed}, ${f.rps.toFixed(0)} req/s`);
  console.log(`  dead backend excluded from decisions ${f.excludedAfterMs} ms after the kill (breaker: 3 consecutive failures)`);
  console.log(`  failover throughput vs steady round robin: ${(f.rps / fb.rps).toFixed(2)}x`);
}

// Run as a script (not when another bench imports its helpers).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
