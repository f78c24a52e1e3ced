"""``rnngen.model``: eq. (1) exactly, its initialisations, and safe weight files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rnngen.errors import DataError, ParameterError
from rnngen.model import INITS, ReLURNN, reference_forward
from rnngen.weights import load_weights, save_weights

D, M, K = 5, 7, 2


def model64(init: str = "irnn", scale: float = 1.0, seed: int = 0) -> ReLURNN:
    gen = torch.Generator().manual_seed(seed)
    return ReLURNN(D, M, K, init=init, init_scale=scale, generator=gen).double()


def padded_batch(rng: np.random.Generator, B: int = 4, L: int = 9) -> np.ndarray:
    """Random (B, L, D) inputs, each pre-padded with a random number of zero steps."""
    x = rng.normal(size=(B, L, D))
    for i, pad in enumerate(rng.integers(0, L, size=B)):
        x[i, :pad] = 0.0
    return x


# ------------------------------------------------------------------------------ the map itself


@pytest.mark.parametrize("init", INITS)
def test_forward_matches_explicit_loop(init: str) -> None:
    rng = np.random.default_rng(1)
    model = model64(init, scale=0.9)
    with torch.no_grad():  # random weights so that ReLU masks are mixed, not all-on
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.normal(size=p.shape) / np.sqrt(p.shape[1])))
    x = padded_batch(rng)
    w = model.weights_numpy()
    got = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(
        got, reference_forward(w["U"], w["W"], w["V"], x), rtol=1e-12, atol=1e-12
    )


def test_exactly_three_weight_matrices_and_no_bias() -> None:
    model = ReLURNN(D, M, K)
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == 3
    assert not any("bias" in name for name in names)
    assert model.U is model.rnn.weight_ih_l0 and model.U.shape == (M, D)
    assert model.W is model.rnn.weight_hh_l0 and model.W.shape == (M, M)
    assert model.V is model.readout.weight and model.V.shape == (K, M)


def test_pre_padding_is_neutral() -> None:
    """No bias and h_0 = 0: leading zero inputs leave h at 0, so y_L ignores them."""
    rng = np.random.default_rng(2)
    w = model64().weights_numpy()
    x = rng.normal(size=(3, 5, D))
    padded = np.concatenate([np.zeros((3, 4, D)), x], axis=1)
    np.testing.assert_array_equal(
        reference_forward(w["U"], w["W"], w["V"], padded),
        reference_forward(w["U"], w["W"], w["V"], x),
    )


def test_weights_numpy_are_float64_copies() -> None:
    model = ReLURNN(D, M, K)
    w = model.weights_numpy()
    assert sorted(w) == ["U", "V", "W"] and all(a.dtype == np.float64 for a in w.values())
    w["U"][:] = 123.0
    assert not torch.any(model.U == 123.0)


# ---------------------------------------------------------------------------- initialisation


def test_irnn_starts_from_scaled_identity() -> None:
    np.testing.assert_array_equal(model64("irnn", 0.5).weights_numpy()["W"], 0.5 * np.eye(M))


def test_orthogonal_init_is_scaled_orthogonal() -> None:
    W = model64("orthogonal", 0.8).weights_numpy()["W"]
    np.testing.assert_allclose(W @ W.T, 0.64 * np.eye(M), atol=1e-6)


def test_default_init_is_bounded_uniform() -> None:
    w = model64("default", 1.0).weights_numpy()
    assert all(np.abs(a).max() <= 1 / np.sqrt(M) for a in w.values())


@pytest.mark.parametrize("init", INITS)
def test_init_is_decided_by_the_generator(init: str) -> None:
    a, b, c = model64(init, seed=3), model64(init, seed=3), model64(init, seed=4)
    for name in ("U", "V"):
        np.testing.assert_array_equal(a.weights_numpy()[name], b.weights_numpy()[name])
        assert not np.array_equal(a.weights_numpy()[name], c.weights_numpy()[name])


def test_unknown_init_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="init"):
        ReLURNN(D, M, K, init="xavier")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- weight files


def test_save_load_round_trip(tmp_path: Path) -> None:
    weights = model64("orthogonal").weights_numpy()
    spec = '{"L": 100, "sigma": 0.1, "note": "ünïcode"}'
    path = save_weights(tmp_path / "run.npz", weights, spec)
    loaded, spec_back = load_weights(path)
    assert spec_back == spec
    for name in ("U", "W", "V"):
        np.testing.assert_array_equal(loaded[name], weights[name])
        assert loaded[name].dtype == np.float64
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]  # no temporary left behind


def test_save_refuses_incomplete_weights(tmp_path: Path) -> None:
    weights = model64().weights_numpy()
    del weights["V"]
    with pytest.raises(DataError, match="V"):
        save_weights(tmp_path / "w.npz", weights, "{}")


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("W", np.nan, r"weight matrix W \(7, 7\) holds 1 non-finite values \(NaN or infinity\)"),
        ("U", np.inf, r"weight matrix U \(7, 5\) holds 1 non-finite values"),
        ("V", -np.inf, r"weight matrix V \(2, 7\) holds 1 non-finite values"),
    ],
)
def test_load_refuses_non_finite_weights_naming_file_and_matrix(
    tmp_path: Path, key: str, value: float, reason: str
) -> None:
    weights = model64().weights_numpy()
    weights[key][1, 2] = value
    path = tmp_path / "nan.npz"
    np.savez(path, **weights, spec_json=np.array("{}"))  # as a corrupted file would hold them
    with pytest.raises(DataError, match=f"^{tmp_path / 'nan.npz'}: {reason}") as err:
        load_weights(path)
    assert "same model and data" not in str(err.value)


def test_load_refuses_complex_weights_instead_of_dropping_the_imaginary_part(
    tmp_path: Path,
) -> None:
    weights = model64().weights_numpy()
    weights["W"] = weights["W"] + 1e-3j
    path = tmp_path / "complex.npz"
    np.savez(path, **weights, spec_json=np.array("{}"))
    with pytest.raises(DataError, match=r"complex.npz: weight matrix W holds complex values"):
        load_weights(path)


def test_save_refuses_non_finite_weights(tmp_path: Path) -> None:
    weights = model64().weights_numpy()
    weights["V"][0, 0] = np.nan
    with pytest.raises(DataError, match="weight matrix V"):
        save_weights(tmp_path / "w.npz", weights, "{}")
    assert list(tmp_path.iterdir()) == []


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.npz"):
        load_weights(tmp_path / "nope.npz")


def _write_bad(path: Path, kind: str) -> None:
    """Files that must not load: a pickle, garbage, a bare array, incomplete archives."""
    w = model64().weights_numpy()
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"U": w["U"], "W": w["W"], "V": w["V"]}))
    elif kind == "garbage":
        path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    elif kind == "bare_array":
        with open(path, "wb") as fh:
            np.save(fh, w["U"])
    elif kind == "object_array":
        np.savez(
            path, U=np.array([object()], dtype=object), W=w["W"], V=w["V"], spec_json=np.array("{}")
        )
    elif kind == "no_V":
        np.savez(path, U=w["U"], W=w["W"], spec_json=np.array("{}"))
    elif kind == "no_spec":
        np.savez(path, **w)
    elif kind == "bad_shapes":
        np.savez(path, U=w["U"], W=w["W"][:3], V=w["V"], spec_json=np.array("{}"))


@pytest.mark.parametrize(
    "kind", ["pickle", "garbage", "bare_array", "object_array", "no_V", "no_spec", "bad_shapes"]
)
def test_load_refuses_bad_files(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.npz"
    _write_bad(path, kind)
    with pytest.raises(DataError, match="bad.npz"):
        load_weights(path)


def test_any_flipped_byte_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    """A flipped byte inside a compressed member raises zlib.error from numpy, which is
    not an OSError: every single-byte corruption must still come out as a DataError."""
    good = save_weights(tmp_path / "run.npz", model64().weights_numpy(), "{}").read_bytes()
    bad = tmp_path / "bad.npz"
    refused = 0
    for offset in range(0, len(good), max(1, len(good) // 200)):
        data = bytearray(good)
        data[offset] ^= 0xFF
        bad.write_bytes(bytes(data))
        try:
            load_weights(bad)  # a flip in padding or an unused header byte may still load
        except DataError as err:
            assert "bad.npz" in str(err)
            refused += 1
    assert refused > 100  # most flips are caught, by the CRC, the inflater or the checks
