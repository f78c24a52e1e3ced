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
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import pyarrow as pa
from matplotlib import colormaps, rc_context
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
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
# Right of the panels, centred in height: at the top it ran under a figure title wider
# than the panels (one L, one panel).
LEGEND_RIGHT: Final = "outside right center"
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

# The title of each panel of bound_terms: Theorem 3's additive terms, then the totals.
PANEL_TITLES: dict[str, str] = {
    "margin_loss": "margin loss (ramp, noisy train)",
    "rademacher_fs_term": "Rademacher term, r‖X‖_F part",
    "rademacher_norm1_term": "Rademacher term, Λ‖Xᵀ‖₁ part",
    "noise_term": "noise term (σ√(2 log 2d) part)",
    "confidence_term": "confidence term (δ)",
    "bound_thm3": "Theorem 3 bound (sum of the terms)",
    "bound_thm2": "Theorem 2 bound (clean training)",
    "bound_thm2_remark6": "Theorem 2 bound, Remark 6 r",
    "zhang_order": "Zhang et al. 2018 (order only)",
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
    nrows: int,
    ncols: int,
    legend_right: bool = False,
    legend_rows: int = 0,
    panel: tuple[float, float] = PANEL_INCHES,
) -> tuple[float, float]:
    """Figure size in inches for a grid of panels of `panel` inches (plus a legend right
    of them, or one of `legend_rows` entries below them); the PNG is this times ``DPI``
    pixels."""
    width = max(MIN_WIDTH_INCHES, panel[0] * ncols)
    width += LEGEND_INCHES if legend_right else 0.0
    height = panel[1] * nrows + TITLE_INCHES + LEGEND_ROW_INCHES * legend_rows
    return width, height


