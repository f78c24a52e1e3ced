"""Weight files: U, W, V of one trained model and its run spec, as ``.npz``.

Numpy arrays plus the run spec as a JSON string, read back with ``allow_pickle=False``: a
weight file is data, never code to execute. This module imports numpy only (no torch), so
that checking which models exist and load (the pre-start checks of the command line, the
store) costs no torch import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rnngen.errors import DataError
from rnngen.io import atomic_path

WEIGHT_KEYS: tuple[str, ...] = ("U", "W", "V")
SPEC_KEY = "spec_json"


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
    # Any failure while parsing the archive means an unreadable file: a flipped byte can
    # raise zlib.error (inside a compressed member), NotImplementedError (the compression
    # method field) or RuntimeError (the encryption flag) besides the usual OSError,
    # ValueError and BadZipFile; none of them is an OSError.
    except Exception as err:
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
