"""Flow `bounds`: every bound term for every trained model (results/bounds.parquet).

Each model is its own Prefect task run ("bounds L=100 σ=0.2 seed=3") that submits a Ray
task of the same name; models whose rows are on disk show as Skipped.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from rnngen.errors import ParameterError
from rnngen.io import output_lock
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import publish_provenance
from rnngen_tasks.bounds import bounds_grid, prepare_bounds, publish_best

MODELS_IN_FLIGHT = 128  # threads that only wait on their Ray task


@flow(
    name="bounds", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MODELS_IN_FLIGHT)
)
def bounds(
    out: str = "data",
    delta: float = 0.05,
    alphas: list[float] | None = None,
    ray_address: str | None = None,
    device: str = "auto",
) -> dict[str, int]:
    """Compute the bound rows of every finished model that has none yet; the statistics
    run in float64 torch on `device` ('auto', 'cpu', 'cuda') or in 'numpy'."""
    with output_lock(out):
        if not 0 < delta < 1:
            raise ParameterError(f"--delta must be in (0, 1), got {delta}.")
        if alphas is not None and (not alphas or any(a <= 0 for a in alphas)):
            raise ParameterError(f"--alpha values must be positive margins, got {alphas}.")
        publish_provenance("bounds", out)
        ray_pool.connect(ray_address)
        specs, run = prepare_bounds(out, delta=delta, alphas=alphas, device=device)
        counts = bounds_grid(specs, run)
        publish_best(out)
        print(
            f"bounds: {counts['models']} models: {counts['skipped']} already done, "
            f"{counts['ok']} computed, {counts['not_computed']} not computed (reason in the row)"
        )
        return counts
