"""``rnngen.specs``: frozen run specs, their hashes, and grid expansion."""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest

from rnngen.errors import ParameterError
from rnngen.specs import RunSpec, expand_grid

BASE: dict[str, Any] = {"L": 100, "sigma": 0.1, "seed": 0, "data_key": "abc123"}

# One alternative value per field: every one of them must change run_id (except device).
ALTERNATIVES: dict[str, Any] = {
    "L": 200,
    "sigma": 0.2,
    "seed": 1,
    "data_key": "other",
    "hidden": 17,
    "init": "orthogonal",
    "init_scale": 0.5,
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "clip_grad_norm": None,
    "batch_size": 3,
    "epochs": 9,
    "n_train": 100,
    "n_test": 50,
    "eval_batch_size": 7,
    "w_row_sum_max": 1.0,
    "stop_train_accuracy": 0.99,
    "device": "cuda:1",
}


def spec(**changes: Any) -> RunSpec:
    return RunSpec(**{**BASE, **changes})


def test_alternatives_cover_every_field() -> None:
    assert set(ALTERNATIVES) == set(RunSpec.model_fields)


def test_spec_is_frozen() -> None:
    s = spec()
    with pytest.raises(pydantic.ValidationError):
        s.L = 5  # type: ignore[misc]


def test_run_id_is_16_hex_and_stable() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", spec().run_id)
    assert spec().run_id == spec().run_id
    assert spec(sigma=0).run_id == spec(sigma=0.0).run_id  # int and float spell one value


@pytest.mark.parametrize("name", ["sigma", "weight_decay", "momentum"])
def test_every_spelling_of_a_value_gives_one_run_id(name: str) -> None:
    """`--sigma -0` is σ = 0: -0.0 is normalized to 0.0, so it names the same run."""
    zeros = [0, 0.0, -0.0, "0", "-0", "0.0", "-0.0", "0e3"]
    assert {spec(**{name: z}).run_id for z in zeros} == {spec(**{name: 0.0}).run_id}
    assert {str(getattr(spec(**{name: z}), name)) for z in zeros} == {"0.0"}  # no "-0.0"
    assert spec(**{name: -0.0}).to_json() == spec(**{name: 0.0}).to_json()
    tenths = [0.1, 1e-1, "0.1", "1e-1", "0.10", 0.1000000000000000055511151231257827]
    assert len({spec(**{name: t}).run_id for t in tenths}) == 1


def test_minus_zero_in_a_grid_is_zero() -> None:
    specs = expand_grid({"L": 10, "seed": 0, "data_key": "k"}, {"sigma": [-0.0, 0.5]})
    assert [s.sigma for s in specs] == [0.0, 0.5]
    assert specs[0].run_id == spec(L=10, sigma=0.0, data_key="k").run_id
    with pytest.raises(ParameterError, match="twice"):
        expand_grid({"L": 10, "seed": 0, "data_key": "k"}, {"sigma": [0.0, -0.0]})


def test_device_does_not_change_run_id() -> None:
    assert spec(device="cuda:0").run_id == spec(device="cpu").run_id
    assert spec(device="cuda:0").group_id == spec(device="cpu").group_id


@pytest.mark.parametrize("name", [n for n in ALTERNATIVES if n != "device"])
def test_every_other_field_changes_run_id(name: str) -> None:
    assert spec(**{name: ALTERNATIVES[name]}).run_id != spec().run_id


def test_group_id_ignores_only_the_seed() -> None:
    assert spec(seed=0).group_id == spec(seed=7).group_id
    assert spec(seed=0).group_id != spec(sigma=0.3).group_id
    assert spec().group_id != spec().run_id


def test_experiment_id_ignores_the_grid_axes_only() -> None:
    assert (
        spec(seed=0, sigma=0.0, L=100).experiment_id == spec(seed=3, sigma=0.4, L=300).experiment_id
    )
    for name in ("hidden", "epochs", "w_row_sum_max", "lr"):
        assert spec(**{name: ALTERNATIVES[name]}).experiment_id != spec().experiment_id


@pytest.mark.parametrize("device", ["auto", "gpu", "cuda:x", ""])
def test_device_must_be_a_concrete_torch_device(device: str) -> None:
    with pytest.raises(ParameterError, match="device"):
        spec(device=device)


