"""Unit tests of rnngen.blas: in-place updates of strided blocks against numpy products."""

from __future__ import annotations

import numpy as np
import pytest

from rnngen.blas import gemm_update, syrk_update
from rnngen.errors import ParameterError

rng = np.random.default_rng(7)


def layouts(x: np.ndarray) -> list[np.ndarray]:
    """x as C-ordered, Fortran-ordered, and as a block cut out of a larger array of each."""
    big_c = rng.standard_normal((x.shape[0] + 5, x.shape[1] + 3))
    big_f = np.asfortranarray(rng.standard_normal((x.shape[0] + 4, x.shape[1] + 6)))
    out = [np.ascontiguousarray(x), np.asfortranarray(x)]
    for big in (big_c, big_f):
        block = big[2 : 2 + x.shape[0], 1 : 1 + x.shape[1]]
        block[...] = x
        out.append(block)
    return out


@pytest.mark.parametrize("shape", [(9, 5, 4), (1, 6, 3), (7, 1, 2), (4, 3, 1), (30, 20, 17)])
def test_gemm_update_adds_the_product_into_a_block_in_place(shape: tuple[int, int, int]) -> None:
    m, n, k = shape
    A, B = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    for a in layouts(A):
        for b in layouts(B):
            G = np.asfortranarray(rng.standard_normal((m + 6, n + 4)))
            before = G.copy()
            c = G[3 : 3 + m, 2 : 2 + n]
            gemm_update(c, a, b)
            expected = before.copy()
            expected[3 : 3 + m, 2 : 2 + n] += A @ B
            np.testing.assert_allclose(G, expected, rtol=1e-13, atol=1e-13)
            untouched = np.ones(G.shape, bool)
            untouched[3 : 3 + m, 2 : 2 + n] = False
            assert np.array_equal(G[untouched], before[untouched])


@pytest.mark.parametrize("n, k", [(6, 11), (1, 4), (5, 1), (40, 23)])
def test_syrk_update_adds_the_gram_to_the_upper_triangle_only(n: int, k: int) -> None:
    A = rng.standard_normal((k, n))
    for a in layouts(A):
        G = np.asfortranarray(rng.standard_normal((n + 3, n + 5)))
        before = G.copy()
        syrk_update(G[1 : 1 + n, 2 : 2 + n], a)
        upper = np.triu(np.ones((n, n), bool))
        block, old = G[1 : 1 + n, 2 : 2 + n], before[1 : 1 + n, 2 : 2 + n]
        np.testing.assert_allclose(block[upper], (old + A.T @ A)[upper], rtol=1e-13, atol=1e-13)
        assert np.array_equal(block[~upper], old[~upper])  # strict lower triangle untouched
        rest = np.ones(G.shape, bool)
        rest[1 : 1 + n, 2 : 2 + n] = False
        assert np.array_equal(G[rest], before[rest])


def test_empty_products_change_nothing() -> None:
    G = np.asfortranarray(rng.standard_normal((4, 4)))
    before = G.copy()
    gemm_update(G[:, :0], np.ones((4, 3)), np.ones((3, 0)))
    gemm_update(G, np.ones((4, 0)), np.ones((0, 4)))
    syrk_update(G[:0, :0], np.ones((3, 0)))
    assert np.array_equal(G, before)


def test_refuses_what_blas_cannot_update_in_place() -> None:
    G = np.zeros((6, 6))  # C order: a block of it is row-major, not a BLAS output
    with pytest.raises(ParameterError, match="column-major"):
        gemm_update(G[:3, :3], np.ones((3, 2)), np.ones((2, 3)))
    F = np.zeros((6, 6), order="F")
    with pytest.raises(ParameterError, match="neither its rows nor its columns"):
        gemm_update(F[::2, ::2], np.ones((3, 2)), np.ones((2, 3)))
    with pytest.raises(ParameterError, match="float64"):
        gemm_update(F[:3, :3], np.ones((3, 2), np.float32), np.ones((2, 3)))
    with pytest.raises(ParameterError, match="do not match"):
        gemm_update(F[:3, :3], np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ParameterError, match="do not match"):
        syrk_update(F[:3, :4], np.ones((2, 3)))
    F.flags.writeable = False
    with pytest.raises(ParameterError, match="writeable"):
        syrk_update(F, np.ones((2, 6)))
