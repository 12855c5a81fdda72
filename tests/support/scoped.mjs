// Resources owned by one node:test test: started for it and stopped when it ends, pass or fail.
import { startBalancer } from "./runtime.mjs";
import { startBackend, stopAll } from "./backends.mjs";

/** Starts a FlowBalance runtime (options as `startBalancer`) that stops when test `t` ends. */
export async function balancerFor(t, opts) {
  const lb = await startBalancer(opts);
  t.after(() => lb.stop());
  return lb;
}

/** Starts one backend per name (or `n` named b1..bn) that stop when test `t` ends. */
export async function backendsFor(t, names, opts) {
  const list = typeof names === "number" ? Array.from({ length: names }, (_, i) => `b${i + 1}`) : names;
  const out = [];
  // Registered first, so backends started before a failing start are stopped too.
  t.after(() => stopAll(out));
  for (const name of list) out.push(await startBackend(name, opts));
  return out;
}

/** Probes far apart, so they never interfere with what a test counts (a test that needs probes sets its own). */
export const quiet = { activeHealthChecks: { interval: 600, timeout: 2 } };

/** A runtime for test `t` balancing `services` (the `services` list of DEFAULT_BACKENDS), probes quiet; `extra` adds top-level settings. */
export function serve(t, services, extra = {}) {
  return balancerFor(t, { defaultBackends: { ...quiet, ...extra, services } });
}
