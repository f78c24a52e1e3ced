"""PAC-Bayes-kl risk certificates: the math, one function per term (numpy/scipy/torch only).

The certified quantity is the 0-1 risk e(Q) of a stochastic classifier Q (a distribution
over networks; each prediction uses a network drawn from Q). Two steps, each holding with
its own confidence, give an upper bound that holds with probability >= 1 - δ - δ':

1. **Sampling** (Langford & Caruana 2002, "(Not) bounding the true error", NIPS 14;
   the kl-Chernoff bound of Hoeffding 1963): the empirical error ê(Q) on the n bound examples is an
   expectation over Q; its estimate ê_m from m networks drawn from Q (each one's error is
   a [0,1] variable, independent given the data) satisfies, with probability >= 1 - δ'
   over the draws, ê(Q) <= kl⁻¹(ê_m, ln(2/δ')/m)   (:func:`sampling_bound`).
2. **PAC-Bayes-kl** (Seeger 2002, JMLR 3; Maurer 2004, "A note on the PAC Bayesian
   theorem", whose E exp(n kl) <= 2√n needs n >= 8): for a prior P chosen without the n
   bound examples, with probability >= 1 - δ over them, simultaneously for every Q,
   kl(ê(Q) ‖ e(Q)) <= (KL(Q‖P) + ln(2√n/δ))/n, hence
   e(Q) <= kl⁻¹(ê(Q), (KL(Q‖P) + ln(2√n/δ))/n)   (:func:`pac_bayes_kl_bound`).

kl⁻¹ is increasing in its first argument, so putting step 1's bound into step 2 gives the
certificate (:func:`certificate`); this is how Pérez-Ortiz, Rivasplata, Shawe-Taylor &
Szepesvári (JMLR 22, 2021, "Tighter risk certificates for neural networks") evaluate their
risk certificates (their code's defaults δ = 0.025, δ' = 0.01).

The training objectives are theirs too: :func:`f_quad` (from the "PAC-Bayes-quadratic"
bound) and :func:`f_classic` (from the "PAC-Bayes-classic" bound, i.e. the kl bound
relaxed by Pinsker's inequality), both applied to :func:`bounded_cross_entropy`, the
cross-entropy with probabilities clamped at p_min and rescaled by 1/ln(1/p_min) into
[0, 1] (their Section on the surrogate loss; code: github.com/mperezortiz/PBB, bounds.py
and models.py `output_transform`). Gaussian posteriors use their parametrization
σ = softplus(ρ) = ln(1 + e^ρ) (models.py `Gaussian`), so ρ is unconstrained.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import rel_entr

from rnngen.errors import ParameterError

# brentq's tolerances for kl⁻¹. The returned root is within XTOL + RTOL * root of the true
# one; adding that much makes the result an upper bound of the exact kl⁻¹ (never below it)
# at a cost of < 1e-13, far below any digit the certificate reports.
KL_INV_XTOL = 1e-14
KL_INV_RTOL = 4.0 * float(np.finfo(float).eps)  # the smallest rtol brentq accepts

# Maurer's 2√n bound on E exp(n kl) is proved for n >= 8.
MIN_BOUND_SIZE = 8


# ------------------------------------------------------------------------------ Bernoulli kl


def kl_bernoulli(q: ArrayLike, p: ArrayLike) -> Any:
    """kl(q‖p) = q ln(q/p) + (1-q) ln((1-q)/(1-p)), the KL divergence of Bernoulli(q) from
    Bernoulli(p), in float64 (0 ln 0 = 0; +inf where p ∈ {0, 1} and q ≠ p).

    Shapes broadcast; a float for scalar inputs, else an array.
    """
    q_arr, p_arr = np.asarray(q, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if np.any((q_arr < 0) | (q_arr > 1) | (p_arr < 0) | (p_arr > 1)):
        raise ParameterError(f"kl_bernoulli needs q and p in [0, 1]; got q = {q!r}, p = {p!r}.")
    # 1 - p is exact for p in [0.5, 1] (Sterbenz), so kl keeps its digits near p = 1.
    out = rel_entr(q_arr, p_arr) + rel_entr(1.0 - q_arr, 1.0 - p_arr)
    return float(out) if out.ndim == 0 else out


def kl_inv_upper(q: float, c: float) -> float:
    """kl⁻¹(q, c) = sup{p ∈ [q, 1] : kl(q‖p) <= c}: the largest true risk consistent with
    empirical risk q and a budget c of the kl bound; 1.0 when even p → 1 stays within c.

    kl(q‖·) increases on [q, 1], so the sup is the root of kl(q‖p) = c, found by
    scipy.optimize.brentq and then rounded up by brentq's tolerance (never below the
    exact value; at most ~1e-13 above it).
    """
    q, c = float(q), float(c)
    if not 0.0 <= q <= 1.0 or math.isnan(c) or c < 0.0:
        raise ParameterError(
            f"kl_inv_upper needs an empirical risk q in [0, 1] and a budget c >= 0; "
            f"got q = {q}, c = {c}."
        )
    if c == 0.0 or q == 1.0:
        return q if c == 0.0 else 1.0
    below_one = math.nextafter(1.0, 0.0)
    if math.isinf(c) or kl_bernoulli(q, below_one) <= c:
        return 1.0
    root = brentq(
        lambda p: kl_bernoulli(q, p) - c, q, below_one, xtol=KL_INV_XTOL, rtol=KL_INV_RTOL
    )
    return min(1.0, float(root) + KL_INV_XTOL + KL_INV_RTOL * abs(float(root)))


# ----------------------------------------------------------------------------- the two steps


def _check_confidence(delta: float, name: str) -> None:
    if not 0.0 < delta < 1.0:
        raise ParameterError(f"{name} must be a confidence parameter in (0, 1); got {delta}.")


def _check_risk(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ParameterError(f"{name} must be an error rate in [0, 1]; got {value}.")


def sampling_term(m: int, delta_mc: float) -> float:
    """ln(2/δ')/m: the kl budget of the Monte Carlo step with m sampled networks."""
    if int(m) != m or m < 1:
        raise ParameterError(f"the number of sampled networks m must be >= 1; got {m}.")
    _check_confidence(delta_mc, "delta_mc")
    return math.log(2.0 / delta_mc) / m


def sampling_bound(emp: float, m: int, delta_mc: float) -> float:
    """kl⁻¹(ê_m, ln(2/δ')/m) (Langford & Caruana 2002): with probability >= 1 - δ' over
    the m draws from Q, the empirical error ê(Q) of the stochastic classifier is at most
    this, where ê_m is the mean error of the m sampled networks. Never below ê_m."""
    _check_risk(emp, "the Monte Carlo error estimate")
    return kl_inv_upper(emp, sampling_term(m, delta_mc))


def kl_term(kl: float, n: int, delta: float) -> float:
    """(KL(Q‖P) + ln(2√n/δ))/n: the budget of the PAC-Bayes-kl inequality (Maurer 2004)."""
    if math.isnan(kl) or kl < 0.0:
        raise ParameterError(f"KL(Q‖P) must be a number >= 0; got {kl}.")
    if int(n) != n or n < MIN_BOUND_SIZE:
        raise ParameterError(
            f"the bound set must hold at least {MIN_BOUND_SIZE} examples (Maurer's "
            f"ln(2√n/δ) term needs n >= 8); got n = {n}."
        )
    _check_confidence(delta, "delta")
    return (kl + math.log(2.0 * math.sqrt(n) / delta)) / n


def pac_bayes_kl_bound(emp_bound: float, kl: float, n: int, delta: float) -> float:
    """kl⁻¹(ê, (KL(Q‖P) + ln(2√n/δ))/n): the PAC-Bayes-kl bound on the true 0-1 risk of Q
    (Seeger 2002; Maurer 2004), with ê an upper bound on Q's empirical error on n examples."""
    _check_risk(emp_bound, "the empirical error bound")
    return kl_inv_upper(emp_bound, kl_term(kl, n, delta))


@dataclass(frozen=True)
class Certificate:
    """The pieces of one risk certificate; holds with probability >= 1 - delta - delta_mc.

    certificate == kl_inv_upper(kl_inv_upper(emp_error_mc, ln(2/delta_mc)/m),
    (kl + ln(2 sqrt(n)/delta))/n), exactly (the same floating-point operations).
    """

    emp_error_mc: float  # ê_m: mean 0-1 error of the m sampled networks on the bound set
    m: int
    delta_mc: float
    emp_error_bound: float  # kl⁻¹(ê_m, ln(2/δ')/m) >= ê_m
    kl: float  # KL(Q‖P), nats
    n: int
    delta: float
    kl_term: float  # (KL + ln(2√n/δ))/n
    certificate: float  # kl⁻¹(emp_error_bound, kl_term)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def certificate(
    emp_error_mc: float, m: int, kl: float, n: int, delta: float, delta_mc: float
) -> Certificate:
    """Both steps: the bound on the clean 0-1 risk of Q from m sampled networks' mean error
    ê_m on the n bound examples, KL(Q‖P) and the confidences δ (PAC-Bayes) and δ' (MC)."""
    emp_bound = sampling_bound(emp_error_mc, m, delta_mc)
    budget = kl_term(kl, n, delta)
    return Certificate(
        emp_error_mc=float(emp_error_mc),
        m=int(m),
        delta_mc=float(delta_mc),
        emp_error_bound=emp_bound,
        kl=float(kl),
        n=int(n),
        delta=float(delta),
        kl_term=budget,
        certificate=kl_inv_upper(emp_bound, budget),
    )


