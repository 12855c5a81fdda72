#!/usr/bin/env bash
# Installs what building and testing FlowBalance needs, skipping whatever is already present.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source scripts/progress.sh

# Listings are read whole before matching: `cmd | grep -q` can fail under pipefail when grep exits early.
installed_targets="$(rustup target list --installed)"
if ! grep -qx wasm32-unknown-unknown <<<"$installed_targets"; then
  with_heartbeat "adding the wasm32-unknown-unknown target" rustup target add wasm32-unknown-unknown
fi
installed_components="$(rustup component list --installed)"
for component in clippy rustfmt; do
  if ! grep -q "^$component" <<<"$installed_components"; then
    with_heartbeat "adding the rustup component $component" rustup component add "$component"
  fi
done

# worker-build must match the `worker` crate's minor version.
WORKER_BUILD_VERSION=0.8.7
if ! grep -qF "$WORKER_BUILD_VERSION" <<<"$(worker-build --version 2>/dev/null || true)"; then
  with_heartbeat "installing worker-build $WORKER_BUILD_VERSION (about 4 minutes, once)" \
    cargo install -q worker-build --version "$WORKER_BUILD_VERSION"
fi

# The wasm-bindgen CLI must equal the wasm-bindgen version in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$WASM_BINDGEN_VERSION" ]; then
  say "no wasm-bindgen version found in Cargo.lock" >&2
  exit 1
fi
if ! grep -qF "$WASM_BINDGEN_VERSION" <<<"$(wasm-bindgen --version 2>/dev/null || true)"; then
  # --locked fails offline here: a pinned dependency is missing from the registry.
  with_heartbeat "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 3 minutes, once)" \
    cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

# Installed packages are keyed by the lockfile's content (not its mtime, which a fresh checkout
# or worktree always makes newer), so an unchanged lockfile never triggers a reinstall.
LOCK_SUM="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -x node_modules/.bin/wrangler ] || [ ! -x node_modules/.bin/wasm-opt ] || [ ! -d node_modules/miniflare ] \
   || [ "$(cat node_modules/.flowbalance-lock 2>/dev/null)" != "$LOCK_SUM" ]; then
  with_heartbeat "installing npm packages" npm ci --no-audit --no-fund --loglevel=error
  echo "$LOCK_SUM" > node_modules/.flowbalance-lock
fi

# The console's browser tests drive Debian's Chromium through playwright-core (which cannot download a
# browser offline); the metrics tests scrape with a real Prometheus. Both come from apt when missing.
apt_missing=()
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || apt_missing+=(prometheus)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # A fresh machine's package lists may be empty, so update first.
  with_heartbeat "updating apt package lists" $SUDO apt-get update -qq
  with_heartbeat "installing ${apt_missing[*]} from apt (about a minute, once)" \
    env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
