// `npm run bench`, recovery run: a backend dies under load and comes back; prints how long until it takes traffic again (bounded: about 40 s).
import { startBalancer } from "../support/runtime.mjs";
import { startBackends, stopAll, waitFor } from "../support/backends.mjs";

const INTERVAL_S = 5;
const CONSECUTIVE_UP = 2;
const RECOVERY_TIMEOUT_MS = 60000;

async function main() {
  const bs = await startBackends(3);
  const lb = await startBalancer({
    defaultBackends: {
      hostname: "recovery.test",
      backends: bs.map((b) => b.url),
      activeHealthChecks: { interval: INTERVAL_S, timeout: 1, consecutive_up: CONSECUTIVE_UP, consecutive_down: 2 },
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: RECOVERY_TIMEOUT_MS } },
      connection_error_handling: { connection_timeout_ms: 1000 },
      decisions: { mode: "per_request" },
    },
  });
  let stop = false;
  let sent = 0;
  let failed = 0;
  const worker = async () => {
    while (!stop && sent < 200000) {
      sent++;
      const res = await lb.fetch("recovery.test", `/r${sent}`);
      if (res.status !== 200) failed++;
      await res.arrayBuffer();
    }
  };
  const load = Promise.all([worker(), worker(), worker(), worker()]);
  try {
    const status = async () =>
      (await (await lb.admin("/admin/services/recovery.test")).json()).backends.find((b) => b.url === bs[1].url);
    await waitFor(() => bs[1].requests().length > 20, { timeoutMs: 10000, what: "traffic on the backend" });
    await bs[1].kill();
    await waitFor(async () => (await status()).breaker === "open", { timeoutMs: 15000, what: "breaker open" });
    await bs[1].revive();
    const revivedAt = Date.now();
    const before = bs[1].requests().length;
    await waitFor(() => bs[1].requests().length > before, { timeoutMs: 40000, stepMs: 20, what: "traffic again" });
    const backMs = Date.now() - revivedAt;
    console.log(`\nrecovery run: interval ${INTERVAL_S} s, consecutive_up ${CONSECUTIVE_UP}, breaker recovery_timeout ${RECOVERY_TIMEOUT_MS / 1000} s, 4 clients`);
    console.log(`  revived backend takes traffic again after ${(backMs / 1000).toFixed(1)} s (bound: consecutive_up x interval x 1.1 = ${(CONSECUTIVE_UP * INTERVAL_S * 1.1).toFixed(1)} s plus probe timing)`);
    console.log(`  requests sent ${sent}, failed ${failed}`);
  } finally {
    stop = true;
    await load;
    await stopAll(bs);
    await lb.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
