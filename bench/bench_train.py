"""Benchmark of the training stage (run on purpose: `python -m bench.bench_train`).

1. Eight cells of the quick grid, in the same run: (a) one after another in this process
   (torch with its default threads); (b) as plain Ray tasks on 2 one-CPU workers, the
   baseline: no Prefect around the cells; (c) through the `train` flow, the code path of
   `rnngen train`: one Prefect task run per cell, each submitting its Ray task and
   relaying its epochs. Prints the wall times, (b)/(a), and the per-cell orchestration
   overhead of (b) and (c): wall × workers minus the cells' own training time, per cell.
   (c) minus (b) is what a Prefect task run per cell costs.
3. Packing on the CPU: five cells of one L (σ × seed) trained as one batched model
   (rnngen.packed) against the same five one after another, on one torch thread each way
   (a Ray worker's), in the same run: whether packing pays on CPUs.
2. Training throughput (samples/s) of our trainer against a plain
   `torch.nn.RNN(nonlinearity="relu", bias=False)` loop with identical shapes, data,
   optimizer and clipping, same process, same threads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
import torch
import torch.nn.functional as F

from rnngen.corpus import split_arrays
from rnngen.specs import RunSpec
from rnngen.train import train_model
from rnngen_tasks import ray_pool
from rnngen_tasks.corpus import load_corpus
from rnngen_tasks.train import build_grid, run_cell

GRID = {"lengths": [100, 200], "sigmas": [0.0, 0.2], "seeds": [0, 1]}


def sequential(specs: list[RunSpec], corpus) -> float:
    t0 = time.perf_counter()
    for spec in specs:
        run_cell({"spec": spec.to_json()}, corpus.table, corpus.embeddings)
    return time.perf_counter() - t0


def plain_ray(specs: list[RunSpec], corpus) -> tuple[float, float]:
    """The cells as bare Ray tasks: (wall seconds, the cells' own training seconds)."""
    cell = ray.remote(num_cpus=1)(run_cell)
    refs = ray_pool.share(corpus.table, corpus.embeddings)
    t0 = time.perf_counter()
    results = ray.get([cell.remote({"spec": s.to_json()}, *refs) for s in specs])
    return time.perf_counter() - t0, sum(r["row"]["seconds"] for r in results)


def through_the_flow(out: str) -> tuple[float, float]:
    """The cells through the `train` flow into a fresh folder holding the corpus."""
    from rnngen_flows.train import train

    folder = Path(tempfile.mkdtemp(prefix="bench-train-"))
    (folder / "interim").mkdir()
    for item in (Path(out) / "interim").iterdir():
        (folder / "interim" / item.name).symlink_to(item.resolve())
    t0 = time.perf_counter()
    train(out=str(folder), profile="quick", **GRID)
    wall = time.perf_counter() - t0
    seconds = pq.read_table(folder / "results" / "runs.parquet").column("seconds").to_pylist()
    return wall, sum(seconds)


def _warm_prefect() -> None:
    """Start Prefect's temporary API before timing (the CLI starts it once per command)."""
    from prefect import flow

    flow(name="bench-warm-up")(lambda: None)()


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
            idx = order[start : start + spec.batch_size]
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
    specs = build_grid(args.out, "quick", **GRID)
    assert len(specs) == 8
    t_seq = sequential(specs, corpus)
    t_start = time.perf_counter()
    ray_pool.connect(None, num_cpus=2)
    ray_pool.ensure_connected()
    t_init = time.perf_counter() - t_start
    t_ray, busy_ray = plain_ray(specs, corpus)
    _warm_prefect()
    t_flow, busy_flow = through_the_flow(args.out)
    over_ray, over_flow = (
        (t * 2 - busy) / len(specs) for t, busy in ((t_ray, busy_ray), (t_flow, busy_flow))
    )
    print(
        f"8 quick cells (L 100/200, σ 0/0.2, 2 seeds; torch threads here: "
        f"{torch.get_num_threads()})"
    )
    print(f"  (a) sequential, one process        : {t_seq:7.1f} s")
    print(f"  (b) plain Ray tasks, 2 workers     : {t_ray:7.1f} s  (+{t_init:.1f} s to start Ray)")
    print(f"  (c) the train flow, 2 workers      : {t_flow:7.1f} s")
    print(f"  ratio (c)/(a)                      : {t_flow / t_seq:7.2f}  (target <= 0.6)")
    print(
        f"  orchestration per cell: (b) {over_ray:.2f} s, (c) {over_flow:.2f} s; a Prefect "
        f"task run per cell costs {over_flow - over_ray:+.2f} s (target <= 0.5 s)"
    )
    ray.shutdown()

    spec = RunSpec(
        L=args.throughput_L,
        sigma=0.0,
        seed=0,
        data_key=corpus.data_key,
        hidden=args.throughput_hidden,
        epochs=1,
        n_train=2000,
        n_test=200,
    )
    train = split_arrays(corpus.table, "train", spec.L, corpus.pad_id, limit=2000)
    test = split_arrays(corpus.table, "test", spec.L, corpus.pad_id, limit=200)
    ours = train_model(spec, train, test, corpus.embeddings).samples_per_second
    plain = plain_rnn_throughput(spec, train, corpus.embeddings)
    print(
        f"throughput, L={spec.L}, hidden {spec.hidden}, batch {spec.batch_size}, "
        f"{len(train)} samples, torch threads {torch.get_num_threads()}:"
    )
    print(
        f"  ours {ours:8.0f} samples/s | plain nn.RNN loop {plain:8.0f} samples/s | "
        f"ours/plain {ours / plain:.2f} (target >= 1, i.e. not slower)"
    )
    alone, packed = packing_on_cpu(corpus, args.throughput_L, args.throughput_hidden)
    print(
        f"packing on the CPU (5 cells, L={args.throughput_L}, hidden {args.throughput_hidden}, "
        f"2000 reviews, 1 epoch, one thread): one after another {alone:.1f} s, as one pack "
        f"{packed:.1f} s, speed-up {alone / packed:.2f}x"
    )


def packing_on_cpu(corpus, L: int, hidden: int) -> tuple[float, float]:
    """(seconds for 5 cells one after another, seconds for the same 5 as one pack)."""
    from rnngen.packed import train_pack

    specs = [
        RunSpec(
            L=L,
            sigma=s,
            seed=seed,
            data_key=corpus.data_key,
            hidden=hidden,
            epochs=1,
            n_train=2000,
            n_test=200,
        )
        for s, seed in ((0.0, 0), (0.1, 0), (0.2, 1), (0.3, 1), (0.4, 2))
    ]
    train = split_arrays(corpus.table, "train", L, corpus.pad_id, limit=2000)
    test = split_arrays(corpus.table, "test", L, corpus.pad_id, limit=200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_model(specs[0], train, test, corpus.embeddings)  # warm-up
        t0 = time.perf_counter()
        for spec in specs:
            train_model(spec, train, test, corpus.embeddings)
        alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_pack(specs, train, test, corpus.embeddings)
        packed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return alone, packed


if __name__ == "__main__":
    main()
