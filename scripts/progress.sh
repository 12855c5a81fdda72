# Sourced by the other scripts: step messages, and a heartbeat for steps that run for minutes.

# Prints one step line, prefixed with the calling script's name ("[setup] ...").
say() { printf '[%s] %s\n' "$(basename "${0%.sh}")" "$*"; }

# Runs a command, printing "still working" every HEARTBEAT_SECONDS (default 20) until it ends,
# so a long first build does not look hung. Returns the command's own exit status.
with_heartbeat() {
  local what="$1" started=$SECONDS status=0 ticker
  shift
  say "$what"
  (
    # sleep gets no stdout, so a killed ticker leaves nothing holding the caller's pipe open.
    while sleep "${HEARTBEAT_SECONDS:-20}" >/dev/null 2>&1; do say "  still working on: $what ($((SECONDS - started)) s)"; done
  ) &
  ticker=$!
  "$@" || status=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [ "$status" -eq 0 ]; then say "  done in $((SECONDS - started)) s: $what"; fi
  return "$status"
}
