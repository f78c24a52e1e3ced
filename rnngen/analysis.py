"""The statistics of the study: seed aggregates, the U-shape verdicts (and beside them
Holm-adjusted p-values, a paired bootstrap interval of σ* and an equivalence test of "no
rise"), the bound terms at their best α, and Kendall's τ with Holm-adjusted p and the
granulated τ Ψ (pure: numpy, scipy, pyarrow).

Everything here reads the Parquet result tables (rnngen/schemas.py) and returns plain
Python values; the figures and the report only present what this module computes.

Runs are grouped by what they are (rnngen.specs.RunSpec): a *cell* is one (L, σ) of one
experiment, averaged over its seeds (`group_id`); an *experiment* is the grid of runs
that differ only by L, σ and seed (`experiment_id`). Runs of two experiments (another
hidden size, another number of epochs, ...) are never averaged together.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats

from rnngen.bounds import TERM_COLUMNS
from rnngen.errors import DataError
from rnngen.labels import settings_label

SIGNIFICANCE = 0.05
# The paper's λ_min(E xxᵀ) on all training data (its text and Appendix D), by L.
PAPER_LAMBDA_MIN = {100: 4e-4, 200: 1e-4, 300: 2.5e-5}
# Equivalence margin of the no-rise test, in error (a fraction): 0.5 percentage points.
NO_RISE_MARGIN = 0.005
BOOTSTRAP_LEVEL = 0.95
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"

VERDICT_RULE = (
    "For each L, σ* is the σ with the smallest mean over seeds. Two one-sided paired t-tests "
    "across seeds (the same seed at two σ; scipy.stats.ttest_rel, alternative 'less') ask "
    "whether the quantity at σ* is smaller than at σ_min and than at σ_max, the two ends of "
    f"the σ range. **Reproduced** (a U): σ* is interior and both p < {SIGNIFICANCE}. **Not "
    f"reproduced**: σ* is an end and it is smaller than the other end with p < "
    f"{SIGNIFICANCE} (a monotone trend). **Inconclusive**: anything else."
)

# When each part of the verdict was written (from `git log` on this file), for the report's
# history of the rule: (what, commit, UTC time of the commit).
RULE_HISTORY = (
    ("the rule above (VERDICT_RULE)", "7ce6752", "2026-12-02T07:59:05Z"),
    ("the rise-onset test (first σ significantly above σ*)", "dab92fc", "2026-12-02T09:38:58Z"),
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
    return settings_label(experiment_settings(runs, experiment_id))


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


def decide(
    sigma_star: float,
    sigma_min: float,
    sigma_max: float,
    p_vs_min: float,
    p_vs_max: float,
    significance: float = SIGNIFICANCE,
) -> tuple[str, str]:
    """VERDICT_RULE's decision from σ*, the ends of the σ range and the two p-values (raw
    or adjusted): (verdict, reason)."""
    at_min, at_max = sigma_star == sigma_min, sigma_star == sigma_max
    interior = not at_min and not at_max
    if interior and p_vs_min < significance and p_vs_max < significance:
        return REPRODUCED, "σ* is interior and lower than both ends"
    if not interior and (p_vs_max if at_min else p_vs_min) < significance:
        end, other = ("σ_min", "σ_max") if at_min else ("σ_max", "σ_min")
        return NOT_REPRODUCED, f"the minimum is at {end}, below {other}: monotone"
    return INCONCLUSIVE, (
        f"σ* is interior but not lower than both ends at the {100 * significance:g} % level"
        if interior
        else "σ* is an end, but not significantly below the other end"
    )


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
    verdict, reason = decide(star.sigma, lo.sigma, hi.sigma, p_min, p_max, significance)
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


# --------------------------------------------------------------------------- inference
# Added beside the rule after every profile's results had been seen (see the report's
# "history of the rule"): a multiplicity correction, an interval for σ*, and an
# equivalence test that makes "no rise" a finding rather than a failure to find one.


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the input order.

    Sort the m finite p-values ascending, p_(1) ≤ … ≤ p_(m); the adjusted p_(i) is
    max_{j ≤ i} min(1, (m − j + 1) p_(j)). Rejecting where the adjusted p < α keeps the
    family-wise error rate ≤ α under any dependence. NaN (no test) stays NaN and is not
    counted in m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return [float(v) for v in out]


@dataclass(frozen=True)
class SigmaStarInterval:
    """Bootstrap distribution of σ* at one L: seeds resampled with replacement, the same
    resampled seeds at every σ (paired), σ* = the σ of the smallest resampled mean."""

    low: float  # the 2.5 % and 97.5 % quantiles of the resampled σ* (grid values)
    high: float
    share: dict[float, float]  # σ -> fraction of resamples with σ* there
    seeds: int  # seeds present at every σ of this L (the resampled units)
    resamples: int
    exact: bool  # every ordered resample enumerated (no random draw) or Monte Carlo


EXACT_BOOTSTRAP_MAX = 50_000  # enumerate all n^n ordered resamples up to this many
BOOTSTRAP_RESAMPLES = 20_000  # otherwise draw this many, from a fixed seed


def sigma_star_interval(
    cells_of_L: list[Cell], level: float = BOOTSTRAP_LEVEL
) -> SigmaStarInterval:
    """Paired bootstrap interval of σ* over the seeds common to every σ of one L.

    With n seeds there are n^n equally likely ordered resamples: all of them are
    enumerated when n^n ≤ EXACT_BOOTSTRAP_MAX (n ≤ 6), so the interval is exact and
    involves no random draw; beyond that BOOTSTRAP_RESAMPLES are drawn from seed 0.
    Ties go to the smaller σ, as in VERDICT_RULE. Fewer than two common seeds: NaN.
    """
    by_sigma = sorted((c for c in cells_of_L if c.n), key=lambda c: c.sigma)
    seeds = sorted(set.intersection(*(set(c.values) for c in by_sigma))) if by_sigma else []
    sigmas = [c.sigma for c in by_sigma]
    if len(seeds) < 2:
        return SigmaStarInterval(math.nan, math.nan, {}, len(seeds), 0, True)
    values = np.array([[c.values[s] for c in by_sigma] for s in seeds])  # seed × σ
    n = len(seeds)
    exact = n**n <= EXACT_BOOTSTRAP_MAX
    if exact:
        idx = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.int64)
    else:
        idx = np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    star = np.asarray(sigmas)[np.argmin(values[idx].mean(axis=1), axis=1)]
    tail = (1.0 - level) / 2.0
    low, high = (float(np.quantile(star, q, method="inverted_cdf")) for q in (tail, 1 - tail))
    share = {s: float(np.mean(star == s)) for s in sigmas}
    return SigmaStarInterval(low, high, share, n, int(idx.shape[0]), exact)


@dataclass(frozen=True)
class Equivalence:
    """TOST (Schuirmann 1987) on the paired difference d = value(σ_hi) − value(σ_lo).

    p_upper tests H0: d ≥ margin (a rise of the margin or more) against d < margin;
    p_lower tests H0: d ≤ −margin against d > −margin. Equivalence (|d| < margin) is
    max(p_upper, p_lower) < α; no rise of the margin or more is p_upper < α alone.
    """

    sigma_lo: float
    sigma_hi: float
    mean_diff: float
    p_upper: float
    p_lower: float
    pairs: int

    @property
    def p_tost(self) -> float:
        return max(self.p_upper, self.p_lower)


def tost(a: dict[int, float], b: dict[int, float], margin: float) -> tuple[float, float, int]:
    """The two one-sided paired t-tests of TOST on d = b − a over the seeds both have,
    with equivalence margin ±`margin`: (p_upper, p_lower, pairs). NaN when fewer than two
    pairs or no spread in d (as :func:`paired_less`)."""
    seeds = sorted(set(a) & set(b))
    d = np.array([b[s] - a[s] for s in seeds])
    if d.size < 2 or np.ptp(d) == 0.0:
        return math.nan, math.nan, int(d.size)
    upper = stats.ttest_1samp(d - margin, 0.0, alternative="less").pvalue
    lower = stats.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue
    return float(upper), float(lower), int(d.size)


@dataclass(frozen=True)
class NoRise:
    """Is there no rise of `margin` or more past the minimum? (see :func:`no_rise`)"""

    L: int
    quantity: str
    margin: float
    comparisons: tuple[Equivalence, ...]

    @property
    def p(self) -> float:
        """Intersection–union p of "no comparison rises by the margin or more": the
        largest p_upper (the claim needs every comparison; NaN if any is undefined)."""
        ps = [c.p_upper for c in self.comparisons]
        return max(ps) if ps and all(math.isfinite(v) for v in ps) else math.nan

    @property
    def p_tost(self) -> float:
        """Intersection–union p of "flat within ±margin in every comparison"."""
        ps = [c.p_tost for c in self.comparisons]
        return max(ps) if ps and all(math.isfinite(v) for v in ps) else math.nan


def no_rise(
    cells_of_L: list[Cell], quantity: str = "gen_error", margin: float = NO_RISE_MARGIN
) -> NoRise:
    """The rise a U needs, tested for absence: with σ* below σ_max, d = value(σ) −
    value(σ*) for every σ above σ* (no rise above σ*); with σ* = σ_max, d = value(σ_max)
    − value(σ) for every σ below (no rise into σ_max from any σ where a minimum could
    sit). Each comparison is a TOST with margin ±`margin` (:func:`tost`)."""
    by_sigma = sorted((c for c in cells_of_L if c.n), key=lambda c: c.sigma)
    if len(by_sigma) < 2:
        return NoRise(by_sigma[0].L if by_sigma else 0, quantity, margin, ())
    star = min(by_sigma, key=lambda c: (c.mean, c.sigma))
    if star is not by_sigma[-1]:
        pairs = [(star, c) for c in by_sigma if c.sigma > star.sigma]
    else:
        pairs = [(c, star) for c in by_sigma if c is not star]
    comparisons = []
    for lo, hi in pairs:
        upper, lower, n = tost(lo.values, hi.values, margin)
        seeds = sorted(set(lo.values) & set(hi.values))
        diff = float(np.mean([hi.values[s] - lo.values[s] for s in seeds])) if seeds else math.nan
        comparisons.append(Equivalence(lo.sigma, hi.sigma, diff, upper, lower, n))
    return NoRise(star.L, quantity, margin, tuple(comparisons))


@dataclass(frozen=True)
class Inference:
    """One (quantity, L) of an experiment: the rule's verdict on raw p-values, the same
    rule on Holm-adjusted ones, σ*'s bootstrap interval and the no-rise test."""

    verdict: Verdict
    p_vs_min_holm: float
    p_vs_max_holm: float
    holm_verdict: str
    holm_reason: str
    interval: SigmaStarInterval
    no_rise: NoRise
    no_rise_p_holm: float

    @property
    def L(self) -> int:
        return self.verdict.L

    @property
    def quantity(self) -> str:
        return self.verdict.quantity


