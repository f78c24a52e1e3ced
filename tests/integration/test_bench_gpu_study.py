"""The GPU study benchmark, run end to end on the CPU with its smoke grid: the script a GPU
machine runs must not rot while no GPU is at hand. Its parts that a GPU only makes faster
are checked exactly here: the recorded noise draw rebuilt for all sequences at once, the
statistics of one batch of every sequence against the numpy path, the pinned wheels that
are installed without pip."""

import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bench import gpu_bounds as G
from bench.gpu_bundle import locked_versions, make_bundle, unpack_wheels, wheel_name_version
from bench.gpu_spectrum import BundleCorpus
from rnngen import schemas
from rnngen.corpus import split_arrays
from rnngen.model_stats import model_stats
from rnngen.specs import RunSpec
from rnngen.train import embedding_tensor, seed_streams, split_batches
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SCRIPT = str(ROOT / "bench" / "bench_gpu_study.py")
# One BLAS and torch thread: on two shared cores, threads that wait for each other cost
# ~50x on the small matrices of the smoke grid.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PHASES = ("spectrum", "train", "bounds", "measures", "certify")
FILES = ("spectrum", "runs", "bounds", "measures", "certificates")


@pytest.fixture(scope="module")
def bundle(real_data, tmp_path_factory):
    """A bundle of 800 reviews per split (the full one is made the same way)."""
    folder = tmp_path_factory.mktemp("bundle")
    info = make_bundle(folder, real_data, wheels=False, reviews=800)
    assert info["reviews"] == 1600 and info["subset"]
    return folder


def _run(*args, cwd, rc=0):
    done = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--smoke", *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == rc, done.stdout + done.stderr
    return done


def _number_after(line: str, key: str) -> float:
    return float(line.split(key, 1)[1].split()[0].rstrip(",;)"))


