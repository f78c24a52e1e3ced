#!/usr/bin/env bash
# Start a Prefect `process` worker for the deployments' pool, in the background, and wait until
# it has registered with the server.
#
#   infra/prefect-worker-start.sh
#   RAY_ADDRESS=head:6379 RAY_AUTH_MODE=token infra/prefect-worker-start.sh   # runs use a cluster
#
# Settings: PREFECT_API_URL [from infra/.run/prefect.env], PREFECT_POOL [rnngen-process, as in
# prefect.yaml], PREFECT_WORKER_NAME [rnngen-<host>], RNNGEN_ROOT [this checkout: where the
# flow runs start, see the pull step in prefect.yaml], PREFECT_HOME [.prefect, as `make`].
# The pool is created (type process) when missing. Each flow run is a subprocess of this worker
# with the worker's environment, so RAY_ADDRESS / RAY_AUTH_* set here reach the flows.
# Writes infra/.run/prefect-worker.{pid,log}. Stop it with infra/prefect-worker-stop.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export RNNGEN_ROOT="${RNNGEN_ROOT:-$ROOT}"
NAME="${PREFECT_WORKER_NAME:-rnngen-$(hostname -s)}"

refuse_if_running prefect-worker
prefect_api_and_pool

since=$(date +%s)
start_bg prefect-worker env PATH="$BIN:$PATH" \
    "$BIN/prefect" worker start --pool "$POOL" --type process --name "$NAME" \
    --install-policy never
wait_until prefect-worker "$PY" -c 'import sys
from prefect.client.orchestration import get_client
pool, name, since = sys.argv[1], sys.argv[2], float(sys.argv[3])
with get_client(sync_client=True) as client:
    workers = client.read_workers_for_work_pool(pool)
beats = [w.last_heartbeat_time for w in workers if w.name == name and w.last_heartbeat_time]
sys.exit(0 if any(t.timestamp() >= since - 1 for t in beats) else 1)' "$POOL" "$NAME" "$since"

cat <<MSG
Prefect worker $NAME polls pool $POOL at $PREFECT_API_URL
  (pid $(cat "$RUN_DIR/prefect-worker.pid"), log $RUN_DIR/prefect-worker.log; runs start in $RNNGEN_ROOT).
Use it:
  infra/deploy.sh                                   # register prefect.yaml's deployments
  prefect deployment run 'study/quick-nightly' --watch
Stop it: infra/prefect-worker-stop.sh
MSG
