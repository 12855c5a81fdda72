// The reference Workers every benchmark compares FlowBalance with: a JavaScript pass-through, and the bare Worker -> Durable Object -> backend hop.
import { Miniflare } from "miniflare";

const common = { modules: true, compatibilityDate: "2025-09-01", host: "127.0.0.1", port: 0 };

/** A JavaScript Worker that forwards every request to `backend` and returns the answer. */
export async function startPassThrough(backend) {
  const mf = new Miniflare({
    ...common,
    script: `export default { async fetch(req, env) {
      const u = new URL(req.url);
      return fetch(env.BACKEND + u.pathname + u.search, req);
    } }`,
    bindings: { BACKEND: backend },
  });
  return { mf, url: (await mf.ready).origin };
}

/**
 * The floor of FlowBalance's architecture: the same Worker -> Durable Object -> backend hop in plain
 * JavaScript with no policy at all (a round-robin counter in the object's memory). `delayMs` adds a
 * wait inside the object on each call, as FB_TEST_OBJECT_DELAY_MS does for FlowBalance; `extra`
 * adds Miniflare options (a profiler's inspectorPort).
 */
export async function startBareHop(urls, delayMs = 0, extra = {}) {
  const mf = new Miniflare({
    ...common,
    ...extra,
    // The object is asked by RPC, as FlowBalance asks its own.
    script: `import { DurableObject } from "cloudflare:workers";
    export class Picker extends DurableObject {
      i = 0;
      async pick() {
        const urls = ${JSON.stringify(urls)};
        if (${delayMs} > 0) await new Promise((r) => setTimeout(r, ${delayMs}));
        return urls[this.i++ % urls.length];
      }
    }
    export default { async fetch(req, env) {
      const u = new URL(req.url);
      const stub = env.PICKER.get(env.PICKER.idFromName(u.hostname));
      const target = await stub.pick();
      return fetch(target + u.pathname + u.search, req);
    } }`,
    durableObjects: { PICKER: { className: "Picker", useSQLite: true } },
  });
  return { mf, url: (await mf.ready).origin };
}
