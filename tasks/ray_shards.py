"""The spectrum's Ray actors: the training split in shards, used as one data matrix X.

What a shard computes is rnngen/shard.py (pure, tested without Ray); this module only
places shards on the cluster, moves Gram slabs between them and drives the Lanczos
iterations from the driver. The dense (n, L·d) matrix is built inside the actors from
token ids and never leaves them: the other shards send their Gram column slabs to the
first shard, which holds the reduced Gram and its Cholesky factor; the driver receives
only statistics, matrix-vector products and solves.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import ray
from threadpoolctl import threadpool_limits

from rnngen.moments import DataStats, MomentAccumulator
from rnngen.shard import BLOCK_ROWS, ShardData
from rnngen.spectrum import Factorization, SpectrumResult, certified_spectrum, factorize
from rnngen_tasks.ray_pool import ensure_connected, get

if TYPE_CHECKING:
    from rnngen.gram_torch import TorchMomentAccumulator


@ray.remote(num_cpus=1)
class CorpusShard:
    """One shard (rnngen.shard.ShardData) in a Ray actor, with its partial Gram and, in
    the first shard after the reduction, Σ's Cholesky factor."""

    def __init__(
        self,
        tokens: pa.Array,
        table: np.ndarray,
        block_rows: int = BLOCK_ROWS,
        device: str | None = None,
    ) -> None:
        # `table` is read-only, shared with the node's other shards (object store). With a
        # device ('cuda': the GPU Ray gave this actor), the Gram, the factor and the solves
        # live there; the certificate's products stay on the host's raw data.
        self._data = ShardData(tokens, table, block_rows, device=device)
        self._acc: MomentAccumulator | TorchMomentAccumulator | None = None  # per device
        self._factor: Factorization | None = None
        self._threads = 1

    def rows(self) -> int:
        return len(self._data)

    def accumulate(self, L: int) -> DataStats:
        """Partial float64 Gram of this shard (upper triangle) and its data statistics."""
        self._acc = self._data.accumulate(L)
        return self._acc.stats()

    def drain_gram_columns(self, c0: int, c1: int) -> np.ndarray:
        """Upper-triangle columns c0:c1 of the partial Gram, their memory then released."""
        assert self._acc is not None, "accumulate() first"
        return self._acc.drain_upper_columns(c0, c1)

    def add_gram_columns(self, c0: int, *slabs: np.ndarray) -> None:
        """Add other shards' drained slabs of columns c0:… into this shard's Gram."""
        assert self._acc is not None, "accumulate() first"
        self._acc.add_upper_columns(c0, *slabs)

    def release_gram(self) -> None:
        self._acc = None
        self._free_device()

    def _free_device(self) -> None:
        """Give freed GPU memory back to the device (other actors may share it)."""
        if self._data.device is not None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def factorize(self, others: DataStats, threads: int) -> tuple[float, float]:
        """Turn the reduced Gram into Σ and Cholesky-factorize it in place, on `threads`
        BLAS threads; return (trace of Σ, seconds). `others` are the statistics of the
        shards whose Gram slabs were added in here. Solves then run here (:meth:`solve`).
        """
        assert self._acc is not None, "accumulate() and the reduction first"
        acc, self._acc = self._acc, None
        acc.add_stats(others)
        self._threads = threads
        with threadpool_limits(limits=threads, user_api="blas"):
            sigma = acc.second_moment(symmetrize=False)  # the factor keeps its buffer alive
            if self._data.device is not None:  # torch imported only by device shards
                from rnngen.gram_torch import factorize_torch

                self._factor = factorize_torch(sigma, acc.n)
            else:
                self._factor = factorize(sigma, acc.n)
        return self._factor.trace, self._factor.seconds

    def solve(self, V: np.ndarray) -> np.ndarray:
        """Σ⁻¹ V with the factor held here, on the factorization's BLAS threads."""
        assert self._factor is not None, "factorize() first"
        with threadpool_limits(limits=self._threads, user_api="blas"):
            return self._factor.solve(V)

    def matmat(self, L: int, V: np.ndarray) -> np.ndarray:
        """Xᵀ (X V) over this shard (rnngen.shard.ShardData.matmat)."""
        return self._data.matmat(L, V)

    def release(self) -> None:
        self._data.release()
        self._acc, self._factor = None, None
        self._free_device()