INFERENCE_QUANTITIES = ("gen_error", "clean_gap")


def inference(
    runs: pa.Table,
    experiment_id: str,
    quantities: tuple[str, ...] = INFERENCE_QUANTITIES,
    margin: float = NO_RISE_MARGIN,
) -> list[Inference]:
    """Every verdict of an experiment with its Holm-adjusted p-values, σ* interval and
    no-rise test. Two Holm families per experiment: the verdict tests (p_vs_min and
    p_vs_max of every quantity and L), and the no-rise tests (one p per quantity and L)."""
    found = []
    for quantity in quantities:
        mine = [c for c in cells(runs, quantity) if c.experiment_id == experiment_id]
        for L in sorted({c.L for c in mine}):
            of_L = [c for c in mine if c.L == L]
            if len(of_L) >= 2:
                found.append(
                    (
                        u_verdict(of_L, quantity),
                        sigma_star_interval(of_L),
                        no_rise(of_L, quantity, margin),
                    )
                )
    verdict_p = holm([p for v, _, _ in found for p in (v.p_vs_min, v.p_vs_max)])
    rise_p = holm([r.p for _, _, r in found])
    out = []
    for k, (v, interval, rise) in enumerate(found):
        p_min, p_max = verdict_p[2 * k], verdict_p[2 * k + 1]
        verdict, reason = decide(v.sigma_star, v.sigma_min, v.sigma_max, p_min, p_max)
        out.append(Inference(v, p_min, p_max, verdict, reason, interval, rise, rise_p[k]))
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


