#!/usr/bin/env bash
# `npm test`: lint, native policy tests, build, end-to-end tests in workerd, and the deploy dry run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

echo "== docs (fences, links, anchors)"
node --test tests/docs/
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (host and wasm32)"
cargo clippy -q --all-targets -- -D warnings
cargo clippy -q --lib --target wasm32-unknown-unknown -- -D warnings
echo "== cargo doc (no warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -q
echo "== cargo test (policy)"
cargo test -q

echo "== build"
bash scripts/build.sh

echo "== end-to-end tests (workerd via Miniflare, loopback backends)"
node --test --test-concurrency=1 --test-timeout=300000 tests/e2e/

echo "== deploy dry run"
rm -rf dist
npx wrangler deploy --dry-run --outdir dist >/tmp/flowbalance-dry-run.log 2>&1 || { cat /tmp/flowbalance-dry-run.log; exit 1; }
node -e '
const fs = require("fs"), zlib = require("zlib"), path = require("path");
let raw = 0, gz = 0;
for (const f of fs.readdirSync("dist")) {
  const b = fs.readFileSync(path.join("dist", f));
  if (!fs.statSync(path.join("dist", f)).isFile()) continue;
  raw += b.length; gz += zlib.gzipSync(b, { level: 9 }).length;
}
if (!fs.existsSync("dist/index.js")) { console.error("dry run produced no dist/index.js"); process.exit(1); }
console.log(`deploy bundle: ${(raw / 1024).toFixed(0)} KiB raw, ${(gz / 1024).toFixed(0)} KiB gzip`);
'
node scripts/console-size.mjs
