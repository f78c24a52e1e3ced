"""Certified extreme eigenpairs of a large SPD matrix by block Lanczos (full reorthogonalization).

Why our own solver: the bounds need λ_min(Σ) of an uncentred second moment whose condition
number is 10⁶-10⁸ and whose bottom spectrum is clustered (relative gaps ~10⁻³).
Plain Lanczos on Σ (or ARPACK ``which='SA'``) stalls there. Shift-invert at 0 fixes that,
and we want it with two properties ARPACK's (scipy's ``eigsh``) lacks: the solve, a 1.8 GB
Cholesky factor, is read once per block of vectors rather than once per vector, and every
answer is certified with an operator independent of that factor.

Two solvers share one certificate:

* :func:`block_smallest_eigenpairs` (the bottom) runs block Lanczos on Σ⁻¹, each step one
  solve with a (dim, b) block of right-hand sides (:func:`cholesky_operator`). The wanted
  eigenvalues become the dominant end and the 10⁸-wide rest of the spectrum collapses
  towards 0. (The cluster's relative gaps survive the inversion, so resolving it still
  takes tens of block steps.) Each Ritz vector gets one free step of inverse iteration
  (Ericsson & Ruhe 1980) before it is certified: it damps what the start block left along
  Σ's top eigenvectors, which A would otherwise amplify by ‖A‖ in the residual.
* :func:`block_lanczos` (the top) runs block Lanczos on Σ itself, each step one product
  with a (dim, b) block: for the matrix-free Σ, one pass over the workers' data.

Certificate: every returned pair is recomputed with the TRUE operator A (for the bottom,
``apply_A``, not the factor's solve): λ = vᵀAv and the residual ‖Av − λv‖₂. For symmetric
A some eigenvalue lies within ‖Av − λv‖ of λ (Weyl-type bound), which is what makes the
number trustworthy; and vᵀAv ≥ λ_min always, so eigenvalues[0] never undershoots λ_min.
An inaccurate solve can slow convergence but cannot produce a false certificate. The top
solver keeps the images A Q, so its certificate costs no further operator call.

Convergence rule, shared by both solvers (see :func:`residual_tolerance`)::

    ‖A v − λ v‖₂ ≤ tol · |λ| + FLOOR_FACTOR · sqrt(dim) · eps · ‖A‖_est

The relative term is what a caller asks for. The floor exists because a float64 matvec
(and a backward-stable solve) perturbs A by about sqrt(dim)·eps·‖A‖, so no method can push
the residual of an eigenvalue below that: for cond(A) = 10¹⁰ the smallest eigenvalue is
only resolvable to a relative ~10⁻⁶ and we say so rather than loop forever. Cheap Krylov
estimates of the residuals decide when to compute the certificate; the certificate alone
decides ``converged``.

λ_min stopping rule: at cond 10⁸ the ‖A‖-sized floor dwarfs tol·λ_min, so the rule above
alone could stop with λ_min off by far more than ``tol``. The bottom solver therefore also
waits until λ_min = 1/θ is accurate to ``tol`` relative (:func:`_lam_min_accurate`):
either its Lanczos estimate meets ``tol`` on Σ⁻¹'s own scale, or the Kato–Temple bound
r²/gap ≤ tol·λ_min holds, r being the purified vector's predicted residual and gap the
distance to the next Ritz value.

The solvers are operator-agnostic: they take callables on (dim, b) arrays
and a dimension. The distributed layer supplies a matrix-free product, and
:func:`cholesky_operator` a LAPACK factorization for the solve. Step counts and timings on
the real Σ: bench/bench_spectrum.py. A single-vector Lanczos, kept as an independent test
oracle, lives in tests/lanczos_reference.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from rnngen.errors import ParameterError, UserError

Array = NDArray[np.float64]
Indices = NDArray[np.intp]
Operator = Callable[[Array], Array]
# on_step(block step, current value, residual estimate): progress of a running solver
StepCallback = Callable[[int, float, float], None]
Which = Literal["largest", "smallest"]

EPS = float(np.finfo(np.float64).eps)
DEFAULT_TOL = 1e-8
# Multiplies sqrt(dim)·eps·‖A‖ in the residual floor: eigh's own eigenvectors sit below 0.3
# of that unit, and 4 leaves room for noisier (summed-over-workers) operators.
FLOOR_FACTOR = 4.0
# A coupling below this multiple of eps·‖T‖ means the Krylov space is numerically invariant.
_BREAKDOWN = 1e3


class SingularMatrixError(UserError, ValueError):
    """The matrix is not numerically positive definite, so it cannot be factorized/inverted."""


@dataclass(frozen=True)
class EigenResult:
    """Certified eigenpairs of a symmetric operator A.

    eigenvalues: (k,) ascending, Rayleigh quotients vᵀAv of the ORIGINAL operator A.
    eigenvectors: (dim, k), orthonormal columns, in the order of ``eigenvalues``.
    residuals: (k,) ‖Av − λv‖₂ with v normalized, A applied by the true operator. Some
        eigenvalue of A lies within this distance of λ: the rigorous (Weyl-type) bound.
    error_bounds: (k,) min(‖r‖, ‖r‖²/gap), gap = distance to the nearest other Ritz value.
        The standard a-posteriori estimate (Kato-Temple style); it is only as good as the
        gap estimate. It is optimistic, by orders of magnitude, when an eigenvalue not yet
        resolved by any Ritz value lies closer -- an unresolved cluster at a loose ``tol``.
        ``residuals`` are the guarantee.
    iterations: Lanczos steps taken, each one application of the iterated operator (to a
        (dim, b) block in the block solvers).
    converged: every returned pair meets :func:`residual_tolerance`. That certifies each
        pair; it cannot prove that no eigenvalue beyond them was missed (no Krylov method
        can without an inertia count). A loose ``tol`` on a tight cluster can return the
        cluster's next member instead of a missed one; a tol well below the cluster's
        relative gaps (the default 1e-8) resolves the cluster first.
    message: human-readable summary; says which pairs missed by how much when not converged.
    """

    eigenvalues: Array
    eigenvectors: Array
    residuals: Array
    error_bounds: Array
    iterations: int
    converged: bool
    message: str


def residual_tolerance(eigenvalues: Array, tol: float, norm_estimate: float, dim: int) -> Array:
    """Per-pair residual limit tol·|λ| + FLOOR_FACTOR·sqrt(dim)·eps·‖A‖_est (module docstring).

    ``norm_estimate`` should be a lower bound on ‖A‖ (e.g. the largest Ritz value), which
    makes the floor, and hence the test, stricter rather than looser.
    """
    floor = FLOOR_FACTOR * np.sqrt(dim) * EPS * abs(norm_estimate)
    return tol * np.abs(np.asarray(eigenvalues, dtype=np.float64)) + floor


# --------------------------------------------------------------------------- Krylov process


def _cgs2(basis: Array, w: Array) -> tuple[Array, Array]:
    """Orthogonalize ``w`` against the columns of ``basis`` by classical Gram-Schmidt, twice.

    One CGS pass loses orthogonality in proportion to the condition of the basis; the second
    pass restores it to working precision ("twice is enough", Giraud et al. 2005). Two matrix
    products per pass, far cheaper than the operator applications this solver is built around.
    """
    c1 = basis.T @ w
    w = w - basis @ c1
    c2 = basis.T @ w
    return w - basis @ c2, c1 + c2


def _checked_images(W: ArrayLike, dim: int, k: int) -> Array:
    """The operator's output for a (dim, k) block: one call, so a distributed operator makes
    one pass over its data for all k vectors (callers' operators must accept 2-D input)."""
    W = np.asarray(W, dtype=np.float64).reshape(dim, k) if np.size(W) == dim * k else W
    if np.shape(W) != (dim, k):
        raise ParameterError(f"the operator returned shape {np.shape(W)}; expected ({dim}, {k})")
    if not np.all(np.isfinite(W)):
        raise ParameterError("the operator returned NaN or inf; check the matrix and solver")
    return np.asarray(W)


def _check_args(dim: int, k: int, tol: float) -> None:
    """Validate the arguments every solver takes."""
    if dim < 1 or not 1 <= k <= dim:
        raise ParameterError(f"need 1 <= k <= dim; got k={k}, dim={dim}")
    if not tol > 0:
        raise ParameterError(f"tol must be positive; got {tol}")


# --------------------------------------------------------------------------- certificate


@dataclass(frozen=True)
class _Pairs:
    """Candidate eigenpairs with their certificate against the true operator."""

    values: Array
    vectors: Array
    residuals: Array
    bounds: Array
    limits: Array

    @property
    def ok(self) -> bool:
        """Every pair meets its residual limit."""
        return bool(np.all(self.residuals <= self.limits))


def _certify(
    V: Array, AV: Array, others: Array, own: Indices, tol: float, norm_est: float
) -> _Pairs:
    """Certify candidate vectors V (dim × k) given their true images AV = A V.

    ``others`` are all Ritz values on A's scale; ``own`` indexes the ones that produced V,
    each excluded from its own gap.
    """
    lam, V, AV = _rayleigh_ritz(V, AV)
    res = np.linalg.norm(AV - V * lam, axis=0)
    own = own[np.argsort(others[own])]  # match the ascending order of lam
    gaps = np.array([_gap(lam[i], np.delete(others, own[i])) for i in range(lam.size)])
    with np.errstate(divide="ignore"):
        bounds = np.minimum(res, res**2 / gaps)
    norm = max(norm_est, float(np.max(np.abs(lam))))
    return _Pairs(lam, V, res, bounds, residual_tolerance(lam, tol, norm, V.shape[0]))


def _rayleigh_ritz(V: Array, AV: Array) -> tuple[Array, Array, Array]:
    """Ascending eigenpairs of A projected on span(V), using only the images AV.

    Makes the returned vectors orthonormal even when the candidates are not quite (purified
    vectors, as :func:`block_smallest_eigenpairs` forms them, overlap by O(residual²)), and
    gives the best values in that span. A(V R⁻¹) = (AV) R⁻¹ by linearity: no extra operator call.
    """
    Qv, R = np.linalg.qr(V)
    AQ = scipy.linalg.solve_triangular(R, AV.T, trans="T").T
    H = Qv.T @ AQ
    lam, W = np.linalg.eigh((H + H.T) / 2)
    return lam, Qv @ W, AQ @ W


def _gap(value: float, others: Array) -> float:
    """Distance from ``value`` to the nearest of ``others`` (inf when there are none)."""
    finite = others[np.isfinite(others)]
    return float(np.min(np.abs(finite - value))) if finite.size else np.inf


def _wanted(theta: Array, k: int, which: Which) -> Indices:
    """Indices of the k wanted Ritz values (theta is ascending)."""
    return np.arange(theta.size - k, theta.size) if which == "largest" else np.arange(k)


def _result(pairs: _Pairs, steps: int, stop: str) -> EigenResult:
    """Package certified pairs, with a message that says what did not converge."""
    ratio = pairs.residuals / pairs.limits
    if pairs.ok:
        msg = (
            f"converged: {pairs.values.size} pair(s) in {steps} iterations; "
            f"worst residual/tolerance = {ratio.max():.2g}"
        )
    else:
        bad = [
            f"λ≈{pairs.values[i]:.6g}: residual {pairs.residuals[i]:.3g} > "
            f"tolerance {pairs.limits[i]:.3g} ({ratio[i]:.3g}×)"
            for i in np.flatnonzero(ratio > 1)
        ]
        msg = f"NOT converged after {steps} iterations ({stop}); " + "; ".join(bad)
    return EigenResult(
        pairs.values, pairs.vectors, pairs.residuals, pairs.bounds, steps, pairs.ok, msg
    )


def _check_which(which: str) -> Which:
    """Validate ``which``; a typo must not silently select the other end of the spectrum."""
    if which not in ("largest", "smallest"):
        raise ParameterError(f"which must be 'largest' or 'smallest'; got {which!r}")
    return which  # type: ignore[return-value]


# --------------------------------------------------------------------------- factorization


def cholesky_operator(
    A: Array, *, overwrite: bool = False, context: str = ""
) -> tuple[Operator | None, Operator]:
    """(apply_A, solve_A) for a symmetric positive definite A, via LAPACK potrf/potrs.

    The factorization reads only the upper triangle of A. With ``overwrite=False`` A is
    kept for apply_A (which uses all of A, so A must then be fully symmetric) and the
    factor is a second dim × dim array. With ``overwrite=True`` (A float64 and contiguous,
    e.g. a 15000² second moment of 1.8 GB) the factorization happens in A's own memory, no
    second copy is made, A's content is destroyed, and apply_A is returned as None: the
    caller supplies A's operator separately, which keeps the certificate independent of
    the factorization. ``context`` describes the data and is quoted if A is singular.
    """
    A = _square_matrix(A, overwrite)
    diag_max = float(np.max(np.diag(A)))
    # LAPACK works in Fortran order; for a C-ordered A factor A.T (same memory, no copy)
    # with the lower flag, whose lower triangle is A's upper triangle.
    lower = not A.flags.f_contiguous
    target = A.T if lower else A
    try:
        factor = scipy.linalg.cho_factor(
            target, lower=lower, overwrite_a=overwrite, check_finite=False
        )
    except np.linalg.LinAlgError as exc:
        raise SingularMatrixError(_singular_message(f"Cholesky failed ({exc})", context)) from exc
    _check_pivots(np.diag(factor[0]) ** 2, diag_max, context)

    def solve_A(v: Array) -> Array:
        return scipy.linalg.cho_solve(factor, v, check_finite=False)

    def apply_A(v: Array) -> Array:
        return A @ v

    return (None if overwrite else apply_A), solve_A


def _square_matrix(A: Array, overwrite: bool) -> Array:
    """A as a float64 square matrix; refuse an in-place request that would silently copy."""
    if overwrite:
        if (
            not isinstance(A, np.ndarray)
            or A.dtype != np.float64
            or not (A.flags.c_contiguous or A.flags.f_contiguous)
        ):
            raise ParameterError(
                "overwrite=True needs a contiguous float64 numpy array; "
                "anything else would be copied, defeating the point"
            )
    else:
        A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ParameterError(f"expected a nonempty square matrix; got shape {A.shape}")
    if not A.flags.c_contiguous and not A.flags.f_contiguous:
        A = np.ascontiguousarray(A)
    return A


def _check_pivots(pivots: Array, diag_max: float, context: str) -> None:
    """Reject a factor whose smallest pivot shows A is singular at float64 resolution.

    Each squared pivot r_ii² = 1/(A_i⁻¹)_ii of the leading block A_i is >= λ_min(A_i) >=
    λ_min(A) (interlacing), so a pivot below the residual floor (module docstring, with
    max a_ii <= ‖A‖) proves λ_min(A) is below what float64 can resolve: solving with such a
    factor returns noise. NaN pivots mean A held NaN/inf (they propagate down the diagonal).
    """
    if not np.all(np.isfinite(pivots)):
        raise ParameterError("the matrix contains NaN or inf; check the accumulated data")
    floor = float(residual_tolerance(np.zeros(1), 0.0, diag_max, pivots.size)[0])
    smallest = float(np.min(pivots))
    if smallest <= floor:
        raise SingularMatrixError(
            _singular_message(
                f"a Cholesky pivot of {smallest:.3g} proves λ_min <= {smallest:.3g}, below the "
                f"float64 resolution {floor:.3g} for a matrix whose largest diagonal entry is "
                f"{diag_max:.3g}",
                context,
            )
        )


def _singular_message(detail: str, context: str) -> str:
    """Say that the matrix is numerically singular, why we know, and the likely cause."""
    cause = (
        f"Likely cause: {context}."
        if context
        else "Typical causes: fewer samples than dimensions, or a coordinate that is zero "
        "in every sample (e.g. padding positions no sequence reaches)."
    )
    return (
        f"matrix is numerically singular (not positive definite in float64): {detail}. "
        f"{cause} Its smallest eigenvalue is then 0 to working precision; add noise "
        "(σ² I) or more samples, or reduce the dimension."
    )


# --------------------------------------------------------------------------- solvers


class _BlockKrylov:
    """Block Lanczos basis Q (dim × (m + b)), block tridiagonal T_m, and the coupling R of
    the newest block: op(Q_m) = Q_m T_m + Q_next R E_mᵀ, with full reorthogonalization.

    Each step applies the operator to one (dim, b) block, so an operator that reads a
    large matrix (a triangular factor, or data spread over workers) reads it once for b
    vectors. ``images`` keeps op(Q) when asked, so Ritz pairs can be certified with no
    further operator call.
    """

    def __init__(
        self, op: Operator, dim: int, b: int, blocks: int, seed: int, keep_images: bool
    ) -> None:
        self.op, self.dim, self.b = op, dim, b
        self.rng = np.random.default_rng(seed)
        self.Q = np.zeros((dim, b * (blocks + 1)), order="F")
        self.Q[:, :b] = np.linalg.qr(self.rng.standard_normal((dim, b)))[0]
        self.images = np.zeros((dim, b * blocks), order="F") if keep_images else None
        self.T = np.zeros((b * blocks, b * blocks))
        self.R = np.zeros((b, b))
        self.m = 0

    def step(self) -> None:
        b, m = self.b, self.m + self.b
        W = _checked_images(self.op(self.Q[:, m - b : m].copy()), self.dim, b)
        if self.images is not None:
            self.images[:, m - b : m] = W
        W, C = _cgs2(self.Q[:, :m], W)
        self.T[:m, m - b : m] = C
        self.T[m - b : m, :m] = C.T
        self.Q[:, m : m + b], self.R = _next_block(self.Q[:, :m], W, self.rng)
        self.m = m

    def ritz(self) -> tuple[Array, Array, Array]:
        """Ritz values ascending, T's eigenvectors S, and the coupling R S_last: column i
        is the residual of the i-th Ritz pair expressed in the next block's basis."""
        m, T = self.m, self.T[: self.m, : self.m]
        theta, S = np.linalg.eigh((T + T.T) / 2)
        return theta, S, self.R @ S[m - self.b :, :]


def _block_count(dim: int, b: int, max_blocks: int | None) -> int:
    """Block steps allowed: ``max_blocks`` (default 100), and never more than fit in dim."""
    return min(100 if max_blocks is None else int(max_blocks), max(1, (dim - 1) // b))


def block_lanczos(
    matvec: Operator,
    dim: int,
    k: int = 1,
    *,
    block: int | None = None,
    which: Which = "largest",
    tol: float = DEFAULT_TOL,
    max_blocks: int | None = None,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> EigenResult:
    """k extreme eigenpairs of a symmetric operator by block Lanczos (full
    reorthogonalization), certified from the kept images A Q: one operator call per block
    step and none for the certificate.

    For an operator whose cost is reading its data, e.g. Σ's matrix-free product over the
    workers' shards: a (dim, b) block costs little more than one vector, and the block
    Krylov space reaches the k wanted pairs in far fewer passes. ``block`` defaults to
    k + 1; ``iterations`` counts block steps; ``matvec`` must accept (dim, b) arrays.
    ``on_step(step, value, estimate)``, if given, hears after each block step the current
    Ritz value of the most extreme wanted pair and its residual estimate (for progress).
    """
    which = _check_which(which)
    b = k + 1 if block is None else int(block)
    if b < k:
        raise ParameterError(f"block={b} must be >= k={k}")
    _check_args(dim, k, tol)
    blocks = _block_count(dim, b, max_blocks)
    kry = _BlockKrylov(matvec, dim, b, blocks, seed, keep_images=True)
    assert kry.images is not None
    norm = 0.0  # the largest |Ritz value| so far: a lower bound on ‖A‖
    for j in range(blocks):
        kry.step()
        m = kry.m
        theta, S, coupling = kry.ritz()
        idx = _wanted(theta, k, which)
        norm = max(norm, float(np.max(np.abs(theta))))
        est = np.linalg.norm(coupling[:, idx], axis=0)
        if on_step is not None:
            end = int(np.argmax(np.abs(theta[idx]))) if which == "largest" else 0
            on_step(j + 1, float(theta[idx][end]), float(est[end]))
        last = j == blocks - 1
        if np.all(est <= residual_tolerance(theta[idx], tol, norm, dim)) or last:
            pairs = _certify(
                kry.Q[:, :m] @ S[:, idx], kry.images[:, :m] @ S[:, idx], theta, idx, tol, norm
            )
            if pairs.ok or last:
                stop = f"block size {b}; " + ("max_blocks reached" if not pairs.ok else "done")
                return _result(pairs, j + 1, stop)
    raise AssertionError("unreachable")


def block_smallest_eigenpairs(
    apply_A: Operator,
    solve_A: Operator,
    dim: int,
    k: int = 1,
    *,
    block: int | None = None,
    tol: float = DEFAULT_TOL,
    max_blocks: int | None = None,
    seed: int = 0,
    norm_estimate: float,
    on_step: StepCallback | None = None,
) -> EigenResult:
    """k smallest eigenpairs of an SPD A by block shift-invert Lanczos.

    Lanczos runs on A⁻¹ (``solve_A``), where λ_min becomes the dominant eigenvalue 1/λ_min;
    Ritz values θ map back as λ ≈ 1/θ. Each pair is certified with ``apply_A`` alone, which
    may be a different, e.g. matrix-free, operator than the one factorized. Each step
    applies ``solve_A`` to a (dim, block) array: with a Cholesky factor, a triangular solve
    with b right-hand sides reads the factor once, so a block costs far less than b single
    solves while the Krylov space grows b times faster, and a clustered bottom (many
    near-equal eigenvalues) is resolved in tens of block steps (bench/bench_spectrum.py).
    ``norm_estimate`` is a lower bound on ‖A‖ for the residual floor, e.g. the top Ritz
    value of :func:`block_lanczos` on ``apply_A``, as :func:`rnngen.spectrum.certified_spectrum`
    passes it. ``iterations`` counts block steps; ``apply_A`` and ``solve_A`` must accept
    (dim, b) arrays. ``on_step(step, value, estimate)``, if given, hears after each block
    step the current estimate of λ_min and its predicted residual on A's scale.
    """
    b = max(k, 8) if block is None else int(block)
    if b < k:
        raise ParameterError(f"block={b} must be >= k={k}")
    _check_args(dim, k, tol)
    blocks = _block_count(dim, b, max_blocks)
    norm_A = norm_estimate
    kry = _BlockKrylov(solve_A, dim, b, blocks, seed, keep_images=False)
    next_check = 0
    for j in range(blocks):
        kry.step()
        m = kry.m
        theta, S, coupling = kry.ritz()  # A⁻¹y − θy = Q_next · coupling
        idx = np.arange(m - k, m)
        est = np.linalg.norm(coupling[:, idx], axis=0)
        # The purified vector v = y + Q_next·coupling/θ below has A v − v/θ = −Q_next·
        # coupling/θ² exactly, so est/θ² predicts the residual the certificate will
        # measure. The other pairs (reported for the spectrum's shape) stop as soon as
        # that prediction meets the certificate's tolerance, whose floor is set by ‖A‖.
        # λ_min, the number the bounds divide by, must be accurate to tol relative, not
        # just to the ‖A‖-sized floor (:func:`_lam_min_accurate`).
        lam = 1.0 / np.maximum(theta[idx], np.finfo(float).tiny)
        others_ok = np.all(est * lam**2 <= residual_tolerance(lam, tol, norm_A, dim))
        lam_min_ok = _lam_min_accurate(est[-1], theta, tol, dim)
        if on_step is not None:
            on_step(j + 1, float(lam[-1]), float(est[-1] * lam[-1] ** 2))
        last = j == blocks - 1
        if (others_ok and lam_min_ok and j >= next_check) or last:
            V = kry.Q[:, :m] @ S[:, idx] + kry.Q[:, m : m + b] @ (coupling[:, idx] / theta[idx])
            AV = _checked_images(apply_A(V.copy()), dim, k)
            mapped = np.where(theta > 0, 1.0 / np.maximum(theta, np.finfo(float).tiny), np.inf)
            pairs = _certify(V, AV, mapped, idx, tol, norm_A)
            if pairs.ok or last:
                stop = f"block size {b}; " + ("max_blocks reached" if not pairs.ok else "done")
                return _result(pairs, j + 1, stop)
            next_check = j + 2  # a failed certificate costs an apply_A: wait a little
    raise AssertionError("unreachable")


def _lam_min_accurate(est: float, theta: Array, tol: float, dim: int) -> bool:
    """Whether shift-invert's top Ritz pair (θ = theta[-1], coupling norm ``est``) gives
    λ_min = 1/θ to relative accuracy ``tol``.

    Either of two tests suffices. (1) The Krylov estimate meets ``tol`` on A⁻¹'s own
    scale: the residual of A⁻¹, relative to θ, is below tol. (2) Kato-Temple: the
    Rayleigh quotient of a vector with residual r on A's scale overshoots λ_min by at
    most r²/gap, gap = distance to the next eigenvalue (here the next Ritz value), and
    the purified vector's residual is at most r = est/θ² (see the caller). The error is
    quadratic in r, so (2) usually holds a few block steps before (1), while (1) still
    ends a tight or multiple cluster whose gap is too small for (2). Like every gap-based
    bound, (2) assumes no eigenvalue between the two Ritz values was missed; the reported
    residuals stay the rigorous certificate.
    """
    lam = 1.0 / theta[-1]
    if est <= residual_tolerance(theta[-1:], tol, float(theta[-1]), dim)[0]:
        return True
    if theta.size < 2 or not theta[-2] > 0:
        return False
    r, gap = est * lam**2, 1.0 / theta[-2] - lam
    return bool(r * r <= tol * lam * gap)


def _next_block(basis: Array, W: Array, rng: np.random.Generator) -> tuple[Array, Array]:
    """Orthonormal next block and its coupling R (W = Q_next R); random fill on breakdown."""
    Qn, R = _tall_qr(W)
    scale = max(float(np.abs(R).max(initial=0.0)), 1.0)
    weak = np.abs(np.diag(R)) <= _BREAKDOWN * EPS * scale
    if np.any(weak):  # invariant subspace reached along some directions: extend at random
        fill, _ = _cgs2(
            np.column_stack([basis, Qn[:, ~weak]]),
            rng.standard_normal((basis.shape[0], int(weak.sum()))),
        )
        Qn[:, weak] = np.linalg.qr(fill)[0]
        R[weak, :] = 0.0
    return Qn, R


def _tall_qr(W: Array) -> tuple[Array, Array]:
    """Thin QR of a tall (dim, b) block by Cholesky QR, twice (CholQR2): two b × b Gram
    matrices and GEMMs, cheaper than Householder's column-by-column reflections on a tall
    block, and orthogonal to working precision while cond(W) stays below ~1e6 (Yamamoto et
    al. 2015).
    A block near breakdown is more ill-conditioned than that: Householder QR then.
    """
    try:
        R1 = scipy.linalg.cholesky(W.T @ W, lower=False, check_finite=False)
        d = np.abs(np.diag(R1))
        if not d.min() > 1e-6 * d.max():
            raise np.linalg.LinAlgError("ill-conditioned block")
        Q1 = scipy.linalg.solve_triangular(R1, W.T, trans="T", check_finite=False).T
        R2 = scipy.linalg.cholesky(Q1.T @ Q1, lower=False, check_finite=False)
        Q = scipy.linalg.solve_triangular(R2, Q1.T, trans="T", check_finite=False).T
        return Q, R2 @ R1
    except np.linalg.LinAlgError:
        return np.linalg.qr(W)
