"""Figures of the study (pure drawing layer: numpy, pyarrow, matplotlib).

Every number drawn here comes from :mod:`rnngen.analysis` (seed means and standard
errors, geometric means of the bound terms, the best-α rows, Kendall's τ): this module
only lays them out. Runs of different experiments (``experiment_id``: another hidden
size, epoch count, optimizer, ...) are drawn as separate series, the experiment with the
most finished runs first, and are never averaged together.

Every figure is drawn with the object API (``matplotlib.figure.Figure`` on an Agg canvas),
so no pyplot state leaks between figures. ``draw_*`` functions return the Figure (the
tests read the drawn series back with :func:`series`); ``fig_*`` functions draw and save
it as ``<stem>.png`` (``DPI`` dots per inch, no timestamp or version in the file, so the
same inputs give the same bytes) and ``<stem>.pdf`` (TrueType fonts, not Type 3), each
written to a temporary file and renamed.

Inputs are the Parquet tables of ``rnngen/schemas.py`` as pyarrow Tables. Extra columns
are ignored; missing ones raise :class:`~rnngen.errors.DataError`. Log axes cannot show
zero, negative, null or infinite values: such points are left out and each panel says
how many, and why.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from matplotlib import colormaps, rc_context
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from rnngen import analysis as A
from rnngen.errors import DataError
from rnngen.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

DPI = 300  # print quality; the PNGs are drawn once per change of the results
PANEL_INCHES = (5.0, 4.0)  # width, height of one panel
TITLE_INCHES = 0.95  # height added for the figure title
MIN_WIDTH_INCHES = 6.5  # a one-panel figure still has room for a three-line title
LEGEND_INCHES = 2.8  # width added when the legend sits right of the panels
LEGEND_ROW_INCHES = 0.2  # height added per legend entry when the legend sits below
SEED_SPREAD = 0.015  # single seeds spread over ± this fraction of the σ range

# Files: no software version or date inside, so the PNG bytes depend on the inputs only;
# PDF text as TrueType (Type 42) fonts, which journals and text search accept.
PNG_METADATA: dict[str, str | None] = {"Software": None}
PDF_METADATA: dict[str, str | None] = {"Creator": None, "Producer": None, "CreationDate": None}
FONT_RC: dict[RcKeyType, Any] = {"pdf.fonttype": 42, "ps.fonttype": 42}

SPECTRUM_COLUMNS = ("L", "lambda_min", "lambda_min_residual", "status", "smallest")
RUNS_COLUMNS = ("run_id", "experiment_id", "L", "sigma", "seed", "status", "spec_json")
HISTORY_COLUMNS = ("run_id", "epoch", "train_accuracy_clean", "test_accuracy")

SIGMA_XLABEL = "training input noise σ (std. dev. per coordinate)"
EIG_YLABEL = r"eigenvalue of $\Sigma = E[x x^\top]$ (GloVe units²)"
GEN_ERROR_YLABEL = "generalization error (fraction)\n= clean test error − noisy train error"
CLEAN_GAP_YLABEL = "clean gap (fraction)\n= clean test error − clean train error"
GEN_ERROR_CAVEAT = (
    "Caveat: the paper's generalization error subtracts the noisy training error,\n"
    "which rises with σ by itself (figures/clean_gap: clean test − clean train error)."
)
LAMBDA = "λ_min(E xxᵀ)"

EXPERIMENT_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
)
L_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
SIGMA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

# The additive terms of Theorem 3 (top row of bound_terms): solid lines, filled markers.
# quantity -> (label, colour, marker)
TERM_STYLES: dict[str, tuple[str, str, str]] = {
    "margin_loss": ("margin loss (ramp, noisy train)", "tab:gray", "v"),
    "rademacher_fs_term": ("Rademacher term, r‖X‖_F part", "tab:blue", "o"),
    "rademacher_norm1_term": ("Rademacher term, Λ‖Xᵀ‖₁ part", "tab:cyan", "s"),
    "noise_term": ("noise term (σ√(2 log 2d) part)", "tab:green", "^"),
    "confidence_term": ("confidence term (δ)", "tab:olive", "D"),
}
# The totals (bottom row): dashed/dotted lines, hollow markers.
# quantity -> (label, colour, marker, line style)
TOTAL_STYLES: dict[str, tuple[str, str, str, str]] = {
    "bound_thm3": ("Theorem 3 bound (sum of the terms)", "tab:red", "o", "--"),
    "bound_thm2": ("Theorem 2 bound (clean training)", "tab:purple", "s", "--"),
    "bound_thm2_remark6": ("Theorem 2 bound, Remark 6 r", "tab:brown", "D", "-."),
    "zhang_order": ("Zhang et al. 2018 (order only)", "black", "X", ":"),
}
BOUND_TITLES = {
    "bound_thm3": "Theorem 3 bound (noisy training)",
    "bound_thm2": "Theorem 2 bound (clean training)",
    "bound_thm2_remark6": "Theorem 2 bound, Remark 6 r (only β_W < 1)",
    "zhang_order": "Zhang et al. 2018 (order only, no constants)",
}
SCATTER_QUANTITIES = ("bound_thm3", "bound_thm2", "bound_thm2_remark6", "zhang_order")


# --------------------------------------------------------------------------- small helpers


def _fmt_range(values: Iterable[float]) -> str:
    """'5' for one distinct value, '2–3' for a range, '?' for none."""
    vals = sorted({int(v) for v in values if math.isfinite(v)})
    if not vals:
        return "?"
    return str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


def _count(n: int, noun: str) -> str:
    """'1 model', '3 models'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _log_ok(values: np.ndarray) -> np.ndarray:
    """Mask of values a log axis can show: finite and > 0."""
    return np.isfinite(values) & (values > 0)


