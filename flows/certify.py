"""Flow `certify`: PAC-Bayes-kl certificates for a grid of cells (results/certificates.parquet).

Each cell is a unit of the grid executor (task run "certify L=100 σ=0.2 seed=0"); cells
certified under the same settings show as Skipped.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from rnngen.certify import CertifySettings
from rnngen.errors import UserError
from rnngen.io import output_lock
from rnngen.profiles import get_profile
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import labelled, publish_provenance, publish_table, run_name
from rnngen_tasks.certify import CertifyStep
from rnngen_tasks.executor import run_grid
from rnngen_tasks.grid import build_grid

SUMMARY = ("L", "sigma", "seed", "certificate", "kl", "emp_error_mc", "test_error_stochastic")


@flow(
    name="certify",
    log_prints=True,
    flow_run_name=run_name("certify"),
    task_runner=ThreadPoolTaskRunner(max_workers=64),
)
def certify(
    out: str = "data",
    profile: str = "certificates",
    lengths: list[int] | None = None,
    sigmas: list[float] | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    ray_address: str | None = None,
    max_retries: int = 0,
) -> dict[str, int]:
    """Certify every cell of the grid not yet certified under these settings. `settings`
    are CertifySettings fields over the profile's (`stages.certify`) and the defaults."""
    prof = get_profile(profile)
    chosen = CertifySettings(**{**prof.stages.get("certify", {}), **(settings or {})})
    with output_lock(out), labelled("certify", profile):
        publish_provenance("certify", out, profile)
        specs = build_grid(out, profile, lengths, sigmas, seeds, overrides)
        step = CertifyStep(out, specs, chosen, max_retries)
        todo = step.pending()
        if todo:
            ray_pool.connect(ray_address)
            step.prepare(todo)
            print(f"certify: {len(todo)} of {len(specs)} cells to certify")
        counts = run_grid(step, specs, todo)
        rows = [
            r for r in step.store.rows("certificates") if r["run_id"] in {s.run_id for s in specs}
        ]
        publish_table(
            "certificates",
            [{k: r.get(k) for k in SUMMARY} for r in rows],
            "PAC-Bayes-kl certificates of the clean 0-1 error, with the measured test error",
        )
        for r in rows:
            if r["status"] == "done":
                print(
                    f"certify L={r['L']} σ={r['sigma']:g} seed={r['seed']}: certificate "
                    f"{r['certificate']:.4f}, stochastic test error "
                    f"{r['test_error_stochastic']:.4f}, KL {r['kl']:.1f}"
                )
        result = {"cells": counts.total, "skipped": counts.skipped, "done": counts["done"]}
        result["not_done"] = counts.total - counts.skipped - counts["done"]
        if result["not_done"]:
            raise UserError(
                f"{result['not_done']} of {counts.total} cells were not certified (see the "
                "'status' and 'reason' columns of results/certificates.parquet)."
            )
        return result
