"""Prefect artifacts of a study: the grid as a table and the headline numbers."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from rnngen.analysis import cells
from rnngen.io import read_parquet
from rnngen.layout import Layout


def publish_artifacts(out: str, profile: str) -> dict[str, Any]:
    """A table artifact of the grid and a markdown artifact of the headline numbers."""
    layout = Layout.at(out)
    runs = read_parquet(layout.runs)
    grid = [{k: r[k] for k in ("L", "sigma", "seed", "status", "test_accuracy", "gen_error")}
            for r in runs.to_pylist()]
    create_table_artifact(key=f"study-grid-{profile}", table=grid,
                          description=f"Training grid of the `{profile}` study ({out})")
    spectrum_rows = read_parquet(layout.spectrum).to_pylist()
    lam = {r["L"]: r["lambda_min"] for r in spectrum_rows}
    gen = [{"experiment_id": c.experiment_id, "L": c.L, "sigma": c.sigma, "mean": c.mean,
            "sem": c.sem, "count": c.n} for c in cells(runs, "gen_error")]
    lines = [f"# rnngen study `{profile}`", "", "| L | λ_min(E xxᵀ) | residual |", "|---|---|---|"]
    lines += [f"| {r['L']} | {r['lambda_min'] if r['lambda_min'] is not None else 'uncertified'}"
              f" | {r['lambda_min_residual']:.1e} |" for r in spectrum_rows]
    lines += ["", "| L | σ | gen. error (mean ± s.e.) | seeds |", "|---|---|---|---|"]
    lines += [f"| {g['L']} | {g['sigma']:g} | {g['mean']:+.4f} ± {g['sem']:.4f} | {g['count']} |"
              for g in gen]  # one experiment per study folder; others are in REPORT.md
    lines += ["", "Figures: " + ", ".join(f"`{p.name}`" for p in sorted(
        layout.figures.glob("*.png")))]
    create_markdown_artifact(key=f"study-summary-{profile}", markdown="\n".join(lines))
    return {"lambda_min": lam, "gen_error": gen}
