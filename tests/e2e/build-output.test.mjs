// The built Worker (build/index.js) bundles without esbuild warnings: `wrangler deploy` bundles it again and would print each one on every deploy.
import { test } from "node:test";
import assert from "node:assert/strict";
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
