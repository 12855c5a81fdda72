// The built Worker (build/index.js): it bundles without esbuild warnings (`wrangler deploy` bundles it again and would print each one on every deploy), and carries the edits of scripts/post-build.mjs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

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