def edge_rows(bounds: pa.Table) -> pa.Table:
    """One row per model: its computed row (status ok) at the largest α of its grid."""
    require(bounds, ("run_id", "alpha", "status"), "bounds table")
    top: dict[str, tuple[float, int]] = {}
    for i, (rid, alpha, status) in enumerate(
        zip(
            strings(bounds, "run_id"),
            column(bounds, "alpha"),
            strings(bounds, "status"),
            strict=True,
        )
    ):
        if status == "ok" and math.isfinite(alpha) and alpha > top.get(rid, (-math.inf, -1))[0]:
            top[rid] = (alpha, i)
    return bounds.take(pa.array(sorted(i for _, i in top.values()), pa.int64()))


def term_cells(bounds: pa.Table, at: str = "best") -> list[TermCell]:
    """Per (experiment, L, σ): each quantity's geometric mean over seeds at each model's
    best α (`at` "best") or at the largest α of its grid ("edge"), and β_W^L (as
    `beta_W_pow_L`, computed per model in log space, may be inf)."""
    best = best_rows(bounds) if at == "best" else edge_rows(bounds)
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
    columns experiment_id (as an object array), L, sigma, seed, gen_error and every
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
    out = {c: column(best, c) for c in ("L", "sigma", "seed", *KENDALL_QUANTITIES)}
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


