"""A zoo of generalization measures for one trained bias-free ReLU RNN (pure: numpy, torch).

The network is the paper's eq. (1), ``h_t = relu(W h_{t-1} + U x_t)``, ``y = V h_L``, with
U (m, d), W (m, m), V (k, m) as in `rnngen.model`. A *measure* is one number per trained
model; `rnngen.ranking` judges it by how well it ranks models by their generalization gap
(Jiang et al., ICLR 2020, "Fantastic generalization measures and where to find them").

Every measure is declared once in `MEASURES` (name, what data it uses, its reference) and
becomes one row ``{run_id, measure, value, status, reason, uses, reference}``:

- status 'ok': `value` is the measure (`reason` may carry a caveat, e.g. an unknown constant);
- 'non_finite': an input or the result is NaN/inf; `reason` names the first such input;
- 'not_applicable': the measure is undefined for this model (e.g. a non-positive margin);
- 'missing': an input was not supplied (no bounds row, no initial weights).

`uses` says what data the number needs: 'none' (weights only), 'train' or 'test'.

Where the measures come from:

- Tu, He & Tao (ICLR 2020) Theorems 2, 3 and Remark 6 are *read* from the bounds table
  (`tu_measure_rows`), never recomputed here.
- Zhang, Lei & Dhillon (ICML 2018) and Chen, Li & Zhao (AISTATS 2020): the RNN bounds of
  their papers, evaluated like Tu et al.'s (minimum over the fixed α grid of
  `rnngen.bounds.DEFAULT_ALPHA_GRID`, δ split over the grid). Both theorems are stated with
  O(·): their absolute constants are unpublished and taken as 1 here, and their exact
  statements could not be read from the text available to us (see `zhang_complexity`,
  `chen_complexity`); every row says so in its `reason`.
- Jiang et al. (2020), Appendix C: norm & margin measures. Equation numbers are those of
  arXiv:1912.02178 as the robust-generalization-measures code annotates them (eq. 20
  params, 22 inverse margin, 30 spec-orig, 31 prod-of-spec/margin, 34 sum-of-spec/margin,
  36 prod-of-fro/margin, 38 sum-of-fro/margin, 40 Frobenius distance, 44 path norm,
  48 pacbayes.init, 53 pacbayes.flatness, 61 pacbayes.mag.flatness); not re-checked
  against the PDF. Layer-wise measures are taken on the *unrolled* network, whose longest
  path passes U, then W (L-1) times, then V: depth L + 1 (see `unrolled_layer_counts`).
  The product measures are reported as natural logs (`log_...`), as the
  robust-generalization-measures code reports them: the same ranking, no overflow.
- Flatness (Jiang et al. Appendix C, PAC-Bayes flatness): `flatness_rows`, given a
  callable returning the training error of perturbed weights on a fixed subset the caller
  chooses (`subset_error` builds one from arrays).

Wei & Ma (NeurIPS 2019) is *not* implemented: its RNN bound needs, on every training
example, the norms of the Jacobians of every hidden state with respect to every earlier
one -- L(L-1)/2 Jacobians of size m x m per example. Forming them costs about L·m/2 times
a forward pass (matrix products; ~6,000x at L = 100, m = 128); estimating only their
operator norms by autograd power iteration still costs ~L²/6 forward passes per
iteration (~1,700x at L = 100). Either is far beyond 10 forward passes.

Cost, apart from flatness: spectral and Frobenius norms of three small matrices (numpy
SVD), one L-step matrix-vector recurrence for the path norm, and sorts of the training
margins the caller measured in its one forward pass; under a second for L = 300.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from rnngen.bounds import (
    DEFAULT_ALPHA_GRID,
    confidence_term,
    geometric_sum,
    indicator_margin_loss,
    union_bound_delta,
)
from rnngen.errors import ParameterError
from rnngen.model import ReLURNN
from rnngen.specs import RunSpec
from rnngen.weights import WEIGHT_KEYS

Array = NDArray[np.float64]
Weights = Mapping[str, ArrayLike]

OK, NON_FINITE, NOT_APPLICABLE, MISSING = "ok", "non_finite", "not_applicable", "missing"
STATUSES: tuple[str, ...] = (OK, NON_FINITE, NOT_APPLICABLE, MISSING)
USES: tuple[str, ...] = ("none", "train", "test")
ROW_KEYS: tuple[str, ...] = ("run_id", "measure", "value", "status", "reason", "uses", "reference")

# The percentile of the training margins Jiang et al. call "the margin" γ (Appendix C):
# the 10th, robust to a few outliers. As their code does, γ is the ⌊n/10⌋-th smallest margin.
MARGIN_PERCENTILE = 10.0
DELTA = 0.05  # the confidence of the bound measures, split over the α grid
# Flatness defaults. Jiang et al. (Appendix C) take σ′ as the largest σ whose perturbation keeps the
# expected training error at most 0.1, on models trained to ~0 error; ours are not, so here
# the *rise* over the unperturbed error is held to 0.1. ε = 1e-3 (magnitude-aware) as theirs.
MAX_ERROR_INCREASE = 0.1
MAGNITUDE_EPS = 1e-3
SIGMA_RANGE = (1e-5, 10.0)  # σ′ is searched in this bracket, on a log scale
BISECTION_STEPS = 12  # 12 halvings of log(1e6): σ′ to 0.34 % (relative)
MC_DRAWS = 4  # perturbations averaged per σ (the same draws at every σ)

_CONSTANT_CAVEAT = (
    "the theorem is stated with O(·); its absolute constant is unpublished and taken as 1, "
    "and the statement was reconstructed without access to the paper's text (see the "
    "docstring of rnngen.measures.{fn})"
)


@dataclass(frozen=True)
class MeasureInfo:
    """One declared measure: its row name, the data it uses and where it is defined."""

    name: str
    uses: str  # 'none' | 'train' | 'test'
    reference: str
    source: str  # which function makes its row: 'bounds' | 'weights' | 'flatness'


_JIANG = "Jiang, Neyshabur, Mobahi, Krishnan & Bengio (ICLR 2020), Appendix C"
_GAMMA = "γ = 10th-percentile margin of the correctly classified training examples (our adaptation)"
_UNROLLED = f"on the unrolled network (U, W x (L-1), V), {_GAMMA}"

MEASURES: tuple[MeasureInfo, ...] = (
    MeasureInfo(
        "tu2020_thm2",
        "train",
        "Tu, He & Tao (ICLR 2020), Theorem 2; bound_thm2 of results/bounds.parquet at the "
        "best α (rnngen.bounds.bound_row)",
        "bounds",
    ),
    MeasureInfo(
        "tu2020_thm3",
        "train",
        "Tu, He & Tao (ICLR 2020), Theorem 3; bound_thm3 of results/bounds.parquet at the "
        "best α (rnngen.bounds.bound_row)",
        "bounds",
    ),
    MeasureInfo(
        "tu2020_thm2_remark6",
        "train",
        "Tu, He & Tao (ICLR 2020), Theorem 2 with Remark 6's data-free r; "
        "bound_thm2_remark6 of results/bounds.parquet at the best α",
        "bounds",
    ),
    MeasureInfo(
        "zhang2018_bound",
        "train",
        "Zhang, Lei & Dhillon (ICML 2018, arXiv:1803.09327), PAC-Bayes spectral-norm margin "
        "bound for vanilla RNNs; min over the fixed α grid (rnngen.measures.zhang_bound)",
        "weights",
    ),
    MeasureInfo(
        "chen2020_bound",
        "train",
        "Chen, Li & Zhao (AISTATS 2020, arXiv:1910.12947), covering-number/Rademacher bound "
        "for vanilla RNNs; min over the fixed α grid (rnngen.measures.chen_bound)",
        "weights",
    ),
    MeasureInfo(
        "log_spec_orig",
        "train",
        f"{_JIANG}, eq. (30) spec-orig, {_UNROLLED}",
        "weights",
    ),
    MeasureInfo(
        "log_prod_of_spec_over_margin",
        "train",
        f"{_JIANG}, eq. (31) prod-of-spec/margin, {_UNROLLED}",
        "weights",
    ),
    MeasureInfo(
        "log_sum_of_spec_over_margin",
        "train",
        f"{_JIANG}, eq. (34) sum-of-spec/margin, {_UNROLLED}",
        "weights",
    ),
    MeasureInfo(
        "log_prod_of_fro_over_margin",
        "train",
        f"{_JIANG}, eq. (36) prod-of-fro/margin, {_UNROLLED}",
        "weights",
    ),
    MeasureInfo(
        "log_sum_of_fro_over_margin",
        "train",
        f"{_JIANG}, eq. (38) sum-of-fro/margin, {_UNROLLED}",
        "weights",
    ),
    MeasureInfo(
        "frobenius_distance",
        "none",
        f"{_JIANG}, eq. (40) frobenius-distance: Σ ‖A - A⁰‖_F² over U, W, V; A⁰ regenerated "
        "from the spec's init stream (rnngen.measures.initial_weights)",
        "weights",
    ),
    MeasureInfo(
        "path_norm",
        "none",
        f"{_JIANG}, eq. (44) path-norm (square root taken, as the robust-generalization-"
        "measures code does; Neyshabur et al. 2015's ℓ2 path norm)",
        "weights",
    ),
    MeasureInfo("param_count", "none", f"{_JIANG}, eq. (20) #params: md + m² + km", "weights"),
    MeasureInfo(
        "inverse_margin",
        "train",
        f"{_JIANG}, eq. (22) inverse-margin 1/γ², {_GAMMA}",
        "weights",
    ),
    MeasureInfo(
        "pacbayes_init",
        "train",
        f"{_JIANG}, eq. (48) pacbayes.init: ‖w - w⁰‖²/(4σ′²) + log(n/σ′) + 10",
        "flatness",
    ),
    MeasureInfo(
        "pacbayes_flatness",
        "train",
        f"{_JIANG}, eq. (53) pacbayes.flatness: 1/σ′², σ′ the largest perturbation std "
        "raising the training error by at most 0.1",
        "flatness",
    ),
    MeasureInfo(
        "pacbayes_mag_flatness",
        "train",
        f"{_JIANG}, eq. (61) pacbayes.mag.flatness: 1/σ′², perturbation variance "
        "σ′²w² + ε² (ε = 1e-3)",
        "flatness",
    ),
)
MEASURE_NAMES: tuple[str, ...] = tuple(m.name for m in MEASURES)
INFO: dict[str, MeasureInfo] = {m.name: m for m in MEASURES}


# --------------------------------------------------------------------------- rows


def measure_row(
    run_id: str, name: str, value: float | None, status: str = OK, reason: str = ""
) -> dict[str, Any]:
    """One result row of a declared measure; a value that is not a finite number under
    status 'ok' is turned into status 'non_finite' (the caller named no input, so the row
    says the result itself overflowed or is undefined)."""
    info = INFO[name]
    if status == OK and (value is None or not math.isfinite(value)):
        status = NON_FINITE
        note = f"the value itself is {value}, from finite inputs (overflow)"
        reason = f"{note}; {reason}" if reason else note
    if status != OK:
        value = math.nan
    return {
        "run_id": run_id,
        "measure": name,
        "value": float(value) if value is not None else math.nan,
        "status": status,
        "reason": reason,
        "uses": info.uses,
        "reference": info.reference,
    }


def first_non_finite(inputs: Mapping[str, Any]) -> str | None:
    """Describe the first input (in order) holding a NaN or inf, e.g. 'W[3, 5] = nan';
    None when all are finite. Inputs are numbers, arrays or None (skipped)."""
    for name, value in inputs.items():
        if value is None:
            continue
        a = np.asarray(value, dtype=np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            if a.ndim == 0:
                return f"{name} = {float(a)}"
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            index = ", ".join(map(str, where))
            return f"{name}[{index}] = {float(a[where])}"
    return None


def _guarded(
    run_id: str, name: str, inputs: Mapping[str, Any], compute: Callable[[], float]
) -> dict[str, Any]:
    """The row of `name`: 'non_finite' naming the first non-finite input, else compute()."""
    bad = first_non_finite(inputs)
    if bad is not None:
        return measure_row(run_id, name, None, NON_FINITE, f"input {bad} is not finite")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return measure_row(run_id, name, compute())


# --------------------------------------------------------------------------- weights


def _f64(weights: Weights) -> dict[str, Array]:
    """U, W, V as float64 arrays of consistent shapes (m, d), (m, m), (k, m), or raise."""
    missing = [key for key in WEIGHT_KEYS if key not in weights]
    if missing:
        raise ParameterError(f"the weights lack {missing}; expected keys {list(WEIGHT_KEYS)}.")
    for key in WEIGHT_KEYS:
        kind = np.asarray(weights[key]).dtype.kind
        if kind not in "fiu":  # a cast would drop an imaginary part or parse strings
            raise ParameterError(f"weight matrix {key} is not real-valued (dtype kind {kind!r}).")
    U, W, V = (np.asarray(weights[key], dtype=np.float64) for key in WEIGHT_KEYS)
    m = W.shape[0] if W.ndim == 2 else -1
    if U.ndim != 2 or W.shape != (m, m) or U.shape[0] != m or V.ndim != 2 or V.shape[1] != m:
        raise ParameterError(
            f"weights of inconsistent shapes U {U.shape}, W {W.shape}, V {V.shape}; "
            "expected (m, d), (m, m), (k, m)."
        )
    return {"U": U, "W": W, "V": V}


@dataclass(frozen=True)
class WeightNorms:
    """Spectral (‖A‖₂, largest singular value) and Frobenius norms of U, W, V, and the
    sizes d (input), m (hidden), k (classes)."""

    spec: dict[str, float]
    fro: dict[str, float]
    d: int
    m: int
    k: int

    @property
    def params(self) -> int:
        """md + m² + km: every weight of eq. (1) (there are no biases)."""
        return self.m * self.d + self.m * self.m + self.k * self.m


def weight_norms(weights: Weights) -> WeightNorms:
    """Spectral norms by numpy's SVD (exact to rounding; matrices of at most 128 x 128)."""
    w = _f64(weights)
    spec = {key: float(np.linalg.norm(a, 2)) if a.size else 0.0 for key, a in w.items()}
    fro = {key: float(np.linalg.norm(a)) for key, a in w.items()}
    m, d = w["U"].shape
    return WeightNorms(spec, fro, d=d, m=m, k=w["V"].shape[0])


