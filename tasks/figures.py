"""Prefect task of the figures stage: every figure and the Kendall-τ table, drawn only
from the Parquet results, and skipped when neither they nor the drawing code changed."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from rnngen import analysis, schemas
from rnngen import figures as F
from rnngen.hashing import content_key, sha256_file
from rnngen.io import atomic_path, read_parquet, write_parquet
from rnngen.layout import Layout
from rnngen_tasks import run_logger


def _inputs_key(layout: Layout) -> str:
    """What the figures are drawn from: the result files (history.parquet when there) and
    the code that computes and draws them."""
    files = [
        p
        for p in (layout.runs, layout.spectrum, layout.bounds, layout.history, layout.ranking,
                  layout.certificates, _reference_bounds(layout))
        if p is not None and p.is_file()
    ]  # fmt: skip
    files += [Path(F.__file__), Path(analysis.__file__)]
    return content_key({p.name: sha256_file(p) for p in files})


def _relative(path: Path, layout: Layout) -> str:
    """`path` relative to the output folder, so a copy of the folder elsewhere still
    recognises its stamp."""
    return Path(path).relative_to(layout.out).as_posix()


@task(name="draw-figures", cache_policy=NO_CACHE)
def draw_figures(out: str) -> tuple[list[str], bool]:
    """Draw every figure and the Kendall-τ table -> (paths, whether anything was drawn).
    The drawing is skipped when neither the results nor the drawing code changed since the
    last time and every output is there."""
    layout = Layout.at(out)
    if not layout.certificates.is_file():
        layout.require("train", "spectrum", "bounds")
    stamp, key = layout.figures / ".drawn.json", _inputs_key(layout)
    if stamp.is_file():
        drawn = json.loads(stamp.read_text())
        paths = [layout.out / p for p in drawn.get("paths", [])]
        if drawn.get("key") == key and paths and all(p.is_file() for p in paths):
            return [str(p) for p in paths], False
    paths = _study_figures(layout) if layout.runs.is_file() else []
    if layout.ranking.is_file():
        ranking = read_parquet(layout.ranking, required=schemas.RANKING)
        paths += F.fig_measure_ranking(ranking, layout.figures / "measure_ranking")
    if layout.certificates.is_file():
        certificates = read_parquet(layout.certificates, required=schemas.CERTIFICATES)
        paths += F.fig_certificates(
            certificates, layout.figures / "certificates", _theorem3_by_sigma(layout)
        )
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps({"key": key, "paths": [_relative(p, layout) for p in paths]}))
    return [str(p) for p in paths], True


def _reference_bounds(layout: Layout) -> Path | None:
    """The bounds of the paper profile beside a certificates folder (data/paper beside
    data/certificates), whose Theorem 3 the certificates figure shows for comparison."""
    if not layout.certificates.is_file():
        return None
    return Layout.at(layout.out.parent / "paper").bounds


def _theorem3_by_sigma(layout: Layout) -> dict[float, float] | None:
    """σ -> the mean over seeds of Theorem 3 at its best α, at the certified cells' L, from
    the reference bounds (None without them)."""
    path = _reference_bounds(layout)
    if path is None or not path.is_file():
        return None
    certified = {r["L"] for r in read_parquet(layout.certificates).to_pylist()}
    values: dict[float, list[float]] = {}
    for row in read_parquet(path, required=schemas.BOUNDS).to_pylist():
        if row.get("alpha_best") and row["status"] == "ok" and row["L"] in certified:
            values.setdefault(row["sigma"], []).append(row["bound_thm3"])
    return {s: sum(v) / len(v) for s, v in values.items()} or None


def _study_figures(layout: Layout) -> list[Path]:
    """The study's figures (Figures 1 and 2, clean gap, spectrum, bounds, history) and the
    Kendall-τ table."""
    runs = read_parquet(layout.runs, required=schemas.RUNS)
    spectrum = read_parquet(layout.spectrum, required=schemas.SPECTRUM)
    bounds = read_parquet(layout.bounds, required=schemas.BOUNDS)
    lam = F.certified_lambda_min(spectrum)
    fig = layout.figures
    lengths = {int(L) for L in analysis.column(runs, "L")}
    paths = []
    # The paper's Figure 1 (L = 100) and Figure 2 (L = 200 and 300), where the grid has them.
    if 100 in lengths:
        paths += F.fig_gen_error(runs, [100], fig / "fig1_gen_error_L100", lambda_min=lam)
    if lengths & {200, 300}:
        paths += F.fig_gen_error(runs, [200, 300], fig / "fig2_gen_error_L200_L300", lambda_min=lam)
    elif 100 in lengths:  # said here and in REPORT.md's figures section, not left silent
        run_logger().info(
            "Figure 2 (L = 200 and 300) skipped: this grid has L = "
            + ", ".join(map(str, sorted(lengths)))
            + " only."
        )
    if not lengths & {100, 200, 300}:  # a grid of other lengths: all of them in one figure
        paths += F.fig_gen_error(runs, sorted(lengths), fig / "gen_error", lambda_min=lam)
    paths += [
        *F.fig_clean_gap(runs, fig / "clean_gap", lambda_min=lam),
        *F.fig_spectrum(spectrum, fig / "spectrum"),
        *F.fig_bound_terms(bounds, fig / "bound_terms", runs=runs),
        *F.fig_bound_vs_gap(bounds, runs, fig / "bound_vs_gap"),
    ]
    if layout.history.is_file():
        history = read_parquet(layout.history, required=schemas.HISTORY)
        paths += F.fig_history(history, runs, fig / "history")
    tau = schemas.to_table(analysis.kendall_rows(bounds, runs), schemas.KENDALL)
    paths.append(
        write_parquet(
            tau,
            layout.kendall_tau,
            {"stage": "figures", "method": analysis.KENDALL_METHOD},
        )
    )
    return paths
