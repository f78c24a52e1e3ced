"""Unit tests of rnngen.lanczos: dense cross-checks against numpy.linalg.eigvalsh.

The block solvers are what production runs. The single-vector solver of
tests/lanczos_reference.py is tested here against eigvalsh too, so that it can serve as an
independent oracle: a second Krylov process that must agree with the block one.

Accuracy yardstick: no backward-stable method (eigvalsh included) resolves an eigenvalue
better than about eps·‖A‖ in absolute terms, so agreement is asked to 1e-6 relative OR a
few eps·‖A‖, whichever is larger. That only matters at cond 1e10, where eps·‖A‖/λ_min ≈
2e-6.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from rnngen.errors import ParameterError
from rnngen.lanczos import (
    EPS,
    EigenResult,
    SingularMatrixError,
    block_lanczos,
    block_smallest_eigenpairs,
    cholesky_operator,
    residual_tolerance,
)
from rnngen.lanczos import _lam_min_accurate as lam_min_accurate
from rnngen.moments import MomentAccumulator
from tests.lanczos_reference import lanczos, shifted, smallest_eigenpairs

CONDS = [1e2, 1e4, 1e6, 1e8, 1e10]


@lru_cache(maxsize=16)
def spd(
    dim: int,
    cond: float,
    *,
    cluster: int = 10,
    spread: float = 1e-3,
    top: float = 1e3,
    seed: int = 0,
) -> np.ndarray:
    """Random SPD matrix: log-uniform spectrum [top/cond, top], the bottom ``cluster``
    eigenvalues within relative ``spread`` of each other (like Σ's bottom).
    Cached (read-only) because the parametrized tests share matrices."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lam = np.geomspace(top / cond, top, dim)
    lam[:cluster] = lam[0] * (1 + spread * np.linspace(0, 1, cluster))
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    A.flags.writeable = False
    return A


def allowed_error(lam_true: np.ndarray, norm: float) -> np.ndarray:
    """max(1e-6 relative, 4 eps‖A‖): the float64 resolution argument of the module doc."""
    return np.maximum(1e-6 * np.abs(lam_true), 4 * EPS * norm)


def check_certificate(A: np.ndarray, res: EigenResult) -> None:
    """The reported certificate is what an independent computation gives, and it holds."""
    dim = A.shape[0]
    norm = float(np.linalg.eigvalsh(A)[-1])
    rounding = np.sqrt(dim) * EPS * norm  # matvec rounding: two computations may differ
    V, lam = res.eigenvectors, res.eigenvalues
    np.testing.assert_allclose(V.T @ V, np.eye(lam.size), atol=1e-10)
    np.testing.assert_allclose(lam, np.einsum("ij,ij->j", V, A @ V), rtol=0, atol=rounding)
    indep = np.linalg.norm(A @ V - V * lam, axis=0)
    np.testing.assert_allclose(res.residuals, indep, rtol=0, atol=rounding)
    # Weyl: some eigenvalue of A lies within the residual (eigvalsh adds ~eps‖A‖ of its own).
    ev = np.linalg.eigvalsh(A)
    nearest = np.abs(ev[None, :] - lam[:, None]).min(axis=1)
    assert np.all(nearest <= res.residuals + rounding)
    assert np.all(res.error_bounds <= res.residuals) and np.all(res.error_bounds >= 0)


@pytest.mark.parametrize("cond", CONDS)
@pytest.mark.parametrize("k", [1, 3])
def test_reference_smallest_matches_eigvalsh(cond: float, k: int) -> None:
    A = spd(200, cond)
    ev = np.linalg.eigvalsh(A)
    apply_A, solve_A = cholesky_operator(A)
    res = smallest_eigenpairs(apply_A, solve_A, 200, k)
    assert res.converged, res.message
    assert res.iterations < 100  # shift-invert: tens of steps despite the cluster
    assert np.all(np.abs(res.eigenvalues - ev[:k]) <= allowed_error(ev[:k], ev[-1]))
    check_certificate(A, res)


@pytest.mark.parametrize("cond", CONDS)
@pytest.mark.parametrize(("k", "block"), [(1, 4), (10, 12), (20, 24)])
def test_block_smallest_matches_eigvalsh(cond: float, k: int, block: int) -> None:
    A = spd(300, cond, cluster=20)
    ev = np.linalg.eigvalsh(A)
    apply_A, solve_A = cholesky_operator(A)
    res = block_smallest_eigenpairs(apply_A, solve_A, 300, k, block=block, norm_estimate=ev[-1])
    assert res.converged, res.message
    assert res.iterations * block < 300  # never needed the whole space
    assert np.all(np.abs(res.eigenvalues - ev[:k]) <= allowed_error(ev[:k], ev[-1]))
    check_certificate(A, res)


@pytest.mark.parametrize("cond", [1e2, 1e4, 1e6])
def test_block_lambda_min_reaches_the_relative_tolerance(cond: float) -> None:
    """λ_min stops on its Kato-Temple bound, yet is accurate to tol (1e-8) relative, not
    just to the residual floor, wherever float64 can resolve that (eps‖A‖ below it)."""
    A = spd(300, cond, cluster=20, spread=1e-2)
    ev = np.linalg.eigvalsh(A)
    apply_A, solve_A = cholesky_operator(A)
    res = block_smallest_eigenpairs(apply_A, solve_A, 300, 20, block=24, norm_estimate=ev[-1])
    assert res.converged, res.message
    assert abs(res.eigenvalues[0] - ev[0]) <= max(1e-8 * ev[0], 4 * EPS * ev[-1])
    assert res.eigenvalues[0] >= ev[0] - 4 * EPS * ev[-1]  # a Rayleigh quotient: never below


def test_lambda_min_rule_is_the_scaled_estimate_or_kato_temple() -> None:
    """θ are Ritz values of A⁻¹: λ_min = 1/θ[-1] = 1e-4 and the next eigenvalue 2e-4. The
    purified vector's residual on A's scale is r = est/θ², its eigenvalue error ≤ r²/gap."""
    theta = np.array([1e2, 5e3, 1e4])
    lam, gap, tol = 1e-4, 1e-4, 1e-8
    r_ok = np.sqrt(tol * lam * gap) * 0.99  # r²/gap just below tol·λ
    assert lam_min_accurate(r_ok * theta[-1] ** 2, theta, tol, 30)
    assert not lam_min_accurate(r_ok * 1.03 * theta[-1] ** 2, theta, tol, 30)
    # A double eigenvalue (gap 0) can only stop on the scaled estimate: est <= tol·θ.
    double = np.array([1e2, 1e4, 1e4])
    assert not lam_min_accurate(r_ok * theta[-1] ** 2, double, tol, 30)
    assert lam_min_accurate(0.9 * tol * 1e4, double, tol, 30)
    assert not lam_min_accurate(1.1 * tol * 1e4 + 1e-6, np.array([1e4]), tol, 30)


def test_block_variant_reports_non_convergence() -> None:
    A = spd(300, 1e8, cluster=20)
    apply_A, solve_A = cholesky_operator(A)
    norm = float(np.linalg.eigvalsh(A)[-1])
    res = block_smallest_eigenpairs(
        apply_A, solve_A, 300, 20, block=20, max_blocks=1, norm_estimate=norm
    )
    assert not res.converged and res.message.startswith("NOT converged after 1 iterations")
    with pytest.raises(ParameterError, match="block=4 must be >= k=5"):
        block_smallest_eigenpairs(apply_A, solve_A, 300, 5, block=4, norm_estimate=norm)


@pytest.mark.parametrize("cond", CONDS)
@pytest.mark.parametrize("k", [1, 3])
def test_reference_largest_matches_eigvalsh(cond: float, k: int) -> None:
    A = spd(200, cond, seed=1)
    ev = np.linalg.eigvalsh(A)
    res = lanczos(lambda v: A @ v, 200, k)
    assert res.converged, res.message
    assert np.all(np.abs(res.eigenvalues - ev[-k:]) <= 1e-6 * ev[-k:])
    check_certificate(A, res)


@pytest.mark.parametrize("cond", CONDS)
@pytest.mark.parametrize(("k", "block"), [(1, None), (5, 6), (5, 12)])
def test_block_largest_matches_eigvalsh(cond: float, k: int, block: int | None) -> None:
    A = spd(200, cond, seed=1)
    ev = np.linalg.eigvalsh(A)
    calls = []

    def matmat(V: np.ndarray) -> np.ndarray:
        calls.append(V.shape)
        return A @ V

    res = block_lanczos(matmat, 200, k, block=block)
    assert res.converged, res.message
    assert np.all(np.abs(res.eigenvalues - ev[-k:]) <= 1e-6 * ev[-k:])
    check_certificate(A, res)
    b = k + 1 if block is None else block
    # One (dim, b) block per step and none for the certificate (the images are kept).
    assert calls == [(200, b)] * res.iterations


def test_block_lanczos_smallest_end_and_reports_non_convergence() -> None:
    # A's sparse top (log-spaced) becomes the bottom: plain Lanczos resolves that end fast.
    A = 1100.0 * np.eye(200) - spd(200, 1e2, seed=3)
    ev = np.linalg.eigvalsh(A)
    res = block_lanczos(lambda V: A @ V, 200, 3, which="smallest", block=8)
    assert res.converged, res.message
    assert np.all(np.abs(res.eigenvalues - ev[:3]) <= allowed_error(ev[:3], ev[-1]))
    check_certificate(A, res)
    stalled = block_lanczos(lambda V: A @ V, 200, 3, which="smallest", block=3, max_blocks=2)
    assert not stalled.converged and stalled.iterations == 2
    assert stalled.message.startswith("NOT converged after 2 iterations")
    check_certificate(A, stalled)  # an unconverged answer still carries an honest certificate
    with pytest.raises(ParameterError, match="block=2 must be >= k=3"):
        block_lanczos(lambda V: A @ V, 200, 3, block=2)


def test_block_lanczos_on_an_invariant_start_fills_in_at_random() -> None:
    """A = I: the first block spans an invariant subspace at once (R = 0)."""
    res = block_lanczos(lambda V: V.copy(), 50, 3)
    assert res.converged and res.iterations == 1
    np.testing.assert_allclose(res.eigenvalues, 1.0, rtol=1e-14)


def test_reference_purified_vectors_converge_at_once_for_loose_tolerance() -> None:
    """Without the Ericsson-Ruhe step the Ritz vector keeps v0's components along A's top
    eigenvectors, which A amplifies by ‖A‖: tol=1e-3 would then take ~40 steps, not ~6."""
    A = spd(200, 1e8)
    res = smallest_eigenpairs(*cholesky_operator(A), 200, 1, tol=1e-3)
    assert res.converged and res.iterations <= 12
    check_certificate(A, res)


def test_reference_lanczos_one_matvec_per_iteration() -> None:
    """The certificate reuses the stored images A q_j: no matvec beyond one per step."""
    A = spd(200, 1e4)
    calls = []

    def matvec(v: np.ndarray) -> np.ndarray:
        calls.append(1)
        return A @ v

    res = lanczos(matvec, 200, 2)
    assert res.converged and len(calls) == res.iterations


def test_plain_lanczos_smallest_on_clustered_bottom_is_reported_unconverged() -> None:
    """Why shift-invert exists: plain Lanczos stalls on the clustered bottom, and says so."""
    A = spd(200, 1e8)
    res = lanczos(lambda v: A @ v, 200, 1, which="smallest", max_iter=100)
    assert not res.converged
    assert "NOT converged" in res.message and "max_iter=100" in res.message
    assert np.all(res.residuals > residual_tolerance(res.eigenvalues, 1e-8, 1e3, 200))


def test_reference_tiny_max_iter_never_claims_convergence() -> None:
    A = spd(200, 1e6)
    apply_A, solve_A = cholesky_operator(A)
    res = smallest_eigenpairs(apply_A, solve_A, 200, 2, max_iter=3)
    assert not res.converged and res.iterations == 3
    assert "NOT converged after 3 iterations" in res.message and "residual" in res.message
    check_certificate(A, res)  # an unconverged answer still carries an honest certificate


def test_reference_invariant_subspace_exits_early_and_restarts_for_multiplicity() -> None:
    """A = I: the Krylov space is invariant after one step; k = 3 needs two restarts."""
    res = lanczos(lambda v: v.copy(), 50, 3)
    assert res.converged and res.iterations == 3
    np.testing.assert_allclose(res.eigenvalues, 1.0, rtol=1e-14)
    A = np.diag(np.repeat([1.0, 2.0, 5.0], 20))
    res = lanczos(lambda v: A @ v, 60, 1)
    assert res.converged and res.iterations <= 3
    assert res.eigenvalues[0] == pytest.approx(5.0, rel=1e-14)


def test_reference_full_space_is_exact() -> None:
    A = spd(8, 1e3, cluster=2)
    res = lanczos(lambda v: A @ v, 8, 8)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(A), rtol=1e-12)


