"""Flow `study`: the whole pipeline, stage after stage, for one profile.

embed -> train -> spectrum -> bounds -> measures -> figures -> report. Every stage skips what is
already on disk, so a second run with nothing changed only checks. Before the first cell
trains, every stage's request is checked against the cluster (a grid it cannot run is
refused in seconds, not after hours of training). Training comes before the spectrum: it
is the long stage, and it needs nothing the spectrum computes.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from rnngen.io import output_lock
from rnngen.layout import Layout
from rnngen.profiles import get_profile
from rnngen_flows.bounds import bounds
from rnngen_flows.embed import embed
from rnngen_flows.figures import figures
from rnngen_flows.measures import measures
from rnngen_flows.report import report
from rnngen_flows.spectrum import spectrum
from rnngen_flows.train import train
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import labelled, publish_artifacts, publish_provenance, run_name
from rnngen_tasks.spectrum import check_spectrum
from rnngen_tasks.train import build_grid


@flow(name="study", log_prints=True, flow_run_name=run_name("study"))
def study(
    profile: str = "quick",
    out: str = "data",
    imdb_path: str | None = None,
    ray_address: str | None = None,
    delta: float = 0.05,
    device: str | None = None,
    pack_size: int | None = None,
    lengths: list[int] | None = None,
    sigmas: list[float] | None = None,
    seeds: list[int] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every stage for the profile; return the paths and headline numbers.

    `profile`: a built-in profile's name or a profile file (`*.toml`). `device` ('auto',
    'cpu' or 'cuda') and `pack_size` override the profile's choices for training;
    `lengths`, `sigmas`, `seeds` and `overrides` (RunSpec fields) its grid, as for `train`.
    """
    with output_lock(out), labelled("study", profile):
        publish_provenance("study", out, profile)
        prof = get_profile(profile)
        lengths = list(prof.lengths if lengths is None else lengths)
        key = embed(out=out, lengths=lengths, imdb_path=imdb_path)
        # validate the whole grid before any Ray work starts
        build_grid(out, profile, lengths, sigmas, seeds, overrides)
        ray_pool.connect(ray_address)
        check_spectrum(out, lengths, prof.spectrum_n_train)
        train(
            out=out,
            profile=profile,
            lengths=lengths,
            sigmas=sigmas,
            seeds=seeds,
            ray_address=ray_address,
            overrides={**(overrides or {}), **({"device": device} if device else {})} or None,
            pack_size=pack_size,
        )
        spectrum(out=out, lengths=lengths, n_train=prof.spectrum_n_train, ray_address=ray_address)
        bounds(out=out, delta=delta, ray_address=ray_address, gpu_fraction=prof.gpu_fraction)
        measures(out=out, ray_address=ray_address, **prof.stages.get("measures", {}))
        paths = figures(out=out)
        report_path = report(out=out)
        summary = publish_artifacts(out, profile)
        print(
            f"study[{prof.name}] finished: corpus {key}; figures under "
            f"{Layout.at(out).figures}; report {report_path}"
        )
        return {"data_key": key, "figures": paths, "report": report_path, **summary}
