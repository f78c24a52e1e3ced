"""The statistics of the study: seed aggregates, the U-shape verdicts, the bound terms at
their best α, and Kendall's τ (pure: numpy, scipy, pyarrow).

Everything here reads the Parquet result tables (rnngen/schemas.py) and returns plain
Python values; the figures and the report only present what this module computes.

Runs are grouped by what they are (rnngen.specs.RunSpec): a *cell* is one (L, σ) of one
experiment, averaged over its seeds (`group_id`); an *experiment* is the grid of runs
that differ only by L, σ and seed (`experiment_id`). Runs of two experiments (another
hidden size, another number of epochs, ...) are never averaged together.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats

from rnngen.bounds import TERM_COLUMNS
from rnngen.errors import DataError

SIGNIFICANCE = 0.05
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"

VERDICT_RULE = (
    "For each L, σ* is the σ with the smallest mean over seeds. Two one-sided paired t-tests "
    "across seeds (the same seed at two σ; scipy.stats.ttest_rel, alternative 'less') ask "
    "whether the quantity at σ* is smaller than at σ_min and than at σ_max, the two ends of "
    f"the σ range. **Reproduced** (a U): σ* is interior and both p < {SIGNIFICANCE}. **Not "
    f"reproduced**: σ* is an end and it is smaller than the other end with p < "
    f"{SIGNIFICANCE} (a monotone trend). **Inconclusive**: anything else."
)

# The additive terms of Theorem 3; the bound is their sum.
THM3_TERMS = (
    "margin_loss",
    "rademacher_fs_term",
    "rademacher_norm1_term",
    "noise_term",
    "confidence_term",
)
BOUND_TOTALS = ("bound_thm3", "bound_thm2", "bound_thm2_remark6", "zhang_order")
KENDALL_QUANTITIES = BOUND_TOTALS + tuple(c for c in TERM_COLUMNS if c not in BOUND_TOTALS)
KENDALL_METHOD = (
    "scipy.stats.kendalltau (tau-b, two-sided p) between each quantity and gen_error, over the "
    "models of one experiment (scope 'all') and of each L; one row per model: its best-α bounds "
    "row joined on run_id to its run (status done); pairs with a null or non-finite value "
    "dropped"
)


# --------------------------------------------------------------------------- table access


def column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return np.asarray(table.column(name).cast(pa.float64()).to_numpy(), dtype=np.float64)


def strings(table: pa.Table, name: str) -> list[str]:
    """A column as Python strings (null -> "")."""
    return ["" if v is None else str(v) for v in table.column(name).to_pylist()]


def require(table: pa.Table, names: tuple[str, ...] | list[str], what: str) -> None:
    """Raise :class:`DataError` naming the columns of ``table`` that are missing."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {missing}; regenerate it with this version "
            "of rnngen (the stage that writes it skips finished work)."
        )


def sigma_key(sigma: float) -> float:
    """σ as a grouping key: rounding absorbs float noise such as 0.30000000000000004."""
    return round(float(sigma), 9)


def done(runs: pa.Table) -> pa.Table:
    """The runs with status 'done' (finished, finite)."""
    return runs.filter(pa.array([s == "done" for s in strings(runs, "status")], pa.bool_()))


# --------------------------------------------------------------------------- experiments


def experiments(runs: pa.Table) -> list[str]:
    """experiment_ids of the runs, the one with most finished runs first (ties: by id)."""
    require(runs, ("experiment_id", "status"), "runs table")
    counts = Counter(strings(done(runs), "experiment_id"))
    for eid in strings(runs, "experiment_id"):
        counts.setdefault(eid, 0)
    return sorted(counts, key=lambda e: (-counts[e], e))


def of_experiment(table: pa.Table, experiment_id: str) -> pa.Table:
    return table.filter(
        pa.array([e == experiment_id for e in strings(table, "experiment_id")], pa.bool_())
    )


# Spec fields that describe an experiment in a label, in this order.
_LABEL_FIELDS = (
    "hidden",
    "epochs",
    "optimizer",
    "lr",
    "batch_size",
    "clip_grad_norm",
    "weight_decay",
    "init",
    "w_row_sum_max",
    "n_train",
    "n_test",
)


