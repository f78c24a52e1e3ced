"""The tokenized corpus as the later stages read it: its pointer, the corpus with its GloVe
table, and the sizes of its splits.

Apart from `rnngen_tasks.data`, which writes the corpus as Prefect tasks: reading it needs
no Prefect, so the command line's pre-start checks import this module in a fraction of a
second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rnngen.corpus import CORPUS_COLUMNS
from rnngen.errors import DataError
from rnngen.glove import load_glove
from rnngen.io import read_parquet
from rnngen.layout import Layout


def corpus_pointer(out: str) -> dict:
    """The current corpus' pointer; a clear error when the data stage has not run yet."""
    path = Layout.at(out).corpus_pointer
    if not path.is_file():
        raise DataError(
            f"no tokenized corpus under {Layout.at(out).interim}. Run "
            f"`rnngen embed --out {out}` (or `rnngen study`) first."
        )
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Corpus:
    """The tokenized corpus with the GloVe table it indexes into."""

    table: pa.Table
    embeddings: np.ndarray  # (vocab + 1, d) float32; last row zeros
    data_key: str
    meta: dict

    @property
    def pad_id(self) -> int:
        return self.embeddings.shape[0] - 1


_LOADED: dict[tuple, Corpus] = {}


def load_corpus(out: str) -> Corpus:
    """Read the current corpus and its embedding table (for the later stages). Loaded once
    per process: a study's stages and the spectrum's lengths share one copy, reread only
    when the corpus file or the pointer changes."""
    pointer = corpus_pointer(out)
    path = Layout.at(out).interim / pointer["corpus"]
    key = (str(path), path.stat().st_mtime_ns if path.is_file() else None, pointer.get("glove"))
    if key not in _LOADED:
        table = read_parquet(path, required=CORPUS_COLUMNS)
        glove = load_glove(pointer.get("glove"))
        _LOADED.clear()  # one corpus at a time: it is ~100 MB with its table
        _LOADED[key] = Corpus(table, glove.table, pointer["data_key"], pointer)
    return _LOADED[key]


def split_sizes(out: str) -> tuple[int, int]:
    """Reviews in the corpus' train and test splits (one column read, not the corpus)."""
    path = Layout.at(out).interim / corpus_pointer(out)["corpus"]
    split = pq.read_table(path, columns=["split"]).column("split").cast(pa.string())
    values = split.to_numpy(zero_copy_only=False)
    return int(np.sum(values == "train")), int(np.sum(values == "test"))
