"""Statistics of one trained model over its own training set, for the bound terms.

Streams the training sequences in batches (never the whole float matrix), clean and with
the recorded noise draw of training: `rnngen.train.split_batches` with the spec's
evaluation-noise stream (a CPU stream whatever device trained the run) and its
evaluation batch size reproduces that draw bit for bit.

The sums run in float64 numpy (the default) or in float64 torch on a device
(`rnngen.bound_stats_torch`). Either way the batches, noise included, are made on the CPU
exactly as here, so both paths see the same inputs; the torch path copies each finished
batch to its device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from rnngen.bound_stats_torch import TorchModelDataStats
from rnngen.bounds import ModelDataStats
from rnngen.corpus import SplitArrays
from rnngen.specs import RunSpec
from rnngen.train import embedding_tensor, seed_streams, split_batches

NUMPY = "numpy"


def _new_stats(U: np.ndarray, W: np.ndarray, V: np.ndarray, device: str | None) -> ModelDataStats:
    """Empty statistics: numpy for None or "numpy", else torch on that device."""
    if device is None or device == NUMPY:
        return ModelDataStats(U, W, V)
    return TorchModelDataStats(U, W, V, device)


def _feed(stats: ModelDataStats, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Feed CPU batches: as tensors to the torch path (it moves them), as numpy otherwise."""
    on_torch = isinstance(stats, TorchModelDataStats)
    for x, y in batches:
        if on_torch:
            stats.update(x, y)
        else:
            stats.update(x.numpy(), y.numpy())


def model_stats(
    weights: dict[str, np.ndarray],
    spec: RunSpec,
    train: SplitArrays,
    embeddings: np.ndarray,
    device: str | None = None,
) -> tuple[ModelDataStats, ModelDataStats | None]:
    """(clean, noisy) statistics of the model on its training set; noisy is None at σ = 0.

    ``device``: None or "numpy" for float64 numpy; a torch device ("cpu", "cuda", "cuda:0")
    for float64 torch there (`TorchModelDataStats`, which `bound_row` reads alike).
    """
    U, W, V = weights["U"], weights["W"], weights["V"]
    table = embedding_tensor(embeddings)
    bs = spec.eval_batch_size
    clean = _new_stats(U, W, V, device)
    _feed(clean, split_batches(train, table, bs))
    if spec.sigma == 0.0:
        return clean, None
    noisy = _new_stats(U, W, V, device)
    _feed(noisy, split_batches(train, table, bs, spec.sigma, seed_streams(spec).eval_noise))
    return clean, noisy