@dataclass
class ShardPool:
    """Actors holding the training split in `workers` shards, used as one data matrix X."""

    actors: list
    n: int
    _stats: list[DataStats] = field(default_factory=list)  # per shard, after reduce_gram
    # Wall-clock seconds of the stages run so far: "ready" (actors started, the corpus
    # received), "accumulate" (embedding and partial Grams), "reduce" (slabs added up).
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        tokens: pa.Array,
        table: np.ndarray,
        workers: int,
        block_rows: int = BLOCK_ROWS,
        memory: int | None = None,
        gpus: float = 0.0,
    ) -> ShardPool:
        """Shard the reviews' token ids over `workers` actors, each reserving `memory`
        bytes of its node when given, and `gpus` of a GPU (its Gram, factor and solves then
        run there). `table` is the (vocabulary + 1, d) embedding table; it goes to the
        object store once, so the shards of a node share one copy and workers need no
        GloVe files of their own."""
        ensure_connected()
        tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
        bounds = np.linspace(0, len(tokens), workers + 1).astype(int)
        table_ref = ray.put(np.ascontiguousarray(table, dtype=np.float32))
        options: dict = {"memory": memory} if memory else {}
        if gpus:
            options["num_gpus"] = gpus
        shard = CorpusShard.options(**options) if options else CorpusShard
        device = "cuda" if gpus else None  # Ray makes the actor's GPU its cuda:0
        actors = [
            shard.remote(tokens.slice(a, b - a), table_ref, block_rows, device)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        return cls(actors, len(tokens))

    def reduce_gram(self, L: int, columns_per_slab: int = 1024) -> DataStats:
        """Accumulate every shard's partial Gram, then add the other shards' into the first
        shard's, column slab by column slab; return the statistics of all the data.

        The reduced Gram stays in the first actor, where :meth:`factorize` factors it: the
        1.8 GB matrix never passes through the driver. Each other shard returns a slab's
        memory once it is sent; its next slab is drained while the first shard adds the
        current one, and at most two slabs per shard wait in the object store.
        """
        t0 = time.perf_counter()
        get([a.rows.remote() for a in self.actors])
        t1 = time.perf_counter()
        stats = get([a.accumulate.remote(L) for a in self.actors])
        t2 = time.perf_counter()
        dim = stats[0].dim
        head, rest = self.actors[0], self.actors[1:]
        adds: list = []
        for c0 in range(0, dim, columns_per_slab) if rest else ():
            c1 = min(c0 + columns_per_slab, dim)
            slabs = [a.drain_gram_columns.remote(c0, c1) for a in rest]
            adds.append(head.add_gram_columns.remote(c0, *slabs))
            # Drains must run in order (each frees whole pages up to its last column), and
            # the store should not fill up: wait for this slab (without fetching it here),
            # and for the add before it.
            ray.wait(slabs, num_returns=len(slabs), fetch_local=False)
            if len(adds) > 1:
                get(adds[-2])
        get(adds + [a.release_gram.remote() for a in rest])
        self._stats = stats
        self.seconds.update(ready=t1 - t0, accumulate=t2 - t1, reduce=time.perf_counter() - t2)
        return functools.reduce(DataStats.merge, stats)

    def gram(self) -> MomentAccumulator:
        """The reduced Gram (after :meth:`reduce_gram`) copied into a driver-side accumulator,
        draining the first shard's. For checks at small D; the spectrum stage never needs it.
        """
        dim = self._stats[0].dim
        total = MomentAccumulator(dim)
        for s in self._stats:
            total.add_stats(s)
        for c0 in range(0, dim, 1024):
            c1 = min(c0 + 1024, dim)
            total.add_upper_columns(c0, get(self.actors[0].drain_gram_columns.remote(c0, c1)))
        return total

    def factorize(self) -> Factorization:
        """Factorize Σ in place in the first shard, which holds it after :meth:`reduce_gram`,
        on as many BLAS threads as the pool has CPUs on that node; Σ⁻¹ comes back as an
        operator whose solves run there (only (D, k) blocks cross the network).
        """
        head = self.actors[0]
        others = functools.reduce(
            DataStats.merge, self._stats[1:], DataStats.empty(self._stats[0].dim)
        )
        nodes = get([a.node.remote() for a in self.actors])
        threads = sum(node == nodes[0] for node in nodes)
        trace, seconds = get(head.factorize.remote(others, threads))

        def solve(V: np.ndarray) -> np.ndarray:
            return get(head.solve.remote(np.ascontiguousarray(V, dtype=np.float64)))

        return Factorization(solve, trace, seconds)

    def spectrum(self, L: int, **options) -> SpectrumResult:
        """:func:`certified_spectrum` of Σ at L (after :meth:`reduce_gram`): Σ factorized in
        the first shard, the Lanczos iterations driven from here; ``options`` go through.

        The driver's own linear algebra between remote calls (orthogonalization, small
        eigenproblems) runs on one BLAS thread: with more, OpenBLAS's idle threads keep
        spinning after each call on the cores the actors then compute on.
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return certified_spectrum(
                self.factorize(),
                self.second_moment_operator(L),
                self.n,
                self._stats[0].dim,
                **options,
            )

    def second_moment_operator(self, L: int) -> Callable[[np.ndarray], np.ndarray]:
        """v -> Σ v = (1/n) Σ_shards X_sᵀ (X_s v), matrix-free, exact float64."""

        def apply(v: np.ndarray) -> np.ndarray:
            ref = ray.put(np.ascontiguousarray(v, dtype=np.float64))
            parts = ray.get([a.matmat.remote(L, ref) for a in self.actors])
            return np.sum(parts, axis=0) / self.n

        return apply

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
