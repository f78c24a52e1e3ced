"""Prefect task of the bounds stage: every term of Theorems 2 and 3 for every model.

One row per (model, α) in results/bounds.parquet. α comes from a grid (default: quantiles
of the model's noisy training margins), and the union bound over that grid is applied:
each row's `delta` is δ/|grid| (`delta_total` = δ, `alpha_rule` says how α was chosen).
`alpha_best` flags the α with the tightest Theorem 3 bound of its model.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from rnngen import bounds as B
from rnngen.errors import DataError
from rnngen.glove import load_glove
from rnngen.io import read_parquet, table_from_rows, write_parquet
from rnngen.layout import Layout
from rnngen.model import load_weights
from rnngen.model_stats import model_stats
from rnngen.specs import RunSpec
from rnngen.train import spec_splits
from tasks import ray_pool
from tasks.data import load_corpus
from tasks.spectrum import existing_rows as spectrum_rows
from tasks.train import read_runs

ID_COLUMNS = ("run_id", "L", "sigma", "seed", "alpha", "delta", "n")
EXTRA = ("indicator_loss_clean", "complexity_term_thm2", "r_fs_clean", "B")


def _lambda_min(out: str, L: int, data_key: str) -> tuple[float | None, str]:
    for row in spectrum_rows(out):
        if row["L"] == L and row["data_key"] == data_key:
            if row["status"] != "certified" or row["lambda_min"] is None:
                return None, f"λ_min at L={L} is uncertified ({row['message']})"
            if row["lambda_min"] <= 0:
                return None, f"λ_min at L={L} is {row['lambda_min']:.3e} <= 0"
            return float(row["lambda_min"]), ""
    return None, f"no spectrum row for L={L}; run `rnngen spectrum --L {L}` first"


def model_rows(payload: dict[str, Any], table: pa.Table) -> list[dict[str, Any]]:
    """Worker side: the rows of one model (all α), or one row saying why there are none."""
    spec = RunSpec.from_json(payload["spec"])
    base = {"run_id": spec.run_id, "L": spec.L, "sigma": spec.sigma, "seed": spec.seed,
            "hidden": spec.hidden, "gen_error": payload["gen_error"], "data_key": spec.data_key}
    if payload["lambda_min"] is None:
        return [base | {"status": "skipped", "reason": payload["reason"]}]
    embeddings = load_glove(payload["glove"]).table
    train, _ = spec_splits(table, embeddings.shape[0] - 1, spec)
    clean, noisy = model_stats(payload["weights"], spec, train, embeddings)
    margins = (noisy or clean).margins
    grid = payload["alphas"] or B.default_alpha_grid(margins)
    delta = B.union_bound_delta(payload["delta"], len(grid))
    rows = []
    for alpha in grid:
        terms = B.bound_row(clean, noisy, alpha=alpha, sigma=spec.sigma,
                            lambda_min=payload["lambda_min"], delta=delta)
        rows.append(base | terms | {
            "alpha": float(alpha), "delta": delta, "delta_total": payload["delta"],
            "alpha_grid_size": len(grid), "alpha_rule": payload["alpha_rule"], "n": clean.n,
            "indicator_loss_clean": B.indicator_margin_loss(clean.margins, alpha),
            "r_fs_clean": clean.r_fs, "B": float(clean.B),
            "complexity_term_thm2": B.complexity_term(
                B.rademacher_fs_term(2, alpha, clean.r_fs, clean.frob_X, clean.n,
                                     payload["lambda_min"]),
                B.rademacher_norm1_term(2, alpha, terms["beta_V"], terms["beta_U"],
                                        clean.norm1_XT, terms["Lambda"], clean.n)),
            "noise_draw": "the recorded training draw (eval_noise stream)",
            "status": "ok", "reason": ""})
    best = int(np.argmin([r["bound_thm3"] for r in rows])) if rows else -1
    for i, row in enumerate(rows):
        row["alpha_best"] = i == best
    return rows


def _payload(out: str, run: dict, glove: str | None, delta: float,
             alphas: list[float] | None) -> dict[str, Any]:
    spec = RunSpec.from_json(run["spec_json"])
    lam, reason = _lambda_min(out, spec.L, spec.data_key)
    payload = {"spec": run["spec_json"], "gen_error": run["gen_error"], "glove": glove,
               "delta": delta, "alphas": alphas, "lambda_min": lam, "reason": reason,
               "alpha_rule": ("given grid" if alphas else "quantiles 1,5,10,25,50,75,90 % of "
                              "the noisy training margins") + "; union bound δ/|grid|"}
    try:
        weights, stored = load_weights(Layout.at(out).models / f"{spec.run_id}.npz")
        if RunSpec.from_json(stored).run_id != spec.run_id:
            raise DataError(f"models/{spec.run_id}.npz holds the weights of another run "
                            f"({RunSpec.from_json(stored).run_id}); delete it and retrain.")
    except DataError as err:
        payload.update(lambda_min=None, reason=str(err))
        weights = None
    payload["weights"] = weights
    return payload


def read_bounds(out: str) -> list[dict[str, Any]]:
    path = Layout.at(out).bounds
    return read_parquet(path, required=ID_COLUMNS).to_pylist() if path.is_file() else []


@task(name="bounds-grid", cache_policy=NO_CACHE)
def bounds_grid(out: str, delta: float = 0.05, alphas: list[float] | None = None,
                max_retries: int = 1) -> dict[str, int]:
    """Bound rows for every finished model without them; rows of models done are kept."""
    done_runs = [r for r in read_runs(out) if r["status"] == "done"]
    kept = [r for r in read_bounds(out) if r["status"] == "ok"]
    have = {r["run_id"] for r in kept}
    todo = [r for r in done_runs if r["run_id"] not in have]
    counts = {"models": len(done_runs), "skipped": len(done_runs) - len(todo), "ok": 0,
              "not_computed": 0}
    if not todo:
        return counts
    corpus = load_corpus(out)
    payloads = [_payload(out, r, corpus.meta.get("glove"), delta, alphas) for r in todo]
    rows: dict[str, list[dict]] = {}
    for r in kept:
        rows.setdefault(r["run_id"], []).append(r)
    started = time.perf_counter()

    def on_done(payload: dict, result: list | None, error: BaseException | None) -> None:
        spec = RunSpec.from_json(payload["spec"])
        if error is not None:
            result = [{"run_id": spec.run_id, "L": spec.L, "sigma": spec.sigma,
                       "seed": spec.seed, "status": "failed", "reason": str(error)[-2000:]}]
        rows[spec.run_id] = result
        state = result[0]["status"]
        counts["ok" if state == "ok" else "not_computed"] += 1
        write_parquet(table_from_rows([r for rs in rows.values() for r in rs],
                                      ID_COLUMNS + B.TERM_COLUMNS),
                      Layout.at(out).bounds, {"stage": "bounds", "delta": delta})
        best = next((r for r in result if r.get("alpha_best")), None)
        print(f"bounds [{sum(counts[k] for k in ('ok', 'not_computed'))}/{len(todo)}] "
              f"L={spec.L} σ={spec.sigma} seed={spec.seed}: " + (
                  f"bound_thm3 {best['bound_thm3']:.3g} at α={best['alpha']:.3g}" if best else
                  f"{state}: {result[0]['reason']}") +
              f" ({time.perf_counter() - started:.0f} s)")

    ray_pool.fan_out(model_rows, payloads, shared=(corpus.table,), resources={"CPU": 1},
                     max_retries=max_retries, on_done=on_done)
    return counts
