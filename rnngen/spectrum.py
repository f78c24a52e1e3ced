"""λ_min and λ_max of the input second moment Σ = E(x xᵀ), certified.

Composition of the pieces, for one L: Σ arrives as a float64 Gram/n (1.8 GB at D = 15,000);
it is factorized in place (Cholesky, no second copy), Lanczos runs on Σ⁻¹ so the clustered
bottom converges in tens of steps, and every reported eigenvalue is then re-certified with
an INDEPENDENT operator `apply_sigma` (the matrix-free product over the raw data), so a
rounding problem in the Gram or the factor cannot hide behind its own residual.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rnngen.lanczos import (
    EigenResult,
    SingularMatrixError,
    StepCallback,
    block_lanczos,
    block_smallest_eigenpairs,
    cholesky_operator,
)

Operator = Callable[[np.ndarray], np.ndarray]


@dataclass
class SpectrumResult:
    """Everything `spectrum.parquet` records about one L (one row)."""

    n: int
    dim: int
    lambda_min: float
    lambda_min_residual: float
    lambda_min_error_bound: float
    lambda_max: float
    lambda_max_residual: float
    trace: float
    smallest: list[float]
    smallest_residuals: list[float]
    largest: list[float]
    iterations: int  # block steps of the bottom (shift-invert) Lanczos
    iterations_top: int  # block steps of the top Lanczos
    converged: bool
    message: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def condition(self) -> float:
        return self.lambda_max / self.lambda_min if self.lambda_min > 0 else float("inf")


def check_rank(n: int, dim: int) -> None:
    """Σ = XᵀX/n has rank at most n: with fewer samples than dimensions it is singular."""
    if n < dim:
        raise SingularMatrixError(
            f"E(xxᵀ) is singular: n={n} training sequences < D={dim} dimensions (D = L·d), "
            "so its rank is at most n and λ_min = 0. Use more samples or a smaller L."
        )


def default_block(k: int, dim: int) -> int:
    """Block size of the bottom Lanczos: 48 columns per triangular solve at full size (a
    solve reads the whole factor, so wider blocks are nearly free per column; 48 was the
    fastest of 32-64 in bench/bench_spectrum.py). Smaller for small D, so the space holds
    ~8 blocks."""
    return max(k, min(48, dim // 8))


@dataclass(frozen=True)
class Factorization:
    """Σ⁻¹ as an operator (a Cholesky factor's solve), and what was read off Σ before."""

    solve: Operator
    trace: float
    seconds: float


def factorize(sigma: np.ndarray, n: int) -> Factorization:
    """Cholesky-factorize Σ IN PLACE (its memory becomes the factor; no second 1.8 GB copy).

    `sigma` is Σ of n samples, its upper triangle in Fortran order. A Σ that is singular in
    float64 raises SingularMatrixError naming n and D.
    """
    dim = sigma.shape[0]
    check_rank(n, dim)
    trace = float(np.trace(sigma))
    t0 = time.perf_counter()
    _, solve = cholesky_operator(sigma, overwrite=True, context=f"n={n} samples, D={dim}")
    return Factorization(solve, trace, time.perf_counter() - t0)


def certified_spectrum(
    factorization: Factorization,
    apply_sigma: Operator,
    n: int,
    dim: int,
    *,
    k_small: int = 20,
    k_large: int = 5,
    tol: float = 1e-8,
    seed: int = 0,
    max_blocks: int | None = None,
    block: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SpectrumResult:
    """Smallest `k_small` and largest `k_large` eigenvalues of Σ (dimension `dim`, n samples).

    `factorization` is Σ's (:func:`factorize`, wherever Σ lives: its solve may run in the
    Ray actor that holds it); `apply_sigma` is Σ as an operator on (D,) or (D, k) arrays,
    independent of the factor's memory: it iterates the top and certifies everything.
    `progress`, if given, receives one line per block step of either end.
    """

    def reporter(end: str) -> StepCallback | None:
        if progress is None:
            return None

        def report(step: int, value: float, estimate: float) -> None:
            progress(f"{end}: block step {step}, estimate {value:.6e} (residual ~{estimate:.1e})")

        return report

    check_rank(n, dim)
    times: dict[str, float] = {"factor": factorization.seconds}
    t0 = time.perf_counter()
    # Blocks of k_large + 1 vectors: about half the passes over the data that single
    # vectors need, each pass costing about the same.
    top = block_lanczos(
        apply_sigma, dim, k_large, which="largest", seed=seed, tol=tol, on_step=reporter("λ_max")
    )
    times["lanczos_top"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # Iterate with the factor's solve, certify with the independent matrix-free operator.
    low: EigenResult = block_smallest_eigenpairs(
        apply_sigma,
        factorization.solve,
        dim,
        k_small,
        block=default_block(k_small, dim) if block is None else block,
        tol=tol,
        seed=seed,
        max_blocks=max_blocks,
        norm_estimate=float(top.eigenvalues[-1]),
        on_step=reporter("λ_min"),
    )
    times["lanczos_bottom"] = time.perf_counter() - t0
    values, residuals = low.eigenvalues, low.residuals
    ok = bool(low.converged and top.converged)
    return SpectrumResult(
        n=n,
        dim=dim,
        lambda_min=float(values[0]),
        lambda_min_residual=float(residuals[0]),
        lambda_min_error_bound=float(low.error_bounds[0]),
        lambda_max=float(top.eigenvalues[-1]),
        lambda_max_residual=float(top.residuals[-1]),
        trace=factorization.trace,
        smallest=values.tolist(),
        smallest_residuals=residuals.tolist(),
        largest=top.eigenvalues[::-1].tolist(),
        iterations=low.iterations,
        iterations_top=top.iterations,
        converged=ok,
        message="; ".join(m for m in (low.message, top.message) if m),
        seconds=times,
    )


def dense_smallest(x: np.ndarray) -> tuple[float, float]:
    """Reference: λ_min and λ_max of XᵀX/n by numpy's dense `eigvalsh` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    values = np.linalg.eigvalsh(x.T @ x / x.shape[0])
    return float(values[0]), float(values[-1])
