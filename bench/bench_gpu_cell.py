"""One paper-profile training cell on a GPU, and the projected time of the paper grid.

Run on a GPU machine (`python -m bench.bench_gpu_cell --bundle DIR`), where DIR holds
`corpus.parquet` (the tokenized corpus) and `glove.npy` (the embedding rows it uses,
last row zeros): a self-contained copy of the data for a machine without the project's
data folder. Trains one full-data cell per L with the paper profile's settings (RunSpec
defaults, device cuda) and projects the 75-cell grid (25 cells per L) on one GPU, running
one cell at a time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from rnngen.corpus import split_arrays
from rnngen.profiles import get_profile
from rnngen.specs import RunSpec
from rnngen.train import train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", default=".gpu")
    parser.add_argument("--L", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--sigma", type=float, default=0.2)
    args = parser.parse_args()
    bundle = Path(args.bundle)
    table = pq.read_table(bundle / "corpus.parquet")
    embeddings = np.load(bundle / "glove.npy")
    pad = embeddings.shape[0] - 1
    paper = get_profile("paper")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    per_L = {}
    for L in args.L:
        spec = RunSpec(
            L=L, sigma=args.sigma, seed=0, data_key="gpu-bench", device="cuda", **paper.train
        )
        train = split_arrays(table, "train", L, pad)
        test = split_arrays(table, "test", L, pad)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = train_model(spec, train, test, embeddings)
        torch.cuda.synchronize()
        per_L[L] = time.perf_counter() - t0
        print(
            f"L={L}: one cell ({len(train)} train / {len(test)} test, {spec.epochs} epochs, "
            f"hidden {spec.hidden}, batch {spec.batch_size}): {per_L[L]:.1f} s, "
            f"{result.samples_per_second:.0f} samples/s, test accuracy "
            f"{result.test_accuracy:.4f}, status {result.status}"
        )
    cells = len(paper.sigmas) * len(paper.seeds)
    total = sum(per_L[L] * cells for L in per_L)
    print(
        f"projected paper grid ({cells} cells per L x {len(per_L)} L) on one GPU, one cell "
        f"at a time: {total / 60:.1f} min; with {int(1 / paper.gpu_fraction)} cells "
        f"sharing the GPU ({paper.gpu_fraction:g} GPU each) at most "
        f"{total / 60 / 4:.1f} min if they overlap perfectly (an upper bound on the gain, "
        "not a measurement)"
    )


if __name__ == "__main__":
    main()