def split_delta(delta: float, grid_size: int) -> float:
    """δ/|grid|: the confidence per grid point that keeps a bound valid for the grid point
    chosen after seeing the data (union bound over a grid fixed in advance)."""
    if int(grid_size) != grid_size or grid_size < 1:
        raise ParameterError(f"a grid must have at least one value; got {grid_size}.")
    _check_confidence(delta, "delta")
    return delta / grid_size


# ---------------------------------------------------------------------------- KL(Q‖P)


def kl_diag_gaussians(mu_q: ArrayLike, s2_q: ArrayLike, mu_p: ArrayLike, s2_p: ArrayLike) -> float:
    """KL(N(μ_q, diag s²_q) ‖ N(μ_p, diag s²_p)) in nats, summed over all coordinates, in
    float64:  ½ Σ [ln(s²_p/s²_q) + (s²_q + (μ_q - μ_p)²)/s²_p - 1].

    Arguments broadcast against each other (a scalar prior variance is allowed).
    """
    mq, vq, mp, vp = (np.asarray(a, dtype=np.float64) for a in (mu_q, s2_q, mu_p, s2_p))
    if np.any(~(vq > 0)) or np.any(~(vp > 0)):
        raise ParameterError("Gaussian variances must be > 0 (and not NaN).")
    terms = np.log(vp) - np.log(vq) + (vq + (mq - mp) ** 2) / vp - 1.0
    return float(0.5 * np.sum(terms))


