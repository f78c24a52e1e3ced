#!/usr/bin/env bash
# Register prefect.yaml's deployments with the running Prefect server.
#
#   infra/deploy.sh                                 # all of them (prefect deploy --all)
#   infra/deploy.sh study/quick-nightly embed/default
#
# Settings: PREFECT_API_URL [from infra/.run/prefect.env], PREFECT_POOL [rnngen-process]
# (created, type process, when missing: `prefect deploy` refuses a pool that does not exist).
# Prints one line per deployment created and what to do next; prefect's own output (~10
# lines per deployment) goes to infra/.run/deploy.log, shown when it fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

prefect_api_and_pool

args=(--all)
if (($#)); then
    args=()
    for name in "$@"; do args+=(--name "$name"); done
fi
if [[ -n "${PREFECT_POOL:-}" ]]; then
    args+=(--pool "$POOL")  # overrides the pool named in prefect.yaml
fi
cd "$ROOT"  # entrypoints in prefect.yaml are relative to the checkout
# `prefect deploy` prints ~10 lines per deployment (panels, hints, "how to run it"): they go
# to a log; this script prints one line per deployment and what to do next.
log="$RUN_DIR/deploy.log"
if ! COLUMNS=400 "$BIN/prefect" --no-prompt deploy --prefect-file "$ROOT/prefect.yaml" \
    "${args[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "prefect deploy failed (its whole output: $log)."
fi
mapfile -t made < <(grep -oE "Deployment '[^']+' successfully created with id '[^']+'" "$log")
if ((${#made[@]} == 0)); then
    tail -n 40 "$log" >&2
    die "prefect deploy reported no deployment (its whole output: $log)."
fi
echo "Deployed ${#made[@]} to $PREFECT_API_URL, work pool $POOL (prefect's output: $log):"
for line in "${made[@]}"; do
    name="${line#Deployment \'}"
    name="${name%%\'*}"
    echo "  '$name' successfully created"
done
echo "Run one: prefect deployment run '<flow>/<name>' --watch   (a worker must poll $POOL:" \
    "infra/prefect-worker-start.sh)"
# The nightly study is the one deployment with a schedule: say so, and how to stop it.
if [[ " ${made[*]} " == *"'study/quick-nightly'"* ]]; then
    echo "Scheduled: study/quick-nightly runs the quick study every night at 03:00 UTC; pause" \
        "it with: prefect deployment schedule pause study/quick-nightly <schedule id>" \
        "(ids: prefect deployment schedule ls study/quick-nightly)"
fi
