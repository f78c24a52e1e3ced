"""All Ray code of the project: connecting, sharded corpus actors, fan-out of cells.

Everything else calls these helpers and stays unaware of Ray. The pure work the actors
do lives in `rnngen` (embedding, Gram accumulation); this module only places it.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray
from threadpoolctl import threadpool_limits

from rnngen.blas import gemm_update
from rnngen.corpus import pad_ids
from rnngen.errors import UserError
from rnngen.moments import DataStats, MomentAccumulator
from rnngen.resources import Request, gigabytes
from rnngen.spectrum import Factorization, SpectrumResult, certified_spectrum, factorize

# Bytes of data rows a matrix-free product keeps in cache between its two passes: one
# core's L2 here (1 MB). With 2 MB a product with 6 vectors took twice as long.
_CACHE_BYTES = 1 << 20
# Reviews per row block of a shard. Each block is cut at its longest review, so smaller
# blocks follow the lengths more closely (Gram work of one shard at L = 300: 1.415 TF
# with 1024 rows, 1.336 with 256, 1.308 exactly), while 256-deep GEMMs still run at full
# speed: one shard's Gram took 29.4 s with 1024 rows, 27.7 with 512, 27.3 with 256.
BLOCK_ROWS = 256
_chosen: dict | None = None  # what connect() chose; Ray starts or attaches on first use


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Choose the Ray cluster at `address`, or a private local one, and fail at once when a
    remote address does not answer. Ray itself starts (or attaches) on first use
    (:func:`ensure_connected`), so a run that finds everything done never starts it.
    """
    global _chosen
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "", "local"):
        try:
            _check_reachable(address)
        except (OSError, ValueError) as err:
            raise _unreachable(address, err) from err
    _chosen = {"address": address, "num_cpus": num_cpus}


def ensure_connected() -> None:
    """Start or attach to the cluster :func:`connect` chose (by default: RAY_ADDRESS, else
    a private local one). A bare `ray.init()` may attach to a stale head left on this
    machine, so the local case asks explicitly for a new cluster (`address="local"`).
    """
    if ray.is_initialized():
        return
    if _chosen is None:
        connect()
    address, num_cpus = _chosen["address"], _chosen["num_cpus"]
    try:
        if address in (None, "", "local"):
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                     include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise _unreachable(address, err) from err


def _unreachable(address: str | None, err: Exception) -> UserError:
    return UserError(f"cannot reach the Ray cluster at {address!r} ({err}). Check the "
                     "address (ray://host:10001 or host:6379) and that the head is up, "
                     "or leave --ray-address/RAY_ADDRESS unset to run on a local Ray.")


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after ray.init's ~13 minutes of retries, when nothing listens."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()


def cluster_cpus() -> int:
    ensure_connected()
    return int(ray.cluster_resources().get("CPU", 1))


def _nodes() -> list[dict[str, float]]:
    """Total resources of each live node (what a single task can at most be given)."""
    ensure_connected()
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def describe_cluster() -> str:
    """'1 node; largest: 2 CPUs, 0 GPUs, 17.5 GB of memory for tasks'."""
    nodes = _nodes()
    if not nodes:
        return "no live node"
    big = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0), r.get("memory", 0)))
    total = ray.cluster_resources()
    return (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} with {total.get('CPU', 0):g} "
            f"CPUs and {total.get('GPU', 0):g} GPUs in all; the largest has "
            f"{big.get('CPU', 0):g} CPUs, {big.get('GPU', 0):g} GPUs and "
            f"{gigabytes(big.get('memory', 0))} of memory for tasks")


def resolve_device(requested: str) -> str:
    """The torch device cells run on: 'auto' is cuda when the cluster has GPUs, else cpu;
    'cuda' on a cluster without GPUs is refused at once (it would wait forever)."""
    if requested == "cpu":
        return "cpu"
    gpus = sum(node.get("GPU", 0) for node in _nodes())
    if requested == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if gpus == 0:
        raise UserError(f"--device {requested}: the Ray cluster has no GPU "
                        f"({describe_cluster()}). Use --device cpu (or auto), or add a GPU "
                        "node to the cluster.")
    return requested


def check_request(request: Request, unit: str, detail: str, hint: str) -> None:
    """Refuse, in one paragraph, a per-unit request that no live node can meet (Ray would
    queue it forever). `unit` names one unit of work ("training cell"), `detail` what the
    request was computed from, `hint` what the user can change."""
    wanted = request.as_ray()
    if any(all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in _nodes()):
        return
    raise UserError(f"each {unit} asks Ray for {request.describe()} ({detail}), but no node "
                    f"of the cluster has that: {describe_cluster()}. Nothing was submitted. "
                    f"{hint}")


