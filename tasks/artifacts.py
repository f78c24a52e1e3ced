"""Prefect artifacts: what a run shows in the UI besides its logs.

Every stage flow publishes its provenance (the code, software and hardware it ran on, as
its Parquet files record it) and a table of what it produced; training and bounds keep a
progress artifact that moves model by model; the study adds its headline numbers.
"""

from __future__ import annotations

import threading
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from rnngen.analysis import cells
from rnngen.io import read_parquet
from rnngen.layout import Layout
from rnngen.provenance import provenance


def publish_provenance(stage: str, out: str) -> None:
    """A markdown artifact `<stage>-provenance`: commit, versions, hardware, output folder."""
    p = provenance()
    versions = ", ".join(f"{k} {v}" for k, v in sorted(p["versions"].items()) if v)
    commit = (p["git_commit"] or "unknown") + (" (uncommitted changes)" if p["git_dirty"] else "")
    lines = [
        f"# rnngen {stage}",
        "",
        f"- output folder: `{Layout.at(out).out}`",
        f"- git commit: `{commit}`",
        f"- Python {p['python']}; {versions}",
        f"- host: {p['cpu']} ({p['cpu_cores']} cores)"
        + (f"; GPUs: {', '.join(p['gpus'])}" if p["gpus"] else "; no GPU"),
        f"- platform: {p['platform']}; started {p['written_at']}",
    ]
    create_markdown_artifact(
        key=f"{stage}-provenance",
        markdown="\n".join(lines),
        description=f"What this {stage} run ran on",
    )


class Progress:
    """A progress artifact `<stage>-progress` that moves as units of work finish (from any
    thread)."""

    def __init__(self, stage: str, total: int, already: int = 0) -> None:
        self.stage, self.total, self.done = stage, max(total, 1), already
        self._lock = threading.Lock()
        self.id = create_progress_artifact(
            progress=self._percent(), key=f"{stage}-progress", description=self._text()
        )

    def _percent(self) -> float:
        return 100.0 * self.done / self.total

    def _text(self) -> str:
        return f"{self.stage}: {self.done} of {self.total} finished"

    def advance(self) -> None:
        with self._lock:
            self.done += 1
            update_progress_artifact(self.id, self._percent(), description=self._text())


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(key=key, table=rows, description=description)


def publish_artifacts(out: str, profile: str) -> dict[str, Any]:
    """The study's table of the grid and markdown of its headline numbers."""
    layout = Layout.at(out)
    runs = read_parquet(layout.runs)
    grid = [
        {k: r[k] for k in ("L", "sigma", "seed", "status", "test_accuracy", "gen_error")}
        for r in runs.to_pylist()
    ]
    publish_table(f"study-grid-{profile}", grid, f"Training grid of the `{profile}` study ({out})")
    spectrum_rows = read_parquet(layout.spectrum).to_pylist()
    lam = {r["L"]: r["lambda_min"] for r in spectrum_rows}
    gen = [
        {
            "experiment_id": c.experiment_id,
            "L": c.L,
            "sigma": c.sigma,
            "mean": c.mean,
            "sem": c.sem,
            "count": c.n,
        }
        for c in cells(runs, "gen_error")
    ]
    lines = [f"# rnngen study `{profile}`", "", "| L | λ_min(E xxᵀ) | residual |", "|---|---|---|"]
    lines += [
        f"| {r['L']} | {r['lambda_min'] if r['lambda_min'] is not None else 'uncertified'}"
        f" | {r['lambda_min_residual']:.1e} |"
        for r in spectrum_rows
    ]
    lines += ["", "| L | σ | gen. error (mean ± s.e.) | seeds |", "|---|---|---|---|"]
    lines += [
        f"| {g['L']} | {g['sigma']:g} | {g['mean']:+.4f} ± {g['sem']:.4f} | {g['count']} |"
        for g in gen
    ]  # one experiment per study folder; others are in REPORT.md
    lines += [
        "",
        "Figures: " + ", ".join(f"`{p.name}`" for p in sorted(layout.figures.glob("*.png"))),
        "",
        f"Report: `{layout.out / 'REPORT.md'}`",
    ]
    create_markdown_artifact(key=f"study-summary-{profile}", markdown="\n".join(lines))
    return {"lambda_min": lam, "gen_error": gen}
