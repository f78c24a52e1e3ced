"""The GPU study benchmark, run end to end on the CPU with its smoke grid: the script a GPU
machine runs must not rot while no GPU is at hand."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_the_gpu_study_script_runs_every_stage_on_a_tiny_grid(real_data, tmp_path):
    bundle = tmp_path / "bundle"
    make = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_gpu_study",
            "--make-bundle",
            str(bundle),
            "--out",
            str(real_data),
            "--no-wheels",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert make.returncode == 0, make.stderr
    assert (bundle / "corpus.parquet").stat().st_size < 40 * 2**20  # it must travel (64 MiB)
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_gpu_study.py"),
            "--bundle",
            str(bundle),
            "--device",
            "cpu",
            "--smoke",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for line in (
        "spectrum L=20:",
        "training L=20: 4 cells as one pack",
        "bounds L=20: 4 models",
        "whole study:",
    ):
        assert line in run.stdout, run.stdout
    # the torch path's λ_min equals the CPU path's (the rel. diff printed per L)
    diffs = [
        float(part.split("rel. diff ")[1].rstrip(")"))
        for part in run.stdout.splitlines()
        if "rel. diff" in part
    ]
    assert diffs and max(diffs) < 1e-9
