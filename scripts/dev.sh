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
secrets_dir=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$secrets_dir" ]; then rm -rf "$secrets_dir"; fi
}
trap cleanup EXIT INT TERM

if [ -z "${DEFAULT_BACKENDS:-}" ]; then
  node tests/support/demo-backends.mjs 9101 9102 9103 &
  pids+=($!)
  export DEFAULT_BACKENDS='{"hostname":"demo.localhost","backends":["http://127.0.0.1:9101","http://127.0.0.1:9102","http://127.0.0.1:9103"],"activeHealthChecks":{"interval":10,"timeout":2}}'
  DEMO=1
fi

# Report an invalid config before starting the runtime.
cargo run -q --bin flowbalance-check

# Exported settings win over wrangler.toml [vars]. Only non-secret ones go on the command line.
args=(--var "DEFAULT_BACKENDS:$DEFAULT_BACKENDS")
for name in ADMIN_HOSTNAME ADMIN_PREFIX_HOSTNAMES; do
  if [ -n "${!name:-}" ]; then args+=(--var "$name:${!name}"); fi
done
if [ -z "${API_SECRET:-}" ] && ! grep -qs '^API_SECRET=' .dev.vars; then
  API_SECRET="$(node -e 'console.log(require("crypto").randomBytes(24).toString("base64url"))')"
  printf 'API_SECRET=%s\n' "$API_SECRET" >> .dev.vars
  echo "Generated a local API_SECRET in .dev.vars: $API_SECRET"
fi
API_SECRET="${API_SECRET:-$(grep '^API_SECRET=' .dev.vars | head -1 | cut -d= -f2-)}"
# The console's sessions are signed with JWT_SECRET: without it nobody can sign in. Generated like
# API_SECRET, straight into .dev.vars (never on a command line) and not printed: nobody types it.
if [ -z "${JWT_SECRET:-}" ] && ! grep -qs '^JWT_SECRET=' .dev.vars; then
  node -e 'process.stdout.write("JWT_SECRET=" + require("crypto").randomBytes(32).toString("base64url") + "\n")' >> .dev.vars
  echo "Generated a local JWT_SECRET in .dev.vars"
fi
if [ -z "${WEB_AUTH_USERNAME:-}" ] && ! grep -qs '^WEB_AUTH_USERNAME=' .dev.vars; then
  echo "To sign in to the console with a password, add WEB_AUTH_USERNAME and WEB_AUTH_PASSWORD to .dev.vars"
fi

# Secrets come from .dev.vars, which wrangler reads itself. Exported ones must win without appearing
# in any process's arguments (`ps` shows those to every user): they go, merged over .dev.vars, into a
# private file that wrangler reads with --env-file (which then replaces .dev.vars), deleted on exit.
secret_names=(API_SECRET WEB_AUTH_USERNAME WEB_AUTH_PASSWORD AFFINITY_SECRET JWT_SECRET AUTHORIZED_USERS SESSION_TTL ENABLE_WEB_INTERFACE
  GITHUB_CLIENT_ID GITHUB_CLIENT_SECRET GOOGLE_CLIENT_ID GOOGLE_CLIENT_SECRET
  GITHUB_OAUTH_BASE GITHUB_API_BASE GOOGLE_AUTH_URL GOOGLE_TOKEN_URL GOOGLE_USERINFO_URL)
exported=()
for name in "${secret_names[@]}"; do
  if [ -n "${!name:-}" ] && printenv "$name" >/dev/null; then exported+=("$name"); fi
done
if [ "${#exported[@]}" -gt 0 ]; then
  secrets_dir="$(mktemp -d)"
  node scripts/wrangler-helper.cjs dev-secrets "$secrets_dir/dev.env" "${exported[@]}"
  args+=(--env-file "$secrets_dir/dev.env")
  echo "Secrets exported in this shell (${exported[*]}) override .dev.vars"
fi

# CI=true: wrangler applies without an interactive confirmation prompt. A failure here is a broken
# migration (the local database needs no setup): show it and stop.
if ! out="$(CI=true npx wrangler d1 migrations apply DB --local 2>&1)"; then
  printf '%s\n' "$out" >&2
  echo "local D1 migrations failed" >&2
  exit 1
fi

if [ -n "${DEMO:-}" ]; then
  cat <<MSG

FlowBalance demo on http://127.0.0.1:$PORT — three demo backends behind demo.localhost. Try:
  for i in 1 2 3 4 5 6; do curl -s -H 'Host: demo.localhost' http://127.0.0.1:$PORT/; echo; done
Console: http://127.0.0.1:$PORT/ (or use the API secret above as an API key on its sign-in screen)
Admin API:
  curl -s -H "Authorization: Bearer $API_SECRET" http://127.0.0.1:$PORT/admin/services

MSG
fi
npx wrangler dev --ip 127.0.0.1 --port "$PORT" "${args[@]}" &
pids+=($!)
wait "${pids[-1]}"
