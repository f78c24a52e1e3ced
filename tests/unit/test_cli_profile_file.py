"""`--profile FILE.toml`: a profile from a file, the fields of the built-in ones, validated
with every problem named in one message, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnngen.errors import ParameterError
from rnngen.profile_file import load_profile_file, profile_label, profile_record
from rnngen.profiles import PROFILES, Profile

TINY = """
name = "tiny"
description = "two cells at L = 4"
lengths = [4]
sigmas = [0.0, 0.3]
seeds = [0]
spectrum_n_train = 1000
out = "data/tiny"

[train]
hidden = 6
epochs = 1
n_train = 300
n_test = 200

[axes]
lr = [0.001, 0.002]

[stages.measures]
flatness_reviews = 100
n_resamples = 50
"""

BROKEN = """
name = "quick"
lengths = [0, 5]
sigmas = [-1]
seeds = [0, 0]
device = "gpu"
spectrum_n_train = 100
colour = "blue"

[train]
hidden = -3
epochs = "many"
L = 4

[stages.measures]
n_resamples = 2
bogus = 1

[stages.bounds]
delta = 0.1
"""


def _write(tmp_path: Path, text: str, name: str = "profile.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_profile_file_gives_the_same_fields_as_a_built_in_one(tmp_path):
    profile = load_profile_file(_write(tmp_path, TINY))
    assert profile == Profile(
        name="tiny",
        description="two cells at L = 4",
        lengths=(4,),
        sigmas=(0.0, 0.3),
        seeds=(0,),
        train={"hidden": 6, "epochs": 1, "n_train": 300, "n_test": 200},
        axes={"lr": (0.001, 0.002)},
        spectrum_n_train=1000,
        stages={"measures": {"flatness_reviews": 100, "n_resamples": 50}},
        out="data/tiny",
    )
    assert profile_label(str(tmp_path / "profile.toml")) == "tiny"
    assert profile_label("quick") == "quick"
    assert profile_record(str(tmp_path / "profile.toml")).endswith(TINY)
    assert "lengths=(100, 200, 300)" in profile_record("quick")


def test_every_problem_is_named_in_one_message(tmp_path):
    with pytest.raises(ParameterError) as caught:
        load_profile_file(_write(tmp_path, BROKEN))
    message = str(caught.value)
    assert message.startswith(f"--profile {tmp_path / 'profile.toml'} has 12 errors:")
    for part in (
        "unknown field(s) colour",
        "name 'quick' is a built-in profile's",
        "lengths must hold positive integers; got 0",
        "sigmas must hold numbers >= 0; got -1",
        "seeds lists a value twice",
        "device must be one of auto, cpu, cuda; got 'gpu'",
        "spectrum_n_train 100 is too few for L=5",
        "L cannot be set in [train] or [axes]",
        "run parameter 'hidden' must be a positive hidden size m; got -3",
        "run parameter 'epochs' must be a positive number of epochs; got 'many'",
        "stages.measures: unknown setting(s) ['bogus']",
        "stages.measures.n_resamples must be an integer >= 10; got 2",
        "stages.bounds: unknown stage",
    ):
        assert part in message, part


def test_a_malformed_file_is_one_message_too(tmp_path):
    with pytest.raises(ParameterError, match=r"is not valid TOML: .*line 3"):
        load_profile_file(_write(tmp_path, 'name = "x"\nlengths = [4\nsigmas = [0.0]\n'))
    with pytest.raises(ParameterError, match="cannot read it"):
        load_profile_file(tmp_path / "absent.toml")


def test_the_built_in_profiles_pass_the_file_checks():
    """The files' rules are the built-ins' own: each built-in, written as a file (under
    another name), loads back unchanged."""
    import tomllib  # noqa: F401  (the reader; the writer below is a few lines)

    for profile in PROFILES.values():
        text = _as_toml(profile)
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rnngen-profile-{os.getpid()}.toml"
        path.write_text(text)
        try:
            loaded = load_profile_file(path)
        finally:
            path.unlink()
        assert loaded == Profile(**{**profile.__dict__, "name": f"{profile.name}-copy"})


def _as_toml(profile: Profile) -> str:
    def value(v):
        if v is None:
            raise ValueError("TOML has no null")
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, tuple | list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f'name = "{profile.name}-copy"', f"description = {value(profile.description)}"]
    for key in ("lengths", "sigmas", "seeds", "device", "gpu_fraction", "pack_size", "out"):
        lines.append(f"{key} = {value(getattr(profile, key))}")
    if profile.spectrum_n_train is not None:
        lines.append(f"spectrum_n_train = {profile.spectrum_n_train}")
    for table, content in (("train", profile.train), ("axes", profile.axes)):
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in content.items() if v is not None]
    for stage, settings in profile.stages.items():
        lines.append(f"[stages.{stage}]")
        lines += [f"{k} = {value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def test_the_cli_refuses_a_bad_profile_file_before_anything_starts(tmp_path):
    path = _write(tmp_path, BROKEN)
    run = (
        "import sys\nfrom rnngen_flows.cli import main\nsys.argv = ['rnngen', *sys.argv[1:]]\n"
        "try:\n    main()\nfinally:\n"
        "    print('imported:', sorted({'prefect', 'ray', 'torch'} & set(sys.modules)),"
        " file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", run, "study", "--profile", str(path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "400"},
    )
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, output
    assert output.count("has 12 errors") == 1 and "Traceback" not in output
    assert "imported: []" in output
    assert not (tmp_path / "o").exists()
