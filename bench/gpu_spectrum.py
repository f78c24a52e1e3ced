"""The data bundle of bench/bench_gpu_study.py and its spectrum step (no Ray, no Prefect).

The spectrum runs in this process: one shard holds every training review, the torch path
accumulates the Gram, factors Σ and solves on the device, the CPU path does the same with
numpy/OpenBLAS; both are certified by the same matrix-free operator on the raw data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rnngen.corpus import select_split
from rnngen.shard import ShardData
from rnngen.spectrum import certified_spectrum, factorize


@dataclass(frozen=True)
class BundleCorpus:
    """The corpus as the bundle carries it: token ids (last 300 per review) and the GloVe
    rows they use (last row zeros)."""

    table: pa.Table
    embeddings: np.ndarray

    @property
    def pad_id(self) -> int:
        return self.embeddings.shape[0] - 1

    @classmethod
    def load(cls, folder: Path) -> BundleCorpus:
        return cls(pq.read_table(folder / "corpus.parquet"), np.load(folder / "glove.npy"))

    def describe(self) -> str:
        return f"{self.table.num_rows} reviews, {self.embeddings.shape[0]} GloVe rows"

    def train_tokens(self) -> pa.Array:
        return select_split(self.table, "train").column("token_ids").combine_chunks()


def _spectrum(corpus: BundleCorpus, L: int, device: str | None) -> dict:
    tokens = corpus.train_tokens()
    n, dim = len(tokens), L * corpus.embeddings.shape[1]
    t0 = time.perf_counter()
    acc = ShardData(tokens, corpus.embeddings, device=device).accumulate(L)
    sigma = acc.second_moment(symmetrize=False)
    if device is None:
        factor = factorize(sigma, n)
    else:
        from rnngen.gram_torch import factorize_torch

        factor = factorize_torch(sigma, n)
    certificate = ShardData(tokens, corpus.embeddings)  # numpy, on the raw data

    def apply(V: np.ndarray) -> np.ndarray:
        return certificate.matmat(L, V) / n

    result = certified_spectrum(factor, apply, n, dim)
    return {
        "lambda_min": result.lambda_min,
        "residual": result.lambda_min_residual,
        "certified": result.converged,
        "seconds": time.perf_counter() - t0,
    }


def spectrum_both(corpus: BundleCorpus, L: int, device: str) -> tuple[dict, dict]:
    """(torch on `device`, the CPU path) at L, each timed from the raw ids to λ_min."""
    return _spectrum(corpus, L, device), _spectrum(corpus, L, None)
