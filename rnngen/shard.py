"""One shard of the training reviews as a block of the data matrix X: what a spectrum
worker computes (pure: numpy and pyarrow, torch for a Gram on a device; where it runs is
tasks/ray_shards.py's business).

A shard holds its reviews as GloVe token ids and the embedding table, and builds the dense
rows of X (x ∈ R^{L·d}, pre-padded) only when asked, block by block:

- :meth:`ShardData.accumulate`: its partial float64 Gram Σ x xᵀ (upper triangle) and the
  data statistics the bounds need (‖X‖_F, ‖Xᵀ‖₁, B), in numpy or, given a torch device,
  in rnngen/gram_torch.py on that device;
- :meth:`ShardData.matmat`: Xᵀ (X V), the shard's share of the matrix-free Σ V.

Pre-padding leaves a review of k tokens zero before column (L − k)·d. Sorting the reviews
by kept length lets every block of rows start at its longest review's first non-padding
column, so the Gram update touches only a block's trailing part (a staircase: at L = 300
on IMDB the blocks hold ~0.65 of the full matrix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import pyarrow as pa

from rnngen.blas import gemm_update
from rnngen.corpus import pad_ids
from rnngen.moments import DataStats, MomentAccumulator

if TYPE_CHECKING:
    from rnngen.gram_torch import TorchMomentAccumulator

# Reviews per row block: smaller blocks follow the lengths more closely (less padding in
# the Gram's GEMMs), while 256-deep GEMMs still run at full speed (bench/bench_spectrum.py).
BLOCK_ROWS = 256
# Bytes of rows a matrix-free product keeps in cache between its two passes: about one
# core's L2, so the second product re-reads them from cache.
CACHE_BYTES = 1 << 20


class ShardData:
    """A slice of the training reviews (token ids) and the means to embed it."""

    def __init__(
        self,
        tokens: pa.Array,
        table: np.ndarray,
        block_rows: int = BLOCK_ROWS,
        device: str | None = None,
    ) -> None:
        """`tokens`: one list of GloVe ids per review; `table`: the (vocabulary + 1, d)
        float32 embedding table whose last row is the zero padding vector; `device`: None
        for the numpy Gram, or the torch device (e.g. "cuda:0") to accumulate it on."""
        self.tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
        self.table = table
        self.block_rows = block_rows
        self.device = device
        self._L: int | None = None
        self._tails: list[tuple[np.ndarray, int]] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def dim(self, L: int) -> int:
        return L * self.table.shape[1]

    def tails(self, L: int) -> list[tuple[np.ndarray, int]]:
        """The shard embedded at length L as float32 row blocks, longest reviews first,
        each kept from its first non-padding column: [(tail, start)], cached for the
        latest L (tail holds columns start: of its rows of X).

        GloVe is float32, so float32 tails lose nothing; products convert a few
        cache-sized rows at a time to float64 (exactly).
        """
        if self._L != L:
            # free the previous L first, and forget it: a rebuild that fails (out of
            # memory) must not leave the old L looking cached
            self._tails, self._L = None, None
            d, pad = self.table.shape[1], self.table.shape[0] - 1
            kept = np.minimum(np.diff(self.tokens.offsets.to_numpy()), L)
            order = np.argsort(-kept, kind="stable")
            tails = []
            for r0 in range(0, len(order), self.block_rows):
                rows = order[r0 : r0 + self.block_rows]
                ids = pad_ids(self.tokens.take(pa.array(rows)), L, pad_id=pad)
                first = L - int(kept[rows[0]])
                tails.append((self.table[ids[:, first:]].reshape(len(rows), -1), d * first))
            self._tails, self._L = tails, L
        # Set together with _L, so a list here; the one gap: a rebuild for another L
        # that raised has freed _tails but kept the old _L, and this returns None.
        return cast(list[tuple[np.ndarray, int]], self._tails)

    def accumulate(self, L: int) -> MomentAccumulator | TorchMomentAccumulator:
        """The shard's partial float64 Gram (upper triangle) and statistics at length L,
        on the shard's device (a TorchMomentAccumulator) if it has one."""
        dim = self.dim(L)
        acc = self._accumulator(dim)
        for tail, start in self.tails(L):
            if start < dim:
                acc.add_trailing(tail, start)
            else:  # a block of empty reviews adds only its count
                acc.add_stats(DataStats(len(tail), dim, 0.0, np.zeros(dim), 0.0))
        return acc

    def _accumulator(self, dim: int) -> MomentAccumulator | TorchMomentAccumulator:
        if self.device is None:
            return MomentAccumulator(dim, block_rows=self.block_rows)
        # imported here, so that shards without a device never load torch
        from rnngen.gram_torch import TorchMomentAccumulator

        return TorchMomentAccumulator(dim, self.device, block_rows=self.block_rows)

    def matmat(self, L: int, V: np.ndarray) -> np.ndarray:
        """Xᵀ (X V) over this shard in float64, block by block; V is (D,) or (D, k). Always
        numpy on the host, whatever the device: it certifies the device's results."""
        V2 = V.reshape(V.shape[0], -1)
        out = np.zeros(V2.shape, order="F")
        for tail, start in self.tails(L):
            if tail.shape[1] == 0:  # a block of empty reviews: all its rows are zero
                continue
            # A few rows at a time, so the second product re-reads them from cache (with
            # few vectors both products are bound by memory traffic, not arithmetic), and
            # added into `out` in place: a temporary (D, k) product per chunk cost more.
            step = max(1, CACHE_BYTES // (8 * tail.shape[1]))
            part, V_part = out[start:], V2[start:]
            for r0 in range(0, tail.shape[0], step):
                rows = tail[r0 : r0 + step].astype(np.float64)
                gemm_update(part, rows.T, rows @ V_part)
        return out.reshape(V.shape)

    def release(self) -> None:
        self._tails, self._L = None, None
