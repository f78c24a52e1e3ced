"""Exact identities and property tests for ``rnngen.bounds`` (Lemmas 1, 2, 8, 12; Thms 2, 3)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from rnngen import bounds as bd

D, M, K = 5, 8, 3


def random_model(
    rng: np.random.Generator, d: int = D, m: int = M, k: int = K, w_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U (m, d), W (m, m), V (k, m) with O(1) gains; ``w_scale`` scales the recurrence."""
    U = rng.normal(size=(m, d)) / math.sqrt(d)
    W = rng.normal(size=(m, m)) * w_scale / math.sqrt(m)
    V = rng.normal(size=(k, m)) / math.sqrt(m)
    return U, W, V


def random_batch(rng: np.random.Generator, B: int, L: int, d: int = D) -> np.ndarray:
    """x (B, L, d) with random pre-padding: each sequence starts with 0..L/2 zero steps."""
    x = rng.normal(size=(B, L, d))
    for i, pad in enumerate(rng.integers(0, L // 2 + 1, size=B)):
        x[i, :pad] = 0.0
    return x


def torch_yL(U: torch.Tensor, W: torch.Tensor, V: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Eq. (1) in torch, written independently of the numpy code."""
    h = x.new_zeros(x.shape[0], W.shape[0])
    for t in range(x.shape[1]):
        h = torch.relu(x[:, t] @ U.T + h @ W.T)
    return h @ V.T


def to_torch(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)) for a in arrays]


# --------------------------------------------------------------------------- network paths


def test_forward_matches_torch_rnn_module() -> None:
    """The weight shapes are exactly nn.RNN's and nn.Linear's, and y_L = η(θ)·1."""
    rng = np.random.default_rng(0)
    U, W, V = random_model(rng)
    x = random_batch(rng, 6, 9)
    rnn = torch.nn.RNN(D, M, nonlinearity="relu", bias=False, batch_first=True)
    readout = torch.nn.Linear(M, K, bias=False)
    rnn, readout = rnn.double(), readout.double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(U))
        rnn.weight_hh_l0.copy_(torch.from_numpy(W))
        readout.weight.copy_(torch.from_numpy(V))
        expected = readout(rnn(torch.from_numpy(x))[0][:, -1]).numpy()
    np.testing.assert_allclose(bd.forward_yL(U, W, V, x), expected, rtol=1e-12, atol=1e-14)
    ones = np.ones(x.shape[1])
    np.testing.assert_allclose(bd.eta_c(U, W, V, x, ones), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lemma1_jvp_along_theta_equals_eta_c(seed: int) -> None:
    """Lemma 1: Σ_j θ_j ∂y_L/∂θ_j (a jvp with tangent θ) equals η(θ)c, c = (L+1..2)."""
    rng = np.random.default_rng(seed)
    U, W, V = random_model(rng, w_scale=1.2)
    x = random_batch(rng, 7, 15)
    tU, tW, tV, tx = to_torch(U, W, V, x)
    _, tangent = torch.func.jvp(lambda a, b, c: torch_yL(a, b, c, tx), (tU, tW, tV), (tU, tW, tV))
    eta = bd.eta_c(U, W, V, x)
    scale = np.abs(eta).max()
    np.testing.assert_allclose(eta, tangent.numpy(), rtol=1e-10, atol=1e-13 * scale)


def test_tau_c_recurrence_equals_explicit_matrix_powers() -> None:
    """τ(θ)c = Σ_t c_t V W^{L-t} U x_t, for the default c and for an arbitrary c."""
    rng = np.random.default_rng(4)
    U, W, V = random_model(rng)
    L = 11
    x = random_batch(rng, 5, L)
    for c in (bd.c_vector(L), rng.normal(size=L)):
        explicit = sum(
            c[t] * x[:, t] @ (V @ np.linalg.matrix_power(W, L - 1 - t) @ U).T for t in range(L)
        )
        np.testing.assert_allclose(bd.tau_c(U, W, V, x, c), explicit, rtol=1e-11, atol=1e-12)


def test_c_vector() -> None:
    np.testing.assert_array_equal(bd.c_vector(4), [5.0, 4.0, 3.0, 2.0])


def test_r_fr_terms_equal_per_sample_autograd() -> None:
    """⟨η(θ)c, ∂l/∂y_L⟩² = ⟨θ, ∇_θ l⟩² per sample for cross-entropy (Lemma 2)."""
    rng = np.random.default_rng(5)
    U, W, V = random_model(rng, w_scale=1.1)
    x = random_batch(rng, 6, 10)
    labels = rng.integers(0, K, size=6)
    expected = []
    for i in range(6):
        theta = [t.requires_grad_() for t in to_torch(U, W, V)]
        out = torch_yL(*theta, torch.from_numpy(x[i : i + 1]))
        loss = torch.nn.functional.cross_entropy(out, torch.tensor([int(labels[i])]))
        grads = torch.autograd.grad(loss, theta)
        expected.append(sum((p * g).sum() for p, g in zip(theta, grads, strict=True)).item() ** 2)
    got = bd.r_fr_sq_terms(bd.eta_c(U, W, V, x), bd.forward_yL(U, W, V, x), labels)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)


def test_r_fs_reads_max_of_squares() -> None:
    """max_i [(τc)_i]² is ‖τc‖²_∞: a large negative entry counts."""
    np.testing.assert_array_equal(bd.r_fs_sq_terms([[1.0, -3.0], [2.0, 0.5]]), [9.0, 4.0])
    assert bd.root_mean([9.0, 16.0]) == pytest.approx(math.sqrt(12.5))


# --------------------------------------------------------------------------- norms and Λ


def test_beta_is_largest_absolute_row_sum() -> None:
    A = np.array([[1.0, -2.0], [3.0, -4.0]])
    assert bd.beta(A) == 7.0
    assert bd.beta([[-5.0, 0.0, 1.0], [2.0, 2.0, -2.5]]) == 6.5
    B = np.random.default_rng(6).normal(size=(4, 7))
    assert bd.beta(B) == pytest.approx(np.linalg.norm(B.T, 1))
    with pytest.raises(ValueError, match="matrix"):
        bd.beta(np.ones(3))


BETAS = [0.0, 0.3, 0.9, 1 - 1e-4, 1 - 1e-9, 1.0, 1 + 1e-9, 1 + 1e-4, 1.01, 1.5, 3.0]


@pytest.mark.parametrize("L", [1, 2, 7, 100, 300])
@pytest.mark.parametrize("b", BETAS)
def test_Lambda_equals_double_sum(b: float, L: int) -> None:
    """Λ = Σ_{t=1}^{L} Σ_{s=1}^{t} β^{t-1}, accurate also within 1e-9 of β = 1."""
    reference = math.fsum(b ** (t - 1) for t in range(1, L + 1) for _ in range(t))
    assert bd.Lambda(b, L) == pytest.approx(reference, rel=1e-13)
    geometric = math.fsum(b ** (L - i) for i in range(1, L + 1))
    assert bd.geometric_sum(b, L) == pytest.approx(geometric, rel=1e-13)


def test_Lambda_branches_and_overflow() -> None:
    assert bd.Lambda(1.0, 300) == (300 + 300**2) / 2
    assert bd.geometric_sum(1.0, 300) == 300.0
    assert bd.Lambda(10.0, 400) == math.inf
    with pytest.raises(ValueError, match="beta_W >= 0"):
        bd.Lambda(-0.1, 3)


# --------------------------------------------------------------------------- lemmas, remark 6


def test_lemma8_lipschitz_bound_never_violated() -> None:
    """‖y_L(x) - y_L(x')‖_∞ ≤ Σ_i β_V β_U β_W^{L-i} ‖x_i - x'_i‖_∞."""
    rng = np.random.default_rng(8)
    L = 6
    for trial in range(60):
        U, W, V = random_model(rng, w_scale=[0.3, 1.0, 2.0][trial % 3])
        x = random_batch(rng, 20, L)
        x2 = x + rng.normal(size=x.shape) * rng.choice([1e-3, 0.1, 1.0])
        lhs = np.abs(bd.forward_yL(U, W, V, x) - bd.forward_yL(U, W, V, x2)).max(axis=1)
        weights = bd.beta(V) * bd.beta(U) * bd.beta(W) ** (L - np.arange(1, L + 1))
        rhs = np.abs(x - x2).max(axis=2) @ weights
        assert np.all(lhs <= rhs * (1 + 1e-12))


@pytest.mark.parametrize("d", [1, 2, 50])
def test_lemma12_expected_max_abs_gaussian(d: int) -> None:
    """E max_i |ε_i| ≤ σ sqrt(2 log 2d) for d iid N(0, σ²), by Monte Carlo."""
    sigma = 0.3
    eps = np.random.default_rng(d).normal(scale=sigma, size=(100_000, d))
    samples = np.abs(eps).max(axis=1)
    upper = samples.mean() + 5 * samples.std() / math.sqrt(len(samples))
    assert upper <= sigma * math.sqrt(2 * math.log(2 * d))


@pytest.mark.parametrize("beta_W", [0.2, 0.9, 0.99])
def test_remark6_r_dominates_measured_r_fs(beta_W: float) -> None:
    """Remark 6's r ≥ ‖θ‖_fs when β_W < 1 and B = max ‖x‖_∞ (random and worst case)."""
    rng = np.random.default_rng(9)
    L = 40
    U, W, V = random_model(rng)
    W *= beta_W / bd.beta(W)
    x = random_batch(rng, 30, L)
    r = bd.r_remark6(bd.beta(V), bd.beta(U), bd.beta(W), np.abs(x).max())
    assert r >= bd.root_mean(bd.r_fs_sq_terms(bd.tau_c(U, W, V, x)))
    # Worst case: constant positive matrices and x = B·1 attain Σ_t c_t β_V β_W^{L-t} β_U B.
    U, W, V = np.full((M, D), 0.1), np.full((M, M), beta_W / M), np.full((K, M), 0.2)
    x = np.full((2, L, D), 1.5)
    r = bd.r_remark6(bd.beta(V), bd.beta(U), bd.beta(W), 1.5)
    assert r >= bd.root_mean(bd.r_fs_sq_terms(bd.tau_c(U, W, V, x))) * (1 - 1e-12)


def test_remark6_not_applicable_when_beta_W_at_least_one() -> None:
    assert bd.r_remark6(1.0, 1.0, 1.0, 1.0) is None
    assert bd.r_remark6(1.0, 2.0, 0.5, 3.0) == pytest.approx(2 * 3 * (4 + 2))


# --------------------------------------------------------------------------- losses, terms


def test_margins_and_losses_on_hand_made_values() -> None:
    outputs = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]
    np.testing.assert_array_equal(bd.margins(outputs, [0, 2]), [1.0, -2.0])
    m = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    assert bd.indicator_margin_loss(m, 1.0) == pytest.approx(4 / 5)
    assert bd.ramp_loss(m, 1.0) == pytest.approx((1 + 1 + 0.5 + 0 + 0) / 5)
    assert bd.ramp_loss(m, 4.0) == pytest.approx((1 + 1 + 0.875 + 0.75 + 0.5) / 5)
    with pytest.raises(ValueError, match="labels"):
        bd.margins(outputs, [0, 3])


def test_confidence_union_bound_and_alpha_grid() -> None:
    # log(2/δ) = 2 at δ = 2e⁻², so the term is 3 sqrt(2/18) = 1 at n = 9.
    assert bd.confidence_term(2 * math.exp(-2), 9) == pytest.approx(1.0, rel=1e-14)
    assert bd.union_bound_delta(0.05, 5) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="at least one"):
        bd.union_bound_delta(0.05, 0)
    # The fixed grid: powers of two, sorted, no duplicates, covering 1e-3 .. 1e3.
    grid = np.asarray(bd.DEFAULT_ALPHA_GRID)
    assert np.all(np.diff(grid) > 0) and grid[0] < 1e-3 and grid[-1] > 1e3
    np.testing.assert_array_equal(np.log2(grid), np.round(np.log2(grid)))
    assert "fixed before any data" in bd.DEFAULT_ALPHA_RULE


def test_term_formulas_on_hand_made_values() -> None:
    # (4k/α)·r‖X‖_F/(2n)·(λ+σ²)^(-1/2) with k=2, α=2, r=3, ‖X‖_F=4, n=6, λ+σ²=0.16+0.09.
    assert bd.rademacher_fs_term(2, 2.0, 3.0, 4.0, 6, 0.16, 0.3) == pytest.approx(8.0)
    assert bd.rademacher_fs_term(2, 2.0, 3.0, 4.0, 6, 0.0) == math.inf
    assert bd.rademacher_norm1_term(2, 2.0, 0.5, 3.0, 4.0, 5.0, 6) == pytest.approx(20.0)
    # L = 2, β_W = 0.5: Σ β_W^{L-i} = 1.5; σ sqrt(2 log 2d) = 1 at σ = 1/sqrt(2 log 4), d = 2.
    sigma = 1 / math.sqrt(2 * math.log(4))
    assert bd.noise_term(2.0, 2.0, 3.0, 0.5, 2, sigma, 2) == pytest.approx(9.0)
    assert bd.noise_term(2.0, 2.0, 3.0, 50.0, 1000, 0.0, 2) == 0.0


def test_zhang_order_in_log_space() -> None:
    """‖W‖₂^L alone overflows (11^300), the order itself does not; exact via Fraction."""
    d, m, k, L = 5, 4, 2, 300
    U = np.zeros((m, d))
    U[0, 0] = 2.0
    V = np.zeros((k, m))
    V[1, 2] = -3.0
    W = 11.0 * np.eye(m)
    exact = Fraction(5 * L * L * 2 * 3) * Fraction(11) ** L / (10**6 * 10**10)
    got = bd.zhang_order(d, m, k, L, U, W, V, 10**12, 1e10)
    assert got == pytest.approx(float(exact), rel=1e-11)
    assert bd.zhang_order(d, m, k, L, U, W, V, 1, 1.0) == math.inf
    small = bd.zhang_order(d, m, k, L, U, 0.5 * W / 11, V, 100, 2.0)  # max{1, ‖W‖₂^L} = 1
    assert small == pytest.approx(5 * L * L * 2 * 3 / (10 * 2.0))


# --------------------------------------------------------------------------- streaming, rows


def fed_stats(U, W, V, x, labels, sizes) -> bd.ModelDataStats:
    """A ModelDataStats fed x in consecutive batches of the given sizes."""
    stats = bd.ModelDataStats(U, W, V)
    edges = np.cumsum([0, *sizes])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        stats.update(x[lo:hi], labels[lo:hi])
    return stats


def test_streaming_stats_equal_one_shot() -> None:
    rng = np.random.default_rng(10)
    U, W, V = random_model(rng)
    x32 = random_batch(rng, 23, 8).astype(np.float32)  # float32 batches are accepted
    x = x32.astype(np.float64)
    labels = rng.integers(0, K, size=23)
    stats = fed_stats(U, W, V, x32, labels, [5, 10, 8])
    out = bd.forward_yL(U, W, V, x)
    X = x.reshape(23, -1).T  # (L·d, n): one sequence per column
    assert stats.n == 23 and stats.L == 8 and stats.d == D
    np.testing.assert_allclose(stats.margins, bd.margins(out, labels), rtol=1e-13)
    assert stats.r_fs == pytest.approx(bd.root_mean(bd.r_fs_sq_terms(bd.tau_c(U, W, V, x))))
    r_fr = bd.root_mean(bd.r_fr_sq_terms(bd.eta_c(U, W, V, x), out, labels))
    assert stats.r_fr == pytest.approx(r_fr)
    assert stats.frob_X == pytest.approx(np.linalg.norm(X, "fro"))
    assert stats.norm1_XT == pytest.approx(np.linalg.norm(X.T, 1))
    assert stats.B == np.abs(x).max()
    with pytest.raises(ValueError, match="does not match"):
        stats.update(x[:, :5], labels)


def make_pair(sigma: float, beta_W: float):
    """Clean and noisy statistics of one model (β_W as given) on one small data set."""
    rng = np.random.default_rng(11)
    U, W, V = random_model(rng)
    W *= beta_W / bd.beta(W)
    x = random_batch(rng, 40, 6)
    labels = (bd.forward_yL(U, W, V, x)[:, 0] > 0).astype(int)  # a learnable labelling
    clean = fed_stats(U, W, V, x, labels, [16, 24])
    noisy = fed_stats(U, W, V, x + sigma * rng.normal(size=x.shape), labels, [40])
    return clean, noisy


def test_thm3_at_sigma_zero_is_thm2_with_ramp_loss() -> None:
    """σ = 0: Theorem 3's complexity is Theorem 2's; only ramp vs indicator loss differ."""
    clean, noisy_at_zero = make_pair(0.0, beta_W=0.8)
    alpha = float(np.median(np.abs(clean.margins)))
    kw = {"alpha": alpha, "sigma": 0.0, "lambda_min": 1e-3, "delta": 0.05}
    row = bd.bound_row(clean, None, **kw)
    assert tuple(row) == bd.TERM_COLUMNS
    assert row["noise_term"] == 0.0
    ramp = bd.ramp_loss(clean.margins, alpha)
    thm2_ramp = bd.bound_thm2(ramp, row["complexity_term"], row["confidence_term"])
    assert row["bound_thm3"] == pytest.approx(thm2_ramp, rel=1e-14)
    indicator = bd.indicator_margin_loss(clean.margins, alpha)
    assert row["bound_thm2"] - indicator == pytest.approx(row["bound_thm3"] - ramp, rel=1e-14)
    assert bd.bound_row(clean, noisy_at_zero, **kw) == pytest.approx(row, rel=1e-14)


def test_bound_row_with_noise_and_remark6_applicability() -> None:
    clean, noisy = make_pair(0.3, beta_W=0.8)
    kw = {"alpha": 0.5, "sigma": 0.3, "lambda_min": 1e-3, "delta": 0.01}
    row = bd.bound_row(clean, noisy, **kw)
    assert row["r_fs"] == pytest.approx(noisy.r_fs) and row["frob_X"] > clean.frob_X
    assert row["noise_term"] > 0 and row["margin_loss"] == bd.ramp_loss(noisy.margins, 0.5)
    parts = ("margin_loss", "complexity_term", "noise_term", "confidence_term")
    assert row["bound_thm3"] == pytest.approx(sum(row[p] for p in parts))
    assert row["bound_thm2_remark6"] >= row["bound_thm2"]  # Remark 6's r ≥ measured r_fs
    with pytest.raises(ValueError, match="noisy"):
        bd.bound_row(clean, None, **kw)
    clean, noisy = make_pair(0.3, beta_W=1.5)
    assert bd.bound_row(clean, noisy, **kw)["bound_thm2_remark6"] is None
