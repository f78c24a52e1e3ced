"""``rnngen.analysis``: seed aggregates, the U-shape verdict rule, bound terms, Kendall τ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rnngen import analysis as A
from tests.fixtures import (
    SEEDS,
    SIGMAS,
    falling,
    flat,
    make_bounds,
    make_runs,
    run_row,
    spec,
    u_shape,
)


def verdict_of(gen) -> A.Verdict:
    runs = make_runs(gen=gen, lengths=(100,))
    (verdict,) = [v for v in A.verdicts(runs, A.experiments(runs)[0]) if v.quantity == "gen_error"]
    return verdict


def test_a_u_is_reproduced():
    v = verdict_of(u_shape)
    assert v.sigma_star == 0.2 and v.verdict == A.REPRODUCED
    assert v.p_vs_min < 0.05 and v.p_vs_max < 0.05 and v.pairs == 5


def test_a_monotone_fall_is_not_reproduced():
    v = verdict_of(falling)
    assert v.sigma_star == 0.4 and v.verdict == A.NOT_REPRODUCED
    assert v.p_vs_min < 0.05 and math.isnan(v.p_vs_max)  # σ* is σ_max itself


def test_a_flat_line_is_inconclusive():
    v = verdict_of(flat)
    assert v.verdict == A.INCONCLUSIVE
    assert all(math.isnan(p) or p > 0.05 for p in (v.p_vs_min, v.p_vs_max))


def test_an_interior_minimum_without_significance_is_inconclusive():
    def noisy_u(L, sigma, seed):  # a shallow dip buried in seed noise that changes sign
        return 0.03 - 0.001 * (sigma == 0.2) + 0.01 * (-1) ** (seed + round(sigma * 5))

    v = verdict_of(noisy_u)
    assert v.verdict == A.INCONCLUSIVE


def test_paired_test_is_scipy_ttest_rel_on_the_common_seeds():
    a = {0: 0.01, 1: 0.03, 2: 0.02, 3: 0.05}
    b = {0: 0.04, 1: 0.05, 2: 0.03, 4: 0.9}  # seed 4 unpaired, seed 3 unpaired
    p, n = A.paired_less(a, b)
    expected = stats.ttest_rel([0.01, 0.03, 0.02], [0.04, 0.05, 0.03], alternative="less")
    assert n == 3 and p == pytest.approx(expected.pvalue, rel=1e-12)
    assert math.isnan(A.paired_less({0: 1.0}, {0: 2.0})[0])  # one pair: no test
    assert math.isnan(A.paired_less({0: 1.0, 1: 2.0}, {0: 2.0, 1: 3.0})[0])  # no spread


def test_cells_are_means_and_standard_errors_over_seeds():
    runs = make_runs(lengths=(100,))
    cells = {c.sigma: c for c in A.cells(runs, "gen_error")}
    assert sorted(cells) == list(SIGMAS)
    values = [u_shape(100, 0.2, s) for s in SEEDS]
    assert cells[0.2].mean == pytest.approx(np.mean(values), rel=1e-12)
    assert cells[0.2].sem == pytest.approx(np.std(values, ddof=1) / math.sqrt(5), rel=1e-12)
    assert cells[0.2].n == 5


def test_other_experiments_and_unfinished_runs_are_kept_apart():
    odd = spec(100, 0.2, 0, hidden=8, epochs=1)
    failed = run_row(spec(100, 0.2, 9), 0.5, status="failed")
    runs = make_runs(lengths=(100,), extra_rows=[run_row(odd, 0.9), failed])
    main, other = A.experiments(runs)
    assert other == odd.experiment_id and main != other
    by = {(c.experiment_id, c.sigma): c for c in A.cells(runs, "gen_error")}
    assert by[(main, 0.2)].n == 5  # neither the other experiment nor the failed run
    assert by[(other, 0.2)].values == {0: 0.9}
    assert "hidden 8, 1 epochs" in A.experiment_label(runs, other)


def test_term_cells_are_geometric_means_at_the_best_alpha():
    runs = make_runs(lengths=(100,))
    cells = {t.sigma: t for t in A.term_cells(make_bounds(runs))}
    fs = [1e3 * (1 + s) for s in SEEDS]
    assert cells[0.2].means["rademacher_fs_term"] == pytest.approx(
        math.exp(np.mean(np.log(fs))), rel=1e-12
    )
    assert cells[0.0].means["noise_term"] == 0.0
    assert cells[0.2].means["beta_W_pow_L"] == pytest.approx(1.5**100, rel=1e-9)
    name, orders = cells[0.2].dominant()
    assert name == "rademacher_norm1_term"
    assert orders == pytest.approx(math.log10(1.2e12 / 2e10), rel=1e-9)  # over the noise term
    assert math.isnan(cells[0.2].means["bound_thm2_remark6"])  # β_W ≥ 1: not defined


def test_kendall_rows_cover_each_scope_and_equal_scipy():
    runs = make_runs()
    bounds = make_bounds(runs)
    rows = A.kendall_rows(bounds, runs)
    assert {r["scope"] for r in rows} == {"all", "L=100", "L=200"}
    row = next(r for r in rows if r["scope"] == "L=100" and r["quantity"] == "noise_term")
    best = A.best_rows(bounds).to_pylist()
    pairs = [(b["noise_term"], b["gen_error"]) for b in best if b["L"] == 100]
    expected = stats.kendalltau(*zip(*pairs, strict=True))
    assert row["tau"] == pytest.approx(expected.statistic, rel=1e-12)
    assert row["n_models"] == len(pairs) == 15


def test_geometric_mean_edge_cases():
    assert A.geometric_mean(np.array([1e-3, 1e3])) == pytest.approx(1.0)
    assert A.geometric_mean(np.array([2.0, math.inf])) == math.inf
    assert math.isnan(A.geometric_mean(np.array([0.0, 1.0])))
    assert math.isnan(A.geometric_mean(np.array([])))


def test_rise_onset_is_the_first_sigma_significantly_above_the_minimum():
    runs = make_runs(gen=u_shape, lengths=(100,))
    cells = [c for c in A.cells(runs, "gen_error")]
    sigma, p = A.rise_onset(cells)
    assert sigma == 0.4 and p < 0.05
    falling_cells = A.cells(make_runs(gen=falling, lengths=(100,)), "gen_error")
    assert A.rise_onset(falling_cells) is None  # σ* is the largest σ: nothing above it
