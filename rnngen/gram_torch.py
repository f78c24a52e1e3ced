"""The float64 Gram Σ x xᵀ and Σ's Cholesky factor with torch, on whichever device holds them.

Why: on a node with a GPU the Gram update (the spectrum's O(n·D²) stage), the factorization
and the shift-invert solves run there, while the certificate stays the numpy matrix-free
product over the raw data (rnngen/shard.py), independent of the device's arithmetic.
Nothing here needs CUDA: the tests run it with device="cpu".

:class:`TorchMomentAccumulator` is a drop-in for :class:`rnngen.moments.MomentAccumulator`
in the shard pipeline: the same staircase updates (:meth:`add_trailing`), statistics and
slab reduction, with slabs as host float64 numpy arrays in MomentAccumulator's exact
format, so either kind of accumulator can add the other's slabs.

Layout: the buffer T is the Gram's transpose in row-major memory, which is G in Fortran
order byte for byte. G's upper triangle (what is accumulated) is T's lower triangle, and
G's column slab c0:c1 is T's contiguous row slab c0:c1. The rest of T is scratch.

Σ is factorized with Cholesky and solved with two triangular solves. No symmetric
eigensolver (cuSOLVER syevd) runs on the device: some CUDA 12 builds fail on Σ's
ill-conditioned float64 input, and shift-invert Lanczos never needs one (its small
eigenproblems run in numpy on the host).
"""

from __future__ import annotations

import math
import mmap
import time
import warnings

import numpy as np
import torch
from numpy.typing import ArrayLike

from rnngen.errors import ParameterError
from rnngen.lanczos import SingularMatrixError, _check_pivots, _singular_message
from rnngen.moments import DataStats, GramChecks
from rnngen.spectrum import Factorization, Operator, check_rank

Array = np.ndarray
# Rows of T per step when scaling / mirroring it: one step's temporary stays small.
_STEP_ROWS = 512


class DeviceSolverError(SingularMatrixError):
    """The device library failed while factorizing Σ or solving with its factor.

    A SingularMatrixError so callers that record a failed factorization record this too,
    but not a proof that Σ is singular: the same Σ may factorize on the CPU path.
    """


def _host_tensor(array: Array) -> torch.Tensor:
    """A numpy array as a CPU tensor sharing its memory (it is only read)."""
    with warnings.catch_warnings():  # Ray hands out read-only arrays; torch warns on those
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _zeros(dim: int, device: torch.device) -> tuple[torch.Tensor, mmap.mmap | None]:
    """A zero dim × dim float64 tensor; on the CPU over an anonymous mapping, so drained
    slabs' pages can go back to the OS as MomentAccumulator's do."""
    if device.type != "cpu":
        return torch.zeros((dim, dim), dtype=torch.float64, device=device), None
    buffer = mmap.mmap(-1, dim * dim * 8)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(buffer, dtype=torch.float64).view(dim, dim), buffer


