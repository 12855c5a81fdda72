#!/usr/bin/env bash
# Builds the Worker (build/index.js + wasm) with the locally installed, offline toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# worker-build would download these; point it at the installed ones instead.
export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
worker-build --release 2>&1 | grep -vE '^\s*$' | tail -n 20
test -f build/index.js
