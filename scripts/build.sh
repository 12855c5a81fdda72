#!/usr/bin/env bash
# Builds the Worker (build/index.js + wasm) with the locally installed, offline toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/progress.sh
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# worker-build would download these; point it at the installed ones instead.
WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export WASM_BINDGEN_BIN
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
# Skip when the build is newer than every input (wrangler dev runs this again on start and on change).
if [ -f build/index.js ] && [ -z "$(find src dashboard Cargo.toml Cargo.lock scripts/post-build.mjs scripts/entry.mjs -newer build/index.js -print -quit)" ]; then
  say "build is up to date"
  exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The first build compiles every dependency for wasm32 (a few minutes); later ones take seconds.
compile() { worker-build --release >"$log" 2>&1; }
if ! with_heartbeat "compiling the Worker (worker-build --release)" compile; then
  grep -vE '^\s+([0-9]+:|at )' "$log" >&2
  say "build failed" >&2
  exit 1
fi
grep -E 'Done in|index.js ' "$log" || true
node scripts/post-build.mjs build/index.js
