"""The grid of a profile: the RunSpecs a stage runs over (shared by the stages)."""

from __future__ import annotations

from typing import Any

from rnngen.profiles import check_device, get_profile
from rnngen.specs import RunSpec, expand_grid
from rnngen_tasks.corpus import corpus_pointer


def build_grid(
    out: str,
    profile: str = "quick",
    lengths: list[int] | None = None,
    sigmas: list[float] | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """The profile's grid with the caller's overrides; validated before anything runs.

    The specs say device 'cpu' whatever the profile asks: the device is no part of a run's
    identity and is resolved against the cluster only when cells are submitted.
    """
    prof = get_profile(profile)
    base = {**prof.train, **(overrides or {}), "data_key": corpus_pointer(out)["data_key"]}
    check_device(base.pop("device", prof.device))
    axes = {k: list(v) for k, v in prof.axes.items() if k not in (overrides or {})}
    sweep = {
        "L": list(prof.lengths if lengths is None else lengths),
        **axes,
        "sigma": list(prof.sigmas if sigmas is None else sigmas),
        "seed": list(prof.seeds if seeds is None else seeds),
    }
    return expand_grid(base, sweep)
