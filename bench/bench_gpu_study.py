"""The whole paper study on one GPU node, stage by stage, with the CPU and one-at-a-time
baselines measured in the same run (run on purpose, on a GPU machine).

The GPU machine has Python 3.12, torch (CUDA), numpy, scipy, pyarrow, but neither Ray nor
Prefect nor pydantic, and no network: so this script drives the pure layer directly, on a
self-contained bundle of the data made here first:

    python -m bench.bench_gpu_study --make-bundle .gpu        # on this machine: data + wheels
    python bench/bench_gpu_study.py --bundle .gpu             # on the GPU machine

The bundle (under 64 MiB) holds the training and test reviews as token ids cut to their
last 300 tokens (all any L of the study reads), the GloVe rows they use (remapped, last row
zeros) and the wheels of pydantic, which the run spec needs. The orchestration overhead
that Ray and Prefect add per cell is measured on CPUs by bench/bench_train.py.

Prints, with the targets of one H100/H200:
- the spectrum at L = 100, 200, 300: float64 Gram, Cholesky and solves on the GPU against
  the CPU path (numpy/OpenBLAS) in the same run (target: L = 300 in <= 5 s);
- packed training (every σ × seed of one L as one batched model) against one cell at a
  time, samples per second, in the same run (target >= 5x);
- the whole paper grid: three spectra, 75 cells in three packs, the bounds of all 75
  models in float64 torch on the GPU (target <= 5 min).
`--smoke` runs every step on a tiny grid, on any device, to check the script itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

MAX_L = 300  # the longest window of the study: tokens before the last 300 are never read


def make_bundle(folder: Path, out: str, wheels: bool = True) -> None:
    """Write the data and the wheels the GPU run needs into `folder` (run here)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from rnngen_tasks.data import load_corpus

    folder.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(out)
    tokens = corpus.table.column("token_ids").combine_chunks()
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    offsets = tokens.offsets.to_numpy()
    keep = np.minimum(lengths, MAX_L)
    starts = offsets[1:] - keep
    flat = np.concatenate(
        [tokens.values.to_numpy()[s:e] for s, e in zip(starts, offsets[1:], strict=True)]
    )
    pad = corpus.embeddings.shape[0] - 1
    used = np.unique(np.append(flat, pad))  # the pad row last, as the table wants it
    remap = np.full(corpus.embeddings.shape[0], -1, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    ids = pa.LargeListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(keep)]), pa.int64()), pa.array(remap[flat])
    )
    table = corpus.table.set_column(corpus.table.column_names.index("token_ids"), "token_ids", ids)
    pq.write_table(table, folder / "corpus.parquet", compression="zstd", compression_level=19)
    np.save(folder / "glove.npy", np.ascontiguousarray(corpus.embeddings[used]))
    if wheels:
        _download_wheels(folder / "wheels")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"bundle in {folder}: {size / 2**20:.1f} MiB ({len(used)} GloVe rows)")


def _download_wheels(wheels: Path) -> None:
    """pydantic and what it needs, for Python 3.12 on x86-64 Linux (the GPU machine)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            "-d",
            str(wheels),
            "pydantic>=2.7,<3",
            "pydantic-core",
            "annotated-types",
            "typing-extensions",
            "typing-inspection",
        ],
        check=True,
    )


def _use_wheels(folder: Path) -> None:
    """Make the bundle's wheels importable (pydantic on a machine without it)."""
    try:
        import pydantic  # noqa: F401
    except ImportError:
        site = Path("/tmp/rnngen-bench-site")
        wheels = sorted((folder / "wheels").glob("*.whl"))
        if not wheels:
            raise SystemExit(
                f"pydantic is missing and {folder / 'wheels'} holds no wheels: "
                "make the bundle without --no-wheels."
            ) from None
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-deps",
                "--target",
                str(site),
                *map(str, wheels),
            ],
            check=True,
        )
        sys.path.insert(0, str(site))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn, *args, **kwargs):
    """(result, seconds) of fn(*args, **kwargs), with the device's queue drained."""
    _sync(device)
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    _sync(device)
    return result, time.perf_counter() - t0