def _new_figure(
    nrows: int,
    ncols: int,
    *,
    legend_right: bool = False,
    legend_rows: int = 0,
    sharex: bool | ShareAxes = False,
    sharey: bool | ShareAxes = False,
    panel: tuple[float, float] = PANEL_INCHES,
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on its own Agg canvas and its 2-D array of axes."""
    fig = Figure(
        figsize=figure_size(nrows, ncols, legend_right, legend_rows, panel),
        dpi=DPI,
        layout="constrained",
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


VERDICT_HEADROOM = 0.36  # share of a Figure 1/2 panel's height kept free for its verdict


def _pv(p: float) -> str:
    """'< 0.001', '0.037' or '—' (no test)."""
    if not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdict_text(inf: A.Inference | None) -> str:
    """The corner text of a Figure 1/2 panel: the rule's verdict on Holm-adjusted p, σ*'s
    bootstrap interval, the deciding tests' adjusted p and the no-rise test's."""
    if inf is None:
        return "no verdict: fewer than two σ at this L"
    v = inf.verdict
    first = f"verdict (Holm-adjusted): {inf.holm_verdict}"
    if inf.holm_verdict != v.verdict:
        first += f" (raw: {v.verdict})"
    lines = [
        first,
        f"σ* = {v.sigma_star:g}, {100 * A.BOOTSTRAP_LEVEL:.0f} % interval "
        f"[{inf.interval.low:g}, {inf.interval.high:g}]",
    ]
    if math.isfinite(inf.p_vs_min_holm):
        lines.append(f"p Holm (σ* < σ = {v.sigma_min:g}): {_pv(inf.p_vs_min_holm)}")
    if math.isfinite(inf.p_vs_max_holm):
        lines.append(f"p Holm (σ* < σ = {v.sigma_max:g}): {_pv(inf.p_vs_max_holm)}")
    lines.append(f"no rise ≥ {inf.no_rise.margin:g}: p Holm {_pv(inf.no_rise_p_holm)}")
    return "\n".join(lines)


def _headroom(ax: Axes, share: float) -> None:
    """Raise the top of the y-range so the data fill only the lower 1 − `share` of the
    panel: room for a corner text that hides no point."""
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, lo + (hi - lo) / (1.0 - share))


def _verdict_box(ax: Axes, text: str) -> None:
    """`text` in the upper left corner of `ax`, inside the headroom."""
    ax.text(
        0.02,
        0.98,
        text,
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=7,
        gid="verdict",
        zorder=5,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.6", "alpha": 0.9},
    )


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
    if quantity in A.INFERENCE_QUANTITIES and order:
        # the verdict of the folder's main experiment (the one with most runs), per L
        infs = {i.L: i for i in A.inference(runs, order[0]) if i.quantity == quantity}
        _headroom(axes[0, 0], VERDICT_HEADROOM)  # shared y: once for every panel
        for ax, length in zip(axes.flat, lengths, strict=True):
            if any(c.L == int(length) for c in cells):
                who = "blue series: " if len(shown) > 1 else ""
                _verdict_box(ax, who + verdict_text(infs.get(int(length))))
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
) -> dict[tuple[str, int, float], tuple[list[int], list[float], list[float]]]:
    """(experiment, L, σ) -> (epochs, mean and standard error over the seeds of finished
    runs at each epoch), taken by :func:`rnngen.analysis.cells` one epoch at a time."""
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
    out: dict[tuple[str, int, float], tuple[list[int], list[float], list[float]]] = {}
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
            epochs, means, sems = out.setdefault(
                (cell.experiment_id, cell.L, cell.sigma), ([], [], [])
            )
            epochs.append(int(epoch))
            means.append(cell.mean)
            sems.append(cell.sem)
    return out


HISTORY_KINDS = (("train", "clean training accuracy", "-"), ("test", "test accuracy", "--"))


def draw_history(
    history: pa.Table, runs: pa.Table, *, source: str = "results/history.parquet"
) -> Figure:
    """Clean training accuracy (upper row, solid) and test accuracy (lower row, dashed)
    vs epoch, mean over the seeds of finished runs with a band of ± one standard error,
    one colour per σ; one column per L, two rows per experiment. The y-range is fitted to
    the curves and bands (no fixed chance line pulls it down)."""
    A.require(history, (*HISTORY_COLUMNS, "L", "sigma", "seed"), "history table")
    A.require(runs, RUNS_COLUMNS, "runs table")
    curves = {
        "train": _history_means(history, runs, "train_accuracy_clean"),
        "test": _history_means(history, runs, "test_accuracy"),
    }
    keys = set(curves["train"]) | set(curves["test"])
    order, left_out = _capped([e for e in A.experiments(runs) if any(k[0] == e for k in keys)])
    lengths = sorted({k[1] for k in keys})
    sigmas = sorted({k[2] for k in keys})
    cmap = colormaps["viridis"]
    colours = {s: cmap(0.9 * i / max(1, len(sigmas) - 1)) for i, s in enumerate(sigmas)}
    fig, axes = _new_figure(
        2 * max(1, len(order)),
        max(1, len(lengths)),
        legend_right=True,
        sharex=True,
        sharey=True,
        panel=(PANEL_INCHES[0], 3.0),
    )
    _left_out(fig, left_out)
    if not keys:
        _panel_text(axes[0, 0], "no epoch history of finished runs")
    for k, eid in enumerate(order):
        for r, (kind, name, ls) in enumerate(HISTORY_KINDS):
            row = 2 * k + r
            for col, length in enumerate(lengths):
                ax = axes[row, col]
                for s in sigmas:
                    if (eid, length, s) not in curves[kind]:
                        continue
                    x, y, se = curves[kind][(eid, length, s)]
                    band = np.nan_to_num(np.asarray(se, dtype=float))  # one seed: no band
                    ax.fill_between(
                        x,
                        np.asarray(y) - band,
                        np.asarray(y) + band,
                        color=colours[s],
                        alpha=0.18,
                        lw=0,
                        gid=f"band:{kind}:{eid}:{length}:{s:g}",
                    )
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
                if not any(key[0] == eid and key[1] == length for key in keys):
                    _panel_text(ax, "no history at this L")
                title = f"L = {length}: {name}"
                if len(order) > 1:
                    title += f"\n{A.experiment_label(runs, eid)}"
                ax.set_title(title, fontsize=9 if len(order) == 1 else 8)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes[row, 0].set_ylabel("accuracy (fraction)")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles: list[Artist] = [
        Line2D([], [], color=colours[s], lw=2, label=f"σ = {s:g}") for s in sigmas
    ]
    handles += [
        Line2D([], [], color="black", ls="-", label="clean training accuracy"),
        Line2D([], [], color="black", ls="--", label="test accuracy"),
        Patch(color="0.5", alpha=0.3, label="band: mean ± s.e.\nover seeds"),
    ]
    fig.legend(handles=handles, loc=LEGEND_RIGHT, fontsize=8)
    done = A.done(runs)
    lost = runs.num_rows - done.num_rows
    rows: np.ndarray | list[float] = (
        A.column(history, "eval_rows") if "eval_rows" in history.column_names else []
    )
    label = A.experiment_label(runs, order[0]) if len(order) == 1 else "two rows per experiment"
    fig.suptitle(
        "Training history: do the models fit their training data?\n"
        f"{label}; mean ± s.e. over seeds of finished runs"
        + (f" ({_count(lost, 'run')} not done left out)" if lost else "")
        + f";\naccuracies on fixed subsets of {_fmt_range(rows)} reviews per split; "
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
    paper = sorted(
        (int(x), A.PAPER_LAMBDA_MIN[int(x)]) for x in set(L) if int(x) in A.PAPER_LAMBDA_MIN
    )
    if paper:
        ax.plot(
            [x for x, _ in paper],
            [v for _, v in paper],
            ls="",
            marker="x",
            ms=9,
            mew=2,
            color="black",
            label="paper (Tu et al. 2020, App. D)",
            gid="paper",
        )
    lost = ", ".join(str(int(x)) for x in L[~cert & ~unc])
    _note(ax, f"not drawn (no positive λ_min or estimate): L = {lost}" if lost else "")
    ax.set_yscale("log")
    ax.set_xticks(sorted({int(x) for x in L if math.isfinite(x)}))
    ax.margins(x=0.15)
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
        if int(L[i]) in A.PAPER_LAMBDA_MIN:
            ax.axhline(
                A.PAPER_LAMBDA_MIN[int(L[i])],
                color=colour,
                ls=":",
                lw=1.2,
                label=f"paper's λ_min, L = {int(L[i])}",
                gid=f"paper:{int(L[i])}",
            )
    _note(ax, f"{dropped} non-positive/non-finite values not drawn" if dropped else "")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("index k (k-th smallest eigenvalue)")
    ax.set_ylabel(EIG_YLABEL)
    ax.set_title("low end of the spectrum", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # beside the panel: inside it would hide lines
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


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


# Figures with one block of panels per experiment draw at most this many: a profile with
# a dozen experiments (the zoo) would otherwise give a page tens of thousands of pixels tall.
MAX_EXPERIMENT_BLOCKS = 4


def _capped(order: list[str]) -> tuple[list[str], str | None]:
    """The experiments a per-experiment figure draws (the first MAX_EXPERIMENT_BLOCKS of
    `order`), and a note naming how many were left out (None when none were)."""
    if len(order) <= MAX_EXPERIMENT_BLOCKS:
        return order, None
    left = len(order) - MAX_EXPERIMENT_BLOCKS
    return order[:MAX_EXPERIMENT_BLOCKS], (
        f"The first {MAX_EXPERIMENT_BLOCKS} of {len(order)} experiments (most models first); "
        f"the other {left} are in results/ and REPORT.md."
    )


def _left_out(fig: Figure, note: str | None) -> None:
    if note:
        fig.text(0.01, 0.002, note, fontsize=8, ha="left", va="bottom", color="0.3")


def _why(value: float) -> str:
    """Why a value is not on a log axis."""
    return "inf" if np.isinf(value) else "null" if np.isnan(value) else "≤0"


# Each term and total in its own panel, in this order (Remark 6's only where defined).
TERM_PANELS = (*A.THM3_TERMS, *A.BOUND_TOTALS)
SHORT_NAMES = {
    "margin_loss": "margin loss",
    "rademacher_fs_term": "Rademacher r‖X‖_F",
    "rademacher_norm1_term": "Rademacher Λ‖Xᵀ‖₁",
    "noise_term": "noise term",
    "confidence_term": "confidence term",
    "bound_thm3": "Thm 3 total",
    "bound_thm2": "Thm 2 total",
    "bound_thm2_remark6": "Thm 2 total, Rem. 6 r",
    "zhang_order": "Zhang et al. (order)",
}
TERM_PANEL_INCHES = (4.4, 3.4)


def _reference(mine: list[A.TermCell], q: str) -> A.TermCell | None:
    """The cell a quantity is measured against: the smallest σ with a positive finite value
    (σ = 0, except for the noise term, which is exactly 0 there)."""
    return next((c for c in mine if _log_ok(np.array([c.means.get(q, math.nan)]))[0]), None)


def _level_panel(ax: Axes, by_L: dict[int, list[A.TermCell]], names: list[str]) -> list[str]:
    """Horizontal bars: log10 of each quantity at its reference σ, one bar per L: which
    term dominates, by how many orders of magnitude."""
    lengths = sorted(by_L)
    height = 0.8 / max(1, len(lengths))
    notes = []
    for i, length in enumerate(lengths):
        ys, xs = [], []
        for j, q in enumerate(names):
            ref = _reference(by_L[length], q)
            if ref is None:
                notes.append(f"{SHORT_NAMES[q]} at L = {length}: no positive finite value")
                continue
            ys.append(j + (i - (len(lengths) - 1) / 2) * height)
            xs.append(math.log10(ref.means[q]))
        ax.barh(
            ys,
            xs,
            height=height,
            color=L_COLOURS[i % len(L_COLOURS)],
            gid=f"level:{length}",
        )
        for y, x in zip(ys, xs, strict=True):  # the number too: a bar near 0 is invisible
            ax.annotate(
                f"{x:.0f}" if abs(x) >= 10 else f"{round(x, 1) + 0.0:.1f}",  # no "-0.0"
                (max(x, 0.0), y),
                xytext=(2, 0),
                textcoords="offset points",
                va="center",
                fontsize=5,
                color="0.25",
            )
    ax.margins(x=0.15)
    ax.axvline(0.0, color="0.4", lw=0.8, ls="-.")
    refs = {
        q: sorted({r.sigma for r in (_reference(by_L[x], q) for x in lengths) if r is not None})
        for q in names
    }
    ax.set_yticks(
        range(len(names)),
        [
            SHORT_NAMES[q]
            + (f" (σ = {', '.join(f'{s:g}' for s in refs[q])})" if q == "noise_term" else "")
            for q in names
        ],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlabel("log₁₀ of the value (error fraction)")
    ax.set_title("level at σ = smallest σ: which term dominates", fontsize=8)
    return notes


def _relative_panel(ax: Axes, by_L: dict[int, list[A.TermCell]], q: str, eid: str) -> list[str]:
    """log10(value / value at the reference σ) vs σ, one line per L: the σ effect of one
    term or total, read on its own scale. Returns notes on points not drawn."""
    notes, refs = [], set()
    for i, length in enumerate(sorted(by_L)):
        mine = by_L[length]
        ref = _reference(mine, q)
        if ref is None:
            notes.append(f"L = {length}: no positive finite value")
            continue
        refs.add(ref.sigma)
        x = np.array([c.sigma for c in mine])
        y = np.array([c.means.get(q, math.nan) for c in mine])
        ok = _log_ok(y)
        ax.plot(
            x[ok],
            np.log10(y[ok]) - math.log10(ref.means[q]),
            ls="-",
            marker=SIGMA_MARKERS[i % len(SIGMA_MARKERS)],
            color=L_COLOURS[i % len(L_COLOURS)],
            ms=4,
            lw=1.3,
            gid=f"rel:{eid}:{q}:{length}",
        )
        zero = (y == 0) & (x == 0) if q == "noise_term" else np.zeros_like(ok)
        lost = ~ok & ~zero
        if lost.any():
            why = ", ".join(f"σ={s:g} ({_why(v)})" for s, v in zip(x[lost], y[lost], strict=True))
            notes.append(f"L = {length}: not drawn at {why}")
    ax.axhline(0.0, color="0.4", lw=0.8, ls="-.")
    at = ", ".join(f"{s:g}" for s in sorted(refs)) or "—"
    ax.set_title(f"{PANEL_TITLES[q]}\nrelative to its value at σ = {at}", fontsize=8)
    if q == "noise_term":
        notes.append("exactly 0 at σ = 0 (no noise): measured from the smallest σ > 0")
    if all(len(v) < 2 for v in by_L.values()):
        notes.append("one σ: no σ effect to show")
    return notes


def _defined(cells: list[A.TermCell], q: str) -> bool:
    return bool(_log_ok(np.array([c.means.get(q, math.nan) for c in cells])).any())


def draw_bound_terms(
    bounds: pa.Table, *, runs: pa.Table | None = None, source: str = "results/bounds.parquet"
) -> Figure:
    """Bound terms and totals vs σ at each model's best α (geometric mean over seeds,
    :func:`rnngen.analysis.term_cells`), each in its own panel, one line per L, as
    log10(value / value at σ = 0): the σ effect of every term on its own scale. A first
    panel gives each one's level at σ = 0 (which dominates). Theorem 2 with Remark 6's r
    is left out, with a sentence, where β_W ≥ 1 leaves it undefined. One block of panels
    per experiment; `runs` only orders and labels the experiments."""
    cells = A.term_cells(bounds)
    order, left_out = _capped(_term_experiments(cells, runs))
    names = [q for q in TERM_PANELS if q != "bound_thm2_remark6" or _defined(cells, q)]
    ncols = 3
    rows_per = math.ceil((1 + len(names)) / ncols)
    fig, axes = _new_figure(
        rows_per * max(1, len(order)), ncols, legend_right=True, panel=TERM_PANEL_INCHES
    )
    _left_out(fig, left_out)
    if not cells:
        _panel_text(axes[0, 0], "no best-α bounds rows with status ok")
        for ax in axes.flat[1:]:
            ax.remove()
    lengths = sorted({c.L for c in cells})
    for k, eid in enumerate(order):
        block = list(axes[k * rows_per : (k + 1) * rows_per].flat)
        mine = [c for c in cells if c.experiment_id == eid]
        by_L = {
            L: sorted((c for c in mine if c.L == L), key=lambda c: c.sigma)
            for L in sorted({c.L for c in mine})
        }
        _note(block[0], "\n".join(_level_panel(block[0], by_L, names)))
        if len(order) > 1:
            label = A.experiment_label(runs, eid) if runs is not None else eid
            block[0].set_title(f"{label}\n{block[0].get_title()}", fontsize=8)
        for ax, q in zip(block[1:], names, strict=False):
            _note(ax, "\n".join(_relative_panel(ax, by_L, q, eid)))
            ax.set_xlabel(SIGMA_XLABEL, fontsize=8)
            ax.set_ylabel("log₁₀(value / value at σ_ref)", fontsize=8)
        for ax in block[1 + len(names) :]:
            ax.remove()
    handles = [
        Line2D(
            [],
            [],
            color=L_COLOURS[i % len(L_COLOURS)],
            marker=SIGMA_MARKERS[i % len(SIGMA_MARKERS)],
            label=f"L = {length}",
        )
        for i, length in enumerate(lengths)
    ]
    handles.append(Line2D([], [], color="0.4", ls="-.", label="no change (ratio 1) / value 1"))
    fig.legend(handles=handles, loc=LEGEND_RIGHT, fontsize=8)
    title = (
        A.experiment_label(runs, order[0]) + "; " if runs is not None and len(order) == 1 else ""
    )
    omitted = (
        ""
        if "bound_thm2_remark6" in names or not cells
        else "\nTheorem 2 with Remark 6's r is not drawn: it needs β_W < 1 and is undefined "
        "for every model here."
    )
    fig.suptitle(
        "Generalization-bound terms and totals vs training noise σ, each in its own panel "
        "as log₁₀(value / value at σ = 0)\n"
        f"{title}geometric mean over seeds of each model's best-α row; first panel: "
        f"each one's level; data: {source}{omitted}",
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


def _tau_lines(
    tau: dict[str, tuple[float, float, float, int]], psi: A.Granulated, scopes: list[str]
) -> str:
    """Two title lines: τ over all models (p, Holm-adjusted p, models) with Ψ, then τ
    within each L."""
    t, p, ph, n = tau.get("all", (math.nan, math.nan, math.nan, 0))
    first = (
        f"Kendall τ = {t:.3f} (p = {p:.2g}, Holm {ph:.2g}, {_count(n, 'model')})"
        if math.isfinite(t)
        else f"Kendall τ undefined ({_count(n, 'model')})"
    )
    first += f"; Ψ = {psi.psi:+.2f}" if math.isfinite(psi.psi) else "; Ψ undefined"
    within = [
        f"{s.removeprefix('L=')}: {tau[s][0]:+.2f}" if math.isfinite(tau[s][0]) else "—"
        for s in scopes
        if s != "all"
    ]
    return first + ("\nτ within L = " + " · ".join(within) if within else "")


def _scatter_panel(
    ax: Axes,
    data: dict[str, np.ndarray],
    mask: np.ndarray,
    quantity: str,
    lengths: list[float],
    sigmas: list[float],
    heading: str,
    stats: str,
) -> None:
    """One quantity vs measured gap over the models in `mask`: colour = L, marker = σ;
    the title carries `stats` (τ as in results/kendall_tau.parquet, Ψ)."""
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
                    gid=f"models:{quantity}:{int(length)}:{s:g}",
                )
    ax.set_title(f"{BOUND_TITLES[quantity]}{heading}\n{stats}", fontsize=8)
    ax.set_xlabel("measured generalization error (clean test − noisy train)")
    ax.set_ylabel(f"log₁₀ {quantity}")
    lost = int((~ok).sum())
    if quantity == "bound_thm2_remark6" and lost:
        beta = data["beta_W"][mask]
        no_r = int((~(beta < 1)).sum())
        _note(
            ax,
            f"{_count(no_r, 'model')} with β_W ≥ 1 have no Remark 6 r"
            + (f"; {lost - no_r} more ≤0/null/inf" if lost > no_r else ""),
        )
    else:
        _note(ax, f"{_count(lost, 'model')} not drawn (≤0/null/inf)" if lost else "")


def _remark6_sentence(data: dict[str, np.ndarray], mask: np.ndarray) -> str:
    beta = data["beta_W"][mask]
    median = float(np.nanmedian(beta)) if np.isfinite(beta).any() else math.nan
    return (
        f"Remark 6's bound is not drawn: it needs β_W < 1; all {_count(int(mask.sum()), 'model')} "
        f"have β_W ≥ 1 (median β_W = {median:.3g})"
    )


def draw_bound_vs_gap(
    bounds: pa.Table,
    runs: pa.Table,
    *,
    source: str = "results/bounds.parquet + results/runs.parquet",
) -> Figure:
    """Bounds vs measured generalization error, one point per model (its best-α row):
    Theorem 3, Theorem 2, Theorem 2 with Remark 6's r (only where some model has one),
    Zhang et al.'s order (log y); colour = L, marker = σ. Each title: Kendall τ over all
    models (raw and Holm-adjusted p over the experiment's τ table), Ψ (granulated τ) and τ
    within each L. One row of panels per experiment."""
    data = A.joined(bounds, runs)
    present = set(data["experiment_id"])
    order, left_out = _capped([e for e in A.experiments(runs) if e in present] or [""])
    rows = A.kendall_rows(bounds, runs)
    tau = {
        (r["experiment_id"], r["scope"], r["quantity"]): (r["tau"], r["p_value"], p, r["n_models"])
        for r, p in zip(rows, A.kendall_holm(rows), strict=True)
    }
    shown, notes = {}, []
    for eid in order:
        mask = data["experiment_id"] == eid
        shown[eid] = [q for q in SCATTER_QUANTITIES if _log_ok(data[q][mask]).any()]
        if mask.any() and "bound_thm2_remark6" not in shown[eid]:
            notes.append(
                (f"{A.experiment_label(runs, eid)}: " if len(order) > 1 else "")
                + _remark6_sentence(data, mask)
            )
    ncols = max(1, max(len(v) for v in shown.values()))
    fig, axes = _new_figure(len(order), ncols, legend_right=True)
    _left_out(fig, left_out)
    lengths, sigmas = _levels(data["L"]), _levels(data["sigma"])
    for k, eid in enumerate(order):
        mask = data["experiment_id"] == eid
        heading = f"\n{A.experiment_label(runs, eid)}" if len(order) > 1 else ""
        scopes = list(dict.fromkeys(s for (e, s, _) in tau if e == eid))
        for ax, q in zip(axes[k], shown[eid], strict=False):
            mine = {s: tau[(eid, s, q)] for s in scopes}
            stats = _tau_lines(mine, A.granulated_kendall(data, mask, q), scopes)
            _scatter_panel(ax, data, mask, q, lengths, sigmas, heading, stats)
        if not shown[eid]:
            _panel_text(axes[k, 0], "no models" if not mask.any() else "no positive finite values")
        for ax in axes[k, max(1, len(shown[eid])) :]:
            ax.remove()
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
        fig.legend(handles=handles, loc=LEGEND_RIGHT, fontsize=8)
    label = A.experiment_label(runs, order[0]) + "; " if len(order) == 1 and order[0] else ""
    fig.suptitle(
        "Generalization bounds vs measured generalization error (one point per model, "
        "best α per model)\n"
        f"{label}{_count(int(data['gen_error'].size), 'model')} (status done); τ within one "
        f"experiment, Ψ: mean τ over groups differing in L alone / σ alone; data: {source}"
        + "".join(f"\n{n}" for n in notes),
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


# ------------------------------------------------------------------ measures, certificates


def draw_measure_ranking(
    ranking: pa.Table, *, source: str = "results/measure_ranking.parquet"
) -> Figure:
    """Kendall τ and granulated τ Ψ of every measure against the clean gap, each with its
    95 % bootstrap interval; measures in the ranking's order (by Ψ), the best on top."""
    A.require(ranking, ("target", "measure", "tau", "psi", "rank"), "ranking table")
    rows = sorted(
        (
            r
            for r in ranking.to_pylist()
            # this folder's ranking; a pooled one (scope 'pooled: …') is a table in the report
            if r["target"] == "clean_gap" and r.get("scope", "this folder") == "this folder"
        ),
        key=lambda r: r["rank"],
    )
    height = max(3.0, 0.28 * len(rows) + 1.2)
    fig, axes = _new_figure(1, 2, sharey=True, panel=(4.2, height))
    if not rows:
        for ax in axes.flat:
            _panel_text(ax, "no ranking rows")
        return fig
    y = np.arange(len(rows))[::-1]
    for ax, name, title in ((axes[0, 0], "psi", "granulated τ Ψ"), (axes[0, 1], "tau", "τ")):
        value = np.array([np.nan if r[name] is None else r[name] for r in rows], float)
        lo = np.array([np.nan if r[f"{name}_lo"] is None else r[f"{name}_lo"] for r in rows])
        hi = np.array([np.nan if r[f"{name}_hi"] is None else r[f"{name}_hi"] for r in rows])
        above = lo > 0
        ax.errorbar(value, y, xerr=[value - lo, hi - value], fmt="none", ecolor="0.55", capsize=2)
        ax.scatter(value[~above], y[~above], color="tab:grey", zorder=3, label="interval reaches 0")
        ax.scatter(value[above], y[above], color="tab:blue", zorder=3, label="interval above 0")
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel(f"{title} against the clean gap (95 % bootstrap interval)")
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(y, [r["measure"] for r in rows], fontsize=7)
    axes[0, 0].legend(loc="lower left", fontsize=7)
    n = rows[0]["n_models"]
    fig.suptitle(
        f"Which measure tracks generalization? {len(rows)} measures on {n} models, sorted by Ψ "
        f"(Jiang et al. 2020)\ndata: {source}",
        fontsize=9,
    )
    return fig


def fig_measure_ranking(
    ranking: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/measure_ranking.parquet",
) -> list[Path]:
    """:func:`draw_measure_ranking` saved as ``<path_stem>.png`` and ``.pdf``."""
    return save(draw_measure_ranking(ranking, source=source), path_stem)


def draw_certificates(
    certificates: pa.Table,
    theorem3: dict[float, float] | None = None,
    *,
    source: str = "results/certificates.parquet",
) -> Figure:
    """Per σ, on a log axis: the PAC-Bayes-kl certificate, the stochastic classifier's
    measured test error, and Theorem 3 of the paper (`theorem3`: σ -> its value, e.g. the
    mean over a reference profile's seeds at the best α), with the line at 0.5 (chance)."""
    A.require(certificates, ("sigma", "status", "certificate"), "certificates table")
    rows = [r for r in certificates.to_pylist() if r["status"] == "done"]
    fig, axes = _new_figure(1, 1, legend_right=True)
    ax = axes[0, 0]
    if not rows:
        _panel_text(ax, "no certified cell")
        return fig
    sig = np.array([r["sigma"] for r in rows])
    ax.scatter(sig, [r["certificate"] for r in rows], marker="o", color="tab:blue",
               label="certificate (PAC-Bayes-kl)", zorder=3)  # fmt: skip
    ax.scatter(sig, [r["test_error_stochastic"] for r in rows], marker="s", color="tab:green",
               label="test error, stochastic classifier", zorder=3)  # fmt: skip
    ax.scatter(sig, [r["test_error_mean"] for r in rows], marker="^", color="tab:olive",
               label="test error, mean network", zorder=3)  # fmt: skip
    if theorem3:
        s3 = sorted(theorem3)
        ax.plot(s3, [theorem3[s] for s in s3], "x--", color="tab:red",
                label="Theorem 3 (paper profile, best α)")  # fmt: skip
    ax.axhline(0.5, color="black", lw=0.8, ls=":", label="0.5 (chance)")
    ax.set_yscale("log")
    ax.set_xlabel(SIGMA_XLABEL)
    ax.set_ylabel("clean 0-1 error (fraction) or its bound")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
    ax.grid(alpha=0.3, which="both")
    L = sorted({r["L"] for r in rows})
    fig.suptitle(
        f"Certified vs measured test error, L = {', '.join(map(str, L))}: a certificate below "
        f"0.5 is non-vacuous\ndata: {source}",
        fontsize=9,
    )
    return fig


def fig_certificates(
    certificates: pa.Table,
    path_stem: str | os.PathLike[str],
    theorem3: dict[float, float] | None = None,
    *,
    source: str = "results/certificates.parquet",
) -> list[Path]:
    """:func:`draw_certificates` saved as ``<path_stem>.png`` and ``.pdf``."""
    return save(draw_certificates(certificates, theorem3, source=source), path_stem)
