"""The tokenizer (README: Data), in two implementations checked against each other.

`tokenize` is the per-review reference (plain Python string methods); `tokenize_many`
does the same on a whole corpus with Arrow compute kernels (C++), which is what the
pipeline uses. Tests assert the two agree token for token on the real data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Keras' default filters minus tab and newline (which count as whitespace anyway).
PUNCTUATION = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'


@dataclass(frozen=True)
class TokenizerConfig:
    """Preprocessing choices; part of every output's `data_key`."""

    lowercase: bool = True
    html_break: str = "<br />"
    punctuation: str = PUNCTUATION
    # "" deletes punctuation (our default); " " splits on it as Keras does.
    punctuation_replacement: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def tokenize(text: str, cfg: TokenizerConfig = TokenizerConfig()) -> list[str]:
    """Reference tokenizer for one review."""
    if cfg.lowercase:
        text = text.lower()
    if cfg.html_break:
        text = text.replace(cfg.html_break, " ")
    if cfg.punctuation:
        text = text.translate({ord(ch): cfg.punctuation_replacement for ch in cfg.punctuation})
    return text.split()


def _punctuation_pattern(punctuation: str) -> str:
    # RE2 character class; every member escaped so ']' '\' '^' '-' stay literal.
    return "[" + "".join("\\" + ch if not ch.isalnum() else ch for ch in punctuation) + "]"


def tokenize_many(
    texts: Sequence[str] | pa.Array, cfg: TokenizerConfig = TokenizerConfig()
) -> pa.LargeListArray:
    """Tokenize many reviews at once; returns a list<string> array, one list per review."""
    arr = texts if isinstance(texts, pa.Array) else pa.array(texts, type=pa.large_string())
    if cfg.lowercase:
        arr = pc.utf8_lower(arr)
    if cfg.html_break:
        arr = pc.replace_substring(arr, pattern=cfg.html_break, replacement=" ")
    if cfg.punctuation:
        arr = pc.replace_substring_regex(
            arr,
            pattern=_punctuation_pattern(cfg.punctuation),
            replacement=cfg.punctuation_replacement,
        )
    return _drop_empty_tokens(pc.utf8_split_whitespace(arr))


def _drop_empty_tokens(lists: pa.ListArray | pa.LargeListArray) -> pa.LargeListArray:
    """Remove "" tokens, which Arrow emits for leading/trailing whitespace and empty texts."""
    values = lists.flatten()
    keep = pc.greater(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(lists).to_numpy()
    counts = np.bincount(parents[keep], minlength=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    kept = values.filter(pa.array(keep))
    return pa.LargeListArray.from_arrays(pa.array(offsets), kept.cast(pa.large_string()))
