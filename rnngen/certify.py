"""A PAC-Bayes-kl risk certificate for one cell's bias-free ReLU RNN (STUDY.md §8).

The recipe of Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári (JMLR 22, 2021, "Tighter
risk certificates for neural networks"), fitted to eq. (1):

1. **Split** the training set, by a rule fixed in advance, into a prior part and a bound
   part: `prior_share` of each class to the prior part, drawn by a seeded permutation
   (:func:`split_prior_bound`). The two parts share no review (checked by id).
2. **Prior mean**: train eq. (1) on the prior part with the cell's own recipe (its RunSpec:
   init, optimizer, epochs, σ input noise...), by rnngen.train's own epoch loop.
3. **Priors**: P_v = N(prior mean, v I) for each absolute variance v of `prior_var_grid`,
   fixed in advance; the PAC-Bayes confidence δ is split evenly over the grid.
4. **Posteriors**: Q = N(μ, diag s²), s = softplus(ρ), initialised at P_v and trained on
   the bound part with f_quad (or f_classic) of the bounded cross-entropy, one network
   drawn per minibatch by reparameterization (:func:`train_posterior`).
5. **Choice**: the grid point whose posterior has the smallest estimated certificate,
   estimated from `select_draws` networks of a stream of their own.
6. **Certificate** of the chosen posterior's clean 0-1 risk, from `m` FRESH networks on the
   bound part (:func:`mc_errors`; or one fresh network per example, :func:`mc_errors_per_example`)
   and KL(Q‖P): rnngen.pacbayes.certificate. The certifying
   draws come after the choice and are independent of it, so the sampling step keeps its
   whole δ'; only the PAC-Bayes step pays for the choice among the priors (δ/|grid|).
   Holds with probability >= 1 - δ - δ' (the row's `confidence`).
7. **Only then** is the test set loaded (the caller's `test_loader` is called once, after
   the certificate) to measure the clean test error of the stochastic classifier, of its
   mean network and of the prior network (:func:`certify_cell`).

Inputs are clean for everything certified: the certificate is about the clean 0-1 risk,
so the posterior is trained on clean inputs too unless `posterior_input_noise` is set.
Every draw comes from a torch.Generator derived from the spec's seed (:func:`certify_streams`),
so a cell is deterministic on one machine.

Caveat on the data model: IMDB's training set is exactly class-balanced and the split is
stratified, so the bound part is not literally an i.i.d. sample; the certified risk is the
risk under the balanced class mixture, as the (balanced) test set measures it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rnngen import pacbayes
from rnngen.corpus import SplitArrays
from rnngen.errors import DataError, ParameterError
from rnngen.hashing import content_key
from rnngen.model import ReLURNN
from rnngen.rows import LIST_COLUMNS, ROW_COLUMNS
from rnngen.specs import RunSpec
from rnngen.train import (
    Streams,
    epoch_batches,
    evaluate,
    make_optimizer,
    margins,
    setup,
    split_batches,
    train_epoch,
)
from rnngen.weights import WEIGHT_KEYS

# Bump when this module changes what a certificate row holds for the same spec and settings.
CERTIFY_VERSION = 1

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
LogitsFn = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CertifySettings:
    """How a cell is certified: fixed before any data is seen (the union bound needs it).

    Defaults (the PAC-Bayes ones are Pérez-Ortiz et al.'s; the rest chosen for cost):
    - prior_share 0.5: half of each class trains the prior mean, half is the bound set.
    - prior_var_grid: ABSOLUTE variances of the prior, the same for every weight of U, W, V.
      Over L = 100..300 steps the map is very sensitive to W (W ~ I at init): noise of std
      s moves W's spectrum by ~ s√m. Measured on IMDB (L = 100, σ = 0, prior trained on
      12,500 reviews; 20.3 % error on 2,500 bound reviews): networks drawn from N(prior,
      v I) erred 20.4 % at v = 1e-6, 21.4 % at 1e-5 and 30 % at 1e-4.
    - delta 0.025 (PAC-Bayes step, before its split over the grid), delta_mc 0.01.
    - objective 'fquad' (or 'fclassic'); p_min 1e-4 for the bounded cross-entropy.
    - posterior_epochs 2, posterior_lr 0.01: Adam on (z, ρ) with μ = μ_prior + σ_prior z,
      so a step moves μ by ~lr prior standard deviations whatever the grid value. (On IMDB
      the trained posterior stays within ~0.01 prior std of the prior: with 23k weights and
      n = 12,500, moving buys less empirical risk than it costs in KL.)
    - mc_draws 'networks': m = 150 networks, each scored on the whole bound part, for the
      certificate's Monte Carlo step (Langford & Caruana), and m_test = 50 networks (None:
      m) for the stochastic test error (networks' errors spread by ~0.3 point, so 50 pin
      the mean to well under 0.1 point). 'per_example': a fresh network for every example,
      `mc_passes` times (:func:`mc_errors_per_example`), i.e. m = mc_passes * n_bound
      networks for the cost of ~6-13 whole-set networks; m_test likewise. Measured on IMDB
      (L = 100, σ = 0, v = 1e-6, n_bound = 12,500, ê = 0.189): 'networks' with m = 150
      certifies 0.327 (ln(2/δ')/m = 0.035 dominates); 'per_example', one pass, 0.220.
    - select_draws 10: networks per grid point for the estimate that chooses the prior
      (in 'per_example' mode: one pass).
    - draws_per_pass 10: networks evaluated together as one batched model (torch.bmm).
    """

    prior_share: float = 0.5
    prior_var_grid: tuple[float, ...] = (1e-7, 1e-6, 1e-5)
    delta: float = 0.025
    delta_mc: float = 0.01
    objective: Literal["fquad", "fclassic"] = "fquad"
    p_min: float = 1e-4
    posterior_epochs: int = 2
    posterior_lr: float = 0.01
    posterior_input_noise: bool = False
    mc_draws: Literal["networks", "per_example"] = "networks"
    m: int = 150
    m_test: int | None = 50
    mc_passes: int = 1
    select_draws: int = 10
    draws_per_pass: int = 10

    def __post_init__(self) -> None:
        # A list from JSON or a CLI becomes a tuple, so the settings stay hashable.
        object.__setattr__(self, "prior_var_grid", tuple(self.prior_var_grid))
        problems = self._problems()
        if problems:
            raise ParameterError("invalid certificate settings: " + " ".join(problems))

    def _problems(self) -> list[str]:
        """Every bad field, one sentence each."""
        out = []

        def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
            if allow_none and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                out.append(f"{name} must be a positive integer; got {value!r}.")

        def unit_open(name: str, value: Any) -> None:
            if not isinstance(value, int | float) or not 0.0 < value < 1.0:
                out.append(f"{name} must be a number in (0, 1); got {value!r}.")

        unit_open("prior_share", self.prior_share)
        unit_open("delta", self.delta)
        unit_open("delta_mc", self.delta_mc)
        confidences = (self.delta, self.delta_mc)
        if all(isinstance(c, int | float) for c in confidences) and sum(confidences) >= 1.0:
            out.append(f"delta + delta_mc must be < 1; got {self.delta} + {self.delta_mc}.")
        unit_open("p_min", self.p_min)
        grid = self.prior_var_grid
        if not grid or any(
            isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v < math.inf
            for v in grid
        ):
            out.append(f"prior_var_grid must list positive finite variances; got {grid!r}.")
        elif len(set(grid)) != len(grid):
            out.append(f"prior_var_grid lists a variance twice; got {grid!r}.")
        if self.objective not in pacbayes.OBJECTIVES:
            out.append(
                f"objective must be one of {sorted(pacbayes.OBJECTIVES)}; got {self.objective!r}."
            )
        positive_int("posterior_epochs", self.posterior_epochs)
        if not isinstance(self.posterior_lr, int | float) or not 0.0 < self.posterior_lr < 10:
            out.append(f"posterior_lr must be a number in (0, 10); got {self.posterior_lr!r}.")
        if not isinstance(self.posterior_input_noise, bool):
            out.append(
                f"posterior_input_noise must be true or false; got {self.posterior_input_noise!r}."
            )
        if self.mc_draws not in ("networks", "per_example"):
            out.append(f"mc_draws must be 'networks' or 'per_example'; got {self.mc_draws!r}.")
        positive_int("m", self.m)
        positive_int("m_test", self.m_test, allow_none=True)
        positive_int("mc_passes", self.mc_passes)
        positive_int("select_draws", self.select_draws)
        positive_int("draws_per_pass", self.draws_per_pass)
        return out

    @property
    def delta_per_prior(self) -> float:
        """δ/|grid|: the confidence of the PAC-Bayes step for each prior of the grid."""
        return pacbayes.split_delta(self.delta, len(self.prior_var_grid))

    @property
    def confidence(self) -> float:
        """1 - δ - δ': the probability with which a certificate holds."""
        return 1.0 - self.delta - self.delta_mc

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["prior_var_grid"] = list(self.prior_var_grid)
        return out

    @property
    def settings_id(self) -> str:
        """12 hex digits naming these settings and the certificate code's version."""
        return content_key({"certify_version": CERTIFY_VERSION, **self.to_dict()}, length=12)


# ------------------------------------------------------------------------------------ seeding

# Spawn keys of the certificate's streams: apart from rnngen.train's, which are the plain
# SeedSequence(seed).spawn(...) children (spawn keys (0,), (1,), ...).
_STREAM_KEY = 0xCE27
_GRID_KEY = 0xCE28


@dataclass(frozen=True)
class CertifyStreams:
    """The certificate's random streams, all derived from the spec's seed, all on the CPU.

    split_seed: the prior/bound split. select: the networks that choose the prior. mc: the
    certifying networks. test_mc: the networks of the stochastic test error. grid[k] =
    (order, draws, noise): grid point k's minibatch order, weight draws and (if used) input
    noise during posterior training.
    """

    split_seed: int
    select: torch.Generator
    mc: torch.Generator
    test_mc: torch.Generator
    grid: tuple[tuple[torch.Generator, torch.Generator, torch.Generator], ...]


def _generator(seq: np.random.SeedSequence) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0]))
    return gen


