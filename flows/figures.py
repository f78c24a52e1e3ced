"""Flow `figures`: the paper's figures and ours, drawn only from the Parquet results."""

from __future__ import annotations

from prefect import flow

from rnngen.io import output_lock
from rnngen.layout import Layout
from rnngen_tasks.artifacts import labelled, publish_provenance, run_name
from rnngen_tasks.figures import draw_figures


@flow(name="figures", log_prints=True, flow_run_name=run_name("figures"))
def figures(out: str = "data") -> list[str]:
    with output_lock(out), labelled("figures"):
        publish_provenance("figures", out)
        paths, drawn = draw_figures(out)
        if drawn:
            for path in paths:
                print(f"wrote {path}")
        else:
            print(
                f"figures: results unchanged since the last drawing; {len(paths)} files "
                f"under {Layout.at(out).figures} are up to date"
            )
        return paths
