"""Flow `report`: REPORT.md in the output folder, drawn only from its Parquet results."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from rnngen.io import output_lock
from rnngen_tasks.artifacts import labelled, publish_provenance, run_name
from rnngen_tasks.report import write_report


@flow(name="report", log_prints=True, flow_run_name=run_name("report"))
def report(out: str = "data") -> str:
    """Write the reproduction report of `out` (the paper's claims beside ours, verdicts,
    λ_min, bound terms, Kendall τ, provenance); returns its path."""
    with output_lock(out), labelled("report"):
        publish_provenance("report", out)
        path, written = write_report(out)
        print(f"wrote {path}" if written else f"{path} is up to date")
        create_markdown_artifact(
            key="report",
            markdown=path.read_text(encoding="utf-8"),
            description=f"REPORT.md of {path.parent}",
        )
        return str(path)