def certify_streams(spec: RunSpec, grid_size: int) -> CertifyStreams:
    """The streams of one cell's certificate (independent of training's, and of each other)."""
    split, select, mc, test_mc = np.random.SeedSequence(spec.seed, spawn_key=(_STREAM_KEY,)).spawn(
        4
    )
    grid = tuple(
        tuple(
            _generator(child)
            for child in np.random.SeedSequence(spec.seed, spawn_key=(_GRID_KEY, k)).spawn(3)
        )
        for k in range(grid_size)
    )
    return CertifyStreams(
        split_seed=int(split.generate_state(1, dtype=np.uint32)[0]),
        select=_generator(select),
        mc=_generator(mc),
        test_mc=_generator(test_mc),
        grid=grid,  # type: ignore[arg-type]  # tuples of 3 by construction
    )


# -------------------------------------------------------------------------------------- split


def split_prior_bound(
    labels: np.ndarray, review_ids: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the prior part and of the bound part (sorted, disjoint, covering all rows).

    Class-balanced: of each class's rows, round(share * count) go to the prior part, chosen
    by a permutation from `seed`; the rule is fixed before any data is seen. `review_ids`
    names each row's review and must be unique, so disjoint rows mean disjoint reviews.
    """
    labels, review_ids = np.asarray(labels), np.asarray(review_ids)
    if labels.ndim != 1 or review_ids.shape != labels.shape:
        raise DataError(
            f"labels {labels.shape} and review_ids {review_ids.shape} must be vectors of "
            "one length: one id per training row."
        )
    if len(np.unique(review_ids)) != len(review_ids):
        raise DataError(
            "review_ids name some review twice; the prior and bound parts could then share "
            "a review. Deduplicate the training split first."
        )
    if not 0.0 < share < 1.0:
        raise ParameterError(f"prior_share must be in (0, 1); got {share}.")
    rng = np.random.default_rng(seed)
    prior = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        prior.append(rows[: int(round(share * len(rows)))])
    prior_rows = np.sort(np.concatenate(prior)) if prior else np.zeros(0, np.int64)
    bound_rows = np.setdiff1d(np.arange(len(labels)), prior_rows)
    return prior_rows, bound_rows


def ids_digest(ids: np.ndarray) -> str:
    """16 hex digits naming a set of review ids (order-free)."""
    return content_key(sorted(np.asarray(ids).tolist()), length=16)


def _take(split: SplitArrays, rows: np.ndarray) -> SplitArrays:
    return SplitArrays(split.ids[rows], split.labels[rows])


# --------------------------------------------------------------------------------- posterior


class GaussianPosterior(nn.Module):
    """Q = N(μ, diag s²) over named weight tensors, and its prior P = N(μ_P, v I).

    Parametrized as μ = μ_P + √v · z and s = softplus(ρ) (Pérez-Ortiz et al.'s σ =
    softplus(ρ)); initialised at the prior (z = 0, softplus(ρ) = √v). Storing the mean as
    an offset in prior standard deviations makes an Adam step move μ by ~lr·√v, whatever v.
    """

    def __init__(self, prior_mean: Mapping[str, torch.Tensor], prior_var: float) -> None:
        super().__init__()
        if not 0.0 < prior_var < math.inf:
            raise ParameterError(f"the prior variance must be > 0; got {prior_var}.")
        self.prior_var = float(prior_var)
        self.prior_std = math.sqrt(prior_var)
        self.names = tuple(prior_mean)
        rho0 = pacbayes.softplus_inverse(self.prior_std)
        self.z = nn.ParameterDict()
        self.rho = nn.ParameterDict()
        for name, mu in prior_mean.items():
            mu = mu.detach().to(torch.float32)
            self.register_buffer(f"prior_{name}", mu.clone())
            self.z[name] = nn.Parameter(torch.zeros_like(mu))
            self.rho[name] = nn.Parameter(torch.full_like(mu, rho0))

    def prior_mean(self, name: str) -> torch.Tensor:
        buffer = getattr(self, f"prior_{name}")
        assert isinstance(buffer, torch.Tensor)
        return buffer

    def mean(self, name: str) -> torch.Tensor:
        return self.prior_mean(name) + self.prior_std * self.z[name]

    def std(self, name: str) -> torch.Tensor:
        return F.softplus(self.rho[name])

    def means(self) -> dict[str, torch.Tensor]:
        """μ of every weight tensor, each with a leading axis of one (one network)."""
        return {name: self.mean(name)[None] for name in self.names}

    def sample(self, P: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """P networks drawn from Q, each tensor (P, *shape): μ + s ⊙ ε, ε ~ N(0, I) from
        `generator` (on the CPU, so draws do not depend on the device); differentiable in
        z and ρ (reparameterization)."""
        out = {}
        for name in self.names:
            mu, s = self.mean(name), self.std(name)
            eps = torch.randn((P, *mu.shape), generator=generator).to(mu.device)
            out[name] = mu + s * eps
        return out

    def kl(self) -> torch.Tensor:
        """KL(Q‖P) in nats (float64, differentiable)."""
        return sum(  # type: ignore[return-value]  # a tensor: the sum of tensors
            pacbayes.kl_diag_gaussians_torch(
                self.mean(n), self.std(n) ** 2, self.prior_mean(n), self.prior_var
            )
            for n in self.names
        )

    @torch.no_grad()
    def kl_value(self) -> float:
        """KL(Q‖P) for the certificate: float64 numpy, from exactly the float32 μ and s
        that sampling uses."""

        def f64(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().to(torch.float64).numpy()

        return sum(
            pacbayes.kl_diag_gaussians(
                f64(self.mean(n)), f64(self.std(n)) ** 2, f64(self.prior_mean(n)), self.prior_var
            )
            for n in self.names
        )

    def finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())

    @torch.no_grad()
    def summary(self) -> dict[str, float]:
        """How far Q moved from P: mean |z| (in prior stds) and mean s/√v."""
        z = torch.cat([self.z[n].flatten() for n in self.names])
        s = torch.cat([self.std(n).flatten() for n in self.names])
        return {
            "posterior_mean_shift": float(z.abs().mean()),
            "posterior_std_ratio": float(s.mean()) / self.prior_std,
        }


# ---------------------------------------------------------------------------- the RNN's map


def packed_rnn_logits(weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Eq. (1) for P networks at once on shared inputs: U (P, m, d), W (P, m, m), V (P, k, m),
    x (B, L, d) -> logits y_L (P, B, k), h_0 = 0. As rnngen.packed, one torch.bmm per step."""
    U, W, V = (weights[name] for name in WEIGHT_KEYS)
    P, m, d = U.shape
    B, L, _ = x.shape
    # U x_t of every network and step in one product: (B L, d) @ (d, P m)
    ux = (x.reshape(B * L, d) @ U.reshape(P * m, d).T).reshape(B, L, P, m).permute(2, 0, 1, 3)
    Wt = W.transpose(1, 2)
    h = torch.relu(ux[:, :, 0])
    for t in range(1, L):
        h = torch.relu(ux[:, :, t] + torch.bmm(h, Wt))
    return torch.bmm(h, V.transpose(1, 2))


def per_example_rnn_logits(weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Eq. (1) with a network of its own for every example: U (B, m, d), W (B, m, m),
    V (B, k, m), x (B, L, d) -> logits y_L (B, k). Network b reads only example b."""
    U, W, V = (weights[name] for name in WEIGHT_KEYS)
    ux = torch.bmm(x, U.transpose(1, 2))  # (B, L, m)
    Wt = W.transpose(1, 2)
    h = torch.relu(ux[:, :1])  # (B, 1, m)
    for t in range(1, x.shape[1]):
        h = torch.relu(ux[:, t : t + 1] + torch.bmm(h, Wt))
    return torch.bmm(h, V.transpose(1, 2))[:, 0]


class RNNLogits:
    """Logits of sampled ReLU RNNs, (P, B, k). One network goes through a ReLURNN module
    with its weights swapped in (torch.func.functional_call: nn.RNN's own kernel, the
    training path); several through :func:`packed_rnn_logits` (the Monte Carlo path)."""

    def __init__(self, d: int, m: int, k: int) -> None:
        self.module = ReLURNN(d, m, k, generator=torch.Generator().manual_seed(0))

    def to(self, device: torch.device | str) -> RNNLogits:
        self.module.to(device)
        return self

    def __call__(self, weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if weights["U"].shape[0] != 1:
            return packed_rnn_logits(weights, x)
        swapped = {
            "rnn.weight_ih_l0": weights["U"][0],
            "rnn.weight_hh_l0": weights["W"][0],
            "readout.weight": weights["V"][0],
        }
        return functional_call(self.module, swapped, (x,))[None]


# -------------------------------------------------------------------------- posterior training


@dataclass(frozen=True)
class PosteriorFit:
    """What training a posterior did. objective, risk (bounded cross-entropy) and error
    (0-1, of the network drawn for each batch) are means over the last epoch's batches;
    kl is KL(Q‖P) at the end. diverged: a non-finite objective stopped the training."""

    epochs: int
    objective: float
    risk: float
    error: float
    kl: float
    diverged: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def _error_counts(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per network, how many of the batch it misclassifies (margin <= 0): (P,) int64."""
    P, B, k = logits.shape
    wrong = margins(logits.reshape(P * B, k), y.repeat(P)) <= 0.0
    return wrong.reshape(P, B).sum(dim=1)


def train_posterior(
    posterior: GaussianPosterior,
    logits_fn: LogitsFn,
    batches: Batches,
    *,
    n: int,
    delta: float,
    objective: str = "fquad",
    p_min: float = 1e-4,
    epochs: int = 2,
    lr: float = 0.01,
    clip_grad_norm: float | None = None,
    generator: torch.Generator,
) -> PosteriorFit:
    """Minimize f_quad / f_classic of the bounded cross-entropy over the bound set (n
    examples; `batches()` yields one epoch of minibatches), by Adam on (z, ρ).

    Each minibatch uses one network drawn from Q (reparameterized, from `generator`); the
    minibatch's bounded cross-entropy stands for the empirical risk in the objective, whose
    KL(Q‖P)/n term is exact. δ is the confidence of the PAC-Bayes step (after any split).
    """
    if objective not in pacbayes.OBJECTIVES:
        raise ParameterError(f"objective must be one of {sorted(pacbayes.OBJECTIVES)}.")
    bound_fn = pacbayes.OBJECTIVES[objective]
    opt = torch.optim.Adam(posterior.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    began = time.perf_counter()
    for epoch in range(1, epochs + 1):
        sums = np.zeros(3)
        seen = 0
        for x, y in batches():
            logits = logits_fn(posterior.sample(1, generator), x)
            risk = pacbayes.bounded_cross_entropy(logits, y, p_min)
            loss = bound_fn(risk, posterior.kl(), n, delta)
            if not torch.isfinite(loss):
                return PosteriorFit(
                    epoch, math.nan, math.nan, math.nan, math.nan, True,
                    time.perf_counter() - began, history,
                )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(posterior.parameters(), clip_grad_norm)
            opt.step()
            b = len(y)
            wrong = float(_error_counts(logits.detach(), y)[0])
            sums += (float(loss.detach()) * b, float(risk.detach()) * b, wrong)
            seen += b
        objective_mean, risk_mean, error_mean = sums / max(seen, 1)
        history.append(
            {
                "epoch": epoch,
                "objective": float(objective_mean),
                "risk": float(risk_mean),
                "error": float(error_mean),
                "kl": float(posterior.kl().detach()),
            }
        )
    if not posterior.finite():
        return PosteriorFit(
            epochs, math.nan, math.nan, math.nan, math.nan, True,
            time.perf_counter() - began, history,
        )  # fmt: skip
    last = history[-1]
    return PosteriorFit(
        epochs=epochs,
        objective=last["objective"],
        risk=last["risk"],
        error=last["error"],
        kl=posterior.kl_value(),
        diverged=False,
        seconds=time.perf_counter() - began,
        history=history,
    )


# ----------------------------------------------------------------------------- Monte Carlo


@torch.no_grad()
def mc_errors(
    posterior: GaussianPosterior,
    logits_fn: LogitsFn,
    batches: Batches,
    m: int,
    *,
    generator: torch.Generator,
    draws_per_pass: int = 10,
) -> np.ndarray:
    """The 0-1 error (margin <= 0) of each of m networks drawn from Q on the data that
    `batches()` yields, shape (m,). All m are drawn first (in chunks of `draws_per_pass`,
    from `generator`); then each batch is read once and scored by every chunk, as one
    batched model."""
    if m < 1 or draws_per_pass < 1:
        raise ParameterError(f"m and draws_per_pass must be >= 1; got {m}, {draws_per_pass}.")
    sizes = [min(draws_per_pass, m - start) for start in range(0, m, draws_per_pass)]
    chunks = [posterior.sample(P, generator) for P in sizes]
    wrong = torch.zeros(m, dtype=torch.int64)
    seen = 0
    for x, y in batches():
        start = 0
        for P, weights in zip(sizes, chunks, strict=True):
            wrong[start : start + P] += _error_counts(logits_fn(weights, x), y).cpu()
            start += P
        seen += len(y)
    if seen == 0:
        raise DataError("mc_errors: the data yielded no examples.")
    return wrong.to(torch.float64).numpy() / seen


def mc_error(
    posterior: GaussianPosterior,
    logits_fn: LogitsFn,
    batches: Batches,
    m: int,
    *,
    generator: torch.Generator,
    draws_per_pass: int = 10,
) -> float:
    """ê_m: the mean 0-1 error of m networks drawn from Q (see :func:`mc_errors`)."""
    errors = mc_errors(
        posterior, logits_fn, batches, m, generator=generator, draws_per_pass=draws_per_pass
    )
    return float(np.mean(errors))


@torch.no_grad()
def mc_errors_per_example(
    posterior: GaussianPosterior,
    per_example_fn: LogitsFn,
    batches: Batches,
    passes: int,
    *,
    generator: torch.Generator,
) -> np.ndarray:
    """0/1 errors of networks drawn from Q, ONE FRESH NETWORK PER EXAMPLE AND PASS: shape
    (passes * n,). `per_example_fn(weights, x)` maps B networks (leading axis B) and B
    examples to (B, k) logits, network b on example b.

    Given the data and Q the indicators are independent, and their mean has expectation
    ê(Q), the stochastic classifier's empirical error; Hoeffding's (1963, Theorem 1)
    kl-Chernoff bound holds for independent [0, 1] variables of unequal means, so
    kl⁻¹(mean, ln(2/δ')/(passes n)) bounds ê(Q) as Langford & Caruana's bound does with m
    networks on the whole set -- with m = passes * n sampled networks, for the price of a
    few whole-set passes.
    """
    if passes < 1:
        raise ParameterError(f"the number of passes must be >= 1; got {passes}.")
    parts = []
    for _ in range(passes):
        for x, y in batches():
            logits = per_example_fn(posterior.sample(len(y), generator), x)
            parts.append((margins(logits, y) <= 0.0).cpu())
    if not parts:
        raise DataError("mc_errors_per_example: the data yielded no examples.")
    return torch.cat(parts).to(torch.float64).numpy()


@torch.no_grad()
def deterministic_error(
    weights: Mapping[str, torch.Tensor], logits_fn: LogitsFn, batches: Batches
) -> float:
    """0-1 error of one network (weights with a leading axis of one)."""
    wrong, seen = 0, 0
    for x, y in batches():
        wrong += int(_error_counts(logits_fn(weights, x), y)[0])
        seen += len(y)
    return wrong / max(seen, 1)


# ------------------------------------------------------------------------------ one cell


def _stochastic_errors(
    posterior: GaussianPosterior,
    logits_fn: LogitsFn,
    data: Batches,
    settings: CertifySettings,
    networks: int,
    passes: int,
    generator: torch.Generator,
) -> np.ndarray:
    """The sampled networks' errors as the settings' `mc_draws` asks: `networks` networks
    on all of `data`, or a fresh network per example, `passes` times (one error each)."""
    if settings.mc_draws == "per_example":
        return mc_errors_per_example(
            posterior, per_example_rnn_logits, data, passes, generator=generator
        )
    return mc_errors(
        posterior,
        logits_fn,
        data,
        networks,
        generator=generator,
        draws_per_pass=settings.draws_per_pass,
    )


def _check_split(split: SplitArrays, L: int, name: str) -> None:
    if split.ids.ndim != 2 or split.ids.shape[1] != L or len(split) == 0:
        raise DataError(
            f"the {name} split has ids of shape {split.ids.shape}, but the spec asks for "
            f"L = {L}; build it with split_arrays(..., L={L}, ...)."
        )


def _train_prior(
    spec: RunSpec, prior_part: SplitArrays, embeddings: np.ndarray
) -> tuple[ReLURNN | None, torch.Tensor, dict[str, Any]]:
    """The prior mean: eq. (1) trained on the prior part exactly as rnngen.train trains a
    cell (same seeding, init, optimizer, epochs and σ noise), without the per-epoch
    monitoring. None when the loss turns non-finite."""
    began = time.perf_counter()
    streams, table, model, _ = setup(spec, prior_part, prior_part, embeddings)
    opt = make_optimizer(spec, model.parameters())
    info: dict[str, Any] = {"prior_epochs": 0, "prior_train_loss": math.nan}
    for _ in range(spec.epochs):
        batches = ((x, y) for _, x, y in epoch_batches(prior_part, table, spec, streams))
        stats = train_epoch(model, opt, spec, batches)
        if math.isnan(stats.loss):
            info["prior_seconds"] = time.perf_counter() - began
            return None, table, info
        info["prior_epochs"] += 1
        info["prior_train_loss"] = stats.loss
    info["prior_seconds"] = time.perf_counter() - began
    return model, table, info


def _loader(split: SplitArrays, table: torch.Tensor, batch_size: int) -> Batches:
    """Clean batches of a split in stored order, as often as asked."""
    return lambda: split_batches(split, table, batch_size)


def _posterior_batches(
    bound: SplitArrays,
    table: torch.Tensor,
    spec: RunSpec,
    gens: tuple[torch.Generator, torch.Generator, torch.Generator],
    noisy: bool,
) -> Batches:
    """One shuffled epoch of the bound part per call (rnngen.train.epoch_batches), clean
    unless `noisy` (then with the cell's σ)."""
    order, _, noise = gens
    streams = Streams(init=order, order=order, noise=noise, eval_noise=noise)
    batch_spec = spec if noisy else spec.model_copy(update={"sigma": 0.0})

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return ((x, y) for _, x, y in epoch_batches(bound, table, batch_spec, streams))

    return epoch


def _start_row(
    spec: RunSpec, settings: CertifySettings, n_prior: int, n_bound: int
) -> dict[str, Any]:
    """The columns known before anything is trained."""
    return {
        "run_id": spec.run_id,
        "L": spec.L,
        "sigma": spec.sigma,
        "seed": spec.seed,
        "settings_id": settings.settings_id,
        "status": "running",
        "reason": "",
        "n_prior": n_prior,
        "n_bound": n_bound,
        "mc_draws": settings.mc_draws,
        "mc_passes": settings.mc_passes if settings.mc_draws == "per_example" else None,
        "m": settings.m if settings.mc_draws == "networks" else settings.mc_passes * n_bound,
        "delta": settings.delta_per_prior,
        "delta_mc": settings.delta_mc,
        "delta_total": settings.delta,
        "confidence": settings.confidence,
        "objective": settings.objective,
        "p_min": settings.p_min,
        "prior_var_grid": list(settings.prior_var_grid),
        "posterior_epochs": settings.posterior_epochs,
        "posterior_lr": settings.posterior_lr,
        "posterior_input_noise": settings.posterior_input_noise,
        "select_draws": settings.select_draws,
    }


def _finish(row: dict[str, Any], status: str, reason: str, began: float) -> dict[str, Any]:
    """The row in ROW_COLUMNS order, every column present."""
    unknown = set(row) - set(ROW_COLUMNS)
    assert not unknown, f"certificate row columns missing from ROW_COLUMNS: {sorted(unknown)}"
    row.update(status=status, reason=reason, seconds=time.perf_counter() - began)
    return {name: row.get(name, [] if name in LIST_COLUMNS else None) for name in ROW_COLUMNS}


@dataclass(frozen=True)
class _Candidate:
    """One grid point's trained posterior and the estimate that ranks it (inf: diverged)."""

    estimate: float
    index: int
    posterior: GaussianPosterior
    fit: PosteriorFit


def _fit_grid(
    prior_weights: Mapping[str, torch.Tensor],
    bound: SplitArrays,
    table: torch.Tensor,
    spec: RunSpec,
    settings: CertifySettings,
    streams: CertifyStreams,
    logits_fn: LogitsFn,
) -> list[_Candidate]:
    """A posterior per prior variance of the grid, trained on the bound part, each ranked by
    its estimated certificate: the PAC-Bayes-kl bound at the mean error of `select_draws`
    networks (drawn from the select stream, never reused for the certificate)."""
    n = len(bound)
    bound_batches = _loader(bound, table, spec.eval_batch_size)
    candidates = []
    for index, var in enumerate(settings.prior_var_grid):
        posterior = GaussianPosterior(prior_weights, var).to(table.device)
        gens = streams.grid[index]
        fit = train_posterior(
            posterior,
            logits_fn,
            _posterior_batches(bound, table, spec, gens, settings.posterior_input_noise),
            n=n,
            delta=settings.delta_per_prior,
            objective=settings.objective,
            p_min=settings.p_min,
            epochs=settings.posterior_epochs,
            lr=settings.posterior_lr,
            clip_grad_norm=spec.clip_grad_norm,
            generator=gens[1],
        )
        estimate = math.inf
        if not fit.diverged:
            select = _stochastic_errors(
                posterior, logits_fn, bound_batches, settings, settings.select_draws, 1,
                streams.select,
            )  # fmt: skip
            estimate = pacbayes.pac_bayes_kl_bound(
                float(np.mean(select)), fit.kl, n, settings.delta_per_prior
            )
        candidates.append(_Candidate(estimate, index, posterior, fit))
    return candidates


def _test_errors(
    posterior: GaussianPosterior,
    prior_model: ReLURNN,
    test: SplitArrays,
    table: torch.Tensor,
    spec: RunSpec,
    settings: CertifySettings,
    streams: CertifyStreams,
    logits_fn: LogitsFn,
) -> dict[str, Any]:
    """Clean test errors of the stochastic classifier (m_test networks, or a network per
    example and pass), of its mean network and of the prior network."""
    batches = _loader(test, table, spec.eval_batch_size)
    errors = _stochastic_errors(
        posterior, logits_fn, batches, settings, settings.m_test or settings.m,
        settings.mc_passes, streams.test_mc,
    )  # fmt: skip
    return {
        "n_test": len(test),
        "m_test": len(errors),
        "test_error_stochastic": float(np.mean(errors)),
        "test_error_mean": deterministic_error(posterior.means(), logits_fn, batches),
        "test_error_prior": evaluate(
            prior_model, split_batches(test, table, spec.eval_batch_size)
        ).error,
    }


def certify_cell(
    spec: RunSpec,
    train_split: SplitArrays,
    embeddings: np.ndarray,
    settings: CertifySettings,
    test_loader: Callable[[], SplitArrays],
    *,
    review_ids: np.ndarray | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Certify one cell (module docstring, steps 1-7) and return its row (flat dict).

    `train_split` is the cell's training set (padded ids, length spec.L); `review_ids` names
    its rows' reviews (default: the row numbers). `test_loader` is called at most once, and
    only after the certificate is computed. `on_stage(name)` hears 'split', 'prior',
    'posteriors', 'certificate', 'test' as each begins or (certificate) is done.

    status: 'done'; 'prior_diverged' (no prior mean, no certificate); 'posterior_failed'
    (every grid point's posterior training diverged).
    """
    began = time.perf_counter()
    stage = on_stage or (lambda _: None)
    _check_split(train_split, spec.L, "training")
    if review_ids is None:
        review_ids = np.arange(len(train_split))
    streams = certify_streams(spec, len(settings.prior_var_grid))

    stage("split")
    prior_rows, bound_rows = split_prior_bound(
        train_split.labels, review_ids, settings.prior_share, streams.split_seed
    )
    prior_ids, bound_ids = np.asarray(review_ids)[prior_rows], np.asarray(review_ids)[bound_rows]
    row = _start_row(spec, settings, len(prior_rows), len(bound_rows))
    row.update(
        n_overlap=len(np.intersect1d(prior_ids, bound_ids)),
        prior_ids_digest=ids_digest(prior_ids),
        bound_ids_digest=ids_digest(bound_ids),
    )
    if len(prior_rows) == 0 or len(bound_rows) < pacbayes.MIN_BOUND_SIZE:
        raise DataError(
            f"the training split of {len(train_split)} reviews leaves {len(prior_rows)} for the "
            f"prior and {len(bound_rows)} for the bound; each part needs reviews (the bound at "
            f"least {pacbayes.MIN_BOUND_SIZE})."
        )
    prior_part, bound = _take(train_split, prior_rows), _take(train_split, bound_rows)

    stage("prior")
    prior_model, table, info = _train_prior(spec, prior_part, embeddings)
    row.update(info)
    if prior_model is None:
        return _finish(row, "prior_diverged", "the prior's training loss became non-finite", began)
    logits_fn = RNNLogits(table.shape[1], spec.hidden, prior_model.V.shape[0]).to(table.device)
    bound_batches = _loader(bound, table, spec.eval_batch_size)
    prior_weights = {name: getattr(prior_model, name).detach().clone() for name in WEIGHT_KEYS}
    row["train_error_prior_on_bound"] = deterministic_error(
        {n: w[None] for n, w in prior_weights.items()}, logits_fn, bound_batches
    )

    stage("posteriors")
    candidates = _fit_grid(prior_weights, bound, table, spec, settings, streams, logits_fn)
    row["selection_estimates"] = [c.estimate for c in candidates]
    row["kl_grid"] = [c.fit.kl for c in candidates]
    row["objective_grid"] = [c.fit.objective for c in candidates]
    usable = [c for c in candidates if math.isfinite(c.estimate)]
    if not usable:
        return _finish(row, "posterior_failed", "every posterior's training diverged", began)
    best = min(usable, key=lambda c: (c.estimate, c.index))
    posterior, fit = best.posterior, best.fit
    row.update(
        prior_var=settings.prior_var_grid[best.index],
        prior_var_index=best.index,
        posterior_objective=fit.objective,
        posterior_risk=fit.risk,
        posterior_train_error=fit.error,
        posterior_seconds=sum(c.fit.seconds for c in candidates),
        train_error_mean_on_bound=deterministic_error(posterior.means(), logits_fn, bound_batches),
        **posterior.summary(),
    )

    mc_began = time.perf_counter()
    errors = _stochastic_errors(
        posterior, logits_fn, bound_batches, settings, settings.m, settings.mc_passes, streams.mc
    )
    cert = pacbayes.certificate(
        float(np.mean(errors)),
        len(errors),  # the number of sampled networks
        posterior.kl_value(),
        len(bound),
        settings.delta_per_prior,
        settings.delta_mc,
    )
    row.update(
        {key: cert.to_dict()[key] for key in ("m", "emp_error_mc", "emp_error_bound", "kl")},
        kl_term=cert.kl_term,
        certificate=cert.certificate,
        emp_error_mc_std=float(np.std(errors)),
        mc_seconds=time.perf_counter() - mc_began,
    )
    stage("certificate")

    # Only now may the test set be read.
    stage("test")
    test_began = time.perf_counter()
    test = test_loader()
    _check_split(test, spec.L, "test")
    row.update(
        _test_errors(posterior, prior_model, test, table, spec, settings, streams, logits_fn)
    )
    row["test_seconds"] = time.perf_counter() - test_began
    return _finish(row, "done", "", began)


def certificate_of(row: Mapping[str, Any]) -> float:
    """A row's certificate recomputed from its own columns (the identity a row must meet)."""
    cert = pacbayes.certificate(
        row["emp_error_mc"], row["m"], row["kl"], row["n_bound"], row["delta"], row["delta_mc"]
    )
    return cert.certificate


def weights_of(posterior: GaussianPosterior) -> dict[str, np.ndarray]:
    """The posterior's mean network as float64 arrays (for the bound computations)."""
    return {name: posterior.mean(name).detach().cpu().double().numpy() for name in posterior.names}
