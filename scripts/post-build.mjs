// The build's last step: two edits to the bundle worker-build 0.8.7 writes (build/index.js), each
// measured in docs/benchmarks.md, each failing the build when the bundle is not as expected.
// 1. The Durable Object classes extend `DurableObject`: workerd calls RPC methods (the Worker's
//    `stub.decide(message)`) only on classes that do, and worker-build exports plain wasm-bindgen
//    classes behind a Proxy.
// 2. wasm-bindgen's futures wake their tasks with `promise.then` instead of `queueMicrotask`: it uses
//    `queueMicrotask` when the global has it, and workerd's wraps every callback in a new function
//    (about 2 KB and tens of µs per request, several wakes each). Both run the task as a microtask.
// 3. The Worker's entrypoint is exported as a plain object of worker-build's handlers, without the
//    `Proxy` its shim puts around the entrypoint class (a new `Proxy` and a copy of its hooks for
//    every request and another for every method call) and without the class workerd would
//    construct for every request. The same checks stay (scripts/entry.mjs): the wasm instance is
//    reinitialised before a request after a critical error (a panic), and an error thrown by a
//    handler is looked at for one.
import fs from "node:fs";
import { __fbEntry } from "./entry.mjs";

const CLASSES = ["Balancer"];
const MARK = "/* flowbalance post-build */";
const file = process.argv[2] ?? "build/index.js";
let text = fs.readFileSync(file, "utf8");
if (text.startsWith(MARK)) process.exit(0);

const fail = (why) => {
  console.error(`post-build: ${file}: ${why}`);
  process.exit(1);
};

const exports = text.match(/export\s*\{([^}]*)\}\s*;?\s*$/);
if (!exports) fail("no export list at the end of the bundle");
const local = new Map(
  exports[1].split(",").map((e) => e.trim().split(/\s+as\s+/)).map(([l, name]) => [name ?? l, l]),
);
const extend = CLASSES.map((name) => {
  const l = local.get(name) ?? fail(`${name} is not exported`);
  return `Object.setPrototypeOf(${l}.prototype,__fbDurableObject.prototype);Object.setPrototypeOf(${l},__fbDurableObject);`;
});
text = text.slice(0, exports.index) + extend.join("\n") + "\n" + text.slice(exports.index);

// The import that tells wasm-bindgen's queue whether the global has queueMicrotask.
const probe = /(__wbg_queueMicrotask_[0-9a-f]+:function\((\w+)\)\{)return \2\.queueMicrotask\}/g;
const probes = text.match(probe)?.length ?? 0;
if (probes !== 1) fail(`expected one queueMicrotask check in the wasm-bindgen glue, found ${probes}`);
text = text.replace(probe, "$1return undefined}");

// The shim's checkReinitialize, from its construct hook, and handleMaybeCritical.
const N = "[\\w$]+";
const hook = new RegExp(`construct\\(${N},${N},${N}\\)\\{try\\{(${N})\\(\\);let ${N}=\\{instance:Reflect\\.construct\\(${N},${N},${N}\\),instanceId:${N}\\.instanceId`).exec(text);
if (!hook) fail("worker-build's construct hook is not as expected");
const critical = new RegExp(`addEventListener\\("error",(${N})=>\\{(${N})\\(\\1\\.error\\)\\}\\)`).exec(text);
if (!critical) fail("worker-build's error listener is not as expected");
const entry = local.get("default") ?? fail("no default export");
const proxied = new RegExp(`(?<![\\w$])${entry.replace(/\$/g, "\\$")}=new Proxy\\((${N}),${N}\\)`);
if ((text.match(new RegExp(proxied.source, "g")) ?? []).length !== 1) fail(`expected one ${entry}=new Proxy(...) for the default export`);
text = text.replace(proxied, (_, base) => `${entry}=__fbEntry(${base},${hook[1]},${critical[2]})`);

fs.writeFileSync(file, `${MARK}\nimport{DurableObject as __fbDurableObject}from"cloudflare:workers";\n${__fbEntry}\n${text}`);
