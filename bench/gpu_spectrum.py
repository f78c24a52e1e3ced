"""The data bundle of bench/bench_gpu_study.py and its spectrum phase (no Ray, no Prefect).

The spectrum runs in this process: one shard holds every training review, the torch path
accumulates the Gram, factors Σ and solves on the device, the CPU path does the same with
numpy/OpenBLAS; both are certified by the same matrix-free operator on the raw data. Each
gives a row of schemas.SPECTRUM.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rnngen.corpus import select_split
from rnngen.shard import ShardData
from rnngen.spectrum import certified_spectrum, factorize


@dataclass(frozen=True)
class BundleCorpus:
    """The corpus as the bundle carries it: token ids (last 300 per review) and the GloVe
    rows they use (last row zeros), with the corpus' data_key."""

    table: pa.Table
    embeddings: np.ndarray
    data_key: str = "bench"

    @property
    def pad_id(self) -> int:
        return self.embeddings.shape[0] - 1

    @classmethod
    def load(cls, folder: Path) -> BundleCorpus:
        missing = [f for f in ("corpus.parquet", "glove.npy") if not (folder / f).is_file()]
        if missing:
            raise SystemExit(
                f"the bundle {folder} lacks {missing}: make it here with `python -m "
                f"bench.bench_gpu_study --make-bundle {folder}` and carry it (--bundle)."
            )
        info_path = folder / "bundle.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        return cls(
            pq.read_table(folder / "corpus.parquet"),
            np.load(folder / "glove.npy"),
            info.get("data_key", "bench"),
        )

    def describe(self) -> str:
        return (
            f"{self.table.num_rows} reviews, {self.embeddings.shape[0]} GloVe rows, "
            f"data_key {self.data_key}"
        )

    def train_tokens(self) -> pa.Array:
        return select_split(self.table, "train").column("token_ids").combine_chunks()


def spectrum_row(corpus: BundleCorpus, L: int, device: str | None) -> dict[str, Any]:
    """λ_min(Σ) of the whole training split at L, timed from the raw ids: the Gram, its
    factor and solves on torch `device`, or with numpy when None; a schemas.SPECTRUM row."""
    tokens = corpus.train_tokens()
    n, dim = len(tokens), L * corpus.embeddings.shape[1]
    t0 = time.perf_counter()
    acc = ShardData(tokens, corpus.embeddings, device=device).accumulate(L)
    stats = acc.stats()
    sigma = acc.second_moment(symmetrize=False)
    t_gram = time.perf_counter() - t0
    if device is None:
        factor = factorize(sigma, n)
    else:
        from rnngen.gram_torch import factorize_torch

        factor = factorize_torch(sigma, n)
    certificate = ShardData(tokens, corpus.embeddings)  # numpy, on the raw data

    def apply(V: np.ndarray) -> np.ndarray:
        return certificate.matmat(L, V) / n

    result = certified_spectrum(factor, apply, n, dim)
    good = result.converged
    where = "numpy/OpenBLAS" if device is None else f"torch on {device}"
    return {
        "L": L,
        "n": n,
        "dim": dim,
        "lambda_min": result.lambda_min if good else None,
        "lambda_min_estimate": result.lambda_min,
        "lambda_min_residual": result.lambda_min_residual,
        "lambda_min_error_bound": result.lambda_min_error_bound,
        "lambda_max": result.lambda_max,
        "lambda_max_residual": result.lambda_max_residual,
        "condition": result.condition,
        "trace": result.trace,
        "method": f"bench_gpu_study: Gram, Cholesky and solves with {where}; certified by "
        "the matrix-free operator on the raw data",
        "iterations": result.iterations,
        "iterations_top": result.iterations_top,
        "status": "certified" if good else "uncertified",
        "message": result.message,
        "seconds": time.perf_counter() - t0,
        "seconds_gram": t_gram,
        "seconds_factor": result.seconds.get("factor"),
        "seconds_lanczos": result.seconds.get("lanczos_top", 0)
        + result.seconds.get("lanczos_bottom", 0),
        "workers": 1,
        "data_key": corpus.data_key,
        "smallest": result.smallest,
        "smallest_residuals": result.smallest_residuals,
        "largest": result.largest,
        "frob_X": stats.frobenius,
        "norm1_XT": stats.norm1_T,
        "B": stats.B,
    }


def spectrum_both(corpus: BundleCorpus, L: int, device: str) -> tuple[dict, dict]:
    """(torch on `device`, the CPU path) at L, each timed from the raw ids to λ_min."""
    return spectrum_row(corpus, L, device), spectrum_row(corpus, L, None)