def kl_diag_gaussians_torch(
    mu_q: torch.Tensor, s2_q: torch.Tensor, mu_p: torch.Tensor, s2_p: torch.Tensor | float
) -> torch.Tensor:
    """:func:`kl_diag_gaussians` in torch (differentiable), computed in float64; a scalar."""
    mq, vq, mp = (t.to(torch.float64) for t in (mu_q, s2_q, mu_p))
    vp = torch.as_tensor(s2_p, dtype=torch.float64, device=mq.device)
    terms = torch.log(vp) - torch.log(vq) + (vq + (mq - mp) ** 2) / vp - 1.0
    return 0.5 * terms.sum()


def softplus_inverse(s: float) -> float:
    """ρ with softplus(ρ) = ln(1 + e^ρ) = s: the ρ that makes a posterior's std s."""
    if not s > 0:
        raise ParameterError(f"a standard deviation must be > 0; got {s}.")
    return float(s + math.log(-math.expm1(-s)))  # ln(e^s - 1), stable for small and large s


# ---------------------------------------------------------------------- training objectives


def bounded_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, p_min: float) -> torch.Tensor:
    """Mean of -ln max(p_y, p_min) / ln(1/p_min) ∈ [0, 1] (Pérez-Ortiz et al. 2021).

    logits (..., B, k), labels (B,) broadcast over the leading axes (e.g. P sampled networks).
    Clamping the log-probabilities at ln p_min bounds the loss, so the PAC-Bayes bounds for
    [0, 1] losses apply to it; the clamped region has zero gradient.
    """
    if not 0.0 < p_min < 1.0:
        raise ParameterError(f"p_min must be in (0, 1); got {p_min}.")
    logp = torch.clamp(F.log_softmax(logits, dim=-1), min=math.log(p_min))
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    return -logp.gather(-1, index).mean() / math.log(1.0 / p_min)


def _budget_half(kl: torch.Tensor, n: int, delta: float) -> torch.Tensor:
    """(KL + ln(2√n/δ))/(2n), the term both objectives share."""
    return (kl + math.log(2.0 * math.sqrt(n) / delta)) / (2.0 * n)


def f_quad(risk: torch.Tensor, kl: torch.Tensor, n: int, delta: float) -> torch.Tensor:
    """f_quad = (√(risk + κ) + √κ)², κ = (KL + ln(2√n/δ))/(2n): the PAC-Bayes-quadratic
    training objective of Pérez-Ortiz et al. (2021), risk a [0, 1] surrogate (minibatch)."""
    kappa = _budget_half(kl, n, delta)
    return (torch.sqrt(risk + kappa) + torch.sqrt(kappa)) ** 2


def f_classic(risk: torch.Tensor, kl: torch.Tensor, n: int, delta: float) -> torch.Tensor:
    """f_classic = risk + √((KL + ln(2√n/δ))/(2n)): the PAC-Bayes-classic objective of
    Pérez-Ortiz et al. (2021) (McAllester-type: the kl bound relaxed by Pinsker)."""
    return risk + torch.sqrt(_budget_half(kl, n, delta))


OBJECTIVES = {"fquad": f_quad, "fclassic": f_classic}