def param_count(weights: Weights) -> int:
    """Jiang et al. eq. (20), #params: the number of weights, md + m² + km."""
    w = _f64(weights)
    return int(sum(a.size for a in w.values()))


def unrolled_layer_counts(L: int) -> dict[str, int]:
    """How often each matrix appears on the longest path of the unrolled network.

    x_1 reaches y_L through U, then W (L-1) times, then V: a depth-(L+1) feed-forward
    network with shared weights. Jiang et al.'s layer products and sums run over these
    L + 1 layers; with the three distinct matrices instead (d = 3) they would not see L.
    """
    if L < 1:
        raise ParameterError(f"the sequence length L must be >= 1, got {L}.")
    return {"U": 1, "W": L - 1, "V": 1}


def _log_prod_sq(norms: Mapping[str, float], counts: Mapping[str, int]) -> float:
    """log Π_layers ‖A‖² = Σ_A count_A · 2 log ‖A‖ (-inf if a used matrix is zero)."""
    total = 0.0
    for key, count in counts.items():
        if count == 0:
            continue
        if norms[key] == 0.0:
            return -math.inf
        total += 2.0 * count * math.log(norms[key])
    return total


# --------------------------------------------------------------------------- margins


def correct_margin_percentile(margins: ArrayLike, percentile: float = MARGIN_PERCENTILE) -> float:
    """γ for models that do not fit their training set (ours misclassify 5-30 % of it, so
    Jiang et al.'s 10th percentile of all margins is ≤ 0 and normalizes nothing): the same
    percentile among the correctly classified examples (margin > 0). For a model that fits
    its data (Jiang et al.'s setting) the two agree up to the share of errors. Our
    adaptation, not Jiang et al.'s definition. With no positive margin, the largest margin
    (≤ 0), which the margin measures then report as not applicable."""
    x = np.asarray(margins, dtype=np.float64).ravel()
    positive = x[x > 0]
    if positive.size == 0:
        return margin_percentile(x, 100.0)
    return margin_percentile(positive, percentile)


