#!/usr/bin/env bash
# `npm run dev`: installs what is missing, builds, and serves FlowBalance on 127.0.0.1:$PORT.
# With no DEFAULT_BACKENDS exported it starts three demo backends and balances demo.localhost over them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PORT="${PORT:-8787}"
# Keep the local runtime off the network: no download of the default request.cf placeholder.
export CLOUDFLARE_CF_FETCH_ENABLED="${CLOUDFLARE_CF_FETCH_ENABLED:-false}"

bash scripts/build.sh

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

if [ -z "${DEFAULT_BACKENDS:-}" ]; then
  node tests/support/demo-backends.mjs 9101 9102 9103 &
  pids+=($!)
  export DEFAULT_BACKENDS='{"hostname":"demo.localhost","backends":["http://127.0.0.1:9101","http://127.0.0.1:9102","http://127.0.0.1:9103"],"activeHealthChecks":{"interval":10,"timeout":2}}'
  DEMO=1
fi

# Report an invalid config before starting the runtime.
cargo run -q --bin flowbalance-check

# Exported settings win over wrangler.toml [vars]; secrets come from .dev.vars or the shell.
vars=(--var "DEFAULT_BACKENDS:$DEFAULT_BACKENDS")
for name in ADMIN_HOSTNAME API_SECRET WEB_AUTH_USERNAME WEB_AUTH_PASSWORD AFFINITY_SECRET; do
  if [ -n "${!name:-}" ]; then vars+=(--var "$name:${!name}"); fi
done
if [ -z "${API_SECRET:-}" ] && ! grep -qs '^API_SECRET=' .dev.vars; then
  API_SECRET="$(node -e 'console.log(require("crypto").randomBytes(24).toString("base64url"))')"
  printf 'API_SECRET=%s\n' "$API_SECRET" >> .dev.vars
  echo "Generated a local API_SECRET in .dev.vars: $API_SECRET"
fi
API_SECRET="${API_SECRET:-$(grep '^API_SECRET=' .dev.vars | head -1 | cut -d= -f2-)}"

# CI=true: wrangler applies without an interactive confirmation prompt.
CI=true npx wrangler d1 migrations apply DB --local >/dev/null 2>&1 || echo "note: local D1 migrations not applied"

if [ -n "${DEMO:-}" ]; then
  cat <<MSG

FlowBalance demo on http://127.0.0.1:$PORT — three demo backends behind demo.localhost. Try:
  for i in 1 2 3 4 5 6; do curl -s -H 'Host: demo.localhost' http://127.0.0.1:$PORT/; echo; done
Admin API:
  curl -s -H "Authorization: Bearer $API_SECRET" http://127.0.0.1:$PORT/admin/services

MSG
fi
npx wrangler dev --ip 127.0.0.1 --port "$PORT" "${vars[@]}" &
pids+=($!)
wait "${pids[-1]}"
