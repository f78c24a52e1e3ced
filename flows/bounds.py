"""Flow `bounds`: every bound term for every trained model (results/bounds.parquet).

Each model is its own Prefect task run ("bounds L=100 σ=0.2 seed=3", run by the grid
executor) that submits a Ray task of the same name; models whose rows are on disk and
were computed from the same settings and inputs show as Skipped.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from rnngen.io import output_lock
from rnngen.settings import BoundsSettings
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import labelled, publish_provenance, run_name
from rnngen_tasks.bounds import BoundsStep, publish_best
from rnngen_tasks.executor import run_grid

MODELS_IN_FLIGHT = 128  # threads that only wait on their Ray task


@flow(
    name="bounds",
    log_prints=True,
    flow_run_name=run_name("bounds"),
    task_runner=ThreadPoolTaskRunner(max_workers=MODELS_IN_FLIGHT),
)
def bounds(
    out: str = "data",
    delta: float = 0.05,
    alphas: list[float] | None = None,
    ray_address: str | None = None,
    device: str = "auto",
    max_retries: int = 1,
    gpu_fraction: float = 0.25,
) -> dict[str, int]:
    """Compute the bound rows of every finished model whose rows are missing or stale; the
    statistics run in float64 torch on `device` ('auto', 'cpu', 'cuda') or in 'numpy'."""
    settings = BoundsSettings(
        delta=delta,
        **({"alphas": tuple(alphas)} if alphas is not None else {}),
        max_retries=max_retries,
        gpu_fraction=gpu_fraction,
    )
    with output_lock(out), labelled("bounds"):
        publish_provenance("bounds", out)
        step = BoundsStep(out, settings, device)
        todo = step.pending()
        if todo:
            ray_pool.connect(ray_address)
            step.prepare(todo)
            print(
                f"bounds: {len(todo)} of {len(step.units)} models to compute, statistics "
                f"on {step.device}"
            )
        counts = run_grid(step, step.units, todo)
        publish_best(out)
        computed = counts["ok"]
        result = {
            "models": counts.total,
            "skipped": counts.skipped,
            "ok": computed,
            "not_computed": counts.total - counts.skipped - computed,
        }
        print(
            f"bounds: {result['models']} models: {result['skipped']} already done, "
            f"{result['ok']} computed, {result['not_computed']} not computed (reason in the row)"
        )
        return result
