"""Unit tests of rnngen.moments against dense numpy references (X rows = samples)."""

from __future__ import annotations

import numpy as np
import pytest

from rnngen.errors import ParameterError
from rnngen.moments import DataStats, MomentAccumulator


def data(n: int = 1000, dim: int = 37, seed: int = 0, dtype: type = np.float64) -> np.ndarray:
    """Samples with a large common offset, like GloVe's mean word vector."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) * np.geomspace(1e-3, 3, dim) + 0.7).astype(dtype)


def reference(X: np.ndarray) -> np.ndarray:
    X64 = X.astype(np.float64)
    return X64.T @ X64 / X.shape[0]


def relerr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def accumulate(X: np.ndarray, splits: list[int], block_rows: int) -> MomentAccumulator:
    acc = MomentAccumulator(X.shape[1], block_rows=block_rows)
    for r0, r1 in zip(splits[:-1], splits[1:], strict=True):
        acc.add(X[r0:r1])
    return acc


@pytest.mark.parametrize("block_rows", [1, 7, 128, 4096])
def test_matches_dense_gram_with_uneven_blocks(block_rows: int) -> None:
    X = data()
    acc = accumulate(X, [0, 300, 301, 777, 1000], block_rows)
    S = acc.second_moment()
    assert acc.n == 1000 and relerr(S, reference(X)) < 1e-12
    assert np.array_equal(S, S.T)  # symmetrized exactly, not approximately
    assert S.flags.f_contiguous  # ready for an in-place LAPACK factorization


def test_float32_input_is_accumulated_in_float64() -> None:
    X32 = data(dtype=np.float32)
    S = accumulate(X32, [0, 500, 1000], 64).second_moment()
    assert S.dtype == np.float64 and relerr(S, reference(X32)) < 1e-12


def test_fortran_ordered_input() -> None:
    X = np.asfortranarray(data(n=200, dim=11))
    S = accumulate(X, [0, 200], 50).second_moment()
    assert relerr(S, reference(X)) < 1e-12


def test_stats_match_numpy_definitions() -> None:
    """X_paper = X.T has the samples as columns."""
    X = data(n=300, dim=23, seed=1)
    X[17, 5] = -40.0  # B must see the absolute value
    acc = accumulate(X, [0, 100, 300], 33)
    X_paper = X.T
    assert acc.frobenius == pytest.approx(np.linalg.norm(X_paper, "fro"), rel=1e-13)
    assert acc.norm1_T == pytest.approx(np.linalg.norm(X_paper.T, 1), rel=1e-13)
    assert acc.B == 40.0 == np.abs(X_paper).max(axis=0).max()


def test_column_slab_merge_equals_single_pass() -> None:
    X = data(n=500, dim=29, seed=2)
    whole = accumulate(X, [0, 500], 64)
    left, mid, right = (accumulate(X, [a, b], 50) for a, b in [(0, 180), (180, 333), (333, 500)])
    target = MomentAccumulator(29)
    target.merge(left, columns_per_slab=8)  # 8 does not divide 29
    target.add_stats(mid.stats())
    target.add_stats(right.stats())
    for c0 in range(0, 29, 5):  # the reducer's pattern, spelled out: both slabs at once
        slabs = [acc.drain_upper_columns(c0, min(c0 + 5, 29)) for acc in (mid, right)]
        assert all(slab.flags.f_contiguous for slab in slabs)  # columns add contiguously
        target.add_upper_columns(c0, *slabs)
    assert target.n == whole.n and target.B == whole.B
    assert target.frobenius == pytest.approx(whole.frobenius, rel=1e-14)
    assert target.norm1_T == pytest.approx(whole.norm1_T, rel=1e-14)
    assert relerr(target.second_moment(), whole.second_moment()) < 1e-14


def test_drained_slabs_are_the_upper_triangle_and_drain_in_order() -> None:
    X = data(n=50, dim=9)
    acc = accumulate(X, [0, 50], 16)
    gram = X.T @ X
    first = acc.drain_upper_columns(0, 3)
    assert first.shape == (3, 3)
    np.testing.assert_allclose(first, np.triu(gram[:3, :3]), rtol=1e-13)
    slab = acc.drain_upper_columns(3, 6)
    assert slab.shape == (6, 3)
    np.testing.assert_allclose(slab, np.triu(gram, 0)[:6, 3:6], rtol=1e-13)
    with pytest.raises(ParameterError, match="in order"):
        acc.drain_upper_columns(7, 9)
    with pytest.raises(RuntimeError, match="drained"):
        acc.add(X)  # a half-drained accumulator takes no more data
    with pytest.raises(RuntimeError, match="drained"):
        acc.second_moment()


def test_draining_returns_memory_to_the_os() -> None:
    dim = 2048  # a 32 MiB Gram
    acc = MomentAccumulator(dim)
    acc.add(np.ones((4, dim)))  # touches the pages of the upper triangle (16 MiB)
    before = _rss_bytes()
    for c0 in range(0, dim, 256):
        acc.drain_upper_columns(c0, c0 + 256)
    assert before - _rss_bytes() > 0.8 * dim * dim * 8 / 2


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return kb * 1024


def test_datastats_merge_is_exact_where_norms_are_not() -> None:
    """‖Xᵀ‖₁ of a union is not the sum or max of the parts' ‖Xᵀ‖₁; the merge is exact."""
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    a, b = (accumulate(X[i : i + 1], [0, 1], 4).stats() for i in range(2))
    merged = a.merge(b).merge(DataStats.empty(2))
    assert (a.norm1_T, b.norm1_T, merged.norm1_T) == (1.0, 2.0, 2.0)
    assert merged.n == 2 and merged.frobenius == pytest.approx(np.sqrt(5.0))
    with pytest.raises(ParameterError, match="dim"):
        a.merge(DataStats.empty(3))


