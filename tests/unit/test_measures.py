"""``rnngen.measures``: each measure against a hand computation or a brute-force oracle."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch

from rnngen import measures as M
from rnngen.bounds import DEFAULT_ALPHA_GRID, confidence_term
from rnngen.corpus import SplitArrays
from rnngen.model import reference_forward
from rnngen.specs import RunSpec
from rnngen.train import setup

# A tiny model with hand-checkable norms: d = 2 inputs, m = 3 hidden units, k = 2 classes.
U_HAND = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # ‖U‖₂ = 2, ‖U‖_F² = 5
W_HAND = np.diag([2.0, 1.0, 0.0])  # ‖W‖₂ = 2, ‖W‖_F² = 5
V_HAND = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])  # ‖V‖₂ = 3, ‖V‖_F² = 10
HAND = {"U": U_HAND, "W": W_HAND, "V": V_HAND}


def random_weights(m: int, d: int, k: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "U": rng.normal(size=(m, d)),
        "W": rng.normal(size=(m, m)) / math.sqrt(m),
        "V": rng.normal(size=(k, m)),
    }


def spec(**changes: Any) -> RunSpec:
    base = {"L": 2, "sigma": 0.0, "seed": 3, "data_key": "synthetic", "hidden": 3}
    return RunSpec(**{**base, **changes})


# --------------------------------------------------------------------------- registry


def test_measures_are_declared_once_with_uses_and_references() -> None:
    assert len(set(M.MEASURE_NAMES)) == len(M.MEASURE_NAMES)
    for info in M.MEASURES:
        assert info.uses in M.USES
        assert info.reference and info.source in ("bounds", "weights", "flatness")


def test_compute_measures_gives_one_row_per_non_flatness_measure_in_order() -> None:
    s = spec()
    margins = np.linspace(0.1, 3.0, 20)
    stats = M.InputStats(n=20, L=2, B_x=1.5)
    rows = M.compute_measures(HAND, s, margins, stats, HAND, bounds_rows=[])
    names = [n for n in M.MEASURE_NAMES if M.INFO[n].source != "flatness"]
    assert [r["measure"] for r in rows] == names
    assert all(tuple(r) == M.ROW_KEYS and r["run_id"] == s.run_id for r in rows)
    by = {r["measure"]: r for r in rows}
    assert by["frobenius_distance"]["value"] == 0.0  # trained == initial here
    assert by["param_count"]["value"] == 3 * 2 + 3 * 3 + 2 * 3
    assert by["tu2020_thm2"]["status"] == "missing"  # no bounds row of this run
    assert by["zhang2018_bound"]["status"] == "ok"
    assert "O(·)" in by["zhang2018_bound"]["reason"]  # the unknown constant is stated
    assert all(r["status"] == "ok" for r in rows if r["measure"].startswith("log_"))


# --------------------------------------------------------------------------- path norm


def brute_force_path_norm(U: np.ndarray, W: np.ndarray, V: np.ndarray, L: int) -> float:
    """Σ over every path (input j at step t -> hidden units i_t..i_L -> output o) of the
    product of the squared weights on it; then the square root."""
    m, d = U.shape
    total = 0.0
    for t in range(1, L + 1):
        for j, o in itertools.product(range(d), range(V.shape[0])):
            for units in itertools.product(range(m), repeat=L - t + 1):
                p = U[units[0], j] ** 2
                for prev, nxt in itertools.pairwise(units):
                    p *= W[nxt, prev] ** 2
                total += p * V[o, units[-1]] ** 2
    return math.sqrt(total)


@pytest.mark.parametrize(("m", "seed"), [(2, 0), (3, 1)])
def test_path_norm_equals_brute_force_path_enumeration(m: int, seed: int) -> None:
    w = random_weights(m, 2, 2, seed)
    got = M.path_norm(w, L=3)
    want = brute_force_path_norm(w["U"], w["W"], w["V"], 3)
    assert got == pytest.approx(want, rel=1e-12)


def test_path_norm_is_invariant_under_positive_rescaling_of_hidden_units() -> None:
    w = random_weights(3, 2, 2, 5)
    c = np.array([0.3, 2.0, 7.0])
    scaled = {
        "U": c[:, None] * w["U"],  # row i of U times c_i
        "W": c[:, None] * w["W"] / c[None, :],  # row i times c_i, column i over c_i
        "V": w["V"] / c[None, :],  # column i of V over c_i
    }
    # A true symmetry of the ReLU RNN: relu(c g) = c relu(g) for c > 0, so h -> diag(c) h.
    x = np.random.default_rng(6).normal(size=(16, 4, 2))
    y, y_scaled = (reference_forward(p["U"], p["W"], p["V"], x) for p in (w, scaled))
    np.testing.assert_allclose(y_scaled, y, rtol=1e-12, atol=1e-12)
    assert np.any(y != 0.0)
    assert M.path_norm(scaled, 4) == pytest.approx(M.path_norm(w, 4), rel=1e-12)
    # ... while the norm products are not invariant, which is why the path norm exists
    assert M.weight_norms(scaled).spec["U"] != pytest.approx(M.weight_norms(w).spec["U"])


# --------------------------------------------------------------------------- Jiang et al.


def test_norm_and_margin_measures_by_hand() -> None:
    norms = M.weight_norms(HAND)
    assert (norms.spec, norms.d, norms.m, norms.k) == ({"U": 2.0, "W": 2.0, "V": 3.0}, 2, 3, 2)
    L, gamma = 3, 0.5  # unrolled layers: U, W, W, V (depth L + 1 = 4)
    prod_spec = 2**2 * (2**2) ** 2 * 3**2 / gamma**2
    assert M.log_prod_of_spec_over_margin(norms, L, gamma) == pytest.approx(math.log(prod_spec))
    assert M.log_sum_of_spec_over_margin(norms, L, gamma) == pytest.approx(
        math.log(4 * prod_spec ** (1 / 4))
    )
    ratios = 5 / 4 + 2 * (5 / 4) + 10 / 9  # Σ over layers of ‖A‖_F²/‖A‖₂², W twice
    assert M.log_spec_orig(norms, L, gamma) == pytest.approx(math.log(prod_spec * ratios))
    prod_fro = 5 * 5**2 * 10 / gamma**2
    assert M.log_prod_of_fro_over_margin(norms, L, gamma) == pytest.approx(math.log(prod_fro))
    assert M.log_sum_of_fro_over_margin(norms, L, gamma) == pytest.approx(
        math.log(4 * prod_fro ** (1 / 4))
    )
    assert M.inverse_margin(gamma) == 4.0
    assert M.param_count(HAND) == 6 + 9 + 6


def test_margin_is_the_tenth_percentile_as_kthvalue() -> None:
    margins = np.arange(25, 0, -1, dtype=float)  # 25 margins: the 2nd smallest (25 // 10)
    assert M.margin_percentile(margins) == 2.0
    assert M.margin_percentile(np.array([4.0, 1.0, 3.0])) == 1.0  # at least the smallest


def test_frobenius_distance_and_pacbayes_init_by_hand() -> None:
    init = {k: np.zeros_like(v) for k, v in HAND.items()}
    assert M.frobenius_distance(HAND, init) == 5 + 5 + 10
    sigma, n = 0.1, 1000
    want = 20 / (4 * 0.01) + math.log(1000 / 0.1) + 10
    assert M.pacbayes_init(20.0, sigma, n) == pytest.approx(want)
    assert M.pacbayes_flatness(0.5) == 4.0


def test_initial_weights_are_what_training_started_from() -> None:
    vocab, d, L = 7, 4, 3
    table = np.random.default_rng(0).normal(size=(vocab + 1, d)).astype(np.float32)
    split = SplitArrays(np.zeros((4, L), np.int32), np.array([0, 1, 0, 1]))
    for init in ("irnn", "orthogonal", "default"):
        s = spec(L=L, hidden=5, seed=11, init=init, init_scale=0.9)
        _, _, model, _ = setup(s, split, split, table)
        started = model.weights_numpy()
        before = torch.random.get_rng_state()
        regenerated = M.initial_weights(s, d=d, k=2)
        assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
        for key in ("U", "W", "V"):
            np.testing.assert_array_equal(regenerated[key], started[key])
    assert not np.array_equal(
        M.initial_weights(spec(seed=12, init="default"), d, 2)["U"],
        M.initial_weights(spec(seed=11, init="default"), d, 2)["U"],
    )


# --------------------------------------------------------------------------- RNN bounds


def test_zhang_bound_terms_by_hand() -> None:
    """h = max{d, m, k} = 3; L = 2, n = 100, B_x = 1.5, γ = 0.5, δ = 0.05."""
    norms = M.weight_norms(HAND)
    main = (
        1.5**2  # B²
        * 2**4  # L⁴
        * 3
        * math.log(3)  # h ln h
        * 2**2  # ‖U‖₂²
        * 3**2  # ‖V‖₂²
        * max(1.0, 2.0 ** (2 * 2))  # max{1, ‖W‖₂^{2L}}
        * (5 / 4 + 5 / 4 + 10 / 9)  # Σ ‖A‖_F² / ‖A‖₂²
    )
    want = math.sqrt((main + math.log(100 * 2 / 0.05)) / (0.5**2 * 100))
    got = M.zhang_complexity(norms, L=2, n=100, B_x=1.5, gamma=0.5, delta=0.05)
    assert got == pytest.approx(want, rel=1e-12)
    # ‖W‖₂ = 0.5 < 1: max{1, ‖W‖₂^{2L}} = 1 instead of 16; the ratio ‖W‖_F²/‖W‖₂² is the same
    small = M.weight_norms({**HAND, "W": 0.25 * W_HAND})
    want_small = math.sqrt((main / 16 + math.log(100 * 2 / 0.05)) / (0.5**2 * 100))
    got_small = M.zhang_complexity(small, L=2, n=100, B_x=1.5, gamma=0.5, delta=0.05)
    assert got_small == pytest.approx(want_small, rel=1e-12)
    # the bound: indicator margin loss + complexity, best α of the grid, δ split over it
    margins = np.array([0.1, 0.3, 2.0, 5.0])
    stats = M.InputStats(n=100, L=2, B_x=1.5)
    value, alpha = M.zhang_bound(margins, norms, stats, alpha_grid=(0.25, 4.0))
    at = [
        np.mean(margins <= a)
        + M.zhang_complexity(norms, L=2, n=100, B_x=1.5, gamma=a, delta=0.05 / 2)
        for a in (0.25, 4.0)
    ]
    assert value == pytest.approx(min(at)) and alpha == (0.25, 4.0)[int(np.argmin(at))]


def test_chen_bound_terms_by_hand() -> None:
    """D = sqrt(#params) = sqrt(6 + 9 + 6); a_L = 1 + ‖W‖₂ = 3 at L = 2."""
    norms = M.weight_norms(HAND)
    D = math.sqrt(21)
    scale = 1.5 * 3 * 2 * (1 + 2)  # B_x ‖V‖₂ ‖U‖₂ a_L
    want = D * scale * math.sqrt(math.log(D * 2 * 100)) / (0.5 * math.sqrt(100))
    got = M.chen_complexity(norms, L=2, n=100, B_x=1.5, gamma=0.5)
    assert got == pytest.approx(want, rel=1e-12)
    # ‖W‖₂ = 1 exactly: a_L = L
    unit = M.weight_norms({**HAND, "W": 0.5 * W_HAND})  # ‖W‖₂ = 1
    want_unit = D * 1.5 * 3 * 2 * 2 * math.sqrt(math.log(D * 2 * 100)) / (0.5 * 10)
    assert M.chen_complexity(unit, L=2, n=100, B_x=1.5, gamma=0.5) == pytest.approx(want_unit)
    margins = np.array([0.1, 0.3, 2.0, 5.0])
    stats = M.InputStats(n=100, L=2, B_x=1.5)
    value, _ = M.chen_bound(margins, norms, stats)
    conf = confidence_term(0.05 / len(DEFAULT_ALPHA_GRID), 100)
    best = min(
        np.mean(margins <= a) + M.chen_complexity(norms, L=2, n=100, B_x=1.5, gamma=a) + conf
        for a in DEFAULT_ALPHA_GRID
    )
    assert value == pytest.approx(best)


# --------------------------------------------------------------------------- Tu et al. rows


def test_tu_rows_come_from_the_best_alpha_row_and_say_why_when_not_computable() -> None:
    rows = [
        {
            "run_id": "a",
            "alpha_best": False,
            "status": "ok",
            "bound_thm2": 0.1,
            "bound_thm3": 0.2,
            "bound_thm2_remark6": 0.3,
            "beta_W": 0.5,
        },
        {
            "run_id": "a",
            "alpha_best": True,
            "status": "ok",
            "bound_thm2": 1.5,
            "bound_thm3": 2.5,
            "bound_thm2_remark6": 3.5,
            "beta_W": 0.5,
        },
        {
            "run_id": "b",
            "alpha_best": True,
            "status": "ok",
            "bound_thm2": 7.0,
            "bound_thm3": math.inf,
            "bound_thm2_remark6": None,
            "beta_W": 1.2,
            "margin_loss": 0.1,
            "rademacher_fs_term": 3.0,
            "rademacher_norm1_term": math.inf,
            "noise_term": math.inf,
            "confidence_term": 0.01,
            "Lambda": math.inf,
        },
        {"run_id": "c", "alpha_best": True, "status": "failed", "reason": "no spectrum"},
        # the bounds stage marks every row with a non-finite term and flags no best α
        {
            "run_id": "d",
            "alpha_best": False,
            "status": "non_finite",
            "reason": "Lambda is inf at α=1: the first non-finite input",
        },
    ]
    out = {(r["run_id"], r["measure"]): r for r in M.tu_measure_rows(rows)}
    assert [
        out["a", n]["value"] for n in ("tu2020_thm2", "tu2020_thm3", "tu2020_thm2_remark6")
    ] == [1.5, 2.5, 3.5]
    assert out["b", "tu2020_thm2"]["status"] == "ok"
    thm3 = out["b", "tu2020_thm3"]
    assert thm3["status"] == "non_finite" and math.isnan(thm3["value"])
    assert "rademacher_norm1_term = inf" in thm3["reason"]  # the first non-finite input
    assert out["b", "tu2020_thm2_remark6"]["status"] == "not_applicable"
    assert "β_W" in out["b", "tu2020_thm2_remark6"]["reason"]
    nan_read = M.tu_measure_rows([{**rows[2], "bound_thm2_remark6": math.nan}])
    assert nan_read[2]["status"] == "not_applicable"  # a null read by pandas as NaN
    assert out["d", "tu2020_thm2"]["status"] == "non_finite"
    assert "Lambda is inf" in out["d", "tu2020_thm2"]["reason"]
    assert out["c", "tu2020_thm3"]["status"] == "missing"
    assert "no spectrum" in out["c", "tu2020_thm3"]["reason"]
    assert all(r["uses"] == "train" for r in out.values())
    only_a = M.tu_measure_rows(rows, ["a", "zzz"])
    assert {r["run_id"] for r in only_a} == {"a", "zzz"}


def test_compute_measures_reads_this_runs_tu_rows() -> None:
    s = spec()
    bounds = [
        {
            "run_id": s.run_id,
            "alpha_best": True,
            "status": "ok",
            "bound_thm2": 0.7,
            "bound_thm3": 0.8,
            "bound_thm2_remark6": None,
            "beta_W": 2.0,
        }
    ]
    rows = M.compute_measures(HAND, s, np.ones(5), M.InputStats(5, 2, 1.0), None, bounds)
    by = {r["measure"]: r for r in rows}
    assert by["tu2020_thm3"]["value"] == 0.8
    assert by["tu2020_thm2_remark6"]["status"] == "not_applicable"
    assert by["frobenius_distance"]["status"] == "missing"


# --------------------------------------------------------------------------- statuses


def test_a_non_finite_weight_is_named_in_every_row_that_uses_it() -> None:
    s = spec()
    broken = {**HAND, "W": W_HAND.copy()}
    broken["W"][1, 2] = math.nan
    rows = M.compute_measures(broken, s, np.ones(5), M.InputStats(5, 2, 1.0), HAND, [])
    by = {r["measure"]: r for r in rows}
    for name in (
        "zhang2018_bound",
        "chen2020_bound",
        "log_spec_orig",
        "path_norm",
        "frobenius_distance",
        "inverse_margin",
    ):
        assert by[name]["status"] == "non_finite", name
        assert "weights W[1, 2] = nan" in by[name]["reason"], name
    assert by["param_count"]["status"] == "ok"  # needs no weight values


def test_non_finite_margin_and_non_positive_margin() -> None:
    s = spec()
    margins = np.ones(5)
    margins[3] = math.inf
    rows = M.compute_measures(HAND, s, margins, M.InputStats(5, 2, 1.0), HAND, [])
    by = {r["measure"]: r for r in rows}
    assert "train_margins[3] = inf" in by["inverse_margin"]["reason"]
    assert by["path_norm"]["status"] == "ok"  # uses no margins
    low = np.array([-1.0, -0.5, -0.25, 0.0, -2.0])  # no example classified correctly
    rows = M.compute_measures(HAND, s, low, M.InputStats(5, 2, 1.0), HAND, [])
    by = {r["measure"]: r for r in rows}
    assert by["log_prod_of_fro_over_margin"]["status"] == "not_applicable"
    assert "γ = 0" in by["inverse_margin"]["reason"]
    assert by["zhang2018_bound"]["status"] == "ok"  # a bound needs no positive γ quantile


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="training margins"):
        M.compute_measures(HAND, spec(), np.ones(4), M.InputStats(5, 2, 1.0), None)
    with pytest.raises(ValueError, match="L = 3"):
        M.compute_measures(HAND, spec(), np.ones(5), M.InputStats(5, 3, 1.0), None)
    stats = M.input_stats([np.ones((2, 3, 4)), 2 * np.ones((1, 3, 4))])
    assert (stats.n, stats.L, stats.B_x) == (3, 3, pytest.approx(4.0))  # ‖(2,2,2,2)‖₂