def fan_out(fn: Callable, items: list, *, shared: tuple = (),
            resources: Request | Callable[[object], Request], max_retries: int,
            on_done: Callable[[object, object, BaseException | None], None]) -> None:
    """Run `fn(item, *shared)` for every item as Ray tasks (`shared` values are placed in the
    object store once and handed to every task); call `on_done(item, result, error)` as each
    finishes, in completion order, on the driver (which is where results are written).
    `resources` is one request for every item, or a function giving each item's request.

    Ray retries a task whose worker died (node loss, OOM kill) and, with
    `retry_exceptions`, one that raised: up to `max_retries` times in both cases. The error
    of the last attempt reaches `on_done`; the remaining items go on regardless.
    """
    ensure_connected()
    remote = ray.remote(fn)
    refs = [ray.put(value) for value in shared]
    request = resources if callable(resources) else (lambda item: resources)
    pending = {remote.options(max_retries=max_retries, retry_exceptions=True,
                              **_ray_options(request(item))).remote(item, *refs): item
               for item in items}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        item = pending.pop(ready[0])
        try:
            result, error = ray.get(ready[0]), None
        except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as err:
            result, error = None, err
        on_done(item, result, error)


def units_that_fit(request: Request) -> int:
    """How many units of this request the live nodes can run at the same time."""
    wanted = {k: v for k, v in request.as_ray().items() if v > 0}
    return sum(int(min(node.get(k, 0.0) // v for k, v in wanted.items())) for node in _nodes())


def _ray_options(request: Request) -> dict:
    out = {"num_cpus": request.cpus, "memory": request.memory}
    if request.gpus:
        out["num_gpus"] = request.gpus
    return out


@ray.remote(num_cpus=1)
class CorpusShard:
    """A slice of the training reviews (token ids) and the means to embed it on the spot.

    The dense (n, L*d) float matrix is built here, from ids, and never leaves the actor:
    other shards send their Gram column slabs to the first shard, which holds the reduced
    Gram and its Cholesky factor; the driver receives only statistics, matrix-vector
    products and solves.
    """

    def __init__(self, tokens: pa.Array, table: np.ndarray,
                 block_rows: int = BLOCK_ROWS) -> None:
        self._block_rows = block_rows
        self._tokens = tokens
        self._table = table  # read-only, shared with the node's other shards (object store)
        self._L: int | None = None
        self._cache: list[tuple[np.ndarray, int]] | None = None
        self._acc: MomentAccumulator | None = None
        self._factor: Factorization | None = None
        self._threads = 1

    def rows(self) -> int:
        return len(self._tokens)

    def _tails(self, L: int) -> list[tuple[np.ndarray, int]]:
        """The shard embedded at length L as float32 row blocks, longest reviews first,
        each kept from its first non-padding column on: [(tail, start)], cached for the
        latest L.

        Pre-padding leaves a review of k tokens zero before column (L - k)·d, so sorting by
        kept length lets every block drop its leading all-padding columns (see
        MomentAccumulator.add_trailing): at L = 300 on IMDB the tails hold ~0.65 of the full
        matrix. GloVe is float32, so keeping them in float32 loses nothing: every product
        converts a few cache-sized rows at a time to float64 (exactly), which halves the
        memory the shard holds and the traffic of each matrix-free product.
        """
        if self._L != L:
            self._cache = None  # free the previous L first
            table = self._table
            d = table.shape[1]
            kept = np.minimum(np.diff(self._tokens.offsets.to_numpy()), L)
            order = np.argsort(-kept, kind="stable")
            tails = []
            for r0 in range(0, len(order), self._block_rows):
                rows = order[r0:r0 + self._block_rows]
                ids = pad_ids(self._tokens.take(pa.array(rows)), L, pad_id=table.shape[0] - 1)
                first = L - int(kept[rows[0]])
                tails.append((table[ids[:, first:]].reshape(len(rows), -1), d * first))
            self._cache, self._L = tails, L
        return self._cache

    def accumulate(self, L: int) -> DataStats:
        """Partial float64 Gram of this shard (upper triangle) and its data statistics."""
        dim = L * self._table.shape[1]
        self._acc = MomentAccumulator(dim, block_rows=self._block_rows)
        for tail, start in self._tails(L):
            if start < dim:  # a block of empty reviews adds only its count
                self._acc.add_trailing(tail, start)
            else:
                self._acc.add_stats(DataStats(len(tail), dim, 0.0, np.zeros(dim), 0.0))
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
            self._factor = factorize(sigma, acc.n)
        return self._factor.trace, self._factor.seconds

    def solve(self, V: np.ndarray) -> np.ndarray:
        """Σ⁻¹ V with the factor held here, on the factorization's BLAS threads."""
        assert self._factor is not None, "factorize() first"
        with threadpool_limits(limits=self._threads, user_api="blas"):
            return self._factor.solve(V)

    def matmat(self, L: int, V: np.ndarray) -> np.ndarray:
        """Xᵀ (X V) over this shard in float64, block by block; V is (D,) or (D, k)."""
        V2 = V.reshape(V.shape[0], -1)
        out = np.zeros(V2.shape, order="F")
        for tail, start in self._tails(L):
            # A few rows at a time, so the second product re-reads them from cache (with
            # few vectors both products are bound by memory traffic, not arithmetic), and
            # added into `out` in place: a temporary (D, k) product per chunk cost more.
            step = max(1, _CACHE_BYTES // (8 * tail.shape[1]))
            part, V_part = out[start:], V2[start:]
            for r0 in range(0, tail.shape[0], step):
                rows = tail[r0:r0 + step].astype(np.float64)
                gemm_update(part, rows.T, rows @ V_part)
        return out.reshape(V.shape)

    def release(self) -> None:
        self._cache, self._L, self._acc, self._factor = None, None, None, None


def _get(refs):
    """`ray.get`, re-raising a UserError from an actor as itself, so its message reaches the
    user as written (e.g. a singular Σ) instead of inside a Ray traceback."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserError):
            raise err.cause from None
        raise


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
    def create(cls, tokens: pa.Array, table: np.ndarray, workers: int,
               block_rows: int = BLOCK_ROWS, memory: int | None = None) -> ShardPool:
        """Shard the reviews' token ids over `workers` actors, each reserving `memory`
        bytes of its node when given. `table` is the (vocabulary + 1, d) embedding table;
        it goes to the object store once, so the shards of a node share one copy and
        workers need no GloVe files of their own."""
        ensure_connected()
        tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
        bounds = np.linspace(0, len(tokens), workers + 1).astype(int)
        table_ref = ray.put(np.ascontiguousarray(table, dtype=np.float32))
        shard = CorpusShard.options(memory=memory) if memory else CorpusShard
        actors = [shard.remote(tokens.slice(a, b - a), table_ref, block_rows)
                  for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
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
        _get([a.rows.remote() for a in self.actors])
        t1 = time.perf_counter()
        stats = _get([a.accumulate.remote(L) for a in self.actors])
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
                _get(adds[-2])
        _get(adds + [a.release_gram.remote() for a in rest])
        self._stats = stats
        self.seconds.update(ready=t1 - t0, accumulate=t2 - t1,
                            reduce=time.perf_counter() - t2)
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
            total.add_upper_columns(c0, _get(self.actors[0].drain_gram_columns.remote(c0, c1)))
        return total

    def factorize(self) -> Factorization:
        """Factorize Σ in place in the first shard, which holds it after :meth:`reduce_gram`,
        on as many BLAS threads as the pool has CPUs on that node; Σ⁻¹ comes back as an
        operator whose solves run there (only (D, k) blocks cross the network).
        """
        head = self.actors[0]
        others = functools.reduce(DataStats.merge, self._stats[1:],
                                  DataStats.empty(self._stats[0].dim))
        nodes = _get([a.node.remote() for a in self.actors])
        threads = sum(node == nodes[0] for node in nodes)
        trace, seconds = _get(head.factorize.remote(others, threads))

        def solve(V: np.ndarray) -> np.ndarray:
            return _get(head.solve.remote(np.ascontiguousarray(V, dtype=np.float64)))

        return Factorization(solve, trace, seconds)

    def spectrum(self, L: int, **options) -> SpectrumResult:
        """:func:`certified_spectrum` of Σ at L (after :meth:`reduce_gram`): Σ factorized in
        the first shard, the Lanczos iterations driven from here; ``options`` go through.

        The driver's own linear algebra between remote calls (orthogonalization, small
        eigenproblems) runs on one BLAS thread: with more, OpenBLAS's idle threads keep
        spinning after each call on the cores the actors then compute on (on 2 cores the
        top Lanczos at L = 100 took 3.1 s with two driver threads, 1.7 s with one).
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return certified_spectrum(self.factorize(), self.second_moment_operator(L), self.n,
                                      self._stats[0].dim, **options)

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
