"""The command line's start-up: what `status`, `--help` and a refused command load (no
Prefect, no Ray, no torch), the help showing the defaults in force, the `rnngen up` state
and how later commands attach to it, and Ray's token line said once in rnngen's words."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import run_cli_source
from tests.conftest import ROOT

HEAVY = ("prefect", "ray", "torch", "scipy", "matplotlib")
COMMITTED = ROOT / "data" / "paper"

# `rnngen ARGS` in a fresh interpreter; at exit, which heavy packages were imported.
RUN_CLI = run_cli_source(HEAVY)


def rnngen(*args: str, cwd: Path = ROOT, env: dict | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200"} | (env or {}),
        cwd=cwd,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_status_reads_files_only(tmp_path):
    code, output = rnngen("status", "--out", str(COMMITTED), env={"RNNGEN_HOME": str(tmp_path)})
    assert code == 0, output
    assert "75 cells on disk, 75 done" in output and "imported: []" in output


def test_help_loads_no_prefect_ray_or_torch():
    code, output = rnngen("--help")
    assert code == 0, output
    for command in ("study", "train", "status", "up", "down"):
        assert command in output
    assert "imported: []" in output


def test_train_on_an_empty_folder_names_embed_at_once(tmp_path):
    code, output = rnngen("train", "--out", str(tmp_path / "empty"), cwd=tmp_path)
    assert code == 2, output
    assert "no tokenized corpus" in output and "rnngen embed --out" in output
    assert "imported: []" in output  # decided before Prefect, Ray or torch were loaded


def test_the_help_shows_the_defaults_in_force():
    from typer.testing import CliRunner

    from rnngen_flows.cli import app

    shown = " ".join(
        CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output.split()
    )
    assert "default: the profile's (quick: 4; RunSpec: 10)" in shown  # --epochs
    assert "(quick: 100 200 300)" in shown and "(quick: 0 0.2 0.4)" in shown
    assert "FILE.toml" in shown
    spectrum = " ".join(
        CliRunner().invoke(app, ["spectrum", "--help"], env={"COLUMNS": "300"}).output.split()
    )
    assert "at least 50·L for every L" in spectrum  # the rule is named where it applies


def test_the_status_reader_agrees_with_the_store_and_the_analysis():
    """`status` reads runs with pyarrow alone; what it reads is what the store reads, and its
    experiment order and labels are rnngen.analysis'."""
    from rnngen.analysis import experiment_label, experiments
    from rnngen.layout import Layout
    from rnngen.schemas import RUNS, to_table
    from rnngen_flows import status
    from rnngen_tasks.store import Store

    for folder in ("paper", "constrained"):
        layout = Layout.at(ROOT / "data" / folder)
        rows, stored = status.run_rows(layout), Store(layout.out).rows("runs")
        assert [r["run_id"] for r in rows] == [r["run_id"] for r in stored]
        table = to_table(stored, RUNS)
        assert status.experiments(rows) == experiments(table)
        for eid in experiments(table):
            first = next(r for r in rows if r["experiment_id"] == eid)
            assert status.experiment_label(first) == experiment_label(table, eid)


@pytest.fixture(scope="module")
def finished_copy(tmp_path_factory):
    """A copy of the committed constrained-099 folder (results and models copied, so that
    nothing can write into the committed files) on this checkout's corpus (`make data`)."""
    import shutil

    corpus = ROOT / "data" / "interim"
    if not (corpus / "corpus.json").is_file():
        pytest.skip("no corpus under data/interim: run `make data`")
    out = tmp_path_factory.mktemp("finished") / "constrained-099"
    for part in ("results", "models"):
        shutil.copytree(ROOT / "data" / "constrained-099" / part, out / part)
    (out / "interim").symlink_to(corpus)
    return out


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["train", "--profile", "constrained-099"], "all 15 cells already finished"),
        (["spectrum", "--L", "100"], "λ_min ="),
        (["bounds"], "15 already done"),
        (["measures", "--flatness-reviews", "500", "--n-resamples", "1000"], "pacbayes_init: Ψ"),
    ],
    ids=["train", "spectrum", "bounds", "measures"],
)
def test_a_stage_with_nothing_to_do_loads_no_prefect_ray_or_torch(finished_copy, args, said):
    """The pre-start check decides from the files alone (bench/bench_startup.py times it)."""
    code, output = rnngen(*args, "--out", str(finished_copy))
    assert code == 0, output
    assert said in output and "imported: []" in output, output


def test_the_figures_stamp_is_read_as_the_figures_stage_writes_it():
    from rnngen.layout import Layout
    from rnngen_flows.precheck import figures_key
    from rnngen_tasks.figures import _inputs_key

    for folder in ("paper", "sigma-wide"):
        layout = Layout.at(ROOT / "data" / folder)
        assert figures_key(layout) == _inputs_key(layout)


# ------------------------------------------------------------------ rnngen up: the state


def _session() -> subprocess.Popen:
    """A process leading its own session, standing in for a service `up` started."""
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


@pytest.fixture
def up_state(tmp_path, monkeypatch):
    from rnngen_flows import services

    monkeypatch.setenv("RNNGEN_HOME", str(tmp_path))
    procs = [_session(), _session()]
    for name, secret in (("prefect-auth", "rnngen:secret"), ("ray-auth-token", "f" * 64)):
        (tmp_path / name).write_text(secret)
    state = services.Services(
        prefect_url="http://127.0.0.1:4999/api",
        prefect_pid=procs[0].pid,
        prefect_auth_file=str(tmp_path / "prefect-auth"),
        ray_address="127.0.0.1:6999",
        ray_pid=procs[1].pid,
        ray_token_file=str(tmp_path / "ray-auth-token"),
        folder=str(tmp_path),
    )
    (tmp_path / services.STATE_NAME).write_text(json.dumps(state.__dict__))
    yield state, procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_command_attaches_to_the_services_of_up(up_state):
    from rnngen_flows import services

    state, _ = up_state
    environ = {"RAY_AUTH_TOKEN": "another cluster's"}
    assert services.attach(environ) == state
    assert environ["PREFECT_API_URL"] == state.prefect_url
    assert environ["PREFECT_API_AUTH_STRING"] == "rnngen:secret"
    assert environ["RAY_ADDRESS"] == state.ray_address and environ["RAY_AUTH_MODE"] == "token"
    assert environ["RAY_AUTH_TOKEN_PATH"] == state.ray_token_file
    assert "RAY_AUTH_TOKEN" not in environ


