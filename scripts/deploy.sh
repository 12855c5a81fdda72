#!/usr/bin/env bash
# `npm run deploy`: builds, validates the config, applies the D1 migrations and deploys with wrangler;
# exported settings override wrangler.toml [vars].
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/progress.sh
bash scripts/build.sh
export PATH="$HOME/.cargo/bin:$PATH"

vars=()
for name in DEFAULT_BACKENDS ADMIN_HOSTNAME; do
  if [ -n "${!name:-}" ]; then vars+=(--var "$name:${!name}"); fi
done

# Both configs are checked: the exported one is deployed now, and the one in wrangler.toml is
# deployed by the next run without the export.
check_config() {
  say "checking DEFAULT_BACKENDS from $1"
  if ! DEFAULT_BACKENDS="$2" cargo run -q --bin flowbalance-check; then
    say "not deploying: fix DEFAULT_BACKENDS in $1" >&2
    exit 1
  fi
}
toml_backends="$(node scripts/wrangler-helper.cjs var DEFAULT_BACKENDS)"
check_config "wrangler.toml [vars]" "$toml_backends"
if [ -n "${DEFAULT_BACKENDS:-}" ]; then check_config "the environment" "$DEFAULT_BACKENDS"; fi

# The one expected case: the database is not created yet (wrangler.toml still has the placeholder id).
# Any other migration failure is real and stops the deploy.
database_id="$(node scripts/wrangler-helper.cjs d1-id DB)"
if [ "$database_id" = 00000000-0000-0000-0000-000000000000 ]; then
  say "note: D1 migrations not applied: wrangler.toml's database_id is still the placeholder."
  say "      Create the database with 'npx wrangler d1 create flowbalance', put the printed id into"
  say "      database_id in wrangler.toml, then run 'npm run deploy' again (README, Deploying)."
else
  # CI=true: wrangler applies without an interactive confirmation prompt.
  CI=true npx wrangler d1 migrations apply DB --remote
fi
npx wrangler deploy "${vars[@]}" "$@"
