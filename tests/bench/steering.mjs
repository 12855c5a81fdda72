// `npm run bench` (steering part): throughput with one 2 s backend per endpoint steering mode against the
// all-fast figure, the cost per request of each mode against round robin, and how far the Durable
// Object's outstanding count lags the requests really in flight.
import autocannon from "autocannon";
import { ask, compare, startBackendProcess } from "./bench.mjs";
import { startBalancer } from "../support/runtime.mjs";

const SLOW_MS = 2000;
const CLIENTS = 10;
const MODES = ["round_robin", "least_outstanding_requests", "latency", "hash"];
const SLOW_MODES = ["round_robin", "least_outstanding_requests", "latency"];
// Hostnames may not contain "_": each mode's services are named by a short label.
const LABEL = { round_robin: "rr", least_outstanding_requests: "lor", latency: "latency", hash: "hash" };
const fastHost = (mode) => `${LABEL[mode]}.fast.test`;
const slowHost = (mode) => `${LABEL[mode]}.slow.test`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Requests per second of `clients` connections over `seconds`, and how often each status came. */
async function run(base, host, seconds, clients = CLIENTS) {
  const r = await autocannon({ url: base, connections: clients, duration: seconds, headers: { host } });
  return { rps: r.requests.total / r.duration, errors: r.errors + r.non2xx + r.timeouts };
}

/** Samples the object's outstanding counts against the backends' own in-flight counts while `during` runs. */
async function sampleLag(lb, host, child, backendIdx, during) {
  const samples = [];
  let running = true;
  const sampler = (async () => {
    while (running) {
      const st = await (await lb.admin(`/admin/services/${host}`)).json();
      if (!st.backends) throw new Error(`no status for ${host}: ${JSON.stringify(st)}`);
      const { inflight } = await ask(child, { inflight: true });
      const object = st.backends.map((b) => b.outstanding);
      const truth = backendIdx.map((i) => inflight[i]);
      samples.push({ object, truth });
      await sleep(50);
    }
  })();
  const result = await during;
  running = false;
  await sampler;
  return { result, samples };
}

function lagFigures(samples, slowAt) {
  const diffs = samples.map((s) => s.object.reduce((a, b) => a + b, 0) - s.truth.reduce((a, b) => a + b, 0));
  const slowDiffs = samples.map((s) => s.object[slowAt] - s.truth[slowAt]);
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const truthMean = mean(samples.map((s) => s.truth.reduce((a, b) => a + b, 0)));
  const objectMean = mean(samples.map((s) => s.object.reduce((a, b) => a + b, 0)));
  return {
    n: samples.length,
    objectMean,
    truthMean,
    meanDiff: mean(diffs),
    maxDiff: Math.max(...diffs),
    slowMeanAbs: mean(slowDiffs.map(Math.abs)),
    slowMax: Math.max(...slowDiffs.map(Math.abs)),
  };
}

/** After the load stops: how long until the object counts nothing outstanding. */
async function drainMs(lb, host) {
  const t0 = Date.now();
  for (;;) {
    const st = await (await lb.admin(`/admin/services/${host}`)).json();
    if (st.backends.every((b) => b.outstanding === 0)) return Date.now() - t0;
    if (Date.now() - t0 > 30000) return NaN;
    await sleep(5);
  }
}