# --------------------------------------------------------------------------- flatness

S_TOY = 0.03  # the toy's error rises by 0.3 · min(1, rms(w - w0) / S_TOY)


def toy_error(w0: dict[str, np.ndarray]):
    flat0 = np.concatenate([w0[k].ravel() for k in ("U", "W", "V")])

    def error(w: dict[str, np.ndarray]) -> float:
        flat = np.concatenate([w[k].ravel() for k in ("U", "W", "V")])
        rms = math.sqrt(np.mean((flat - flat0) ** 2))
        return 0.05 + 0.3 * min(1.0, rms / S_TOY)

    return error


def test_flatness_bisection_finds_the_known_sigma() -> None:
    """Rise 0.1 at rms(u) = S/3. Isotropic u = σz: σ′ = S/3 · (1 ± ~0.5 %, rms(z) of ~15,000
    draws). Magnitude-aware with |w| = c: u = sqrt(σ²c² + ε²) z, σ′ = sqrt((S/3)² - ε²)/c."""
    rng = np.random.default_rng(1)
    c = 0.5
    w = {
        k: c * rng.choice([-1.0, 1.0], size=shape)
        for k, shape in (("U", (100, 50)), ("W", (100, 100)), ("V", (2, 100)))
    }
    err = toy_error(w)
    iso = M.flatness_sigma(w, err, steps=20)
    assert iso.status == "ok" and iso.base_error == pytest.approx(0.05)
    assert iso.sigma == pytest.approx(S_TOY / 3, rel=0.015)
    assert iso.evaluations == 1 + (2 + 20) * M.MC_DRAWS
    eps = 0.006
    mag = M.flatness_sigma(w, err, magnitude_eps=eps, steps=20)
    assert mag.sigma == pytest.approx(math.sqrt((S_TOY / 3) ** 2 - eps**2) / c, rel=0.015)
    rows = M.flatness_rows("r", w, {k: np.zeros_like(v) for k, v in w.items()}, err, n=1000)
    by = {r["measure"]: r for r in rows}
    assert by["pacbayes_flatness"]["value"] == pytest.approx((3 / S_TOY) ** 2, rel=0.03)
    dist = sum(float(np.sum(v**2)) for v in w.values())
    sigma = 1 / math.sqrt(by["pacbayes_flatness"]["value"])
    assert by["pacbayes_init"]["value"] == pytest.approx(M.pacbayes_init(dist, sigma, 1000))
    assert by["pacbayes_mag_flatness"]["status"] == "ok"


