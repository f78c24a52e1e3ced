"""Generalization-bound terms of Tu, He & Tao (ICLR 2020), one pure function per symbol.

The network is the paper's eq. (1) without biases::

    g_t = U x_t + W h_{t-1},   h_t = relu(g_t),   y_t = V h_t,   h_0 = 0,   t = 1..L

with ``U`` of shape (m, d), ``W`` (m, m) and ``V`` (k, m) -- exactly torch's
``nn.RNN(...).weight_ih_l0``, ``weight_hh_l0`` and ``nn.Linear(m, k, bias=False).weight``.
A data batch ``x`` has shape (B, L, d) (pre-padded, ``x[:, t - 1]`` is x_t); labels are
ints in {0..k-1}. Everything is computed in numpy float64: the inputs are converted on entry.

Symbols follow the paper (and the README's method section); ``TERM_COLUMNS`` names the columns
that :func:`bound_row` fills, and those names are the Parquet column names.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

TERM_COLUMNS: tuple[str, ...] = (
    "beta_U",
    "beta_V",
    "beta_W",
    "Lambda",
    "r_fs",
    "r_fr",
    "frob_X",
    "norm1_XT",
    "lambda_min",
    "margin_loss",
    "rademacher_fs_term",
    "rademacher_norm1_term",
    "complexity_term",
    "noise_term",
    "confidence_term",
    "bound_thm2",
    "bound_thm3",
    "bound_thm2_remark6",
    "zhang_order",
)

# The margins α at which every model's bounds are evaluated, fixed before any data is seen:
# α = 2^j for j = -10..10 (about 0.001 to 1000, beyond the margins a trained model has on
# either side). A bound holds for one fixed α; taking the best of |grid| values costs a
# union bound, δ -> δ/|grid|. A grid read off the training margins would make that union
# bound depend on the data, which is what it must not do.
ALPHA_EXPONENTS: tuple[int, ...] = tuple(range(-10, 11))
DEFAULT_ALPHA_GRID: tuple[float, ...] = tuple(2.0**j for j in ALPHA_EXPONENTS)
DEFAULT_ALPHA_RULE = (
    f"α ∈ {{2^j : j = {ALPHA_EXPONENTS[0]}, …, {ALPHA_EXPONENTS[-1]}}}, fixed before any data "
    "was seen; δ split evenly over the grid (union bound); the best α minimizes Theorem 3"
)

# Below this value of L * |1 - beta| the closed forms of Lambda and of the geometric sum
# lose digits to cancellation (relative error ~ eps / (L |1 - beta|)^2), so we sum the
# positive series directly instead; above it the closed forms are accurate to a few ulp.
_SERIES_SWITCH = 1.0


# --------------------------------------------------------------------------- helpers


def usable_lambda_min(row: dict | None, L: int) -> tuple[float | None, str]:
    """The one rule for which λ_min a bound may use: a spectrum row with status
    'certified' and a finite, positive λ_min. Returns (λ_min, "") or (None, why not)."""
    if row is None:
        return None, f"no spectrum row for L={L}; run `rnngen spectrum --L {L}` first"
    lam = row.get("lambda_min")
    if row.get("status") != "certified" or lam is None:
        return None, f"λ_min at L={L} is uncertified ({row.get('message') or 'no value'})"
    if not math.isfinite(lam) or lam <= 0:
        return None, f"λ_min at L={L} is {lam:.3e}, not a finite positive number"
    return float(lam), ""


def _f64(a: ArrayLike) -> Array:
    """Return ``a`` as a float64 numpy array (no copy when it already is one)."""
    return np.asarray(a, dtype=np.float64)


def _check_params(U: Array, W: Array, V: Array) -> None:
    """Raise a readable error unless U (m, d), W (m, m), V (k, m) have consistent shapes."""
    m = W.shape[0]
    if U.ndim != 2 or W.shape != (m, m) or V.ndim != 2 or U.shape[0] != m or V.shape[1] != m:
        raise ValueError(
            f"expected U (m, d), W (m, m), V (k, m); got U {U.shape}, W {W.shape}, "
            f"V {V.shape}. Pass weight_ih_l0, weight_hh_l0 and the Linear readout weight."
        )


def _batch(x: ArrayLike, d: int) -> Array:
    """Return ``x`` as float64 of shape (B, L, d), or raise a readable error."""
    x = _f64(x)
    if x.ndim != 3 or x.shape[2] != d:
        raise ValueError(f"expected a batch x of shape (B, L, d={d}); got {x.shape}")
    return x


def _labels(labels: ArrayLike, n: int, k: int) -> NDArray[np.int64]:
    """Return ``labels`` as int64 of shape (n,) with values in {0..k-1}, or raise."""
    y = np.asarray(labels)
    if y.shape != (n,) or (n and (y.min() < 0 or y.max() >= k)):
        raise ValueError(f"expected {n} integer labels in 0..{k - 1}; got shape {y.shape}")
    return y.astype(np.int64)


def _power(base: float, exponent: int) -> float:
    """``base ** exponent`` that returns inf on overflow instead of raising."""
    with np.errstate(over="ignore"):
        return float(np.power(np.float64(base), exponent))


# --------------------------------------------------------------------------- norms


def beta(A: ArrayLike) -> float:
    """β_A = ‖Aᵀ‖₁: the largest absolute row sum of A (the paper's notation).

    Used for β_U (U of shape (m, d)), β_W (W (m, m)) and β_V (V (k, m)). It is the
    ∞→∞ operator norm, ‖A z‖_∞ ≤ β_A ‖z‖_∞, which is what Lemma 8 needs.
    """
    A = _f64(A)
    if A.ndim != 2:
        raise ValueError(f"beta expects a matrix; got shape {A.shape}")
    return float(np.abs(A).sum(axis=1).max())


def Lambda(beta_W: float, L: int) -> float:
    """Λ of Theorems 2-3: Σ_{t=1}^{L} t β_W^{t-1}, in closed form.

    β_W ≠ 1: Λ = (1/(1-β_W)) ((1-β_W^L)/(1-β_W) - L β_W^L); β_W = 1: Λ = (L + L²)/2.
    The β_W ≠ 1 form cancels catastrophically near β_W = 1 (relative error about
    eps / (L |1-β_W|)²), so when L |1-β_W| < 1 we sum the series of positive terms
    directly (O(L), accurate to ~L·eps). For β_W > 1 the closed form is evaluated as
    (β^L (L(β-1) - 1) + 1) / (β-1)², which has no cancellation there. Returns inf when
    the true value overflows float64.
    """
    b, L = float(beta_W), int(L)
    if b < 0 or L < 1:
        raise ValueError(f"Lambda needs beta_W >= 0 and L >= 1; got beta_W={b}, L={L}")
    if b == 1.0:
        return (L + L * L) / 2.0
    delta = 1.0 - b
    if L * abs(delta) < _SERIES_SWITCH:
        t = np.arange(1, L + 1, dtype=np.float64)
        return float(np.sum(t * np.power(b, t - 1.0)))
    bL = _power(b, L)
    if b > 1.0:
        return (bL * (L * (b - 1.0) - 1.0) + 1.0) / (delta * delta)
    return ((1.0 - bL) / delta - L * bL) / delta


def geometric_sum(beta_W: float, L: int) -> float:
    """Σ_{i=1}^{L} β_W^{L-i} = (1 - β_W^L)/(1 - β_W) (= L at β_W = 1), as in Theorem 3.

    Uses the same series/closed-form switch as :func:`Lambda` for stability near 1.
    """
    b, L = float(beta_W), int(L)
    if b < 0 or L < 1:
        raise ValueError(f"geometric_sum needs beta_W >= 0, L >= 1; got {b}, {L}")
    if b == 1.0:
        return float(L)
    if L * abs(1.0 - b) < _SERIES_SWITCH:
        return float(np.sum(np.power(b, np.arange(L, dtype=np.float64))))
    return (_power(b, L) - 1.0) / (b - 1.0)


def c_vector(L: int) -> Array:
    """c = (L+1, L, ..., 2) of Lemma 1, i.e. c_t = L + 2 - t for t = 1..L; shape (L,)."""
    return np.arange(L + 1, 1, -1, dtype=np.float64)


# --------------------------------------------------------------------------- network paths


def forward_yL(U: ArrayLike, W: ArrayLike, V: ArrayLike, x: ArrayLike) -> Array:
    """y_L of eq. (1) for a batch x (B, L, d); returns (B, k) in float64."""
    U, W, V = _f64(U), _f64(W), _f64(V)
    _check_params(U, W, V)
    x = _batch(x, U.shape[1])
    h = np.zeros((x.shape[0], W.shape[0]))
    for t in range(x.shape[1]):
        h = np.maximum(x[:, t] @ U.T + h @ W.T, 0.0)
    return h @ V.T


def tau_c(
    U: ArrayLike, W: ArrayLike, V: ArrayLike, x: ArrayLike, c: ArrayLike | None = None
) -> Array:
    """Linear-path output τ(θ)c = Σ_t c_t V W^{L-t} U x_t (the paper's eq. 2).

    No ReLU masks. Computed by s_t = W s_{t-1} + c_t U x_t, s_0 = 0, then V s_L.
    x: (B, L, d); c: (L,), default :func:`c_vector`; returns (B, k).
    """
    U, W, V = _f64(U), _f64(W), _f64(V)
    _check_params(U, W, V)
    x = _batch(x, U.shape[1])
    c = c_vector(x.shape[1]) if c is None else _f64(c)
    s = np.zeros((x.shape[0], W.shape[0]))
    for t in range(x.shape[1]):
        s = s @ W.T + c[t] * (x[:, t] @ U.T)
    return s @ V.T


def _forward_and_eta(U: Array, W: Array, V: Array, x: Array, c: Array) -> tuple[Array, Array]:
    """Return (y_L, η(θ)c), both (B, k), from one pass that shares the ReLU masks D_t."""
    h = np.zeros((x.shape[0], W.shape[0]))
    z = np.zeros_like(h)
    for t in range(x.shape[1]):
        ux = x[:, t] @ U.T
        g = ux + h @ W.T
        mask = g > 0.0  # D_t = diag(relu'(g_t)), relu'(0) = 0 as in torch
        h = np.where(mask, g, 0.0)
        z = np.where(mask, c[t] * ux + z @ W.T, 0.0)
    return h @ V.T, z @ V.T


def eta_c(
    U: ArrayLike, W: ArrayLike, V: ArrayLike, x: ArrayLike, c: ArrayLike | None = None
) -> Array:
    """BPTT-path output η(θ)c = Σ_t c_t V D_L W D_{L-1} ⋯ W D_t U x_t (Lemma 1).

    D_t = diag(1[g_t > 0]) comes from the actual forward pass. Computed by the forward
    recurrence z_t = D_t (c_t U x_t + W z_{t-1}), z_0 = 0, y = V z_L.
    x: (B, L, d); c: (L,), default :func:`c_vector`; returns (B, k).
    With c = ones this is y_L; with the default c it is the derivative of y_L along θ.
    """
    U, W, V = _f64(U), _f64(W), _f64(V)
    _check_params(U, W, V)
    x = _batch(x, U.shape[1])
    c = c_vector(x.shape[1]) if c is None else _f64(c)
    return _forward_and_eta(U, W, V, x, c)[1]


# --------------------------------------------------------------------------- margins, losses


def margins(outputs: ArrayLike, labels: ArrayLike) -> Array:
    """M(x, y) = [y_L]_y - max_{y'≠y} [y_L]_{y'} ; outputs (B, k) -> (B,)."""
    out = _f64(outputs)
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(f"margins needs outputs of shape (B, k >= 2); got {out.shape}")
    y = _labels(labels, out.shape[0], out.shape[1])
    rows = np.arange(out.shape[0])
    own = out[rows, y]
    others = out.copy()
    others[rows, y] = -np.inf
    return own - others.max(axis=1)


def indicator_margin_loss(margins: ArrayLike, alpha: float) -> float:
    """(1/n) Σ 1[M_i ≤ α]: the empirical margin loss of Theorem 2; margins (n,)."""
    return float(np.mean(_f64(margins) <= alpha))


def ramp_loss(margins: ArrayLike, alpha: float) -> float:
    """(1/n) Σ Φ_α(M_i) with Φ_α(u) = 1, 1 - u/α, 0 for u ≤ 0, 0 < u < α, u ≥ α (Thm 3)."""
    if alpha <= 0:
        raise ValueError(f"the ramp loss needs alpha > 0; got {alpha}")
    return float(np.mean(np.clip(1.0 - _f64(margins) / alpha, 0.0, 1.0)))


# --------------------------------------------------------------------------- fs / fr norms


def r_fs_sq_terms(tau_c_out: ArrayLike) -> Array:
    """Per-sample max_i [(τ(θ)c)_i]² of eq. (2); tau_c_out (B, k) -> (B,).

    We read the paper's ``max_i [(τ(θ)c)_i]²`` as the max of the *squares*, i.e.
    ‖τ(θ)c‖²_∞, not (max_i (τ(θ)c)_i)², which would ignore large negative entries.
    r = ‖θ‖_fs = sqrt(mean of these terms) (see :func:`root_mean`).
    """
    t = _f64(tau_c_out)
    return np.max(t * t, axis=1)


def _softmax(outputs: Array) -> Array:
    """Row-wise softmax of (B, k) logits, shifted by the row max for stability."""
    e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def r_fr_sq_terms(eta_c_out: ArrayLike, outputs: ArrayLike, labels: ArrayLike) -> Array:
    """Per-sample ⟨η(θ)c, ∂l/∂y_L⟩² for cross-entropy l (Lemma 2); (B, k) x2 -> (B,).

    ∂l/∂y_L = softmax(y_L) - onehot(y). By Lemma 1 this equals ⟨θ, ∇_θ l⟩², so
    ‖θ‖_fr = sqrt(mean of these terms) is the Fisher-Rao norm of the training loss.
    """
    out = _f64(outputs)
    y = _labels(labels, out.shape[0], out.shape[1])
    grad = _softmax(out)
    grad[np.arange(out.shape[0]), y] -= 1.0
    return np.sum(_f64(eta_c_out) * grad, axis=1) ** 2


def root_mean(sq_terms: ArrayLike) -> float:
    """r = sqrt(mean of per-sample squared terms), e.g. ‖θ‖_fs or ‖θ‖_fr."""
    return float(np.sqrt(np.mean(_f64(sq_terms))))


def r_remark6(beta_V: float, beta_U: float, beta_W: float, B: float) -> float | None:
    """Remark 6: r = β_V β_U B (1/(1-β_W)² + 1/(1-β_W)), an r that needs no data pass.

    B = max over samples of ‖x‖_∞. Valid only for β_W < 1; returns None otherwise, and
    callers record that as "not applicable" (a null in Parquet), not as a number.
    """
    if beta_W >= 1.0:
        return None
    g = 1.0 / (1.0 - beta_W)
    return beta_V * beta_U * B * (g * g + g)


# --------------------------------------------------------------------------- bound terms


def rademacher_fs_term(
    k: int, alpha: float, r: float, frob_X: float, n: int, lambda_min: float, sigma: float = 0.0
) -> float:
    """(4k/α) · r‖X‖_F/(2n) · sqrt(1/(λ_min(Σ) + σ²)): fs part of Theorems 2 (σ=0) and 3.

    For Theorem 3 pass r and ‖X + X_ε‖_F measured on the noisy inputs. A non-positive
    λ_min + σ² (a numerically singular Σ) makes the term, and the bound, inf.
    """
    lam = lambda_min + sigma * sigma
    if lam <= 0.0:
        return math.inf
    return (4.0 * k / alpha) * r * frob_X / (2.0 * n) * math.sqrt(1.0 / lam)


def rademacher_norm1_term(
    k: int, alpha: float, beta_V: float, beta_U: float, norm1_XT: float, Lambda: float, n: int
) -> float:
    """(4k/α) · (1/n) β_V β_U ‖Xᵀ‖₁ Λ: the 1-norm part of Theorems 2 and 3.

    ‖Xᵀ‖₁ is the largest, over the L·d coordinates, sum over samples of |entry|; for
    Theorem 3 it is ‖Xᵀ + X_εᵀ‖₁.
    """
    return (4.0 * k / alpha) * beta_V * beta_U * norm1_XT * Lambda / n


def complexity_term(rademacher_fs_term: float, rademacher_norm1_term: float) -> float:
    """The Rademacher-complexity term of Theorems 2 and 3: the sum of its two parts."""
    return rademacher_fs_term + rademacher_norm1_term


def noise_term(
    alpha: float, beta_V: float, beta_U: float, beta_W: float, L: int, sigma: float, d: int
) -> float:
    """(2/α) Σ_{i=1}^{L} β_V β_U β_W^{L-i} · σ sqrt(2 log(2d)): Theorem 3's noise cost.

    It is Lemma 8's Lipschitz constant times Lemma 12's bound on E‖ε_i‖_∞. Exactly 0 at
    σ = 0 (even if Σ β_W^{L-i} overflows).
    """
    if sigma == 0.0 or beta_V * beta_U == 0.0:
        return 0.0
    lipschitz = beta_V * beta_U * geometric_sum(beta_W, L)
    return (2.0 / alpha) * lipschitz * sigma * math.sqrt(2.0 * math.log(2.0 * d))


def confidence_term(delta: float, n: int) -> float:
    """3 sqrt(log(2/δ)/(2n)): the confidence term of Theorems 2 and 3."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1); got {delta}")
    return 3.0 * math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def bound_thm2(margin_loss: float, complexity_term: float, confidence_term: float) -> float:
    """Theorem 2: indicator margin loss + complexity term + confidence term."""
    return margin_loss + complexity_term + confidence_term


def bound_thm3(
    margin_loss: float, complexity_term: float, noise_term: float, confidence_term: float
) -> float:
    """Theorem 3: noisy ramp loss + noise term + confidence term + complexity term."""
    return margin_loss + noise_term + confidence_term + complexity_term


def bound_thm2_remark6(
    margin_loss: float, complexity_term_remark6: float | None, confidence_term: float
) -> float | None:
    """Theorem 2 with Remark 6's data-free r in the complexity term; None if not applicable."""
    if complexity_term_remark6 is None:
        return None
    return bound_thm2(margin_loss, complexity_term_remark6, confidence_term)


def zhang_order(
    d: int, m: int, k: int, L: int, U: ArrayLike, W: ArrayLike, V: ArrayLike, n: int, alpha: float
) -> float:
    """Zhang et al. (2018) order: max{d,m,k} L² ‖U‖₂‖V‖₂ max{1, ‖W‖₂^L} / (sqrt(n) α).

    Spectral norms; no constants (a comparison of order only). Evaluated in log space so
    ‖W‖₂^L cannot overflow on its own; returns inf only if the final value overflows.
    """
    norm_U, norm_V, norm_W = (float(np.linalg.norm(_f64(A), 2)) for A in (U, V, W))
    if norm_U == 0.0 or norm_V == 0.0:
        return 0.0
    log_W_power = L * math.log(norm_W) if norm_W > 1.0 else 0.0  # log max{1, ‖W‖₂^L}
    log_value = (
        math.log(max(d, m, k))
        + 2.0 * math.log(L)
        + math.log(norm_U)
        + math.log(norm_V)
        + log_W_power
        - 0.5 * math.log(n)
        - math.log(alpha)
    )
    if log_value >= math.log(np.finfo(np.float64).max):
        return math.inf
    try:
        return math.exp(log_value)
    except OverflowError:  # log_value within rounding of the largest float
        return math.inf


# --------------------------------------------------------------------------- choosing alpha


def union_bound_delta(delta: float, grid_size: int) -> float:
    """δ/|grid|: the per-α confidence that keeps the bound valid for α chosen from a grid."""
    if grid_size < 1:
        raise ValueError(f"the alpha grid must have at least one value; got {grid_size}")
    return delta / grid_size


# --------------------------------------------------------------------------- streaming stats


class ModelDataStats:
    """Per-model statistics of one training set, accumulated batch by batch.

    Feed every (x, labels) batch once through :meth:`update`; x is (B, L, d). It keeps
    only sums and the margins (n,), never the data, and collects what the bounds need:
    n, Σ‖τ(θ)c‖²_∞ (for r = ‖θ‖_fs), Σ⟨η(θ)c, ∂l/∂y_L⟩² (for ‖θ‖_fr, cross-entropy),
    ‖X‖²_F, the per-coordinate sums Σ_samples |x_{t,j}| (for ‖Xᵀ‖₁) and B = max ‖x‖_∞.
    For Theorem 3 feed a second instance the *noisy* batches x + ε (one noise draw per
    sample), so r, the margins, ‖X + X_ε‖_F and ‖Xᵀ + X_εᵀ‖₁ all see the same draw.
    """

    def __init__(self, U: ArrayLike, W: ArrayLike, V: ArrayLike) -> None:
        """Hold float64 copies of the parameters U (m, d), W (m, m), V (k, m)."""
        self.U, self.W, self.V = (np.array(A, dtype=np.float64) for A in (U, W, V))
        _check_params(self.U, self.W, self.V)
        self.n = 0
        self.sum_fs_sq = 0.0
        self.sum_fr_sq = 0.0
        self.frob_sq = 0.0
        self.B = 0.0
        self._abs_sums: Array | None = None  # (L, d)
        self._margins: list[Array] = []

    def update(self, x: ArrayLike, labels: ArrayLike) -> None:
        """Add one batch x (B, L, d) with its labels (B,)."""
        x = _batch(x, self.U.shape[1])
        y = _labels(labels, x.shape[0], self.V.shape[0])
        if self._abs_sums is None:
            self._abs_sums = np.zeros(x.shape[1:])
        elif x.shape[1:] != self._abs_sums.shape:
            raise ValueError(f"batch shape {x.shape} does not match earlier (., L, d) batches")
        c = c_vector(x.shape[1])
        out, eta = _forward_and_eta(self.U, self.W, self.V, x, c)
        tau = tau_c(self.U, self.W, self.V, x, c)
        self.n += x.shape[0]
        self.sum_fs_sq += float(r_fs_sq_terms(tau).sum())
        self.sum_fr_sq += float(r_fr_sq_terms(eta, out, y).sum())
        flat = x.reshape(-1)
        self.frob_sq += float(flat @ flat)
        self.B = max(self.B, float(np.abs(x).max(initial=0.0)))
        self._abs_sums += np.abs(x).sum(axis=0)
        self._margins.append(margins(out, y))

    def _require_data(self) -> None:
        """Raise a readable error if no batch has been fed yet."""
        if self.n == 0:
            raise ValueError("ModelDataStats has seen no data; call update(x, labels) first")

    @property
    def L(self) -> int:
        """Sequence length of the batches seen."""
        self._require_data()
        assert self._abs_sums is not None  # update() sets it before n grows past 0
        return int(self._abs_sums.shape[0])

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.U.shape[1])

    @property
    def margins(self) -> Array:
        """All training margins M(x_i, y_i) seen so far, in feeding order; shape (n,)."""
        return np.concatenate(self._margins) if self._margins else np.zeros(0)

    @property
    def r_fs(self) -> float:
        """r = ‖θ‖_fs = sqrt(mean ‖τ(θ)c‖²_∞) (eq. 2)."""
        self._require_data()
        return math.sqrt(self.sum_fs_sq / self.n)

    @property
    def r_fr(self) -> float:
        """‖θ‖_fr = sqrt(mean ⟨η(θ)c, ∂l/∂y_L⟩²) for cross-entropy (Lemma 2)."""
        self._require_data()
        return math.sqrt(self.sum_fr_sq / self.n)

    @property
    def frob_X(self) -> float:
        """‖X‖_F of the (L·d, n) data matrix."""
        return math.sqrt(self.frob_sq)

    @property
    def norm1_XT(self) -> float:
        """‖Xᵀ‖₁ = max over the L·d coordinates of Σ_samples |entry|."""
        self._require_data()
        assert self._abs_sums is not None  # update() sets it before n grows past 0
        return float(self._abs_sums.max())