def test_what_the_user_names_wins_over_up(up_state):
    from rnngen_flows import services

    environ = {"PREFECT_API_URL": "http://elsewhere:4200/api", "RAY_ADDRESS": "elsewhere:6379"}
    assert services.attach(environ) is None
    assert environ == {
        "PREFECT_API_URL": "http://elsewhere:4200/api",
        "RAY_ADDRESS": "elsewhere:6379",
    }


def test_down_stops_the_two_sessions_and_forgets_them(up_state, tmp_path):
    from rnngen_flows import services

    state, procs = up_state
    assert "stopped Prefect server and Ray head" in services.down()
    deadline = time.monotonic() + 30
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(p.poll() is not None for p in procs)
    assert not (tmp_path / services.STATE_NAME).exists()
    assert services.attach({}) is None  # nothing to attach to any more
    assert "nothing to stop" in services.down()


def test_a_dead_service_is_not_attached_to(up_state):
    from rnngen_flows import services

    _, procs = up_state
    os.killpg(procs[1].pid, signal.SIGKILL)
    procs[1].wait()
    assert services.running() is None and services.attach({}) is None


# ------------------------------------------------------------- Ray's token warning, once


def test_rays_token_warning_becomes_one_line_of_ours(capsys, caplog):
    from rnngen_tasks import ray_pool

    ray_pool._said_auth.clear()
    ray_pool._say_token_auth_once(local=False)
    logger = logging.getLogger(ray_pool._AUTH_LOGGER)
    warning = (
        "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to "
        "opt out. For more information, see https://docs.ray.io/en/latest/ray-security/"
    )
    with caplog.at_level(logging.WARNING, logger=ray_pool._AUTH_LOGGER):
        for _ in range(3):
            logger.warning(warning)
        logger.warning("something else")  # other warnings pass
    assert capsys.readouterr().out.count("Ray: token authentication on") == 1
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_every_stage_setting_has_an_option_and_a_bad_value_is_refused_before_start(tmp_path):
    from rnngen.settings import BoundsSettings, MeasuresSettings

    for command, settings in (("bounds", BoundsSettings), ("measures", MeasuresSettings)):
        code, output = rnngen(command, "--help")
        assert code == 0, output
        for name in set(settings.model_fields) - {"alphas", "formula_version", "measures_version"}:
            assert "--" + name.replace("_", "-") in output, (command, name)
    code, output = rnngen("measures", "--out", str(COMMITTED), "--flatness-steps", "0")
    assert code == 2 and "--flatness-steps" in output and "imported: []" in output, output


def test_measures_without_options_keeps_the_settings_the_folder_was_computed_with(
    finished_copy,
):
    """The committed measures used flatness on 500 reviews, not the built-in 2000: a bare
    rerun checks them instead of recomputing every model under other settings."""
    code, output = rnngen("measures", "--out", str(finished_copy))
    assert code == 0, output
    assert "keeping flatness_reviews 500" in output, output
    assert "pacbayes_init: Ψ" in output and "imported: []" in output, output


def test_the_kept_measures_settings_come_from_the_files_else_the_profile(tmp_path):
    import pyarrow as pa

    from rnngen.io import write_parquet
    from rnngen.layout import Layout
    from rnngen.profiles import PROFILES
    from rnngen_tasks.measures import recorded_settings

    assert recorded_settings(str(tmp_path)) == ({}, "")  # nothing there: built-in defaults
    layout = Layout.at(tmp_path)
    layout.runs.parent.mkdir(parents=True)
    write_parquet(pa.table({"run_id": ["a"]}), layout.runs, {"profile": "zoo"})
    kept, source = recorded_settings(str(tmp_path))
    assert (
        kept
        == PROFILES["zoo"].stages["measures"]
        == {
            "flatness_reviews": 500,
            "n_resamples": 1000,
        }
    )
    assert "zoo" in source
    settings = {"delta": 0.01, "flatness_reviews": 300, "flatness_steps": 6, "flatness_draws": 2}
    write_parquet(pa.table({"run_id": ["a"]}), layout.measures, {"settings": settings})
    write_parquet(pa.table({"measure": ["m"]}), layout.ranking, {"n_resamples": 40})
    kept, source = recorded_settings(str(tmp_path))
    assert kept == settings | {"n_resamples": 40} and source == str(layout.measures)
    write_parquet(pa.table({"run_id": ["a"]}), layout.runs, {"profile": "my-own.toml"})
    layout.measures.unlink()
    assert recorded_settings(str(tmp_path)) == ({}, "")  # not a built-in profile


def test_a_setting_given_on_the_command_line_makes_finished_rows_stale(finished_copy):
    from rnngen.settings import MeasuresSettings
    from rnngen_flows.precheck import measures_done

    same = MeasuresSettings(flatness_reviews=500)
    assert measures_done(finished_copy, same, 1000) is not None
    other = MeasuresSettings(flatness_reviews=500, flatness_steps=6)
    assert measures_done(finished_copy, other, 1000) is None  # to compute again
