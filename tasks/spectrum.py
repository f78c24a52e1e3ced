"""The spectrum stage: certified λ_min / λ_max of E(xxᵀ), one unit per L."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rnngen.corpus import check_length, embed_batch, select_split
from rnngen.errors import UserError
from rnngen.glove import GLOVE_DIM
from rnngen.resources import Request, gigabytes, spectrum_shard_bytes
from rnngen.settings import SpectrumSettings
from rnngen_tasks import ray_pool, run_logger
from rnngen_tasks.corpus import load_corpus
from rnngen_tasks.store import Store

METHOD = (
    "float64 Gram (Ray shards) + in-place Cholesky; shift-invert Lanczos (bottom), "
    "matrix-free distributed Lanczos (top); residuals by the matrix-free operator"
)


class UncertifiedSpectrum(UserError):
    """Lanczos could not certify λ_min to the tolerance; nothing is reported as good."""


def train_tokens(corpus, n_train: int | None) -> pa.Array:
    """Token lists of the training split (the first n_train of each class if limited)."""
    train = select_split(corpus.table, "train")
    if n_train is not None and n_train < train.num_rows:
        labels = train.column("label")
        half = n_train // 2
        keep = np.concatenate(
            [
                np.flatnonzero(pc.equal(labels, c).to_numpy(zero_copy_only=False))[:half]
                for c in (0, 1)
            ]
        )
        train = train.take(np.sort(keep))
    return train.column("token_ids").combine_chunks()


def spectrum_rows(out: str) -> list[dict[str, Any]]:
    return Store(out).rows("spectrum")


def _row_key(row: dict) -> tuple:
    return (row["L"], row["data_key"], row["n"])


def compute_spectrum(
    out: str,
    L: int,
    settings: SpectrumSettings,
    n_train: int | None = None,
    workers: int | None = None,
    check_dense: bool = False,
    max_blocks: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Compute and certify the spectrum of Σ at one L: its row ('certified', or
    'uncertified' with the reason and no λ_min). `device` 'auto' keeps Σ, its factor and
    the solves on the cluster's GPUs when it has any (one shard per GPU), else on CPUs."""
    # Ray, torch and scipy are imported here, not at the top: the command line builds this
    # module's step before anything starts only to ask what is pending.
    from rnngen.gram_torch import DeviceSolverError
    from rnngen.spectrum import check_rank
    from rnngen_tasks.ray_shards import ShardPool

    L = check_length(L, "--L")
    corpus = load_corpus(out)
    tokens = train_tokens(corpus, n_train)
    n, dim = len(tokens), L * GLOVE_DIM
    check_rank(n, dim)
    device = ray_pool.resolve_device(device)
    workers, request = shard_plan(L, n, workers, device)
    logger = run_logger()
    logger.info(f"L={L}: Σ of {n} reviews in dimension {dim}, over {workers} shards")
    t0 = time.perf_counter()
    pool = ShardPool.create(
        tokens, corpus.embeddings, workers, memory=request.memory, gpus=request.gpus
    )
    try:
        stats = pool.reduce_gram(L)
        t_gram = time.perf_counter() - t0
        logger.info(f"L={L}: Gram accumulated and reduced in {t_gram:.1f} s; factorizing Σ")
        result = pool.spectrum(L, tol=settings.tol, max_blocks=max_blocks, progress=logger.info)
    except DeviceSolverError as err:  # recorded as uncertified, with the device's reason
        seconds = time.perf_counter() - t0
        return _failure_row(L, corpus.data_key, n, stats, workers, seconds, str(err))
    finally:
        pool.close()
    seconds = time.perf_counter() - t0
    row = _row(L, corpus.data_key, result, stats, seconds, t_gram, workers)
    if check_dense:
        row.update(_dense_check(corpus, tokens, L, row["lambda_min_estimate"]))
    return row | {"settings_key": settings.settings_key}


