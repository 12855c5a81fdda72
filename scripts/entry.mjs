// The Worker's entrypoint as scripts/post-build.mjs exports it: worker-build's class without the
// `Proxy` its shim puts around it, keeping the shim's recovery from a critical error (a panic).
// Its source is copied into build/index.js, so it uses nothing from this module's scope.

/**
 * `Base`: worker-build's entrypoint class; `reinit`: its checkReinitialize (resets the wasm
 * instance after a critical error); `critical`: its handleMaybeCritical (marks one);
 * `state`: its initState.
 */
export function __fbEntry(Base, reinit, critical, state) {
  for (const name of Object.getOwnPropertyNames(Base.prototype)) {
    const f = Base.prototype[name];
    if (name === "constructor" || typeof f !== "function") continue;
    Base.prototype[name] =
      f.constructor === Function
        ? function (...args) {
            reinit();
            try {
              return f.apply(this, args);
            } catch (e) {
              critical(e);
              throw e;
            }
          }
        : async function (...args) {
            reinit();
            try {
              return await f.apply(this, args);
            } catch (e) {
              critical(e);
              throw e;
            }
          };
  }
  return class extends Base {
    constructor(...args) {
      try {
        reinit();
        super(...args);
      } catch (e) {
        state.criticalError = true;
        throw e;
      }
    }
  };
}