def test_errors_speak() -> None:
    acc = MomentAccumulator(4)
    with pytest.raises(ParameterError, match=r"\(rows, 4\)"):
        acc.add(np.zeros((3, 5)))
    with pytest.raises(ParameterError, match="no samples"):
        acc.second_moment()
    bad = np.ones((10, 4))
    bad[7, 2] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        acc.add(bad)
    with pytest.raises(ParameterError, match="upper columns of shape"):
        acc.add_upper_columns(1, np.zeros((2, 4)))
    with pytest.raises(ParameterError, match="upper columns of shape"):
        acc.add_upper_columns(0, np.zeros((2, 2)), np.zeros((3, 3)))  # slabs disagree
    with pytest.raises(ParameterError, match="at least one slab"):
        acc.add_upper_columns(0)
    acc.add(np.ones((2, 4)))
    acc.second_moment()
    with pytest.raises(RuntimeError, match="new MomentAccumulator"):
        acc.add(np.ones((2, 4)))


def test_add_trailing_equals_full_update_on_pre_padded_rows() -> None:
    rng = np.random.default_rng(7)
    dim, start = 90, 35
    x = rng.standard_normal((41, dim))
    x[:25, :start] = 0.0  # pre-padding: leading coordinates are zero for these rows
    staircase = MomentAccumulator(dim, block_rows=6)
    staircase.add_trailing(x[:25, start:], start, panel=16)
    staircase.add(x[25:])
    full = MomentAccumulator(dim)
    full.add(x)
    np.testing.assert_allclose(
        np.triu(staircase.second_moment(symmetrize=False)),
        np.triu(x.T @ x / 41),
        rtol=1e-12,
        atol=1e-14,
    )
    assert staircase.n == full.n == 41
    assert staircase.frobenius == pytest.approx(full.frobenius, rel=1e-13)
    assert staircase.norm1_T == pytest.approx(full.norm1_T, rel=1e-13)
    assert staircase.B == full.B


def test_add_trailing_refuses_a_tail_of_the_wrong_width() -> None:
    acc = MomentAccumulator(10)
    with pytest.raises(ParameterError, match=r"tail of shape \(rows, 10 - start\)"):
        acc.add_trailing(np.ones((2, 10)), 4)
