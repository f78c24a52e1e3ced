"""Benchmark of the bounds stage's statistics (run on purpose: `python -m bench.bench_bounds`).

One thread, one model, a subset of its training reviews (2,000 by default). Timed in the
same run, each the best of --rounds (3) rounds that run every path in turn:

- the floor: the float64 matrix products the exact statistics need, as plain torch
  matmuls of the same shapes on inputs made beforehand: per step U x_t for the clean and
  the noisy rows and W times the state [h clean; h noisy; z noisy] (η on the noisy inputs
  only; at σ = 0, [h; z] of the one input), then V times the final state, and τ(θ)c as
  vec(x) M with M built once per model;
- new: `rnngen.model_stats.model_stats` on torch, end to end (embedding, the recorded
  noise draw, one pass for clean and noisy, the sums);
- old: the same with one_pass=False (clean and noisy apart, three recurrences each);
- a float32 forward pass (the model as trained, clean and noisy inputs), for scale.

Prints seconds, the ratios new/floor (target <= 1.5) and old/new, and how far new and
old differ (target <= 1e-10 relative). Real data when the study's corpus and a committed
model are here (data/interim, data/paper/models, data/paper/results/runs.parquet), else
synthetic data of the same shapes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from rnngen.bound_stats_torch import tau_matrix
from rnngen.bounds import ModelDataStats
from rnngen.corpus import SplitArrays
from rnngen.model import ReLURNN
from rnngen.model_stats import clean_and_noisy_batches, model_stats, train_split
from rnngen.specs import RunSpec
from rnngen.train import embedding_tensor, split_batches, subset
from rnngen.weights import load_weights

PAPER = Path("data/paper")
F64 = torch.float64

Inputs = tuple[dict[str, np.ndarray], RunSpec, SplitArrays, np.ndarray, str]


def real_inputs(L: int, sigma: float, reviews: int) -> Inputs | None:
    """A committed model of length L and noise σ, its spec and training reviews; None if
    the corpus or the model is not here."""
    runs = PAPER / "results" / "runs.parquet"
    if not (Path("data/interim/corpus.json").is_file() and runs.is_file()):
        return None
    from rnngen_tasks.corpus import load_corpus  # the task layer: only for real data

    for row in pq.read_table(runs).to_pylist():
        path = PAPER / "models" / f"{row['run_id']}.npz"
        if row["L"] == L and row["sigma"] == sigma and row["status"] == "done" and path.is_file():
            weights, spec_json = load_weights(path)
            spec = RunSpec.from_json(spec_json)
            corpus = load_corpus("data")
            train = train_split(corpus.table, corpus.embeddings.shape[0] - 1, spec)
            return weights, spec, subset(train, reviews), corpus.embeddings, f"{path}"
    return None


def synthetic_inputs(L: int, sigma: float, reviews: int) -> Inputs:
    """Random GloVe-sized embeddings, pre-padded reviews and a model near a trained one."""
    rng = np.random.default_rng(0)
    d, m, vocab = 50, 128, 5000
    embeddings = np.zeros((vocab + 1, d), dtype=np.float32)
    embeddings[:vocab] = rng.normal(scale=0.4, size=(vocab, d))
    ids = rng.integers(0, vocab, size=(reviews, L)).astype(np.int32)
    for i, pad in enumerate(rng.integers(0, L // 2, size=reviews)):
        ids[i, :pad] = vocab
    train = SplitArrays(ids, rng.integers(0, 2, size=reviews).astype(np.int64))
    W = np.eye(m) + rng.normal(scale=0.02, size=(m, m))
    weights = {
        "U": rng.normal(scale=0.1, size=(m, d)),
        "W": W * 0.98 / np.abs(np.linalg.eigvals(W)).max(),
        "V": rng.normal(scale=1 / np.sqrt(m), size=(2, m)),
    }
    spec = RunSpec(L=L, sigma=sigma, seed=0, data_key="synthetic", hidden=m)
    return weights, spec, train, embeddings, "synthetic"


def float64_batches(spec: RunSpec, train: SplitArrays, embeddings: np.ndarray) -> list:
    """The floor's inputs, made untimed: per batch the stacked float64 (rows, L, d)."""
    table = embedding_tensor(embeddings)
    if spec.sigma == 0.0:
        return [x.to(F64) for x, _ in split_batches(train, table, spec.eval_batch_size)]
    return [torch.cat((x, xn)).to(F64) for x, xn, _ in clean_and_noisy_batches(train, table, spec)]


def floor(weights: dict[str, np.ndarray], spec: RunSpec, batches: list) -> None:
    """The matrix products of the exact statistics, nothing else (see the module doc)."""
    U, W, V = (torch.from_numpy(weights[s]) for s in "UWV")
    U_T, W_T, V_T = (A.T.contiguous() for A in (U, W, V))
    M = tau_matrix(U, W, V, spec.L)
    m = W.shape[0]
    for x in batches:
        n = x.shape[0]
        b = n // 2 if spec.sigma > 0.0 else n  # η rows: the noisy half, or all at σ = 0
        ux, state = x.new_empty((n, m)), x.new_zeros((n + b, m))
        nxt = torch.empty_like(state)
        for x_t in x.unbind(1):
            torch.mm(x_t, U_T, out=ux)
            torch.mm(state, W_T, out=nxt)
            state, nxt = nxt, state
        _ = state @ V_T, x.view(n, -1) @ M