def margin_percentile(margins: ArrayLike, percentile: float = MARGIN_PERCENTILE) -> float:
    """γ of Jiang et al. (Appendix C, margin): the ⌊n·p/100⌋-th smallest training margin
    (at least the smallest), as their code's ``kthvalue(n // 10)`` for p = 10."""
    x = np.sort(np.asarray(margins, dtype=np.float64).ravel())
    if x.size == 0:
        raise ParameterError("no training margins given; pass one margin per training example.")
    k = max(1, int(math.floor(x.size * percentile / 100.0)))
    return float(x[k - 1])


def inverse_margin(gamma: float) -> float:
    """Jiang et al. eq. (22), inverse-margin: 1/γ² (the same ranking as 1/γ for γ > 0)."""
    return 1.0 / (gamma * gamma)


def log_prod_of_spec_over_margin(norms: WeightNorms, L: int, gamma: float) -> float:
    """Jiang et al. eq. (31), log(Π_i ‖A_i‖₂² / γ²) over the unrolled layers:
    log(‖U‖₂² ‖W‖₂^{2(L-1)} ‖V‖₂² / γ²)."""
    return _log_prod_sq(norms.spec, unrolled_layer_counts(L)) - 2.0 * math.log(gamma)


def log_sum_of_spec_over_margin(norms: WeightNorms, L: int, gamma: float) -> float:
    """Jiang et al. eq. (34), log(D (Π_i ‖A_i‖₂² / γ²)^{1/D}) with D = L + 1 unrolled layers:
    the sum of squared spectral norms after the rescaling that balances the layers."""
    depth = L + 1
    return math.log(depth) + log_prod_of_spec_over_margin(norms, L, gamma) / depth


def log_spec_orig(norms: WeightNorms, L: int, gamma: float) -> float:
    """Jiang et al. eq. (30), spec-orig: log(Π_i ‖A_i‖₂² / γ² · Σ_i ‖A_i‖_F² / ‖A_i‖₂²),
    products and sums over the unrolled layers (W's ratio counted L - 1 times)."""
    counts = unrolled_layer_counts(L)
    ratios = sum(
        c * (norms.fro[key] / norms.spec[key]) ** 2
        for key, c in counts.items()
        if c and norms.spec[key] > 0.0
    )
    if ratios == 0.0:  # every matrix is zero
        return -math.inf
    return log_prod_of_spec_over_margin(norms, L, gamma) + math.log(ratios)


