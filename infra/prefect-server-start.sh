#!/usr/bin/env bash
# Start a Prefect server in the background and wait until its API answers.
#
#   infra/prefect-server-start.sh            # http://127.0.0.1:4200 (UI) and .../api
#   HOST=10.0.0.5 PREFECT_PORT=4300 infra/prefect-server-start.sh
#
# Settings: HOST [127.0.0.1], PREFECT_PORT [4200], PREFECT_SERVER_HOME [infra/.run/prefect-server]
# (the server's own Prefect home: its SQLite database and settings, kept apart from the
# PREFECT_HOME that `make study` and `make test` use for their temporary servers).
# Writes infra/.run/prefect-server.{pid,log} and infra/.run/prefect.env (PREFECT_API_URL).
# Stop it with infra/prefect-server-stop.sh; the database stays for the next start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT="${PREFECT_PORT:-4200}"
SERVER_HOME="${PREFECT_SERVER_HOME:-$RUN_DIR/prefect-server}"
API_URL="http://$HOST:$PORT/api"

refuse_if_running prefect-server
need_free_port "$PORT" PREFECT_PORT
mkdir -p "$SERVER_HOME"

start_bg prefect-server env -u PREFECT_API_URL PREFECT_HOME="$SERVER_HOME" \
    "$BIN/prefect" server start --host "$HOST" --port "$PORT"
wait_until prefect-server http_ok "$API_URL/health"

echo "export PREFECT_API_URL=$API_URL" >"$RUN_DIR/prefect.env"
cat <<MSG
Prefect server is up (pid $(cat "$RUN_DIR/prefect-server.pid"), log $RUN_DIR/prefect-server.log).
  UI:  http://$HOST:$PORT
  API: PREFECT_API_URL=$API_URL
Use it:
  export PREFECT_API_URL=$API_URL     # or: source $RUN_DIR/prefect.env
  rnngen study ...                     # the run now shows up in the UI
  infra/prefect-worker-start.sh && infra/deploy.sh
Stop it: infra/prefect-server-stop.sh
MSG
