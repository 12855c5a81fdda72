// `npm run deploy` (scripts/deploy.sh) refuses wrangler.toml's placeholder D1 id before it builds or calls wrangler: run for real with stand-ins for npx and cargo on PATH, so nothing can be deployed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const PLACEHOLDER = "00000000-0000-0000-0000-000000000000";

test("deploy: the placeholder D1 id stops the deploy with the steps to create the database, before any build or wrangler call", async (t) => {
  assert.match(readFileSync(path.join(root, "wrangler.toml"), "utf8"), new RegExp(`database_id = "${PLACEHOLDER}"`), "this test needs wrangler.toml's placeholder id");
  const fakes = mkdtempSync(path.join(tmpdir(), "fb-deploy-"));
  t.after(() => rmSync(fakes, { recursive: true, force: true }));
  const calls = path.join(fakes, "calls.log");
  // Stand-ins that record a call and fail, so a script that goes on can reach neither wrangler nor a build.
  for (const name of ["npx", "npm", "cargo", "rustup", "wrangler", "worker-build", "apt-get"]) {
    const file = path.join(fakes, name);
    writeFileSync(file, `#!/bin/sh\necho "${name} $*" >> "${calls}"\nexit 97\n`);
    chmodSync(file, 0o755);
  }
  const env = { ...process.env, PATH: `${fakes}:${process.env.PATH}`, HOME: fakes, CLOUDFLARE_API_TOKEN: "", CLOUDFLARE_ACCOUNT_ID: "" };
  delete env.DEFAULT_BACKENDS;
  const run = await new Promise((resolve) => {
    execFile("bash", ["scripts/deploy.sh"], { cwd: root, env, timeout: 60000 }, (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
  const out = run.stdout + run.stderr;
  assert.equal(run.code, 1, out);
  assert.match(run.stderr, /not deploying: wrangler\.toml has no D1 database id/);
  assert.match(run.stderr, /npx wrangler d1 create flowbalance/);
  assert.match(run.stderr, /database_id = "<id>"/);
  assert.doesNotMatch(out, /\[(build|setup)\]/, "the script built before checking the id");
  assert.equal(existsSync(calls) ? readFileSync(calls, "utf8") : "", "", "the script called a tool before checking the id");
});
