#!/usr/bin/env bash
# `npm run deploy`: checks the D1 database id, builds, validates the config, applies the D1 migrations and deploys with wrangler;
# exported settings override wrangler.toml [vars].
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/progress.sh

# First, before building or calling wrangler: a deploy with wrangler.toml's placeholder database id
# would deploy a Worker whose request log and health history cannot work.
PLACEHOLDER_D1_ID=00000000-0000-0000-0000-000000000000
database_id="$(node scripts/wrangler-helper.cjs d1-id DB)"
if [ -z "$database_id" ] || [ "$database_id" = "$PLACEHOLDER_D1_ID" ]; then
  say "not deploying: wrangler.toml has no D1 database id for the DB binding (database_id = \"${database_id:-}\")." >&2
  say "  1. Create the database once:  npx wrangler d1 create flowbalance" >&2
  say "  2. Put the id it prints into wrangler.toml, [[d1_databases]] binding \"DB\": database_id = \"<id>\"" >&2
  say "  3. Run 'npm run deploy' again (it applies the migrations, then deploys)." >&2
  exit 1
fi

bash scripts/build.sh
export PATH="$HOME/.cargo/bin:$PATH"

vars=()
for name in DEFAULT_BACKENDS ADMIN_HOSTNAME ADMIN_PREFIX_HOSTNAMES; do
  if [ -n "${!name:-}" ]; then vars+=(--var "$name:${!name}"); fi
done

# Both configs are checked: the exported one is deployed now, and the one in wrangler.toml is
# deployed by the next run without the export.
check_config() {
  say "checking DEFAULT_BACKENDS and ADMIN_PREFIX_HOSTNAMES from $1"
  if ! DEFAULT_BACKENDS="$2" ADMIN_PREFIX_HOSTNAMES="$3" cargo run -q --bin flowbalance-check; then
    say "not deploying: fix DEFAULT_BACKENDS or ADMIN_PREFIX_HOSTNAMES in $1" >&2
    exit 1
  fi
}
toml_backends="$(node scripts/wrangler-helper.cjs var DEFAULT_BACKENDS)"
toml_prefix_hosts="$(node scripts/wrangler-helper.cjs var ADMIN_PREFIX_HOSTNAMES)"
check_config "wrangler.toml [vars]" "$toml_backends" "$toml_prefix_hosts"
if [ -n "${DEFAULT_BACKENDS:-}${ADMIN_PREFIX_HOSTNAMES:-}" ]; then
  check_config "the environment" "${DEFAULT_BACKENDS:-$toml_backends}" "${ADMIN_PREFIX_HOSTNAMES:-$toml_prefix_hosts}"
fi

# CI=true: wrangler applies without an interactive confirmation prompt.
CI=true npx wrangler d1 migrations apply DB --remote
npx wrangler deploy "${vars[@]}" "$@"
