"""rnngen.gram_torch on the CPU: the torch Gram and factor against the numpy pipeline's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import scipy.linalg
import torch

from rnngen.errors import ParameterError
from rnngen.gram_torch import DeviceSolverError, TorchMomentAccumulator, factorize_torch
from rnngen.lanczos import SingularMatrixError
from rnngen.moments import MomentAccumulator
from rnngen.shard import ShardData
from rnngen.spectrum import certified_spectrum

VOCAB, D, L = 30, 5, 7
DIM = L * D


def staircase(n: int = 53, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """Length-sorted float32 tails of pre-padded random reviews, as a shard makes them."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((VOCAB + 1, D)).astype(np.float32)
    table[-1] = 0.0  # the padding row
    tokens = pa.array(
        [list(rng.integers(0, VOCAB, size=k)) for k in rng.integers(0, 12, n)],
        type=pa.large_list(pa.int32()),
    )
    return ShardData(tokens, table, block_rows=6).tails(L)


def fill(acc, tails: list[tuple[np.ndarray, int]], panel: int = 8):
    for tail, start in tails:
        if start < DIM:
            acc.add_trailing(tail, start, panel=panel)
    return acc


def relerr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def assert_same_stats(a, b) -> None:
    assert a.n == b.n and a.B == b.B
    assert a.frobenius == pytest.approx(b.frobenius, rel=1e-12)
    assert a.norm1_T == pytest.approx(b.norm1_T, rel=1e-12)
    np.testing.assert_allclose(a.stats().abs_colsum, b.stats().abs_colsum, rtol=1e-12)


@pytest.mark.parametrize(("block_rows", "panel"), [(1, 3), (4, 8), (64, 512)])
def test_staircase_gram_and_statistics_equal_numpy(block_rows: int, panel: int) -> None:
    tails = staircase()
    assert len({start for _, start in tails}) > 3  # the staircase has many steps
    ref = fill(MomentAccumulator(DIM, block_rows=block_rows), tails, panel)
    acc = fill(TorchMomentAccumulator(DIM, "cpu", block_rows=block_rows), tails, panel)
    assert_same_stats(acc, ref)
    sigma = acc.second_moment(symmetrize=True)
    assert sigma.dtype == torch.float64 and torch.equal(sigma, sigma.mT)
    assert relerr(sigma.numpy(), ref.second_moment(symmetrize=True)) < 1e-12


def test_unsymmetrized_second_moment_holds_sigma_in_its_lower_triangle() -> None:
    tails = staircase()
    ref = fill(MomentAccumulator(DIM), tails).second_moment(symmetrize=True)
    lower = fill(TorchMomentAccumulator(DIM, "cpu"), tails).second_moment(symmetrize=False)
    assert relerr(np.tril(lower.numpy()), np.tril(ref)) < 1e-12


def test_shard_data_accumulates_on_a_torch_device() -> None:
    rng = np.random.default_rng(3)
    table = rng.standard_normal((VOCAB + 1, D)).astype(np.float32)
    table[-1] = 0.0
    lengths = [0, 0, 3, 9, 11, 2]  # empty reviews add only their count
    tokens = pa.array([list(rng.integers(0, VOCAB, k)) for k in lengths], pa.large_list(pa.int32()))
    ref = ShardData(tokens, table, block_rows=2).accumulate(L)
    acc = ShardData(tokens, table, block_rows=2, device="cpu").accumulate(L)
    assert isinstance(acc, TorchMomentAccumulator) and isinstance(ref, MomentAccumulator)
    assert_same_stats(acc, ref)
    assert relerr(acc.second_moment().numpy(), ref.second_moment()) < 1e-12


@pytest.mark.parametrize("head_kind", ["numpy", "torch"])
def test_mixed_slab_reduction_equals_one_accumulator(head_kind: str) -> None:
    tails = staircase(n=80, seed=1)
    half = len(tails) // 2
    whole = fill(MomentAccumulator(DIM), tails)
    numpy_head = head_kind == "numpy"
    head = fill(
        MomentAccumulator(DIM) if numpy_head else TorchMomentAccumulator(DIM, "cpu"), tails[:half]
    )
    other = fill(
        TorchMomentAccumulator(DIM, "cpu") if numpy_head else MomentAccumulator(DIM), tails[half:]
    )
    head.add_stats(other.stats())
    for c0 in range(0, DIM, 13):  # 13 does not divide 35
        slab = other.drain_upper_columns(c0, min(c0 + 13, DIM))
        assert slab.dtype == np.float64 and slab.flags.f_contiguous
        head.add_upper_columns(c0, slab)
    assert_same_stats(head, whole)
    sigma = head.second_moment()
    sigma = sigma if isinstance(sigma, np.ndarray) else sigma.numpy()
    assert relerr(sigma, whole.second_moment()) < 1e-12


def test_drained_slabs_match_numpy_and_free_the_buffer() -> None:
    tails = staircase()
    ref, acc = fill(MomentAccumulator(DIM), tails), fill(TorchMomentAccumulator(DIM, "cpu"), tails)
    for c0, c1 in [(0, 4), (4, 20), (20, DIM)]:
        mine, theirs = acc.drain_upper_columns(c0, c1), ref.drain_upper_columns(c0, c1)
        assert mine.shape == theirs.shape == (c1, c1 - c0)
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)
        assert np.all(np.tril(mine[c0:], -1) == 0.0)
    assert acc._gram.numel() == 0  # released once the last column is drained
    with pytest.raises(RuntimeError, match="drained"):
        acc.add_trailing(*tails[0])


