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


# --------------------------------------------------------------------------- inference


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005 (×4 = 0.02), 0.01 (×3 = 0.03), 0.03 (×2 = 0.06), 0.04 (×1 = 0.04 → 0.06:
    # adjusted p never fall along the order); NaN is no test and not counted in m
    p = [0.01, 0.04, 0.03, math.nan, 0.005]
    assert A.holm(p)[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(A.holm(p)[3]) and A.holm(p)[4] == pytest.approx(0.02)
    assert A.holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # capped by the running max
    assert A.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # and at 1
    assert A.holm([]) == []


def test_holm_rejects_no_more_than_bonferroni_allows_and_no_less():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=6)
        adjusted = np.array(A.holm(p))
        assert np.all(adjusted >= p - 1e-15)
        assert np.all((p * 6 < 0.05) <= (adjusted < 0.05))  # Holm is uniformly more powerful


def test_sigma_star_interval_is_the_exact_paired_bootstrap():
    import itertools

    runs = make_runs(gen=u_shape, lengths=(100,))
    cells = A.cells(runs, "gen_error")
    got = A.sigma_star_interval(cells)
    assert got.exact and got.resamples == 5**5 and got.seeds == 5
    # brute force: every ordered resample of the 5 seeds, the same at every σ
    stars = []
    for pick in itertools.product(SEEDS, repeat=5):
        means = [np.mean([c.values[s] for s in pick]) for c in cells]
        stars.append(cells[int(np.argmin(means))].sigma)
    assert got.share[0.2] == pytest.approx(stars.count(0.2) / len(stars))
    assert (got.low, got.high) == (0.2, 0.2)  # the fixture's U is far above seed noise
    assert sum(got.share.values()) == pytest.approx(1.0)


def test_sigma_star_interval_spans_sigmas_that_trade_places_across_seeds():
    def close(L, sigma, seed):  # σ = 0.2 and 0.4 trade places depending on the seed
        return {0.0: 0.05, 0.2: 0.02, 0.4: 0.02}[sigma] + 0.01 * (-1) ** seed * (sigma - 0.3)

    got = A.sigma_star_interval(A.cells(make_runs(gen=close, lengths=(100,)), "gen_error"))
    assert (got.low, got.high) == (0.2, 0.4)
    assert 0 < got.share[0.2] < 1 and got.share[0.0] == 0.0
    one = A.sigma_star_interval([A.Cell("e", 100, 0.0, {0: 1.0})])
    assert math.isnan(one.low) and one.seeds == 1


def test_tost_is_two_shifted_one_sided_t_tests():
    a = {0: 0.03, 1: 0.02, 2: 0.04, 3: 0.05}
    b = {0: 0.031, 1: 0.024, 2: 0.038, 3: 0.052, 9: 1.0}  # seed 9 unpaired
    upper, lower, n = A.tost(a, b, 0.005)
    d = np.array([0.001, 0.004, -0.002, 0.002])
    assert n == 4
    assert upper == pytest.approx(stats.ttest_1samp(d - 0.005, 0, alternative="less").pvalue)
    assert lower == pytest.approx(stats.ttest_1samp(d + 0.005, 0, alternative="greater").pvalue)
    assert math.isnan(A.tost({0: 1.0}, {0: 1.0}, 0.005)[0])


def test_no_rise_compares_the_right_pairs_and_is_shown_for_a_steady_fall():
    fall = A.no_rise(A.cells(make_runs(gen=falling, lengths=(100,)), "gen_error"))
    # σ* = σ_max: σ_max against every smaller σ
    assert [(c.sigma_lo, c.sigma_hi) for c in fall.comparisons] == [(0.0, 0.4), (0.2, 0.4)]
    assert fall.p < 0.05 and fall.p == max(c.p_upper for c in fall.comparisons)
    assert fall.p_tost > 0.05  # a fall of 0.04 is no equivalence within ±0.005
    u = A.no_rise(A.cells(make_runs(gen=u_shape, lengths=(100,)), "gen_error"))
    # σ* interior: every σ above it against σ*; the U rises, so no rise is not shown
    assert [(c.sigma_lo, c.sigma_hi) for c in u.comparisons] == [(0.2, 0.4)]
    assert u.p > 0.5 and u.comparisons[0].mean_diff == pytest.approx(0.03, abs=1e-3)


def test_inference_applies_the_rule_to_holm_adjusted_p():
    def weak_fall(L, sigma, seed):  # σ_max below σ_min at p ≈ 0.03: alone yes, Holm over two no
        spread = 0.00186 * (1, -1, 1, -1, 0)[seed]
        return {0.0: 0.05, 0.2: 0.049, 0.4: 0.048 + spread}[sigma]

    runs = make_runs(gen=weak_fall, gap=weak_fall, lengths=(100,))
    infs = A.inference(runs, A.experiments(runs)[0])
    raw = [i.verdict.p_vs_min for i in infs]
    assert [i.quantity for i in infs] == ["gen_error", "clean_gap"]
    assert (
        all(p < 0.05 for p in raw) and [i.verdict.verdict for i in infs] == [A.NOT_REPRODUCED] * 2
    )
    assert [i.p_vs_min_holm for i in infs] == pytest.approx(A.holm(raw))
    assert all(i.holm_verdict == A.INCONCLUSIVE for i in infs)  # 2 × p > 0.05
    assert [i.no_rise_p_holm for i in infs] == pytest.approx(A.holm([i.no_rise.p for i in infs]))


def test_kendall_holm_is_one_family_per_experiment():
    odd = [run_row(spec(100, s, k, hidden=8), 0.01 * k + s) for s in SIGMAS for k in SEEDS]
    runs = make_runs(extra_rows=odd)
    rows = A.kendall_rows(make_bounds(runs), runs)
    adjusted = A.kendall_holm(rows)
    for eid in {r["experiment_id"] for r in rows}:
        mine = [i for i, r in enumerate(rows) if r["experiment_id"] == eid]
        want = A.holm([rows[i]["p_value"] for i in mine])
        np.testing.assert_allclose([adjusted[i] for i in mine], want)


def test_granulated_tau_averages_within_groups_differing_in_one_axis():
    runs = make_runs()
    data = A.joined(make_bounds(runs), runs)
    mask = np.ones(data["L"].size, dtype=bool)
    g = A.granulated_kendall(data, mask, "noise_term")
    taus = []
    for L in (100, 200):
        for seed in SEEDS:  # the models of one L and seed differ in σ alone
            m = (data["L"] == L) & (data["seed"] == seed)
            taus.append(stats.kendalltau(data["noise_term"][m], data["gen_error"][m]).statistic)
    assert g.per_axis["sigma"] == pytest.approx(np.mean(taus))
    assert g.groups["sigma"] == 10
    assert g.psi == pytest.approx(np.nanmean([g.per_axis["L"], g.per_axis["sigma"]]))
    one_L = A.granulated_kendall(data, data["L"] == 100, "noise_term")
    assert math.isnan(one_L.per_axis["L"]) and one_L.psi == one_L.per_axis["sigma"]


def test_edge_rows_are_each_models_largest_alpha():
    runs = make_runs(lengths=(100,))
    bounds = make_bounds(runs)
    edge = A.edge_rows(bounds)
    assert edge.num_rows == 15 and set(A.column(edge, "alpha")) == {2.0}
    cells = {t.sigma: t for t in A.term_cells(bounds, at="edge")}
    assert cells[0.2].means["alpha"] == 2.0
