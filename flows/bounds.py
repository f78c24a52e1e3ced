"""Flow `bounds`: every bound term for every trained model (results/bounds.parquet)."""

from __future__ import annotations

from prefect import flow

from rnngen.errors import ParameterError
from rnngen.io import output_lock
from tasks import ray_pool
from tasks.bounds import bounds_grid


@flow(name="bounds", log_prints=True)
def bounds(out: str = "data", delta: float = 0.05, alphas: list[float] | None = None,
           ray_address: str | None = None) -> dict[str, int]:
    """Compute the bound rows of every finished model that has none yet."""
    with output_lock(out):
        if not 0 < delta < 1:
            raise ParameterError(f"--delta must be in (0, 1), got {delta}.")
        if alphas is not None and (not alphas or any(a <= 0 for a in alphas)):
            raise ParameterError(f"--alpha values must be positive margins, got {alphas}.")
        ray_pool.connect(ray_address)
        counts = bounds_grid(out, delta=delta, alphas=alphas)
        print(f"bounds: {counts['models']} models: {counts['skipped']} already done, "
              f"{counts['ok']} computed, {counts['not_computed']} not computed (reason in the row)")
        return counts
