"""Prefect task of the bounds stage: every term of Theorems 2 and 3 for every model.

One row per (model, α) in results/bounds.parquet. α ranges over a grid fixed before any
data is seen (rnngen.bounds.DEFAULT_ALPHA_GRID, or the user's --alpha values), and the
union bound over that grid is applied: each row's `delta` is δ/|grid| (`delta_total` = δ,
`alpha_rule` states the rule). `alpha_best` flags the α with the tightest Theorem 3 bound
of its model.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.states import Completed, State

from rnngen import bounds as B
from rnngen import schemas
from rnngen.errors import DataError, UserError
from rnngen.glove import GLOVE_DIM
from rnngen.io import read_parquet, write_parquet
from rnngen.layout import Layout
from rnngen.model import load_weights
from rnngen.model_stats import model_stats
from rnngen.profiles import check_device
from rnngen.resources import Request, bound_stats_bytes
from rnngen.specs import RunSpec
from rnngen.train import spec_splits
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import Progress, publish_table
from rnngen_tasks.data import load_corpus
from rnngen_tasks.spectrum import existing_rows as spectrum_rows
from rnngen_tasks.train import error_text, read_runs, split_sizes


def _lambda_min(spectra: list[dict], L: int, data_key: str) -> tuple[float | None, str]:
    for row in spectra:
        if row["L"] == L and row["data_key"] == data_key:
            if row["status"] != "certified" or row["lambda_min"] is None:
                return None, f"λ_min at L={L} is uncertified ({row['message']})"
            if row["lambda_min"] <= 0:
                return None, f"λ_min at L={L} is {row['lambda_min']:.3e} <= 0"
            return float(row["lambda_min"]), ""
    return None, f"no spectrum row for L={L}; run `rnngen spectrum --L {L}` first"


def _base(spec: RunSpec, gen_error: float | None) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "group_id": spec.group_id,
        "experiment_id": spec.experiment_id,
        "L": spec.L,
        "sigma": spec.sigma,
        "seed": spec.seed,
        "hidden": spec.hidden,
        "gen_error": gen_error,
        "data_key": spec.data_key,
    }


def model_rows(
    payload: dict[str, Any], table: pa.Table, embeddings: np.ndarray
) -> list[dict[str, Any]]:
    """Worker side: the rows of one model (all α), or one row saying why there are none.
    The corpus and the embedding table come through Ray's object store."""
    started = time.perf_counter()
    spec: RunSpec = payload["spec"]
    base = _base(spec, payload["gen_error"])
    if payload["lambda_min"] is None:
        return [base | {"status": "skipped", "reason": payload["reason"]}]
    train, _ = spec_splits(table, embeddings.shape[0] - 1, spec)
    clean, noisy = model_stats(
        payload["weights"], spec, train, embeddings, device=payload["device"]
    )
    grid = payload["alphas"]
    delta = B.union_bound_delta(payload["delta"], len(grid))
    rows = []
    for alpha in grid:
        terms = B.bound_row(
            clean,
            noisy,
            alpha=alpha,
            sigma=spec.sigma,
            lambda_min=payload["lambda_min"],
            delta=delta,
        )
        rows.append(
            base
            | terms
            | {
                "alpha": float(alpha),
                "delta": delta,
                "delta_total": payload["delta"],
                "alpha_grid_size": len(grid),
                "alpha_rule": payload["alpha_rule"],
                "n": clean.n,
                "indicator_loss_clean": B.indicator_margin_loss(clean.margins, alpha),
                "r_fs_clean": clean.r_fs,
                "B": float(clean.B),
                "complexity_term_thm2": B.complexity_term(
                    B.rademacher_fs_term(
                        2, alpha, clean.r_fs, clean.frob_X, clean.n, payload["lambda_min"]
                    ),
                    B.rademacher_norm1_term(
                        2,
                        alpha,
                        terms["beta_V"],
                        terms["beta_U"],
                        clean.norm1_XT,
                        terms["Lambda"],
                        clean.n,
                    ),
                ),
                "noise_draw": "the recorded training draw (eval_noise stream)",
                "status": "ok",
                "reason": "",
            }
        )
    best = int(np.argmin([r["bound_thm3"] for r in rows])) if rows else -1
    seconds = time.perf_counter() - started
    for i, row in enumerate(rows):
        row["alpha_best"] = i == best
        row["seconds"] = seconds
    return rows


