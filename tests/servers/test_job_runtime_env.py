"""What a Ray job ships (infra/ray-runtime-env.yaml: the code, listed) and the environment
infra/ray-job-submit.sh adds to it (PREFECT_API_URL, --env). Offline: no cluster needed."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile

import yaml

from tests.conftest import ROOT

INFRA = ROOT / "infra"
SHIPPED = {"rnngen", "tasks", "flows", "infra", "pyproject.toml", "prefect.yaml"}


def test_a_job_ships_the_listed_code_and_nothing_else(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    runtime_env = yaml.safe_load((INFRA / "ray-runtime-env.yaml").read_text())
    (ROOT / "infra" / ".run").mkdir(exist_ok=True)  # local state, never shipped
    package = tmp_path / "working_dir.zip"
    create_package(str(ROOT), package, include_gitignore=False, excludes=runtime_env["excludes"])
    names = [n for n in zipfile.ZipFile(package).namelist() if not n.endswith("/")]
    assert {n.split("/")[0] for n in names} == SHIPPED
    assert "flows/cli.py" in names and "rnngen/specs.py" in names and "tasks/train.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith("infra/.run/") for n in names)
    assert package.stat().st_size < 2 * 2**20


def _submit(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INFRA / "ray-job-submit.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | env,
    )


def test_job_submit_adds_the_prefect_api_and_named_variables():
    done = _submit(
        "--print-runtime-env", "--env", "RNNGEN_X", "--env", "MODE=fast",
        PREFECT_API_URL="http://prefect.internal:4200/api", RNNGEN_X="1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runtime_env = json.loads(done.stdout)
    listed = yaml.safe_load((INFRA / "ray-runtime-env.yaml").read_text())
    assert runtime_env["excludes"] == listed["excludes"]
    assert runtime_env["env_vars"] == {
        "PREFECT_API_URL": "http://prefect.internal:4200/api",
        "RNNGEN_X": "1",
        "MODE": "fast",
    }


def test_job_submit_refuses_a_variable_it_does_not_have():
    done = _submit("--print-runtime-env", "--env", "RNNGEN_NOT_SET_ANYWHERE")
    assert done.returncode != 0
    assert "RNNGEN_NOT_SET_ANYWHERE is not set here; give NAME=VALUE" in done.stderr
