#!/usr/bin/env bash
# Stop the worker that infra/prefect-worker-start.sh started (its session only).
#
# A Prefect worker takes SIGTERM as "stop taking runs, let the running ones finish", so it is
# given STOP_GRACE seconds [20] when flow runs are in progress; after that they are stopped
# with it (finished cells are on disk: rerunning the deployment resumes). An idle worker is
# stopped at once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

grace="${STOP_GRACE:-20}"
pidfile="$RUN_DIR/prefect-worker.pid"
if [[ -f "$pidfile" ]] && (($(ps -o pid= -s "$(cat "$pidfile")" 2>/dev/null | wc -l) <= 1)); then
    grace=2  # no flow run subprocess: nothing to wait for
fi
stop_session prefect-worker "$grace"