def _payload(
    out: str, run: dict, spectra: list[dict], delta: float, alphas: list[float] | None
) -> dict[str, Any]:
    spec = RunSpec.from_json(run["spec_json"])
    lam, reason = _lambda_min(spectra, spec.L, spec.data_key)
    payload = {
        "spec": spec,
        "gen_error": run["gen_error"],
        "delta": delta,
        "alphas": list(alphas or B.DEFAULT_ALPHA_GRID),
        "lambda_min": lam,
        "reason": reason,
        "alpha_rule": (
            f"given grid of {len(alphas)} values; δ split evenly over it "
            "(union bound); the best α minimizes Theorem 3"
            if alphas
            else B.DEFAULT_ALPHA_RULE
        ),
    }
    try:
        weights, stored = load_weights(Layout.at(out).models / f"{spec.run_id}.npz")
        if RunSpec.from_json(stored).run_id != spec.run_id:
            raise DataError(
                f"models/{spec.run_id}.npz holds the weights of another run "
                f"({RunSpec.from_json(stored).run_id}); delete it and retrain."
            )
    except DataError as err:
        payload.update(lambda_min=None, reason=str(err))
        weights = None
    payload["weights"] = weights
    return payload


def read_bounds(out: str) -> list[dict[str, Any]]:
    path = Layout.at(out).bounds
    return read_parquet(path, required=schemas.BOUNDS).to_pylist() if path.is_file() else []


def model_request(spec: RunSpec, n_train: int, gpus: float = 0.0) -> Request:
    """What one model's bound statistics ask of Ray: a CPU (and a share of a GPU when they
    run on one) and their memory."""
    return Request(
        1,
        gpus,
        bound_stats_bytes(
            n_train=min(spec.n_train or n_train, n_train),
            L=spec.L,
            d=GLOVE_DIM,
            hidden=spec.hidden,
            eval_batch_size=spec.eval_batch_size,
        ),
    )


class BoundsRun:
    """What the models of one bounds run share on the driver (a plain class: Prefect passes
    it to the model tasks as it is): their payloads, the data in Ray's object store, the
    rows written so far, and the counts."""

    def __init__(
        self,
        out: str,
        payloads: dict[str, dict],
        kept: list[dict],
        delta: float,
        n_train: int,
        max_retries: int,
        gpus: float = 0.0,
    ) -> None:
        corpus = load_corpus(out)
        self.out, self.payloads, self.delta, self.gpus = out, payloads, delta, gpus
        self.n_train, self.max_retries = n_train, max_retries
        self.refs = ray_pool.share(corpus.table, corpus.embeddings)
        self.rows: dict[str, list[dict]] = {}
        for r in kept:
            self.rows.setdefault(r["run_id"], []).append(r)
        self.began, self.finished = time.perf_counter(), 0
        self.progress = Progress("bounds", len(payloads))
        self.cancelled = threading.Event()
        self._lock = threading.Lock()

    def record(self, spec: RunSpec, rows: list[dict]) -> str:
        """Keep a model's rows, rewrite bounds.parquet; the progress suffix of its line."""
        with self._lock:
            self.rows[spec.run_id] = rows
            ordered = sorted(
                (r for rs in self.rows.values() for r in rs),
                key=lambda r: (r["L"], r["sigma"], r["seed"], r["run_id"], r.get("alpha") or 0.0),
            )
            write_parquet(
                schemas.to_table(ordered, schemas.BOUNDS),
                Layout.at(self.out).bounds,
                {"stage": "bounds", "delta": self.delta},
            )
            self.finished += 1
            self.progress.advance()
            return (
                f"[{self.finished}/{len(self.payloads)}] ({time.perf_counter() - self.began:.0f} s)"
            )


def model_name(spec: RunSpec) -> str:
    return f"bounds L={spec.L} σ={spec.sigma:g} seed={spec.seed}"


