#!/usr/bin/env bash
# `npm run bench`: builds, then measures the request path against loopback backends (bounded duration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
node tests/bench/bench.mjs "$@"
node tests/bench/lease.mjs
node tests/bench/rules.mjs
node tests/bench/tail.mjs
node tests/bench/steering.mjs
node tests/bench/recovery.mjs
node tests/bench/scrape.mjs
# FB_BASELINE_BUILD=<another build dir> adds that build (e.g. main's) to the comparison.
node tests/bench/durability.mjs
