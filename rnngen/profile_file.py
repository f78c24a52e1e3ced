"""A profile from a TOML file: the fields of the built-in profiles (rnngen.profiles.Profile),
validated before anything runs, every error named in one message.

    name = "tiny"                      # required; not the name of a built-in profile
    description = "two cells at L = 4"
    lengths = [4]                      # required: positive integers
    sigmas = [0.0, 0.3]                # required: numbers >= 0
    seeds = [0]                        # required: integers >= 0, each once
    device = "cpu"                     # auto | cpu | cuda
    gpu_fraction = 0.25                # (0, 1]
    pack_size = 0                      # 0 = automatic, or a number of cells
    spectrum_n_train = 1000            # >= 50·L for every L (E(xxᵀ) has L·50 dimensions)
    out = "data/tiny"
    [train]                            # RunSpec fields (rnngen/specs.py)
    hidden = 6
    epochs = 1
    [axes]                             # more swept RunSpec fields
    hidden = [6, 12]
    [stages.measures]                  # settings of later stages
    n_resamples = 50

A file is named by a path ending in `.toml` wherever a profile name is taken.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from rnngen.errors import ParameterError, UserError
from rnngen.profiles import DEVICES, PROFILES, Profile

SUFFIX = ".toml"
FIELDS = tuple(f.name for f in dataclasses.fields(Profile))
REQUIRED = ("name", "lengths", "sigmas", "seeds")
# Grid axes have fields of their own; the device is the profile's `device`.
NOT_TRAIN = ("L", "sigma", "seed", "data_key", "device")
# What a stage's table may hold: the parameters the study passes on to that stage.
STAGE_KEYS = {
    "measures": ("delta", "flatness", "flatness_reviews", "max_retries", "n_resamples"),
    "certify": None,  # rnngen.certify.CertifySettings' fields
}
EMBEDDING_DIM = 50  # GloVe 6B 50d (rnngen.glove.GLOVE_DIM): E(xxᵀ) has L·50 dimensions


def is_profile_file(profile: str) -> bool:
    return str(profile).endswith(SUFFIX)


def load_profile_file(path: str | Path) -> Profile:
    """The profile in the TOML file `path`; a ParameterError naming every problem."""
    path = Path(path).expanduser()
    where = f"--profile {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ParameterError(
            f"{where}: cannot read it ({err.strerror}). Give a TOML file with the fields of "
            f"a profile ({', '.join(FIELDS)}), or a built-in profile: {', '.join(PROFILES)}."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(f"{where} is not valid TOML: {err}. Fix the file and rerun.") from None
    errors = profile_errors(data)
    if errors:
        listed = " ".join(f"({i}) {e}" for i, e in enumerate(errors, 1))
        count = f"{len(errors)} error{'s' if len(errors) > 1 else ''}"
        raise ParameterError(f"{where} has {count}: {listed} Fix the file and rerun.")
    return Profile(
        name=data["name"],
        description=data.get("description", f"from {path}"),
        lengths=tuple(data["lengths"]),
        sigmas=tuple(float(s) for s in data["sigmas"]),
        seeds=tuple(data["seeds"]),
        train=dict(data.get("train", {})),
        axes={k: tuple(v) for k, v in data.get("axes", {}).items()},
        device=data.get("device", "cpu"),
        gpu_fraction=float(data.get("gpu_fraction", 0.25)),
        pack_size=data.get("pack_size", 0),
        spectrum_n_train=data.get("spectrum_n_train"),
        stages={k: dict(v) for k, v in data.get("stages", {}).items()},
        out=data.get("out", "data"),
    )


def profile_label(profile: str) -> str:
    """The name a profile goes by in run names and tags: its own name, or for a file the
    `name` it declares (the file's stem when it cannot be read)."""
    if not is_profile_file(profile):
        return profile
    try:
        name = tomllib.loads(Path(profile).expanduser().read_text(encoding="utf-8")).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) and name else Path(profile).stem


def profile_record(profile: str) -> str:
    """What a run records of its profile: a file's own text, or a built-in's fields."""
    if is_profile_file(profile):
        path = Path(profile).expanduser()
        return f"# {path.resolve()}\n" + path.read_text(encoding="utf-8")
    prof = PROFILES.get(profile)
    return repr(prof) if prof is not None else profile


# ----------------------------------------------------------------------------- checks


def profile_errors(data: dict[str, Any]) -> list[str]:
    """Every problem of a parsed profile file, one sentence each."""
    errors = [f"{k} is missing (required)." for k in REQUIRED if k not in data]
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        errors.append(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(FIELDS)}.")
    name = data.get("name")
    if "name" in data and (not isinstance(name, str) or not name.strip()):
        errors.append(f"name must be a non-empty string; got {name!r}.")
    elif isinstance(name, str) and name in PROFILES:
        errors.append(f"name {name!r} is a built-in profile's; give this profile its own name.")
    for key in ("description", "out"):
        if key in data and not isinstance(data[key], str):
            errors.append(f"{key} must be a string; got {data[key]!r}.")
    lengths = _list_errors(data, "lengths", _positive_int, "positive integers", errors)
    _list_errors(data, "sigmas", _noise, "numbers >= 0", errors)
    _list_errors(data, "seeds", _seed, "integers >= 0", errors)
    if "device" in data and data["device"] not in DEVICES:
        errors.append(f"device must be one of {', '.join(DEVICES)}; got {data['device']!r}.")
    fraction = data.get("gpu_fraction", 0.25)
    if not _number(fraction) or not 0 < fraction <= 1:
        errors.append(f"gpu_fraction must be a share of one GPU in (0, 1]; got {fraction!r}.")
    pack = data.get("pack_size", 0)
    if not _int(pack) or pack < 0:
        errors.append(f"pack_size must be 0 (automatic) or a number of cells; got {pack!r}.")
    errors += spectrum_n_train_errors(data.get("spectrum_n_train"), lengths or [])
    errors += _train_errors(data)
    errors += _stage_errors(data.get("stages", {}))
    return errors