def test_singular_matrix_raises_with_context() -> None:
    X = np.random.default_rng(0).standard_normal((40, 60))
    A = X.T @ X / 40  # rank 40 < 60
    for overwrite in (False, True):
        with pytest.raises(SingularMatrixError, match="n=40 samples < D=60") as info:
            cholesky_operator(A.copy(), overwrite=overwrite, context="n=40 samples < D=60")
        assert "numerically singular" in str(info.value)
        assert isinstance(info.value, ValueError)


def test_indefinite_and_padding_singular_messages() -> None:
    with pytest.raises(SingularMatrixError, match="Cholesky failed"):
        cholesky_operator(np.diag([1.0, -1.0, 2.0]))
    X = np.random.default_rng(1).standard_normal((100, 5))
    X[:, 0] = 0.0  # a padding coordinate no sample reaches
    with pytest.raises(SingularMatrixError, match="padding"):
        cholesky_operator(X.T @ X)


@pytest.mark.parametrize("order", ["C", "F"])
def test_overwrite_factors_in_place(order: str) -> None:
    A0 = spd(50, 1e4, cluster=1)
    A = np.array(A0, order=order)
    apply_A, solve_A = cholesky_operator(A, overwrite=True)
    assert apply_A is None and not np.array_equal(A, A0)  # A's memory now holds the factor
    x = np.random.default_rng(2).standard_normal(50)
    np.testing.assert_allclose(solve_A(A0 @ x), x, rtol=1e-9)
    with pytest.raises(ParameterError, match="apply_A"):
        smallest_eigenpairs(apply_A, solve_A, 50)  # type: ignore[arg-type]


