"""Memory-bounded float64 accumulation of the uncentred second moment Σ = E[x xᵀ].

Why this shape: Σ has dimension D = L·d up to 15,000 (1.8 GB in float64), its
condition number is 10⁶-10⁸, and float32 accumulation loses λ_min entirely. So samples
arrive as row blocks (float32 is fine on the wire), are converted to float64 at most
``block_rows`` rows at a time, and update only the upper triangle of the Gram G = Σ x xᵀ
with BLAS ``dsyrk`` (half the flops of a GEMM). The scalars the bounds need from the same
data -- ‖X‖_F, ‖Xᵀ‖₁ and B = max ‖x‖_∞ -- are accumulated in the same pass.

Partial accumulators from several workers are reduced column slab by column slab
(:meth:`MomentAccumulator.drain_upper_columns` → :meth:`MomentAccumulator.add_upper_columns`):
the Gram is Fortran-ordered, so a slab is one contiguous stretch of memory, and a worker hands
each drained slab's pages back to the OS. The reducer's buffer fills as the workers' empty,
so the whole reduction never holds much more than one dim × dim array per worker. The
strict lower triangle of the Gram is scratch until :meth:`MomentAccumulator.second_moment`
mirrors the upper triangle into it.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rnngen.blas import gemm_update, syrk_update
from rnngen.errors import ParameterError

Array = NDArray[np.float64]

# Rows per chunk for the elementwise statistics: keeps the |x| temporary at ~rows·dim·8 B.
_STAT_ROWS = 256


@dataclass(frozen=True, eq=False)
class DataStats:
    """Mergeable summary of a data matrix X whose columns are the n samples (the paper's X).

    Stored as sums (not as the norms themselves) because ‖Xᵀ‖₁ = max_j Σ_samples |x_j| is
    a max of sums: two partial maxima cannot be merged, two partial column sums can.
    ``eq=False`` because a field is an array; compare the properties instead.
    """

    n: int
    dim: int
    sq_sum: float  # Σ_samples ‖x‖²
    abs_colsum: Array  # (dim,) Σ_samples |x_j|
    max_abs: float  # max over samples and coordinates of |x_j|

    @classmethod
    def empty(cls, dim: int) -> DataStats:
        """Statistics of zero samples (the identity of :meth:`merge`)."""
        return cls(0, dim, 0.0, np.zeros(dim), 0.0)

    @property
    def frobenius(self) -> float:
        """‖X‖_F, the Frobenius norm of the data matrix."""
        return float(np.sqrt(self.sq_sum))

    @property
    def norm1_T(self) -> float:
        """‖Xᵀ‖₁ = max over coordinates of Σ_samples |entry| (0 for no samples)."""
        return float(self.abs_colsum.max()) if self.n else 0.0

    @property
    def B(self) -> float:
        """B = max over samples of ‖x‖_∞ (Remark 6)."""
        return self.max_abs

    def merge(self, other: DataStats) -> DataStats:
        """Statistics of the union of the two sample sets (exact; order-independent)."""
        if other.dim != self.dim:
            raise ParameterError(f"cannot merge stats of dim {self.dim} and {other.dim}")
        return DataStats(
            self.n + other.n,
            self.dim,
            self.sq_sum + other.sq_sum,
            self.abs_colsum + other.abs_colsum,
            max(self.max_abs, other.max_abs),
        )


def _block_stats(chunk: Array) -> DataStats:
    """DataStats of one float64 chunk, in sub-chunks so |chunk| is never materialized whole."""
    stats = DataStats.empty(chunk.shape[1])
    for r0 in range(0, chunk.shape[0], _STAT_ROWS):
        part = np.abs(chunk[r0 : r0 + _STAT_ROWS])
        stats = stats.merge(
            DataStats(
                part.shape[0],
                part.shape[1],
                float(np.einsum("ij,ij->", part, part)),
                part.sum(axis=0),
                float(part.max(initial=0.0)),
            )
        )
    return stats


def _cache_columns(rows: int) -> int:
    """Columns of a (rows, ·) float64 block that fill about 4 MB, for cache-sized passes."""
    return max(1, (4 << 20) // (8 * max(rows, 1)))


def _check_finite(block: np.ndarray) -> None:
    """Raise naming the first row with NaN/inf; one float64 per row of temporary memory."""
    with np.errstate(over="ignore", invalid="ignore"):
        row_sums = np.einsum("ij,ij->i", block, block, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(row_sums))
    if bad.size:
        raise ParameterError(
            f"{bad.size} row(s) of the block, the first being row {bad[0]}, "
            "hold NaN/inf or values whose squares overflow float64; "
            "nothing was added"
        )


class GramChecks:
    """The guards both Gram accumulators (this numpy one, rnngen.gram_torch's torch one)
    apply to their buffer: `dim`, `_drained` (columns drained so far) and `_finalized`
    (the buffer holds Σ) are set by the accumulator."""

    dim: int
    _drained: int
    _finalized: bool

    def _check_open(self) -> None:
        """Refuse to touch the buffer once it holds Σ, or once it is being drained."""
        if self._drained:
            raise RuntimeError(
                "this accumulator's Gram was drained into a reducer; it holds no data any more"
            )
        if self._finalized:
            raise RuntimeError(
                "second_moment() was called: the buffer now holds Σ, not the Gram; create a "
                f"new {type(self).__name__} to accumulate more data"
            )

    def _check_columns(self, c0: int, c1: int) -> None:
        """Validate a column range of the Gram."""
        if not 0 <= c0 < c1 <= self.dim:
            raise ParameterError(f"need 0 <= c0 < c1 <= dim={self.dim}; got c0={c0}, c1={c1}")

    def _upper_slabs(
        self, c0: int, slabs: tuple[ArrayLike, ...]
    ) -> tuple[list[NDArray[np.float64]], int]:
        """Validate slabs from ``drain_upper_columns(c0, c1)`` (all for the same columns,
        each of shape (c1, c1 - c0)) -> (the slabs as float64 arrays, c1)."""
        self._check_open()
        if not slabs:
            raise ParameterError("add_upper_columns needs at least one slab")
        arrays = [np.asarray(cols, dtype=np.float64) for cols in slabs]
        shape = arrays[0].shape
        c1 = c0 + (shape[1] if len(shape) == 2 else 0)
        if (
            any(cols.shape != shape for cols in arrays)
            or len(shape) != 2
            or c1 <= c0
            or shape != (c1, c1 - c0)
        ):
            raise ParameterError(
                f"expected upper columns of shape (c1, c1 - c0) for c0={c0} "
                f"with c0 < c1 <= {self.dim}; got {[cols.shape for cols in arrays]}"
            )
        self._check_columns(c0, c1)
        return arrays, c1


class MomentAccumulator(GramChecks):
    """Running float64 Gram G = Σ x xᵀ (upper triangle) and DataStats of row blocks.

    Memory: the dim × dim float64 Gram (Fortran order, as LAPACK wants it, so the result
    can be factorized in place) plus one block_rows × dim float64 chunk during :meth:`add`.
    """

    def __init__(self, dim: int, *, block_rows: int = 2048) -> None:
        if dim < 1 or block_rows < 1:
            raise ParameterError(f"need dim >= 1 and block_rows >= 1; got {dim}, {block_rows}")
        self.dim, self.block_rows = dim, block_rows
        # An anonymous mapping rather than np.zeros, so drained column slabs can be returned
        # to the OS (madvise) while the rest is still in use; untouched pages cost nothing.
        self._buffer = mmap.mmap(-1, dim * dim * 8)
        if hasattr(mmap, "MADV_HUGEPAGE"):  # 2 MB pages: fewer TLB misses in the in-place GEMMs
            self._buffer.madvise(mmap.MADV_HUGEPAGE)
        self._gram = np.frombuffer(self._buffer, dtype=np.float64).reshape((dim, dim), order="F")
        self._drained = 0  # columns [0, _drained) were drained and their memory released
        self._stats = DataStats.empty(dim)
        self._finalized = False

    @property
    def n(self) -> int:
        """Number of samples accumulated."""
        return self._stats.n

    @property
    def frobenius(self) -> float:
        """‖X‖_F of the accumulated data matrix."""
        return self._stats.frobenius

    @property
    def norm1_T(self) -> float:
        """‖Xᵀ‖₁ of the accumulated data matrix."""
        return self._stats.norm1_T

    @property
    def B(self) -> float:
        """Max over samples of ‖x‖_∞."""
        return self._stats.B

    def stats(self) -> DataStats:
        """A snapshot of the data statistics (safe to send to a reducer)."""
        s = self._stats
        return DataStats(s.n, s.dim, s.sq_sum, s.abs_colsum.copy(), s.max_abs)

    def add(self, block: ArrayLike) -> None:
        """Accumulate samples given as the rows of ``block`` (b × dim, float32 or float64)."""
        self._check_open()
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ParameterError(f"expected a block of shape (rows, {self.dim}); got {block.shape}")
        _check_finite(block)  # before any update, so a bad block leaves no partial state
        for r0 in range(0, block.shape[0], self.block_rows):
            chunk = np.asarray(block[r0 : r0 + self.block_rows], dtype=np.float64)
            stats = _block_stats(chunk)
            syrk_update(self._gram, chunk)  # upper triangle, in place
            self._stats = self._stats.merge(stats)

    def add_trailing(self, tail: ArrayLike, start: int, *, panel: int = 512) -> None:
        """Accumulate rows that are zero in every column before ``start``, given as their
        ``tail``: columns ``start:`` only, shape (rows, dim − start).

        Pre-padded sequences have this shape: a review of k ≤ L tokens fills only its last
        k·d coordinates. Sorting rows by length and updating only the trailing
        (dim − start)² part of the Gram (upper triangle, column panel by column panel, in
        place) costs about E[k²]/L² of a full update: 0.47 of it at L = 300 on IMDB.
        Each panel is one GEMM for the rows above its diagonal block and one SYRK for the
        block itself, straight into the Gram's memory (:mod:`rnngen.blas`).
        """
        self._check_open()
        tail = np.asarray(tail)
        if not 0 <= start < self.dim or tail.ndim != 2 or tail.shape[1] != self.dim - start:
            raise ParameterError(
                f"expected 0 <= start < {self.dim} and a tail of shape (rows, "
                f"{self.dim} - start); got start={start}, {tail.shape}"
            )
        gram = self._gram
        for r0 in range(0, tail.shape[0], self.block_rows):
            rows = np.ascontiguousarray(tail[r0 : r0 + self.block_rows], dtype=np.float64)
            part = _block_stats(rows)
            if not np.isfinite(part.sq_sum):
                raise ParameterError("the block holds NaN/inf (or values whose squares overflow)")
            colsum = np.zeros(self.dim)
            colsum[start:] = part.abs_colsum
            for j0 in range(start, self.dim, panel):
                j1 = min(j0 + panel, self.dim)
                cols = rows[:, j0 - start : j1 - start]
                gemm_update(gram[start:j0, j0:j1], rows[:, : j0 - start].T, cols)
                syrk_update(gram[j0:j1, j0:j1], cols)
            self._stats = self._stats.merge(
                DataStats(part.n, self.dim, part.sq_sum, colsum, part.max_abs)
            )

    def add_stats(self, stats: DataStats) -> None:
        """Merge another worker's statistics (pair with :meth:`add_upper_columns`)."""
        self._check_open()
        self._stats = self._stats.merge(stats)

    def drain_upper_columns(self, c0: int, c1: int) -> Array:
        """Columns c0:c1 of the Gram's upper triangle, G[:c1, c0:c1] with the entries below
        the diagonal zeroed (Fortran order, shape (c1, c1 - c0)); then return their memory
        to the OS. Slabs must be drained left to right, from column 0; once any is drained
        the accumulator accepts no more data. Summed over slabs this ships dim²/2 numbers.
        """
        if not self._drained:
            self._check_open()  # the first slab needs a Gram; later ones continue the drain
        self._check_columns(c0, c1)
        if c0 != self._drained:
            raise ParameterError(
                f"drain column slabs in order: next is column {self._drained}, got {c0}"
            )
        # Fortran order like the Gram, so the reducer adds it column by contiguous column.
        slab = np.array(self._gram[:c1, c0:c1], order="F")
        bottom = slab[c0:]  # the diagonal block: keep rows i <= global column
        bottom[...] = np.triu(bottom)
        self._drained = c1
        page = mmap.PAGESIZE
        begin = (c0 * self.dim * 8) // page * page
        end = (c1 * self.dim * 8) // page * page  # whole pages of drained columns only
        if end > begin:
            self._buffer.madvise(mmap.MADV_DONTNEED, begin, end - begin)
        return slab

    def add_upper_columns(self, c0: int, *slabs: ArrayLike) -> None:
        """Add slabs produced by other accumulators' ``drain_upper_columns(c0, c1)`` (all
        for the same columns). Column chunk by column chunk, so each chunk of the Gram is
        read and written once for all the slabs while it is in cache, not once per slab.
        """
        arrays, c1 = self._upper_slabs(c0, slabs)
        step = _cache_columns(c1)
        for j0 in range(0, c1 - c0, step):
            j1 = min(j0 + step, c1 - c0)
            target = self._gram[:c1, c0 + j0 : c0 + j1]
            for cols in arrays:
                target += cols[:, j0:j1]

    def merge(self, other: MomentAccumulator, *, columns_per_slab: int = 512) -> None:
        """Add ``other`` into self slab by slab, draining ``other`` (the reducer's pattern)."""
        if other.dim != self.dim:
            raise ParameterError(f"cannot merge accumulators of dim {self.dim} and {other.dim}")
        self.add_stats(other.stats())
        for c0 in range(0, self.dim, columns_per_slab):
            c1 = min(c0 + columns_per_slab, self.dim)
            self.add_upper_columns(c0, other.drain_upper_columns(c0, c1))

    def second_moment(self, *, symmetrize: bool = True) -> Array:
        """Σ = G / n, computed IN PLACE in the accumulator's buffer and returned (no copy).

        The buffer is Fortran-ordered, so ``cholesky_operator(Σ, overwrite=True)`` factors
        it without a copy. With ``symmetrize`` the upper triangle is mirrored into the lower
        one block by block (temporary memory: one block). The accumulator is finished
        afterwards: further adds would mix Σ with a Gram, so they raise.
        """
        self._check_open()
        if self.n == 0:
            raise ParameterError("no samples were added; the second moment is undefined")
        G = self._gram
        # Scale the upper triangle only: the strict lower one is scratch (never touched, so
        # its pages were never allocated) unless it is mirrored below.
        step = _cache_columns(self.dim)
        for c0 in range(0, self.dim, step):
            c1 = min(c0 + step, self.dim)
            G[:c1, c0:c1] *= 1.0 / self.n
        if symmetrize:
            for r0 in range(0, self.dim, self.block_rows):
                r1 = min(r0 + self.block_rows, self.dim)
                G[r1:, r0:r1] = G[r0:r1, r1:].T
                diag = G[r0:r1, r0:r1]
                diag[...] = np.triu(diag) + np.triu(diag, 1).T
        self._finalized = True
        return G