def test_flatness_says_when_no_sigma_in_range_qualifies() -> None:
    w = {k: np.ones(s) for k, s in (("U", (3, 2)), ("W", (3, 3)), ("V", (2, 3)))}
    flat = M.flatness_sigma(w, lambda _w: 0.2, steps=3, draws=1)  # error never moves
    assert flat.status == "not_applicable" and "even at σ" in flat.reason
    steep = M.flatness_sigma(w, lambda v: 0.2 if v["U"][0, 0] == 1.0 else 0.9, steps=3)
    assert steep.status == "not_applicable" and "already at σ" in steep.reason
    rows = M.flatness_rows("r", w, None, lambda _w: 0.2, n=10, steps=2, draws=1)
    assert {r["status"] for r in rows} == {"missing", "not_applicable"}


def test_subset_error_is_the_models_0_1_error_on_the_subset() -> None:
    w = random_weights(3, 2, 2, 8)
    rng = np.random.default_rng(9)
    x, labels = rng.normal(size=(40, 4, 2)), rng.integers(0, 2, 40)
    out = reference_forward(w["U"], w["W"], w["V"], x)
    own = out[np.arange(40), labels]
    want = float(np.mean(own - out[np.arange(40), 1 - labels] <= 0))
    error = M.subset_error(x, labels, batch_size=16)
    assert error(w) == pytest.approx(want)
    assert 0.0 < want < 1.0
    shifted = {**w, "V": -w["V"]}  # flips every nonzero margin
    assert error(shifted) == pytest.approx(
        1.0 - want + np.mean(own == out[np.arange(40), 1 - labels])
    )


def test_the_margin_of_a_model_that_does_not_fit_is_taken_among_its_correct_examples():
    """Our models misclassify more than 10 % of their training set, where Jiang et al.'s
    10th percentile is negative: γ is the 10th percentile of the positive margins."""
    margins = np.array([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert M.margin_percentile(margins) == -3.0
    assert M.correct_margin_percentile(margins) == 1.0  # the 1st of the 8 positive ones
    assert M.correct_margin_percentile(np.array([-1.0, -0.5])) == -0.5  # none positive


def test_outputs_that_overflow_count_as_errors():
    """A perturbation that drives the outputs to inf or NaN misclassifies: the flatness
    search must see the error rise, never fall."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 2))
    error = M.subset_error(x, np.array([0, 1] * 4))
    huge = {"U": np.full((2, 2), 1e30), "W": np.full((2, 2), 1e30), "V": np.full((2, 2), 1e30)}
    assert error(huge) == 1.0
