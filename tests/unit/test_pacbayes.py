"""``rnngen.pacbayes``: kl⁻¹ against brute force, the two certificate steps, KL(Q‖P), the
training objectives, and the certificate's validity on synthetic problems of known risk."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from rnngen import pacbayes as pb
from rnngen.certify import (
    GaussianPosterior,
    mc_errors,
    mc_errors_per_example,
    train_posterior,
)
from rnngen.errors import ParameterError


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ kl and kl⁻¹


def kl_reference(q: float, p: float) -> float:
    """kl(q‖p) written out with math.log, the conventions spelled out case by case."""
    total = 0.0
    for a, b in ((q, p), (1.0 - q, 1.0 - p)):
        if a == 0.0:
            continue
        if b == 0.0:
            return math.inf
        total += a * math.log(a / b)
    return total


def kl_inv_bisection(q: float, c: float, steps: int = 200) -> float:
    """sup{p ∈ [q, 1]: kl(q‖p) <= c} by plain bisection on the reference kl."""
    lo, hi = q, 1.0
    if kl_reference(q, hi) <= c:
        return 1.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if kl_reference(q, mid) <= c:
            lo = mid
        else:
            hi = mid
    return hi


def test_kl_bernoulli_matches_the_formula_and_its_edge_cases() -> None:
    rng = np.random.default_rng(0)
    for q, p in rng.uniform(0.001, 0.999, size=(50, 2)):
        assert pb.kl_bernoulli(q, p) == pytest.approx(kl_reference(q, p), rel=1e-12, abs=1e-15)
    assert pb.kl_bernoulli(0.3, 0.3) == 0.0
    assert pb.kl_bernoulli(0.0, 0.5) == pytest.approx(math.log(2.0))
    assert pb.kl_bernoulli(1.0, 0.5) == pytest.approx(math.log(2.0))
    assert pb.kl_bernoulli(0.2, 0.0) == math.inf and pb.kl_bernoulli(0.2, 1.0) == math.inf
    assert pb.kl_bernoulli(0.0, 0.0) == 0.0 and pb.kl_bernoulli(1.0, 1.0) == 0.0
    out = pb.kl_bernoulli(np.array([0.1, 0.2]), 0.3)
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        pb.kl_bernoulli(1.5, 0.3)


@pytest.mark.parametrize("q", [0.0, 1e-6, 0.01, 0.1, 0.3, 0.5, 0.77, 0.99, 0.999999])
@pytest.mark.parametrize("c", [1e-9, 1e-5, 1e-3, 0.01, 0.05, 0.3, 1.0, 5.0])
def test_kl_inv_matches_brute_force_bisection(q: float, c: float) -> None:
    got, want = pb.kl_inv_upper(q, c), kl_inv_bisection(q, c)
    assert abs(got - want) <= 1e-12
    assert got >= q
    # never below the exact value: at or past the point where kl reaches c (or 1.0)
    assert got == 1.0 or kl_reference(q, got) >= c * (1 - 1e-6)  # kl's own rounding


def test_kl_inv_edge_cases_and_monotonicity() -> None:
    assert pb.kl_inv_upper(0.2, 0.0) == 0.2
    assert pb.kl_inv_upper(1.0, 0.1) == 1.0
    assert pb.kl_inv_upper(0.2, math.inf) == 1.0
    assert pb.kl_inv_upper(0.0, 50.0) == 1.0  # kl(0‖p) = -ln(1-p) stays below 50 up to ~1
    assert pb.kl_inv_upper(0.0, 0.1) == pytest.approx(1.0 - math.exp(-0.1), abs=1e-13)
    qs = np.linspace(0.0, 0.9, 19)
    values = [pb.kl_inv_upper(q, 0.05) for q in qs]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    budgets = [pb.kl_inv_upper(0.1, c) for c in (0.001, 0.01, 0.1, 1.0)]
    assert all(a < b for a, b in zip(budgets, budgets[1:], strict=False))
    for bad in ((-0.1, 0.1), (0.5, -1.0), (0.5, math.nan), (1.2, 0.1)):
        with pytest.raises(ParameterError):
            pb.kl_inv_upper(*bad)


# ------------------------------------------------------------------------------- the steps


def test_sampling_term_shrinks_with_m_and_never_falls_below_the_estimate() -> None:
    for emp in (0.0, 0.05, 0.2, 0.5):
        bounds = [pb.sampling_bound(emp, m, 0.01) for m in (1, 10, 100, 1_000, 10_000, 10**6)]
        assert all(b >= emp for b in bounds)
        assert all(a > b for a, b in zip(bounds, bounds[1:], strict=False))
        assert bounds[-1] - emp < 0.01
        assert bounds[2] == pb.kl_inv_upper(emp, math.log(2 / 0.01) / 100)
    with pytest.raises(ParameterError, match="m must be"):
        pb.sampling_bound(0.1, 0, 0.01)
    with pytest.raises(ParameterError, match="delta_mc"):
        pb.sampling_bound(0.1, 10, 1.0)


def test_certificate_is_the_two_kl_inversions_exactly() -> None:
    cert = pb.certificate(0.12, 150, 37.5, 12_500, 0.025 / 3, 0.01)
    emp_bound = pb.kl_inv_upper(0.12, math.log(2 / 0.01) / 150)
    want = pb.kl_inv_upper(
        emp_bound, (37.5 + math.log(2 * math.sqrt(12_500) / (0.025 / 3))) / 12_500
    )
    assert cert.certificate == want
    assert cert.emp_error_bound == emp_bound
    assert cert.kl_term == pb.kl_term(37.5, 12_500, 0.025 / 3)
    assert cert.emp_error_mc <= cert.emp_error_bound <= cert.certificate <= 1.0
    assert cert.certificate == pb.pac_bayes_kl_bound(emp_bound, 37.5, 12_500, 0.025 / 3)
    assert set(cert.to_dict()) >= {"emp_error_mc", "kl", "delta", "delta_mc", "certificate"}


def test_pac_bayes_bound_grows_with_kl_and_rejects_bad_inputs() -> None:
    values = [pb.pac_bayes_kl_bound(0.1, kl, 1000, 0.025) for kl in (0.0, 1.0, 10.0, 100.0)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert pb.pac_bayes_kl_bound(0.1, 1e9, 1000, 0.025) == 1.0
    with pytest.raises(ParameterError, match="at least 8"):
        pb.pac_bayes_kl_bound(0.1, 1.0, 7, 0.025)
    with pytest.raises(ParameterError, match="KL"):
        pb.pac_bayes_kl_bound(0.1, -1.0, 100, 0.025)
    with pytest.raises(ParameterError, match="delta"):
        pb.pac_bayes_kl_bound(0.1, 1.0, 100, 0.0)


def test_split_delta() -> None:
    assert pb.split_delta(0.025, 5) == 0.005
    with pytest.raises(ParameterError):
        pb.split_delta(0.025, 0)


# ------------------------------------------------------------------------------- KL(Q‖P)


def test_kl_of_gaussians_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
    s_q = torch.rand(40, generator=gen) + 0.1
    s_p = 0.7
    want = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_q.double(), s_q.double()),
        torch.distributions.Normal(mu_p.double(), torch.full((40,), s_p, dtype=torch.float64)),
    ).sum()
    got = pb.kl_diag_gaussians(mu_q.numpy(), s_q.numpy() ** 2, mu_p.numpy(), s_p**2)
    assert got == pytest.approx(float(want), rel=1e-6)
    got_torch = pb.kl_diag_gaussians_torch(mu_q, s_q**2, mu_p, s_p**2)
    assert got_torch.dtype == torch.float64 and float(got_torch) == pytest.approx(got, rel=1e-6)
    assert pb.kl_diag_gaussians(mu_p.numpy(), s_p**2, mu_p.numpy(), s_p**2) == 0.0
    with pytest.raises(ParameterError, match="variances"):
        pb.kl_diag_gaussians(0.0, 0.0, 0.0, 1.0)


def test_softplus_inverse_round_trips() -> None:
    for s in (1e-6, 1e-3, 0.03, 1.0, 30.0):
        rho = pb.softplus_inverse(s)
        assert float(torch.nn.functional.softplus(torch.tensor(rho, dtype=torch.float64))) == (
            pytest.approx(s, rel=1e-9)
        )


# ---------------------------------------------------------------------------- objectives


def test_bounded_cross_entropy_is_the_clamped_rescaled_nll() -> None:
    p_min = 1e-4
    logits = torch.tensor([[2.0, 0.0], [0.0, 30.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    logp = torch.log_softmax(logits, dim=1)
    per = torch.stack([-logp[0, 0], torch.tensor(math.log(1 / p_min)), -logp[2, 1]])
    want = float(per.mean()) / math.log(1 / p_min)
    got = pb.bounded_cross_entropy(logits, labels, p_min)
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert 0.0 <= float(got) <= 1.0
    # a leading axis of sampled networks broadcasts the labels
    stacked = pb.bounded_cross_entropy(torch.stack([logits, logits]), labels, p_min)
    assert float(stacked) == pytest.approx(want, rel=1e-6)
    huge = pb.bounded_cross_entropy(torch.tensor([[0.0, 1e4]]), torch.tensor([0]), p_min)
    assert float(huge) == pytest.approx(1.0)


def test_objectives_upper_bound_the_kl_bound_they_relax() -> None:
    """Both objectives relax the PAC-Bayes-kl inequality (the quadratic one via
    kl(q‖p) >= (p - q)²/(2p), the classic via Pinsker), so each is >= kl⁻¹."""
    rng = np.random.default_rng(1)
    for q, kl in zip(rng.uniform(0, 0.6, 40), rng.uniform(0, 500, 40), strict=True):
        n, delta = 5_000, 0.025
        exact = pb.pac_bayes_kl_bound(q, kl, n, delta)
        risk, klt = torch.tensor(q, dtype=torch.float64), torch.tensor(kl, dtype=torch.float64)
        assert float(pb.f_quad(risk, klt, n, delta)) >= exact - 1e-12
        assert float(pb.f_classic(risk, klt, n, delta)) >= exact - 1e-12
    kappa = (10.0 + math.log(2 * math.sqrt(100) / 0.05)) / 200
    quad = pb.f_quad(torch.tensor(0.2), torch.tensor(10.0), 100, 0.05)
    assert float(quad) == pytest.approx((math.sqrt(0.2 + kappa) + math.sqrt(kappa)) ** 2)
    classic = pb.f_classic(torch.tensor(0.2), torch.tensor(10.0), 100, 0.05)
    assert float(classic) == pytest.approx(0.2 + math.sqrt(kappa))


def test_objectives_are_differentiable_in_risk_and_kl() -> None:
    risk = torch.tensor(0.2, requires_grad=True)
    kl = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    for fn in (pb.f_quad, pb.f_classic):
        risk.grad, kl.grad = None, None
        fn(risk, kl, 1000, 0.025).backward()
        assert risk.grad is not None and float(risk.grad) > 0
        assert kl.grad is not None and float(kl.grad) > 0


# ------------------------------------------------------------------------------- validity
#
# Synthetic problems whose true risk is known exactly. A certificate is violated when it
# falls below the true risk; over R independent repeats (fresh data, fresh draws) a valid
# certificate is violated in at most a δ + δ' fraction, up to binomial spread. The repeats
# use the library's own posterior, Monte Carlo and certificate code on a linear model.

REPEATS = 200
DELTA, DELTA_MC = 0.025, 0.01


def linear_logits(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """P linear classifiers without bias: w (P, 2, d), x (B, d) -> logits (P, B, 2)."""
    return torch.einsum("pkd,bd->pbk", weights["w"], x)


def linear_logits_per_example(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """One linear classifier per example: w (B, 2, d), x (B, d) -> logits (B, 2)."""
    return torch.einsum("bkd,bd->bk", weights["w"], x)


MODES = ("networks", "per_example")


def sampled_errors(
    posterior: GaussianPosterior,
    x: torch.Tensor,
    y: torch.Tensor,
    mode: str,
    gen: torch.Generator,
    networks: int = 200,
    passes: int = 5,
) -> np.ndarray:
    """The errors of the networks the Monte Carlo step draws: `networks` networks on all of
    (x, y), or one network per example, `passes` times (rnngen.certify's two modes)."""
    data = [(x, y)]
    if mode == "networks":
        return mc_errors(
            posterior, linear_logits, lambda: data, networks, generator=gen, draws_per_pass=networks
        )
    return mc_errors_per_example(
        posterior, linear_logits_per_example, lambda: data, passes, generator=gen
    )


def allowed_violations(repeats: int, rate: float) -> int:
    """The mean violation count of a valid certificate plus four binomial standard deviations."""
    return math.ceil(repeats * rate + 4 * math.sqrt(repeats * rate * (1 - rate)))


def logistic_fits(
    x: torch.Tensor, y: torch.Tensor, steps: int, start: torch.Tensor | None = None
) -> torch.Tensor:
    """Full-batch logistic regression (2 logits, no bias) of many independent problems at
    once: x (R, n, d), y (R, n) -> w (R, 2, d), by Adam from `start` (default zeros)."""
    R, _, d = x.shape
    w = (torch.zeros(R, 2, d) if start is None else start.clone()).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        logits = torch.bmm(x, w.transpose(1, 2))
        # summed over problems: each problem's gradient is its own mean loss's
        loss = (
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, 2), y.reshape(-1), reduction="none"
            )
            .reshape(R, -1)
            .mean(dim=1)
            .sum()
        )
        loss.backward()
        opt.step()
    return w.detach()