def log_prod_of_fro_over_margin(norms: WeightNorms, L: int, gamma: float) -> float:
    """Jiang et al. eq. (36), log(Π_i ‖A_i‖_F² / γ²) over the unrolled layers:
    log(‖U‖_F² ‖W‖_F^{2(L-1)} ‖V‖_F² / γ²)."""
    return _log_prod_sq(norms.fro, unrolled_layer_counts(L)) - 2.0 * math.log(gamma)


def log_sum_of_fro_over_margin(norms: WeightNorms, L: int, gamma: float) -> float:
    """Jiang et al. eq. (38), log(D (Π_i ‖A_i‖_F² / γ²)^{1/D}), D = L + 1 unrolled layers."""
    depth = L + 1
    return math.log(depth) + log_prod_of_fro_over_margin(norms, L, gamma) / depth


# --------------------------------------------------------------------------- path norm, init


def path_norm(weights: Weights, L: int) -> float:
    """Jiang et al. eq. (44), the path norm of the bias-free ReLU RNN over L steps.

    Square every weight and feed x_t = 1 (all ones) for t = 1..L: every pre-activation is
    then non-negative, so the ReLU is the identity and the network is linear. Its summed
    output Σ_o y_L[o] = Σ over all paths (input coordinate j at step t -> hidden units at
    steps t..L -> output o) of the product of the squared weights on the path, i.e.
    1ᵀ V² (Σ_t (W²)^{L-t}) U² 1. Returns its square root (the ℓ2 path norm; Jiang et al.'s
    code takes the root). Invariant under the positive rescalings of hidden units that
    leave the function unchanged (U -> DU, W -> DWD⁻¹, V -> VD⁻¹). inf on overflow.
    """
    w = _f64(weights)
    U2, W2, V2 = (w[key] ** 2 for key in WEIGHT_KEYS)
    drive = U2.sum(axis=1)  # U² 1: every input coordinate is 1
    h = np.zeros(W2.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(L):
            h = W2 @ h + drive  # no ReLU needed: all terms are >= 0
        total = float(V2.sum(axis=0) @ h)
    return math.sqrt(total) if math.isfinite(total) else math.inf


def frobenius_distance(weights: Weights, init_weights: Weights) -> float:
    """Jiang et al. eq. (40), frobenius-distance: Σ_{A ∈ U, W, V} ‖A - A⁰‖_F² (squared)."""
    w, w0 = _f64(weights), _f64(init_weights)
    for key in WEIGHT_KEYS:
        if w[key].shape != w0[key].shape:
            raise ParameterError(
                f"initial {key} has shape {w0[key].shape}, the trained one {w[key].shape}; "
                "regenerate the initial weights from the run's own spec."
            )
    return float(sum(np.sum((w[key] - w0[key]) ** 2) for key in WEIGHT_KEYS))


def initial_weights(spec: RunSpec, d: int, k: int = 2) -> dict[str, Array]:
    """U, W, V as training started from them: the model `rnngen.train.setup` builds.

    Regenerated from the spec's seed by the same calls (`seed_streams`, then `ReLURNN`
    with the init stream, i.e. `rnngen.model.init_weights`); always on the CPU (the init
    stream is a CPU stream whatever the run's device). Torch's global RNG, which
    `seed_streams` reseeds, is restored afterwards. float64 copies, like `weights_numpy`.
    """
    from rnngen.train import seed_streams  # train imports the data layer: only when needed

    cpu = RunSpec(**{**spec.model_dump(), "device": "cpu"})
    state = torch.random.get_rng_state()
    try:
        streams = seed_streams(cpu)
        model = ReLURNN(
            d, cpu.hidden, k, init=cpu.init, init_scale=cpu.init_scale, generator=streams.init
        )
    finally:
        torch.random.set_rng_state(state)
    return model.weights_numpy()


# --------------------------------------------------------------------------- input statistics


@dataclass(frozen=True)
class InputStats:
    """What the bound measures need of the training inputs.

    n: training examples (as many as margins); L: sequence length;
    B_x: max over examples and steps of ‖x_t‖₂ (the papers' input-norm bound; for noisy
    training pass the inputs the margins were measured on).
    """

    n: int
    L: int
    B_x: float


def input_stats(batches: Iterable[ArrayLike]) -> InputStats:
    """n, L and B_x = max_{i,t} ‖x_{i,t}‖₂ from (B, L, d) batches, one pass, no model."""
    n, L, bx = 0, None, 0.0
    for batch in batches:
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim != 3 or (L is not None and x.shape[1] != L):
            raise ParameterError(f"expected (B, L, d) batches of one L; got shape {x.shape}.")
        L = x.shape[1]
        n += x.shape[0]
        if x.size:
            bx = max(bx, float(np.sqrt(np.max(np.sum(x * x, axis=2)))))
    if L is None or n == 0:
        raise ParameterError("input_stats got no batches; pass the training batches.")
    return InputStats(n=n, L=int(L), B_x=bx)


# --------------------------------------------------------------------------- RNN bounds


def zhang_complexity(
    norms: WeightNorms, *, L: int, n: int, B_x: float, gamma: float, delta: float
) -> float:
    """The complexity term of Zhang, Lei & Dhillon (ICML 2018)'s RNN bound, O(·)-constant 1.

    Their theorem (PAC-Bayes, following Neyshabur et al. 2018, Thm 1): for a vanilla RNN
    h_t = σ(W h_{t-1} + U x_t), y = V h_L with σ L_σ-Lipschitz, σ(0) = 0 (ReLU: L_σ = 1),
    ‖x_t‖₂ ≤ B, with probability ≥ 1 - δ over n samples, for every γ > 0,

        L_0(f) ≤ L̂_γ(f) + O( sqrt( [ B² L⁴ h ln(h) ‖U‖₂² ‖V‖₂² max{1, ‖W‖₂^{2L}}
                                      · Σ_{A ∈ U,W,V} ‖A‖_F²/‖A‖₂²  +  ln(nL/δ) ] / (γ² n) ) )

    with h = max{d, m, k}, L̂_γ the fraction of training margins ≤ γ.

    Caveat (also in every row's reason): the text of the theorem was not available to us
    (the search corpora hold only the abstract of arXiv:1803.09327). The form above is the
    RNN analogue of Neyshabur et al.'s bound that the paper adapts; it reduces to Tu et
    al.'s (2020) restatement of its order, max{d,m,k} L² ‖U‖₂‖V‖₂ max{1, ‖W‖₂^L}/(√n γ)
    (their comparison; STUDY.md §5), when ‖A‖_F² ≤ h ‖A‖₂² and B, logs are dropped. The
    O(·) constant is unpublished: taken as 1. Least certain are the power of L (L⁴ under
    the root, i.e. the L² of Tu et al.'s restatement) and the log's argument; h ln h is a
    common factor for models of one hidden size, but another power of L would change how
    models of different L rank. Computed in log space; inf only when the value overflows.
    """
    h = max(norms.d, norms.m, norms.k)
    ratios = sum((norms.fro[a] / norms.spec[a]) ** 2 for a in WEIGHT_KEYS if norms.spec[a] > 0)
    if min(norms.spec["U"], norms.spec["V"], B_x, ratios) <= 0.0:
        log_main = -math.inf  # the network (or the data) is zero: only ln(nL/δ) remains
    else:
        log_main = (
            2.0 * math.log(B_x)
            + 4.0 * math.log(L)
            + math.log(h * math.log(h))
            + 2.0 * math.log(norms.spec["U"])
            + 2.0 * math.log(norms.spec["V"])
            + 2.0 * L * max(0.0, math.log(norms.spec["W"]) if norms.spec["W"] > 0 else 0.0)
            + math.log(ratios)
        )
    log_num = float(np.logaddexp(log_main, math.log(math.log(n * L / delta))))
    log_value = 0.5 * (log_num - 2.0 * math.log(gamma) - math.log(n))
    return _exp(log_value)


def chen_complexity(norms: WeightNorms, *, L: int, n: int, B_x: float, gamma: float) -> float:
    """The complexity term of Chen, Li & Zhao (AISTATS 2020)'s vanilla-RNN bound,
    O(·)-constant 1.

    Their theorem (covering numbers -> Rademacher complexity, in our notation: their W is
    our input matrix U, their U our recurrent W; activations ρ-Lipschitz with σ(0) = 0,
    here ReLU hidden and identity output, ρ_h = ρ_y = 1; ‖U‖₂, ‖W‖₂, ‖V‖₂ spectral,
    ‖x_t‖₂ ≤ B_x): with probability ≥ 1 - δ over n samples, for every γ > 0,

        P(error) ≤ R̂_γ(f) + O( D B_x ‖V‖₂ ‖U‖₂ a_L sqrt(ln(D L n)) / (γ sqrt(n))
                                + sqrt(ln(1/δ)/n) ),
        a_L = (‖W‖₂^L - 1)/(‖W‖₂ - 1) = Σ_{j<L} ‖W‖₂^j   (= L at ‖W‖₂ = 1),

    with D = sqrt(md + m² + km), the square root of the number of parameters (the paper
    states its bound "in terms of the spectral norms ... and the total number of
    parameters"). B_x ‖U‖₂ a_L bounds ‖h_L‖₂, so the term is (output scale / γ) ·
    sqrt(#params · log / n), the covering-number rate.

    Caveat (also in every row's reason): the theorem's text was not available to us (only
    the abstract of arXiv:1910.12947); the form above is reconstructed. The O(·) constant
    is unpublished (taken as 1). Uncertain: the log's argument, whether their "d" is
    √#params or the largest width (a factor common to all models of one hidden size), and
    whether the length enters as a_L alone or with a further factor of L (which would
    change how models of different L rank). The confidence term is added by `chen_bound`.
    """
    D = math.sqrt(norms.params)
    a_L = geometric_sum(norms.spec["W"], L)
    scale = B_x * norms.spec["V"] * norms.spec["U"] * a_L
    with np.errstate(over="ignore", invalid="ignore"):
        return float(D * scale * math.sqrt(math.log(D * L * n)) / (gamma * math.sqrt(n)))


def _exp(log_value: float) -> float:
    """exp that returns inf instead of raising on overflow."""
    return math.exp(log_value) if log_value < 709.0 else math.inf


def _best_over_grid(
    margins: Array, alpha_grid: Sequence[float], value_at: Callable[[float], float]
) -> tuple[float, float]:
    """(min over α of the indicator margin loss + value_at(α), the minimizing α)."""
    totals = [indicator_margin_loss(margins, a) + value_at(a) for a in alpha_grid]
    i = int(np.argmin(totals))
    return float(totals[i]), float(alpha_grid[i])


def zhang_bound(
    margins: ArrayLike,
    norms: WeightNorms,
    stats: InputStats,
    *,
    delta: float = DELTA,
    alpha_grid: Sequence[float] = DEFAULT_ALPHA_GRID,
) -> tuple[float, float]:
    """Zhang et al. (2018)'s bound (see `zhang_complexity`) at its best γ on the fixed α
    grid, δ split over the grid: (value, best α). L̂_γ is the indicator margin loss."""
    m = np.asarray(margins, dtype=np.float64)
    d = union_bound_delta(delta, len(alpha_grid))

    def at(a: float) -> float:
        return zhang_complexity(norms, L=stats.L, n=stats.n, B_x=stats.B_x, gamma=a, delta=d)

    return _best_over_grid(m, alpha_grid, at)


def chen_bound(
    margins: ArrayLike,
    norms: WeightNorms,
    stats: InputStats,
    *,
    delta: float = DELTA,
    alpha_grid: Sequence[float] = DEFAULT_ALPHA_GRID,
) -> tuple[float, float]:
    """Chen et al. (2020)'s bound (see `chen_complexity`) at its best γ on the fixed α grid:
    (value, best α). R̂_γ is bounded by the indicator margin loss (a ramp loss is at most
    it) and the confidence term is 3 sqrt(ln(2/δ')/(2n)) with δ' = δ/|grid| (the standard
    Rademacher form; the paper's O(sqrt(log(1/δ)/n)) gives no constant)."""
    m = np.asarray(margins, dtype=np.float64)
    conf = confidence_term(union_bound_delta(delta, len(alpha_grid)), stats.n)

    def at(a: float) -> float:
        return chen_complexity(norms, L=stats.L, n=stats.n, B_x=stats.B_x, gamma=a) + conf

    return _best_over_grid(m, alpha_grid, at)


# --------------------------------------------------------------------------- Tu et al. rows

_TU_COLUMNS = {
    "tu2020_thm2": "bound_thm2",
    "tu2020_thm3": "bound_thm3",
    "tu2020_thm2_remark6": "bound_thm2_remark6",
}
# The inputs of each bound in the bounds table, in the order a reason names them.
_TU_INPUTS = {
    "bound_thm3": (
        "margin_loss",
        "rademacher_fs_term",
        "rademacher_norm1_term",
        "noise_term",
        "confidence_term",
        "beta_U",
        "beta_V",
        "beta_W",
        "Lambda",
        "r_fs",
        "frob_X",
        "norm1_XT",
        "lambda_min",
    ),
    "bound_thm2": (
        "indicator_loss_clean",
        "complexity_term_thm2",
        "confidence_term",
        "beta_U",
        "beta_V",
        "beta_W",
        "Lambda",
        "r_fs_clean",
        "lambda_min",
    ),
    "bound_thm2_remark6": (
        "indicator_loss_clean",
        "confidence_term",
        "beta_U",
        "beta_V",
        "beta_W",
        "Lambda",
        "B",
        "lambda_min",
    ),
}


def _tu_row(run_id: str, name: str, best: Mapping[str, Any]) -> dict[str, Any]:
    """One Tu et al. measure from a run's best-α bounds row."""
    column = _TU_COLUMNS[name]
    value = best.get(column)
    absent = value is None or (isinstance(value, float) and math.isnan(value))
    beta_W = best.get("beta_W")
    if column == "bound_thm2_remark6" and absent and (beta_W is None or beta_W >= 1.0):
        # the bounds stage leaves it null when β_W >= 1 (pandas would read NaN)
        why = f"Remark 6 needs β_W < 1; this model has β_W = {beta_W}"
        return measure_row(run_id, name, None, NOT_APPLICABLE, why)
    if value is None:
        return measure_row(run_id, name, None, MISSING, f"the bounds row has no {column}")
    if math.isfinite(float(value)):
        return measure_row(run_id, name, float(value))
    inputs = {c: best.get(c) for c in _TU_INPUTS[column] if c in best}
    bad = first_non_finite(inputs)
    reason = (
        f"{column} = {value}: input {bad} is not finite"
        if bad
        else f"{column} = {value}, although its inputs {list(inputs)} are finite (overflow)"
    )
    return measure_row(run_id, name, None, NON_FINITE, reason)


def tu_measure_rows(
    bounds_rows: Iterable[Mapping[str, Any]], run_ids: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Tu et al.'s Theorems 2, 3 and Remark 6 as measure rows, read from bounds rows.

    `bounds_rows` are rows of results/bounds.parquet (one per run and α). Each run's value
    is its row flagged `alpha_best` with status 'ok' -- the α that minimizes Theorem 3 on
    the fixed grid, as `rnngen.analysis.best_rows` and the Kendall table use; Theorem 2
    and Remark 6 are read at that α too. A run (of `run_ids`, default: every run in the
    rows) without such a row is 'non_finite' when the bounds stage marked its rows so
    (its reason names the first non-finite input), else 'missing', with the bounds'
    own status and reason.
    """
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for row in bounds_rows:
        by_run.setdefault(str(row["run_id"]), []).append(row)
    wanted = list(by_run) if run_ids is None else list(run_ids)
    out: list[dict[str, Any]] = []
    for rid in wanted:
        rows = by_run.get(rid, [])
        best = next((r for r in rows if r.get("alpha_best") and r.get("status") == OK), None)
        if best is not None:
            out.extend(_tu_row(rid, name, best) for name in _TU_COLUMNS)
            continue
        status, why = _tu_unavailable(rows)
        out.extend(measure_row(rid, name, None, status, why) for name in _TU_COLUMNS)
    return out


def _tu_unavailable(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(status, reason) of a run whose bounds rows hold no finite best α."""
    if not rows:
        return MISSING, "no bounds rows for this run (run the bounds stage first)"
    bad = next((r for r in rows if r.get("status") == NON_FINITE), None)
    if bad is not None:  # the bounds stage named the first non-finite input of each row
        return NON_FINITE, f"every α of the grid is non-finite; e.g. {bad.get('reason')}"
    first = rows[0]
    why = f"no best-α row with status 'ok' (status {first.get('status')!r}: {first.get('reason')})"
    return MISSING, why


# --------------------------------------------------------------------------- all measures


def _margin_rows(run_id: str, norms: WeightNorms, L: int, gamma: float) -> list[dict[str, Any]]:
    """Jiang et al.'s margin-normalized measures; 'not_applicable' when γ <= 0."""
    fns: dict[str, Callable[[WeightNorms, int, float], float]] = {
        "log_spec_orig": log_spec_orig,
        "log_prod_of_spec_over_margin": log_prod_of_spec_over_margin,
        "log_sum_of_spec_over_margin": log_sum_of_spec_over_margin,
        "log_prod_of_fro_over_margin": log_prod_of_fro_over_margin,
        "log_sum_of_fro_over_margin": log_sum_of_fro_over_margin,
        "inverse_margin": lambda _n, _L, g: inverse_margin(g),
    }
    if gamma <= 0.0:
        why = (
            f"the {MARGIN_PERCENTILE:g}th-percentile training margin γ = {gamma:.4g} is not "
            "positive (at least 10 % of training margins are <= 0): γ² normalizes nothing"
        )
        return [measure_row(run_id, name, None, NOT_APPLICABLE, why) for name in fns]
    return [measure_row(run_id, name, fn(norms, L, gamma)) for name, fn in fns.items()]


def _bound_rows(
    run_id: str, margins: Array, norms: WeightNorms, stats: InputStats, delta: float
) -> list[dict[str, Any]]:
    rows = []
    for name, fn, helper in (
        ("zhang2018_bound", zhang_bound, "zhang_complexity"),
        ("chen2020_bound", chen_bound, "chen_complexity"),
    ):
        with np.errstate(over="ignore", invalid="ignore"):
            value, alpha = fn(margins, norms, stats, delta=delta)
        row = measure_row(run_id, name, value, OK, _CONSTANT_CAVEAT.format(fn=helper))
        if row["status"] == OK:
            row["reason"] += f"; best α = {alpha:g}"
        rows.append(row)
    return rows


def compute_measures(
    weights: Weights,
    spec: RunSpec,
    train_margins: ArrayLike,
    input_stats: InputStats,
    init_weights: Weights | None,
    bounds_rows: Iterable[Mapping[str, Any]] | None = None,
    *,
    delta: float = DELTA,
) -> list[dict[str, Any]]:
    """Every measure of `MEASURES` except flatness (see `flatness_rows`), one row each.

    weights: the trained U, W, V. spec: the run's spec (run_id, L). train_margins: one
    margin per training example (from the caller's single forward pass; for σ > 0 the
    study passes those of the recorded noisy draw). input_stats: n, L, B_x of the same
    inputs. init_weights: U⁰, W⁰, V⁰ (`initial_weights(spec, d, k)`), or None ('missing'
    Frobenius distance). bounds_rows: bounds-table rows (any runs; this run's are used),
    or None ('missing' Tu et al. rows). Rows come in the order of `MEASURE_NAMES`.
    A NaN or inf in an input makes the rows that use it 'non_finite', naming it.
    """
    run_id = spec.run_id
    if input_stats.L != spec.L:
        raise ParameterError(f"input_stats are for L = {input_stats.L}, the spec has L = {spec.L}.")
    margins = np.asarray(train_margins, dtype=np.float64).ravel()
    if margins.size != input_stats.n:
        raise ParameterError(
            f"{margins.size} training margins but input_stats.n = {input_stats.n}; pass one "
            "margin per training example of the inputs the statistics describe."
        )
    w = _f64(weights)
    rows: dict[str, dict[str, Any]] = {}
    if bounds_rows is None:
        why = "no bounds rows given (compute results/bounds.parquet first)"
        for name in _TU_COLUMNS:
            rows[name] = measure_row(run_id, name, None, MISSING, why)
    else:
        rows.update({r["measure"]: r for r in tu_measure_rows(bounds_rows, [run_id])})

    weight_inputs = {f"weights {k}": w[k] for k in WEIGHT_KEYS}
    data_inputs = {**weight_inputs, "train_margins": margins, "B_x": input_stats.B_x}
    bad = first_non_finite(data_inputs)
    if bad is None:
        norms = weight_norms(w)
        data_rows = [
            *_bound_rows(run_id, margins, norms, input_stats, delta),
            *_margin_rows(run_id, norms, spec.L, correct_margin_percentile(margins)),
        ]
    else:  # e.g. a diverged run: every row that needs these inputs names the bad one
        needing = [
            n for n in MEASURE_NAMES if INFO[n].source == "weights" and INFO[n].uses != "none"
        ]
        data_rows = [
            measure_row(run_id, n, None, NON_FINITE, f"input {bad} is not finite") for n in needing
        ]
    rows.update({r["measure"]: r for r in data_rows})

    if init_weights is None:
        why = "no initial weights given (regenerate them with initial_weights(spec, d, k))"
        rows["frobenius_distance"] = measure_row(run_id, "frobenius_distance", None, MISSING, why)
    else:
        w0 = _f64(init_weights)
        init_inputs = {**weight_inputs, **{f"init_weights {k}": w0[k] for k in WEIGHT_KEYS}}
        rows["frobenius_distance"] = _guarded(
            run_id, "frobenius_distance", init_inputs, lambda: frobenius_distance(w, w0)
        )
    rows["path_norm"] = _guarded(run_id, "path_norm", weight_inputs, lambda: path_norm(w, spec.L))
    rows["param_count"] = measure_row(run_id, "param_count", float(param_count(w)))
    return [rows[n] for n in MEASURE_NAMES if n in rows]


# --------------------------------------------------------------------------- flatness

TrainError = Callable[[dict[str, Array]], float]


@dataclass(frozen=True)
class SigmaSearch:
    """Result of `flatness_sigma`: σ′ (NaN unless status 'ok') and how it was found."""

    sigma: float
    status: str
    reason: str
    base_error: float
    evaluations: int  # calls of the training-error callable


def subset_error(x: ArrayLike, labels: ArrayLike, *, batch_size: int = 250) -> TrainError:
    """A `TrainError` for the flatness search: the 0-1 error (margin <= 0, as
    `rnngen.train`) of given U, W, V on the fixed inputs x (n, L, d) with their labels,
    evaluated by `rnngen.model.ReLURNN` in float32 on the CPU, `batch_size` rows at a time.
    Build it once from the subset the caller chose (e.g. a few thousand training reviews)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if xt.ndim != 3 or yt.shape != (xt.shape[0],):
        raise ParameterError(
            f"expected x (n, L, d) and n labels; got {tuple(xt.shape)}, {tuple(yt.shape)}."
        )
    models: dict[tuple[int, ...], ReLURNN] = {}

    @torch.no_grad()
    def error(weights: dict[str, Array]) -> float:
        w = _f64(weights)
        (m, d), k = w["U"].shape, w["V"].shape[0]
        if (m, d, k) not in models:  # built once; its own init draws are overwritten
            state = torch.random.get_rng_state()
            models[m, d, k] = ReLURNN(d, m, k).eval()
            torch.random.set_rng_state(state)
        model = models[m, d, k]
        for key in WEIGHT_KEYS:
            getattr(model, key).copy_(torch.from_numpy(w[key]))
        wrong = 0
        for start in range(0, xt.shape[0], batch_size):
            logits = model(xt[start : start + batch_size])
            y = yt[start : start + batch_size]
            own = logits.gather(1, y[:, None])[:, 0]
            others = logits.scatter(1, y[:, None], float("-inf")).max(dim=1).values
            margin = own - others
            # a perturbation that overflows the outputs misclassifies, never classifies
            wrong += int((~torch.isfinite(margin) | (margin <= 0)).sum())
        return wrong / max(xt.shape[0], 1)

    return error


def _perturbed(
    w: Mapping[str, Array], z: Mapping[str, Array], sigma: float, eps: float | None
) -> dict[str, Array]:
    """w + u with u = σ z (isotropic) or u = sqrt(σ² w² + ε²) z (magnitude-aware)."""
    if eps is None:
        return {k: w[k] + sigma * z[k] for k in w}
    return {k: w[k] + np.sqrt(sigma**2 * w[k] ** 2 + eps**2) * z[k] for k in w}


def flatness_sigma(
    weights: Weights,
    train_error: TrainError,
    *,
    magnitude_eps: float | None = None,
    max_increase: float = MAX_ERROR_INCREASE,
    sigma_range: tuple[float, float] = SIGMA_RANGE,
    steps: int = BISECTION_STEPS,
    draws: int = MC_DRAWS,
    seed: int = 0,
) -> SigmaSearch:
    """σ′ of Jiang et al.'s PAC-Bayesian flatness (Appendix C), by bisection as theirs.

    σ′ is the largest σ whose Gaussian weight perturbation raises the training error by at
    most `max_increase` (0.1) on average: mean_j err(w + u_j) - err(w) ≤ 0.1, with
    u_j ~ N(0, σ² I) or, magnitude-aware (`magnitude_eps` = ε), u_{j,i} ~ N(0, σ² w_i² + ε²)
    (Jiang et al.'s posterior for pacbayes.mag.*). Jiang et al. ask for an error of at most
    0.1 on models at ~0 training error; ours are not, so the rise is what is bounded.

    `train_error(weights) -> float` returns the 0-1 error of the given U, W, V on the
    caller's fixed training subset. Bisection on log σ within `sigma_range`, `steps`
    halvings, each σ judged by `draws` perturbations; the same standard-normal directions
    z_j (from `seed`) are used at every σ (common random numbers), so the estimated rise
    is a smooth function of σ and the bisection is stable. Costs (2 + steps)·draws + 1
    error evaluations. Returns the largest σ known to satisfy the condition.
    """
    w = _f64(weights)
    rng = np.random.default_rng(seed)
    z = [{k: rng.standard_normal(w[k].shape) for k in WEIGHT_KEYS} for _ in range(draws)]
    base = float(train_error(w))
    calls = 1

    def rise(sigma: float) -> float:
        nonlocal calls
        calls += draws
        return float(np.mean([train_error(_perturbed(w, zj, sigma, magnitude_eps)) for zj in z]))

    lo, hi = sigma_range
    r_hi = rise(hi) - base
    if r_hi <= max_increase:
        why = f"the error rises by only {r_hi:.3g} <= {max_increase} even at σ = {hi:g}"
        return SigmaSearch(math.nan, NOT_APPLICABLE, why, base, calls)
    r_lo = rise(lo) - base
    if r_lo > max_increase:
        why = f"the error rises by {r_lo:.3g} > {max_increase} already at σ = {lo:g}"
        return SigmaSearch(math.nan, NOT_APPLICABLE, why, base, calls)
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if rise(mid) - base <= max_increase:
            lo = mid
        else:
            hi = mid
    how = (
        f"σ′ = {lo:.4g}: {steps} log-bisection steps in {sigma_range}, {draws} draws per σ, "
        f"error rise <= {max_increase} over the base error {base:.4g}"
    )
    return SigmaSearch(lo, OK, how, base, calls)


def pacbayes_flatness(sigma: float) -> float:
    """Jiang et al. eq. (53) pacbayes.flatness (and eq. (61) for the magnitude-aware σ′):
    1/σ′²."""
    return 1.0 / (sigma * sigma)


def pacbayes_init(distance_sq: float, sigma: float, n: int) -> float:
    """Jiang et al. eq. (48) pacbayes.init: ‖w - w⁰‖₂²/(4σ′²) + log(n/σ′) + 10, with
    ‖w - w⁰‖₂² the squared distance to initialization over all weights and n the number
    of training examples (their m)."""
    return distance_sq / (4.0 * sigma * sigma) + math.log(n / sigma) + 10.0


def flatness_rows(
    run_id: str,
    weights: Weights,
    init_weights: Weights | None,
    train_error: TrainError,
    n: int,
    *,
    magnitude_eps: float = MAGNITUDE_EPS,
    steps: int = BISECTION_STEPS,
    draws: int = MC_DRAWS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows of pacbayes_init, pacbayes_flatness and pacbayes_mag_flatness.

    Two σ′ searches (`flatness_sigma`, isotropic and magnitude-aware), each costing
    (2 + steps)·draws + 1 evaluations of `train_error` on the caller's subset. n is the
    size of the whole training set (pacbayes_init's log(n/σ′)).
    """
    w = _f64(weights)
    bad = first_non_finite({f"weights {k}": w[k] for k in WEIGHT_KEYS})
    names = ("pacbayes_init", "pacbayes_flatness", "pacbayes_mag_flatness")
    if bad is not None:
        return [
            measure_row(run_id, n_, None, NON_FINITE, f"input {bad} is not finite") for n_ in names
        ]
    iso = flatness_sigma(w, train_error, steps=steps, draws=draws, seed=seed)
    mag = flatness_sigma(
        w, train_error, magnitude_eps=magnitude_eps, steps=steps, draws=draws, seed=seed
    )
    rows = []
    for name, search in (("pacbayes_flatness", iso), ("pacbayes_mag_flatness", mag)):
        if search.status == OK:
            rows.append(
                measure_row(run_id, name, pacbayes_flatness(search.sigma), OK, search.reason)
            )
        else:
            rows.append(measure_row(run_id, name, None, search.status, search.reason))
    if init_weights is None:
        init_row = measure_row(run_id, "pacbayes_init", None, MISSING, "no initial weights given")
    elif iso.status != OK:
        init_row = measure_row(run_id, "pacbayes_init", None, iso.status, iso.reason)
    else:
        dist = frobenius_distance(w, init_weights)
        init_row = measure_row(
            run_id, "pacbayes_init", pacbayes_init(dist, iso.sigma, n), OK, iso.reason
        )
    return [init_row, *rows]
