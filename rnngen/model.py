"""The bias-free ReLU RNN of the paper's eq. (1), its initialisations and its weight files.

    g_t = U x_t + W h_{t-1},   h_t = relu(g_t),   y_t = V h_t,   h_0 = 0,

and only y_L is read. The bounds are stated for exactly this map: a bias, a different
readout or masking would break the identities of the bounds (Lemma 1), so the module is a
bare ``nn.RNN`` (no bias) plus a bare ``nn.Linear`` (no bias) and nothing else.

Weights are stored as ``.npz`` (numpy arrays plus the run spec as a JSON string) and read
back with ``allow_pickle=False``: a weight file is data, never code to execute.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from rnngen.errors import DataError, ParameterError
from rnngen.io import atomic_path

InitName = Literal["irnn", "orthogonal", "default"]
INITS: tuple[str, ...] = ("irnn", "orthogonal", "default")
WEIGHT_KEYS: tuple[str, ...] = ("U", "W", "V")
SPEC_KEY = "spec_json"

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


# ----------------------------------------------------------------------------- weight files


def _check_weights(weights: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """U (m, d), W (m, m), V (k, m) as finite float64, or an error naming `where` and the
    matrix. Complex or non-numeric arrays are refused, never cast (a cast to float64 would
    silently drop an imaginary part)."""
    missing = [key for key in WEIGHT_KEYS if key not in weights]
    if missing:
        raise DataError(
            f"{where} lacks the weight arrays {missing}; expected keys "
            f"{list(WEIGHT_KEYS)}. Rerun the training that writes it."
        )
    arrays: dict[str, np.ndarray] = {}
    for key in WEIGHT_KEYS:
        raw = np.asarray(weights[key])
        if raw.dtype.kind not in "fiu":  # complex, bool, strings, objects
            kind = "complex" if raw.dtype.kind == "c" else "non-numeric"
            raise DataError(
                f"{where}: weight matrix {key} holds {kind} values (dtype {raw.dtype}); "
                "weights are real numbers. Rerun the training that writes it."
            )
        arrays[key] = raw.astype(np.float64)
    U, W, V = (arrays[key] for key in WEIGHT_KEYS)
    m = W.shape[0] if W.ndim == 2 else -1
    if U.ndim != 2 or W.shape != (m, m) or U.shape[0] != m or V.ndim != 2 or V.shape[1] != m:
        raise DataError(
            f"{where} holds weights of inconsistent shapes U {U.shape}, W {W.shape}, "
            f"V {V.shape}; expected (m, d), (m, m), (k, m). Rerun the training."
        )
    for key, array in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DataError(
                f"{where}: weight matrix {key} {array.shape} holds {bad} non-finite "
                "values (NaN or infinity); no bound can be computed from it. Rerun the "
                "training that writes it."
            )
    return arrays


def save_weights(path: str | Path, weights: dict[str, np.ndarray], spec_json: str) -> Path:
    """Write U, W, V and the run's spec to `path` (.npz), atomically.

    The spec travels inside the file so a weight file alone says which run made it.
    """
    arrays = _check_weights(weights, "the weights to save")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # A file object, not a name: np.savez would append '.npz' to the temporary name.
        # Compressed: the float64 copies of float32 weights have 29 zero mantissa bits, so
        # a committed grid's models take about half the space.
        # One dict of Any: mypy rejects ** of a dict[str, ndarray], whose keys could
        # name savez_compressed's allow_pickle: bool. Same members, same order.
        members: dict[str, Any] = {**arrays, SPEC_KEY: np.array(str(spec_json))}
        np.savez_compressed(fh, **members)
    return Path(path)


def load_weights(path: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """Read `(weights, spec_json)` from a file `save_weights` wrote; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"weight file {path} does not exist. Train the run first, or check the path."
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ValueError("a single array, not an .npz archive")
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"{path} is not a readable weight file ({err}). Delete it and rerun "
            "the training that writes it."
        ) from err
    spec = arrays.get(SPEC_KEY)
    if spec is None or spec.ndim != 0 or spec.dtype.kind != "U":
        raise DataError(
            f"{path} lacks the run spec ('{SPEC_KEY}'). Delete it and rerun the "
            "training that writes it."
        )
    return _check_weights(arrays, str(path)), str(spec)