def experiment_settings(runs: pa.Table, experiment_id: str) -> dict[str, Any]:
    """The training settings all runs of an experiment share (from one of its specs)."""
    rows = of_experiment(runs, experiment_id).to_pylist()
    if not rows:
        raise DataError(f"no runs of experiment {experiment_id}")
    spec = json.loads(rows[0]["spec_json"])
    return {k: spec.get(k) for k in _LABEL_FIELDS}


def experiment_label(runs: pa.Table, experiment_id: str) -> str:
    """'hidden 128, 10 epochs, adam lr 0.0005, batch 64, clip 5, ...' for a legend."""
    s = experiment_settings(runs, experiment_id)
    parts = [
        f"hidden {s['hidden']}",
        f"{s['epochs']} epochs",
        f"{s['optimizer']} lr {s['lr']:g}",
        f"batch {s['batch_size']}",
    ]
    if s["w_row_sum_max"] is not None:
        parts.append(f"β_W ≤ {s['w_row_sum_max']:g}")
    if s["n_train"] is not None:
        parts.append(f"{s['n_train']} train reviews")
    return ", ".join(parts)


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One (L, σ) of one experiment: a quantity's value per seed."""

    experiment_id: str
    L: int
    sigma: float
    values: dict[int, float] = field(default_factory=dict)  # seed -> value

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def sem(self) -> float:
        """Standard error of the mean: sample std (ddof 1) / sqrt(n); NaN for one seed."""
        if self.n < 2:
            return math.nan
        return float(np.std(list(self.values.values()), ddof=1) / math.sqrt(self.n))


def cells(runs: pa.Table, quantity: str = "gen_error") -> list[Cell]:
    """Per (experiment, L, σ): the quantity of every finished run with a finite value,
    by seed; sorted by experiment (most runs first), L and σ."""
    require(runs, ("experiment_id", "L", "sigma", "seed", "status", quantity), "runs table")
    finished = done(runs)
    groups: dict[tuple[str, int, float], dict[int, float]] = {}
    for eid, L, s, seed, v in zip(
        strings(finished, "experiment_id"),
        column(finished, "L"),
        column(finished, "sigma"),
        column(finished, "seed"),
        column(finished, quantity),
        strict=True,
    ):
        if math.isfinite(v):
            groups.setdefault((eid, int(L), sigma_key(s)), {})[int(seed)] = float(v)
    order = {e: i for i, e in enumerate(experiments(runs))}
    return [
        Cell(e, L, s, vals)
        for (e, L, s), vals in sorted(
            groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2])
        )
    ]


# --------------------------------------------------------------------------- verdicts


def paired_less(a: dict[int, float], b: dict[int, float]) -> tuple[float, int]:
    """One-sided paired t-test of a < b over the seeds both have: (p, number of pairs).

    NaN when fewer than two pairs, or when every pair differs by the same amount (the
    t statistic is undefined: no spread to judge a difference against).
    """
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return math.nan, len(seeds)
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    if np.ptp(x - y) == 0.0:
        return math.nan, len(seeds)
    return float(stats.ttest_rel(x, y, alternative="less").pvalue), len(seeds)


@dataclass(frozen=True)
class Verdict:
    """The U-shape verdict of one quantity at one L (see VERDICT_RULE)."""

    L: int
    quantity: str
    sigma_star: float
    mean_star: float
    sigma_min: float
    sigma_max: float
    p_vs_min: float  # H1: value at σ* < value at σ_min (NaN when σ* = σ_min)
    p_vs_max: float  # H1: value at σ* < value at σ_max (NaN when σ* = σ_max)
    pairs: int  # seeds paired in the tests (the fewer of the two)
    verdict: str
    reason: str


