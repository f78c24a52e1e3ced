"""Flow `figures`: the paper's figures and ours, drawn only from the Parquet results."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from rnngen import figures as F
from rnngen.errors import DataError
from rnngen.hashing import content_key, sha256_file
from rnngen.io import atomic_path, output_lock, read_parquet, write_parquet
from rnngen.layout import Layout


def _inputs_key(layout: Layout) -> str:
    """What the figures are drawn from: the three result files and the drawing code."""
    files = [layout.runs, layout.spectrum, layout.bounds, Path(F.__file__)]
    return content_key({p.name: sha256_file(p) for p in files})


@task(name="draw-figures", cache_policy=NO_CACHE)
def draw_figures(out: str) -> tuple[list[str], bool]:
    """Draw every figure and the Kendall-τ table -> (paths, whether anything was drawn).
    The drawing is skipped when neither the results nor the drawing code changed since the
    last time and every output is there."""
    layout = Layout.at(out)
    for path, stage in ((layout.runs, "train"), (layout.spectrum, "spectrum"),
                        (layout.bounds, "bounds")):
        if not path.is_file():
            raise DataError(f"{path} is missing: run `rnngen {stage} --out {out}` first.")
    stamp, key = layout.figures / ".drawn.json", _inputs_key(layout)
    if stamp.is_file():
        drawn = json.loads(stamp.read_text())
        if drawn.get("key") == key and all(Path(p).is_file() for p in drawn["paths"]):
            return drawn["paths"], False
    runs, spectrum = read_parquet(layout.runs), read_parquet(layout.spectrum)
    bounds = read_parquet(layout.bounds)
    bounds = bounds.filter(bounds.column("status").to_numpy(zero_copy_only=False) == "ok")
    fig = layout.figures
    paths = [*F.fig_gen_error(runs, [100], fig / "fig1_gen_error_L100"),
             *F.fig_gen_error(runs, [200, 300], fig / "fig2_gen_error_L200_L300"),
             *F.fig_spectrum(spectrum, fig / "spectrum"),
             *F.fig_bound_terms(bounds, fig / "bound_terms"),
             *F.fig_bound_vs_gap(bounds, runs, fig / "bound_vs_gap")]
    tau = F.kendall_table(bounds, runs)
    write_parquet(tau, layout.results / "kendall_tau.parquet", {"stage": "figures"})
    drawn = [str(p) for p in paths] + [str(layout.results / "kendall_tau.parquet")]
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps({"key": key, "paths": drawn}))
    return drawn, True


@flow(name="figures", log_prints=True)
def figures(out: str = "data") -> list[str]:
    with output_lock(out):
        paths, drawn = draw_figures(out)
        if drawn:
            for path in paths:
                print(f"wrote {path}")
        else:
            print(f"figures: results unchanged since the last drawing; {len(paths)} files "
                  f"under {Layout.at(out).figures} are up to date")
        return paths
