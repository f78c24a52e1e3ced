"""Single-vector Lanczos: an independent oracle for the block solvers of rnngen.lanczos.

Production computes Σ's spectrum with block Lanczos (:func:`rnngen.lanczos.block_lanczos`,
:func:`rnngen.lanczos.block_smallest_eigenpairs`). This module keeps the single-vector
solver that preceded them, for tests only: one vector per step, a tridiagonal T and its
own restart after a breakdown, so its Krylov process and stopping decisions share nothing
with the block solvers. It does share the certificate (:func:`rnngen.lanczos._certify`)
and the convergence rule; tests/unit/test_lanczos.py checks it against
numpy.linalg.eigvalsh, which is what makes it a trustworthy cross-check.

* :func:`lanczos`: k extreme eigenpairs, one matvec per step and none for the certificate.
* :func:`smallest_eigenpairs`: shift-invert Lanczos on A⁻¹, with purified Ritz vectors.
* :func:`shifted`: the operator of A + sI (input noise).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg

from rnngen.errors import ParameterError
from rnngen.lanczos import (
    _BREAKDOWN,
    DEFAULT_TOL,
    EPS,
    Array,
    EigenResult,
    Operator,
    Which,
    _certify,
    _cgs2,
    _check_args,
    _check_which,
    _checked_images,
    _Pairs,
    _result,
    _wanted,
    residual_tolerance,
)


def shifted(apply: Operator, s: float) -> Operator:
    """Return v ↦ apply(v) + s·v, the operator of A + sI.

    Used to model input noise: N(0, σ²) noise on every coordinate adds σ²I to the second
    moment, so λ_min(Σ + σ²I) = λ_min(Σ) + σ².
    """

    def apply_shifted(v: Array) -> Array:
        return apply(v) + s * v

    return apply_shifted


# --------------------------------------------------------------------------- Krylov process


class _Krylov:
    """Lanczos basis Q (dim × m), tridiagonal T_m and, optionally, the images op(Q).

    Storing the images lets :func:`lanczos` evaluate A v = (A Q) s exactly for any Ritz
    vector v = Q s, so its certificate costs no extra (possibly distributed) matvec.
    """

    def __init__(
        self, op: Operator, dim: int, max_iter: int, v0: Array, seed: int, keep_images: bool
    ) -> None:
        self.op, self.dim = op, dim
        self.rng = np.random.default_rng(seed)
        self.Q = np.zeros((dim, max_iter + 1), order="F")
        self.images = np.zeros((dim, max_iter), order="F") if keep_images else None
        self.alpha = np.zeros(max_iter)
        self.beta = np.zeros(max_iter)
        self.m = 0
        self.norm_est = 0.0  # max |entry| of T so far: a lower bound on ‖op‖
        self.exhausted = False  # the whole space is spanned; no further step is possible
        self.Q[:, 0] = v0 / np.linalg.norm(v0)

    def step(self) -> None:
        """One Lanczos step with full reorthogonalization; restarts after an exact breakdown."""
        j = self.m
        w = _checked_image(self.op(self.Q[:, j].copy()), self.dim)
        if self.images is not None:
            self.images[:, j] = w
        w, coef = _cgs2(self.Q[:, : j + 1], w)
        self.alpha[j] = coef[j]
        b = float(np.linalg.norm(w))
        self.norm_est = max(self.norm_est, abs(self.alpha[j]), b)
        self.m = j + 1
        if b > _BREAKDOWN * EPS * self.norm_est:
            self.beta[j] = b
            self.Q[:, j + 1] = w / b
        elif self.m == self.dim:
            self.exhausted = True
        else:
            # span(Q) is invariant: T decouples (β_j = 0) and the next block starts afresh.
            self.beta[j] = 0.0
            self.Q[:, j + 1] = self._fresh_direction()

    def _fresh_direction(self) -> Array:
        """A random unit vector orthogonal to the current basis (after a breakdown)."""
        for _ in range(5):
            w, _ = _cgs2(self.Q[:, : self.m], self.rng.standard_normal(self.dim))
            nrm = np.linalg.norm(w)
            if nrm > 1e-8 * np.sqrt(self.dim):
                return w / nrm
        raise RuntimeError("could not extend the Krylov basis after a breakdown")

    def ritz(self) -> tuple[Array, Array]:
        """Eigen-decomposition of T_m: Ritz values ascending and T's eigenvectors (m × m)."""
        m = self.m
        return scipy.linalg.eigh_tridiagonal(self.alpha[:m], self.beta[: m - 1])

    def estimates(self, S: Array) -> Array:
        """Ritz residual estimates β_m·|last component of s| (exact in exact arithmetic)."""
        return np.abs(self.beta[self.m - 1] * S[-1, :])


