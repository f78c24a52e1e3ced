"""`ModelDataStats` computed in float64 torch on any device (a GPU when there is one).

`TorchModelDataStats` is a `rnngen.bounds.ModelDataStats`: `bound_row` reads it unchanged,
so every bound formula stays in `rnngen.bounds`. Only the feeding differs. A batch goes
through `OnePass`: one loop over t on the stats' device that runs the forward pass and,
where it is read, η(θ)c; τ(θ)c, which is linear in x, is one product with a matrix built
once per model (:func:`tau_matrix`). `update_pair` feeds the clean and the noisy batch of
one model together, as one stack of rows, and skips the clean η(θ)c that nothing reads at
σ > 0 (Theorem 3 reads r_fr on the noisy inputs; Theorem 2 reads no r_fr).

Sums go to float64 accumulators that stay on the device. A device→host copy happens only
when a statistic is read (the scalars in one transfer, the margins in another; both are
cached until the next update), plus one sync per batch when the labels are validated and
one when the batch's outputs are checked to be finite. U, W, V stay float64 numpy on the
object (for `bound_row`: β's, Zhang's order, the same-model check), with float64 torch
copies on the device for the passes.

The recurrences are those of `rnngen.bounds` (h_0 = z_0 = s_0 = 0, c_t = L + 2 - t):
forward h_t = relu(g_t), g_t = U x_t + W h_{t-1}; η: z_t = D_t (c_t U x_t + W z_{t-1}) with
D_t = 1[g_t > 0] (relu'(0) = 0, as in torch); τ: s_t = W s_{t-1} + c_t U x_t; outputs
V h_L, V z_L, V s_L. :func:`three_paths` runs all three as recurrences, as written; it is the
old path (`update_three_paths`), and `OnePass` falls back to it for any batch whose outputs
are not finite, so that overflow behaves exactly as in the reference. Nothing here touches
CUDA unless the device asked for is a CUDA one.
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


def _c(L: int) -> list[float]:
    """c of Lemma 1 as Python floats: scalars in the loop, not tensors to index."""
    return [float(v) for v in c_vector(L)]


def three_paths(
    U: torch.Tensor, W: torch.Tensor, V: torch.Tensor, x: torch.Tensor, c: list[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y_L, η(θ)c, τ(θ)c), each (B, k), from three recurrences in one loop over t.

    x (B, L, d), all float64. The reference the one-pass kernel is checked against, and
    its fallback for batches whose outputs are not finite.
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


def tau_matrix(U: torch.Tensor, W: torch.Tensor, V: torch.Tensor, L: int) -> torch.Tensor:
    """M (L·d, k) with τ(θ)c = vec(x) M for every x (B, L, d) seen as (B, L·d).

    τ(θ)c = Σ_t c_t V W^{L-t} U x_t is linear in x: block t of M (rows (t-1)·d .. t·d) is
    c_t (V W^{L-t} U)ᵀ. Built from V backwards, one (k, m)·(m, m) product per step.
    """
    c = _c(L)
    d, k = U.shape[1], V.shape[0]
    M = U.new_empty((L, d, k))
    P = V  # V W^{L-t}, from t = L down
    for t in range(L - 1, -1, -1):
        torch.mul((P @ U).T, c[t], out=M[t])
        P = P @ W
    return M.reshape(L * d, k)


class OnePass:
    """The forward pass, η(θ)c and τ(θ)c of one model, for stacked row blocks, in one loop.

    A batch here is x (n, L, d) float64: the rows of every block fed together (the clean
    and the noisy batch of `update_pair`). η is run for the last ``eta_rows`` rows only, with
    their own masks. The state [h; z] is one (n + eta_rows, m) buffer of two, used in
    turn: each step writes U x_t into the new h rows (c_t U x_t into the new z rows) and
    adds W times the old ones in the same BLAS call (addmm), then applies the masks in
    place. τ(θ)c is x·M with M from :func:`tau_matrix`, cached per L. The state and mask
    buffers are allocated once per model (regrown only for a larger batch) and reused, so
    the loop over t makes no tensors of its own.
    """

    def __init__(self, U: torch.Tensor, W: torch.Tensor, V: torch.Tensor) -> None:
        """U (m, d), W (m, m), V (k, m): float64 tensors on the device the passes run on."""
        self.U, self.W, self.V = U, W, V
        # Transposed once, contiguous: the per-step products read them as the right factor.
        self.U_T, self.W_T, self.V_T = (A.T.contiguous() for A in (U, W, V))
        self._tau: dict[int, torch.Tensor] = {}
        self._memory: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A contiguous float64 (uninitialised) tensor of ``shape``, reused between batches."""
        numel = int(np.prod(shape))
        flat = self._memory.get(name)
        if flat is None or flat.numel() < numel:
            flat = self._memory[name] = self.U.new_empty(numel)
        return flat[:numel].view(shape)

    def tau(self, L: int) -> torch.Tensor:
        """M of :func:`tau_matrix` for sequences of length L, built once."""
        if L not in self._tau:
            self._tau[L] = tau_matrix(self.U, self.W, self.V, L)
        return self._tau[L]

    def inputs(self, *blocks: torch.Tensor) -> torch.Tensor:
        """The blocks (b_i, L, d), of any dtype, stacked into one float64 (n, L, d).

        The widening copy is the only one the batch gets. A new tensor per batch, not a
        kept buffer: a batch may be a whole training set (bench/gpu_bounds.py), and the
        memory should go back when the batch is done.
        """
        n = sum(b.shape[0] for b in blocks)
        x = blocks[0].new_empty((n, *blocks[0].shape[1:]), dtype=F64)
        start = 0
        for b in blocks:
            x[start : start + b.shape[0]].copy_(b)
            start += b.shape[0]
        return x

    def run(
        self, x: torch.Tensor, eta_rows: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y_L (n, k), η(θ)c (eta_rows, k) of the last eta_rows rows, τ(θ)c (n, k))."""
        n, L, d = x.shape
        state = self._steps(x, eta_rows)
        ends = state @ self.V_T  # [V h_L; V z_L]
        out, eta = ends[:n], ends[n:]
        tau = x.view(n, L * d) @ self.tau(L)
        if not bool(torch.isfinite(ends).all() & torch.isfinite(tau).all()):
            # Overflow: the masked products here turn inf·0 into NaN where the reference
            # keeps a 0 (and relu keeps a NaN g that the reference zeroes). Redo the batch
            # as the reference does; a finite batch never gets here.
            out, eta_all, tau = three_paths(self.U, self.W, self.V, x, _c(L))
            eta = eta_all[n - eta_rows :]
        return out, eta, tau

    def _steps(self, x: torch.Tensor, eta_rows: int) -> torch.Tensor:
        """[h_L; z_L] (n + eta_rows, m) for x (n, L, d), η for the last eta_rows rows."""
        n, L, _ = x.shape
        m, first = self.W.shape[0], n - eta_rows
        mask = self._buffer("mask", (eta_rows, m))
        # Two state buffers, read and written in turn, with their h and z parts as views.
        sides = [self._buffer(name, (n + eta_rows, m)) for name in ("state_a", "state_b")]
        parts = [(s[:n], s[n:], s[first:n]) for s in sides]
        sides[0].zero_()
        c = _c(L)
        for t, x_t in enumerate(x.unbind(1)):
            (h, z, _), (g, z_next, g_eta) = parts[t % 2], parts[(t + 1) % 2]
            torch.mm(x_t, self.U_T, out=g)  # U x_t
            if eta_rows:
                torch.mul(g[first:], c[t], out=z_next)  # c_t U x_t
                z_next.addmm_(z, self.W_T)  # + W z_{t-1}
            g.addmm_(h, self.W_T)  # g_t = U x_t + W h_{t-1}
            g.clamp_min_(0.0)  # h_t = relu(g_t)
            if eta_rows:
                # D_t as 0/1: relu(g) > 0 exactly where g > 0, so relu'(0) = 0 here too.
                torch.sign(g_eta, out=mask)
                z_next.mul_(mask)
        return sides[L % 2]


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
    Statistics made by :meth:`pair` for the clean side skip η(θ)c: reading their
    ``sum_fr_sq`` or ``r_fr`` raises.
    """

    def __init__(
        self,
        U: ArrayLike | torch.Tensor,
        W: ArrayLike | torch.Tensor,
        V: ArrayLike | torch.Tensor,
        device: str | torch.device = "cpu",
        *,
        engine: OnePass | None = None,
        with_fr: bool = True,
    ) -> None:
        """Hold U, W, V as float64 numpy and as float64 tensors on ``device``.

        ``engine``: the `OnePass` of another statistics object of the same model, to share
        its buffers and its τ matrix (see :meth:`pair`). ``with_fr=False``: never compute
        η(θ)c, so ``r_fr`` is not available.
        """
        # Before the base __init__: it zeroes the four scalars through their setters.
        self.device = torch.device(device)
        self.with_fr = with_fr
        self._acc: dict[str, torch.Tensor] = {}
        self._host_cache: dict[str, float] | None = None
        self._margins_cache: Array | None = None
        self._abs_sums_t: torch.Tensor | None = None  # (L, d); the base's _abs_sums is unused
        self._margins_t: list[torch.Tensor] = []  # the base's _margins is unused
        super().__init__(_host_matrix(U), _host_matrix(W), _host_matrix(V))
        if engine is None:
            U_t, W_t, V_t = (torch.from_numpy(A).to(self.device) for A in (self.U, self.W, self.V))
            engine = OnePass(U_t, W_t, V_t)
        self.engine = engine
        self.U_t, self.W_t, self.V_t = engine.U, engine.W, engine.V

    @classmethod
    def pair(
        cls,
        U: ArrayLike | torch.Tensor,
        W: ArrayLike | torch.Tensor,
        V: ArrayLike | torch.Tensor,
        device: str | torch.device = "cpu",
    ) -> tuple[TorchModelDataStats, TorchModelDataStats]:
        """(clean, noisy) statistics of one model for :func:`update_pair`: one `OnePass`
        between them, and no η(θ)c on the clean side (nothing reads the clean r_fr)."""
        noisy = cls(U, W, V, device)
        clean = cls(noisy.U, noisy.W, noisy.V, device, engine=noisy.engine, with_fr=False)
        return clean, noisy

    # ------------------------------------------------------------------ feeding

    def update(self, x: ArrayLike | torch.Tensor, labels: ArrayLike | torch.Tensor) -> None:
        """Add one batch x (B, L, d) with its labels (B,); either may be on any device."""
        xt = self._batch(x)
        y = self._labels(labels, xt.shape[0])
        self._fix_shape(xt)
        x64 = self.engine.inputs(xt)
        out, eta, tau = self.engine.run(x64, xt.shape[0] if self.with_fr else 0)
        self._add(x64, y, out, eta if self.with_fr else None, tau)

    def update_three_paths(
        self, x: ArrayLike | torch.Tensor, labels: ArrayLike | torch.Tensor
    ) -> None:
        """`update` the old way: forward, η and τ as three recurrences (:func:`three_paths`).

        Slower (τ as a recurrence, η even where it is not read); kept as a cross-check and
        as the baseline of bench/bench_bounds.py.
        """
        xt = self._batch(x)
        y = self._labels(labels, xt.shape[0])
        self._fix_shape(xt)
        x64 = xt.to(F64)
        out, eta, tau = three_paths(self.U_t, self.W_t, self.V_t, x64, _c(x64.shape[1]))
        self._add(x64, y, out, eta if self.with_fr else None, tau)

    def _add(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        out: torch.Tensor,
        eta: torch.Tensor | None,
        tau: torch.Tensor,
    ) -> None:
        """Add a batch's sums: x (B, L, d) float64 and its y, y_L, η(θ)c (or None), τ(θ)c."""
        self._host_cache, self._margins_cache = None, None
        acc = self._acc
        self.n += x.shape[0]
        acc["sum_fs_sq"] += (tau * tau).amax(dim=1).sum()
        if eta is not None:
            acc["sum_fr_sq"] += fr_sq_sum(eta, out, y)
        flat = x.reshape(-1)
        acc["frob_sq"] += flat @ flat
        absx = x.abs()
        if absx.numel():  # amax of an empty tensor raises; an empty batch leaves B alone
            acc["B"] = torch.maximum(acc["B"], absx.amax())
        assert self._abs_sums_t is not None  # _fix_shape sets it
        self._abs_sums_t += absx.sum(dim=0)
        self._margins_t.append(batch_margins(out, y))

    def _batch(self, x: ArrayLike | torch.Tensor) -> torch.Tensor:
        """x (B, L, d) as a tensor on the device, in its own dtype, or a readable error."""
        xt = torch.as_tensor(x)
        if xt.ndim != 3 or xt.shape[2] != self.d:
            raise ValueError(f"expected a batch x of shape (B, L, d={self.d}); got {xt.shape}")
        # Move first, widen there: float32 -> float64 is exact, and half the bytes travel.
        return xt.to(self.device)

    def _fix_shape(self, xt: torch.Tensor) -> None:
        """Take (L, d) from the first batch; refuse a later batch of another shape."""
        if self._abs_sums_t is None:
            self._abs_sums_t = torch.zeros(xt.shape[1:], dtype=F64, device=self.device)
        elif xt.shape[1:] != self._abs_sums_t.shape:
            raise ValueError(f"batch shape {tuple(xt.shape)} does not match earlier batches")

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
        """Σ⟨η(θ)c, ∂l/∂y_L⟩² over the samples seen (not on statistics made without η)."""
        if not self.with_fr:
            raise ValueError(
                "these statistics skip η(θ)c (the clean side of TorchModelDataStats.pair, "
                "for σ > 0, where Theorem 3 reads r_fr on the noisy inputs): read r_fr from "
                "the noisy statistics, or feed a TorchModelDataStats of its own"
            )
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


