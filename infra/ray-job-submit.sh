#!/usr/bin/env bash
# Submit a command as a Ray job that ships this checkout's code (infra/ray-runtime-env.yaml)
# together with the environment variables it needs.
#
#   infra/ray-job-submit.sh [--env NAME[=VALUE]]... [ray job submit options] -- rnngen study --out /abs/out
#   infra/ray-job-submit.sh --print-runtime-env [--env ...]     # show what would be sent
#
# `ray job submit` takes either --runtime-env FILE or --runtime-env-json, never both, so
# variables cannot be added on its command line to the file's settings. This script writes
# one runtime environment: the file's, plus `env_vars` with PREFECT_API_URL (when set here:
# the job's flow runs then report to that Prefect API) and every --env NAME (its value here)
# or NAME=VALUE. Secrets are better left on the cluster's nodes: a job's runtime environment
# is visible to whoever can list the cluster's jobs.
#
# Settings: RAY_API_SERVER_ADDRESS (or --address) as for `ray job submit`; RNNGEN_VENV.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

names=()
ray_args=()
print_only=0
while (($#)); do
    case "$1" in
        --env) names+=("$2"); shift 2 ;;
        --env=*) names+=("${1#--env=}"); shift ;;
        --print-runtime-env) print_only=1; shift ;;
        --) break ;;
        *) ray_args+=("$1"); shift ;;
    esac
done
if [[ -n "${PREFECT_API_URL:-}" ]]; then names=(PREFECT_API_URL "${names[@]}"); fi

merged="$(mktemp "$RUN_DIR/ray-runtime-env.XXXXXX.json")"
trap 'rm -f "$merged"' EXIT
"$PY" - "$ROOT/infra/ray-runtime-env.yaml" "$merged" ${names[@]+"${names[@]}"} <<'PY'
import json, os, sys

import yaml

source, target, *names = sys.argv[1:]
with open(source) as fh:
    runtime_env = yaml.safe_load(fh)
env_vars = dict(runtime_env.get("env_vars") or {})
for item in names:
    name, sep, value = item.partition("=")
    if not sep:
        if name not in os.environ:
            sys.exit(f"error: --env {name}: {name} is not set here; give NAME=VALUE.")
        value = os.environ[name]
    env_vars[name] = value
if env_vars:
    runtime_env["env_vars"] = env_vars
with open(target, "w") as fh:
    json.dump(runtime_env, fh, indent=2)
PY
if ((print_only)); then
    cat "$merged"
    exit 0
fi
(($#)) || die "give the job's command after --, e.g. -- rnngen study --out /abs/path/out"
"$BIN/ray" job submit --working-dir "$ROOT" --runtime-env "$merged" \
    ${ray_args[@]+"${ray_args[@]}"} "$@"
