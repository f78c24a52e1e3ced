# Shared settings and helpers of the infra/*.sh scripts (sourced, not run).
#
# Every service runs in the background in its own session (setsid), with its pid and log under
# $RNNGEN_RUN_DIR (default infra/.run/, git-ignored). A stop script signals that session only:
# it never stops processes it did not start.
#
# Settings (environment variables; defaults in brackets):
#   HOST               address the services bind to and are reached at [127.0.0.1]
#   RNNGEN_RUN_DIR     pid, log, env and state files [infra/.run]
#   RNNGEN_VENV        the virtualenv holding prefect, ray and rnngen [.venv]
#   START_TIMEOUT      seconds a start script waits for its health check [120]

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${HOST:-127.0.0.1}"
RUN_DIR="${RNNGEN_RUN_DIR:-$ROOT/infra/.run}"
VENV="${RNNGEN_VENV:-$ROOT/.venv}"
BIN="$VENV/bin"
PY="$BIN/python"
START_TIMEOUT="${START_TIMEOUT:-120}"

# Quiet, private defaults; an explicit setting in the caller's environment wins.
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"

mkdir -p "$RUN_DIR"

die() {
    echo "error: $*" >&2
    exit 1
}

[[ -x "$PY" ]] || die "no Python at $PY: run \`make test-fast\` (it creates .venv) or set RNNGEN_VENV."

free_port() {
    # A TCP port that is free on $HOST right now (the OS picks it).
    "$PY" -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1]); s.close()' "$HOST"
}

port_free() {
    # True when TCP port $1 can be bound on $HOST now.
    "$PY" -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.close()' "$HOST" "$1" 2>/dev/null
}

need_free_port() {
    # need_free_port PORT VARIABLE: fail clearly when PORT is taken.
    port_free "$1" || die "port $1 on $HOST is in use (by another service or another user's);" \
        "pick a free one with $2=<port>."
}

pid_alive() {
    # True when pid file $1 names a live process.
    local pidfile=$1
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

refuse_if_running() {
    # Refuse while anything of the session recorded in NAME.pid is alive.
    local name=$1
    if [[ -f "$RUN_DIR/$name.pid" ]] && group_alive "$(cat "$RUN_DIR/$name.pid")"; then
        die "$name already runs (pid $(cat "$RUN_DIR/$name.pid"), log $RUN_DIR/$name.log);" \
            "stop it first with infra/${name}-stop.sh."
    fi
    rm -f "$RUN_DIR/$name.pid"
}

start_bg() {
    # start_bg NAME CMD...: run CMD in a new session, output to NAME.log, pid to NAME.pid.
    # Without job control a background child is no process-group leader, so setsid execs in
    # place and $! is the session leader: its pid is also the session's process-group id.
    local name=$1
    shift
    setsid "$@" >"$RUN_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$name.pid"
}

wait_until() {
    # wait_until NAME CHECK...: poll CHECK every second until it succeeds; fail with the log's
    # tail if the service dies or START_TIMEOUT passes.
    local name=$1
    shift
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ! pid_alive "$RUN_DIR/$name.pid"; then
            tail -n 30 "$RUN_DIR/$name.log" >&2 || true
            die "$name exited during start-up; its log is $RUN_DIR/$name.log."
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$RUN_DIR/$name.log" >&2 || true
            die "$name did not answer within ${START_TIMEOUT}s (log: $RUN_DIR/$name.log);" \
                "it is still running: stop it with infra/${name}-stop.sh."
        fi
        sleep 1
    done
}

http_ok() {
    # True when GET $1 answers 2xx within 5 s.
    "$PY" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).read()' "$1"
}

group_alive() {
    kill -0 -- "-$1" 2>/dev/null
}

stop_session() {
    # stop_session NAME [GRACE]: SIGTERM the leader recorded in NAME.pid, wait up to GRACE
    # seconds [20] for its whole session to exit, then SIGTERM and finally SIGKILL what is left
    # of that process group. Only the session we started is signalled.
    local name=$1 grace=${2:-20}
    local pidfile="$RUN_DIR/$name.pid"
    if [[ ! -f "$pidfile" ]]; then
        echo "$name: not running (no $pidfile)."
        return 0
    fi
    local pid
    pid="$(cat "$pidfile")"
    if ! group_alive "$pid"; then
        echo "$name: not running (pid $pid is gone)."
        rm -f "$pidfile"
        return 0
    fi
    if [[ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" != "$pid" ]] && kill -0 "$pid" 2>/dev/null
    then
        die "$name: pid $pid is not the session leader this script started (pid reused?);" \
            "not signalling it. Remove $pidfile after checking."
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
    if group_alive "$pid"; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        sleep 3
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "$name: stopped (session $pid)."
}

# Point at the Prefect API (PREFECT_API_URL, else infra/.run/prefect.env), check that it
# answers, and make sure the process work pool $POOL exists (`prefect deploy` and workers
# refuse a missing pool). Sets PREFECT_API_URL, PREFECT_HOME and POOL.
prefect_api_and_pool() {
    if [[ -z "${PREFECT_API_URL:-}" && -f "$RUN_DIR/prefect.env" ]]; then
        source "$RUN_DIR/prefect.env"
    fi
    [[ -n "${PREFECT_API_URL:-}" ]] || die "PREFECT_API_URL is not set and no server was" \
        "started here: run infra/prefect-server-start.sh first, or export PREFECT_API_URL."
    export PREFECT_API_URL
    export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
    POOL="${PREFECT_POOL:-rnngen-process}"
    http_ok "$PREFECT_API_URL/health" >/dev/null 2>&1 \
        || die "no Prefect server answers at $PREFECT_API_URL; start one with" \
            "infra/prefect-server-start.sh or fix PREFECT_API_URL."
    if ! "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
        "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
        echo "created work pool $POOL (type process)"
    fi
}
