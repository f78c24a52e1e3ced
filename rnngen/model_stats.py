"""Statistics of one trained model over its own training set, for the bound terms.

Streams the training sequences in batches (never the whole float matrix), clean and with
the recorded noise draw of training: `rnngen.train.split_batches` with the spec's
evaluation-noise stream (a CPU stream whatever device trained the run) and its
evaluation batch size reproduces that draw bit for bit.
"""

from __future__ import annotations

import numpy as np

from rnngen.bounds import ModelDataStats
from rnngen.corpus import SplitArrays
from rnngen.specs import RunSpec
from rnngen.train import embedding_tensor, seed_streams, split_batches


def model_stats(
    weights: dict[str, np.ndarray], spec: RunSpec, train: SplitArrays, embeddings: np.ndarray
) -> tuple[ModelDataStats, ModelDataStats | None]:
    """(clean, noisy) statistics of the model on its training set; noisy is None at σ = 0."""
    U, W, V = weights["U"], weights["W"], weights["V"]
    table = embedding_tensor(embeddings)
    bs = spec.eval_batch_size
    clean = ModelDataStats(U, W, V)
    for x, y in split_batches(train, table, bs):
        clean.update(x.numpy(), y.numpy())
    if spec.sigma == 0.0:
        return clean, None
    noisy = ModelDataStats(U, W, V)
    for x, y in split_batches(train, table, bs, spec.sigma, seed_streams(spec).eval_noise):
        noisy.update(x.numpy(), y.numpy())
    return clean, noisy
