"""`rnngen` against a real Ray head started by infra/ray-head-start.sh: submitted as a Ray job
(working_dir upload, the head's environment) and driven from here with --ray-address."""

import re

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT
from tests.servers.conftest import BIN, INFRA, run

pytestmark = pytest.mark.servers


def _spectrum_rows(out):
    rows = pq.read_table(out / "results" / "spectrum.parquet").to_pylist()
    return {row["L"]: row for row in rows}


def test_ray_job_submit_runs_rnngen_on_the_head(ray_head, servers_env, corpus_out):
    job = run(
        [
            BIN / "ray",
            "job",
            "submit",
            "--address",
            ray_head.dashboard,
            "--working-dir",
            ROOT,
            "--runtime-env",
            INFRA / "ray-runtime-env.yaml",
            "--",
            "rnngen",
            "spectrum",
            "--L",
            "3",
            "--n-train",
            "600",
            "--out",
            corpus_out,
        ],
        servers_env,
        timeout=400,
    )
    assert job.returncode == 0, job.stdout[-4000:]
    assert re.search(r"Job '\S+' succeeded", job.stdout)
    # The driver attached to this head (the job sets RAY_ADDRESS), not to a Ray of its own.
    assert "Connecting to existing Ray cluster" in job.stdout

    row = _spectrum_rows(corpus_out)[3]
    assert row["n"] == 600 and row["dim"] == 150 and row["status"] == "certified"


def test_rnngen_with_ray_address_uses_the_head(ray_head, servers_env, corpus_out):
    done = run(
        [
            BIN / "rnngen",
            "spectrum",
            "--L",
            "4",
            "--n-train",
            "800",
            "--out",
            corpus_out,
            "--ray-address",
            ray_head.address,
        ],
        servers_env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Connecting to existing Ray cluster" in done.stdout
    assert "Started a local Ray instance" not in done.stdout
    row = _spectrum_rows(corpus_out)[4]
    assert row["n"] == 800 and row["dim"] == 200 and row["status"] == "certified"