def u_verdict(
    cells_of_L: list[Cell], quantity: str = "gen_error", significance: float = SIGNIFICANCE
) -> Verdict:
    """Apply VERDICT_RULE to the cells of one experiment at one L (at least two σ)."""
    by_sigma = sorted((c for c in cells_of_L if c.n), key=lambda c: c.sigma)
    if len(by_sigma) < 2 or len({c.L for c in by_sigma}) != 1:
        raise DataError(
            "a U-shape verdict needs cells of one L at two σ or more, "
            f"got {[(c.L, c.sigma) for c in cells_of_L]}."
        )
    lo, hi = by_sigma[0], by_sigma[-1]
    star = min(by_sigma, key=lambda c: (c.mean, c.sigma))
    p_min, n_min = paired_less(star.values, lo.values) if star is not lo else (math.nan, lo.n)
    p_max, n_max = paired_less(star.values, hi.values) if star is not hi else (math.nan, hi.n)
    interior = star is not lo and star is not hi
    if interior and p_min < significance and p_max < significance:
        verdict, reason = REPRODUCED, "σ* is interior and lower than both ends"
    elif not interior and (p_max if star is lo else p_min) < significance:
        end = "σ_min" if star is lo else "σ_max"
        other = "σ_max" if star is lo else "σ_min"
        verdict, reason = NOT_REPRODUCED, f"the minimum is at {end}, below {other}: monotone"
    else:
        verdict = INCONCLUSIVE
        reason = (
            "σ* is interior but not lower than both ends at the 5 % level"
            if interior
            else "σ* is an end, but not significantly below the other end"
        )
    return Verdict(
        star.L,
        quantity,
        star.sigma,
        star.mean,
        lo.sigma,
        hi.sigma,
        p_min,
        p_max,
        min(n_min, n_max),
        verdict,
        reason,
    )


def rise_onset(
    cells_of_L: list[Cell], significance: float = SIGNIFICANCE
) -> tuple[float, float] | None:
    """Where the quantity starts to rise past its minimum: the smallest σ above σ* whose
    value is larger than at σ* by a one-sided paired t-test at `significance`, with its p;
    None when no σ above σ* is (or σ* is the largest σ)."""
    by_sigma = sorted((c for c in cells_of_L if c.n), key=lambda c: c.sigma)
    if len(by_sigma) < 2:
        return None
    star = min(by_sigma, key=lambda c: (c.mean, c.sigma))
    for cell in by_sigma:
        if cell.sigma > star.sigma:
            p, _ = paired_less(star.values, cell.values)
            if p < significance:
                return cell.sigma, p
    return None


def verdicts(
    runs: pa.Table, experiment_id: str, quantities: tuple[str, ...] = ("gen_error", "clean_gap")
) -> list[Verdict]:
    """The verdict of each quantity at each L of an experiment with two σ or more."""
    out = []
    for quantity in quantities:
        mine = [c for c in cells(runs, quantity) if c.experiment_id == experiment_id]
        for L in sorted({c.L for c in mine}):
            of_L = [c for c in mine if c.L == L]
            if len(of_L) >= 2:
                out.append(u_verdict(of_L, quantity))
    return out


# --------------------------------------------------------------------------- bounds


def best_rows(bounds: pa.Table) -> pa.Table:
    """One row per model: its computed row at the best α (`alpha_best`, status ok)."""
    require(bounds, ("run_id", "alpha_best", "status"), "bounds table")
    keep, seen = [], set()
    for i, (rid, best, status) in enumerate(
        zip(
            strings(bounds, "run_id"),
            bounds.column("alpha_best").to_pylist(),
            strings(bounds, "status"),
            strict=True,
        )
    ):
        if best and status == "ok" and rid not in seen:
            keep.append(i)
            seen.add(rid)
    return bounds.take(pa.array(keep, pa.int64()))


