#!/usr/bin/env bash
# Stop the Ray head that infra/ray-head-start.sh started, and only it: `ray start --block`
# shuts its node down on SIGTERM, then whatever is left of its session is signalled.
# (`ray stop` is not used: it stops every Ray process of the user on this machine, other
# checkouts' and other people's included. On a node of its own, `ray stop` is fine.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_session ray-head 30
rm -f "$RUN_DIR/ray.env"