def test_overwrite_refuses_a_silent_copy() -> None:
    with pytest.raises(ParameterError, match="float64"):
        cholesky_operator(np.eye(4, dtype=np.float32), overwrite=True)


def test_shift_moves_spectrum_exactly() -> None:
    """λ(A + sI) = λ(A) + s through both solvers, within the certified residuals."""
    A, s = spd(200, 1e6), 0.37
    apply_A, solve_A = cholesky_operator(A)
    _, solve_s = cholesky_operator(A + s * np.eye(200))
    apply_s = shifted(apply_A, s)
    lo, lo_s = (
        smallest_eigenpairs(a, b, 200, 2) for a, b in ((apply_A, solve_A), (apply_s, solve_s))
    )
    hi, hi_s = lanczos(apply_A, 200, 2), lanczos(apply_s, 200, 2)
    for r, r_s in ((lo, lo_s), (hi, hi_s)):
        assert r.converged and r_s.converged
        slack = r.residuals + r_s.residuals + 1e3 * np.sqrt(200) * EPS
        assert np.all(np.abs(r_s.eigenvalues - r.eigenvalues - s) <= slack)


def test_noise_shifts_second_moment_by_sigma_squared() -> None:
    """Monte Carlo: E[(x+ε)(x+ε)ᵀ] = E[xxᵀ] + σ²I, so λ_min moves by σ²."""
    rng = np.random.default_rng(3)
    n, dim, reps, sigma = 500, 8, 100, 0.3
    X = rng.standard_normal((n, dim)) @ np.diag([1, 1, 1, 1, 1, 1, 1, 0.03])
    clean, noisy = MomentAccumulator(dim), MomentAccumulator(dim)
    clean.add(X)
    for _ in range(reps):
        noisy.add(X + sigma * rng.standard_normal((n, dim)))
    S, Sn = clean.second_moment(), noisy.second_moment()
    dev = Sn - S - sigma**2 * np.eye(dim)
    # Entry std <= sqrt((4σ² max E x_i² + 2σ⁴)/N), N = n·reps; 6 std is a loose envelope.
    std = np.sqrt((4 * sigma**2 * np.diag(S).max() + 2 * sigma**4) / (n * reps))
    assert np.abs(dev).max() <= 6 * std
    lam, lam_n = (smallest_eigenpairs(*cholesky_operator(M), dim).eigenvalues[0] for M in (S, Sn))
    assert abs(lam_n - lam - sigma**2) <= np.linalg.norm(dev, 2) + 1e-12
    assert abs(lam_n - lam - sigma**2) <= 0.1 * sigma**2


