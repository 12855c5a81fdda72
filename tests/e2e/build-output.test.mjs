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
  const call = text.match(new RegExp(`(?<![\\w$])${esc(entry)}=__fbEntry\\(([\\w$]+),([\\w$]+),([\\w$]+),([\\w$]+)\\)`));
  assert.ok(call, `${entry} is built by __fbEntry`);
  const [, , reinit, critical, state] = call;
  assert.match(text, new RegExp(`function ${esc(reinit)}\\(\\)\\{${esc(state)}\\.criticalError&&\\(console\\.log\\("Reinitializing Wasm application"\\)`));
  assert.match(text, new RegExp(`function ${esc(critical)}\\(\\w+\\)\\{\\w+ instanceof WebAssembly\\.RuntimeError`));
  assert.ok(text.includes(String(__fbEntry)), "build/index.js carries scripts/entry.mjs's function as it is");
});

test("entry: every call and construction checks for reinitialisation first; a critical error is marked", async () => {
  const log = [];
  const state = { criticalError: false };
  const reinit = () => log.push("reinit");
  const critical = (e) => {
    if (e instanceof WebAssembly.RuntimeError) state.criticalError = true;
  };
  class Base {
    constructor(env) {
      log.push(`construct ${env}`);
    }
    fetch(x) {
      if (x === "panic") throw new WebAssembly.RuntimeError("unreachable");
      return x + 1;
    }
    async later(x) {
      if (x === "panic") throw new WebAssembly.RuntimeError("unreachable");
      return x * 2;
    }
  }
  const Entry = __fbEntry(Base, reinit, critical, state);
  const e = new Entry("env");
  assert.ok(e instanceof Base);
  assert.deepEqual(log, ["reinit", "construct env"]);
  assert.equal(e.fetch(1), 2);
  assert.equal(await e.later(2), 4);
  assert.deepEqual(log.slice(2), ["reinit", "reinit"]);
  assert.throws(() => e.fetch("panic"), WebAssembly.RuntimeError);
  assert.equal(state.criticalError, true);
  state.criticalError = false;
  await assert.rejects(e.later("panic"), WebAssembly.RuntimeError);
  assert.equal(state.criticalError, true);

  const broken = { criticalError: false };
  const Failing = __fbEntry(class { constructor() { throw new Error("no"); } }, () => {}, () => {}, broken);
  assert.throws(() => new Failing(), /no/);
  assert.equal(broken.criticalError, true, "a failed construction marks the instance for reinitialisation, as the shim's Proxy did");
});
