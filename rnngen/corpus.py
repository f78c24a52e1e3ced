"""The tokenized corpus (one Parquet row per review) and its conversion to float sequences.

Reviews are stored as GloVe row ids, never as floats: 50,000 x 300 x 50 floats would be
3 GB. `pad_ids` / `embed_batch` turn a batch of rows into `(batch, L, d)` arrays on
demand, pre-padded and pre-truncated like Keras' `pad_sequences` (keep the LAST L tokens,
zeros in front), so the final hidden state always sits on real text.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rnngen.errors import ParameterError
from rnngen.glove import Glove
from rnngen.hashing import content_key
from rnngen.imdb import SPLITS, Reviews
from rnngen.text import TokenizerConfig, tokenize_many

CORPUS_COLUMNS = ("split", "label", "review_index", "token_ids")


def data_key(source_sha256: str, tokenizer: TokenizerConfig, glove_source: str) -> str:
    """Names the corpus: the raw data's hash, the preprocessing and the embedding."""
    return content_key(
        {"imdb_sha256": source_sha256, "tokenizer": tokenizer.to_dict(), "glove": glove_source},
        length=12,
    )


def token_ids(tokens: pa.LargeListArray, glove: Glove) -> pa.LargeListArray:
    """Map each token to its GloVe row; out-of-vocabulary words get the zero row `pad_id`."""
    ids = pc.index_in(tokens.flatten(), value_set=glove.words)
    ids = pc.fill_null(ids, glove.pad_id).cast(pa.int32())
    return pa.LargeListArray.from_arrays(tokens.offsets, ids)


def corpus_token_ids(
    texts: list[str],
    glove: Glove,
    tokenizer: TokenizerConfig,
    workers: int | None = None,
    chunk: int = 6250,
) -> pa.LargeListArray:
    """Tokenize and map many reviews, in chunks on a thread pool.

    Arrow's compute kernels release the GIL, so threads give real parallelism here
    without copying the corpus into other processes.
    """
    arr = pa.array(texts, type=pa.large_string())
    parts = [arr.slice(i, chunk) for i in range(0, len(arr), chunk)] or [arr]
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = list(pool.map(lambda part: token_ids(tokenize_many(part, tokenizer), glove), parts))
    return pa.concat_arrays(done)


def build_corpus(reviews: Reviews, glove: Glove, tokenizer: TokenizerConfig) -> pa.Table:
    """Tokenize every review and map it to GloVe ids."""
    ids = corpus_token_ids(reviews.texts, glove, tokenizer)
    return pa.table(
        {
            "split": pa.array(reviews.splits.astype(str)).dictionary_encode(),
            "label": pa.array(reviews.labels, pa.int8()),
            "review_index": pa.array(reviews.index, pa.int32()),
            "token_ids": ids,
        }
    )


# The sequence lengths of the paper, which every stage uses when none are given.
DEFAULT_LENGTHS: tuple[int, ...] = (100, 200, 300)


def check_length(L: int, name: str = "L") -> int:
    if not isinstance(L, int | np.integer) or isinstance(L, bool) or L <= 0:
        raise ParameterError(f"{name} must be a positive integer sequence length, got {L!r}.")
    return int(L)


def check_lengths(lengths: list[int] | tuple[int, ...] | None) -> list[int]:
    """The --L values given (validated), or DEFAULT_LENGTHS."""
    return [check_length(L, "--L") for L in (DEFAULT_LENGTHS if lengths is None else lengths)]


def select_split(table: pa.Table, split: str) -> pa.Table:
    """Rows of one split ('train' or 'test'), in stored order."""
    if split not in SPLITS:
        raise ParameterError(f"unknown split {split!r}; use one of {SPLITS}.")
    return table.filter(pc.equal(table.column("split").cast(pa.string()), split))