@task(name="prepare-bounds", cache_policy=NO_CACHE)
def prepare_bounds(
    out: str,
    delta: float = 0.05,
    alphas: list[float] | None = None,
    max_retries: int = 1,
    device: str = "auto",
    gpu_fraction: float = 0.25,
) -> tuple[list[RunSpec], BoundsRun | None]:
    """The finished models, and what the ones without bound rows need (None if none).

    The statistics run in float64 torch on `device` ('auto': the cluster's GPUs when it has
    any, each model asking for `gpu_fraction` of one; else CPUs), or in numpy ('numpy',
    the reference they are tested against)."""
    done_runs = [r for r in read_runs(out) if r["status"] == "done"]
    specs = [RunSpec.from_json(r["spec_json"]) for r in done_runs]
    kept = [r for r in read_bounds(out) if r["status"] == "ok"]
    have = {r["run_id"] for r in kept}
    todo = [r for r in done_runs if r["run_id"] not in have]
    if not todo:
        return specs, None
    spectra = spectrum_rows(out)
    where = "numpy" if device == "numpy" else ray_pool.resolve_device(check_device(device))
    gpus = gpu_fraction if where.startswith("cuda") else 0.0
    payloads = {
        r["run_id"]: _payload(out, r, spectra, delta, alphas) | {"device": where} for r in todo
    }
    n_train = split_sizes(out)[0]
    worst = max(
        (p["spec"] for p in payloads.values()), key=lambda s: model_request(s, n_train).memory
    )
    ray_pool.check_request(
        model_request(worst, n_train, gpus),
        "model's bound statistics",
        f"L={worst.L}, {worst.n_train or n_train} training reviews",
        "Use a node with more memory.",
    )
    print(f"bounds: {len(todo)} of {len(done_runs)} models to compute, statistics on {where}")
    return specs, BoundsRun(out, payloads, kept, delta, n_train, max_retries, gpus)


@task(
    name="bounds-model",
    task_run_name="bounds L={spec.L} σ={spec.sigma:g} seed={spec.seed}",
    cache_policy=NO_CACHE,
)
def model_bounds(spec: RunSpec, run: BoundsRun) -> str:
    """One model's bound rows, computed as a Ray task of the same name; 'ok', or the
    reason in its row ('skipped': no certified λ_min or no usable weights; 'failed')."""
    logger = get_run_logger()
    payload = run.payloads[spec.run_id]
    try:
        rows = ray_pool.run_remote(
            model_rows,
            payload,
            *run.refs,
            request=model_request(spec, run.n_train, run.gpus),
            name=model_name(spec),
            max_retries=run.max_retries,
            cancelled=run.cancelled,
        )
    except (ray_pool.Cancelled, UserError):
        raise
    except Exception as err:
        logger.error(f"{model_name(spec)} failed: {err}")  # the whole traceback
        rows = [_base(spec, payload["gen_error"]) | {"status": "failed", "reason": error_text(err)}]
    progress = run.record(spec, rows)
    best = next((r for r in rows if r.get("alpha_best")), None)
    logger.info(
        f"{model_name(spec)}: "
        + (
            f"bound_thm3 {best['bound_thm3']:.3g} at α={best['alpha']:.3g}"
            if best
            else f"{rows[0]['status']}: {rows[0]['reason']}"
        )
        + f" {progress}"
    )
    return rows[0]["status"]


@task(
    name="bounds-model",
    task_run_name="bounds L={spec.L} σ={spec.sigma:g} seed={spec.seed}",
    cache_policy=NO_CACHE,
)
def finished_model(spec: RunSpec) -> State:
    """A model whose rows are already on disk: shown as Skipped."""
    return Completed(name="Skipped", message=f"run {spec.run_id}: bound rows on disk")


def publish_best(out: str) -> None:
    """Each model's best-α row as a table artifact `bounds-best`."""
    publish_table(
        "bounds-best",
        [
            {
                k: r.get(k)
                for k in (
                    "L",
                    "sigma",
                    "seed",
                    "run_id",
                    "alpha",
                    "bound_thm3",
                    "bound_thm2",
                    "rademacher_norm1_term",
                    "beta_W",
                    "gen_error",
                )
            }
            for r in read_bounds(out)
            if r.get("alpha_best")
        ],
        "Every model's bounds at its best α",
    )


def bounds_grid(specs: list[RunSpec], run: BoundsRun | None) -> dict[str, int]:
    """One task run per finished model (those with rows as Skipped); their counts."""
    todo = run.payloads if run is not None else {}
    futures = [
        model_bounds.submit(s, run) if s.run_id in todo else finished_model.submit(s) for s in specs
    ]
    try:
        wait(futures)
    except BaseException:
        if run is not None:
            run.cancelled.set()
        raise
    counts = {"models": len(specs), "skipped": len(specs) - len(todo), "ok": 0, "not_computed": 0}
    for spec, future in zip(specs, futures, strict=True):
        if spec.run_id in todo:
            status = future.result()  # a driver error (disk full, ...) stops the run here
            counts["ok" if status == "ok" else "not_computed"] += 1
    return counts