def forward32(weights: dict[str, np.ndarray], spec: RunSpec, train, embeddings) -> None:
    """The model as trained (float32 torch), on the clean and the noisy inputs."""
    m, d = weights["U"].shape
    model = ReLURNN(d, m, weights["V"].shape[0])
    with torch.no_grad():
        for name in "UWV":
            getattr(model, name).copy_(torch.from_numpy(weights[name]))
        table = embedding_tensor(embeddings)
        if spec.sigma == 0.0:
            for x, _ in split_batches(train, table, spec.eval_batch_size):
                model(x)
            return
        for x, xn, _ in clean_and_noisy_batches(train, table, spec):
            model(x), model(xn)


def interleaved(rounds: int, paths: dict[str, Callable[[], Any]]) -> dict[str, tuple]:
    """{name: (fastest CPU time, fastest wall time, last result)} over ``rounds`` rounds,
    each round running every path once, in turn: a load that comes and goes on the
    machine then falls on all of them alike.

    CPU time is the figure the ratios use: on one thread it is the work done, whatever else
    the machine runs; on an idle machine it equals the wall time.
    """
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    wall: dict[str, list[float]] = {name: [] for name in paths}
    last: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in paths.items():
            c0, w0 = time.process_time(), time.perf_counter()
            last[name] = fn()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {name: (min(cpu[name]), min(wall[name]), last[name]) for name in paths}


def largest_difference(new: tuple, old: tuple) -> float:
    """Largest relative difference between two (clean, noisy) results over what the
    bounds read (the clean r_fr is not read at σ > 0 and the new path skips it)."""
    worst = 0.0
    for a, b in zip(new, old, strict=True):
        if a is None:
            continue
        names = ["r_fs", "frob_X", "norm1_XT", "B"]
        names += ["r_fr"] if getattr(a, "with_fr", True) else []
        for name in names:
            va, vb = getattr(a, name), getattr(b, name)
            worst = max(worst, abs(va - vb) / max(abs(vb), 1e-300))
        scale = np.abs(b.margins).max()
        worst = max(worst, float(np.abs(a.margins - b.margins).max() / scale))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, default=100, help="sequence length (100, 200, 300)")
    parser.add_argument("--sigma", type=float, default=0.2, help="σ of the model (0 allowed)")
    parser.add_argument("--reviews", type=int, default=2000, help="training reviews used")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--synthetic", action="store_true", help="skip the real data")
    args = parser.parse_args()
    torch.set_num_threads(1)

    found = None if args.synthetic else real_inputs(args.L, args.sigma, args.reviews)
    weights, spec, train, embeddings, source = found or synthetic_inputs(
        args.L, args.sigma, args.reviews
    )
    n, (m, d) = len(train), weights["U"].shape
    print(f"model: {source}; L={spec.L} σ={spec.sigma:g} m={m} d={d}")
    print(f"{n} training reviews, batches of {spec.eval_batch_size}, one thread\n")

    inputs = float64_batches(spec, train, embeddings)
    times = interleaved(
        args.rounds,
        {
            "floor": lambda: floor(weights, spec, inputs),
            "new": lambda: model_stats(weights, spec, train, embeddings, device="cpu"),
            "old": lambda: model_stats(
                weights, spec, train, embeddings, device="cpu", one_pass=False
            ),
            "f32": lambda: forward32(weights, spec, train, embeddings),
        },
    )
    (t_floor, w_floor, _), (t_new, w_new, new), (t_old, w_old, old), (t_f32, w_f32, _) = (
        times[name] for name in ("floor", "new", "old", "f32")
    )

    per = 25_000 / n
    rows = [
        ("floor: float64 products", t_floor, w_floor),
        ("new: model_stats (one pass)", t_new, w_new),
        ("old: model_stats(one_pass=False)", t_old, w_old),
        ("float32 forward pass", t_f32, w_f32),
    ]
    print(f"{'':34s} {'CPU s':>7s} {'wall s':>7s}   CPU s per 25,000 reviews")
    for name, t, wall in rows:
        print(f"{name:34s} {t:7.2f} {wall:7.2f}   {t * per:6.1f}")
    print(f"\nnew / floor   {t_new / t_floor:5.2f}x  (target <= 1.5x)")
    print(f"old / floor   {t_old / t_floor:5.2f}x")
    print(f"old / new     {t_old / t_new:5.2f}x")
    print(f"new / float32 forward {t_new / t_f32:5.2f}x;  old / it {t_old / t_f32:5.2f}x")
    assert all(isinstance(s, ModelDataStats) for s in new if s is not None)
    print(f"largest relative difference new vs old: {largest_difference(new, old):.1e}")


if __name__ == "__main__":
    main()
