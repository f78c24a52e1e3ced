"""Flow `train`: the (L, σ, seed) grid of bias-free ReLU RNNs, over Ray, resumable."""

from __future__ import annotations

from typing import Any

from prefect import flow

from rnngen.errors import UserError
from rnngen.io import output_lock
from rnngen.profiles import get_profile
from rnngen.specs import RunSpec, expand_grid
from tasks import ray_pool
from tasks.data import corpus_pointer
from tasks.train import train_grid


def build_grid(out: str, profile: str = "quick", lengths: list[int] | None = None,
               sigmas: list[float] | None = None, seeds: list[int] | None = None,
               overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """The profile's grid with the caller's overrides; validated before anything runs."""
    prof = get_profile(profile)
    base = {**prof.train, **(overrides or {}), "data_key": corpus_pointer(out)["data_key"]}
    sweep = {"L": list(prof.lengths if lengths is None else lengths),
             "sigma": list(prof.sigmas if sigmas is None else sigmas),
             "seed": list(prof.seeds if seeds is None else seeds)}
    return expand_grid(base, sweep)


@flow(name="train", log_prints=True)
def train(out: str = "data", profile: str = "quick", lengths: list[int] | None = None,
          sigmas: list[float] | None = None, seeds: list[int] | None = None,
          overrides: dict[str, Any] | None = None, ray_address: str | None = None,
          max_retries: int = 2) -> dict[str, int]:
    """Train every cell not yet finished; fail at the end (non-zero exit) if any cell failed."""
    with output_lock(out):
        specs = build_grid(out, profile, lengths, sigmas, seeds, overrides)
        ray_pool.connect(ray_address)
        counts = train_grid(out, specs, resources=get_profile(profile).resources,
                            max_retries=max_retries)
        print(f"train: {counts['total']} cells: {counts['skipped']} already finished, "
              f"{counts['done']} done, {counts['diverged']} diverged, {counts['failed']} failed")
        if counts["failed"]:
            raise UserError(
                f"{counts['failed']} of {counts['total']} training cells failed (see the "
                "'error' column of results/runs.parquet and `rnngen status`); the others are "
                "saved. Run the same command again to retry the failed ones.")
        return counts