# --------------------------------------------------------------------------- one result row


def _check_pair(
    clean: ModelDataStats, noisy: ModelDataStats | None, sigma: float
) -> ModelDataStats:
    """Return the noisy statistics (clean ones when σ = 0 and none given), or raise."""
    if noisy is None:
        if sigma != 0.0:
            raise ValueError(f"sigma={sigma} > 0 needs statistics on the noisy training inputs")
        return clean
    pairs = zip((clean.U, clean.W, clean.V), (noisy.U, noisy.W, noisy.V), strict=True)
    same_theta = all(np.array_equal(a, b) for a, b in pairs)
    if not same_theta or noisy.n != clean.n or noisy.L != clean.L:
        raise ValueError("clean and noisy statistics must come from the same model and data")
    return noisy


def _complexity_parts(
    stats: ModelDataStats, r: float, *, alpha: float, sigma: float, lambda_min: float
) -> tuple[float, float]:
    """(fs part, 1-norm part) of the complexity term for the model and data of ``stats``."""
    k, n = stats.V.shape[0], stats.n
    lam = Lambda(beta(stats.W), stats.L)
    fs = rademacher_fs_term(k, alpha, r, stats.frob_X, n, lambda_min, sigma)
    norm1 = rademacher_norm1_term(k, alpha, beta(stats.V), beta(stats.U), stats.norm1_XT, lam, n)
    return fs, norm1


