"""Figures of the study and the Kendall-τ table (pure layer: numpy, scipy, pyarrow, matplotlib).

Every figure is drawn with the object API (``matplotlib.figure.Figure`` on an Agg canvas),
so no pyplot state leaks between figures, and is written as PNG (``DPI`` dots per inch,
a figure size fixed by the panel count: see :func:`figure_size`) and PDF next to each other:
``<stem>.png`` and ``<stem>.pdf``, each written to a temporary file and renamed.

Inputs are the Parquet result tables of ``shared/CONTRACT.md`` as pyarrow Tables:
``runs`` (one row per trained model), ``spectrum`` (one row per L) and ``bounds`` (one row
per model × margin α). Extra columns are ignored; missing ones raise :class:`DataError`.
Log axes cannot show zero, negative, null or infinite values: such points are left out and
each panel says how many were left out.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from rnngen.bounds import TERM_COLUMNS
from rnngen.errors import DataError

DPI = 120
PANEL_INCHES = (5.0, 4.0)  # width, height of one panel
TITLE_INCHES = 0.95  # height added for the figure title
MIN_WIDTH_INCHES = 6.5  # a one-panel figure still has room for a two-line title
LEGEND_INCHES = 2.5  # width added when the legend sits right of the panels

RUN_COLUMNS = ("run_id", "L", "sigma", "seed", "hidden", "gen_error", "status")
SPECTRUM_COLUMNS = ("L", "lambda_min", "lambda_min_residual", "status", "smallest")
BOUND_TOTALS = ("bound_thm2", "bound_thm3", "bound_thm2_remark6", "zhang_order")
KENDALL_QUANTITIES = BOUND_TOTALS + tuple(c for c in TERM_COLUMNS if c not in BOUND_TOTALS)
KENDALL_METHOD = (
    "scipy.stats.kendalltau (tau-b, two-sided p) between each quantity and gen_error; "
    "bounds rows with alpha_best joined on run_id to runs with status 'done'; "
    "pairs with a null or non-finite value dropped"
)

GEN_ERROR_XLABEL = "input noise σ (std. dev. per coordinate)"
GEN_ERROR_YLABEL = "generalization error (fraction)\n= test error clean − train error noisy"
SIGMA_XLABEL = "training input noise σ (std. dev. per coordinate)"
EIG_YLABEL = r"eigenvalue of $\Sigma = E[x x^\top]$ (GloVe units²)"

# term column -> (label, colour, marker, line style, line width); totals drawn thicker
TERM_STYLES: dict[str, tuple[str, str, str, str, float]] = {
    "margin_loss": ("margin loss (ramp, noisy train)", "tab:gray", "v", "-", 1.2),
    "rademacher_fs_term": ("Rademacher fs term (r‖X‖_F)", "tab:blue", "o", "-", 1.2),
    "rademacher_norm1_term": ("Rademacher 1-norm term (Λ‖Xᵀ‖₁)", "tab:cyan", "s", "-", 1.2),
    "noise_term": ("noise term (σ√(2 log 2d))", "tab:green", "^", "-", 1.2),
    "confidence_term": ("confidence term (δ)", "tab:olive", "D", "-", 1.2),
    "bound_thm3": ("Theorem 3 bound (total)", "tab:red", "o", "-", 2.4),
    "bound_thm2": ("Theorem 2 bound (total)", "tab:purple", "s", "--", 2.4),
    "zhang_order": ("Zhang et al. 2018 (order only)", "black", "x", ":", 1.8),
}
BOUND_TITLES = {
    "bound_thm3": "Theorem 3 bound (noisy training)",
    "bound_thm2": "Theorem 2 bound (clean training)",
    "bound_thm2_remark6": "Theorem 2 bound, Remark 6 r (only β_W < 1)",
    "zhang_order": "Zhang et al. 2018 (order only, no constants)",
}
L_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
SIGMA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# --------------------------------------------------------------------------- table access


def _require(table: pa.Table, names: Iterable[str], what: str) -> None:
    """Raise :class:`DataError` naming the columns of ``table`` that are missing."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {missing} (has {table.column_names}); "
            "regenerate it with the current pipeline (see shared/CONTRACT.md, Outputs)."
        )


