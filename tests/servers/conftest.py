"""Real services on 127.0.0.1 for the `servers` tests, started with the infra/ scripts.

Each service gets free ports and throw-away state (run dir, Prefect home, Ray temp dir) and is
always stopped: by its stop script, then, if anything of it is left, by killing the process
group it was started in (the pid the start script recorded). Nothing else is signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

INFRA = ROOT / "infra"
BIN = Path(sys.prefix) / "bin"  # the virtualenv running the tests: prefect, ray, rnngen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a group of another user's: not ours to signal
        return False
    return True


def kill_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            return
        os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


def run(
    args: list, env: dict[str, str], timeout: float, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run a command in its own session (stdout and stderr together); on timeout kill its whole
    process group and fail with the tail of its output."""
    proc = subprocess.Popen(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, grace=3.0)
        out, _ = proc.communicate()
        pytest.fail(
            f"`{' '.join(map(str, args))}` did not finish within {timeout:.0f}s; "
            f"output tail:\n{out[-4000:]}"
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


@contextmanager
def service(name: str, env: dict[str, str], start_timeout: float = 240) -> Iterator[str]:
    """Start infra/<name>-start.sh, yield its output, always stop it (script, then group)."""
    pidfile = Path(env["RNNGEN_RUN_DIR"]) / f"{name}.pid"
    try:
        started = run([INFRA / f"{name}-start.sh"], env, timeout=start_timeout)
        assert started.returncode == 0, f"{name} did not start:\n{started.stdout[-4000:]}"
        yield started.stdout
    finally:
        pgid = int(pidfile.read_text()) if pidfile.is_file() else None
        try:
            run([INFRA / f"{name}-stop.sh"], env, timeout=90)
        finally:
            if pgid is not None:
                kill_group(pgid)


@pytest.fixture(scope="session")
def servers_env(tmp_path_factory) -> dict[str, str]:
    """Environment for the scripts and CLIs: private state, 127.0.0.1, Ray token auth on
    (the session's token, from tests/conftest.py)."""
    state = tmp_path_factory.mktemp("servers")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
    }
    env.update(
        HOST="127.0.0.1",
        RNNGEN_RUN_DIR=str(state / "run"),
        RNNGEN_VENV=sys.prefix,
        RNNGEN_ROOT=str(ROOT),
        PREFECT_HOME=str(state / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        COLUMNS="200",
    )
    return env


@pytest.fixture(scope="session")
def prefect_server(servers_env) -> Iterator[str]:
    """A Prefect server on a free port; yields its PREFECT_API_URL."""
    env = {**servers_env, "PREFECT_PORT": str(free_port())}
    with service("prefect-server", env):
        yield f"http://127.0.0.1:{env['PREFECT_PORT']}/api"


@pytest.fixture(scope="session")
def prefect_worker(servers_env, prefect_server) -> Iterator[str]:
    """A process worker polling the deployments' pool; yields the server's API URL."""
    env = {**servers_env, "PREFECT_API_URL": prefect_server}
    with service("prefect-worker", env):
        yield prefect_server


@dataclass(frozen=True)
class RayHead:
    address: str  # host:port of the GCS, for `rnngen --ray-address` / ray.init
    dashboard: str  # http://host:port, for `ray job submit --address`


@pytest.fixture(scope="session")
def ray_head(servers_env) -> Iterator[RayHead]:
    """A Ray head (2 CPUs) on free ports, token auth on (127.0.0.1, throw-away)."""
    # Short, private temp dir: Ray's socket paths inside it must stay under 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rnngen-ray-", dir="/tmp")
    ports = {
        name: str(free_port())
        for name in ("RAY_PORT", "RAY_DASHBOARD_PORT", "RAY_CLIENT_PORT", "RAY_AGENT_PORT")
    }
    env = {**servers_env, **ports, "RAY_NUM_CPUS": "2", "RAY_TEMP_DIR": temp_dir}
    try:
        with service("ray-head", env):
            yield RayHead(
                f"127.0.0.1:{ports['RAY_PORT']}", f"http://127.0.0.1:{ports['RAY_DASHBOARD_PORT']}"
            )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