def test_draining_on_the_cpu_returns_memory_to_the_os() -> None:
    # In a fresh process: the resident size of this one depends on what earlier tests left.
    code = """
import numpy as np
from rnngen.gram_torch import TorchMomentAccumulator

def rss():
    with open("/proc/self/status") as fh:
        return 1024 * next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:"))

dim = 2048  # a 32 MiB Gram
acc = TorchMomentAccumulator(dim, "cpu")
acc.add_trailing(np.ones((4, dim)), 0)  # touches the pages of the triangle (16 MiB)
before = rss()
for c0 in range(0, dim - 256, 256):  # all but the last slab: pages, not the tensor
    acc.drain_upper_columns(c0, c0 + 256)
print(before - rss())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) > 0.6 * 2048 * 2048 * 8 / 2


def test_misuse_and_bad_data_are_refused() -> None:
    acc = TorchMomentAccumulator(4, "cpu")
    with pytest.raises(ParameterError, match=r"tail of shape \(rows, 4 - start\)"):
        acc.add_trailing(np.ones((2, 4)), 1)
    with pytest.raises(ParameterError, match="no samples"):
        acc.second_moment()
    with pytest.raises(ParameterError, match="upper columns of shape"):
        acc.add_upper_columns(1, np.zeros((2, 4)))
    acc.add_trailing(np.ones((2, 4)), 0)
    with pytest.raises(ParameterError, match="in order"):
        acc.drain_upper_columns(1, 2)
    bad = np.ones((3, 2), dtype=np.float32)
    bad[1, 0] = np.nan
    acc.add_trailing(bad, 2)  # reported when the data are next read
    with pytest.raises(ParameterError, match="NaN"):
        acc.stats()
    with pytest.raises(ParameterError, match="NaN"):
        acc.second_moment()


def spd(dim: int = 120, n: int = 700, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Samples X with a large offset and spread scales, and their second moment XᵀX/n."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)) * np.geomspace(1e-2, 10, dim) + 3.0
    return X, X.T @ X / n


def test_factorization_solves_like_scipy_in_place() -> None:
    X, dense = spd()
    sigma = torch.from_numpy(np.tril(dense) + np.triu(np.full_like(dense, 7.0), 1))  # lower read
    address = sigma.data_ptr()
    fac = factorize_torch(sigma, X.shape[0])
    assert fac.trace == pytest.approx(np.trace(dense), rel=1e-12)
    assert sigma.data_ptr() == address  # the factor took Σ's memory
    np.testing.assert_allclose(sigma.numpy() @ sigma.numpy().T, dense, rtol=1e-12, atol=1e-12)
    V = np.random.default_rng(1).standard_normal((dense.shape[0], 4))
    ref = scipy.linalg.cho_solve(scipy.linalg.cho_factor(dense), V)
    assert relerr(fac.solve(V), ref) < 1e-10
    assert relerr(fac.solve(V[:, 0]), ref[:, 0]) < 1e-10 and fac.solve(V[:, 0]).shape == (120,)


def test_torch_factor_in_certified_spectrum_matches_eigvalsh() -> None:
    X, dense = spd(dim=150, n=900)
    fac = factorize_torch(torch.from_numpy(dense.copy()), X.shape[0])
    res = certified_spectrum(fac, lambda V: X.T @ (X @ V) / X.shape[0], X.shape[0], 150)
    assert res.converged, res.message
    np.testing.assert_allclose(res.smallest, np.linalg.eigvalsh(dense)[:20], rtol=1e-6)


def test_not_positive_definite_is_a_singular_matrix_error() -> None:
    indefinite = torch.diag(torch.tensor([1.0, 2.0, -1.0, 3.0], dtype=torch.float64))
    with pytest.raises(SingularMatrixError, match="minor of order 3.*n=10 samples, D=4"):
        factorize_torch(indefinite, 10)
    nearly = torch.diag(torch.tensor([1.0, 1e-30, 1.0], dtype=torch.float64))
    with pytest.raises(SingularMatrixError, match="pivot of 1e-30"):
        factorize_torch(nearly, 10)
    with pytest.raises(SingularMatrixError, match="n=2 training sequences < D=3"):
        factorize_torch(torch.eye(3, dtype=torch.float64), 2)
    for copied in (torch.eye(4, dtype=torch.float64)[:3, :3], torch.eye(3)):
        with pytest.raises(ParameterError, match="contiguous .* square float64"):
            factorize_torch(copied, 10)


def test_device_library_failures_are_reported_not_crashes(monkeypatch) -> None:
    _, dense = spd(dim=20, n=100)

    def fail(*args, **kwargs):
        raise RuntimeError("cusolver error: CUSOLVER_STATUS_EXECUTION_FAILED")

    fac = factorize_torch(torch.from_numpy(dense.copy()), 100)
    monkeypatch.setattr(torch.linalg, "solve_triangular", fail)
    with pytest.raises(DeviceSolverError, match="triangular solve.*EXECUTION_FAILED"):
        fac.solve(np.ones(20))
    monkeypatch.setattr(torch.linalg, "cholesky_ex", fail)
    with pytest.raises(SingularMatrixError, match="failed on cpu in the device library.*EXEC"):
        factorize_torch(torch.from_numpy(dense.copy()), 100)