def _num(table: pa.Table, name: str) -> np.ndarray:
    """Column ``name`` as float64, nulls as NaN."""
    return np.asarray(table.column(name).cast(pa.float64()).to_numpy(), dtype=np.float64)


def _strs(table: pa.Table, name: str) -> list[str]:
    """Column ``name`` as Python strings (null -> "")."""
    return ["" if v is None else str(v) for v in table.column(name).to_pylist()]


def _done(runs: pa.Table) -> np.ndarray:
    """Boolean mask of runs with status "done"."""
    return np.array([s == "done" for s in _strs(runs, "status")], dtype=bool)


def _key(sigma: float) -> float:
    """Grouping key for σ: rounding absorbs float noise such as 0.30000000000000004."""
    return round(float(sigma), 9)


def _fmt_range(values: Iterable[float]) -> str:
    """'5' for one distinct value, '2–3' for a range, '?' for none."""
    vals = sorted({int(v) for v in values if math.isfinite(v)})
    if not vals:
        return "?"
    return str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


# --------------------------------------------------------------------------- figure plumbing


def figure_size(nrows: int, ncols: int, legend_right: bool = False) -> tuple[float, float]:
    """Figure size in inches for a grid of panels; the PNG is this times ``DPI`` pixels."""
    width = max(MIN_WIDTH_INCHES, PANEL_INCHES[0] * ncols)
    width += LEGEND_INCHES if legend_right else 0.0
    return width, PANEL_INCHES[1] * nrows + TITLE_INCHES


