#!/usr/bin/env bash
# Start a single-node Ray head in the background and wait until it accepts jobs.
#
#   infra/ray-head-start.sh                        # GCS 127.0.0.1:6379, dashboard :8265
#   RAY_PORT=6380 RAY_DASHBOARD_PORT=8266 RAY_NUM_CPUS=2 infra/ray-head-start.sh
#
# Settings: HOST [127.0.0.1] (the dashboard and job API bind to it; Ray itself replaces a
# loopback --node-ip-address with this machine's routable IP and its GCS listens on every
# interface, which is one more reason to keep token authentication on), RAY_PORT [6379],
# RAY_DASHBOARD_PORT [8265], RAY_CLIENT_PORT [10001] (none of them may lie in the workers'
# range RAY_MIN_WORKER_PORT..RAY_MAX_WORKER_PORT [10002..19999]), RAY_AGENT_PORT [a free port: Ray's
# default 52365 is often held by another Ray on a shared machine], RAY_NUM_CPUS / RAY_NUM_GPUS
# [detected], RAY_TEMP_DIR [/tmp/rnngen-ray-<uid>: apart from /tmp/ray, so a bare ray.init()
# elsewhere does not attach to this head], RAY_AUTH_MODE [token].
#
# Authentication stays on (RAY_AUTH_MODE=token): an unauthenticated Ray job API runs any code
# that reaches it, and has been exploited in the wild. The token is RAY_AUTH_TOKEN,
# RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; when none exists, a new one is written (mode 600)
# to infra/.run/ray-auth-token and RAY_AUTH_TOKEN_PATH points to it. A token file readable by
# other users is made private (mode 600) first. RAY_AUTH_MODE=disabled turns it off (tests on
# 127.0.0.1 do).
#
# `ray start --block` runs under this script's own session, so infra/ray-head-stop.sh stops this
# head and nothing else (`ray stop` would stop every Ray process of the user on the machine).
# The venv's bin/ is put first on the head's PATH: job entrypoints such as `rnngen ...` run with
# the head's environment. Writes infra/.run/ray-head.{pid,log} and infra/.run/ray.env.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GCS_PORT="${RAY_PORT:-6379}"
DASH_PORT="${RAY_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${RAY_CLIENT_PORT:-10001}"
AGENT_PORT="${RAY_AGENT_PORT:-$(free_port)}"
TEMP_DIR="${RAY_TEMP_DIR:-/tmp/rnngen-ray-$(id -u)}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"

MIN_WORKER_PORT="${RAY_MIN_WORKER_PORT:-10002}"  # Ray's own defaults for its workers' ports
MAX_WORKER_PORT="${RAY_MAX_WORKER_PORT:-19999}"

# A service port inside the workers' range collides with a worker sooner or later, and Ray
# then fails with a traceback: refuse it here, naming the setting to change.
outside_worker_ports() {
    local port="$1" name="$2"
    if ((port >= MIN_WORKER_PORT && port <= MAX_WORKER_PORT)); then
        echo "error: $name=$port lies in Ray's worker port range $MIN_WORKER_PORT-$MAX_WORKER_PORT;" \
            "choose a port outside it (or move the range with RAY_MIN_WORKER_PORT/RAY_MAX_WORKER_PORT)." >&2
        exit 2
    fi
}

refuse_if_running ray-head
for setting in "RAY_PORT:$GCS_PORT" "RAY_DASHBOARD_PORT:$DASH_PORT" \
               "RAY_CLIENT_PORT:$CLIENT_PORT" "RAY_AGENT_PORT:$AGENT_PORT"; do
    outside_worker_ports "${setting#*:}" "${setting%%:*}"
done
need_free_port "$GCS_PORT" RAY_PORT
need_free_port "$DASH_PORT" RAY_DASHBOARD_PORT
need_free_port "$CLIENT_PORT" RAY_CLIENT_PORT
need_free_port "$AGENT_PORT" RAY_AGENT_PORT

auth_lines=""
if [[ "$RAY_AUTH_MODE" == token ]]; then
    if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" && ! -s "$HOME/.ray/auth_token" ]]
    then
        export RAY_AUTH_TOKEN_PATH="$RUN_DIR/ray-auth-token"
        if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
            (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(32), end="")' \
                >"$RAY_AUTH_TOKEN_PATH")
            echo "wrote a new Ray auth token to $RAY_AUTH_TOKEN_PATH (mode 600)"
        fi
    fi
    # The token file in use is readable by its owner only: Ray's own local start and
    # `ray get-auth-token --generate` write ~/.ray/auth_token readable by every user (644).
    token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
    if [[ -z "${RAY_AUTH_TOKEN:-}" && -f "$token_file" ]] && "$PY" -c 'import os, sys
sys.exit(0 if os.stat(sys.argv[1]).st_mode & 0o077 else 1)' "$token_file"; then
        chmod 600 "$token_file" || die "the Ray auth token $token_file is readable by other" \
            "users and could not be made private: run \`chmod 600 $token_file\`."
        echo "made the Ray auth token $token_file private (mode 600): it was readable by others"
    fi
    auth_lines="export RAY_AUTH_MODE=token"
    if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        auth_lines+=$'\n'"export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
    fi
fi

resources=()
if [[ -n "${RAY_NUM_CPUS:-}" ]]; then resources+=(--num-cpus "$RAY_NUM_CPUS"); fi
if [[ -n "${RAY_NUM_GPUS:-}" ]]; then resources+=(--num-gpus "$RAY_NUM_GPUS"); fi

start_bg ray-head env PATH="$BIN:$PATH" \
    "$BIN/ray" start --head --block --disable-usage-stats \
    --node-ip-address "$HOST" --port "$GCS_PORT" \
    --dashboard-host "$HOST" --dashboard-port "$DASH_PORT" \
    --dashboard-agent-listen-port "$AGENT_PORT" --ray-client-server-port "$CLIENT_PORT" \
    --min-worker-port "$MIN_WORKER_PORT" --max-worker-port "$MAX_WORKER_PORT" \
    --temp-dir "$TEMP_DIR" ${resources[@]+"${resources[@]}"}
# The job API needs both the GCS (through the dashboard) and this node's dashboard agent.
wait_until ray-head http_ok "http://$HOST:$DASH_PORT/api/gcs_healthz"
wait_until ray-head http_ok "http://127.0.0.1:$AGENT_PORT/api/local_raylet_healthz"

{
    echo "export RAY_ADDRESS=$HOST:$GCS_PORT"
    echo "export RAY_API_SERVER_ADDRESS=http://$HOST:$DASH_PORT"
    if [[ -n "$auth_lines" ]]; then echo "$auth_lines"; else echo "export RAY_AUTH_MODE=disabled"; fi
} >"$RUN_DIR/ray.env"

cat <<MSG
Ray head is up (pid $(cat "$RUN_DIR/ray-head.pid"), log $RUN_DIR/ray-head.log, auth $RAY_AUTH_MODE).
  RAY_ADDRESS=$HOST:$GCS_PORT                  (rnngen --ray-address, ray.init)
  RAY_API_SERVER_ADDRESS=http://$HOST:$DASH_PORT   (dashboard and ray job submit)
Use it (source $RUN_DIR/ray.env sets all of these):
$(sed 's/^/  /' "$RUN_DIR/ray.env")
  rnngen study --ray-address $HOST:$GCS_PORT
  ray job submit --address http://$HOST:$DASH_PORT --working-dir . \\
      --runtime-env infra/ray-runtime-env.yaml -- rnngen study --out /abs/path/out
Stop it: infra/ray-head-stop.sh
MSG
