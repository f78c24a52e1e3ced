"""Flow `study`: the whole pipeline, stage after stage, for one profile.

embed -> spectrum -> train -> bounds -> figures. Every stage skips what is already on
disk, so a second run with nothing changed only checks. The run publishes two Prefect
artifacts: the grid as a table and a markdown summary with the headline numbers.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.bounds import bounds
from flows.embed import embed
from flows.figures import figures
from flows.spectrum import spectrum
from flows.train import build_grid, train
from rnngen.figures import aggregate_gen_error
from rnngen.io import output_lock, read_parquet
from rnngen.layout import Layout
from rnngen.profiles import get_profile
from tasks import ray_pool


@flow(name="study", log_prints=True)
def study(profile: str = "quick", out: str = "data", imdb_path: str | None = None,
          ray_address: str | None = None, delta: float = 0.05) -> dict[str, Any]:
    """Run every stage for the profile; return the paths and headline numbers."""
    with output_lock(out):
        prof = get_profile(profile)
        key = embed(out=out, lengths=list(prof.lengths), imdb_path=imdb_path)
        build_grid(out, profile)  # validate the whole grid before any Ray work starts
        ray_pool.connect(ray_address)
        spectrum(out=out, lengths=list(prof.lengths), n_train=prof.spectrum_n_train,
                 ray_address=ray_address)
        train(out=out, profile=profile, ray_address=ray_address)
        bounds(out=out, delta=delta, ray_address=ray_address)
        paths = figures(out=out)
        summary = publish_artifacts(out, profile)
        print(f"study[{prof.name}] finished: corpus {key}; figures under {Layout.at(out).figures}")
        return {"data_key": key, "figures": paths, **summary}


def publish_artifacts(out: str, profile: str) -> dict[str, Any]:
    """A table artifact of the grid and a markdown artifact of the headline numbers."""
    layout = Layout.at(out)
    runs = read_parquet(layout.runs)
    cells = [{k: r[k] for k in ("L", "sigma", "seed", "status", "test_accuracy", "gen_error")}
             for r in runs.to_pylist()]
    create_table_artifact(key=f"study-grid-{profile}", table=cells,
                          description=f"Training grid of the `{profile}` study ({out})")
    spectrum_rows = read_parquet(layout.spectrum).to_pylist()
    lam = {r["L"]: r["lambda_min"] for r in spectrum_rows}
    gen = aggregate_gen_error(runs)
    lines = [f"# rnngen study `{profile}`", "", "| L | λ_min(E xxᵀ) | residual |", "|---|---|---|"]
    lines += [f"| {r['L']} | {r['lambda_min'] if r['lambda_min'] is not None else 'uncertified'}"
              f" | {r['lambda_min_residual']:.1e} |" for r in spectrum_rows]
    lines += ["", "| L | σ | gen. error (mean ± s.e.) | seeds |", "|---|---|---|---|"]
    lines += [f"| {g['L']} | {g['sigma']:g} | {g['mean']:+.4f} ± {g['sem']:.4f} | {g['count']} |"
              for g in gen]
    lines += ["", "Figures: " + ", ".join(f"`{p.name}`" for p in sorted(
        layout.figures.glob("*.png")))]
    create_markdown_artifact(key=f"study-summary-{profile}", markdown="\n".join(lines))
    return {"lambda_min": lam, "gen_error": gen}