def geometric_mean(values: np.ndarray) -> float:
    """exp(mean(log v)) over the values; NaN if any is non-positive or NaN, inf if any is
    inf (a bound term can overflow float64: its mean is then inf too)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or np.any(np.isnan(v)) or np.any(v <= 0):
        return math.nan
    if np.any(np.isinf(v)):
        return math.inf
    return float(np.exp(np.mean(np.log(v))))


@dataclass(frozen=True)
class TermCell:
    """Geometric means over seeds of the bound quantities of one (experiment, L, σ)."""

    experiment_id: str
    L: int
    sigma: float
    n: int
    means: dict[str, float]

    def dominant(self) -> tuple[str, float]:
        """The largest additive term of Theorem 3, and by how many orders of magnitude
        (log10 of its ratio) it exceeds the next largest; inf when all others are 0."""
        terms = sorted(((self.means[t], t) for t in THM3_TERMS), reverse=True)
        (top, name), (second, _) = terms[0], terms[1]
        if not math.isfinite(top):
            return name, math.inf
        return name, math.log10(top / second) if second > 0 else math.inf


TERM_QUANTITIES = (
    *THM3_TERMS,
    "bound_thm3",
    "bound_thm2",
    "bound_thm2_remark6",
    "zhang_order",
    "beta_U",
    "beta_V",
    "beta_W",
    "Lambda",
    "r_fs",
    "r_fr",
    "alpha",
)


def term_cells(bounds: pa.Table) -> list[TermCell]:
    """Per (experiment, L, σ): each quantity's geometric mean over seeds at the best α,
    and β_W^L (as `beta_W_pow_L`, computed per model in log space, may be inf)."""
    best = best_rows(bounds)
    require(best, ("experiment_id", "L", "sigma", *TERM_QUANTITIES), "bounds table")
    keys = list(
        zip(
            strings(best, "experiment_id"),
            column(best, "L").astype(int),
            (sigma_key(s) for s in column(best, "sigma")),
            strict=True,
        )
    )
    cols = {q: column(best, q) for q in TERM_QUANTITIES}
    with np.errstate(over="ignore"):
        cols["beta_W_pow_L"] = np.exp(column(best, "L") * np.log(cols["beta_W"]))
    out = []
    for key in sorted(set(keys), key=lambda k: (k[0], k[1], k[2])):
        mask = np.array([k == key for k in keys])
        means = {q: geometric_mean(v[mask]) for q, v in cols.items()}
        means["noise_term"] = (
            geometric_mean(cols["noise_term"][mask]) if key[2] > 0 else 0.0
        )  # exactly 0 without noise
        out.append(TermCell(key[0], int(key[1]), key[2], int(mask.sum()), means))
    return out


# --------------------------------------------------------------------------- Kendall τ


def kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Kendall's τ-b and its two-sided p on the pairs where both are finite, with their
    number; NaN when fewer than two pairs or either side is constant."""
    ok = np.isfinite(x) & np.isfinite(y)
    xs, ys = x[ok], y[ok]
    if xs.size < 2 or np.unique(xs).size < 2 or np.unique(ys).size < 2:
        return math.nan, math.nan, int(xs.size)
    res = stats.kendalltau(xs, ys)
    return float(res.statistic), float(res.pvalue), int(xs.size)


def joined(bounds: pa.Table, runs: pa.Table) -> dict[str, np.ndarray]:
    """Best-α bound rows joined on run_id to finished runs with a finite gen_error: the
    columns experiment_id (as an object array), L, sigma, gen_error and every
    KENDALL_QUANTITIES column, one entry per model."""
    require(runs, ("run_id", "gen_error", "status"), "runs table")
    best = best_rows(bounds)
    require(best, KENDALL_QUANTITIES, "bounds table")
    finished = done(runs)
    gaps = dict(zip(strings(finished, "run_id"), column(finished, "gen_error"), strict=True))
    rows = [
        i
        for i, rid in enumerate(strings(best, "run_id"))
        if rid in gaps and math.isfinite(gaps[rid])
    ]
    best = best.take(pa.array(rows, pa.int64()))
    out = {c: column(best, c) for c in ("L", "sigma", *KENDALL_QUANTITIES)}
    out["experiment_id"] = np.array(strings(best, "experiment_id"), dtype=object)
    out["gen_error"] = np.array([gaps[r] for r in strings(best, "run_id")], dtype=float)
    return out


def kendall_rows(bounds: pa.Table, runs: pa.Table) -> list[dict[str, Any]]:
    """Kendall's τ of every bound and term against gen_error, per experiment, over all its
    models (scope 'all') and within each L (scope 'L=100', ...): rows of schemas.KENDALL."""
    data = joined(bounds, runs)
    out = []
    for eid in sorted(set(data["experiment_id"])):
        mine = data["experiment_id"] == eid
        scopes = [("all", mine)] + [
            (f"L={int(L)}", mine & (data["L"] == L)) for L in sorted(set(data["L"][mine]))
        ]
        for scope, mask in scopes:
            n_joined = int(mask.sum())
            for q in KENDALL_QUANTITIES:
                tau, p, n = kendall(data[q][mask], data["gen_error"][mask])
                out.append(
                    {
                        "experiment_id": eid,
                        "scope": scope,
                        "quantity": q,
                        "tau": tau,
                        "p_value": p,
                        "n_models": n,
                        "n_dropped": n_joined - n,
                        "n_joined": n_joined,
                    }
                )
    return out
