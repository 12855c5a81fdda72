// The Worker's entrypoint as scripts/post-build.mjs exports it: worker-build's handlers as a plain
// module-worker object, without the `Proxy` its shim puts around its entrypoint class, keeping the
// shim's recovery from a critical error (a panic). Its source is copied into build/index.js, so it
// uses nothing from this module's scope.
//
// Why an object, not the class: workerd constructs a class entrypoint (a `WorkerEntrypoint`) for
// every request (1.00–1.04× lease-mode throughput without it in A/B runs, docs/benchmarks.md).
// An object's handlers get `(event, env, ctx)`; worker-build's methods read `env` and `ctx` from
// `this`, so each call gets a small `this` holding them. The default export has no RPC methods,
// so nothing needs the class.

/**
 * `Base`: worker-build's entrypoint class; `reinit`: its checkReinitialize (resets the wasm
 * instance after a critical error); `critical`: its handleMaybeCritical (marks one).
 */
export function __fbEntry(Base, reinit, critical) {
  const handlers = {};
  for (const name of Object.getOwnPropertyNames(Base.prototype)) {
    const f = Base.prototype[name];
    if (name === "constructor" || typeof f !== "function") continue;
    handlers[name] =
      f.constructor === Function
        ? function (event, env, ctx) {
            reinit();
            try {
              return f.call({ env, ctx }, event);
            } catch (e) {
              critical(e);
              throw e;
            }
          }
        : async function (event, env, ctx) {
            reinit();
            try {
              return await f.call({ env, ctx }, event);
            } catch (e) {
              critical(e);
              throw e;
            }
          };
  }
  return handlers;
}
