"""Flow `train`: the (L, σ, seed) grid of bias-free ReLU RNNs, over Ray, resumable."""

from __future__ import annotations

from typing import Any

from prefect import flow

from rnngen.errors import UserError
from rnngen.io import output_lock
from rnngen.profiles import get_profile
from tasks import ray_pool
from tasks.train import build_grid, train_grid


@flow(name="train", log_prints=True)
def train(out: str = "data", profile: str = "quick", lengths: list[int] | None = None,
          sigmas: list[float] | None = None, seeds: list[int] | None = None,
          overrides: dict[str, Any] | None = None, ray_address: str | None = None,
          max_retries: int = 2) -> dict[str, int]:
    """Train every cell not yet finished; fail at the end (non-zero exit) if any cell failed.

    `overrides` may hold `device` ('auto', 'cpu' or 'cuda'); by default the profile's.
    """
    with output_lock(out):
        prof = get_profile(profile)
        overrides = dict(overrides or {})
        device = overrides.pop("device", prof.device)
        specs = build_grid(out, profile, lengths, sigmas, seeds, overrides)
        ray_pool.connect(ray_address)
        counts = train_grid(out, specs, device=device, gpu_fraction=prof.gpu_fraction,
                            max_retries=max_retries, profile=profile)
        print(f"train: {counts['total']} cells: {counts['skipped']} already finished, "
              f"{counts['done']} done, {counts['diverged']} diverged, {counts['failed']} failed")
        if counts["failed"]:
            raise UserError(
                f"{counts['failed']} of {counts['total']} training cells failed (see the "
                "'error' column of results/runs.parquet and `rnngen status`); the others are "
                "saved. Run the same command again to retry the failed ones.")
        return counts