def update_pair(
    clean: TorchModelDataStats,
    noisy: TorchModelDataStats,
    x: ArrayLike | torch.Tensor,
    x_noisy: ArrayLike | torch.Tensor,
    labels: ArrayLike | torch.Tensor,
) -> None:
    """Feed one batch to both statistics of :meth:`TorchModelDataStats.pair` in one pass.

    x and x_noisy (B, L, d) are the same samples, clean and with their noise; labels (B,).
    Their rows are stacked, so each step runs one product by W for h (clean and noisy) and
    z (noisy only), and one by U. Same sums as ``clean.update(x, y); noisy.update(x_noisy,
    y)``, less the clean η(θ)c.
    """
    if clean.engine is not noisy.engine or clean.with_fr or not noisy.with_fr:
        raise ValueError("update_pair needs the (clean, noisy) of TorchModelDataStats.pair")
    xc, xn = clean._batch(x), noisy._batch(x_noisy)
    if xc.shape != xn.shape:
        raise ValueError(f"clean batch {tuple(xc.shape)} and noisy {tuple(xn.shape)} differ")
    y = noisy._labels(labels, xc.shape[0])
    clean._fix_shape(xc)
    noisy._fix_shape(xn)
    b = xc.shape[0]
    x64 = clean.engine.inputs(xc, xn)
    out, eta, tau = clean.engine.run(x64, b)
    clean._add(x64[:b], y, out[:b], None, tau[:b])
    noisy._add(x64[b:], y, out[b:], eta, tau[b:])