def _levels(values: Iterable[float]) -> list[float]:
    """Sorted distinct finite values, σ-rounded (:func:`rnngen.analysis.sigma_key`)."""
    return sorted({A.sigma_key(v) for v in values if math.isfinite(v)})


def _colour(i: int) -> str:
    return EXPERIMENT_COLOURS[i % len(EXPERIMENT_COLOURS)]


def certified_lambda_min(spectrum: pa.Table) -> dict[int, float]:
    """L -> λ_min of the spectrum rows with status 'certified' and a positive λ_min."""
    A.require(spectrum, ("L", "lambda_min", "status"), "spectrum table")
    out = {}
    for L, lam, status in zip(
        A.column(spectrum, "L"),
        A.column(spectrum, "lambda_min"),
        A.strings(spectrum, "status"),
        strict=True,
    ):
        if status == "certified" and math.isfinite(lam) and lam > 0:
            out[int(L)] = float(lam)
    return out


def length_title(length: int, lambda_min: dict[int, float] | None) -> str:
    """'L = 200' or, given the certified λ_min per L, 'L = 200, λ_min(E xxᵀ) = 1.73e-04'."""
    if lambda_min is None:
        return f"L = {length}"
    lam = lambda_min.get(int(length))
    if lam is None or not math.isfinite(lam):
        return f"L = {length}, {LAMBDA} not certified"
    return f"L = {length}, {LAMBDA} = {lam:.2e}"


# --------------------------------------------------------------------------- figure plumbing

ShareAxes = Literal["none", "all", "row", "col"]  # what subplots' sharex / sharey take


def figure_size(
    nrows: int, ncols: int, legend_right: bool = False, legend_rows: int = 0
) -> tuple[float, float]:
    """Figure size in inches for a grid of panels (plus a legend right of them, or one of
    `legend_rows` entries below them); the PNG is this times ``DPI`` pixels."""
    width = max(MIN_WIDTH_INCHES, PANEL_INCHES[0] * ncols)
    width += LEGEND_INCHES if legend_right else 0.0
    height = PANEL_INCHES[1] * nrows + TITLE_INCHES + LEGEND_ROW_INCHES * legend_rows
    return width, height