def uncertified_error(row: dict[str, Any]) -> UncertifiedSpectrum:
    """The error a stage raises after recording an uncertified row."""
    L = row["L"]
    if "GPU" in (row.get("method") or "") and row.get("lambda_min_residual") is None:
        return UncertifiedSpectrum(
            f"L={L}: λ_min could not be computed on the GPU: {row['message']}"
        )
    return UncertifiedSpectrum(
        f"L={L}: λ_min could not be certified (residual ‖Σv−λv‖ = "
        f"{row['lambda_min_residual']:.3e} for λ = {row['lambda_min_estimate']:.6e}; "
        f"{row['message']}). The row is recorded with status 'uncertified' and no λ_min; "
        "bounds at this L are not computed."
    )


def spectrum_for_length(
    out: str, L: int, settings: SpectrumSettings | None = None, **options: Any
) -> dict[str, Any]:
    """One L outside a grid (tests, benchmarks): compute, record, and raise
    `UncertifiedSpectrum` when λ_min could not be certified."""
    row = compute_spectrum(out, L, settings or SpectrumSettings(), **options)
    store = Store(out)
    store.append("spectrum", [row], {"method": METHOD})
    store.compact("spectrum", {"method": METHOD})
    if row["status"] != "certified":
        raise uncertified_error(row)
    return row


def _recorded(out: str, L: int, data_key: str, n: int, settings_key: str) -> dict | None:
    """The certified row of (L, data_key, n) already on disk under the same settings (a
    row written before rows carried their settings was made with the default tolerance)."""
    default = SpectrumSettings().settings_key
    for row in spectrum_rows(out):
        if (
            _row_key(row) == (L, data_key, n)
            and row["status"] == "certified"
            and (row.get("settings_key") or default) == settings_key
        ):
            return row
    return None


class SpectrumStep:
    """The spectrum stage as a step of the grid executor: one unit per L."""

    stage = "spectrum"

    def __init__(
        self,
        out: str,
        settings: SpectrumSettings,
        n_train: int | None = None,
        workers: int | None = None,
        check_dense: bool = False,
    ) -> None:
        self.out, self.settings = out, settings
        self.n_train, self.workers, self.check_dense = n_train, workers, check_dense
        self.max_retries = settings.max_retries
        self.cancelled = threading.Event()
        self.store = Store(out)
        self.errors: dict[int, str] = {}

    def key(self, L: int) -> str:
        return f"L={L}"

    def name(self, L: int) -> str:
        return f"spectrum L={L}"

    def group(self, L: int) -> int:
        return L

    def recorded(self, L: int) -> dict[str, Any] | None:
        corpus = load_corpus(self.out)
        n = len(train_tokens(corpus, self.n_train))
        row = _recorded(self.out, L, corpus.data_key, n, self.settings.settings_key)
        if row is None or (self.check_dense and row.get("dense_lambda_min") is None):
            return None
        return row

    def pending(self, lengths: list[int]) -> list[int]:
        return [L for L in lengths if self.recorded(L) is None]

    def compute(self, L: int, attempt: int) -> dict[str, Any]:
        return compute_spectrum(
            self.out, L, self.settings, self.n_train, self.workers, self.check_dense
        )

    def record(self, L: int, row: dict[str, Any], attempt: int) -> tuple[str, str]:
        self.store.append("spectrum", [row], {"method": METHOD})
        if row["status"] != "certified":
            return row["status"], f"uncertified: {row['message']}"
        return "certified", (
            f"λ_min = {row['lambda_min']:.6e} (residual {row['lambda_min_residual']:.1e}), "
            f"λ_max = {row['lambda_max']:.4e}, {row['iterations']} block shift-invert steps"
        )

    def record_failure(self, L: int, error: str, attempt: int) -> None:
        """A spectrum that raised records no row (none is better than a wrong one); the
        flow reports the error."""
        self.errors[L] = error

    def compact(self) -> None:
        self.store.compact("spectrum", {"method": METHOD})


def check_spectrum(out: str, lengths: list[int], n_train: int | None = None) -> None:
    """Refuse at once the lengths whose spectrum no node could hold (before a long run
    reaches them); lengths already on disk need nothing and are not checked."""
    corpus = load_corpus(out)
    n = len(train_tokens(corpus, n_train))
    device = None
    key = SpectrumSettings().settings_key
    for L in lengths:
        if _recorded(out, L, corpus.data_key, n, key) is None:
            device = device or ray_pool.resolve_device("auto")
            shard_plan(L, n, device=device)


