"""Hand-made result tables with the real schemas, for the analysis, report and figures tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa

from rnngen import schemas
from rnngen.bounds import TERM_COLUMNS
from rnngen.io import with_metadata
from rnngen.specs import RunSpec

SIGMAS = (0.0, 0.2, 0.4)
SEEDS = (0, 1, 2, 3, 4)

# Per-seed offsets shared by every σ (a seed's runs are correlated, as real ones are):
# the paired tests see the σ effect against small seed-to-seed noise in the differences.
SEED_OFFSET = {0: 0.004, 1: -0.003, 2: 0.001, 3: -0.002, 4: 0.0}
JITTER = {0: 0.0004, 1: -0.0002, 2: 0.0001, 3: -0.0003, 4: 0.0002}


def u_shape(L: int, sigma: float, seed: int) -> float:
    return {0.0: 0.05, 0.2: 0.02, 0.4: 0.05}[sigma] + SEED_OFFSET[seed] + JITTER[seed] * sigma


def falling(L: int, sigma: float, seed: int) -> float:
    return 0.05 - 0.1 * sigma + SEED_OFFSET[seed] + JITTER[seed] * (1 + sigma)


def flat(L: int, sigma: float, seed: int) -> float:
    # the same mean at every σ; seed noise that changes sign between σ values
    return 0.03 + SEED_OFFSET[(seed + int(round(sigma * 5))) % 5]


def spec(L: int, sigma: float, seed: int, **extra) -> RunSpec:
    return RunSpec(L=L, sigma=sigma, seed=seed, data_key="fixture", **extra)


def run_row(s: RunSpec, gen: float, gap: float | None = None, status: str = "done") -> dict:
    gap = gen - 0.01 if gap is None else gap
    test_error = 0.15 + 0.01 * s.sigma
    return {
        "run_id": s.run_id,
        "group_id": s.group_id,
        "experiment_id": s.experiment_id,
        **s.model_dump(),
        "n_train": 25000,
        "n_test": 25000,
        "spec_json": s.to_json(),
        "status": status,
        "gen_error": gen if status == "done" else math.nan,
        "clean_gap": gap,
        "test_error_clean": test_error,
        "test_accuracy": 1 - test_error,
        "train_error_noisy": test_error - gen,
        "train_error_clean": test_error - gap,
        "seconds": 60.0 + s.seed,
        "finished_at": datetime(2026, 12, 2, 8, 10 + s.seed, tzinfo=UTC),
        "hardware": "Test CPU (2 cores)",
    }


def make_runs(
    gen: Callable[[int, float, int], float] = u_shape,
    gap: Callable[[int, float, int], float] = falling,
    lengths: tuple[int, ...] = (100, 200),
    extra_rows: list[dict] | None = None,
    **spec_fields,
) -> pa.Table:
    rows = [
        run_row(spec(L, s, seed, **spec_fields), gen(L, s, seed), gap(L, s, seed))
        for L in lengths
        for s in SIGMAS
        for seed in SEEDS
    ]
    table = schemas.to_table(rows + (extra_rows or []), schemas.RUNS)
    return with_metadata(table, {"stage": "train", "profile": "fixture"})


def make_spectrum(lengths: tuple[int, ...] = (100, 200)) -> pa.Table:
    rows = [
        {
            "L": L,
            "n": 25000,
            "dim": 50 * L,
            "lambda_min": 6e-4 / L * 100,
            "lambda_min_estimate": 6e-4 / L * 100,
            "lambda_min_residual": 1e-14,
            "lambda_max": 1.2e3,
            "condition": 2e6,
            "trace": 100.0,
            "method": "fixture",
            "iterations": 10,
            "status": "certified",
            "message": "",
            "seconds": 12.5,
            "data_key": "fixture",
            "smallest": [6e-4 / L * 100, 7e-4],
            "largest": [1.2e3],
        }
        for L in lengths
    ]
    return with_metadata(schemas.to_table(rows, schemas.SPECTRUM), {"stage": "spectrum"})


def bound_row(run: dict, alpha: float, best: bool) -> dict:
    sigma, L = run["sigma"], run["L"]
    terms = {name: 1.0 for name in TERM_COLUMNS}
    terms.update(
        margin_loss=0.2,
        rademacher_fs_term=1e3 * (1 + run["seed"]),
        rademacher_norm1_term=1e12 * (1 + sigma),
        noise_term=1e11 * sigma,
        confidence_term=0.05,
        beta_W=1.5,
        beta_U=2.0,
        beta_V=3.0,
        Lambda=1e9,
        bound_thm2_remark6=None,
        zhang_order=1e30,
    )
    terms["complexity_term"] = terms["rademacher_fs_term"] + terms["rademacher_norm1_term"]
    terms["bound_thm3"] = (
        sum(terms[t] for t in ("margin_loss", "complexity_term", "noise_term", "confidence_term"))
        / alpha
    )
    terms["bound_thm2"] = terms["bound_thm3"] * 0.9
    return {
        "run_id": run["run_id"],
        "group_id": run["group_id"],
        "experiment_id": run["experiment_id"],
        "L": L,
        "sigma": sigma,
        "seed": run["seed"],
        "hidden": run["hidden"],
        "data_key": "fixture",
        "gen_error": run["gen_error"],
        "alpha": alpha,
        "delta": 0.05 / 2,
        "delta_total": 0.05,
        "alpha_grid_size": 2,
        "alpha_rule": "fixture grid",
        "n": 25000,
        **terms,
        "alpha_best": best,
        "status": "ok",
        "reason": "",
        "seconds": 20.0,
    }


def make_bounds(runs: pa.Table) -> pa.Table:
    rows = [
        bound_row(r, alpha, alpha == 2.0)
        for r in runs.to_pylist()
        if r["status"] == "done"
        for alpha in (1.0, 2.0)
    ]
    return with_metadata(schemas.to_table(rows, schemas.BOUNDS), {"stage": "bounds"})
