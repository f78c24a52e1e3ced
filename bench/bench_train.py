"""Benchmark of the training stage (run on purpose: `python -m bench.bench_train`).

1. Eight cells of the quick grid, in the same run: (a) one after another in this process
   (torch with its default threads), (b) fanned out through Ray with 2 one-CPU workers
   (the code path `rnngen train` uses). Prints both wall times, the ratio, and the
   per-cell orchestration overhead of (b): wall x workers minus the workers' own time.
2. Training throughput (samples/s) of our trainer against a plain
   `torch.nn.RNN(nonlinearity="relu", bias=False)` loop with identical shapes, data,
   optimizer and clipping, same process, same threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ray
import torch
import torch.nn.functional as F

from rnngen.corpus import split_arrays
from rnngen.resources import Request
from rnngen.specs import RunSpec
from rnngen.train import train_model
from tasks import ray_pool
from tasks.data import load_corpus
from tasks.train import build_grid, run_cell


def sequential(specs: list[RunSpec], corpus) -> float:
    t0 = time.perf_counter()
    for spec in specs:
        run_cell({"spec": spec.to_json(), "glove": None}, corpus.table)
    return time.perf_counter() - t0


def through_ray(specs: list[RunSpec], corpus) -> tuple[float, float]:
    worker_seconds: list[float] = []

    def on_done(item, result, error):
        assert error is None, error
        worker_seconds.append(result["seconds"])

    def timed_cell(payload, table, embeddings):
        start = time.perf_counter()
        out = run_cell(payload, table, embeddings)
        return {"seconds": time.perf_counter() - start, **out}

    t0 = time.perf_counter()
    ray_pool.fan_out(timed_cell, [{"spec": s.to_json()} for s in specs],
                     shared=(corpus.table, corpus.embeddings), resources=Request(1, 0, 0),
                     max_retries=0,
                     on_done=on_done)
    wall = time.perf_counter() - t0
    return wall, sum(worker_seconds)


def plain_rnn_throughput(spec: RunSpec, train, embeddings: np.ndarray) -> float:
    """The reference loop: nn.RNN + Linear, no biases, Adam, clipping, same batches."""
    torch.manual_seed(0)
    table = torch.from_numpy(embeddings)
    rnn = torch.nn.RNN(50, spec.hidden, nonlinearity="relu", bias=False, batch_first=True)
    out = torch.nn.Linear(spec.hidden, 2, bias=False)
    params = [*rnn.parameters(), *out.parameters()]
    opt = torch.optim.Adam(params, lr=spec.lr)
    ids, labels = torch.from_numpy(train.ids), torch.from_numpy(train.labels)
    order = torch.randperm(len(labels))
    t0 = time.perf_counter()
    for _ in range(spec.epochs):
        for start in range(0, len(labels), spec.batch_size):
            idx = order[start:start + spec.batch_size]
            x = F.embedding(ids[idx].long(), table)
            _, h = rnn(x)
            loss = F.cross_entropy(out(h[-1]), labels[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, spec.clip_grad_norm)
            opt.step()
    return len(labels) * spec.epochs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data")
    parser.add_argument("--throughput-L", type=int, default=100)
    parser.add_argument("--throughput-hidden", type=int, default=128)
    args = parser.parse_args()
    corpus = load_corpus(args.out)
    specs = build_grid(args.out, "quick", lengths=[100, 200], sigmas=[0.0, 0.2],
                       seeds=[0, 1])
    assert len(specs) == 8
    t_seq = sequential(specs, corpus)
    t_start = time.perf_counter()
    ray_pool.connect(None, num_cpus=2)
    ray_pool.ensure_connected()
    t_init = time.perf_counter() - t_start
    t_ray, busy = through_ray(specs, corpus)
    overhead = (t_ray * 2 - busy) / len(specs)
    print(f"8 quick cells (L 100/200, σ 0/0.2, 2 seeds; torch threads here: "
          f"{torch.get_num_threads()})")
    print(f"  (a) sequential, one process : {t_seq:7.1f} s")
    print(f"  (b) Ray, 2 workers          : {t_ray:7.1f} s  (+{t_init:.1f} s to start Ray)")
    print(f"  ratio (b)/(a)               : {t_ray / t_seq:7.2f}  (target <= 0.6)")
    print(f"  per-cell orchestration overhead of (b): {overhead:.2f} s (target <= 2 s)")
    ray.shutdown()

    spec = RunSpec(L=args.throughput_L, sigma=0.0, seed=0, data_key=corpus.data_key,
                   hidden=args.throughput_hidden, epochs=1, n_train=2000, n_test=200)
    train = split_arrays(corpus.table, "train", spec.L, corpus.pad_id, limit=2000)
    test = split_arrays(corpus.table, "test", spec.L, corpus.pad_id, limit=200)
    ours = train_model(spec, train, test, corpus.embeddings).samples_per_second
    plain = plain_rnn_throughput(spec, train, corpus.embeddings)
    print(f"throughput, L={spec.L}, hidden {spec.hidden}, batch {spec.batch_size}, "
          f"{len(train)} samples, torch threads {torch.get_num_threads()}:")
    print(f"  ours {ours:8.0f} samples/s | plain nn.RNN loop {plain:8.0f} samples/s | "
          f"ours/plain {ours / plain:.2f} (target >= 1, i.e. not slower)")


if __name__ == "__main__":
    main()