def pad_ids(token_lists: pa.Array | pa.ChunkedArray, L: int, pad_id: int) -> np.ndarray:
    """(batch, L) int32 ids: the last L tokens of each row, `pad_id` in front of short ones."""
    L = check_length(L)
    if isinstance(token_lists, pa.ChunkedArray):
        token_lists = token_lists.combine_chunks()
    offsets = token_lists.offsets.to_numpy().astype(np.int64)
    values = token_lists.values.to_numpy(zero_copy_only=False)
    starts, ends = offsets[:-1], offsets[1:]
    keep = np.minimum(ends - starts, L)
    out = np.full((len(keep), L), pad_id, dtype=np.int32)
    rows = np.repeat(np.arange(len(keep)), keep)
    # Position of each kept token within its row's kept run: 0 .. keep-1.
    within = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
    out[rows, L - np.repeat(keep, keep) + within] = values[np.repeat(ends - keep, keep) + within]
    return out


def embed_batch(token_lists: pa.Array | pa.ChunkedArray, L: int, table: np.ndarray) -> np.ndarray:
    """(batch, L, d) float32 sequences for a batch of rows (pad id = last table row)."""
    return table[pad_ids(token_lists, L, pad_id=table.shape[0] - 1)]


@dataclass(frozen=True)
class SplitArrays:
    """One split as padded id matrix and labels: what training and statistics consume."""

    ids: np.ndarray  # (n, L) int32
    labels: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.labels)


def split_arrays(
    table: pa.Table, split: str, L: int, pad_id: int, limit: int | None = None, seed: int = 0
) -> SplitArrays:
    """Padded ids of a split; `limit` takes a class-balanced random subset (profiles)."""
    part = select_split(table, split)
    labels = part.column("label").to_numpy().astype(np.int64)
    if limit is not None and limit < len(labels):
        rng = np.random.default_rng(seed)
        chosen = np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c))[: limit // 2] for c in (0, 1)]
        )
        chosen.sort()
        part, labels = part.take(chosen), labels[chosen]
    return SplitArrays(pad_ids(part.column("token_ids"), L, pad_id), labels)


def length_summary(table: pa.Table, L: int, pad_id: int) -> dict[str, Any]:
    """How much of each review a length-L window keeps: padding, truncation and OOV rates."""
    lengths = pc.list_value_length(table.column("token_ids")).to_numpy(zero_copy_only=False)
    ids = table.column("token_ids").combine_chunks().values.to_numpy(zero_copy_only=False)
    return {
        "L": int(L),
        "reviews": int(len(lengths)),
        "median_tokens": float(np.median(lengths)),
        "fraction_truncated": float(np.mean(lengths > L)),
        "mean_padding_fraction": float(np.mean(np.clip(L - lengths, 0, None) / L)),
        "oov_rate": float(np.mean(ids == pad_id)),
        "empty_reviews": int(np.sum(lengths == 0)),
    }


def _pooled_scale(counts: np.ndarray, table: np.ndarray) -> tuple[float, float]:
    """(std, rms) of every coordinate of every counted row of `table`, pooled: the rows
    appear counts[i] times each, and the d coordinates of all of them form one sample."""
    weight = float(counts.sum()) * table.shape[1]
    rows = table.astype(np.float64)
    mean = float(counts @ rows.sum(axis=1)) / weight
    mean_square = float(counts @ np.einsum("ij,ij->i", rows, rows)) / weight
    return float(np.sqrt(max(mean_square - mean * mean, 0.0))), float(np.sqrt(mean_square))


def input_scale(table: pa.Table, L: int, embeddings: np.ndarray) -> dict[str, float]:
    """The scale of the training inputs, to put the noise σ in proportion to it.

    coord_std_tokens / coord_rms_tokens: over the coordinates of the word vectors of every
    token of the training split (out-of-vocabulary words count as the zero vector).
    coord_std_window: over every coordinate of the pre-padded L-windows x ∈ R^{Ld} the
    model reads (padding zeros included). Counted through word frequencies, so no float
    copy of the corpus is made.
    """
    train = select_split(table, "train").column("token_ids").combine_chunks()
    vocab = embeddings.shape[0]
    tokens = np.bincount(train.values.to_numpy(zero_copy_only=False), minlength=vocab)
    window = np.bincount(pad_ids(train, L, vocab - 1).ravel(), minlength=vocab)
    std, rms = _pooled_scale(tokens, embeddings)
    return {
        "coord_std_tokens": std,
        "coord_rms_tokens": rms,
        "coord_std_window": _pooled_scale(window, embeddings)[0],
    }
