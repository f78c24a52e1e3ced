"""The `rnngen` command line, run as a user would, in subprocesses."""

import time

import pyarrow.parquet as pq
import pytest

from rnngen.layout import Layout
from rnngen_flows.cli import expand_list_options
from tests.cli import rnngen as run_rnngen

pytestmark = pytest.mark.e2e


def rnngen(*args, env_extra=None, timeout=600):
    return run_rnngen(*args, env=env_extra, timeout=timeout)


def test_every_stage_through_the_cli(corpus_out):
    out = corpus_out
    tiny = [
        "--L",
        4,
        "--sigma",
        0,
        0.3,
        "--seeds",
        0,
        "--n-train",
        300,  # the README's spelling
        "--n-test",
        200,
        "--epochs",
        1,
        "--hidden",
        6,
    ]
    steps = [
        ("spectrum", "--L", 4, "--n-train", 1000),
        ("train", *tiny),
        ("bounds",),
        ("figures",),
        ("report",),
    ]
    for step in steps:
        proc = rnngen(*step, "--out", out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "wrote" in proc.stdout
    layout = Layout.at(out)
    assert pq.read_table(layout.runs).num_rows == 2
    assert pq.read_table(layout.bounds).num_rows > 2
    # L = 4 is none of the paper's lengths: one gen_error figure instead of Figures 1 and 2
    for name in ("gen_error", "clean_gap", "history", "spectrum", "bound_terms", "bound_vs_gap"):
        for ext in ("png", "pdf"):
            assert (layout.figures / f"{name}.{ext}").stat().st_size > 1000
    report = (out / "REPORT.md").read_text()
    assert "## Did it reproduce?" in report and "](figures/gen_error.png)" in report
    status = rnngen("status", "--out", out)
    assert status.returncode == 0
    assert "2 cells on disk, 2 done" in status.stdout and "done: 2" in status.stdout
    assert "spectrum L=4" in status.stdout and "certified" in status.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--sigma", "-1"), "'sigma' must be the input-noise standard deviation"),
        (("train", "--L", "0"), "'L' must be a positive sequence length"),
        (("train", "--seeds", "0", "--seeds", "0"), "lists the value 0 twice"),
        (("train", "--optimizer", "adamw"), "optimizer"),
        (("study", "--profile", "nope"), "Invalid value for '--profile'"),
        (("train", "--device", "gpu"), "Invalid value for '--device'"),
        (("bounds", "--delta", "2"), "--delta must be a number in (0, 1)"),
        (("spectrum", "--L", "-5"), "--L must be a positive integer"),
    ],
)
def test_bad_parameters_are_refused_in_one_paragraph(corpus_out, args, message):
    proc = rnngen(*args, "--out", corpus_out, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (corpus_out / "results").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--device", "cuda"), "--device cuda: the Ray cluster has no GPU"),
        (("--L", "100000"), "but no node of the cluster has that"),
    ],
)
def test_a_grid_the_cluster_cannot_run_fails_in_seconds(corpus_out, args, message):
    started = time.perf_counter()
    proc = rnngen("train", *args, "--out", corpus_out, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - started < 60  # Python, Ray's start and the check; no waiting
    assert not (corpus_out / "results").exists() and not (corpus_out / "models").exists()


def test_missing_data_stage_names_the_command(tmp_path):
    proc = rnngen("train", "--out", tmp_path, timeout=120)
    assert proc.returncode != 0 and "rnngen embed" in proc.stderr


def test_list_options_take_several_values_after_one_flag():
    assert expand_list_options(["spectrum", "--L", "100", "200", "300", "--check-dense"]) == [
        "spectrum",
        "--L",
        "100",
        "--L",
        "200",
        "--L",
        "300",
        "--check-dense",
    ]
    assert expand_list_options(["train", "--sigma", "-1", "0.3", "--seeds", "0", "--L", "4"]) == [
        "train",
        "--sigma",
        "-1",
        "--sigma",
        "0.3",
        "--seeds",
        "0",
        "--L",
        "4",
    ]
    # Other options keep their single value; a repeated flag stays as it was.
    argv = ["train", "--n-train", "300", "--L", "4", "--L", "5", "--out", "d"]
    assert expand_list_options(argv) == argv


def test_train_options_are_generated_from_the_run_spec():
    import typer.main

    from rnngen.specs import RunSpec
    from rnngen_flows.cli import app

    command = typer.main.get_command(app).commands["train"]
    options = {p.name: p for p in command.params}
    for name, field in RunSpec.model_fields.items():
        if name in ("L", "sigma", "seed", "data_key"):
            continue
        assert name in options, name
        if name != "device":
            assert field.description.removeprefix("a ").removeprefix("an ") in options[name].help
    from typer.testing import CliRunner

    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "adam|sgd|rmsprop" in shown and "auto|cpu|cuda" in shown