def test_json_round_trip() -> None:
    s = spec(clip_grad_norm=None, n_train=100, device="cuda:0")
    back = RunSpec.from_json(s.to_json())
    assert back == s and back.run_id == s.run_id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sigma", -0.1),
        ("sigma", float("nan")),
        ("L", 0),
        ("L", -5),
        ("L", True),
        ("L", "100"),
        ("seed", -1),
        ("optimizer", "adamw"),
        ("lr", 0.0),
        ("clip_grad_norm", 0.0),
        ("momentum", 1.0),
        ("hidden", 0),
        ("init", "xavier"),
        ("n_train", 1),
        ("batch_size", 2.5),
        ("weight_decay", -1.0),
    ],
)
def test_bad_values_name_the_parameter(field: str, value: Any) -> None:
    with pytest.raises(ParameterError, match=f"'{field}'"):
        spec(**{field: value})


def test_unknown_and_missing_fields_are_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="unknown run parameter 'sigam'"):
        spec(sigam=0.1)
    with pytest.raises(ParameterError, match="'data_key'.*missing"):
        RunSpec(L=100, sigma=0.0, seed=0)
    with pytest.raises(ParameterError, match="'L'"):
        RunSpec.from_json('{"L": -1, "sigma": 0, "seed": 0, "data_key": "k"}')


# ------------------------------------------------------------------------------------- grids


def test_grid_counts_order_and_unique_ids() -> None:
    sweep = {"L": [100, 200], "sigma": [0.0, 0.1], "seed": [0, 1, 2], "hidden": [32, 64]}
    specs = expand_grid({"data_key": "k", "epochs": 2}, sweep)
    assert len(specs) == 2 * 2 * 3 * 2
    assert len({s.run_id for s in specs}) == len(specs)
    assert all(s.epochs == 2 and s.data_key == "k" for s in specs)
    # Last axis fastest, like nested loops; and the same call gives the same list.
    assert [(s.L, s.sigma, s.seed, s.hidden) for s in specs[:3]] == [
        (100, 0.0, 0, 32),
        (100, 0.0, 0, 64),
        (100, 0.0, 1, 32),
    ]
    assert [s.run_id for s in expand_grid({"data_key": "k", "epochs": 2}, sweep)] == [
        s.run_id for s in specs
    ]
    groups = {s.group_id for s in specs}
    assert len(groups) == len(specs) // 3  # seeds share a group


@pytest.mark.parametrize(
    ("base", "sweep", "message"),
    [
        ({"data_key": "k", "L": 100, "sigma": 0.0}, {"seed": []}, "'seed' is empty"),
        ({"data_key": "k", "L": 100, "seed": 0}, {"sigma": [0.1, 0.1]}, "twice"),
        ({"data_key": "k", "L": 100, "seed": 0}, {"sigma": [0, 0.0]}, "twice"),
        (
            {"data_key": "k", "L": 100, "seed": 0},
            {"sigmas": [0.1]},
            "unknown run parameter 'sigmas'",
        ),
        ({"data_key": "k", "L": 100, "seed": 0, "hiden": 3}, {"sigma": [0.1]}, "'hiden'"),
        ({"data_key": "k", "L": 100, "seed": 0}, {"sigma": [0.0, -0.1]}, "'sigma'"),
        ({"data_key": "k", "sigma": 0.0, "seed": 0}, {"L": [100, 0]}, "'L'"),
        (
            {"data_key": "k", "L": 100, "sigma": 0.0, "seed": 0},
            {"optimizer": ["adam", "lbfgs"]},
            "'optimizer'",
        ),
        ({"data_key": "k", "L": 100, "sigma": 0.0}, {"seed": 3}, "must be a list"),
        (
            {"data_key": "k", "L": 100, "sigma": 0.0, "seed": 0},
            {"seed": [1]},
            "both fixed and swept",
        ),
        (
            {"data_key": "k", "L": 100, "sigma": 0.0, "seed": 0},
            {"device": ["cpu", "cuda"]},
            "same run more than once",
        ),
    ],
)
def test_bad_grids_fail_before_anything_runs(
    base: dict[str, Any], sweep: dict[str, Any], message: str
) -> None:
    with pytest.raises(ParameterError, match=message):
        expand_grid(base, sweep)


def test_a_field_added_later_leaves_earlier_run_ids_alone_while_unset() -> None:
    """stop_train_accuracy joined the spec after runs were committed: unset, the run_id is
    the hash of the other fields alone (what it was before the field existed)."""
    from rnngen.hashing import content_key
    from rnngen.specs import NOT_HASHED, SPEC_VERSION

    plain = spec()
    fields = plain.model_dump(exclude=set(NOT_HASHED) | {"stop_train_accuracy"})
    assert plain.run_id == content_key({"spec_version": SPEC_VERSION, **fields}, length=16)
    assert spec(stop_train_accuracy=0.99).run_id != plain.run_id
