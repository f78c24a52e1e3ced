#!/usr/bin/env bash
# Stop the Prefect server that infra/prefect-server-start.sh started (its session only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_session prefect-server 20
rm -f "$RUN_DIR/prefect.env"