@functools.cache
def noise_label_certificates(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels independent of inputs: every classifier, stochastic or not, has true 0-1
    risk exactly 1/2. The posterior is centred on a network fitted to the bound data
    itself (the theorem covers any Q), which separates them (d = 60 > n/2 = 50), so its
    empirical error is small and only the KL term can keep the certificate above 1/2.
    Returns the certificates of every repeat with KL(Q‖P) and with KL dropped (same draws)."""
    d, n_prior, n = 60, 100, 100
    gen = torch.Generator().manual_seed(12345)
    x = torch.randn(REPEATS, n_prior + n, d, generator=gen)
    y = torch.randint(0, 2, (REPEATS, n_prior + n), generator=gen)
    prior_means = logistic_fits(x[:, :n_prior], y[:, :n_prior], 30)
    fitted = logistic_fits(x[:, n_prior:], y[:, n_prior:], 150, prior_means)
    with_kl, without_kl = [], []
    for r in range(REPEATS):
        posterior = GaussianPosterior({"w": prior_means[r]}, 0.01)
        with torch.no_grad():
            posterior.z["w"].copy_((fitted[r] - prior_means[r]) / posterior.prior_std)
        errors = sampled_errors(posterior, x[r, n_prior:], y[r, n_prior:], mode, gen)
        emp, m = float(errors.mean()), len(errors)
        with_kl.append(pb.certificate(emp, m, posterior.kl_value(), n, DELTA, DELTA_MC))
        without_kl.append(pb.certificate(emp, m, 0.0, n, DELTA, DELTA_MC))
    return (
        np.array([c.certificate for c in with_kl]),
        np.array([c.certificate for c in without_kl]),
    )


@pytest.mark.parametrize("mode", MODES)
def test_certificate_is_valid_when_labels_are_noise(mode: str) -> None:
    with_kl, _ = noise_label_certificates(mode)
    assert np.sum(with_kl < 0.5) <= allowed_violations(REPEATS, DELTA + DELTA_MC)


@pytest.mark.parametrize("mode", MODES)
def test_without_the_kl_term_the_same_procedure_violates_almost_always(mode: str) -> None:
    """The validity test above must fail when KL(Q‖P) is dropped: the fitted posterior's
    empirical error is far below 1/2, and so is a bound that ignores how far Q moved."""
    _, without_kl = noise_label_certificates(mode)
    violations = int(np.sum(without_kl < 0.5))
    assert violations > allowed_violations(REPEATS, DELTA + DELTA_MC)
    assert violations >= 0.9 * REPEATS


def true_risk_linear(posterior: GaussianPosterior, w_star: torch.Tensor, flip: float) -> float:
    """True 0-1 risk of Q on x ~ N(0, I), y = [w*·x > 0] flipped with probability `flip`:
    a network predicts 1 iff u·x > 0 with u = w_1 - w_0, which disagrees with the clean
    label with probability angle(u, w*)/π; averaged over 10,000 networks from Q."""
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        w = posterior.sample(10_000, gen)["w"].double()
    u = w[:, 1] - w[:, 0]
    cos = (u @ w_star.double()) / (u.norm(dim=1) * w_star.double().norm())
    disagree = torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi
    return float(flip + (1 - 2 * flip) * disagree.mean())


def test_certificate_of_a_trained_posterior_is_valid_on_a_learnable_problem() -> None:
    """The whole recipe on a linear problem with 10 % label noise: prior mean fitted on the
    prior part, posterior trained by f_quad on the bound part from the prior, certificate
    from fresh draws; its true risk is known in closed form (up to 10,000 draws)."""
    d, n_prior, n, flip, repeats = 10, 200, 200, 0.1, 200
    gen = torch.Generator().manual_seed(7)
    w_star = torch.randn(repeats, d, generator=gen)
    x = torch.randn(repeats, n_prior + n, d, generator=gen)
    clean = (torch.einsum("rnd,rd->rn", x, w_star) > 0).long()
    y = torch.where(torch.rand(repeats, n_prior + n, generator=gen) < flip, 1 - clean, clean)
    prior_means = logistic_fits(x[:, :n_prior], y[:, :n_prior], 60)
    violations = dict.fromkeys(MODES, 0)
    certs: dict[str, list[float]] = {mode: [] for mode in MODES}
    risks = []
    for r in range(repeats):
        posterior = GaussianPosterior({"w": prior_means[r]}, 0.05)
        xb, yb = x[r, n_prior:], y[r, n_prior:]
        batches = [(xb[i : i + 100], yb[i : i + 100]) for i in range(0, n, 100)]
        fit = train_posterior(
            posterior, linear_logits, lambda b=batches: b, n=n, delta=DELTA,
            epochs=3, lr=0.05, generator=gen,
        )  # fmt: skip
        assert not fit.diverged
        risk = true_risk_linear(posterior, w_star[r], flip)
        risks.append(risk)
        for mode in MODES:
            errors = sampled_errors(posterior, xb, yb, mode, gen)
            cert = pb.certificate(
                float(errors.mean()), len(errors), posterior.kl_value(), n, DELTA, DELTA_MC
            )
            violations[mode] += cert.certificate < risk
            certs[mode].append(cert.certificate)
    for mode in MODES:
        assert violations[mode] <= allowed_violations(repeats, DELTA + DELTA_MC), mode
        # not vacuous: the certificate sits within reach of the true risk
        assert np.mean(certs[mode]) < 0.5 and np.mean(certs[mode]) - np.mean(risks) < 0.25
    # a network per example: 5 * 200 sampled networks, a tighter Monte Carlo step than 200
    assert np.mean(certs["per_example"]) < np.mean(certs["networks"])


def test_sampling_bound_is_valid_for_a_known_stochastic_error() -> None:
    """Step 1 alone: m networks whose errors are Bernoulli(p) (the worst case of a [0,1]
    variable with mean p); kl⁻¹(ê_m, ln(2/δ')/m) falls below p in at most a δ' fraction."""
    rng = np.random.default_rng(3)
    p, m, repeats, delta_mc = 0.3, 50, 4_000, 0.05
    counts = rng.binomial(m, p, size=repeats)
    below = {c: pb.sampling_bound(c / m, m, delta_mc) < p for c in np.unique(counts)}
    violations = sum(below[c] for c in counts)
    assert violations <= allowed_violations(repeats, delta_mc)
