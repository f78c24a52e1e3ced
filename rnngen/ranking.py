"""How well a generalization measure ranks models: Kendall's τ and the granulated τ, Ψ.

The protocol of Jiang et al. (ICLR 2020, "Fantastic generalization measures and where to
find them", §4) as STUDY.md §8 restates it (pure: numpy and scipy):

- τ: Kendall's rank correlation of a measure with the target (the generalization gap)
  over all models, by `scipy.stats.kendalltau` (τ-b, which handles ties).
- ψ_axis, for each hyperparameter axis whose value varies: group the models that agree on
  every *other* axis (and on every `match` key, e.g. the seed), take τ within each group,
  average over the groups. Only the varied axis moves within a group, so ψ_axis says
  whether the measure follows the target *because of that axis*; a measure that merely
  copies another axis's value is constant within these groups and scores 0.
- Ψ = the mean of ψ_axis over the axes.
- 95 % intervals for τ and Ψ from a bootstrap over models: resample the models with
  replacement (seeded), recompute τ and Ψ, take the 2.5th and 97.5th percentiles.

Conventions, stated once:

- Models where the measure or the target is not finite are dropped (per measure), before
  grouping and before the bootstrap; `n_models` counts the rest.
- A group with fewer than 2 models, or whose target is constant (nothing to rank), is
  skipped, counted in `GranulatedTau.skipped`. A measure constant within a group ranks
  none of its pairs: its τ there is 0, what Jiang et al.'s sign-based τ gives (scipy's τ-b
  would be undefined). ψ_axis is NaN when an axis has no usable group; Ψ averages the axes
  with a defined ψ.
- τ over all models is NaN when the target is constant or fewer than 2 models remain,
  and 0 when the measure is constant.
- Within one bootstrap resample a model drawn twice forms a tied pair (τ-b ignores it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rnngen.errors import ParameterError

N_RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def kendall_tau(measure: ArrayLike, target: ArrayLike) -> float:
    """Kendall's τ-b of `measure` against `target` (scipy.stats.kendalltau) over the pairs
    where both are finite: NaN with under 2 such models or a constant target, 0 for a
    constant measure (it orders no pair)."""
    x, y = _finite_pairs(measure, target)
    if x.size < 2 or np.ptp(y) == 0.0:
        return math.nan
    if np.ptp(x) == 0.0:
        return 0.0
    if x.size > PAIRWISE_MAX:
        from scipy import stats  # here: the pairwise path below needs no scipy import

        return float(stats.kendalltau(x, y).statistic)
    return _tau_b_pairwise(x, y)


# Up to this many models τ-b is computed over the explicit pairs (below); above, by scipy.
PAIRWISE_MAX = 400


@functools.lru_cache(maxsize=512)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def _tau_b_pairwise(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b from its definition (Kendall 1945; scipy.stats.kendalltau's `b`):
    (n_c − n_d) / sqrt((n₀ − n₁)(n₀ − n₂)), n₀ − n₁ and n₀ − n₂ the pairs untied in x and
    in y. Written out because the granulated τ and its bootstrap take τ of ~10⁶ groups of
    2–50 models, where scipy's fixed cost per call (~0.5 ms, for sorting-based code meant
    for long vectors) is 20–50× the arithmetic; a test checks it against scipy with ties."""
    i, j = _pairs(x.size)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied = float(np.count_nonzero(dx)) * float(np.count_nonzero(dy))
    return float(np.dot(dx, dy) / math.sqrt(untied)) if untied > 0 else math.nan


