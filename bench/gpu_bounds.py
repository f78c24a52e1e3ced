"""The bounds phase of bench/bench_gpu_study.py: every model's bound statistics with ALL its
training sequences as one batch per time step on the device.

`rnngen.model_stats` feeds `TorchModelDataStats` batches of `eval_batch_size` (250) rows:
at L = 300 that is 100 batches × 300 steps × ~7 small kernels per model, ~200k kernel
launches (~720k before its one-pass engine). Here the whole clean training set lives on
the device as one (n, L, d) float32 tensor, shared by every model of one L, and a model's
clean and noisy statistics take one `update_pair` over all n rows (chunked only when the
device's free memory asks for it): ~7 launches per time step.

The noisy side must be the recorded noise draw of training (`rnngen.train.split_batches`
with the run's eval_noise stream, a CPU stream): :func:`recorded_noise` draws it exactly
so, `eval_batch_size` rows at a time, and x + σ ε is formed on the device in float32 as
split_batches forms it (a test checks the two bit for bit). The CPU draws are the slow part
(~375M normals per model at L = 300), so :class:`Prefetched` draws the next models' noise
on other cores while the device works.

The rows are those of tasks/bounds.py's `model_rows` (which imports Ray, absent on the GPU
machine): `rnngen.bounds.bound_row` over the α grid, the union bound over it, the best α.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from rnngen import bounds as B
from rnngen.bound_stats_torch import TorchModelDataStats, update_pair
from rnngen.corpus import SplitArrays
from rnngen.specs import RunSpec
from rnngen.train import embed, embedding_tensor, seed_streams

T = TypeVar("T")
R = TypeVar("R")

DELTA = 0.05  # the bounds stage's default δ (rnngen.settings.BoundsSettings)
NOISE_DRAW = (
    "one evaluation draw of N(0, σ²) per training sequence (the run's eval_noise stream), "
    "not the draws seen in training"
)
INPUT_COLUMNS = ("beta_U", "beta_V", "beta_W", "r_fs", "r_fr", "frob_X", "norm1_XT", "lambda_min")


# ------------------------------------------------------------------------------- inputs


def recorded_noise(spec: RunSpec, n: int, d: int) -> torch.Tensor:
    """ε of the recorded noisy draw of a training set of n sequences: (n, L, d) float32 on
    the CPU, drawn as `split_batches(train, table, spec.eval_batch_size, spec.sigma,
    seed_streams(spec).eval_noise)` draws it (one randn per batch, in order)."""
    generator = seed_streams(spec).eval_noise
    eps = torch.empty((n, spec.L, d), dtype=torch.float32)
    bs = spec.eval_batch_size
    for start in range(0, n, bs):
        rows = min(bs, n - start)
        eps[start : start + rows] = torch.randn(
            (rows, spec.L, d), generator=generator, device=generator.device, dtype=torch.float32
        )
    return eps


class Prefetched(Iterator[tuple[T, R]]):
    """(item, fn(item)) in order, fn running on `workers` threads from construction on, at
    most `workers` items ahead of the consumer (torch's CPU kernels release the GIL). A
    context manager: leaving it early cancels what has not started."""

    def __init__(self, items: Iterable[T], fn: Callable[[T], R], workers: int) -> None:
        self._todo = iter(list(items))
        self._fn = fn
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self._queue: deque[tuple[T, Future[R]]] = deque()
        for _ in range(max(1, workers)):
            self._submit()

    def _submit(self) -> None:
        """Start the next item, if any is left."""
        for item in self._todo:
            self._queue.append((item, self._pool.submit(self._fn, item)))
            return

    def __next__(self) -> tuple[T, R]:
        if not self._queue:
            raise StopIteration
        item, future = self._queue.popleft()
        self._submit()
        return item, future.result()

    def __enter__(self) -> Prefetched[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def noise_workers(L: int, d: int, n: int) -> int:
    """Threads drawing noise ahead: the cores, but no more draws in flight than a quarter
    of the host memory holds."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        host = 8 << 30
    per_draw = 4 * n * L * d
    return max(1, min(cores, 12, int(host / 4 // max(per_draw, 1))))


def chunk_rows(device: torch.device, n: int, L: int, d: int, m: int, chunk: int | None) -> int:
    """Sequences per update: all n unless the device's free memory asks for fewer (or
    `chunk` is given). In `update_pair` a sequence costs its float32 noisy sum (4 L d
    bytes), the float64 copies of its clean and noisy rows (16 L d), one |x| temporary
    (8 L d) and ~12 float64 vectors of the hidden size (states, masks, outputs)."""
    if chunk is not None:
        return max(1, min(chunk, n))
    if device.type != "cuda":
        return n
    torch.cuda.empty_cache()  # what the allocator holds from earlier phases is free too
    free, _ = torch.cuda.mem_get_info(device)
    per_row = 28 * L * d + 12 * 8 * m
    return max(1, min(n, int(0.6 * free // per_row)))


# -------------------------------------------------------------------------- statistics


def batched_stats(
    weights: dict[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    rows: int,
    noise: tuple[float, torch.Tensor] | None = None,
) -> tuple[TorchModelDataStats, TorchModelDataStats | None]:
    """(clean, noisy) statistics of a model over x (n, L, d) float32 and labels y (n,),
    both on `device`, `rows` sequences per update (all n in one when memory allows).

    `noise` = (σ, ε), ε (n, L, d) float32 on the CPU: the noisy side is x + σ ε, formed
    on the device in float32 as split_batches forms it, and goes through the same pass as
    the clean side (`update_pair`); without it, only the clean statistics (noisy None)."""
    U, W, V = weights["U"], weights["W"], weights["V"]
    if noise is None:
        clean = TorchModelDataStats(U, W, V, device)
        for start in range(0, x.shape[0], rows):
            clean.update(x[start : start + rows], y[start : start + rows])
        return clean, None
    sigma, eps = noise
    clean, noisy = TorchModelDataStats.pair(U, W, V, device)
    for start in range(0, x.shape[0], rows):
        part = x[start : start + rows]
        noisy_part = part + sigma * eps[start : start + rows].to(device, non_blocking=True)
        update_pair(clean, noisy, part, noisy_part, y[start : start + rows])
    return clean, noisy


def device_inputs(
    train: SplitArrays, embeddings: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(table, x, y) on the device: the embedding table, the clean (n, L, d) float32 inputs
    of the whole training split (embedded there, as split_batches embeds) and its labels."""
    table = embedding_tensor(embeddings).to(device)
    return table, embed(train.ids, table), torch.from_numpy(train.labels).to(device)


# --------------------------------------------------------------------------------- rows


def _base(spec: RunSpec, gen_error: float | None) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "group_id": spec.group_id,
        "experiment_id": spec.experiment_id,
        "L": spec.L,
        "sigma": spec.sigma,
        "seed": spec.seed,
        "hidden": spec.hidden,
        "gen_error": gen_error,
        "data_key": spec.data_key,
    }


def _first_non_finite(row: dict[str, Any]) -> str | None:
    for name in (*INPUT_COLUMNS, *B.TERM_COLUMNS):
        value = row.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def bound_rows(
    spec: RunSpec,
    clean: B.ModelDataStats,
    noisy: B.ModelDataStats | None,
    lambda_min: float,
    gen_error: float | None,
    delta: float = DELTA,
    grid: tuple[float, ...] = B.DEFAULT_ALPHA_GRID,
) -> list[dict[str, Any]]:
    """One row per α of `grid` (schemas.BOUNDS columns), as tasks/bounds.py's model_rows."""
    per_alpha = B.union_bound_delta(delta, len(grid))
    rows = []
    for alpha in grid:
        terms = B.bound_row(
            clean, noisy, alpha=alpha, sigma=spec.sigma, lambda_min=lambda_min, delta=per_alpha
        )
        row = (
            _base(spec, gen_error)
            | terms
            | B.thm2_clean_columns(clean, alpha=alpha, lambda_min=lambda_min)
            | {
                "alpha": float(alpha),
                "delta": per_alpha,
                "delta_total": delta,
                "alpha_grid_size": len(grid),
                "alpha_rule": B.DEFAULT_ALPHA_RULE,
                "n": clean.n,
                "noise_draw": NOISE_DRAW,
                "status": "ok",
                "reason": "",
            }
        )
        bad = _first_non_finite(row)
        if bad is not None:
            row["status"] = "non_finite"
            row["reason"] = f"{bad} is {row[bad]} at α={alpha:g}: the first non-finite input"
        rows.append(row)
    finite = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    best = min(finite, key=lambda i: rows[i]["bound_thm3"]) if finite else -1
    for i, row in enumerate(rows):
        row["alpha_best"] = i == best
    return rows


def rows_rel_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """Largest relative difference between the float columns of two models' rows; inf
    where they disagree on a null, NaN or inf."""
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for name, va in ra.items():
            vb = rb[name]
            if isinstance(va, bool) or not isinstance(va, float | None):
                continue
            if va is None or vb is None:
                if va is not vb:
                    return math.inf
            elif not (math.isfinite(va) and math.isfinite(vb)):
                if not (va == vb or (math.isnan(va) and math.isnan(vb))):
                    return math.inf
            else:
                worst = max(worst, abs(va - vb) / max(abs(va), abs(vb), 1e-300))
    return worst


# ------------------------------------------------------------------------------- phase


def bounds_of_length(
    models: list[tuple[RunSpec, dict[str, np.ndarray], float | None]],
    train: SplitArrays,
    embeddings: np.ndarray,
    lambda_min: float,
    device: str,
    chunk: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every model's rows at one L (all models share `train`), and how it went: the rows
    per update, the noise threads, the seconds spent waiting for noise."""
    dev = torch.device(device)
    _, x, y = device_inputs(train, embeddings, dev)
    n, L, d = x.shape
    m = max(w["W"].shape[0] for _, w, _ in models)
    rows_per_update = chunk_rows(dev, n, L, d, m, chunk)
    workers = noise_workers(L, d, n)
    noisy_specs = [spec for spec, _, _ in models if spec.sigma > 0.0]
    out: list[dict[str, Any]] = []
    waited = 0.0
    with Prefetched(noisy_specs, lambda s: recorded_noise(s, n, d), workers) as noises:
        for spec, weights, gen_error in models:
            began = time.perf_counter()
            noise = None
            if spec.sigma > 0.0:
                t0 = time.perf_counter()
                noise_spec, eps = next(noises)
                waited += time.perf_counter() - t0
                assert noise_spec is spec
                noise = (spec.sigma, eps)
            clean, noisy = batched_stats(weights, x, y, dev, rows_per_update, noise)
            del noise
            rows = bound_rows(spec, clean, noisy, lambda_min, gen_error)
            seconds = time.perf_counter() - began
            out.extend(row | {"seconds": seconds} for row in rows)
    return out, {
        "rows_per_update": rows_per_update,
        "noise_threads": workers,
        "noise_wait_s": waited,
    }