def test_every_phase_runs_on_a_tiny_grid_and_agrees_with_its_reference(bundle, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    out = _run("--bundle", str(bundle), "--results", str(first), cwd=tmp_path).stdout
    lines = {line.split(":", 1)[0]: line for line in out.splitlines() if " L=" in line}
    for L in (5, 10):
        for phase in PHASES:
            line = lines[f"{phase} L={L}"]
            assert "FAILED" not in line, out
        # the torch path against the CPU path, the batched statistics against numpy, the
        # device measures against the measures stage's recipe, the certificate's identity
        assert _number_after(lines[f"spectrum L={L}"], "λ_min rel. diff") < 1e-9
        assert _number_after(lines[f"bounds L={L}"], "rel. diff") < 1e-12
        assert _number_after(lines[f"measures L={L}"], "rel. diff") < 1e-6
        assert " 0 statuses differ" in lines[f"measures L={L}"]
        assert _number_after(lines[f"certify L={L}"], "max |Δ|") == 0.0
        assert "4 cells as one pack" in lines[f"train L={L}"]
        assert "all in one batch per step" in lines[f"bounds L={L}"]
    assert "whole run:" in out and "FAILED" not in out

    # each phase's table, its columns described; the models; one record per phase and L
    for name in FILES:
        table = pq.read_table(first / f"{name}.parquet")
        assert set(table.column("L").to_pylist()) == {5, 10}
        assert all(schemas.description(table.schema, c)[0] for c in table.column_names)
    assert pq.read_table(first / "runs.parquet").num_rows == 8
    assert pq.read_table(first / "bounds.parquet").num_rows == 8 * 21
    record = json.loads((first / "bench.json").read_text())
    # per L every phase but certify, which comes last (its L are --certify-L, default --L)
    order = [(p, L, "ok") for L in (5, 10) for p in PHASES[:-1]]
    assert [(r["phase"], r["L"], r["status"]) for r in record["phases"]] == order + [
        ("certify", 5, "ok"),
        ("certify", 10, "ok"),
    ]
    assert len(np.load(first / "models.npz").files) == 8 * 5

    # any part alone: the bounds of L = 10 from the first run's models and spectrum, in
    # chunks of 64 sequences, equal the first run's; L = 7 has no models, and says so
    done = _run(
        "--bundle", str(bundle), "--results", str(second), "--inputs", str(first),
        "--stages", "bounds", "--L", "10,7", "--bounds-chunk", "64", "--reference", "none",
        cwd=tmp_path, rc=1,
    )  # fmt: skip
    assert "bounds L=10: 4 models" in done.stdout and "64 per update" in done.stdout
    assert "bounds L=7: FAILED: MissingInput: no trained models of L=7" in done.stdout
    assert "Traceback" not in done.stderr  # a predictable mistake is one line
    old = {
        (r["run_id"], r["alpha"]): r for r in pq.read_table(first / "bounds.parquet").to_pylist()
    }
    new = pq.read_table(second / "bounds.parquet").to_pylist()
    assert len(new) == 4 * 21
    for row in new:
        ref = old[row["run_id"], row["alpha"]]
        for column in ("bound_thm3", "bound_thm2", "r_fs", "r_fr", "frob_X", "norm1_XT"):
            assert math.isclose(row[column], ref[column], rel_tol=1e-12), column


def test_all_sequences_in_one_batch_give_the_numpy_statistics_of_the_recorded_draw(bundle):
    corpus = BundleCorpus.load(bundle)
    L, d = 6, corpus.embeddings.shape[1]
    train = split_arrays(corpus.table, "train", L, corpus.pad_id)
    spec = RunSpec(L=L, sigma=0.3, seed=3, data_key=corpus.data_key, hidden=8, eval_batch_size=96)
    # the noise, drawn for all sequences at once, is split_batches' draw bit for bit
    eps = G.recorded_noise(spec, len(train), d)
    _, x, y = G.device_inputs(train, corpus.embeddings, torch.device("cpu"))
    batches = split_batches(
        train, embedding_tensor(corpus.embeddings), spec.eval_batch_size, spec.sigma,
        seed_streams(spec).eval_noise,
    )  # fmt: skip
    assert torch.equal(torch.cat([xb for xb, _ in batches]), x + spec.sigma * eps)

    rng = np.random.default_rng(0)
    weights = {
        "U": 0.1 * rng.standard_normal((8, d)),
        "W": 0.9 * np.eye(8) + 0.01 * rng.standard_normal((8, 8)),
        "V": rng.standard_normal((2, 8)),
    }
    ref_clean, ref_noisy = model_stats(weights, spec, train, corpus.embeddings)
    ref = G.bound_rows(spec, ref_clean, ref_noisy, 1e-3, 0.1)
    for rows in (len(train), 250):  # one batch of all; chunks, as memory may ask
        pair = G.batched_stats(weights, x, y, torch.device("cpu"), rows, (spec.sigma, eps))
        assert G.rows_rel_diff(ref, G.bound_rows(spec, *pair, 1e-3, 0.1)) < 1e-12
        clean, none = G.batched_stats(weights, x, y, torch.device("cpu"), rows)
        assert none is None and math.isclose(clean.r_fr, ref_clean.r_fr, rel_tol=1e-12)
    assert sum(r["alpha_best"] for r in ref) == 1


def test_the_bundle_wheels_are_the_locked_versions_and_install_without_pip(tmp_path):
    pins = locked_versions()
    lock = (ROOT / "requirements.lock").read_text()
    assert (
        f"pydantic=={pins['pydantic']}" in lock
        and f"pydantic_core=={pins['pydantic-core']}" in lock
    )
    # a wheel is a zip laid out for sys.path; its .data/purelib part goes to the top
    wheel = tmp_path / "fake_pkg-1.2.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake_pkg/__init__.py", "VALUE = 7\n")
        archive.writestr("fake_pkg-1.2.3.data/purelib/fake_extra.py", "EXTRA = 8\n")
        archive.writestr("fake_pkg-1.2.3.dist-info/METADATA", "Name: fake-pkg\nVersion: 1.2.3\n")
    assert wheel_name_version(wheel) == ("fake-pkg", "1.2.3")
    site = unpack_wheels([wheel], tmp_path / "site")
    code = "import fake_pkg, fake_extra; print(fake_pkg.VALUE + fake_extra.EXTRA)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**ENV, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "15", done.stderr
