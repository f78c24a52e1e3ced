"""All Ray code of the project: connecting, sharded corpus actors, fan-out of cells.

Everything else calls these helpers and stays unaware of Ray. The pure work the actors
do lives in `rnngen` (embedding, Gram accumulation); this module only places it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray

from rnngen.corpus import embed_batch
from rnngen.errors import UserError
from rnngen.glove import load_glove
from rnngen.moments import DataStats, MomentAccumulator


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to the Ray cluster at `address`, or start a private local one.

    A bare `ray.init()` may attach to a stale head left on this machine, so the local case
    asks explicitly for a new cluster (`address="local"`).
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address in (None, "", "local"):
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                     include_dashboard=False, log_to_driver=True)
        else:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"cannot reach the Ray cluster at {address!r} ({err}). Check the "
                        "address (ray://host:10001 or host:6379) and that the head is up, "
                        "or leave --ray-address/RAY_ADDRESS unset to run on a local Ray."
                        ) from err


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after ray.init's ~13 minutes of retries, when nothing listens."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


def fan_out(fn: Callable, items: list, *, shared: tuple = (), resources: dict[str, float],
            max_retries: int,
            on_done: Callable[[object, object, BaseException | None], None]) -> None:
    """Run `fn(item, *shared)` for every item as Ray tasks (`shared` values are placed in the
    object store once and handed to every task); call `on_done(item, result, error)` as each
    finishes, in completion order, on the driver (which is where results are written).

    Ray retries a task whose worker died (node loss, OOM kill) and, with
    `retry_exceptions`, one that raised: up to `max_retries` times in both cases. The error
    of the last attempt reaches `on_done`; the remaining items go on regardless.
    """
    remote = ray.remote(fn).options(max_retries=max_retries, retry_exceptions=True,
                                    **_ray_resources(resources))
    refs = [ray.put(value) for value in shared]
    pending = {remote.remote(item, *refs): item for item in items}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        item = pending.pop(ready[0])
        try:
            result, error = ray.get(ready[0]), None
        except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as err:
            result, error = None, err
        on_done(item, result, error)


def _ray_resources(resources: dict[str, float]) -> dict:
    out = {"num_cpus": resources.get("CPU", 1)}
    if resources.get("GPU"):
        out["num_gpus"] = resources["GPU"]
    return out


@ray.remote(num_cpus=1)
class CorpusShard:
    """A slice of the training reviews (token ids) and the means to embed it on the spot.

    The dense (n, L*d) float matrix is built here, from ids, and never leaves the actor:
    the driver receives only Gram row blocks and matrix-vector products.
    """

    def __init__(self, tokens: pa.Array, glove_path: str | None = None) -> None:
        self._tokens = tokens
        self._table = load_glove(glove_path).table
        self._L: int | None = None
        self._x: np.ndarray | None = None
        self._acc: MomentAccumulator | None = None

    def rows(self) -> int:
        return len(self._tokens)

    def _embedded(self, L: int) -> np.ndarray:
        """(n_shard, L*d) float32 sequences, longest first, cached for the latest L.

        float32 -> float64 is exact, so products computed from the cache in float64 are
        exact float64 products. Sorting by kept length lets every block skip its leading
        all-padding columns (see MomentAccumulator.add_trailing).
        """
        if self._L != L:
            self._x = None  # free the previous L first
            kept = np.minimum(np.diff(self._tokens.offsets.to_numpy()), L)
            self._order = np.argsort(-kept, kind="stable")
            self._kept = kept[self._order]
            x = embed_batch(self._tokens.take(pa.array(self._order)), L, self._table)
            self._x, self._L = x.reshape(len(self._tokens), -1), L
        return self._x

    def _blocks(self, L: int, rows: int):
        """(block, first non-padding column) pairs over the cached, length-sorted shard."""
        x = self._embedded(L)
        d = x.shape[1] // L
        for r0 in range(0, x.shape[0], rows):
            yield x[r0:r0 + rows], x.shape[1] - d * int(self._kept[r0])

    def accumulate(self, L: int, block_rows: int = 1024) -> DataStats:
        """Partial float64 Gram of this shard (upper triangle) and its data statistics."""
        dim = self._embedded(L).shape[1]
        self._acc = MomentAccumulator(dim, block_rows=block_rows)
        for block, start in self._blocks(L, block_rows):
            self._acc.add_trailing(block, min(start, dim - 1))
        return self._acc.stats()

    def gram_rows(self, r0: int, r1: int) -> np.ndarray:
        assert self._acc is not None, "accumulate() first"
        return self._acc.upper_rows(r0, r1)

    def release_gram(self) -> None:
        self._acc = None

    def matmat(self, L: int, V: np.ndarray, block_rows: int = 2048) -> np.ndarray:
        """Xᵀ (X V) over this shard in float64, block by block; V is (D,) or (D, k)."""
        out = np.zeros(V.shape, dtype=np.float64)
        for block, start in self._blocks(L, block_rows):
            part = block[:, start:].astype(np.float64)
            out[start:] += part.T @ (part @ V[start:])
        return out

    def release(self) -> None:
        self._x, self._L, self._acc = None, None, None


@dataclass
class ShardPool:
    """Actors holding the training split in `workers` shards, used as one data matrix X."""

    actors: list
    n: int

    @classmethod
    def create(cls, tokens: pa.Array, workers: int, glove_path: str | None = None) -> ShardPool:
        tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
        bounds = np.linspace(0, len(tokens), workers + 1).astype(int)
        actors = [CorpusShard.remote(tokens.slice(a, b - a), glove_path)
                  for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return cls(actors, len(tokens))

    def second_moment_gram(self, L: int, dim: int, rows_per_block: int = 1024
                           ) -> MomentAccumulator:
        """Reduce the shards' partial Grams row block by row block into one accumulator.

        Only one row block per shard is in flight, so the driver holds a single D x D array
        plus a few blocks, never one full copy per worker.
        """
        stats = ray.get([a.accumulate.remote(L) for a in self.actors])
        total = MomentAccumulator(dim)
        for s in stats:
            total.add_stats(s)
        for r0 in range(0, dim, rows_per_block):
            r1 = min(r0 + rows_per_block, dim)
            for block in ray.get([a.gram_rows.remote(r0, r1) for a in self.actors]):
                total.add_upper_rows(r0, block)
        ray.get([a.release_gram.remote() for a in self.actors])
        return total

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