def _checked_image(w: object, dim: int) -> Array:
    """The operator's output as a float64 vector, or a readable error naming the problem."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (dim,):
        raise ParameterError(f"the operator returned shape {w.shape}; expected ({dim},)")
    if not np.all(np.isfinite(w)):
        raise ParameterError("the operator returned NaN or inf; check the matrix and solver")
    return w


def _start_vector(dim: int, seed: int, v0: Array | None) -> Array:
    """The given start vector (validated) or a seeded Gaussian one."""
    if v0 is None:
        return np.random.default_rng(seed).standard_normal(dim)
    v = np.asarray(v0, dtype=np.float64).reshape(-1)
    if v.shape != (dim,) or not np.all(np.isfinite(v)) or not np.any(v):
        raise ParameterError(f"v0 must be a finite, nonzero vector of length {dim}")
    return v


def _steps(dim: int, k: int, max_iter: int | None) -> int:
    """The effective max_iter: min(dim, max(300, 20k)) by default, never beyond dim."""
    steps = min(dim, max(300, 20 * k)) if max_iter is None else min(int(max_iter), dim)
    if steps < k:
        raise ParameterError(f"max_iter={max_iter} < k={k}: cannot form {k} Ritz pairs")
    return steps


# --------------------------------------------------------------------------- drivers

Certifier = Callable[[Array, Array, Array], _Pairs]


def _drive(
    kry: _Krylov, k: int, max_iter: int, which: Which, tol: float, certify: Certifier
) -> EigenResult:
    """Step until the certified pairs pass, max_iter is reached, or the space is exhausted.

    The cheap Ritz estimates gate the (possibly costly) certificate; the certificate alone
    decides ``converged``, so a recurrence that merely *looks* converged is never accepted.
    """
    while True:
        kry.step()
        done = kry.m >= max_iter or kry.exhausted
        if kry.m < k:
            continue
        theta, S = kry.ritz()
        idx = _wanted(theta, k, which)
        norm = max(kry.norm_est, float(np.max(np.abs(theta))))
        limit = residual_tolerance(theta[idx], tol, norm, kry.dim)
        if done or np.all(kry.estimates(S[:, idx]) <= limit):
            pairs = certify(theta, S, idx)
            if pairs.ok or done:
                stop = (
                    f"Krylov space exhausted at dim={kry.dim}"
                    if kry.exhausted
                    else f"max_iter={max_iter} reached"
                )
                return _result(pairs, kry.m, stop)


def lanczos(
    matvec: Operator,
    dim: int,
    k: int = 1,
    *,
    which: Which = "largest",
    max_iter: int | None = None,
    tol: float = DEFAULT_TOL,
    seed: int = 0,
    v0: Array | None = None,
) -> EigenResult:
    """k extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    Exactly one matvec per iteration, and none for the certificate, because the images
    A q_j are kept and A v = (A Q) s. Memory: two dim × max_iter float64 arrays.
    ``max_iter`` defaults to min(dim, max(300, 20k)). A single start vector sees each
    multiple eigenvalue once; after an exact breakdown (invariant subspace) the basis is
    extended by a random vector.
    """
    which = _check_which(which)
    _check_args(dim, k, tol)
    steps = _steps(dim, k, max_iter)
    kry = _Krylov(matvec, dim, steps, _start_vector(dim, seed, v0), seed, keep_images=True)

    def certify(theta: Array, S: Array, idx: Array) -> _Pairs:
        m, Si = kry.m, S[:, idx]
        assert kry.images is not None
        norm = max(kry.norm_est, float(np.max(np.abs(theta))))
        return _certify(kry.Q[:, :m] @ Si, kry.images[:, :m] @ Si, theta, idx, tol, norm)

    return _drive(kry, k, steps, which, tol, certify)


def smallest_eigenpairs(
    apply_A: Operator,
    solve_A: Operator,
    dim: int,
    k: int = 1,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    seed: int = 0,
    norm_estimate: float | None = None,
) -> EigenResult:
    """k smallest eigenpairs of a symmetric positive definite A by shift-invert Lanczos.

    Lanczos runs on A⁻¹ (``solve_A``), where λ_min becomes the dominant eigenvalue 1/λ_min;
    Ritz values θ map back as λ ≈ 1/θ. Each pair is then certified with ``apply_A`` alone
    (λ = vᵀAv, residual ‖Av − λv‖), so an inaccurate solve can slow convergence but cannot
    produce a false certificate. ``apply_A`` may be a different, e.g. matrix-free, operator
    than the one factorized. ``norm_estimate`` (a lower bound on ‖A‖, for the residual
    floor) is found by a 30-step Lanczos on ``apply_A`` when not given.
    """
    if not callable(apply_A) or not callable(solve_A):
        raise ParameterError(
            "apply_A and solve_A must both be callables; cholesky_operator(overwrite=True) "
            "returns apply_A=None, so pass an operator of A (e.g. the matrix-free Gram)."
        )
    _check_args(dim, k, tol)
    steps = _steps(dim, k, max_iter)
    norm_A = _norm_lower_bound(apply_A, dim, seed) if norm_estimate is None else norm_estimate
    kry = _Krylov(solve_A, dim, steps, _start_vector(dim, seed, None), seed, keep_images=False)

    def certify(theta: Array, S: Array, idx: Array) -> _Pairs:
        if np.any(theta[idx] <= 0):
            raise ParameterError(
                "solve_A has non-positive Ritz values: it is not the inverse "
                "of a positive definite matrix"
            )
        V = _purified(kry, theta[idx], S[:, idx])
        AV = _checked_images(apply_A(V.copy()), dim, idx.size)
        with np.errstate(divide="ignore"):
            mapped = np.where(theta > 0, 1.0 / theta, np.inf)
        return _certify(V, AV, mapped, idx, tol, norm_A)

    return _drive(kry, k, steps, "largest", tol, certify)


def _purified(kry: _Krylov, theta: Array, S: Array) -> Array:
    """Ritz vectors of A⁻¹ with one free step of inverse iteration (Ericsson & Ruhe 1980).

    A Ritz vector y = Q s = p(A⁻¹) v0 keeps p(0)·v0's components along A's TOP
    eigenvectors, where A⁻¹ is ~0 so Lanczos never damps them; in A's residual they are
    amplified by ‖A‖ and dominate it for 100+ steps. A⁻¹y/θ = y + (β_m s_m/θ) q_{m+1}, by
    the Lanczos relation, damps them by 1/(λ_j θ) at no cost.
    """
    m = kry.m
    return kry.Q[:, :m] @ S + np.outer(kry.Q[:, m], kry.beta[m - 1] * S[-1, :] / theta)


def _norm_lower_bound(apply_A: Operator, dim: int, seed: int) -> float:
    """A lower bound on ‖A‖ (a Rayleigh quotient near λ_max) from a short Lanczos run."""
    top = lanczos(apply_A, dim, 1, max_iter=min(dim, 30), tol=1e-3, seed=seed + 1)
    return float(np.max(np.abs(top.eigenvalues)))
