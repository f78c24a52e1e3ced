"""The command line's own checks, run before Prefect or Ray start: Prefect's settings, bad
option values, an `--out` that is a file, and the Ray token file's mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rnngen_flows.cli import PREFECT_DEFAULTS
from rnngen_tasks.tokens import private_token_file
from tests.cli import run_cli_source

TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def _python(code: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def _env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


# What the console script `rnngen` runs: `from rnngen_flows.cli import main`, then main();
# here the module is imported that way and Prefect's effective setting printed.
EFFECTIVE_TIMEOUT = (
    "from rnngen_flows.cli import main\n"
    "import prefect.settings\n"
    "print(prefect.settings.get_current_settings().server.ephemeral.startup_timeout_seconds)\n"
)


def test_the_cli_prefect_defaults_are_in_force():
    """Prefect reads its settings when first imported; the CLI's 90 s must be what it uses."""
    proc = _python(EFFECTIVE_TIMEOUT, _env_without(*PREFECT_DEFAULTS))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [PREFECT_DEFAULTS[TIMEOUT_SETTING]]


def test_a_prefect_setting_of_the_user_wins():
    proc = _python(EFFECTIVE_TIMEOUT, _env_without(*PREFECT_DEFAULTS) | {TIMEOUT_SETTING: "33"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["33"]


# `rnngen ARGS` in a fresh interpreter: its exit code, its output, and whether Prefect or Ray
# were imported at all by the time it exited.
RUN_CLI = run_cli_source(("prefect", "ray"))


def rnngen(*args: str, cwd: Path) -> tuple[int, str]:
    env = os.environ | {"COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--max-retries", "-1"), "--max-retries must be 0 (no retry) or a positive"),
        (("bounds", "--delta", "nan"), "--delta must be a number in (0, 1), got nan"),
        (("bounds", "--delta", "inf"), "--delta must be a number in (0, 1), got inf"),
        (("bounds", "--delta", "1"), "--delta must be a number in (0, 1), got 1.0"),
        (("bounds", "--alpha", "nan"), "--alpha values must be positive, finite margins"),
        (("bounds", "--alpha", "inf"), "--alpha values must be positive, finite margins"),
        (("bounds", "--alpha", "1", "0"), "--alpha values must be positive, finite margins"),
        (("bounds", "--alpha", "-2"), "--alpha values must be positive, finite margins"),
    ],
)
def test_bad_values_are_refused_before_prefect_or_ray(tmp_path, args, message):
    code, output = rnngen(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert code == 2, output
    assert f"error: {message}" in output
    assert "imported: []" in output  # refused before Prefect or Ray was even imported
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "spectrum", "bounds", "embed", "status", "study"])
def test_an_out_that_is_a_file_is_named_as_such(tmp_path, command):
    (tmp_path / "results.txt").write_text("not a folder")
    code, output = rnngen(command, "--out", "results.txt", cwd=tmp_path)
    assert code == 2, output
    assert "error: --out results.txt is a file, not a folder." in output
    assert "imported: []" in output
    assert (tmp_path / "results.txt").read_text() == "not a folder"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_ray_token_is_written_private(tmp_path):
    token = tmp_path / "home" / ".ray" / "auth_token"
    note = private_token_file(token, create=True)
    assert note is not None and str(token) in note
    assert _mode(token) == 0o600 and _mode(token.parent) == 0o700
    assert len(token.read_text()) == 64 and int(token.read_text(), 16) >= 0  # Ray's format
    before = token.read_text()
    assert private_token_file(token, create=True) is None  # already there and private
    assert token.read_text() == before


def test_a_ray_token_readable_by_others_is_made_private(tmp_path):
    token = tmp_path / "auth_token"  # as Ray's own local start writes it: mode 644
    token.write_text("secret")
    token.chmod(0o644)
    note = private_token_file(token, create=True)
    assert note is not None and "mode 644" in note
    assert _mode(token) == 0o600 and token.read_text() == "secret"


def test_a_token_path_that_does_not_exist_is_not_created(tmp_path):
    assert private_token_file(tmp_path / "given-token", create=False) is None
    assert not (tmp_path / "given-token").exists()