def _thm3_columns(
    noisy: ModelDataStats, *, alpha: float, sigma: float, lambda_min: float, delta: float
) -> dict[str, float]:
    """Every term column, Theorem 3's version, from statistics on the noisy inputs."""
    b_U, b_V, b_W = beta(noisy.U), beta(noisy.V), beta(noisy.W)
    fs, norm1 = _complexity_parts(
        noisy, noisy.r_fs, alpha=alpha, sigma=sigma, lambda_min=lambda_min
    )
    cols = {
        "beta_U": b_U,
        "beta_V": b_V,
        "beta_W": b_W,
        "Lambda": Lambda(b_W, noisy.L),
        "r_fs": noisy.r_fs,
        "r_fr": noisy.r_fr,
        "frob_X": noisy.frob_X,
        "norm1_XT": noisy.norm1_XT,
        "lambda_min": lambda_min,
        "margin_loss": ramp_loss(noisy.margins, alpha),
        "rademacher_fs_term": fs,
        "rademacher_norm1_term": norm1,
        "complexity_term": complexity_term(fs, norm1),
        "noise_term": noise_term(alpha, b_V, b_U, b_W, noisy.L, sigma, noisy.d),
        "confidence_term": confidence_term(delta, noisy.n),
    }
    cols["bound_thm3"] = bound_thm3(
        cols["margin_loss"], cols["complexity_term"], cols["noise_term"], cols["confidence_term"]
    )
    return cols