class TorchMomentAccumulator(GramChecks):
    """Running float64 Gram G = Σ x xᵀ (upper triangle) and DataStats of row blocks, held
    by torch on ``device``; the public API the shard pipeline uses of MomentAccumulator.

    Memory on the device: the dim × dim float64 buffer, plus one block_rows × dim float64
    chunk (and its absolute values) during :meth:`add_trailing`.

    One difference: a block holding NaN/inf is reported when the data are next read
    (:meth:`stats`, :meth:`drain_upper_columns`, :meth:`second_moment`), not when it is
    added, because checking each block would stall the device's queue of updates.
    """

    def __init__(self, dim: int, device: str | torch.device, *, block_rows: int = 2048) -> None:
        if dim < 1 or block_rows < 1:
            raise ParameterError(f"need dim >= 1 and block_rows >= 1; got {dim}, {block_rows}")
        self.dim, self.block_rows = dim, block_rows
        self.device = torch.device(device)
        self._gram, self._buffer = _zeros(dim, self.device)
        # Statistics of the rows added here stay on the device until read (no sync per block).
        self._rows = 0
        self._sq = torch.zeros((), dtype=torch.float64, device=self.device)
        self._colsum = torch.zeros(dim, dtype=torch.float64, device=self.device)
        self._max = torch.zeros((), dtype=torch.float64, device=self.device)
        self._merged = DataStats.empty(dim)  # other workers' statistics (add_stats)
        self._drained = 0  # columns [0, _drained) were drained
        self._finalized = False

    @property
    def n(self) -> int:
        """Number of samples accumulated."""
        return self._rows + self._merged.n

    @property
    def frobenius(self) -> float:
        """‖X‖_F of the accumulated data matrix."""
        return self.stats().frobenius

    @property
    def norm1_T(self) -> float:
        """‖Xᵀ‖₁ of the accumulated data matrix."""
        return self.stats().norm1_T

    @property
    def B(self) -> float:
        """Max over samples of ‖x‖_∞."""
        return self.stats().B

    def stats(self) -> DataStats:
        """A snapshot of the data statistics, on the host (safe to send to a reducer)."""
        self._check_data()
        own = DataStats(
            self._rows,
            self.dim,
            float(self._sq),
            self._colsum.cpu().numpy().copy(),
            float(self._max),
        )
        return self._merged.merge(own)

    def add_stats(self, stats: DataStats) -> None:
        """Merge another worker's statistics (pair with :meth:`add_upper_columns`)."""
        self._check_open()
        self._merged = self._merged.merge(stats)

    def add_trailing(self, tail: ArrayLike, start: int, *, panel: int = 512) -> None:
        """Accumulate rows that are zero before column ``start``, given as their ``tail``
        (columns ``start:``, shape (rows, dim − start)): MomentAccumulator.add_trailing.

        Rows travel to the device in their own dtype (float32 from the shards) and are
        converted to float64 there. Each column panel j0:j1 of G's upper triangle gets one
        in-place GEMM, G[start:j1, j0:j1] += tailᵀ tail, which as T's rows j0:j1 is a
        row-major block BLAS writes in place (torch has no SYRK; the panel's diagonal block
        is computed whole, its lower half landing in scratch).
        """
        self._check_open()
        tail = np.asarray(tail)
        if not 0 <= start < self.dim or tail.ndim != 2 or tail.shape[1] != self.dim - start:
            raise ParameterError(
                f"expected 0 <= start < {self.dim} and a tail of shape (rows, "
                f"{self.dim} - start); got start={start}, {tail.shape}"
            )
        for r0 in range(0, tail.shape[0], self.block_rows):
            chunk = np.ascontiguousarray(tail[r0 : r0 + self.block_rows])
            rows = _host_tensor(chunk).to(self.device).to(torch.float64)
            self._add_row_stats(rows, start)
            for j0 in range(start, self.dim, panel):
                j1 = min(j0 + panel, self.dim)
                cols = rows[:, j0 - start : j1 - start]
                self._gram[j0:j1, start:j1].addmm_(cols.mT, rows[:, : j1 - start])

    def _add_row_stats(self, rows: torch.Tensor, start: int) -> None:
        """Add a float64 chunk's ‖·‖_F², |x| column sums and max |x| (columns start:)."""
        flat = rows.reshape(-1)
        self._sq += torch.dot(flat, flat)
        magnitude = rows.abs()
        self._colsum[start:] += magnitude.sum(dim=0)
        torch.maximum(self._max, magnitude.max(), out=self._max)
        self._rows += rows.shape[0]

    def drain_upper_columns(self, c0: int, c1: int) -> Array:
        """Columns c0:c1 of the Gram's upper triangle as MomentAccumulator returns them:
        host float64, G[:c1, c0:c1] with the entries below the diagonal zeroed, Fortran
        order, shape (c1, c1 - c0). Slabs go left to right from column 0, and once any is
        drained no more data are accepted. On the CPU each slab's whole pages return to
        the OS; on a GPU the buffer is freed when the last slab is drained (a device
        tensor cannot shrink).
        """
        if not self._drained:
            self._check_open()
            self._check_data()
        self._check_columns(c0, c1)
        if c0 != self._drained:
            raise ParameterError(
                f"drain column slabs in order: next is column {self._drained}, got {c0}"
            )
        rows = torch.empty((c1 - c0, c1), dtype=torch.float64)  # an explicit host copy
        rows.copy_(self._gram[c0:c1, :c1])
        slab = rows.numpy().T  # = G[:c1, c0:c1], Fortran order
        bottom = slab[c0:]  # the diagonal block: keep rows i <= global column
        bottom[...] = np.triu(bottom)
        self._drained = c1
        self._release(c0, c1)
        return slab

    def _release(self, c0: int, c1: int) -> None:
        """Return drained columns' memory: whole pages on the CPU, everything at the end."""
        if self._buffer is not None:
            page = mmap.PAGESIZE
            begin = (c0 * self.dim * 8) // page * page
            end = (c1 * self.dim * 8) // page * page
            if end > begin:
                self._buffer.madvise(mmap.MADV_DONTNEED, begin, end - begin)
        if c1 == self.dim:
            self._gram, self._buffer = self._gram.new_empty(0), None

    def add_upper_columns(self, c0: int, *slabs: ArrayLike) -> None:
        """Add slabs from any accumulator's ``drain_upper_columns(c0, c1)`` (all for the
        same columns), each copied to the device once."""
        arrays, c1 = self._upper_slabs(c0, slabs)
        target = self._gram[c0:c1, :c1]  # = G[:c1, c0:c1]ᵀ
        for cols in arrays:
            target += _host_tensor(cols.T).to(self.device)

    def second_moment(self, *, symmetrize: bool = True) -> torch.Tensor:
        """Σ = G / n, computed IN PLACE in the device buffer and returned (no copy).

        The returned tensor S is row-major and its LOWER triangle holds Σ (it is G's
        transpose); with ``symmetrize`` the upper triangle is mirrored from it and S is Σ.
        :func:`factorize_torch` reads only the lower triangle. The accumulator is finished
        afterwards: further adds raise.
        """
        self._check_open()
        self._check_data()
        if self.n == 0:
            raise ParameterError("no samples were added; the second moment is undefined")
        T = self._gram
        for r0 in range(0, self.dim, _STEP_ROWS):  # the lower triangle only, as numpy does
            r1 = min(r0 + _STEP_ROWS, self.dim)
            T[r0:r1, :r1] *= 1.0 / self.n
        if symmetrize:
            for r0 in range(0, self.dim, _STEP_ROWS):
                r1 = min(r0 + _STEP_ROWS, self.dim)
                T[r0:r1, r1:] = T[r1:, r0:r1].mT
                diag = T[r0:r1, r0:r1]
                diag.copy_(torch.tril(diag) + torch.tril(diag, -1).mT)
        self._finalized = True
        return T

    def _check_data(self) -> None:
        """Refuse data that held NaN/inf: its squares' float64 sum is then not finite."""
        if not math.isfinite(float(self._sq)):
            raise ParameterError(
                "the accumulated rows hold NaN/inf or values whose squares overflow float64; "
                "this Gram is unusable"
            )