def kendall_holm(rows: list[dict[str, Any]]) -> list[float]:
    """Holm-adjusted p of each row of :func:`kendall_rows`, in their order: one family per
    experiment, every scope and quantity of its table (undefined τ not counted)."""
    out = [math.nan] * len(rows)
    for eid in {r["experiment_id"] for r in rows}:
        mine = [i for i, r in enumerate(rows) if r["experiment_id"] == eid]
        for i, p in zip(mine, holm([rows[i]["p_value"] for i in mine]), strict=True):
            out[i] = p
    return out


GRANULATED_AXES = ("L", "sigma")


@dataclass(frozen=True)
class Granulated:
    """Jiang et al. (2020)'s granulated Kendall τ of one quantity: per axis, the mean τ
    over the groups of models that differ in that axis alone (same seed and same value
    of every other axis; groups where τ is defined); Ψ is the mean over the axes with a
    defined τ (NaN for an axis that does not vary)."""

    per_axis: dict[str, float]
    groups: dict[str, int]  # axis -> number of groups with a defined τ

    @property
    def psi(self) -> float:
        defined = [t for t in self.per_axis.values() if math.isfinite(t)]
        return float(np.mean(defined)) if defined else math.nan


def granulated_kendall(
    data: dict[str, np.ndarray],
    mask: np.ndarray,
    quantity: str,
    axes: tuple[str, ...] = GRANULATED_AXES,
) -> Granulated:
    """:class:`Granulated` τ of `quantity` against gen_error over the models of `mask` in
    :func:`joined`'s `data`."""
    key = {
        "L": data["L"],
        "sigma": np.array([sigma_key(s) for s in data["sigma"]]),
        "seed": data["seed"],
    }
    per_axis, counts = {}, {}
    for axis in axes:
        others = [k for k in ("L", "sigma", "seed") if k != axis]
        groups: dict[tuple, list[int]] = {}
        for i in np.flatnonzero(mask):
            groups.setdefault(tuple(float(key[k][i]) for k in others), []).append(int(i))
        taus = []
        for idx in groups.values():
            tau, _, _ = kendall(data[quantity][idx], data["gen_error"][idx])
            if math.isfinite(tau):
                taus.append(tau)
        per_axis[axis] = float(np.mean(taus)) if taus else math.nan
        counts[axis] = len(taus)
    return Granulated(per_axis, counts)
