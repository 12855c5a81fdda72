// End to end: a backend that died and came back under load rejoins traffic after `consecutive_up` good probes, not after the breaker's recovery timeout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startBalancer } from "../support/runtime.mjs";
import { startBackends, stopAll, waitFor } from "../support/backends.mjs";

test("a recovered backend is back within consecutive_up x interval plus a few seconds (breaker timeout 60 s)", async () => {
  const bs = await startBackends(3);
  const interval = 5;
  const consecutiveUp = 2;
  const lb = await startBalancer({
    defaultBackends: {
      hostname: "app.test",
      backends: bs.map((b) => b.url),
      activeHealthChecks: { interval, timeout: 1, consecutive_up: consecutiveUp, consecutive_down: 2 },
      // The default recovery timeout: before the fix, recovery waited for it (55 s measured).
      passiveHealthChecks: { circuit_breaker: { failure_threshold: 3, recovery_timeout_ms: 60000 } },
      connection_error_handling: { connection_timeout_ms: 1000 },
    },
  });
  let stop = false;
  let failed = 0;
  const load = (async () => {
    for (let i = 0; !stop && i < 20000; i++) {
      const res = await lb.fetch("app.test", `/load/${i}`);
      if (res.status !== 200) failed++;
      await res.arrayBuffer();
    }
  })();
  try {
    const status = async () => (await (await lb.admin("/admin/services/app.test")).json()).backends.find((b) => b.url === bs[1].url);
    await waitFor(() => bs[1].requests().length > 5, { timeoutMs: 10000, what: "traffic on b2" });
    await bs[1].kill();
    await waitFor(async () => {
      const s = await status();
      return s.breaker === "open" || !s.healthy;
    }, { timeoutMs: 20000, what: "b2 taken out" });
    await bs[1].revive();
    const revivedAt = Date.now();
    const before = bs[1].requests().length;
    await waitFor(() => bs[1].requests().length > before, {
      timeoutMs: (consecutiveUp * interval + 10) * 1000,
      stepMs: 50,
      what: "traffic back on the revived backend",
    });
    // The figure itself is measured by `npm run bench` (tests/bench/recovery.mjs); here it is
    // enough that the backend came back well before the breaker's 60 s recovery timeout.
    assert.ok(Date.now() - revivedAt < 30000, "back before the breaker timeout");
    const s = await status();
    assert.equal(s.breaker, "closed");
    assert.equal(s.healthy, true);
    assert.equal(failed, 0, "clients saw failures while the backend was away");
  } finally {
    stop = true;
    await load;
    await stopAll(bs);
    await lb.stop();
  }
});