def training_stage(corpus, L: int, device: str, sigmas, seeds, spec_fields: dict):
    """Every σ × seed of one L: as one pack, and one cell alone (for the ratio)."""
    from rnngen.corpus import split_arrays
    from rnngen.packed import train_pack
    from rnngen.specs import RunSpec
    from rnngen.train import train_model

    specs = [
        RunSpec(L=L, sigma=s, seed=seed, data_key="bench", device=device, **spec_fields)
        for s in sigmas
        for seed in seeds
    ]
    n_train, n_test = spec_fields.get("n_train"), spec_fields.get("n_test")
    train = split_arrays(corpus.table, "train", L, corpus.pad_id, limit=n_train)
    test = split_arrays(corpus.table, "test", L, corpus.pad_id, limit=n_test)
    # the one-at-a-time baseline: one cell, one epoch (its samples/s are what matter)
    one = RunSpec(**{**specs[0].model_dump(), "epochs": 1})
    train_model(
        RunSpec(**{**one.model_dump(), "n_train": 64, "n_test": 64}), train, test, corpus.embeddings
    )  # warm-up: kernels, autotuning, the first step's imports
    alone, t_alone = timed(device, train_model, one, train, test, corpus.embeddings)
    packed, t_pack = timed(device, train_pack, specs, train, test, corpus.embeddings)
    return specs, packed, t_pack, alone, t_alone, (train, test)


def bounds_stage(corpus, specs, results, splits, lambda_min: float, device: str) -> float:
    """Every model's bound rows with its statistics in float64 torch on `device`."""
    from rnngen import bounds as B
    from rnngen.model_stats import model_stats

    train, _ = splits
    t0 = time.perf_counter()
    for spec, result in zip(specs, results, strict=True):
        if result.status != "done":
            continue
        clean, noisy = model_stats(result.weights, spec, train, corpus.embeddings, device=device)
        delta = B.union_bound_delta(0.05, len(B.DEFAULT_ALPHA_GRID))
        for alpha in B.DEFAULT_ALPHA_GRID:
            B.bound_row(
                clean, noisy, alpha=alpha, sigma=spec.sigma, lambda_min=lambda_min, delta=delta
            )
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--make-bundle", metavar="DIR", help="write the bundle here and stop")
    parser.add_argument("--out", default="data", help="the data folder the bundle is made from")
    parser.add_argument("--bundle", default=".gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="a tiny grid, to check the script")
    parser.add_argument(
        "--no-wheels",
        action="store_true",
        help="with --make-bundle: leave out the wheels (a machine that has pydantic)",
    )
    args = parser.parse_args()
    if args.make_bundle:
        make_bundle(Path(args.make_bundle), args.out, wheels=not args.no_wheels)
        return
    bundle = Path(args.bundle)
    _use_wheels(bundle)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    run(bundle, args.device, args.smoke)


def run(bundle: Path, device: str, smoke: bool) -> None:
    import torch

    from bench.gpu_spectrum import BundleCorpus, spectrum_both

    corpus = BundleCorpus.load(bundle)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    print(f"device {device} ({name}); torch {torch.__version__}; {corpus.describe()}")
    lengths = (10, 20) if smoke else (100, 200, 300)
    sigmas = (0.0, 0.2) if smoke else (0.0, 0.1, 0.2, 0.3, 0.4)
    seeds = (0, 1) if smoke else (0, 1, 2, 3, 4)
    fields = {"hidden": 8, "epochs": 1, "n_train": 400, "n_test": 200} if smoke else {}
    began, totals = time.perf_counter(), {"spectrum": 0.0, "training": 0.0, "bounds": 0.0}
    for L in lengths:
        gpu, cpu = spectrum_both(corpus, L, device)
        totals["spectrum"] += gpu["seconds"]
        print(
            f"spectrum L={L}: {device} {gpu['seconds']:.1f} s, CPU path {cpu['seconds']:.1f} s "
            f"({cpu['seconds'] / gpu['seconds']:.1f}x); λ_min {gpu['lambda_min']:.6e} vs "
            f"{cpu['lambda_min']:.6e} (rel. diff "
            f"{abs(gpu['lambda_min'] - cpu['lambda_min']) / cpu['lambda_min']:.1e})"
            + ("  [target at L=300: <= 5 s]" if L == 300 else "")
        )
        specs, packed, t_pack, alone, t_alone, splits = training_stage(
            corpus, L, device, sigmas, seeds, fields
        )
        totals["training"] += t_pack
        rate = len(packed) * len(splits[0]) * packed[0].epochs_run / t_pack
        rate_alone = len(splits[0]) * alone.epochs_run / t_alone
        print(
            f"training L={L}: {len(packed)} cells as one pack {t_pack:.1f} s, one cell alone "
            f"{t_alone:.1f} s; {rate:,.0f} vs {rate_alone:,.0f} samples/s "
            f"({rate / rate_alone:.1f}x, target >= 5x)"
        )
        t_bounds = bounds_stage(corpus, specs, packed, splits, gpu["lambda_min"], device)
        totals["bounds"] += t_bounds
        print(f"bounds L={L}: {len(packed)} models in {t_bounds:.1f} s")
    whole = time.perf_counter() - began
    print(
        "whole study: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in totals.items())
        + f"; {whole:.1f} s with the baselines (target: the study <= 300 s)"
    )


if __name__ == "__main__":
    main()