@pytest.mark.parametrize("solver", ["block", "reference"])
def test_matrix_free_certificate_after_in_place_factorization(solver: str) -> None:
    """The intended pipeline: Σ factored in place, certified by the matrix-free Gram."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((600, 120)) * np.geomspace(1e-2, 10, 120) + 3.0
    acc = MomentAccumulator(120, block_rows=100)
    acc.add(X)
    Sigma = acc.second_moment()
    ev = np.linalg.eigvalsh(Sigma)
    _, solve = cholesky_operator(Sigma, overwrite=True, context="test")

    def gram(V: np.ndarray) -> np.ndarray:
        return X.T @ (X @ V) / 600

    if solver == "block":  # as certified_spectrum: ‖Σ‖ from the top run, then the bottom
        norm = float(block_lanczos(gram, 120, 1).eigenvalues[-1])
        res = block_smallest_eigenpairs(gram, solve, 120, 1, norm_estimate=norm)
    else:
        res = smallest_eigenpairs(gram, solve, 120, 1)
    assert res.converged, res.message
    assert abs(res.eigenvalues[0] - ev[0]) <= allowed_error(ev[:1], ev[-1])[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k"),
        ({"k": 11}, "k"),
        ({"which": "top"}, "which"),
        ({"tol": 0.0}, "tol"),
        ({"v0": np.ones(3)}, "v0"),
        ({"k": 5, "max_iter": 2}, "max_iter"),
    ],
)
def test_reference_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        lanczos(lambda v: v, 10, **kwargs)


def test_reference_bad_operator_output_is_named() -> None:
    with pytest.raises(ParameterError, match="shape"):
        lanczos(lambda v: v[:-1], 10)
    with pytest.raises(ParameterError, match="NaN"):
        lanczos(lambda v: v * np.nan, 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "1 <= k <= dim"),
        ({"k": 11}, "1 <= k <= dim"),
        ({"which": "top"}, "which"),
        ({"tol": 0.0}, "tol must be positive"),
        ({"k": 3, "block": 2}, "block=2 must be >= k=3"),
    ],
)
def test_block_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        block_lanczos(lambda V: V, 10, **kwargs)
    if "which" not in kwargs:  # the bottom solver has no ``which``
        with pytest.raises(ParameterError, match=match):
            block_smallest_eigenpairs(lambda V: V, lambda V: V, 10, **kwargs, norm_estimate=1.0)


def test_block_bad_operator_output_is_named() -> None:
    with pytest.raises(ParameterError, match="shape"):
        block_lanczos(lambda V: V[:-1], 10)
    with pytest.raises(ParameterError, match="NaN"):
        block_lanczos(lambda V: V * np.nan, 10)
    with pytest.raises(ParameterError, match="NaN"):
        block_smallest_eigenpairs(lambda V: V, lambda V: V * np.nan, 10, norm_estimate=1.0)


@pytest.mark.parametrize("cond", [1e2, 1e4, 1e6])
def test_block_solvers_agree_with_the_single_vector_reference(cond: float) -> None:
    """Two independent Krylov processes, block (as certified_spectrum runs them) and
    single-vector, on one clustered-bottom matrix: λ_min and λ_max agree to 1e-8 relative,
    with each other and with eigvalsh (cond <= 1e6 keeps eps‖A‖ below 1e-8·λ_min)."""
    A = spd(300, cond, cluster=20)
    ev = np.linalg.eigvalsh(A)
    apply_A, solve_A = cholesky_operator(A)
    top = block_lanczos(apply_A, 300, 5)
    low = block_smallest_eigenpairs(
        apply_A, solve_A, 300, 20, block=24, norm_estimate=float(top.eigenvalues[-1])
    )
    ref_top = lanczos(apply_A, 300, 1, seed=1)
    ref_low = smallest_eigenpairs(apply_A, solve_A, 300, 1, seed=1)
    for res in (top, low, ref_top, ref_low):
        assert res.converged, res.message
    for ours, oracle, exact in (
        (low.eigenvalues[0], ref_low.eigenvalues[0], ev[0]),
        (top.eigenvalues[-1], ref_top.eigenvalues[-1], ev[-1]),
    ):
        assert abs(ours - oracle) <= 1e-8 * exact
        assert abs(ours - exact) <= 1e-8 * exact and abs(oracle - exact) <= 1e-8 * exact
