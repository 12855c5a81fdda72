// The built Worker (build/index.js): it bundles without esbuild warnings (`wrangler deploy` bundles it again and would print each one on every deploy), and carries the edits of scripts/post-build.mjs, whose entrypoint (scripts/entry.mjs) is exercised here too.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { __fbEntry } from "../../scripts/entry.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

test("build: build/index.js bundles with no esbuild warning (no duplicate import key from wasm-bindgen snippets)", async () => {
  const result = await build({
    entryPoints: [path.join(root, "build/index.js")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    external: ["cloudflare:*", "*.wasm"],
    logLevel: "silent",
  });
  const warnings = result.warnings.map((w) => `${w.id ?? ""} ${w.text} (${w.location?.file}:${w.location?.line})`);
  assert.deepEqual(warnings, []);
});

test("build: the post-build step ran (Balancer extends DurableObject for RPC; wasm-bindgen's queue does not see queueMicrotask)", async () => {
  const text = await readFile(path.join(root, "build/index.js"), "utf8");
  assert.ok(text.startsWith("/* flowbalance post-build */"), "build/index.js lacks the post-build mark");
  const local = text.match(/export\s*\{[^}]*\b(\w+) as Balancer\b/)?.[1];
  assert.ok(local, "Balancer is exported");
  assert.ok(text.includes(`Object.setPrototypeOf(${local}.prototype,__fbDurableObject.prototype)`));
  assert.doesNotMatch(text, /__wbg_queueMicrotask_[0-9a-f]+:function\((\w+)\)\{return \1\.queueMicrotask\}/);
});

test("build: the default export is worker-build's entrypoint through __fbEntry, with the shim's own recovery functions", async () => {
  const text = await readFile(path.join(root, "build/index.js"), "utf8");
  const entry = text.match(/export\s*\{[^}]*?([\w$]+) as default\b/)?.[1];
  assert.ok(entry, "a default export");
  // Minified names may hold `$`, which a pattern must escape.
  const esc = (name) => name.replace(/\$/g, "\\$");
  const call = text.match(new RegExp(`(?<![\\w$])${esc(entry)}=__fbEntry\\(([\\w$]+),([\\w$]+),([\\w$]+)\\)`));
  assert.ok(call, `${entry} is built by __fbEntry`);
  const [, , reinit, critical] = call;
  assert.match(text, new RegExp(`function ${esc(reinit)}\\(\\)\\{[\\w$]+\\.criticalError&&\\(console\\.log\\("Reinitializing Wasm application"\\)`));
  assert.match(text, new RegExp(`function ${esc(critical)}\\(\\w+\\)\\{\\w+ instanceof WebAssembly\\.RuntimeError`));
  assert.ok(text.includes(String(__fbEntry)), "build/index.js carries scripts/entry.mjs's function as it is");
});

test("entry: a plain object whose handlers check for reinitialisation first, see env and ctx as worker-build's methods do, and mark a critical error", async () => {
  const log = [];
  const state = { criticalError: false };
  const reinit = () => log.push("reinit");
  const critical = (e) => {
    if (e instanceof WebAssembly.RuntimeError) state.criticalError = true;
  };
  class Base {
    constructor() {
      throw new Error("an object entrypoint never constructs the class");
    }
    fetch(x) {
      if (x === "panic") throw new WebAssembly.RuntimeError("unreachable");
      return `${x} ${this.env} ${this.ctx}`;
    }
    async scheduled(x) {
      if (x === "panic") throw new WebAssembly.RuntimeError("unreachable");
      return `${x} ${this.env} ${this.ctx}`;
    }
  }
  const entry = __fbEntry(Base, reinit, critical);
  assert.equal(Object.getPrototypeOf(entry), Object.prototype, "a plain object, not a class");
  assert.deepEqual(Object.keys(entry).sort(), ["fetch", "scheduled"]);
  assert.equal(entry.fetch("req", "env", "ctx"), "req env ctx");
  assert.equal(await entry.scheduled("event", "env2", "ctx2"), "event env2 ctx2");
  assert.deepEqual(log, ["reinit", "reinit"]);
  assert.throws(() => entry.fetch("panic", "env", "ctx"), WebAssembly.RuntimeError);
  assert.equal(state.criticalError, true);
  state.criticalError = false;
  await assert.rejects(entry.scheduled("panic", "env", "ctx"), WebAssembly.RuntimeError);
  assert.equal(state.criticalError, true);
  assert.equal(log.length, 4, "a failing call checked for reinitialisation first too");
});
