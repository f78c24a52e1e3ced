"""The bias-free ReLU RNN of the paper's eq. (1), its initialisations and its weight files.

    g_t = U x_t + W h_{t-1},   h_t = relu(g_t),   y_t = V h_t,   h_0 = 0,

and only y_L is read. The bounds are stated for exactly this map: a bias, a different
readout or masking would break the identities of the bounds (Lemma 1), so the module is a
bare ``nn.RNN`` (no bias) plus a bare ``nn.Linear`` (no bias) and nothing else.

Weight files are written and read by `rnngen.weights` (numpy only).
"""

from __future__ import annotations

import math
from typing import Literal, cast

import numpy as np
import torch
from torch import nn

from rnngen.errors import ParameterError
from rnngen.weights import WEIGHT_KEYS

InitName = Literal["irnn", "orthogonal", "default"]
INITS: tuple[str, ...] = ("irnn", "orthogonal", "default")

# Std of U's entries for 'irnn' and 'orthogonal'. GloVe words have norm ~5, so U x_t starts
# at ~0.05 per unit and the W = I running sum stays O(1) over L = 100..300 steps; with
# U ~ N(0, 1/d) the first batches' loss exceeds 100 and later spikes (measured on IMDB,
# L = 100: 0.01 gave 82.6 % after 6 epochs, 1/sqrt(d) 81.1 %, Le et al.'s 0.001 81.9 %).
INPUT_STD = 0.01


class ReLURNN(nn.Module):
    """Eq. (1): ``y_L = V relu(U x_L + W relu(... relu(U x_1)))``; three weight matrices only.

    Args:
        d: input size (50 for GloVe 6B 50d).
        m: hidden size.
        k: number of classes (2 for IMDB).
        init: 'irnn', 'orthogonal' or 'default' (see `init_weights`).
        init_scale: gain of the recurrent matrix W at initialisation.
        generator: random stream for the initial weights (the run's 'init' stream).
    """

    def __init__(
        self,
        d: int,
        m: int,
        k: int = 2,
        init: InitName = "irnn",
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.rnn = nn.RNN(d, m, nonlinearity="relu", bias=False, batch_first=True)
        self.readout = nn.Linear(m, k, bias=False)
        init_weights(self, init, init_scale, generator)

    @property
    def U(self) -> nn.Parameter:
        """Input-to-hidden matrix, shape (m, d)."""
        # nn.Module.__getattr__ is typed Tensor | Module; the attribute is a Parameter.
        return cast(nn.Parameter, self.rnn.weight_ih_l0)

    @property
    def W(self) -> nn.Parameter:
        """Hidden-to-hidden matrix, shape (m, m)."""
        return cast(nn.Parameter, self.rnn.weight_hh_l0)

    @property
    def V(self) -> nn.Parameter:
        """Readout matrix, shape (k, m)."""
        return cast(nn.Parameter, self.readout.weight)  # nn.Linear types it as Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y_L of shape (B, k) for inputs x of shape (B, L, d), starting from h_0 = 0."""
        _, h_last = self.rnn(x)  # h_last: (1, B, m); torch starts from zeros when h0 is None
        return self.readout(h_last[0])

    def weights_numpy(self) -> dict[str, np.ndarray]:
        """Float64 copies of U, W, V: what the bound computations and weight files take."""
        return {
            name: getattr(self, name).detach().cpu().to(torch.float64).numpy().copy()
            for name in WEIGHT_KEYS
        }


def init_weights(
    model: ReLURNN, init: str, scale: float, generator: torch.Generator | None = None
) -> None:
    """Set U, W, V in place from `generator`, so that the init stream alone decides them.

    - 'irnn' (Le, Jaitly & Hinton 2015): W = scale * I; U ~ N(0, INPUT_STD^2), V ~ N(0, 1/m).
      W = I makes the ReLU state a running sum of relu'd word features, so gradients
      neither explode nor vanish through the L steps at the start of training -- what lets
      a plain ReLU RNN read reviews of 100-300 words (the default).
    - 'orthogonal': W = scale * (random orthogonal); U, V as for 'irnn'.
    - 'default': PyTorch's own U(-1/sqrt(m), 1/sqrt(m)) for every entry; W times scale.
    """
    if init not in INITS:
        raise ParameterError(f"init must be one of {INITS}, got {init!r}.")
    m, d = model.U.shape
    k = model.V.shape[0]
    with torch.no_grad():
        if init == "default":
            bound = 1.0 / math.sqrt(m)
            for p in (model.U, model.W, model.V):
                p.uniform_(-bound, bound, generator=generator)
            model.W.mul_(scale)
            return
        model.U.copy_(torch.randn(m, d, generator=generator) * INPUT_STD)
        if init == "irnn":
            model.W.copy_(scale * torch.eye(m))
        else:
            nn.init.orthogonal_(model.W, gain=scale, generator=generator)
        model.V.copy_(torch.randn(k, m, generator=generator) / math.sqrt(m))


def model_with(weights: dict[str, np.ndarray]) -> ReLURNN:
    """A float32 ReLURNN in eval mode holding `weights` (U, W, V), for evaluation."""
    m, d = weights["U"].shape
    model = ReLURNN(d, m, weights["V"].shape[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for key in WEIGHT_KEYS:
            getattr(model, key).copy_(torch.as_tensor(np.asarray(weights[key])))
    return model.eval()


def reference_forward(U: np.ndarray, W: np.ndarray, V: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Eq. (1) as a plain loop over t (the test oracle for `ReLURNN`); x (B, L, d) -> (B, k)."""
    h = np.zeros((x.shape[0], W.shape[0]))
    for t in range(x.shape[1]):
        h = np.maximum(x[:, t] @ U.T + h @ W.T, 0.0)
    return h @ V.T
