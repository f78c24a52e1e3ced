"""Statistics of one trained model over its own training set, for the bound terms.

Streams the training sequences in batches (never the whole float matrix), clean and with
the recorded noise draw of training: `rnngen.train.split_batches` with the spec's
evaluation-noise stream (a CPU stream whatever device trained the run) and its
evaluation batch size reproduces that draw bit for bit.

The sums run in float64 numpy (the reference: every path, as the bounds define it) or in
float64 torch on a device (`rnngen.bound_stats_torch`). On torch the clean and the noisy
batch go through one pass together (`update_pair`), which computes only what the bounds
read. Either way the batches, noise included, are made on the CPU exactly as here, so
every path sees the same inputs; the torch path copies each finished batch to its device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from rnngen.bound_stats_torch import TorchModelDataStats, update_pair
from rnngen.bounds import ModelDataStats
from rnngen.corpus import SplitArrays, split_arrays
from rnngen.specs import RunSpec
from rnngen.train import add_noise, embedding_tensor, seed_streams, split_batches

NUMPY = "numpy"

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]

# train_split's cache: (id of the table, pad id, L, n_train) -> (the table, its split).
_SPLITS: dict[tuple[int, int, int, int | None], tuple[pa.Table, SplitArrays]] = {}


def train_split(table: pa.Table, pad_id: int, spec: RunSpec) -> SplitArrays:
    """The training split of ``spec`` (`rnngen.train.spec_splits`' first), built once per
    (table, L, n_train) in this process: the models of one L share it.

    The cache holds the table it was built from and answers only for that very object, so a
    new table (or one rebuilt with the same contents) builds anew; a new table also empties
    the cache, which so holds one corpus at a time. The split is shared: do not modify it.
    """
    key = (id(table), pad_id, spec.L, spec.n_train)
    held = _SPLITS.get(key)
    if held is not None and held[0] is table:
        return held[1]
    if any(other is not table for other, _ in _SPLITS.values()):
        _SPLITS.clear()
    split = split_arrays(table, "train", spec.L, pad_id, limit=spec.n_train)
    _SPLITS[key] = (table, split)
    return split


def clean_and_noisy_batches(
    train: SplitArrays, table: torch.Tensor, spec: RunSpec
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, x + ε, y) for each batch of `split_batches` (clean, the spec's batch size).

    x + ε is what ``split_batches(train, table, bs, σ, seed_streams(spec).eval_noise)``
    yields for the same batch: that generator embeds the batch and adds `add_noise` from
    the eval_noise stream, batch after batch, which is what happens here, with one
    embedding per batch instead of two.
    """
    generator = seed_streams(spec).eval_noise
    for x, y in split_batches(train, table, spec.eval_batch_size):
        yield x, add_noise(x, spec.sigma, generator), y


def _feed_numpy(stats: ModelDataStats, batches: Batches) -> ModelDataStats:
    """Feed CPU batches to the numpy statistics, as numpy arrays."""
    for x, y in batches:
        stats.update(x.numpy(), y.numpy())
    return stats


def _numpy_stats(
    U: np.ndarray,
    W: np.ndarray,
    V: np.ndarray,
    spec: RunSpec,
    train: SplitArrays,
    table: torch.Tensor,
) -> tuple[ModelDataStats, ModelDataStats | None]:
    """The reference: clean and noisy fed separately to float64 numpy `ModelDataStats`."""
    bs = spec.eval_batch_size
    clean = _feed_numpy(ModelDataStats(U, W, V), split_batches(train, table, bs))
    if spec.sigma == 0.0:
        return clean, None
    noisy_batches = split_batches(train, table, bs, spec.sigma, seed_streams(spec).eval_noise)
    return clean, _feed_numpy(ModelDataStats(U, W, V), noisy_batches)


def _three_path_stats(
    U: np.ndarray,
    W: np.ndarray,
    V: np.ndarray,
    spec: RunSpec,
    train: SplitArrays,
    table: torch.Tensor,
    device: str,
) -> tuple[ModelDataStats, ModelDataStats | None]:
    """The old torch path: clean and noisy passes each with forward, η and τ recurrences."""
    bs = spec.eval_batch_size
    clean = TorchModelDataStats(U, W, V, device)
    for x, y in split_batches(train, table, bs):
        clean.update_three_paths(x, y)
    if spec.sigma == 0.0:
        return clean, None
    noisy = TorchModelDataStats(U, W, V, device)
    for x, y in split_batches(train, table, bs, spec.sigma, seed_streams(spec).eval_noise):
        noisy.update_three_paths(x, y)
    return clean, noisy


def model_stats(
    weights: dict[str, np.ndarray],
    spec: RunSpec,
    train: SplitArrays,
    embeddings: np.ndarray,
    device: str | None = None,
    *,
    one_pass: bool = True,
) -> tuple[ModelDataStats, ModelDataStats | None]:
    """(clean, noisy) statistics of the model on its training set; noisy is None at σ = 0.

    ``device``: None or "numpy" for float64 numpy; a torch device ("cpu", "cuda", "cuda:0")
    for float64 torch there (`TorchModelDataStats`, which `bound_row` reads alike). On
    torch at σ > 0 the clean statistics skip η(θ)c, which the bounds never read there (their
    ``r_fr`` raises). ``one_pass=False`` runs the old torch path instead (clean and noisy
    apart, three recurrences each, every statistic): bench/bench_bounds.py's baseline.
    """
    U, W, V = weights["U"], weights["W"], weights["V"]
    table = embedding_tensor(embeddings)
    if device is None or device == NUMPY:
        return _numpy_stats(U, W, V, spec, train, table)
    if not one_pass:
        return _three_path_stats(U, W, V, spec, train, table, device)
    if spec.sigma == 0.0:
        stats = TorchModelDataStats(U, W, V, device)
        for x, y in split_batches(train, table, spec.eval_batch_size):
            stats.update(x, y)
        return stats, None
    clean, noisy = TorchModelDataStats.pair(U, W, V, device)
    for x, x_noisy, y in clean_and_noisy_batches(train, table, spec):
        update_pair(clean, noisy, x, x_noisy, y)
    return clean, noisy