def factorize_torch(sigma: torch.Tensor, n: int) -> Factorization:
    """Cholesky-factorize Σ IN PLACE on its device; the factor and the solves stay there.

    `sigma` is Σ of n samples as :meth:`TorchMomentAccumulator.second_moment` returns it:
    a row-major float64 tensor of which only the lower triangle is read. Its memory
    becomes the factor F (Σ = F Fᵀ). ``solve(V)`` takes and returns host numpy arrays.
    Σ not positive definite in float64 raises SingularMatrixError naming the pivot, n and
    D; an error of the device library raises :class:`DeviceSolverError` quoting it.
    """
    if (
        sigma.ndim != 2
        or sigma.shape[0] != sigma.shape[1]
        or sigma.dtype != torch.float64
        or not sigma.is_contiguous()
    ):
        raise ParameterError(  # anything else would be factorized in a copy
            "expected a contiguous (row-major) square float64 tensor; got "
            f"{sigma.dtype} of shape {tuple(sigma.shape)}, strides {sigma.stride()}"
        )
    dim = sigma.shape[0]
    check_rank(n, dim)
    context = f"n={n} samples, D={dim}"
    diagonal = torch.diagonal(sigma)
    trace, diag_max = float(diagonal.sum()), float(diagonal.max())
    t0 = time.perf_counter()
    _cholesky_in_place(sigma, context)
    _check_pivots(torch.diagonal(sigma).square().cpu().numpy(), diag_max, context)
    return Factorization(_solver(sigma, context), trace, time.perf_counter() - t0)


def _cholesky_in_place(sigma: torch.Tensor, context: str) -> None:
    """Overwrite sigma's lower triangle with Σ's lower Cholesky factor."""
    # sigma.mT is column-major (the layout LAPACK / cuSOLVER want) and its upper triangle
    # is sigma's lower one. With `out` aliasing the input torch factors in place (on CUDA
    # its copy of the input into `out` is then a no-op); the unit tests check the address.
    upper = sigma.mT
    info = torch.zeros((), dtype=torch.int32, device=sigma.device)
    try:
        torch.linalg.cholesky_ex(upper, upper=True, out=(upper, info))
        failed = int(info)
    except RuntimeError as exc:
        raise DeviceSolverError(
            _device_message(f"Cholesky factorization ({context})", exc, sigma)
        ) from exc
    if failed > 0:
        raise SingularMatrixError(
            _singular_message(
                f"Cholesky failed: the leading minor of order {failed} is not positive "
                f"definite (torch.linalg.cholesky_ex on {sigma.device})",
                context,
            )
        )


def _solver(factor: torch.Tensor, context: str) -> Operator:
    """V ↦ Σ⁻¹ V on the factor's device, host numpy in and out."""

    def solve(V: Array) -> Array:
        try:
            B = _host_tensor(np.ascontiguousarray(V, dtype=np.float64)).to(factor.device)
            B = B.reshape(B.shape[0], -1)
            # Two triangular solves, not torch.cholesky_solve: that copies the whole factor
            # on every call, these read it in place.
            Y = torch.linalg.solve_triangular(factor, B, upper=False)
            X = torch.linalg.solve_triangular(factor.mT, Y, upper=True)
            return X.cpu().numpy().reshape(np.shape(V))
        except RuntimeError as exc:
            raise DeviceSolverError(
                _device_message(f"triangular solve ({context})", exc, factor)
            ) from exc

    return solve


def _device_message(step: str, exc: RuntimeError, on: torch.Tensor) -> str:
    """Say that the device library, not Σ, failed, quote it, and what to try instead."""
    return (
        f"the {step} of Σ failed on {on.device} in the device library, so no λ_min was "
        f"computed: {type(exc).__name__}: {exc}. This does not show that Σ is singular; the "
        "CPU path (no device) factorizes the same Σ with LAPACK."
    )
