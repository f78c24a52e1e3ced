"""`ModelDataStats` computed in float64 torch on any device (a GPU when there is one).

`TorchModelDataStats` is a `rnngen.bounds.ModelDataStats`: `bound_row` reads it unchanged,
so every bound formula stays in `rnngen.bounds`. Only `update` differs. It takes a torch
batch, runs the forward pass, η(θ)c and τ(θ)c in one loop over t on the stats' device, and
adds to float64 accumulators that stay on that device. A device→host copy happens only
when a statistic is read (the scalars in one transfer, the margins in another; both are
cached until the next update), plus one sync per batch when the labels are validated on
the device. U, W, V stay float64 numpy on the object (for `bound_row`: β's, Zhang's order,
the same-model check), with float64 torch copies on the device for the passes.

The recurrences are those of `rnngen.bounds` (h_0 = z_0 = s_0 = 0, c_t = L + 2 - t):
forward h_t = relu(g_t), g_t = U x_t + W h_{t-1}; η: z_t = D_t (c_t U x_t + W z_{t-1}) with
D_t = 1[g_t > 0] (relu'(0) = 0, as in torch); τ: s_t = W s_{t-1} + c_t U x_t; outputs
V h_L, V z_L, V s_L. Nothing here touches CUDA unless the device asked for is a CUDA one.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from rnngen.bounds import Array, ModelDataStats, c_vector

F64 = torch.float64

# The float statistics of ModelDataStats that live on the device here, as 0-d tensors.
_SCALARS = ("sum_fs_sq", "sum_fr_sq", "frob_sq", "B")


def _host_matrix(A: ArrayLike | torch.Tensor) -> Array:
    """A parameter as a float64 numpy matrix, whether it came as numpy or as a torch tensor."""
    if isinstance(A, torch.Tensor):
        A = A.detach().to("cpu", F64).numpy()
    return np.array(A, dtype=np.float64)


def three_paths(
    U: torch.Tensor, W: torch.Tensor, V: torch.Tensor, x: torch.Tensor, c: list[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y_L, η(θ)c, τ(θ)c), each (B, k), from one pass over t; x (B, L, d), all float64.

    η uses the forward pass's own masks. The three states h, z, s are stacked so that each
    step multiplies by W once. U x_t is formed step by step rather than for all t at once:
    a (B, L, m) float64 tensor would outgrow the memory `rnngen.resources` budgets.
    """
    state = x.new_zeros((3, x.shape[0], W.shape[0]))  # h, z, s
    for t in range(x.shape[1]):
        ux = x[:, t] @ U.T
        rec = state @ W.T
        g = ux + rec[0]
        mask = g > 0.0  # D_t; relu'(0) = 0, as in the numpy path and in torch
        cux = c[t] * ux
        h = torch.where(mask, g, 0.0)
        z = torch.where(mask, cux + rec[1], 0.0)
        state = torch.stack((h, z, rec[2] + cux))
    out = state @ V.T
    return out[0], out[1], out[2]