def _shard_request(L: int, n: int, workers: int, gpus: float = 0.0) -> Request:
    host = spectrum_shard_bytes(n_shard=-(-n // workers), L=L, d=GLOVE_DIM, on_gpu=gpus > 0)
    return Request(1, gpus, host)


def shard_plan(
    L: int, n: int, workers: int | None = None, device: str = "cpu"
) -> tuple[int, Request]:
    """How many shards the spectrum at L uses, and what each asks of Ray.

    On CPUs: one shard per CPU of the cluster, but no more than the nodes can hold in
    memory at once (every shard keeps a (L·d)² Gram): Ray would otherwise wait forever for
    the shards it cannot place, since the reduction needs all of them. On GPUs (`device`
    'cuda'): one shard per GPU, each keeping its Gram, and the first one Σ's factor, on
    its GPU. A request that no node can meet even with one shard is refused at once.
    """
    on_gpu = device.startswith("cuda")
    wanted = workers or (ray_pool.cluster_gpus() if on_gpu else ray_pool.cluster_cpus())
    for count in range(wanted, 0, -1):
        request = _shard_request(L, n, count, 1.0 if on_gpu else 0.0)
        if ray_pool.units_that_fit(request) >= count:
            break
    ray_pool.check_request(
        request,
        "spectrum shard",
        f"L={L}: a {L * GLOVE_DIM}² float64 Gram and {-(-n // count)} reviews",
        "Use a smaller L (the Gram grows as L²) or a node with more memory.",
    )
    if count < wanted:
        print(
            f"spectrum L={L}: {count} shards instead of {wanted}, so that every shard's "
            f"{gigabytes(request.memory)} fits in the cluster's memory at once"
        )
    return count, request


def _failure_row(
    L: int, key: str, n: int, stats, workers: int, seconds: float, reason: str
) -> dict[str, Any]:
    """An uncertified row for a spectrum whose factorization or solves failed on the
    device: no λ_min, the reason, and what was measured before it."""
    return {
        "L": L,
        "n": n,
        "dim": L * GLOVE_DIM,
        "lambda_min": None,
        "status": "uncertified",
        "message": reason,
        "method": METHOD + " (on the GPU)",
        "workers": workers,
        "seconds": seconds,
        "data_key": key,
        "frob_X": stats.frobenius,
        "norm1_XT": stats.norm1_T,
        "B": stats.B,
    }


def _row(L, key, result, stats, seconds, t_gram, workers) -> dict[str, Any]:
    good = result.converged
    return {
        "L": L,
        "n": result.n,
        "dim": result.dim,
        "lambda_min": result.lambda_min if good else None,
        "lambda_min_estimate": result.lambda_min,
        "lambda_min_residual": result.lambda_min_residual,
        "lambda_min_error_bound": result.lambda_min_error_bound,
        "lambda_max": result.lambda_max,
        "lambda_max_residual": result.lambda_max_residual,
        "condition": result.condition,
        "trace": result.trace,
        "method": METHOD,
        "iterations": result.iterations,
        "iterations_top": result.iterations_top,
        "status": "certified" if good else "uncertified",
        "message": result.message,
        "seconds": seconds,
        "seconds_gram": t_gram,
        "seconds_factor": result.seconds.get("factor"),
        "seconds_lanczos": result.seconds.get("lanczos_top", 0)
        + result.seconds.get("lanczos_bottom", 0),
        "workers": workers,
        "data_key": key,
        "smallest": result.smallest,
        "smallest_residuals": result.smallest_residuals,
        "largest": result.largest,
        "frob_X": stats.frobenius,
        "norm1_XT": stats.norm1_T,
        "B": stats.B,
        "dense_lambda_min": None,
        "dense_rel_diff": None,
        "dense_seconds": None,
    }


def _dense_check(corpus, tokens, L, estimate) -> dict[str, Any]:
    from rnngen.spectrum import dense_smallest

    t0 = time.perf_counter()
    x = embed_batch(tokens, L, corpus.embeddings).reshape(len(tokens), -1)
    dense_min, _ = dense_smallest(x)
    return {
        "dense_lambda_min": dense_min,
        "dense_rel_diff": abs(estimate - dense_min) / dense_min,
        "dense_seconds": time.perf_counter() - t0,
    }
