"""Benchmark of the spectrum stage (run on purpose: `python bench/bench_spectrum.py`).

For each L, in the same run: ours (float64 Gram over Ray shards, in-place Cholesky,
shift-invert Lanczos, matrix-free certification) against the dense numpy reference
(float64 X.T @ X, then eigvalsh) on all 25,000 training sequences. Prints both times,
the ratio, both λ_min and their relative difference, and the peak memory of all
processes. Then the Gram stage with 1 and with 2 Ray workers.
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.memory import PeakMemory
from rnngen.corpus import embed_batch
from rnngen.glove import GLOVE_DIM
from rnngen.spectrum import dense_smallest
from rnngen_tasks import ray_pool
from rnngen_tasks.corpus import load_corpus
from rnngen_tasks.ray_shards import ShardPool
from rnngen_tasks.spectrum import train_tokens


def ours(tokens, table, L: int, workers: int):
    t0 = time.perf_counter()
    pool = ShardPool.create(tokens, table, workers)
    try:
        pool.reduce_gram(L)
        t_gram = time.perf_counter() - t0
        result = pool.spectrum(L)
    finally:
        pool.close()
    return result, time.perf_counter() - t0, t_gram, pool.seconds


def dense(tokens, L: int, embeddings):
    t0 = time.perf_counter()
    x = embed_batch(tokens, L, embeddings).reshape(len(tokens), -1)
    lam_min, _ = dense_smallest(x)
    del x
    return lam_min, time.perf_counter() - t0


def gram_only(tokens, table, L: int, workers: int) -> float:
    t0 = time.perf_counter()
    pool = ShardPool.create(tokens, table, workers)
    try:
        pool.reduce_gram(L)
    finally:
        pool.close()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data")
    parser.add_argument("--L", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument(
        "--scaling-L", type=int, default=200, help="L of the 1-vs-2-worker Gram timing (0 skips it)"
    )
    parser.add_argument("--n-train", type=int, default=None)
    args = parser.parse_args()
    corpus = load_corpus(args.out)
    tokens = train_tokens(corpus, args.n_train)
    ray_pool.connect(None, num_cpus=2)
    t0 = time.perf_counter()
    ray_pool.ensure_connected()
    print(
        f"n = {len(tokens)} training sequences, d = {GLOVE_DIM}, 2 Ray workers; starting "
        f"Ray took {time.perf_counter() - t0:.1f} s (once per run, not counted below)"
    )
    for L in args.L:
        with PeakMemory() as mem:
            result, t_ours, t_gram, stages = ours(tokens, corpus.embeddings, L, workers=2)
        gc.collect()
        with PeakMemory() as mem_dense:
            lam_dense, t_dense = dense(tokens, L, corpus.embeddings)
        gc.collect()
        rel = abs(result.lambda_min - lam_dense) / lam_dense
        gram = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        print(
            f"L={L} D={L * GLOVE_DIM}: ours {t_ours:7.1f} s (Gram {t_gram:.1f} s: {gram}; factor "
            f"{result.seconds['factor']:.1f} s, Lanczos top {result.seconds['lanczos_top']:.1f}"
            f" s / {result.iterations_top} it, bottom {result.seconds['lanczos_bottom']:.1f} s"
            f" / {result.iterations} it) | dense {t_dense:7.1f} s | dense/ours "
            f"{t_dense / t_ours:5.2f}x"
        )
        print(
            f"      λ_min ours {result.lambda_min:.10e} (residual "
            f"{result.lambda_min_residual:.2e}, certified={result.converged}) dense "
            f"{lam_dense:.10e} rel.diff {rel:.2e} | λ_max {result.lambda_max:.4e} | "
            f"peak memory ours {mem.gb:.2f} GB, dense {mem_dense.gb:.2f} GB"
        )
    L = args.scaling_L
    if not L:
        return
    t1 = gram_only(tokens, corpus.embeddings, L, 1)
    t2 = gram_only(tokens, corpus.embeddings, L, 2)
    print(
        f"Gram stage at L={L}: 1 worker {t1:.1f} s, 2 workers {t2:.1f} s, speed-up {t1 / t2:.2f}x"
    )


if __name__ == "__main__":
    main()
