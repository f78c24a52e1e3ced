"""Flow `measures`: the generalization measures of every trained model, and their ranking.

Each model is a unit of the grid executor (task run "measures L=100 σ=0.2 seed=3 …");
models whose rows were computed from the same settings, model file and bound rows show
as Skipped. The ranking (results/measure_ranking.parquet) is recomputed every time.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from rnngen.io import output_lock
from rnngen.settings import MeasuresSettings
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import labelled, publish_provenance, publish_table, run_name
from rnngen_tasks.executor import run_grid
from rnngen_tasks.measures import THIS_FOLDER, MeasuresStep, rank_folder

MODELS_IN_FLIGHT = 128  # threads that only wait on their Ray task


@flow(
    name="measures",
    log_prints=True,
    flow_run_name=run_name("measures"),
    task_runner=ThreadPoolTaskRunner(max_workers=MODELS_IN_FLIGHT),
)
def measures(
    out: str = "data",
    ray_address: str | None = None,
    delta: float = 0.05,
    flatness: bool = True,
    flatness_reviews: int = 2000,
    max_retries: int = 1,
    n_resamples: int = 1000,
    pool: list[str] | None = None,
    flatness_steps: int | None = None,
    flatness_draws: int | None = None,
    gpu_fraction: float | None = None,
) -> dict[str, int]:
    """Compute every measure of every trained model whose rows are missing or stale, then
    rank the measures over the folder's models, and with `pool` (folders whose measures are
    computed; None: those of the last ranking) over this folder's and theirs together.
    A setting left at None takes MeasuresSettings' default."""
    optional = {
        "flatness_steps": flatness_steps,
        "flatness_draws": flatness_draws,
        "gpu_fraction": gpu_fraction,
    }
    settings = MeasuresSettings(
        delta=delta,
        flatness=flatness,
        flatness_reviews=flatness_reviews,
        max_retries=max_retries,
        **{k: v for k, v in optional.items() if v is not None},
    )
    with output_lock(out), labelled("measures"):
        publish_provenance("measures", out)
        step = MeasuresStep(out, settings)
        todo = step.pending()
        if todo:
            ray_pool.connect(ray_address)
            step.prepare(todo)
            print(f"measures: {len(todo)} of {len(step.units)} models to compute")
        counts = run_grid(step, step.units, todo)
        ranking = rank_folder(out, n_resamples, pool) if step.units else []
        top = [r for r in ranking if r["target"] == "clean_gap" and r["scope"] == THIS_FOLDER][:5]
        publish_table(
            "measure-ranking",
            [{k: r[k] for k in ("rank", "measure", "psi", "psi_lo", "psi_hi", "tau")} for r in top],
            "The five measures with the highest granulated τ (Ψ) against the clean gap",
        )
        for r in top:
            print(
                f"measures: #{r['rank']} {r['measure']}: Ψ {r['psi']:+.3f} "
                f"[{r['psi_lo']:+.3f}, {r['psi_hi']:+.3f}], τ {r['tau']:+.3f} (clean gap)"
            )
        result = {"models": counts.total, "skipped": counts.skipped, "ok": counts["ok"]}
        result["failed"] = counts.total - counts.skipped - counts["ok"]
        return result