async function main() {
  // Backends 0-2 serve the all-fast services, 3-5 the one-slow services (5 is slow).
  const { child, urls } = await startBackendProcess(6);
  // The backends' process must not outlive a failed run.
  process.on("exit", () => child.kill());
  const fast = urls.slice(0, 3);
  const mixed = urls.slice(3, 6);
  const services = [];
  for (const mode of MODES) services.push({ hostname: fastHost(mode), backends: fast, load_balancer: { endpoint_steering: mode } });
  for (const mode of SLOW_MODES) services.push({ hostname: slowHost(mode), backends: mixed, load_balancer: { endpoint_steering: mode } });
  // Per request: the steering figures are the object's own decisions.
  const lb = await startBalancer({ defaultBackends: { activeHealthChecks: { interval: 60 }, decisions: { mode: "per_request" }, services } });
  const base = `http://${new URL(lb.url).host}/`;
  await ask(child, { slow: 5, ms: SLOW_MS });
  const slowRows = [];
  let cost;
  let lag;
  let fastLag;
  let drain;
  let fastDrain;
  try {
    // Cost per request: every mode on the same three fast backends, alternating rounds.
    cost = await compare(
      MODES.map((m) => ({ name: m, url: base, headers: { host: fastHost(m) } })),
      { rounds: 3, duration: 2 },
    );
    // Lag with fast backends: the object's count against requests really at the backends.
    const lorFast = fastHost("least_outstanding_requests");
    fastLag = lagFigures((await sampleLag(lb, lorFast, child, [0, 1, 2], run(base, lorFast, 4))).samples, 2);
    fastDrain = await drainMs(lb, lorFast);
    for (const mode of SLOW_MODES) {
      const allFast = await run(base, fastHost(mode), 3);
      const host = slowHost(mode);
      let slowRun;
      if (mode === "least_outstanding_requests") {
        const { result, samples } = await sampleLag(lb, host, child, [3, 4, 5], run(base, host, 6));
        slowRun = result;
        lag = lagFigures(samples, 2);
        drain = await drainMs(lb, host);
      } else {
        slowRun = await run(base, host, 6);
      }
      // Let the slow backend's last requests finish before the next mode starts.
      await sleep(SLOW_MS + 200);
      slowRows.push({ mode, allFast, slowRun });
    }
  } finally {
    await lb.stop();
    child.kill();
  }
  const rr = cost.find((c) => c.name === "round_robin");
  console.log(`\nSteering: ${CLIENTS} connections; one of three backends answers in ${SLOW_MS} ms (6 s runs; all-fast 3 s runs)\n`);
  console.log("| endpoint_steering | all-fast req/s | one slow req/s | kept | errors |");
  console.log("|---|---:|---:|---:|---:|");
  for (const r of slowRows)
    console.log(`| ${r.mode} | ${r.allFast.rps.toFixed(0)} | ${r.slowRun.rps.toFixed(0)} | ${(r.slowRun.rps / r.allFast.rps).toFixed(2)}x | ${r.slowRun.errors} |`);
  console.log(`\nCost per request, three fast backends, 16 connections, 3 alternating rounds of 2 s\n`);
  console.log("| endpoint_steering | req/s | vs round robin | p50 ms | workerd CPU µs/req |");
  console.log("|---|---:|---:|---:|---:|");
  for (const c of cost)
    console.log(`| ${c.name} | ${c.rps.toFixed(0)} | ${(c.rps / rr.rps).toFixed(2)}x | ${c.p50} | ${c.cpuUsPerReq.toFixed(0)} |`);
  console.log(`\nOutstanding count (least_outstanding_requests) against requests really at the backends, sampled every ~50 ms`);
  console.log(`  fast backends: the load generator keeps ${CLIENTS} requests in flight; the object counted ${fastLag.objectMean.toFixed(2)} on average (the backends themselves held ${fastLag.truthMean.toFixed(2)}: they answer at once, the time is spent in the Worker) (${fastLag.n} samples)`);
  console.log(`  with the slow backend: object − backends mean ${lag.meanDiff.toFixed(2)}, max ${lag.maxDiff}; at the slow backend |object − backend| mean ${lag.slowMeanAbs.toFixed(2)}, max ${lag.slowMax} (${lag.n} samples)`);
  console.log(`  after the load stopped: fast backends, the object counted 0 outstanding within ${fastDrain} ms; with the slow backend within ${drain} ms (its last requests answer up to ${SLOW_MS} ms later)`);
  console.log(`  (the object counts a request from its decision to its completion report, so it also holds requests in the Worker between those, which the backends never see)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
