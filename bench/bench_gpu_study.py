"""The paper study on one GPU node, phase by phase, each checked against its CPU or
one-at-a-time reference in the same run (run on purpose, on a GPU machine).

The GPU machine has Python 3.12, torch (CUDA), numpy, scipy, pyarrow, but neither Ray nor
Prefect nor pydantic, and no network: so this script drives the pure layer directly, on a
self-contained bundle made here first (bench/gpu_bundle.py: the reviews cut to their last
300 tokens, the GloVe rows they use, the corpus' data_key, pydantic's wheels at the
versions of requirements.lock, unpacked there without pip):

    python -m bench.bench_gpu_study --make-bundle .gpu                      # here
    python bench/bench_gpu_study.py --bundle .gpu --results DIR \\
        --stages spectrum,train,bounds,measures,certify --L 100,200,300    # on the GPU

Phases (`--stages`, any subset, run per L of `--L` in this order):
- spectrum: λ_min(E xxᵀ) over all training reviews; Gram, Cholesky and solves on the
  device against the numpy/OpenBLAS path (target at L = 300: <= 5 s);
- train: every σ × seed of one L as one packed model against one cell alone (target >= 5x);
- bounds: every model's bound rows over the α grid, all training sequences as one batch
  per time step on the device (bench/gpu_bounds.py); checked against the numpy statistics
  on a prefix of the training set;
- measures: rnngen.measures per model (forward pass and flatness on the device), checked
  against the measures stage's CPU recipe on a prefix;
- certify: PAC-Bayes-kl certificates (rnngen.certify) with the certificates profile's
  settings: one sampled network per bound-set example, m = 12,500.

Each phase's rows go to DIR as it finishes, in the study's own tables (spectrum, runs,
bounds, measures and certificates .parquet, columns described in their field metadata),
with the models (models.npz) and one record per phase and L (bench.json): a run cut at a
time limit keeps what it did. A phase that needs an earlier one's results reads them from
this run, else from `--inputs` (default DIR). One line per phase and L says its time and
its equivalence. `--smoke` runs every phase on a tiny grid, on any device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_bundle import make_bundle, use_wheels  # noqa: E402  (stdlib only)

PHASES = ("spectrum", "train", "bounds", "measures", "certify")
REFERENCED = ("spectrum", "train", "bounds", "measures")  # phases with a reference to run
PAPER_SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4)
TABLES = {  # phase -> (file, schema name in rnngen.schemas)
    "spectrum": ("spectrum.parquet", "SPECTRUM"),
    "train": ("runs.parquet", "RUNS"),
    "bounds": ("bounds.parquet", "BOUNDS"),
    "measures": ("measures.parquet", "MEASURES"),
    "certify": ("certificates.parquet", "CERTIFICATES"),
}


class MissingInput(RuntimeError):
    """A phase lacks what an earlier phase makes (said in one line, no traceback)."""


# ----------------------------------------------------------------------------- settings


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}"
            ) from None

    return parse


def _phases(text: str) -> tuple[str, ...]:
    if text.strip() == "none":
        return ()
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phases {unknown}; choose from {PHASES}")
    return tuple(p for p in PHASES if p in chosen)


def certify_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The certificates profile's settings (one fresh network per bound-set example: m =
    12,500 at full size), or with `--certify-mode networks`, `--certify-m` whole-set
    networks evaluated `--certify-pass` at a time."""
    from rnngen.profiles import get_profile

    settings = dict(get_profile("certificates").stages.get("certify", {}))
    if args.certify_mode == "networks":
        settings = {
            "mc_draws": "networks", "m": args.certify_m,
            "m_test": max(1, args.certify_m // 4), "draws_per_pass": args.certify_pass,
        }  # fmt: skip
    elif args.certify_mode == "per_example":
        settings["mc_draws"] = "per_example"
    return settings


class Plan:
    """What a run does: the grid, the settings of each phase, the size of the references.

    The paper's: L ∈ {100, 200, 300} × σ ∈ {0, …, 0.4} × 5 seeds on all the data with the
    RunSpec defaults, the measures stage's default settings, certificates of the σ grid at
    seed 0 with the certificates profile's settings. `--smoke`: a tiny grid of every phase."""

    def __init__(self, args: argparse.Namespace) -> None:
        from rnngen.certify import CertifySettings
        from rnngen.settings import MeasuresSettings

        self.device, self.chunk = args.device, args.bounds_chunk
        self.stages, self.reference = args.stages, set(args.reference)
        smoke = args.smoke
        self.lengths = args.L or ((5, 10) if smoke else (100, 200, 300))
        self.sigmas = args.sigmas or ((0.0, 0.2) if smoke else PAPER_SIGMAS)
        self.seeds = args.seeds or ((0, 1) if smoke else (0, 1, 2, 3, 4))
        # RunSpec fields beyond the defaults (the paper profile has none)
        self.fields = {"hidden": 8, "epochs": 1, "n_train": 200, "n_test": 100} if smoke else {}
        if smoke:
            self.measures = MeasuresSettings(
                flatness_reviews=50, flatness_steps=2, flatness_draws=2
            )
            self.certify = CertifySettings(
                prior_var_grid=(1e-6,), posterior_epochs=1, m=20, m_test=10, select_draws=2
            )
        else:
            self.measures = MeasuresSettings()
            self.certify = CertifySettings(**certify_settings(args))
        self.certify_lengths = args.certify_L or self.lengths
        self.certify_sigmas = args.certify_sigmas or ((0.2,) if smoke else PAPER_SIGMAS)
        self.certify_seeds = args.certify_seeds or (0,)
        # the references: sequences of the prefix they run on, and the measures' settings
        self.ref_rows = 100 if smoke else 2000
        self.ref_measures = MeasuresSettings(
            flatness_reviews=20 if smoke else 200,
            flatness_steps=1 if smoke else 3,
            flatness_draws=1 if smoke else 2,
        )

    def specs(self, corpus, L: int, sigmas, seeds):
        from rnngen.specs import RunSpec

        return [
            RunSpec(
                L=L, sigma=s, seed=seed, data_key=corpus.data_key, device=self.device, **self.fields
            )
            for s in sigmas
            for seed in seeds
        ]


# ------------------------------------------------------------------------------ results


class Results:
    """The run's output folder: one table per phase (appended to as each phase and L
    finishes, written atomically), models.npz and bench.json."""

    def __init__(self, folder: Path, inputs: Path) -> None:
        self.folder, self.inputs = folder, inputs
        folder.mkdir(parents=True, exist_ok=True)
        self.header: dict[str, Any] = {}
        earlier = folder / "bench.json"  # an earlier run into the same folder: kept
        self.records = json.loads(earlier.read_text())["phases"] if earlier.is_file() else []

    def append(self, phase: str, rows: list[dict[str, Any]]) -> None:
        import pyarrow.parquet as pq

        from rnngen import schemas
        from rnngen.io import write_parquet

        name, schema_name = TABLES[phase]
        schema = getattr(schemas, schema_name)
        path = self.folder / name
        old = pq.read_table(path).to_pylist() if path.is_file() else []
        table = schemas.to_table(old + rows, schema)
        write_parquet(table, path, {"stage": f"bench_gpu_study {phase}"})

    def save_models(self, models: list[tuple[Any, dict, float | None]]) -> None:
        import numpy as np

        path = self.folder / "models.npz"
        arrays = dict(np.load(path, allow_pickle=False)) if path.is_file() else {}
        for spec, weights, gen_error in models:
            for key, value in weights.items():
                arrays[f"{spec.run_id}__{key}"] = np.asarray(value, dtype=np.float32)
            arrays[f"{spec.run_id}__spec"] = np.array(spec.to_json())
            arrays[f"{spec.run_id}__gen_error"] = np.array(
                np.nan if gen_error is None else gen_error, dtype=np.float64
            )
        tmp = path.with_name(".models.partial.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load_models(self, L: int, device: str) -> list[tuple[Any, dict, float | None]]:
        """The models of length L that `--inputs` holds (from an earlier run's train)."""
        import numpy as np

        from rnngen.specs import RunSpec

        path = self.inputs / "models.npz"
        if not path.is_file():
            return []
        out = []
        with np.load(path, allow_pickle=False) as data:
            for key in sorted(k for k in data.files if k.endswith("__spec")):
                spec = RunSpec.from_json(str(data[key]))
                if spec.L != L:
                    continue
                spec = RunSpec(**{**spec.model_dump(), "device": device})
                rid = key[: -len("__spec")]
                weights = {k: data[f"{rid}__{k}"] for k in ("U", "W", "V")}
                gen = float(data[f"{rid}__gen_error"])
                out.append((spec, weights, None if math.isnan(gen) else gen))
        return out

    def input_rows(self, phase: str) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        path = self.inputs / TABLES[phase][0]
        return pq.read_table(path).to_pylist() if path.is_file() else []

    def record(self, record: dict[str, Any]) -> None:
        """Add one phase's record to bench.json (rewritten whole, atomically)."""
        self.records.append(record)
        path = self.folder / "bench.json"
        tmp = path.with_name(".bench.json.partial")
        payload = {**self.header, "phases": self.records}
        tmp.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
        os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


# ------------------------------------------------------------------------------- phases


class Study:
    """The phases of one run, sharing what they computed (models, λ_min, bound rows)."""

    def __init__(self, corpus, plan: Plan, results: Results) -> None:
        self.corpus, self.plan, self.results = corpus, plan, results
        self.models: dict[int, list] = {}
        self.alone_done = False  # one cell alone is trained once per run (its ratio is per L)
        self.lambda_min: dict[int, float] = {}
        self.bound_rows: dict[str, list[dict[str, Any]]] = {}

    # spectrum -------------------------------------------------------------------------

    def spectrum(self, L: int) -> tuple[str, dict[str, Any]]:
        from bench.gpu_spectrum import spectrum_row

        row = spectrum_row(self.corpus, L, self.plan.device)
        self.results.append("spectrum", [row])
        self.lambda_min[L] = row["lambda_min"]
        line = (
            f"{row['seconds']:.1f} s on {self.plan.device}; λ_min {row['lambda_min_estimate']:.6e}"
            f" ({row['status']}, residual {row['lambda_min_residual']:.1e})"
            + ("  [target at L=300: <= 5 s]" if L == 300 else "")
        )
        facts = {"seconds": row["seconds"], "lambda_min": row["lambda_min"]}
        if "spectrum" in self.plan.reference:
            ref = spectrum_row(self.corpus, L, None)
            diff = abs(row["lambda_min_estimate"] - ref["lambda_min_estimate"]) / abs(
                ref["lambda_min_estimate"]
            )
            line += (
                f"; CPU path {ref['seconds']:.1f} s ({ref['seconds'] / row['seconds']:.1f}x), "
                f"λ_min rel. diff {diff:.1e}"
            )
            facts |= {"reference_seconds": ref["seconds"], "rel_diff": diff}
        return line, facts

    def _lambda_min(self, L: int) -> float:
        from rnngen.bounds import usable_lambda_min

        if L not in self.lambda_min:
            rows = [r for r in self.results.input_rows("spectrum") if r["L"] == L]
            if rows:
                self.lambda_min[L] = rows[-1]["lambda_min"]
            else:
                print(f"  (no spectrum row for L={L}: computing it on {self.plan.device})")
                self.spectrum_quiet(L)
        lam, why = usable_lambda_min({"status": "certified", "lambda_min": self.lambda_min[L]}, L)
        if lam is None:
            raise MissingInput(f"no usable λ_min at L={L}: {why}")
        return lam

    def spectrum_quiet(self, L: int) -> None:
        from bench.gpu_spectrum import spectrum_row

        row = spectrum_row(self.corpus, L, self.plan.device)
        self.results.append("spectrum", [row])
        self.lambda_min[L] = row["lambda_min"]

    # train ----------------------------------------------------------------------------

    def train(self, L: int) -> tuple[str, dict[str, Any]]:
        from bench.gpu_stages import train_phase

        specs = self.plan.specs(self.corpus, L, self.plan.sigmas, self.plan.seeds)
        alone = "train" in self.plan.reference and not self.alone_done
        rows, s = train_phase(self.corpus, specs, self.plan.device, alone)
        self.alone_done |= alone
        results = s.pop("results")
        models = [(sp, r.weights, r.gen_error) for sp, r in zip(specs, results, strict=True)]
        self.models[L] = models
        self.results.append("train", rows)
        self.results.save_models(models)
        line = (
            f"{len(specs)} cells as one pack {s['seconds']:.1f} s, "
            f"{s['samples_per_second']:,.0f} samples/s ({s['status']['done']} done)"
        )
        if "alone_seconds" in s:
            ratio = s["samples_per_second"] / s["alone_samples_per_second"]
            line += (
                f"; one cell alone {s['alone_seconds']:.1f} s, "
                f"{s['alone_samples_per_second']:,.0f} samples/s ({ratio:.1f}x, target >= 5x); "
                f"alone vs its packed twin: max |Δw| {s['max_abs_weight_diff']:.1e}, "
                f"|Δ test acc| {s['test_accuracy_diff']:.4f}"
            )
        return line, s

    def _models(self, L: int) -> list:
        if L not in self.models:
            self.models[L] = self.results.load_models(L, self.plan.device)
        if not self.models[L]:
            raise MissingInput(
                f"no trained models of L={L}: add `train` to --stages, or pass --inputs a "
                "folder holding an earlier run's models.npz"
            )
        return self.models[L]

    # bounds ---------------------------------------------------------------------------

    def bounds(self, L: int) -> tuple[str, dict[str, Any]]:
        from bench.gpu_bounds import bounds_of_length
        from bench.gpu_stages import provenance_columns, splits, sync

        models = self._models(L)
        lam = self._lambda_min(L)
        train, _ = splits(self.corpus, models[0][0])
        sync(self.plan.device)
        t0 = time.perf_counter()
        rows, info = bounds_of_length(
            models, train, self.corpus.embeddings, lam, self.plan.device, self.plan.chunk
        )
        sync(self.plan.device)
        seconds = time.perf_counter() - t0
        prov = provenance_columns()
        rows = [r | prov for r in rows]
        for row in rows:
            self.bound_rows.setdefault(row["run_id"], []).append(row)
        self.results.append("bounds", rows)
        per = info["rows_per_update"]
        line = (
            f"{len(models)} models in {seconds:.1f} s ({len(train):,} sequences, "
            + ("all in one batch per step" if per >= len(train) else f"{per:,} per update")
            + f"; {info['noise_threads']} noise threads, {info['noise_wait_s']:.1f} s waiting)"
        )
        facts = {"seconds": seconds, "models": len(models), **info}
        if "bounds" in self.plan.reference:
            diff, what = self._bounds_reference(models, train, lam)
            line += f"; vs numpy on {what}: rel. diff {diff:.1e}"
            facts["rel_diff"] = diff
        return line, facts

    def _bounds_reference(self, models, train, lam) -> tuple[float, str]:
        from bench.gpu_bounds import bound_rows, bounds_of_length, rows_rel_diff
        from rnngen.corpus import SplitArrays
        from rnngen.model_stats import model_stats

        spec, weights, gen = next((m for m in models if m[0].sigma > 0), models[0])
        k = min(self.plan.ref_rows, len(train))
        prefix = SplitArrays(train.ids[:k], train.labels[:k])
        clean, noisy = model_stats(weights, spec, prefix, self.corpus.embeddings)
        ref = bound_rows(spec, clean, noisy, lam, gen)
        got, _ = bounds_of_length(
            [(spec, weights, gen)], prefix, self.corpus.embeddings, lam, self.plan.device
        )
        drop = ("seconds",)
        strip = [{k_: v for k_, v in r.items() if k_ not in drop} for r in got]
        return rows_rel_diff(
            ref, strip
        ), f"the first {k:,} sequences of σ={spec.sigma:g} seed={spec.seed}"

    # measures -------------------------------------------------------------------------

    def measures(self, L: int) -> tuple[str, dict[str, Any]]:
        import torch

        from bench.gpu_bounds import chunk_rows, device_inputs
        from bench.gpu_stages import device_measures, input_norm_max, provenance_columns, splits

        models = self._models(L)
        bounds = self._bounds_of(models)
        train, _ = splits(self.corpus, models[0][0])
        dev = torch.device(self.plan.device)
        t0 = time.perf_counter()
        _, x, y = device_inputs(train, self.corpus.embeddings, dev)
        n, _, d = x.shape
        rows_per = chunk_rows(dev, n, L, d, models[0][0].hidden, self.plan.chunk)
        bx = input_norm_max(x, rows_per)
        settings = self.plan.measures
        keys = {"settings_key": settings.settings_key} | provenance_columns()
        rows = []
        for spec, weights, _ in models:
            out = device_measures(
                spec, weights, x, y, bx, bounds.get(spec.run_id), settings, rows_per
            )
            rows += [r | keys for r in out]
        seconds = time.perf_counter() - t0
        del x
        self.results.append("measures", rows)
        ok = sum(r["status"] == "ok" for r in rows)
        line = (
            f"{len(models)} models in {seconds:.1f} s ({ok} of {len(rows)} measures ok; "
            f"flatness on {min(settings.flatness_reviews, n):,} reviews)"
        )
        facts = {"seconds": seconds, "models": len(models), "rows": len(rows), "ok": ok}
        if "measures" in self.plan.reference:
            diff, differ, what = self._measures_reference(models, train, bounds)
            line += f"; vs the CPU recipe on {what}: rel. diff {diff:.1e}, {differ} statuses differ"
            facts |= {"rel_diff": diff, "status_differs": differ}
        return line, facts

    def _bounds_of(self, models) -> dict[str, list[dict[str, Any]]]:
        wanted = {spec.run_id for spec, _, _ in models}
        if not wanted <= set(self.bound_rows):
            for row in self.results.input_rows("bounds"):
                if row["run_id"] in wanted - set(self.bound_rows):
                    self.bound_rows.setdefault(row["run_id"], []).append(row)
        return {rid: self.bound_rows[rid] for rid in wanted if rid in self.bound_rows}

    def _measures_reference(self, models, train, bounds) -> tuple[float, int, str]:
        import torch

        from bench.gpu_bounds import device_inputs
        from bench.gpu_stages import (
            cpu_measures,
            device_measures,
            input_norm_max,
            measures_rel_diff,
        )
        from rnngen.corpus import SplitArrays

        spec, weights, _ = models[0]
        k = min(self.plan.ref_rows, len(train))
        prefix = SplitArrays(train.ids[:k], train.labels[:k])
        settings = self.plan.ref_measures
        ref = cpu_measures(
            spec, weights, prefix, self.corpus.embeddings, bounds.get(spec.run_id), settings
        )
        _, x, y = device_inputs(prefix, self.corpus.embeddings, torch.device(self.plan.device))
        got = device_measures(
            spec, weights, x, y, input_norm_max(x, k), bounds.get(spec.run_id), settings, k
        )
        diff, differ = measures_rel_diff(ref, got)
        return diff, differ, f"the first {k:,} sequences of σ={spec.sigma:g} seed={spec.seed}"

    # certify --------------------------------------------------------------------------

    def certify(self, L: int) -> tuple[str, dict[str, Any]]:
        from bench.gpu_stages import certify_phase

        plan = self.plan
        specs = plan.specs(self.corpus, L, plan.certify_sigmas, plan.certify_seeds)
        rows, s = certify_phase(self.corpus, specs, plan.certify)
        self.results.append("certify", rows)
        line = (
            f"{s['done']} of {s['cells']} cells in {s['seconds']:.1f} s (m = {s['m']}, "
            f"mc_draws {plan.certify.mc_draws})"
        )
        if s["done"]:
            line += (
                f"; certificates {min(s['certificates']):.4f}–{max(s['certificates']):.4f}, "
                f"stochastic test errors {min(s['test_errors']):.4f}–"
                f"{max(s['test_errors']):.4f}; certificate identity max |Δ| "
                f"{s['identity_max_abs_diff']:.1e} (no CPU reference)"
            )
        return line, s


# --------------------------------------------------------------------------------- main


def run_phase(study: Study, results: Results, phase: str, L: int) -> tuple[bool, float]:
    """One phase at one L: its line printed, its record kept; (whether it ran, seconds)."""
    t0 = time.perf_counter()
    try:
        line, facts = getattr(study, phase)(L)
        status = "ok"
    except Exception as err:  # one phase failing must not lose the others' results
        if not isinstance(err, MissingInput):
            traceback.print_exc()
        line, facts, status = f"FAILED: {type(err).__name__}: {err}", {}, "failed"
    seconds = time.perf_counter() - t0
    print(f"{phase} L={L}: {line}", flush=True)
    scalars = {k: v for k, v in facts.items() if not isinstance(v, list | dict)}
    results.record(
        {"phase": phase, "L": L, "status": status, "wall_s": seconds, "line": line} | scalars
    )
    return status == "ok", seconds


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.gpu_spectrum import BundleCorpus

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: torch sees no CUDA device here.")
        # true float32 in cuDNN (the RNN) as on the CPU: no TF32 rounding of the inputs
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    corpus = BundleCorpus.load(Path(args.bundle))
    plan = Plan(args)
    results = Results(Path(args.results), Path(args.inputs or args.results))
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    results.header.update(
        device=args.device, device_name=name, torch=torch.__version__,
        stages=list(plan.stages), lengths=list(plan.lengths), smoke=args.smoke,
        reference=sorted(plan.reference),
    )  # fmt: skip
    print(
        f"device {args.device} ({name}); torch {torch.__version__}; TF32 off; "
        f"{corpus.describe()}; phases {','.join(plan.stages)} at "
        f"L={','.join(map(str, plan.lengths))}; results in {args.results}",
        flush=True,
    )
    study = Study(corpus, plan, results)
    began, totals, failed = time.perf_counter(), dict.fromkeys(plan.stages, 0.0), 0
    units = [(L, p) for L in plan.lengths for p in plan.stages if p != "certify"]
    units += [(L, "certify") for L in plan.certify_lengths if "certify" in plan.stages]
    for L, phase in units:
        if args.budget is not None and time.perf_counter() - began > args.budget:
            print(f"{phase} L={L}: not started (the budget of {args.budget:g} s is spent)")
            results.record({"phase": phase, "L": L, "status": "not started"})
            continue
        ok, seconds = run_phase(study, results, phase, L)
        totals[phase] += seconds
        failed += not ok
    whole = time.perf_counter() - began
    print(
        "whole run: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in totals.items())
        + f"; {whole:.1f} s in all, references included"
        + (f"; {failed} phase(s) FAILED" if failed else "")
        + f"; results in {args.results}"
    )
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--make-bundle", metavar="DIR", help="write the bundle here and stop")
    p.add_argument("--out", default="data", help="with --make-bundle: the data folder to read")
    p.add_argument("--no-wheels", action="store_true", help="with --make-bundle: no wheels")
    p.add_argument("--reviews", type=int, help="with --make-bundle: reviews per split (smoke)")
    p.add_argument("--python-version", default="3.12", help="with --make-bundle: wheels' Python")
    p.add_argument("--bundle", default=".gpu", help="the bundle folder (default .gpu)")
    p.add_argument("--results", default="/tmp/rnngen-gpu-results", help="output folder")
    p.add_argument("--inputs", help="earlier results (models.npz, ...) to read; default --results")
    p.add_argument("--device", default="cuda")
    p.add_argument("--stages", type=_phases, default=PHASES, help=f"any of {','.join(PHASES)}")
    p.add_argument("--L", type=_csv(int), help="lengths, e.g. 100,200 (default the paper's)")
    p.add_argument("--sigmas", type=_csv(float), help="σ grid (default the paper's)")
    p.add_argument("--seeds", type=_csv(int), help="seeds (default 0..4)")
    p.add_argument(
        "--reference", type=_phases, default=REFERENCED,
        help="phases checked against their reference in the same run (or 'none')",
    )  # fmt: skip
    p.add_argument("--budget", type=float, help="start no phase after this many seconds")
    p.add_argument("--bounds-chunk", type=int, help="sequences per update (default: all)")
    p.add_argument(
        "--certify-mode", choices=("networks", "per_example"),
        help="default: the certificates profile's (per_example: m = one network per example)",
    )  # fmt: skip
    p.add_argument("--certify-m", type=int, default=2000, help="with networks: how many")
    p.add_argument("--certify-pass", type=int, default=100, help="with networks: per pass")
    p.add_argument("--certify-L", type=_csv(int), help="lengths to certify (default --L)")
    p.add_argument("--certify-sigmas", type=_csv(float), help="σ to certify (default the grid)")
    p.add_argument("--certify-seeds", type=_csv(int), help="seeds to certify (default 0)")
    p.add_argument("--smoke", action="store_true", help="a tiny grid, to check the script")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.make_bundle:
        make_bundle(
            Path(args.make_bundle), args.out, wheels=not args.no_wheels,
            reviews=args.reviews, python_version=args.python_version,
        )  # fmt: skip
        return
    site = use_wheels(Path(args.bundle))
    if site:
        print(f"pydantic from the bundle's wheels, unpacked in {site}")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
