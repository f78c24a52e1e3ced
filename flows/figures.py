"""Flow `figures`: the paper's figures and ours, drawn only from the Parquet results."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from rnngen import figures as F
from rnngen.errors import DataError
from rnngen.io import output_lock, read_parquet, write_parquet
from rnngen.layout import Layout


@task(name="draw-figures", cache_policy=NO_CACHE)
def draw_figures(out: str) -> list[str]:
    layout = Layout.at(out)
    for path, stage in ((layout.runs, "train"), (layout.spectrum, "spectrum"),
                        (layout.bounds, "bounds")):
        if not path.is_file():
            raise DataError(f"{path} is missing: run `rnngen {stage} --out {out}` first.")
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
    return [str(p) for p in paths] + [str(layout.results / "kendall_tau.parquet")]


@flow(name="figures", log_prints=True)
def figures(out: str = "data") -> list[str]:
    with output_lock(out):
        paths = draw_figures(out)
        for path in paths:
            print(f"wrote {path}")
        return paths