def fr_sq_sum(eta: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_batch ⟨η(θ)c, softmax(y_L) - onehot(y)⟩² (cross-entropy, Lemma 2), a 0-d tensor."""
    e = torch.exp(out - out.amax(dim=1, keepdim=True))  # the row max keeps exp finite
    grad = e / e.sum(dim=1, keepdim=True)
    grad = grad - torch.nn.functional.one_hot(y, out.shape[1]).to(F64)
    return ((eta * grad).sum(dim=1) ** 2).sum()


def batch_margins(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """M(x, y) = [y_L]_y - max_{y'≠y} [y_L]_{y'}; out (B, k), y (B,) int64 -> (B,)."""
    col = y.unsqueeze(1)
    own = out.gather(1, col).squeeze(1)
    others = out.scatter(1, col, -torch.inf)
    return own - others.amax(dim=1)


class TorchModelDataStats(ModelDataStats):
    """`ModelDataStats` whose passes and sums run in float64 torch on ``device``.

    ``sum_fs_sq``, ``sum_fr_sq``, ``frob_sq`` and ``B`` read as floats, as in the base
    class, but are kept as device tensors; so are the per-coordinate |x| sums and the
    margins. ``update`` also accepts numpy batches (they are copied to the device).
    """

    def __init__(
        self,
        U: ArrayLike | torch.Tensor,
        W: ArrayLike | torch.Tensor,
        V: ArrayLike | torch.Tensor,
        device: str | torch.device = "cpu",
    ) -> None:
        """Hold U, W, V as float64 numpy and as float64 tensors on ``device``."""
        # Before the base __init__: it zeroes the four scalars through their setters.
        self.device = torch.device(device)
        self._acc: dict[str, torch.Tensor] = {}
        self._host_cache: dict[str, float] | None = None
        self._margins_cache: Array | None = None
        self._abs_sums_t: torch.Tensor | None = None  # (L, d); the base's _abs_sums is unused
        self._margins_t: list[torch.Tensor] = []  # the base's _margins is unused
        super().__init__(_host_matrix(U), _host_matrix(W), _host_matrix(V))
        self.U_t, self.W_t, self.V_t = (
            torch.from_numpy(A).to(self.device) for A in (self.U, self.W, self.V)
        )

    # ------------------------------------------------------------------ feeding

    def update(self, x: ArrayLike | torch.Tensor, labels: ArrayLike | torch.Tensor) -> None:
        """Add one batch x (B, L, d) with its labels (B,); either may be on any device."""
        xt = self._batch(x)
        y = self._labels(labels, xt.shape[0])
        if self._abs_sums_t is None:
            self._abs_sums_t = xt.new_zeros(xt.shape[1:])
        elif xt.shape[1:] != self._abs_sums_t.shape:
            raise ValueError(f"batch shape {tuple(xt.shape)} does not match earlier batches")
        out, eta, tau = three_paths(self.U_t, self.W_t, self.V_t, xt, self._c(xt.shape[1]))
        self._host_cache, self._margins_cache = None, None
        acc = self._acc
        self.n += xt.shape[0]
        acc["sum_fs_sq"] += (tau * tau).amax(dim=1).sum()
        acc["sum_fr_sq"] += fr_sq_sum(eta, out, y)
        acc["frob_sq"] += (xt * xt).sum()
        absx = xt.abs()
        if absx.numel():  # amax of an empty tensor raises; an empty batch leaves B alone
            acc["B"] = torch.maximum(acc["B"], absx.amax())
        self._abs_sums_t += absx.sum(dim=0)
        self._margins_t.append(batch_margins(out, y))

    @staticmethod
    def _c(L: int) -> list[float]:
        """c of Lemma 1 as Python floats: scalars in the loop, not tensors to index."""
        return [float(v) for v in c_vector(L)]

    def _batch(self, x: ArrayLike | torch.Tensor) -> torch.Tensor:
        """x as float64 (B, L, d) on the device, or a readable error."""
        xt = torch.as_tensor(x)
        if xt.ndim != 3 or xt.shape[2] != self.d:
            raise ValueError(f"expected a batch x of shape (B, L, d={self.d}); got {xt.shape}")
        # Move first, widen there: float32 -> float64 is exact, and half the bytes travel.
        return xt.to(self.device).to(F64)

    def _labels(self, labels: ArrayLike | torch.Tensor, n: int) -> torch.Tensor:
        """Labels as int64 (n,) on the device, checked to lie in {0..k-1} where they are."""
        y = torch.as_tensor(labels)
        k = self.V.shape[0]
        # An out-of-range label would be a device-side assert on a GPU, not an error.
        if y.shape != (n,) or (n and bool((y < 0).any() | (y >= k).any())):
            raise ValueError(f"expected {n} integer labels in 0..{k - 1}; got shape {y.shape}")
        return y.to(self.device, torch.int64)

    # ------------------------------------------------------------------ reading back

    def _host(self) -> dict[str, float]:
        """The scalars and ‖Xᵀ‖₁ as floats, copied from the device in one transfer."""
        if self._host_cache is None:
            names = [*_SCALARS, "norm1_XT"]
            sums = self._abs_sums_t
            # Before any data norm1_XT raises anyway; a 0 keeps the other reads working.
            norm1 = sums.max() if sums is not None else self._acc["B"].new_zeros(())
            values = torch.stack([*(self._acc[s] for s in _SCALARS), norm1]).tolist()
            self._host_cache = dict(zip(names, values, strict=True))
        return self._host_cache

    def _write(self, name: str, value: float) -> None:
        """Set one device scalar (the base class assigns them as plain floats)."""
        self._acc[name] = torch.tensor(float(value), dtype=F64, device=self.device)
        self._host_cache = None

    @property
    def sum_fs_sq(self) -> float:
        """Σ‖τ(θ)c‖²_∞ over the samples seen."""
        return self._host()["sum_fs_sq"]

    @sum_fs_sq.setter
    def sum_fs_sq(self, value: float) -> None:
        self._write("sum_fs_sq", value)

    @property
    def sum_fr_sq(self) -> float:
        """Σ⟨η(θ)c, ∂l/∂y_L⟩² over the samples seen."""
        return self._host()["sum_fr_sq"]

    @sum_fr_sq.setter
    def sum_fr_sq(self, value: float) -> None:
        self._write("sum_fr_sq", value)

    @property
    def frob_sq(self) -> float:
        """‖X‖²_F of the samples seen."""
        return self._host()["frob_sq"]

    @frob_sq.setter
    def frob_sq(self, value: float) -> None:
        self._write("frob_sq", value)

    @property
    def B(self) -> float:
        """B = max over the samples seen of ‖x‖_∞ (0 before any data)."""
        return self._host()["B"]

    @B.setter
    def B(self, value: float) -> None:
        self._write("B", value)

    @property
    def L(self) -> int:
        """Sequence length of the batches seen."""
        self._require_data()
        assert self._abs_sums_t is not None  # update() sets it before n grows past 0
        return int(self._abs_sums_t.shape[0])

    @property
    def norm1_XT(self) -> float:
        """‖Xᵀ‖₁ = max over the L·d coordinates of Σ_samples |entry|."""
        self._require_data()
        return self._host()["norm1_XT"]

    @property
    def margins(self) -> Array:
        """All training margins seen so far, in feeding order, as float64 numpy (n,).

        A fresh array on every read, as in the base class: a caller may modify it.
        """
        if not self._margins_t:
            return np.zeros(0)
        if self._margins_cache is None:
            self._margins_cache = torch.cat(self._margins_t).cpu().numpy()
        return self._margins_cache.copy()
