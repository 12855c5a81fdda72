#!/usr/bin/env bash
# `npm run deploy`: builds and deploys with wrangler; exported settings override wrangler.toml [vars].
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
vars=()
for name in DEFAULT_BACKENDS ADMIN_HOSTNAME; do
  if [ -n "${!name:-}" ]; then vars+=(--var "$name:${!name}"); fi
done
if [ -n "${DEFAULT_BACKENDS:-}" ]; then cargo run -q --bin flowbalance-check; fi
CI=true npx wrangler d1 migrations apply DB --remote || echo "note: D1 migrations not applied (create the database first: see README)"
npx wrangler deploy "${vars[@]}" "$@"
