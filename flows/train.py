"""Flow `train`: the (L, σ, seed) grid of bias-free ReLU RNNs, over Ray, resumable.

Each cell is its own Prefect task run ("train L=100 σ=0.2 seed=3"), with its own state,
duration, logs and retries; it submits the cell as a Ray task of the same name and waits
for it, so Ray still decides where cells run. Cells already on disk show as Skipped.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from rnngen.errors import UserError
from rnngen.io import output_lock
from rnngen.profiles import get_profile
from rnngen.settings import TrainSettings
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import labelled, publish_provenance, run_name
from rnngen_tasks.executor import run_grid, show_skipped
from rnngen_tasks.train import build_grid, cell_name, prepare_training, publish_grid

# Threads that wait on cells in flight: more than any cluster here runs at once (a thread
# only waits on its Ray task; Ray decides when and where the cell runs).
CELLS_IN_FLIGHT = 128


@flow(
    name="train",
    log_prints=True,
    flow_run_name=run_name("train"),
    task_runner=ThreadPoolTaskRunner(max_workers=CELLS_IN_FLIGHT),
)
def train(
    out: str = "data",
    profile: str = "quick",
    lengths: list[int] | None = None,
    sigmas: list[float] | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    ray_address: str | None = None,
    max_retries: int = 2,
    pack_size: int | None = None,
) -> dict[str, int]:
    """Train every cell not yet finished; fail at the end (non-zero exit) if any cell failed.

    `overrides` may hold `device` ('auto', 'cpu' or 'cuda'); by default the profile's.
    `pack_size`: cells trained together as one batched model (0 = automatic: every σ ×
    seed of one L on GPUs, single cells on CPUs); by default the profile's.
    """
    prof = get_profile(profile)
    settings = TrainSettings(
        max_retries=max_retries,
        gpu_fraction=prof.gpu_fraction,
        pack_size=prof.pack_size if pack_size is None else pack_size,
    )
    with output_lock(out), labelled("train", profile):
        publish_provenance("train", out, profile)
        overrides = dict(overrides or {})
        device = overrides.pop("device", prof.device)
        specs = build_grid(out, profile, lengths, sigmas, seeds, overrides)
        ray_pool.connect(ray_address)
        todo, step = prepare_training(out, specs, device, profile, settings)
        if step is not None:
            counts = run_grid(step, specs, todo)
        else:  # every cell on disk: each still shows as a Skipped task run
            counts = None
            show_skipped("train", [cell_name(s) for s in specs], profile)
        publish_grid(out, specs)
        done = counts.as_dict() if counts else {"total": len(specs), "skipped": len(specs)}
        result = {k: done.get(k, 0) for k in ("total", "skipped", "done", "diverged", "failed")}
        print(
            f"train: {result['total']} cells: {result['skipped']} already finished, "
            f"{result['done']} done, {result['diverged']} diverged, {result['failed']} failed"
        )
        if result["failed"]:
            raise UserError(
                f"{result['failed']} of {result['total']} training cells failed (see the "
                "'error' column of results/runs.parquet and `rnngen status`); the others are "
                "saved. Run the same command again to retry the failed ones."
            )
        return result
