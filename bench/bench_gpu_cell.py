"""One paper-profile training cell on a GPU, and the projected time of the paper grid.

Run on a GPU machine (`python bench/bench_gpu_cell.py --bundle DIR`), where DIR is the
bundle of bench/gpu_bundle.py (`python -m bench.bench_gpu_study --make-bundle DIR` here):
the tokenized corpus, the embedding rows it uses and pydantic's wheels, a self-contained
copy of the data for a machine without the project's data folder or pydantic. Trains one
full-data cell per L with the paper profile's settings (RunSpec defaults, device cuda) and
projects the 75-cell grid (25 cells per L) on one GPU, running one cell at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_bundle import use_wheels  # noqa: E402  (stdlib only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", default=".gpu")
    parser.add_argument("--L", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--sigma", type=float, default=0.2)
    args = parser.parse_args()
    bundle = Path(args.bundle)
    use_wheels(bundle)  # pydantic (RunSpec) from the bundle's wheels where it is missing
    import torch

    from bench.gpu_spectrum import BundleCorpus
    from rnngen.corpus import split_arrays
    from rnngen.profiles import get_profile
    from rnngen.specs import RunSpec
    from rnngen.train import train_model

    corpus = BundleCorpus.load(bundle)
    table, embeddings, pad = corpus.table, corpus.embeddings, corpus.pad_id
    paper = get_profile("paper")
    torch.backends.cudnn.allow_tf32 = False  # true float32, as on the CPU
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    per_L = {}
    for L in args.L:
        spec = RunSpec(
            L=L, sigma=args.sigma, seed=0, data_key=corpus.data_key, device="cuda", **paper.train
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