def _thm2_columns(
    clean: ModelDataStats, *, alpha: float, lambda_min: float, delta: float
) -> dict[str, float | None]:
    """Theorem 2's totals on the clean data: with the measured r and with Remark 6's r."""
    clean_cols = thm2_clean_columns(clean, alpha=alpha, lambda_min=lambda_min)
    indicator = clean_cols["indicator_loss_clean"]
    conf = confidence_term(delta, clean.n)
    r6 = r_remark6(beta(clean.V), beta(clean.U), beta(clean.W), clean.B)
    comp6 = None
    if r6 is not None:
        parts6 = _complexity_parts(clean, r6, alpha=alpha, sigma=0.0, lambda_min=lambda_min)
        comp6 = complexity_term(*parts6)
    return {
        "bound_thm2": bound_thm2(indicator, clean_cols["complexity_term_thm2"], conf),
        "bound_thm2_remark6": bound_thm2_remark6(indicator, comp6, conf),
    }


CLEAN_COLUMNS: tuple[str, ...] = (
    "indicator_loss_clean",
    "r_fs_clean",
    "B",
    "complexity_term_thm2",
)


def thm2_clean_columns(
    clean: ModelDataStats, *, alpha: float, lambda_min: float
) -> dict[str, float]:
    """Theorem 2's pieces on the clean training data, keyed by ``CLEAN_COLUMNS``: the
    indicator margin loss at α, the clean r_fs, B = max ‖x‖_∞, and the complexity term
    (k read from V, λ_min without σ²)."""
    parts = _complexity_parts(clean, clean.r_fs, alpha=alpha, sigma=0.0, lambda_min=lambda_min)
    return {
        "indicator_loss_clean": indicator_margin_loss(clean.margins, alpha),
        "r_fs_clean": clean.r_fs,
        "B": float(clean.B),
        "complexity_term_thm2": complexity_term(*parts),
    }


