"""``rnngen.ranking``: Kendall's τ, the granulated τ Ψ and their bootstrap, by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from rnngen import ranking as R


def test_tau_is_scipys_kendall_tau_b() -> None:
    # pairs of (x, y) = (1,1) (2,3) (3,2) (4,4): 5 concordant, 1 discordant -> 4/6
    assert R.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 30).astype(float), rng.normal(size=30)  # ties in x
    assert R.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


@pytest.mark.parametrize("n", [2, 3, 5, 17, 120, R.PAIRWISE_MAX, R.PAIRWISE_MAX + 1])
def test_pairwise_tau_b_equals_scipy_with_ties_in_both(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        x = rng.integers(0, 3, n).astype(float)  # heavy ties in x and in y
        y = rng.integers(0, 4, n).astype(float)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        expected = stats.kendalltau(x, y, variant="b").statistic
        assert R.kendall_tau(x, y) == pytest.approx(expected, abs=1e-12)
    # all pairs tied in the measure but one: τ-b from its definition by hand
    assert R.kendall_tau([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(2 / math.sqrt(2 * 3))


def test_tau_conventions_for_constant_and_non_finite_values() -> None:
    assert R.kendall_tau([5, 5, 5], [1, 2, 3]) == 0.0  # a constant measure orders no pair
    assert math.isnan(R.kendall_tau([1, 2, 3], [4, 4, 4]))  # nothing to rank
    assert math.isnan(R.kendall_tau([1.0], [2.0]))
    # non-finite models are dropped: what remains is perfectly concordant
    assert R.kendall_tau([1, np.nan, 3, 4, np.inf], [1, 9, 2, 3, 0]) == 1.0


def test_psi_on_two_axes_of_two_values_by_hand() -> None:
    """Models (a, b) = (0,0) (0,1) (1,0) (1,1); target g = 1, 2, 3, 4; measure μ = 1, 0, 3, 5.

    Axis a (groups share b): b=0: μ 1->3 with g 1->3, τ = 1; b=1: μ 0->5 with g 2->4, τ = 1;
    ψ_a = 1. Axis b (groups share a): a=0: μ 1->0 with g 1->2, τ = -1; a=1: μ 3->5 with
    g 3->4, τ = 1; ψ_b = 0. Ψ = (1 + 0)/2 = 0.5. Over all models: the pair (0,0)-(0,1) is
    discordant, the other 5 concordant: τ = (5 - 1)/6 = 2/3.
    """
    a, b = [0, 0, 1, 1], [0, 1, 0, 1]
    g, mu = [1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 3.0, 5.0]
    out = R.granulated_tau(mu, g, {"a": a, "b": b})
    assert out.per_axis == {"a": 1.0, "b": 0.0}
    assert out.psi == 0.5
    assert out.groups == {"a": 2, "b": 2} and out.skipped == {"a": 0, "b": 0}
    assert R.kendall_tau(mu, g) == pytest.approx(2 / 3)


def test_a_measure_copying_one_axis_gets_tau_but_no_psi_on_the_other_axis() -> None:
    """3 x 3 grid, target a + 2b: a measure equal to a follows the target over all models
    and along a, but is constant within every group that varies b only: ψ_b = 0."""
    grid = list(itertools.product(range(3), range(3)))
    a, b = [p[0] for p in grid], [p[1] for p in grid]
    target = [x + 2 * y for x, y in grid]
    copy_a = [float(x) for x in a]
    assert R.kendall_tau(copy_a, target) > 0.0
    out = R.granulated_tau(copy_a, target, {"a": a, "b": b})
    assert out.per_axis["a"] == 1.0
    assert out.per_axis["b"] == 0.0
    assert out.psi == 0.5


def test_groups_of_one_model_or_constant_target_are_skipped_and_counted() -> None:
    # axis a: group b=0 has models 0,1 (usable); group b=1 has one model; group b=2 has a
    # constant target. Axis b: group a=0 {0 (b=0), 2 (b=1)}; group a=1 {1 (b=0), 3 (b=2)}.
    a = [0, 1, 0, 1, 2]
    b = [0, 0, 1, 2, 2]
    g = [1.0, 2.0, 3.0, 5.0, 5.0]
    mu = [1.0, 2.0, 0.5, 3.0, 4.0]
    out = R.granulated_tau(mu, g, {"a": a, "b": b})
    assert out.groups["a"] == 1 and out.skipped["a"] == 2
    assert out.per_axis["a"] == 1.0  # 1 -> 2 with target 1 -> 2
    assert out.groups["b"] == 2 and out.skipped["b"] == 1  # {4} alone (a = 2)
    # a=0: μ 1 -> 0.5 as g 1 -> 3 (τ = -1); a=1: μ 2 -> 3 as g 2 -> 5 (τ = 1)
    assert out.per_axis["b"] == 0.0


def test_match_keys_split_groups_without_being_scored() -> None:
    """Two seeds: with match={"seed"}, each σ-group holds one seed's models only."""
    sigma = [0, 1, 0, 1]
    seed = [0, 0, 1, 1]
    g = [1.0, 2.0, 10.0, 11.0]  # seed 1 is worse overall
    mu = [5.0, 6.0, 1.0, 2.0]  # ... but the measure ranks seeds the other way round
    plain = R.granulated_tau(mu, g, {"sigma": sigma})
    paired = R.granulated_tau(mu, g, {"sigma": sigma}, match={"seed": seed})
    assert set(plain.per_axis) == {"sigma"} and set(paired.per_axis) == {"sigma"}
    assert paired.per_axis["sigma"] == 1.0 and paired.groups["sigma"] == 2
    assert plain.per_axis["sigma"] == pytest.approx(stats.kendalltau(mu, g).statistic)


