"""Does pinning the math libraries' code paths change a trained model, and what does it cost?

    python -m bench.bench_pinning            # ~5 min on 2 cores: 6 settings x 2 repeats
    python -m bench.bench_pinning --repeats 3 --L 40 --n-train 4000

One small cell (the quick recipe at a short L, on the real corpus: `make data`) is trained
in a fresh process per setting, since each knob is read once, when torch loads:

- ATEN_CPU_CAPABILITY: the vector width of ATen's own kernels (default, avx2, avx512);
- MKL_CBWR: Intel MKL's conditional numerical reproducibility (COMPATIBLE, AVX2, ...), which
  fixes MKL's code path instead of choosing it per processor;
- ONEDNN_MAX_CPU_ISA: the widest instruction set oneDNN may use.

Each line prints the time against the default setting measured in the same run (settings
interleaved, so a changing load hits all of them alike) and whether the final weights are
bit-identical to the default's (sha256 of the float64 U, W, V). What this machine alone can
show: which knobs change results here (then code-path choice matters, and machines that choose other
paths must be pinned to agree) and their speed cost. Whether a pinned Intel and a pinned AMD
run agree bit for bit needs both machines: run this there and compare the `pinned` digest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "aten avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten default (no vectors)": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "mkl AVX2": {"MKL_CBWR": "AVX2"},
    "pinned (aten avx2, mkl AVX2, onednn AVX2)": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
}

# The child: train one cell with one torch thread (as a Ray worker does) and print the
# digest of its weights and its training time as one JSON line.
CHILD = """
import hashlib, json, sys, time
import torch
torch.set_num_threads(1)
from rnngen.corpus import split_arrays
from rnngen.specs import RunSpec
from rnngen.train import train_model
from rnngen_tasks.corpus import load_corpus
out, L, n_train, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
corpus = load_corpus(out)
spec = RunSpec(L=L, sigma=0.1, seed=0, data_key=corpus.data_key, hidden=32, epochs=epochs,
               n_train=n_train, n_test=500, lr=1e-3)
train = split_arrays(corpus.table, "train", L, corpus.pad_id, limit=n_train)
test = split_arrays(corpus.table, "test", L, corpus.pad_id, limit=500)
t0 = time.perf_counter()
result = train_model(spec, train, test, corpus.embeddings)
seconds = time.perf_counter() - t0
digest = hashlib.sha256(b"".join(result.weights[k].tobytes() for k in ("U", "W", "V")))
print(json.dumps({"seconds": seconds, "sha256": digest.hexdigest(),
                  "test_accuracy": result.test_accuracy,
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def run(env_extra: dict[str, str], args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    env |= env_extra | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, args.out, str(args.L), str(args.n_train), "1"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{env_extra}: the training failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data", help="a folder with the corpus (make data)")
    parser.add_argument("--L", type=int, default=40)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):  # interleaved: every setting once per round
        for name, env in SETTINGS.items():
            results[name].append(run(env, args))
    base = min(r["seconds"] for r in results["default"])
    reference = results["default"][0]["sha256"]
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        "unknown CPU",
    )
    print(f"{cpu}; one cell: L={args.L}, {args.n_train} reviews, hidden 32, 1 epoch, 1 thread")
    print(f"{'setting':<44} {'ATen':>7} {'best s':>7} {'x default':>9}  weights vs default")
    for name, rows in results.items():
        digests = {r["sha256"] for r in rows}
        same = "identical" if digests == {reference} else "DIFFER"
        if len(digests) > 1:
            same += " (and differ between repeats)"
        best = min(r["seconds"] for r in rows)
        print(
            f"{name:<44} {rows[0]['capability']:>7} {best:>7.2f} {best / base:>9.2f}  "
            f"{same}  sha256 {rows[0]['sha256'][:12]}"
        )


if __name__ == "__main__":
    main()