def _new_figure(
    nrows: int,
    ncols: int,
    legend_right: bool = False,
    sharex: bool = False,
    sharey: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure on its own Agg canvas and its 2-D array of axes."""
    fig = Figure(figsize=figure_size(nrows, ncols, legend_right), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, axes


def _save(fig: Figure, path_stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically (temp file, then rename)."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("png", "pdf"):
        target = stem.with_name(f"{stem.name}.{fmt}")
        tmp = target.with_name(f".{target.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=DPI)
        os.replace(tmp, target)
        written.append(target)
    return written


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


def _count(n: int, noun: str) -> str:
    """'1 model', '3 models'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _empty_panel(ax: Axes, text: str) -> None:
    """Mark a panel that has nothing to draw, instead of failing."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=10,
        color="tab:red",
    )


def _log_ok(values: np.ndarray) -> np.ndarray:
    """Mask of values a log axis can show: finite and > 0."""
    return np.isfinite(values) & (values > 0)


# --------------------------------------------------------------------------- Figures 1 and 2


def aggregate_gen_error(runs: pa.Table) -> list[dict[str, Any]]:
    """Mean ± standard error of ``gen_error`` over seeds, per (L, σ), of "done" runs.

    Returns one dict per cell, sorted by (L, σ): ``L`` (int), ``sigma`` (float), ``mean``,
    ``sem`` (sample std with ddof=1 over sqrt(count); 0 for one seed) and ``count``.
    Runs with a null or non-finite ``gen_error`` are not counted.
    """
    _require(runs, ("L", "sigma", "gen_error", "status"), "runs table")
    L, sigma, gap = _num(runs, "L"), _num(runs, "sigma"), _num(runs, "gen_error")
    keep = _done(runs) & np.isfinite(gap) & np.isfinite(L) & np.isfinite(sigma)
    groups: dict[tuple[int, float], list[float]] = {}
    for l_, s, g in zip(L[keep], sigma[keep], gap[keep], strict=True):
        groups.setdefault((int(l_), _key(s)), []).append(float(g))
    rows = []
    for (l_, s), vals in sorted(groups.items()):
        v = np.asarray(vals)
        sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
        rows.append({"L": l_, "sigma": s, "mean": float(v.mean()), "sem": sem, "count": v.size})
    return rows


def _gen_error_panel(ax: Axes, runs: pa.Table, cells: list[dict[str, Any]], length: int) -> None:
    """One panel of Figure 1/2: seeds as faint dots, mean ± s.e. as error bars."""
    ax.set_title(f"L = {length}", fontsize=10)
    ax.set_xlabel(GEN_ERROR_XLABEL)
    ax.margins(x=0.08)
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--", label="zero gap")
    if not cells:
        _empty_panel(ax, f"no finished runs for L={length}")
        return
    L, sigma, gap = _num(runs, "L"), _num(runs, "sigma"), _num(runs, "gen_error")
    mine = _done(runs) & (L == length) & np.isfinite(gap)
    ax.plot(sigma[mine], gap[mine], ".", color="tab:blue", alpha=0.35, label="single seeds")
    x = [c["sigma"] for c in cells]
    y = [c["mean"] for c in cells]
    counts = [c["count"] for c in cells]
    ax.errorbar(
        x,
        y,
        yerr=[c["sem"] for c in cells],
        fmt="o-",
        color="tab:blue",
        capsize=4,
        lw=1.5,
        label=f"mean ± s.e. (n = {_fmt_range(counts)} seeds)",
    )
    if len(set(counts)) > 1:  # unequal seed counts: say so at each point
        for xi, yi, n in zip(x, y, counts, strict=True):
            ax.annotate(
                f"n={n}",
                (xi, yi),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=7,
                color="0.3",
            )
    ax.legend(fontsize=8, loc="best")


def _gen_error_title(runs: pa.Table, lengths: Sequence[int], source: str) -> str:
    """Figure title: what is plotted, seeds per point, hidden sizes, epochs, data source."""
    status, L = _strs(runs, "status"), _num(runs, "L")
    mine = np.isin(L, np.asarray(lengths, dtype=float))
    done = _done(runs) & mine
    cells = [c for c in aggregate_gen_error(runs) if c["L"] in set(lengths)]
    hidden = _fmt_range(_num(runs, "hidden")[done])
    epochs = _fmt_range(_num(runs, "epochs")[done]) if "epochs" in runs.column_names else "?"
    excluded = Counter(s for s, m in zip(status, mine, strict=True) if m and s != "done")
    dropped = ", ".join(f"{n} {s}" for s, n in sorted(excluded.items()))
    return (
        "Generalization error vs training input noise σ (IMDB, ReLU RNN)\n"
        f"mean ± s.e. over {_fmt_range(c['count'] for c in cells)} seeds per point; "
        f"hidden = {hidden}, epochs = {epochs}\n"
        f"data: {source}, status done" + (f" (excluded: {dropped})" if dropped else "")
    )


def fig_gen_error(
    runs: pa.Table,
    lengths: Sequence[int],
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/runs.parquet",
) -> list[Path]:
    """Generalization error vs σ (mean ± s.e. over seeds), one panel per L in ``lengths``.

    The paper's Figure 1 is ``lengths=[100]``, Figure 2 ``[200, 300]``. A length without
    finished runs gets a panel saying so. Writes ``<path_stem>.png`` and ``.pdf``;
    ``source`` names the data in the title. Returns the written paths.
    """
    _require(runs, RUN_COLUMNS, "runs table")
    if not lengths:
        raise DataError("fig_gen_error needs at least one sequence length L in `lengths`.")
    cells = aggregate_gen_error(runs)
    fig, axes = _new_figure(1, len(lengths), sharex=True, sharey=True)
    for ax, length in zip(axes.flat, lengths, strict=True):
        _gen_error_panel(ax, runs, [c for c in cells if c["L"] == length], int(length))
    axes[0, 0].set_ylabel(GEN_ERROR_YLABEL)
    fig.suptitle(_gen_error_title(runs, lengths, source), fontsize=9)
    return _save(fig, path_stem)


# --------------------------------------------------------------------------- spectrum


def _estimates(lam: np.ndarray, smallest: list[list[float | None] | None]) -> np.ndarray:
    """λ_min where given, else the smallest reported eigenvalue estimate, else NaN."""
    first = [v[0] if v and v[0] is not None else math.nan for v in smallest]
    return np.where(np.isfinite(lam), lam, np.asarray(first, dtype=float))


def _lambda_min_panel(ax: Axes, spectrum: pa.Table) -> None:
    """λ_min vs L: certified values with residual error bars, uncertified ones hollow."""
    L, lam = _num(spectrum, "L"), _num(spectrum, "lambda_min")
    res = np.nan_to_num(np.abs(_num(spectrum, "lambda_min_residual")), nan=0.0)
    cert = np.array([s == "certified" for s in _strs(spectrum, "status")]) & _log_ok(lam)
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
        _empty_panel(ax, "no positive λ_min to draw")


def _low_spectrum_panel(ax: Axes, spectrum: pa.Table) -> None:
    """The ~20 smallest eigenvalues of each L, one line per L (dashed: uncertified)."""
    L, status = _num(spectrum, "L"), _strs(spectrum, "status")
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


def fig_spectrum(
    spectrum: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/spectrum.parquet",
) -> list[Path]:
    """Two panels: λ_min(Σ) vs L (log y, residual error bars) and the low spectrum per L.

    Rows whose ``status`` is not "certified" are drawn hollow / dashed and labelled
    uncertified. Writes ``<path_stem>.png`` and ``.pdf``; returns the written paths.
    """
    _require(spectrum, SPECTRUM_COLUMNS, "spectrum table")
    fig, axes = _new_figure(1, 2)
    if spectrum.num_rows == 0:
        for ax in axes.flat:
            _empty_panel(ax, "no spectrum rows")
    else:
        _lambda_min_panel(axes[0, 0], spectrum)
        _low_spectrum_panel(axes[0, 1], spectrum)
    n = _fmt_range(_num(spectrum, "n")) if "n" in spectrum.column_names else "?"
    fig.suptitle(
        r"Spectrum of the input second moment $\Sigma = E[x x^\top]$ (uncentred, float64)"
        f"\nn = {n} training sequences; data: {source}",
        fontsize=9,
    )
    return _save(fig, path_stem)


# --------------------------------------------------------------------------- bound terms


def _best_rows(bounds: pa.Table) -> pa.Table:
    """The rows of ``bounds`` with ``alpha_best`` true (null counts as false)."""
    _require(bounds, ("run_id", "L", "sigma", "alpha_best"), "bounds table")
    best = [bool(b) for b in bounds.column("alpha_best").to_pylist()]
    return bounds.filter(pa.array(best, type=pa.bool_()))


def _seed_means(best: pa.Table, length: float, term: str) -> tuple[np.ndarray, np.ndarray, int]:
    """σ values, mean over seeds of ``term`` at L = ``length``, and how many values were
    null or non-finite (left out of the means)."""
    L, sigma, vals = _num(best, "L"), _num(best, "sigma"), _num(best, term)
    mine = L == length
    keys = sorted({_key(s) for s in sigma[mine]})
    means, bad = [], 0
    for k in keys:
        v = vals[mine & (np.round(sigma, 9) == k)]
        bad += int((~np.isfinite(v)).sum())
        finite = v[np.isfinite(v)]
        means.append(float(finite.mean()) if finite.size else math.nan)
    return np.asarray(keys), np.asarray(means), bad


def _bound_terms_panel(ax: Axes, best: pa.Table, length: float) -> None:
    """One L: every term's seed mean vs σ on a log axis, plus the trivial level 1."""
    excluded, hidden = 0, []
    for term, (label, colour, marker, ls, lw) in TERM_STYLES.items():
        x, y, bad = _seed_means(best, length, term)
        excluded += bad
        ok = _log_ok(y)
        hidden += [f"{term} at σ={s:g}" for s in x[~ok]]
        ax.plot(x[ok], y[ok], marker=marker, ls=ls, lw=lw, color=colour, label=label, ms=5)
    ax.axhline(1.0, color="0.4", lw=0.8, ls="-.", label="1 (trivial: errors are fractions)")
    ids = _strs(best, "run_id")
    n_models = len({r for r, l_ in zip(ids, _num(best, "L"), strict=True) if l_ == length})
    ax.set_title(f"L = {int(length)} ({n_models} models)", fontsize=10)
    ax.set_yscale("log")
    ax.set_xlabel(SIGMA_XLABEL)
    ax.set_ylabel("term value (error fraction, log scale)")
    notes = [f"{_count(excluded, 'null/inf value')} left out of means"] if excluded else []
    if hidden:
        notes.append(f"≤0/inf, not drawn: {_count(len(hidden), 'point')} (e.g. {hidden[0]})")
    _note(ax, "\n".join(notes))


def fig_bound_terms(
    bounds: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/bounds.parquet",
) -> list[Path]:
    """Bound terms vs σ, one panel per L, log y: mean over seeds of the ``alpha_best`` rows.

    Lines: margin loss, the two Rademacher terms, the noise and confidence terms, the
    Theorem 3 and Theorem 2 totals and Zhang et al.'s order, so the dominant term shows.
    Writes ``<path_stem>.png`` and ``.pdf``; returns the written paths.
    """
    _require(bounds, tuple(TERM_STYLES), "bounds table")
    best = _best_rows(bounds)
    lengths = sorted({x for x in _num(best, "L") if math.isfinite(x)})
    fig, axes = _new_figure(1, max(1, len(lengths)), legend_right=True, sharey=True)
    if not lengths:
        _empty_panel(axes[0, 0], "no alpha_best rows in the bounds table")
    for ax, length in zip(axes.flat, lengths, strict=False):
        _bound_terms_panel(ax, best, length)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(
        "Generalization-bound terms vs training noise σ (log scale; mean over seeds of each "
        "model's best-α row)\n"
        f"data: {source}; Theorem 3 = margin + complexity + noise + confidence terms",
        fontsize=9,
    )
    return _save(fig, path_stem)


# --------------------------------------------------------------------------- Kendall τ


def _joined(bounds: pa.Table, runs: pa.Table) -> dict[str, np.ndarray]:
    """alpha_best bound rows joined on run_id to "done" runs with a finite gen_error.

    One row per model (the first alpha_best row when α ties). Returns the columns
    ``L``, ``sigma``, ``gen_error`` and every ``KENDALL_QUANTITIES`` column as float arrays.
    """
    _require(bounds, KENDALL_QUANTITIES, "bounds table")
    _require(runs, ("run_id", "gen_error", "status"), "runs table")
    gaps = dict(zip(_strs(runs, "run_id"), _num(runs, "gen_error"), strict=True))
    done = {r for r, d in zip(_strs(runs, "run_id"), _done(runs), strict=True) if d}
    best = _best_rows(bounds)
    rows, seen = [], set()
    for i, rid in enumerate(_strs(best, "run_id")):
        if rid in done and rid not in seen and math.isfinite(gaps[rid]):
            rows.append(i)
            seen.add(rid)
    best = best.take(pa.array(rows, type=pa.int64()))
    out = {c: _num(best, c) for c in ("L", "sigma", *KENDALL_QUANTITIES)}
    out["gen_error"] = np.array([gaps[r] for r in _strs(best, "run_id")], dtype=float)
    return out


def _kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Kendall's τ-b and its p-value on the pairs where both values are finite, and the
    number of such pairs. NaN when fewer than two pairs or either side is constant."""
    ok = np.isfinite(x) & np.isfinite(y)
    xs, ys = x[ok], y[ok]
    if xs.size < 2 or np.unique(xs).size < 2 or np.unique(ys).size < 2:
        return math.nan, math.nan, int(xs.size)
    res = stats.kendalltau(xs, ys)
    return float(res.statistic), float(res.pvalue), int(xs.size)


def kendall_table(bounds: pa.Table, runs: pa.Table) -> pa.Table:
    """Kendall's τ between each bound/term column and the measured gen_error, over models.

    One row per quantity (``KENDALL_QUANTITIES``: the four totals first, then the terms):
    ``quantity``, ``tau``, ``p_value``, ``n_models`` (pairs used), ``n_dropped`` (models
    left out for a null/non-finite value) and ``n_joined`` (models after the join).
    The method is stored in the schema metadata under ``method``.
    """
    data = _joined(bounds, runs)
    n_joined = int(data["gen_error"].size)
    cols: dict[str, list[Any]] = {k: [] for k in ("quantity", "tau", "p_value", "n_models")}
    for q in KENDALL_QUANTITIES:
        tau, p, n = _kendall(data[q], data["gen_error"])
        for k, v in zip(cols, (q, tau, p, n), strict=True):
            cols[k].append(v)
    table = pa.table(
        {
            **cols,
            "n_dropped": [n_joined - n for n in cols["n_models"]],
            "n_joined": [n_joined] * len(KENDALL_QUANTITIES),
        }
    )
    return table.replace_schema_metadata({"method": KENDALL_METHOD})


def _scatter_panel(ax: Axes, data: dict[str, np.ndarray], quantity: str) -> None:
    """One quantity vs measured gap: colour = L, marker = σ, τ in the title."""
    y, gap = data[quantity], data["gen_error"]
    lengths, sigmas = _levels(data["L"]), _levels(data["sigma"])
    ok = _log_ok(y) & np.isfinite(gap)
    for i, length in enumerate(lengths):
        for j, s in enumerate(sigmas):
            m = ok & (data["L"] == length) & (np.round(data["sigma"], 9) == s)
            ax.scatter(
                gap[m],
                y[m],
                color=L_COLOURS[i % len(L_COLOURS)],
                alpha=0.8,
                marker=SIGMA_MARKERS[j % len(SIGMA_MARKERS)],
                s=28,
            )
    tau, p, n = _kendall(y, gap)
    stat = f"Kendall τ = {tau:.3f} (p = {p:.2g}, {_count(n, 'model')})"
    ax.set_title(f"{BOUND_TITLES[quantity]}\n{stat}", fontsize=10)  # above the data, never on it
    lost = int((~ok).sum())
    _note(ax, f"{_count(lost, 'model')} not drawn (≤0/null/inf)" if lost else "")
    if ok.any():
        ax.set_yscale("log")
    else:
        _empty_panel(ax, "no positive finite values")
    ax.set_xlabel("measured generalization error (fraction, clean test − noisy train)")
    ax.set_ylabel(f"{quantity} (log scale)")


def _levels(values: np.ndarray) -> list[float]:
    """Sorted distinct finite values (σ rounded like :func:`_key`)."""
    return sorted({_key(v) for v in values if math.isfinite(v)})


def _level_legend(fig: Figure, data: dict[str, np.ndarray]) -> None:
    """Figure legend: one colour per L, one marker per σ."""
    handles = [
        Line2D(
            [], [], color=L_COLOURS[i % len(L_COLOURS)], marker="o", ls="", label=f"L = {int(v)}"
        )
        for i, v in enumerate(_levels(data["L"]))
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
        for j, v in enumerate(_levels(data["sigma"]))
    ]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)


def fig_bound_vs_gap(
    bounds: pa.Table,
    runs: pa.Table,
    path_stem: str | os.PathLike[str],
    *,
    source: str = "results/bounds.parquet + results/runs.parquet",
) -> list[Path]:
    """Bounds vs measured generalization error, one model per point, Kendall τ per panel.

    Panels: Theorem 3, Theorem 2, Theorem 2 with Remark 6's r, Zhang et al.'s order
    (log y); colour = L, marker = σ. The τ printed is the one :func:`kendall_table` gives.
    Writes ``<path_stem>.png`` and ``.pdf``; returns the written paths.
    """
    data = _joined(bounds, runs)
    fig, axes = _new_figure(2, 2, legend_right=True)
    for ax, q in zip(
        axes.flat, ("bound_thm3", "bound_thm2", "bound_thm2_remark6", "zhang_order"), strict=True
    ):
        _scatter_panel(ax, data, q)
    _level_legend(fig, data)
    fig.suptitle(
        "Generalization bounds vs measured generalization error (one point per model, "
        "best α per model)\n"
        f"{data['gen_error'].size} models (status done); data: {source}",
        fontsize=9,
    )
    return _save(fig, path_stem)