def test_axes_that_do_not_vary_are_not_scored() -> None:
    out = R.granulated_tau([1, 2, 3], [1, 2, 3], {"L": [100, 100, 100], "sigma": [0, 1, 2]})
    assert set(out.per_axis) == {"sigma"} and out.psi == 1.0


def study_like(seed: int = 0) -> tuple[dict[str, list], np.ndarray, dict[str, np.ndarray]]:
    """3 L x 3 σ x 2 seeds; the gap grows with σ and L; three measures of known quality."""
    rng = np.random.default_rng(seed)
    grid = list(itertools.product([100, 200, 300], [0.0, 0.2, 0.4], [0, 1]))
    axes = {"L": [p[0] for p in grid], "sigma": [p[1] for p in grid]}
    L, s = np.array(axes["L"], float), np.array(axes["sigma"], float)
    gap = L / 100 + 5 * s + rng.normal(scale=0.05, size=len(grid))
    measures = {
        "good": gap + rng.normal(scale=0.01, size=len(grid)),
        "copies_L": L.copy(),
        "noise": rng.normal(size=len(grid)),
    }
    return axes, gap, measures


def test_bootstrap_is_seeded_and_brackets_a_strong_signal() -> None:
    axes, gap, measures = study_like()
    t1, p1 = R.bootstrap_intervals(measures["good"], gap, axes, n_resamples=150, seed=4)
    t2, p2 = R.bootstrap_intervals(measures["good"], gap, axes, n_resamples=150, seed=4)
    assert (t1, p1) == (t2, p2)
    assert t1.resamples == 150 and t1.valid == 150
    tau = R.kendall_tau(measures["good"], gap)
    psi = R.granulated_tau(measures["good"], gap, axes).psi
    tol = 1e-12  # scipy's τ of a perfectly ordered resample may round to 1 - 1e-16
    assert t1.lo - tol <= tau <= t1.hi + tol and p1.lo - tol <= psi <= p1.hi + tol
    assert t1.lo > 0.5 and p1.lo > 0.5
    t3, _ = R.bootstrap_intervals(measures["good"], gap, axes, n_resamples=150, seed=5)
    assert t3 != t1


def test_ranking_table_columns_and_order() -> None:
    axes, gap, measures = study_like()
    measures["good"][0] = np.nan  # one model without this measure
    rows = R.ranking_table(measures, gap, axes, n_resamples=60, target_name="gen_error")
    assert [r["measure"] for r in rows] == ["good", "copies_L", "noise"]  # by Ψ, largest first
    expected = ["measure", "tau", "tau_lo", "tau_hi", "psi", "psi_lo", "psi_hi"]
    expected += ["psi_L", "psi_sigma", "n_models", "n_resamples", "target"]
    assert all(list(r) == expected for r in rows)
    by = {r["measure"]: r for r in rows}
    assert by["good"]["n_models"] == 17 and by["noise"]["n_models"] == 18
    assert by["copies_L"]["tau"] > 0.3 and by["copies_L"]["psi_sigma"] == 0.0
    # within a σ-group: 3 L x 2 seeds, 15 pairs, 3 tied in L (two seeds), 12 concordant:
    # τ-b = 12 / sqrt((15 - 3) * 15)
    assert by["copies_L"]["psi_L"] == pytest.approx(12 / math.sqrt(180))
    assert by["copies_L"]["psi"] == pytest.approx(6 / math.sqrt(180))
    assert all(r["target"] == "gen_error" and r["n_resamples"] == 60 for r in rows)


def test_a_measure_on_a_small_part_of_the_models_ranks_after_the_others() -> None:
    axes, gap, measures = study_like()
    measures["partial"] = np.where(np.arange(gap.size) < 8, gap, np.nan)  # exact on 8 of 18
    rows = R.ranking_table(measures, gap, axes, n_resamples=30)
    by = {r["measure"]: r for r in rows}
    assert by["partial"]["n_models"] == 8 and by["partial"]["psi"] > by["noise"]["psi"]
    assert rows[-1]["measure"] == "partial"  # 8 < 18 / 2: after every other measure
    measures["partial"] = np.where(np.arange(gap.size) < 9, gap, np.nan)  # 9 of 18: half
    rows = R.ranking_table(measures, gap, axes, n_resamples=30)
    order = [r["measure"] for r in rows]
    assert order.index("partial") < order.index("noise")  # ranked by its Ψ again


def test_measure_columns_align_ok_rows_with_run_ids() -> None:
    rows = [
        {"run_id": "b", "measure": "m1", "value": 2.0, "status": "ok"},
        {"run_id": "a", "measure": "m1", "value": 1.0, "status": "ok"},
        {"run_id": "a", "measure": "m2", "value": math.nan, "status": "non_finite"},
        {"run_id": "zz", "measure": "m2", "value": 7.0, "status": "ok"},
    ]
    cols = R.measure_columns(rows, ["a", "b"])
    np.testing.assert_array_equal(cols["m1"], [1.0, 2.0])
    assert np.isnan(cols["m2"]).all()


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="align"):
        R.kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="axis 'L'"):
        R.granulated_tau([1, 2], [1, 2], {"L": [1, 2, 3]})
