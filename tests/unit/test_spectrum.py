"""rnngen.spectrum: the in-place factorization and the certified composition, vs eigvalsh."""

import numpy as np
import pytest

from rnngen.lanczos import SingularMatrixError
from rnngen.moments import MomentAccumulator
from rnngen.spectrum import certified_spectrum, default_block, factorize


def test_factorize_then_certify_matches_eigvalsh() -> None:
    rng = np.random.default_rng(5)
    n, dim = 900, 150
    X = rng.standard_normal((n, dim)) * np.geomspace(1e-2, 10, dim) + 3.0
    acc = MomentAccumulator(dim, block_rows=128)
    acc.add(X)
    dense = X.T @ X / n
    ev = np.linalg.eigvalsh(dense)
    sigma = acc.second_moment(symmetrize=False)  # upper triangle only, as the pipeline has it
    fac = factorize(sigma, n)
    assert fac.trace == pytest.approx(np.trace(dense), rel=1e-12)
    v = rng.standard_normal(dim)
    np.testing.assert_allclose(dense @ fac.solve(v), v, atol=1e-9 * np.abs(v).max())
    res = certified_spectrum(fac, lambda V: X.T @ (X @ V) / n, n, dim)
    assert res.converged, res.message
    assert res.lambda_min == res.smallest[0] and len(res.smallest) == 20
    np.testing.assert_allclose(res.smallest, ev[:20], rtol=1e-6)
    np.testing.assert_allclose(res.largest, ev[::-1][:5], rtol=1e-8)
    # Certified: some eigenvalue lies within each residual of each reported value.
    nearest = np.abs(ev[None, :] - np.array(res.smallest)[:, None]).min(axis=1)
    assert np.all(nearest <= np.array(res.smallest_residuals) + 1e-12)
    assert res.condition == pytest.approx(ev[-1] / ev[0], rel=1e-6)


def test_factorize_refuses_fewer_samples_than_dimensions() -> None:
    with pytest.raises(SingularMatrixError, match="n=10 training sequences < D=20"):
        factorize(np.eye(20, order="F"), 10)


def test_default_block_fits_small_and_full_dimensions() -> None:
    assert default_block(20, 15_000) == 48 and default_block(20, 150) == 20
    assert default_block(20, 240) == 30  # about 8 blocks fit in D
