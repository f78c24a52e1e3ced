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
"$BIN/prefect" --no-prompt deploy --prefect-file "$ROOT/prefect.yaml" "${args[@]}"
# The nightly study is the one deployment with a schedule: say so, and how to stop it.
if [[ $# -eq 0 ]] || [[ " $* " == *" study/quick-nightly "* ]]; then
    cat <<MSG
Note: study/quick-nightly is scheduled: it runs the quick study every night at 03:00 UTC
(its schedule is on). To see or pause it:
  prefect deployment schedule ls study/quick-nightly
  prefect deployment schedule pause study/quick-nightly <schedule id>
MSG
fi