def _finite_pairs(measure: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(measure, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ParameterError(f"measure has {x.size} values but target {y.size}; align them.")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


@dataclass(frozen=True)
class GranulatedTau:
    """Ψ and its parts: ψ per varied axis, and how many groups each used and skipped."""

    psi: float
    per_axis: dict[str, float]
    groups: dict[str, int] = field(default_factory=dict)  # groups with a τ, per axis
    skipped: dict[str, int] = field(default_factory=dict)  # groups of < 2 or constant target


def _keys(columns: Mapping[str, Sequence[Any]], n: int) -> dict[str, list[Any]]:
    """Each column as a list of n hashable values, or a ParameterError naming it."""
    out = {}
    for name, values in columns.items():
        vals = list(np.asarray(values, dtype=object).ravel())
        if len(vals) != n:
            raise ParameterError(f"axis {name!r} has {len(vals)} values for {n} models.")
        out[name] = [v.item() if isinstance(v, np.generic) else v for v in vals]
    return out


def granulated_tau(
    measure: ArrayLike,
    target: ArrayLike,
    axes: Mapping[str, Sequence[Any]],
    match: Mapping[str, Sequence[Any]] | None = None,
) -> GranulatedTau:
    """Jiang et al.'s granulated Kendall τ, Ψ (their §4, eq. for ψ_i and Ψ).

    `axes`: hyperparameter name -> its value for every model (e.g. {"L": ..., "sigma": ...}).
    Axes with one value only are not scored. `match`: further keys a group must share but
    which are not scored (e.g. {"seed": ...} pairs the same seed across the varied axis).
    Values are matched exactly: round float axes first (e.g. `rnngen.analysis.sigma_key`).
    Models with a non-finite measure or target are dropped first.
    """
    x = np.asarray(measure, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ParameterError(f"measure has {x.size} values but target {y.size}; align them.")
    cols = _keys(axes, x.size)
    extra = _keys(match or {}, x.size)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    per_axis, used, skipped = {}, {}, {}
    for axis in cols:
        if len({cols[axis][i] for i in ok}) < 2:
            continue  # this axis does not vary among these models: nothing to score
        others = [a for a in cols if a != axis]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i in ok:
            key = tuple(cols[a][i] for a in others) + tuple(extra[k][i] for k in extra)
            groups.setdefault(key, []).append(int(i))
        taus = []
        for members in groups.values():
            tau = kendall_tau(x[members], y[members])
            if not math.isnan(tau):
                taus.append(tau)
        used[axis], skipped[axis] = len(taus), len(groups) - len(taus)
        per_axis[axis] = float(np.mean(taus)) if taus else math.nan
    defined = [v for v in per_axis.values() if not math.isnan(v)]
    psi = float(np.mean(defined)) if defined else math.nan
    return GranulatedTau(psi, per_axis, used, skipped)


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval and how many of its resamples gave a number."""

    lo: float
    hi: float
    valid: int  # resamples where the statistic was defined
    resamples: int


def bootstrap_intervals(
    measure: ArrayLike,
    target: ArrayLike,
    axes: Mapping[str, Sequence[Any]],
    match: Mapping[str, Sequence[Any]] | None = None,
    *,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> tuple[Interval, Interval]:
    """Percentile bootstrap intervals of (τ, Ψ): `n_resamples` resamples of the models
    (with replacement, numpy default_rng(seed)); each resample recomputes both statistics
    on the same drawn models. Models with a non-finite measure or target are dropped first.
    Cost: (1 + groups) scipy Kendall τ calls per resample (~0.5 ms each)."""
    if n_resamples < 1 or not 0.0 < level < 1.0:
        raise ParameterError(
            f"need n_resamples >= 1 and 0 < level < 1; got {n_resamples}, {level}."
        )
    x = np.asarray(measure, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    cols, extra = _keys(axes, x.size), _keys(match or {}, x.size)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    rng = np.random.default_rng(seed)
    taus, psis = [], []
    for _ in range(n_resamples):
        idx = ok[rng.integers(0, ok.size, size=ok.size)] if ok.size else ok
        taus.append(kendall_tau(x[idx], y[idx]))
        sub_axes = {a: [cols[a][i] for i in idx] for a in cols}
        sub_match = {k: [extra[k][i] for i in idx] for k in extra}
        psis.append(granulated_tau(x[idx], y[idx], sub_axes, sub_match).psi)
    return _interval(taus, level, n_resamples), _interval(psis, level, n_resamples)


def _interval(values: list[float], level: float, resamples: int) -> Interval:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(math.nan, math.nan, 0, resamples)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(v, [tail, 100.0 - tail])
    return Interval(float(lo), float(hi), int(v.size), resamples)


def ranking_table(
    measures: Mapping[str, ArrayLike],
    target: ArrayLike,
    axes: Mapping[str, Sequence[Any]],
    match: Mapping[str, Sequence[Any]] | None = None,
    *,
    target_name: str = "gen_error",
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> list[dict[str, Any]]:
    """One row per measure: measure, tau, tau_lo, tau_hi, psi, psi_lo, psi_hi, psi_<axis>
    for every axis, n_models, n_resamples, target; sorted by Ψ, largest first (NaN last),
    after every measure with values for at least half as many models as the best-covered.

    `measures`: name -> its value for every model, aligned with `target` and the `axes`
    columns (one entry per model). Every measure is bootstrapped with the same seed, so
    all rows resample the same models when they share their finite models.
    """
    rows = []
    for name, values in measures.items():
        x = np.asarray(values, dtype=np.float64).ravel()
        y = np.asarray(target, dtype=np.float64).ravel()
        g = granulated_tau(x, y, axes, match)
        t_int, p_int = bootstrap_intervals(
            x, y, axes, match, n_resamples=n_resamples, level=level, seed=seed
        )
        row: dict[str, Any] = {
            "measure": name,
            "tau": kendall_tau(x, y),
            "tau_lo": t_int.lo,
            "tau_hi": t_int.hi,
            "psi": g.psi,
            "psi_lo": p_int.lo,
            "psi_hi": p_int.hi,
        }
        row.update({f"psi_{axis}": g.per_axis.get(axis, math.nan) for axis in axes})
        row.update(
            {
                "n_models": int(np.sum(np.isfinite(x) & np.isfinite(y))),
                "n_resamples": n_resamples,
                "target": target_name,
            }
        )
        rows.append(row)
    # A Ψ over a small part of the models is not comparable with one over all of them (a
    # bound defined on 15 of 285 pooled models would otherwise rank first): a measure with
    # values for fewer than half as many models as the best-covered measure ranks after
    # every other.
    most = max((r["n_models"] for r in rows), default=0)
    return sorted(
        rows,
        key=lambda r: (
            2 * r["n_models"] < most,
            math.inf if math.isnan(r["psi"]) else -r["psi"],
        ),
    )


def measure_columns(
    rows: Sequence[Mapping[str, Any]], run_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """Measure rows (rnngen.measures) -> measure name -> values aligned with `run_ids`;
    a run without an 'ok' row for a measure gets NaN (dropped by the ranking)."""
    out: dict[str, np.ndarray] = {}
    where = {rid: i for i, rid in enumerate(run_ids)}
    for row in rows:
        name = str(row["measure"])
        col = out.setdefault(name, np.full(len(run_ids), np.nan))
        i = where.get(str(row["run_id"]))
        if i is not None and row.get("status") == "ok":
            col[i] = float(row["value"])
    return out