def spectrum_n_train_errors(n_train: Any, lengths: list[int], what="spectrum_n_train") -> list[str]:
    """The spectrum's rule: E(xxᵀ) has L·50 dimensions, so it needs at least that many
    training reviews (fewer leave it singular, λ_min = 0)."""
    if n_train is None:
        return []
    if not _int(n_train) or n_train < 2:
        return [f"{what} must be a number of training reviews >= 2; got {n_train!r}."]
    usable = n_train - n_train % 2  # class-balanced: half of each class
    short = [L for L in lengths if usable < EMBEDDING_DIM * L]
    if not short:
        return []
    L = max(short)
    return [
        f"{what} {n_train} is too few for L={L}: E(xxᵀ) has L·{EMBEDDING_DIM} = "
        f"{EMBEDDING_DIM * L} dimensions and needs at least that many training reviews "
        f"(use {EMBEDDING_DIM * L} or more, or a smaller L)."
    ]


def _train_errors(data: dict[str, Any]) -> list[str]:
    from rnngen.specs import RunSpec

    errors = []
    train, axes = data.get("train", {}), data.get("axes", {})
    for key, table in (("train", train), ("axes", axes)):
        if not isinstance(table, dict):
            errors.append(f"[{key}] must be a table of RunSpec fields; got {table!r}.")
    if errors:
        return errors
    for key in [*train, *axes]:
        if key in NOT_TRAIN:
            errors.append(
                f"{key} cannot be set in [train] or [axes]: use the profile's lengths, sigmas, "
                "seeds or device."
            )
    swept = {}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            errors.append(f"axes.{key} must be a non-empty list; got {values!r}.")
        elif len({repr(v) for v in values}) != len(values):
            errors.append(f"axes.{key} lists a value twice: {values!r}.")
        elif key not in NOT_TRAIN:
            swept[key] = values
    fixed = {k: v for k, v in train.items() if k not in NOT_TRAIN}
    points = [{}] + [{k: v} for k, values in swept.items() for v in values]
    for point in points:
        try:
            RunSpec(**{**fixed, **point}, L=1, sigma=0.0, seed=0, data_key="profile")
        except UserError as err:
            where = "[train]" if not point else f"axes {point}"
            errors.append(f"{where}: {err}")
    return errors


def _stage_errors(stages: Any) -> list[str]:
    if not isinstance(stages, dict):
        return [f"[stages] must be a table of stage tables; got {stages!r}."]
    errors = []
    for stage, settings in stages.items():
        if stage not in STAGE_KEYS:
            errors.append(f"stages.{stage}: unknown stage; the known ones are {list(STAGE_KEYS)}.")
        elif not isinstance(settings, dict):
            errors.append(f"stages.{stage} must be a table; got {settings!r}.")
        elif stage == "measures":
            errors += _measures_errors(settings)
        else:
            errors += _certify_errors(settings)
    return errors


def _measures_errors(settings: dict[str, Any]) -> list[str]:
    from rnngen.settings import MeasuresSettings

    keys = STAGE_KEYS["measures"] or ()
    unknown = sorted(set(settings) - set(keys))
    errors = []
    if unknown:
        errors.append(f"stages.measures: unknown setting(s) {unknown}; the known ones are {keys}.")
    n = settings.get("n_resamples", 1000)
    if not _int(n) or n < 10:
        errors.append(f"stages.measures.n_resamples must be an integer >= 10; got {n!r}.")
    try:
        MeasuresSettings(**{k: v for k, v in settings.items() if k in keys and k != "n_resamples"})
    except UserError as err:
        errors.append(f"stages.measures: {err}")
    return errors


def _certify_errors(settings: dict[str, Any]) -> list[str]:
    from rnngen.certify import CertifySettings

    known = [f.name for f in dataclasses.fields(CertifySettings)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        return [f"stages.certify: unknown setting(s) {unknown}; the known ones are {known}."]
    try:
        CertifySettings(**settings)
    except UserError as err:
        return [f"stages.certify: {err}"]
    return []


def _list_errors(data, key, ok, what, errors) -> list | None:
    """Check a list field; its valid values (None when it is absent or not a list)."""
    values = data.get(key)
    if key not in data:
        return None
    if not isinstance(values, list) or not values:
        errors.append(f"{key} must be a non-empty list of {what}; got {values!r}.")
        return None
    bad = [v for v in values if not ok(v)]
    if bad:
        errors.append(f"{key} must hold {what}; got {', '.join(map(repr, bad))}.")
    if len({repr(v) for v in values}) != len(values):
        errors.append(f"{key} lists a value twice: {values!r}.")
    return [v for v in values if ok(v)]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _positive_int(v: Any) -> bool:
    return _int(v) and v > 0


def _noise(v: Any) -> bool:
    return _number(v) and v >= 0


def _seed(v: Any) -> bool:
    return _int(v) and v >= 0
