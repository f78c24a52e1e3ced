#!/usr/bin/env bash
# Register prefect.yaml's deployments with the running Prefect server.
#
#   infra/deploy.sh                                 # all of them (prefect deploy --all)
#   infra/deploy.sh study/quick-nightly embed/default
#
# Settings: PREFECT_API_URL [from infra/.run/prefect.env], PREFECT_POOL [rnngen-process]
# (created, type process, when missing: `prefect deploy` refuses a pool that does not exist).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -z "${PREFECT_API_URL:-}" && -f "$RUN_DIR/prefect.env" ]]; then
    source "$RUN_DIR/prefect.env"
fi
[[ -n "${PREFECT_API_URL:-}" ]] || die "PREFECT_API_URL is not set and no server was started" \
    "here: run infra/prefect-server-start.sh first, or export PREFECT_API_URL."
export PREFECT_API_URL
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
POOL="${PREFECT_POOL:-rnngen-process}"

http_ok "$PREFECT_API_URL/health" >/dev/null 2>&1 \
    || die "no Prefect server answers at $PREFECT_API_URL."
if ! "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
    "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
    echo "created work pool $POOL (type process)"
fi

args=(--all)
if (($#)); then
    args=()
    for name in "$@"; do args+=(--name "$name"); done
fi
if [[ -n "${PREFECT_POOL:-}" ]]; then
    args+=(--pool "$POOL")  # overrides the pool named in prefect.yaml
fi
cd "$ROOT"  # entrypoints in prefect.yaml are relative to the checkout
"$BIN/prefect" --no-prompt deploy --prefect-file "$ROOT/prefect.yaml" "${args[@]}"