def _new_figure(
    nrows: int,
    ncols: int,
    *,
    legend_right: bool = False,
    legend_rows: int = 0,
    sharex: bool | ShareAxes = False,
    sharey: bool | ShareAxes = False,
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on its own Agg canvas and its 2-D array of axes."""
    fig = Figure(
        figsize=figure_size(nrows, ncols, legend_right, legend_rows), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, axes


def save(fig: Figure, path_stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically (temporary file, then rename).

    The PNG carries no software version or date (same inputs, same bytes); the PDF embeds
    TrueType (Type 42) fonts. rcParams are changed only inside this call.
    """
    stem = Path(path_stem)
    written = []
    with rc_context(FONT_RC):
        for fmt, meta in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
            target = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
            written.append(target)
    return written


def series(ax: Axes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The data series drawn on `ax`, by id (the lines' gid, e.g. 'mean:<experiment_id>',
    'seeds:<experiment_id>', 'term:noise_term'): {gid: (x, y)}."""
    out = {}
    for line in ax.get_lines():
        gid = line.get_gid()
        if gid:
            x, y = line.get_data()
            out[gid] = (np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return out


def _note(ax: Axes, text: str) -> None:
    """Small grey note under the x-axis label of ``ax`` (what was left out, and why).

    Below the axes it never hides data; constrained layout makes room for it.
    """
    if not text:
        return
    ax.annotate(
        text,
        xy=(0.5, 0.0),
        xycoords="axes fraction",
        xytext=(0, -34),
        textcoords="offset points",
        ha="center",
        va="top",
        fontsize=7,
        color="0.3",
    )


def _panel_text(ax: Axes, text: str, colour: str = "tab:red") -> None:
    """A sentence in the middle of a panel that has nothing (or nothing valid) to draw."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=9,
        color=colour,
        wrap=True,
    )


# ---------------------------------------------------------------- Figures 1, 2, clean gap


def _seed_offsets(seeds: Iterable[int], span: float) -> dict[int, float]:
    """A fixed horizontal offset per seed: the seeds, in order, spread evenly over
    ± SEED_SPREAD × span (span: the panel's σ range, 1 when it has a single σ)."""
    ordered = sorted(set(seeds))
    if len(ordered) < 2:
        return {s: 0.0 for s in ordered}
    width = SEED_SPREAD * (span if span > 0 else 1.0)
    return {s: width * (2.0 * i / (len(ordered) - 1) - 1.0) for i, s in enumerate(ordered)}


def _cells_panel(
    ax: Axes, cells: list[A.Cell], order: list[str], handles: dict[str, object]
) -> None:
    """Per experiment: its single seeds (light, offset sideways by seed) and the mean ±
    s.e. over seeds on top. `handles` collects one legend handle per experiment."""
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
    sigmas = [c.sigma for c in cells]
    offsets = _seed_offsets(
        (s for c in cells for s in c.values), max(sigmas) - min(sigmas) if sigmas else 0.0
    )
    for i, eid in enumerate(order):
        mine = sorted((c for c in cells if c.experiment_id == eid), key=lambda c: c.sigma)
        if not mine:
            continue
        colour = _colour(i)
        xs = [c.sigma + offsets[s] for c in mine for s in sorted(c.values)]
        ys = [c.values[s] for c in mine for s in sorted(c.values)]
        ax.plot(
            xs,
            ys,
            ls="",
            marker="o",
            ms=3.5,
            color=colour,
            alpha=0.35,
            mew=0,
            gid=f"seeds:{eid}",
            zorder=2,
        )
        x, y = [c.sigma for c in mine], [c.mean for c in mine]
        sem = [0.0 if math.isnan(c.sem) else c.sem for c in mine]  # one seed: no bar
        bars = ax.errorbar(
            x, y, yerr=sem, fmt="o-", color=colour, capsize=3, lw=1.5, ms=5, zorder=3
        )
        bars.lines[0].set_gid(f"mean:{eid}")
        handles.setdefault(eid, bars)
        if len({c.n for c in mine}) > 1:  # unequal seed counts: say so at each point
            for c in mine:
                ax.annotate(
                    f"n={c.n}",
                    (c.sigma, c.mean),
                    textcoords="offset points",
                    xytext=(5, 5),
                    fontsize=7,
                    color=colour,
                )
    if not cells:
        _panel_text(ax, "no finished runs at this L")
    ax.margins(x=0.08)
    ax.set_xlabel(SIGMA_XLABEL)


def _excluded(runs: pa.Table, lengths: Sequence[int]) -> str:
    """' (excluded: 2 diverged, 1 failed)' for the runs at `lengths` not 'done'."""
    L, status = A.column(runs, "L"), A.strings(runs, "status")
    wanted = {int(x) for x in lengths}
    counts = Counter(
        s
        for s, x in zip(status, L, strict=True)
        if math.isfinite(x) and int(x) in wanted and s != "done"
    )
    return (
        f" (excluded: {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})" if counts else ""
    )


def _draw_cells(
    runs: pa.Table,
    quantity: str,
    lengths: Sequence[int],
    ylabel: str,
    heading: str,
    lambda_min: dict[int, float] | None,
    source: str,
    caveat: str,
) -> Figure:
    """One panel per L of `quantity` vs σ: one series per experiment (mean ± s.e. over
    seeds, single seeds light behind), a shared legend of the experiments below."""
    A.require(runs, (*RUNS_COLUMNS, quantity), "runs table")
    cells = A.cells(runs, quantity)
    order = A.experiments(runs)
    shown = [e for e in order if any(c.experiment_id == e and c.L in lengths for c in cells)]
    fig, axes = _new_figure(
        1, len(lengths), legend_rows=max(1, len(shown)) + 1, sharex=True, sharey=True
    )
    handles: dict[str, object] = {}
    for ax, length in zip(axes.flat, lengths, strict=True):
        _cells_panel(ax, [c for c in cells if c.L == int(length)], order, handles)
        ax.set_title(length_title(int(length), lambda_min), fontsize=10)
    axes[0, 0].set_ylabel(ylabel)
    mine = [c for c in cells if c.L in lengths]
    labels = [
        f"{A.experiment_label(runs, e)} (n = "
        f"{_fmt_range(c.n for c in mine if c.experiment_id == e)} seeds per point)"
        for e in shown
    ]
    seeds = Line2D([], [], ls="", marker="o", ms=3.5, color="0.4", alpha=0.5, mew=0)
    # ignore: Figure.legend's stub takes Iterable[Artist], but Legend takes Artist | tuple
    # of Artists, and these handles are ErrorbarContainers (tuples).
    fig.legend(
        [handles[e] for e in shown] + [seeds],  # type: ignore[call-overload]
        [f"mean ± s.e.: {lab}" for lab in labels]
        + ["single seeds (shifted sideways by seed so none hides another)"],
        loc="outside lower center",
        fontsize=7,
        frameon=False,
    )
    fig.suptitle(
        f"{heading} vs training input noise σ (IMDB, ReLU RNN)\n"
        f"mean ± s.e. over seeds, one series per experiment; data: {source}, status done"
        f"{_excluded(runs, lengths)}" + (f"\n{caveat}" if caveat else ""),
        fontsize=9,
    )
    return fig


def draw_gen_error(
    runs: pa.Table,
    lengths: Sequence[int],
    *,
    lambda_min: dict[int, float] | None = None,
    source: str = "results/runs.parquet",
) -> Figure:
    """The paper's generalization error (clean test − noisy train error) vs σ, one panel
    per L in `lengths`, one series per experiment; panel titles carry λ_min per L when
    `lambda_min` (L -> certified λ_min) is given."""
    if not lengths:
        raise DataError("fig_gen_error needs at least one sequence length L in `lengths`.")
    return _draw_cells(
        runs,
        "gen_error",
        [int(x) for x in lengths],
        GEN_ERROR_YLABEL,
        "Generalization error",
        lambda_min,
        source,
        GEN_ERROR_CAVEAT,
    )


def fig_gen_error(
    runs: pa.Table,
    lengths: Sequence[int],
    path_stem: str | os.PathLike[str],
    *,
    lambda_min: dict[int, float] | None = None,
    source: str = "results/runs.parquet",
) -> list[Path]:
    """Figure 1 (``lengths=[100]``) or Figure 2 (``[200, 300]``): see
    :func:`draw_gen_error`. A length without finished runs gets a panel saying so.
    Writes ``<path_stem>.png`` and ``.pdf``; returns the written paths."""
    return save(draw_gen_error(runs, lengths, lambda_min=lambda_min, source=source), path_stem)


def draw_clean_gap(
    runs: pa.Table,
    *,
    lambda_min: dict[int, float] | None = None,
    source: str = "results/runs.parquet",
) -> Figure:
    """Clean gap (clean test − clean training error) vs σ, one panel per L present,
    drawn like Figures 1 and 2 so the two can be set side by side."""
    A.require(runs, (*RUNS_COLUMNS, "clean_gap"), "runs table")
    lengths = (
        sorted({c.L for c in A.cells(runs, "clean_gap")})
        or sorted({int(x) for x in A.column(runs, "L") if math.isfinite(x)})
        or [0]
    )
    return _draw_cells(
        runs,
        "clean_gap",
        lengths,
        CLEAN_GAP_YLABEL,
        "Clean gap (clean test error − clean training error)",
        lambda_min,
        source,
        "Both errors on clean inputs: σ acts only through the trained "
        "weights\n(set beside Figures 1 and 2).",
    )


def fig_clean_gap(
    runs: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    lambda_min: dict[int, float] | None = None,
    source: str = "results/runs.parquet",
) -> list[Path]:
    """:func:`draw_clean_gap` saved as ``<path_stem>.png`` and ``.pdf``."""
    return save(draw_clean_gap(runs, lambda_min=lambda_min, source=source), path_stem)


# --------------------------------------------------------------------------- training history


def _history_means(
    history: pa.Table, runs: pa.Table, quantity: str
) -> dict[tuple[str, int, float], tuple[list[int], list[float]]]:
    """(experiment, L, σ) -> (epochs, mean over the seeds of finished runs at each epoch),
    the means taken by :func:`rnngen.analysis.cells` one epoch at a time."""
    info = {
        r: (e, s)
        for r, e, s in zip(
            A.strings(runs, "run_id"),
            A.strings(runs, "experiment_id"),
            A.strings(runs, "status"),
            strict=True,
        )
    }
    rows = [
        r
        for r in history.select(["run_id", "L", "sigma", "seed", "epoch", quantity]).to_pylist()
        if r["run_id"] in info
    ]
    out: dict[tuple[str, int, float], tuple[list[int], list[float]]] = {}
    for epoch in sorted({r["epoch"] for r in rows}):
        at = [r for r in rows if r["epoch"] == epoch]
        table = pa.table(
            {
                "experiment_id": [info[r["run_id"]][0] for r in at],
                "status": [info[r["run_id"]][1] for r in at],
                "L": pa.array([r["L"] for r in at], pa.int64()),
                "sigma": pa.array([r["sigma"] for r in at], pa.float64()),
                "seed": pa.array([r["seed"] for r in at], pa.int64()),
                quantity: pa.array([r[quantity] for r in at], pa.float64()),
            }
        )
        for cell in A.cells(table, quantity):
            epochs, means = out.setdefault((cell.experiment_id, cell.L, cell.sigma), ([], []))
            epochs.append(int(epoch))
            means.append(cell.mean)
    return out


def draw_history(
    history: pa.Table, runs: pa.Table, *, source: str = "results/history.parquet"
) -> Figure:
    """Clean training accuracy (solid) and test accuracy (dashed) vs epoch, mean over the
    seeds of finished runs, one colour per σ; one panel per L, one row per experiment."""
    A.require(history, (*HISTORY_COLUMNS, "L", "sigma", "seed"), "history table")
    A.require(runs, RUNS_COLUMNS, "runs table")
    train = _history_means(history, runs, "train_accuracy_clean")
    test = _history_means(history, runs, "test_accuracy")
    keys = set(train) | set(test)
    order = [e for e in A.experiments(runs) if any(k[0] == e for k in keys)]
    lengths = sorted({k[1] for k in keys})
    sigmas = sorted({k[2] for k in keys})
    cmap = colormaps["viridis"]
    colours = {s: cmap(0.9 * i / max(1, len(sigmas) - 1)) for i, s in enumerate(sigmas)}
    fig, axes = _new_figure(
        max(1, len(order)), max(1, len(lengths)), legend_right=True, sharex=True, sharey=True
    )
    if not keys:
        _panel_text(axes[0, 0], "no epoch history of finished runs")
    for row, eid in enumerate(order):
        for col, length in enumerate(lengths):
            ax = axes[row, col]
            ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
            for s in sigmas:
                for curves, ls, kind in ((train, "-", "train"), (test, "--", "test")):
                    if (eid, length, s) in curves:
                        x, y = curves[(eid, length, s)]
                        ax.plot(
                            x,
                            y,
                            ls=ls,
                            marker="o" if len(x) == 1 else None,
                            ms=3,
                            color=colours[s],
                            lw=1.3,
                            gid=f"{kind}:{eid}:{length}:{s:g}",
                        )
            if not any(k[0] == eid and k[1] == length for k in keys):
                _panel_text(ax, "no history at this L")
            title = f"L = {length}"
            if len(order) > 1:
                title += f"\n{A.experiment_label(runs, eid)}"
            ax.set_title(title, fontsize=10 if len(order) == 1 else 8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[row, 0].set_ylabel("accuracy (fraction)")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles = [Line2D([], [], color=colours[s], lw=2, label=f"σ = {s:g}") for s in sigmas]
    handles += [
        Line2D([], [], color="black", ls="-", label="clean training accuracy"),
        Line2D([], [], color="black", ls="--", label="test accuracy"),
        Line2D([], [], color="0.6", ls=":", label="chance (0.5)"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    done = A.done(runs)
    lost = runs.num_rows - done.num_rows
    rows: np.ndarray | list[float] = (
        A.column(history, "eval_rows") if "eval_rows" in history.column_names else []
    )
    label = A.experiment_label(runs, order[0]) if len(order) == 1 else "one row per experiment"
    fig.suptitle(
        "Training history: do the models fit their training data?\n"
        f"{label}; mean over seeds of finished runs"
        + (f" ({_count(lost, 'run')} not done left out)" if lost else "")
        + f"; accuracies on fixed subsets of {_fmt_range(rows)} reviews per split\n"
        f"data: {source} joined on run_id to results/runs.parquet",
        fontsize=9,
    )
    return fig


def fig_history(
    history: pa.Table,
    runs: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/history.parquet",
) -> list[Path]:
    """:func:`draw_history` saved as ``<path_stem>.png`` and ``.pdf``."""
    return save(draw_history(history, runs, source=source), path_stem)


# --------------------------------------------------------------------------- spectrum


def _estimates(lam: np.ndarray, smallest: list[list[float | None] | None]) -> np.ndarray:
    """λ_min where given, else the smallest reported eigenvalue estimate, else NaN."""
    first = [v[0] if v and v[0] is not None else math.nan for v in smallest]
    return np.where(np.isfinite(lam), lam, np.asarray(first, dtype=float))


def _lambda_min_panel(ax: Axes, spectrum: pa.Table) -> None:
    """λ_min vs L: certified values with residual error bars, uncertified ones hollow."""
    L, lam = A.column(spectrum, "L"), A.column(spectrum, "lambda_min")
    res = np.nan_to_num(np.abs(A.column(spectrum, "lambda_min_residual")), nan=0.0)
    cert = np.array([s == "certified" for s in A.strings(spectrum, "status")]) & _log_ok(lam)
    if cert.any():
        lower = np.minimum(res, 0.999 * lam)  # a log axis cannot reach zero: clip the bar
        ax.errorbar(
            L[cert],
            lam[cert],
            yerr=[lower[cert], res[cert]],
            fmt="o-",
            color="tab:blue",
            capsize=4,
            label="certified (bar = residual ‖Σv − λv‖)",
        )
    # uncertified rows are drawn hollow and labelled so: never as a good number
    est = _estimates(lam, spectrum.column("smallest").to_pylist())
    unc = ~cert & _log_ok(est)
    if unc.any():
        ax.plot(
            L[unc],
            est[unc],
            "o",
            mfc="none",
            mec="tab:red",
            ms=9,
            mew=1.5,
            label="uncertified estimate (not a bound)",
        )
    lost = ", ".join(str(int(x)) for x in L[~cert & ~unc])
    _note(ax, f"not drawn (no positive λ_min or estimate): L = {lost}" if lost else "")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L (input dimension D = L·d)")
    ax.set_ylabel(r"$\lambda_{\min}(\Sigma)$ (GloVe units²)")
    ax.set_title(r"smallest eigenvalue $\lambda_{\min}$ vs L", fontsize=10)
    if cert.any() or unc.any():
        ax.legend(fontsize=8, loc="best")
    else:
        _panel_text(ax, "no positive λ_min to draw")


def _low_spectrum_panel(ax: Axes, spectrum: pa.Table) -> None:
    """The ~20 smallest eigenvalues of each L, one line per L (dashed: uncertified)."""
    L, status = A.column(spectrum, "L"), A.strings(spectrum, "status")
    dropped = 0
    for i, vals in enumerate(spectrum.column("smallest").to_pylist()):
        v = np.asarray([math.nan if x is None else x for x in vals or []], dtype=float)
        ok, idx = _log_ok(v), np.arange(1, v.size + 1)
        dropped += int((~ok).sum())
        cert = status[i] == "certified"
        colour = L_COLOURS[i % len(L_COLOURS)]
        ax.plot(
            idx[ok],
            v[ok],
            "o-" if cert else "o--",
            color=colour,
            ms=4,
            mfc=colour if cert else "none",
            label=f"L = {int(L[i])}" + ("" if cert else " (uncertified)"),
        )
    _note(ax, f"{dropped} non-positive/non-finite values not drawn" if dropped else "")
    ax.set_yscale("log")
    ax.set_xlabel("index k (k-th smallest eigenvalue)")
    ax.set_ylabel(EIG_YLABEL)
    ax.set_title("low end of the spectrum", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")


def draw_spectrum(spectrum: pa.Table, *, source: str = "results/spectrum.parquet") -> Figure:
    """Two panels: λ_min(Σ) vs L (log y, residual error bars) and the low spectrum per L.
    Rows whose status is not 'certified' are drawn hollow / dashed and labelled so."""
    A.require(spectrum, SPECTRUM_COLUMNS, "spectrum table")
    fig, axes = _new_figure(1, 2)
    if spectrum.num_rows == 0:
        for ax in axes.flat:
            _panel_text(ax, "no spectrum rows")
    else:
        _lambda_min_panel(axes[0, 0], spectrum)
        _low_spectrum_panel(axes[0, 1], spectrum)
    n = _fmt_range(A.column(spectrum, "n")) if "n" in spectrum.column_names else "?"
    fig.suptitle(
        r"Spectrum of the input second moment $\Sigma = E[x x^\top]$ (uncentred, float64)"
        f"\nn = {n} training sequences; data: {source}",
        fontsize=9,
    )
    return fig


def fig_spectrum(
    spectrum: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/spectrum.parquet",
) -> list[Path]:
    """:func:`draw_spectrum` saved as ``<path_stem>.png`` and ``.pdf``."""
    return save(draw_spectrum(spectrum, source=source), path_stem)


# --------------------------------------------------------------------------- bound terms


def _term_experiments(cells: list[A.TermCell], runs: pa.Table | None) -> list[str]:
    """The experiments of the term cells, largest first (the runs' order when given)."""
    present = {c.experiment_id for c in cells}
    if runs is not None:
        ranked = [e for e in A.experiments(runs) if e in present]
        return ranked + sorted(present - set(ranked))
    models: Counter[str] = Counter()
    for c in cells:
        models[c.experiment_id] += c.n
    return sorted(present, key=lambda e: (-models[e], e))


def _why(value: float) -> str:
    """Why a value is not on a log axis."""
    return "inf" if np.isinf(value) else "null" if np.isnan(value) else "≤0"


def _draw_terms(ax: Axes, mine: list[A.TermCell], names: Iterable[str], total: bool) -> list[str]:
    """Lines of log10 of the geometric means of `names` vs σ; returns notes on points not
    drawn. (log10 values on a linear axis, not a log axis: the terms reach 1e300, where a
    log axis's own margins and ticks overflow float64.)"""
    x = np.array([c.sigma for c in mine])
    notes = []
    for q in names:
        y = np.array([c.means.get(q, math.nan) for c in mine])
        ok = _log_ok(y)
        if total:
            label, colour, marker, ls = TOTAL_STYLES[q]
            if q == "bound_thm2_remark6" and not ok.any():
                notes.append("Remark 6 bound: no σ with every model at β_W < 1")
                continue
            ax.plot(
                x[ok],
                np.log10(y[ok]),
                ls=ls,
                marker=marker,
                color=colour,
                mfc="none",
                mew=1.5,
                ms=7,
                lw=1.6,
                label=label,
                gid=f"total:{q}",
            )
        else:
            label, colour, marker = TERM_STYLES[q]
            ax.plot(
                x[ok],
                np.log10(y[ok]),
                ls="-",
                marker=marker,
                color=colour,
                ms=5,
                lw=1.4,
                label=label,
                gid=f"term:{q}",
            )
        if q == "noise_term":  # σ = 0: the term is exactly 0, not a missing value
            zero = (x == 0) & (y == 0)
            if zero.any():
                notes.append("noise term = 0 exactly at σ = 0 (no noise): its log10 is −∞")
            ok |= zero
        if (~ok).any():
            why = ", ".join(f"σ={s:g} ({_why(v)})" for s, v in zip(x[~ok], y[~ok], strict=True))
            notes.append(f"{q} not drawn at {why}")
    return notes


def draw_bound_terms(
    bounds: pa.Table, *, runs: pa.Table | None = None, source: str = "results/bounds.parquet"
) -> Figure:
    """Bound terms vs σ (log y), geometric mean over seeds of each model's best-α row
    (:func:`rnngen.analysis.term_cells`). Per experiment two rows of panels, one column
    per L: on top the five additive terms of Theorem 3 (solid lines, filled markers),
    below the totals: Theorem 3, Theorem 2 (and Remark 6's where defined), Zhang et al.
    (dashed/dotted, hollow markers). `runs` only orders and labels the experiments."""
    cells = A.term_cells(bounds)
    order = _term_experiments(cells, runs)
    lengths = sorted({c.L for c in cells})
    fig, axes = _new_figure(
        2 * max(1, len(order)), max(1, len(lengths)), legend_right=True, sharey="row"
    )
    if not cells:
        _panel_text(axes[0, 0], "no best-α bounds rows with status ok")
    for k, eid in enumerate(order):
        label = A.experiment_label(runs, eid) if runs is not None else eid
        for col, length in enumerate(lengths):
            top, bottom = axes[2 * k, col], axes[2 * k + 1, col]
            mine = sorted(
                (c for c in cells if c.experiment_id == eid and c.L == length),
                key=lambda c: c.sigma,
            )
            n_models = sum(c.n for c in mine)
            head = f"{label}\n" if len(order) > 1 else ""
            head += f"L = {length} ({_count(n_models, 'model')})"
            top.set_title(f"{head}: additive terms of Theorem 3", fontsize=9)
            bottom.set_title(f"{head}: bound totals", fontsize=9)
            for ax in (top, bottom):
                ax.axhline(
                    0.0,
                    color="0.4",
                    lw=0.8,
                    ls="-.",
                    label="value 1 (trivial: errors are fractions)",
                )
                ax.set_ylabel("log₁₀ of the value (error fraction)")
                ax.set_xlabel(SIGMA_XLABEL)
            if not mine:
                _panel_text(top, "no models at this L")
                continue
            _note(top, "\n".join(_draw_terms(top, mine, TERM_STYLES, total=False)))
            notes = _draw_terms(bottom, mine, TOTAL_STYLES, total=True)
            pow_l = np.array([c.means["beta_W_pow_L"] for c in mine])
            if np.isfinite(pow_l).any() or np.isinf(pow_l).any():
                lo, hi = np.nanmin(pow_l), np.nanmax(pow_l)
                notes.append(f"β_W^L (geometric mean over seeds) = {lo:.2g} … {hi:.2g} over σ")
            _note(bottom, "\n".join(notes))
    seen: dict[str, Artist] = {}
    for ax in axes[:2, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=8)
    title = (
        A.experiment_label(runs, order[0]) + "; " if runs is not None and len(order) == 1 else ""
    )
    fig.suptitle(
        "Generalization-bound terms vs training noise σ (log₁₀; geometric mean over seeds "
        "of each model's best-α row)\n"
        f"{title}top: the additive terms of Theorem 3 (their sum is the bound); "
        f"bottom: the bounds; data: {source}",
        fontsize=9,
    )
    return fig


def fig_bound_terms(
    bounds: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    runs: pa.Table | None = None,
    source: str = "results/bounds.parquet",
) -> list[Path]:
    """:func:`draw_bound_terms` saved as ``<path_stem>.png`` and ``.pdf``."""
    return save(draw_bound_terms(bounds, runs=runs, source=source), path_stem)


# --------------------------------------------------------------------------- bounds vs gap


def _scatter_panel(
    ax: Axes,
    data: dict[str, np.ndarray],
    mask: np.ndarray,
    quantity: str,
    lengths: list[float],
    sigmas: list[float],
    heading: str,
) -> None:
    """One quantity vs measured gap over the models in `mask`: colour = L, marker = σ,
    Kendall's τ (as in results/kendall_tau.parquet, scope 'all') in the title."""
    y, gap = data[quantity][mask], data["gen_error"][mask]
    L, sigma = data["L"][mask], np.array([A.sigma_key(s) for s in data["sigma"][mask]])
    ok = _log_ok(y) & np.isfinite(gap)
    for i, length in enumerate(lengths):
        for j, s in enumerate(sigmas):
            m = ok & (L == length) & (sigma == s)
            if m.any():
                ax.scatter(
                    gap[m],
                    np.log10(y[m]),  # log10 on a linear axis: a log axis overflows near 1e300
                    color=L_COLOURS[i % len(L_COLOURS)],
                    alpha=0.8,
                    marker=SIGMA_MARKERS[j % len(SIGMA_MARKERS)],
                    s=28,
                )
    tau, p, n = A.kendall(y, gap)
    stat = (
        f"Kendall τ = {tau:.3f} (p = {p:.2g}, {_count(n, 'model')})"
        if math.isfinite(tau)
        else f"Kendall τ undefined ({_count(n, 'model')})"
    )
    ax.set_title(f"{BOUND_TITLES[quantity]}\n{stat}{heading}", fontsize=9)
    ax.set_xlabel("measured generalization error (clean test − noisy train)")
    ax.set_ylabel(f"log₁₀ {quantity}")
    beta = data["beta_W"][mask]
    models = int(mask.sum())
    if quantity == "bound_thm2_remark6" and models and not (beta < 1).any():
        median = float(np.nanmedian(beta)) if np.isfinite(beta).any() else math.nan
        _panel_text(
            ax,
            f"Remark 6 needs β_W < 1;\nall {models} models have β_W ≥ 1\n"
            f"(median β_W = {median:.3g})",
            colour="0.2",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lost = int((~ok).sum())
    if quantity == "bound_thm2_remark6" and lost:
        no_r = int((~(beta < 1)).sum())
        _note(
            ax,
            f"{_count(no_r, 'model')} with β_W ≥ 1 have no Remark 6 r"
            + (f"; {lost - no_r} more ≤0/null/inf" if lost > no_r else ""),
        )
    else:
        _note(ax, f"{_count(lost, 'model')} not drawn (≤0/null/inf)" if lost else "")
    if not ok.any():
        _panel_text(ax, "no positive finite values" if models else "no models")


def draw_bound_vs_gap(
    bounds: pa.Table,
    runs: pa.Table,
    *,
    source: str = "results/bounds.parquet + results/runs.parquet",
) -> Figure:
    """Bounds vs measured generalization error, one point per model (its best-α row),
    Kendall's τ per panel: Theorem 3, Theorem 2, Theorem 2 with Remark 6's r, Zhang et
    al.'s order (log y); colour = L, marker = σ. One 2 × 2 block per experiment."""
    data = A.joined(bounds, runs)
    present = set(data["experiment_id"])
    order = [e for e in A.experiments(runs) if e in present] or [""]
    fig, axes = _new_figure(2 * len(order), 2, legend_right=True)
    lengths, sigmas = _levels(data["L"]), _levels(data["sigma"])
    for k, eid in enumerate(order):
        mask = data["experiment_id"] == eid
        heading = f"\n{A.experiment_label(runs, eid)}" if len(order) > 1 else ""
        block = axes[2 * k : 2 * k + 2].flat
        for ax, q in zip(block, SCATTER_QUANTITIES, strict=True):
            _scatter_panel(ax, data, mask, q, lengths, sigmas, heading)
    handles = [
        Line2D(
            [], [], color=L_COLOURS[i % len(L_COLOURS)], marker="o", ls="", label=f"L = {int(v)}"
        )
        for i, v in enumerate(lengths)
    ]
    handles += [
        Line2D(
            [],
            [],
            color="0.3",
            marker=SIGMA_MARKERS[j % len(SIGMA_MARKERS)],
            ls="",
            label=f"σ = {v:g}",
        )
        for j, v in enumerate(sigmas)
    ]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    label = A.experiment_label(runs, order[0]) + "; " if len(order) == 1 and order[0] else ""
    fig.suptitle(
        "Generalization bounds vs measured generalization error (one point per model, "
        "best α per model)\n"
        f"{label}{_count(int(data['gen_error'].size), 'model')} (status done); τ within one "
        f"experiment; data: {source}",
        fontsize=9,
    )
    return fig


def fig_bound_vs_gap(
    bounds: pa.Table,
    runs: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/bounds.parquet + results/runs.parquet",
) -> list[Path]:
    """:func:`draw_bound_vs_gap` saved as ``<path_stem>.png`` and ``.pdf``."""
    return save(draw_bound_vs_gap(bounds, runs, source=source), path_stem)