def bound_row(
    clean: ModelDataStats,
    noisy: ModelDataStats | None,
    *,
    alpha: float,
    sigma: float,
    lambda_min: float,
    delta: float,
) -> dict[str, float | None]:
    """One result row, keyed exactly by ``TERM_COLUMNS``, for one model θ and one α.

    ``clean`` holds statistics of θ on the clean training set X; ``noisy`` on X + X_ε
    (the same samples with one Gaussian draw of std σ each; None is allowed at σ = 0).
    ``lambda_min`` is λ_min(Σ) of the clean second moment (the ``lambda_min`` column; the
    fs term uses λ_min + σ²). ``delta`` is the confidence for this α: pass
    ``union_bound_delta(δ, |grid|)`` when α comes from a grid.

    The term columns (r_fs, r_fr, frob_X, norm1_XT, margin_loss, the Rademacher, noise and
    complexity terms) are Theorem 3's: ramp loss on the noisy margins, r on noisy inputs,
    ‖X + X_ε‖_F, ‖Xᵀ + X_εᵀ‖₁, λ_min + σ². ``bound_thm2`` and ``bound_thm2_remark6`` are
    totals of Theorem 2 on the clean data (indicator loss, clean r and norms, λ_min).
    At σ = 0 the noise is zero, so X + X_ε = X and every noisy statistic equals the clean
    one; λ_min + σ² = λ_min and the noise term is 0. Theorem 3's complexity term then
    equals Theorem 2's and the two bounds differ only by ramp vs. indicator margin loss.
    ``bound_thm2_remark6`` is None ("not applicable") when β_W ≥ 1.
    """
    noisy = _check_pair(clean, noisy, sigma)
    row: dict[str, float | None] = {
        **_thm3_columns(noisy, alpha=alpha, sigma=sigma, lambda_min=lambda_min, delta=delta),
        **_thm2_columns(clean, alpha=alpha, lambda_min=lambda_min, delta=delta),
    }
    k, m = clean.V.shape[0], clean.W.shape[0]
    row["zhang_order"] = zhang_order(
        clean.d, m, k, clean.L, clean.U, clean.W, clean.V, clean.n, alpha
    )
    return {name: row[name] for name in TERM_COLUMNS}
