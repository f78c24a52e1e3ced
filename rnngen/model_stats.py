"""Statistics of one trained model over its own training set, for the bound terms.

Streams the training sequences in batches (never the whole float matrix), clean and
with the recorded noise draw of training (`rnngen.train.split_batches` with the spec's
evaluation-noise stream reproduces it bit for bit on the device it was drawn on).
"""

from __future__ import annotations

import numpy as np
import torch

from rnngen.bounds import ModelDataStats
from rnngen.corpus import SplitArrays
from rnngen.specs import RunSpec
from rnngen.train import seed_streams, split_batches


def noise_device(spec: RunSpec) -> str:
    """Where to redraw the recorded noise: the training device if present, else the CPU."""
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return spec.device


def model_stats(weights: dict[str, np.ndarray], spec: RunSpec, train: SplitArrays,
                embeddings: np.ndarray, batch_size: int | None = None
                ) -> tuple[ModelDataStats, ModelDataStats | None]:
    """(clean, noisy) statistics of the model on its training set; noisy is None at σ = 0."""
    U, W, V = weights["U"], weights["W"], weights["V"]
    device = noise_device(spec)
    table = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
    bs = batch_size or spec.eval_batch_size
    clean = ModelDataStats(U, W, V)
    for x, y in split_batches(train, table, bs):
        clean.update(x.cpu().numpy(), y.cpu().numpy())
    if spec.sigma == 0.0:
        return clean, None
    # The same batch size and stream as the trainer's measurement: the same noisy set.
    streams = seed_streams(spec.model_copy(update={"device": device}))
    noisy = ModelDataStats(U, W, V)
    for x, y in split_batches(train, table, spec.eval_batch_size, spec.sigma,
                              streams.eval_noise):
        noisy.update(x.cpu().numpy(), y.cpu().numpy())
    return clean, noisy
