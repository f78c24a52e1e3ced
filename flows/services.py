"""`rnngen up` / `rnngen down`: one local Prefect API and one local Ray head that later
commands reuse, instead of each command starting (and stopping) its own.

`up` also starts one warm training worker per CPU on that Ray (rnngen_tasks.warm_pool),
on which later commands' training cells start without a process start or torch import;
`down` stops them first (a head with live detached actors stops about 20 s slower).

Without `up` nothing changes: every command starts a temporary Prefect API and a private
Ray and stops them at its end (zero setup). After `rnngen up`, a command that runs a flow
finds the state file this module writes and uses both (unless PREFECT_API_URL, RAY_ADDRESS
or --ray-address say otherwise), saving their start-up (tens of seconds on a busy machine).

Both bind to 127.0.0.1 and keep authentication on: the Prefect server checks a basic-auth
string (PREFECT_SERVER_API_AUTH_STRING), the Ray head a token (RAY_AUTH_MODE=token); each
secret is in a file of mode 600 beside the state file, which names the files, never the
secrets. Each service runs in its own session; `down` signals those two sessions only.

Light on purpose: no Prefect, no Ray imported here (the services are their own processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnngen.errors import UserError

HOST = "127.0.0.1"
STATE_NAME = "up.json"


# Prefect server services a local run does without: they schedule, watch and clean up after
# deployments and workers (Prefect's temporary API runs without them too). The ones a local
# run needs stay on: the task-run recorder and the event services, which record the runs.
DEPLOYMENT_SERVICES = tuple(
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED"
    for name in (
        "SCHEDULER", "LATE_RUNS", "FOREMAN", "PAUSE_EXPIRATIONS", "REPOSSESSOR",
        "CANCELLATION_CLEANUP", "DB_VACUUM", "CLEANUP_RECONCILER",
    )
)  # fmt: skip


def state_dir() -> Path:
    """Where `up` keeps its state: RNNGEN_HOME, else <PREFECT_HOME>/rnngen-up, else
    ~/.rnngen."""
    if os.environ.get("RNNGEN_HOME"):
        return Path(os.environ["RNNGEN_HOME"]).expanduser()
    if os.environ.get("PREFECT_HOME"):
        return Path(os.environ["PREFECT_HOME"]).expanduser() / "rnngen-up"
    return Path.home() / ".rnngen"


@dataclass(frozen=True)
class Services:
    """What `up` started, as its state file records it."""

    prefect_url: str  # http://127.0.0.1:PORT/api
    prefect_pid: int  # session leader of `prefect server start`
    prefect_auth_file: str
    ray_address: str  # 127.0.0.1:PORT
    ray_pid: int  # session leader of `ray start --block`
    ray_token_file: str
    folder: str

    def alive(self) -> bool:
        return _session_alive(self.prefect_pid) and _session_alive(self.ray_pid)

    def describe(self) -> str:
        return f"Prefect API {self.prefect_url}, Ray {self.ray_address}"


def read_state(folder: Path | None = None) -> Services | None:
    path = (folder or state_dir()) / STATE_NAME
    try:
        return Services(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running(folder: Path | None = None) -> Services | None:
    """The services of `up` when both still run, else None."""
    state = read_state(folder)
    return state if state is not None and state.alive() else None


# The services this process was pointed at (set by `attach`), for the line saying so.
ATTACHED: list[Services] = []


def attach(environ: dict[str, str] | os._Environ = os.environ) -> Services | None:
    """Point this process (and what it starts) at the services of `up`, when they run and
    the user named no other Prefect API or Ray cluster. Called before Prefect is imported:
    Prefect reads its settings once, at import."""
    services = running()
    if services is None:
        return None
    used = False
    if not environ.get("PREFECT_API_URL"):
        environ["PREFECT_API_URL"] = services.prefect_url
        environ["PREFECT_API_AUTH_STRING"] = _secret(services.prefect_auth_file)
        used = True
    if not environ.get("RAY_ADDRESS"):
        environ["RAY_ADDRESS"] = services.ray_address
        environ["RAY_AUTH_MODE"] = "token"
        environ["RAY_AUTH_TOKEN_PATH"] = services.ray_token_file
        environ.pop("RAY_AUTH_TOKEN", None)  # another cluster's token would be tried first
        used = True
    if used:
        ATTACHED[:] = [services]
    return services if used else None


# ----------------------------------------------------------------------------- up / down


def up(
    prefect_port: int | None,
    ray_port: int | None,
    cpus: int | None,
    services: bool,
    warm: bool = True,
) -> str:
    """Start the local Prefect server and Ray head (both at once), wait until they answer,
    record them, and (with `warm`) start one warm training worker per CPU on that Ray
    (rnngen_tasks.warm_pool); the lines to print. Already up: says so."""
    folder = state_dir()
    current = running(folder)
    if current is not None:
        return f"already up: {current.describe()} (state in {folder / STATE_NAME})"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    auth = _private_file(folder / "prefect-auth", f"rnngen:{secrets.token_urlsafe(24)}")
    token = _private_file(folder / "ray-auth-token", secrets.token_hex(32))
    prefect_port = prefect_port or _free_port()
    ray_port = ray_port or _free_port()
    url = f"http://{HOST}:{prefect_port}/api"
    prefect = _start_prefect(folder, prefect_port, auth, services)
    ray = _start_ray(folder, ray_port, token, cpus)
    try:
        _wait("Prefect server", prefect, folder / "prefect-server.log", lambda: _healthy(url))
        _wait("Ray head", ray, folder / "ray-head.log", lambda: _ray_ready(folder, ray_port))
    except BaseException:
        for proc in (prefect, ray):
            _stop_session(proc.pid, proc=proc)
        raise
    state = Services(
        url, prefect.pid, str(auth), f"{HOST}:{ray_port}", ray.pid, str(token), str(folder)
    )
    _write_private(folder / STATE_NAME, json.dumps(state.__dict__, indent=2))
    workers = _start_warm_workers(state, cpus or os.cpu_count() or 1) if warm else ""
    return (
        f"up: Prefect API {url} (UI http://{HOST}:{prefect_port}; basic auth, secret in "
        f"{auth}) and Ray {HOST}:{ray_port} (token auth, token in {token}).\n{workers}"
        "Later rnngen commands use them (unless PREFECT_API_URL, RAY_ADDRESS or "
        f"--ray-address say otherwise); logs in {folder}. Stop them with `rnngen down`."
    )


def _start_warm_workers(state: Services, count: int) -> str:
    """Start the warm workers (a short-lived Python process that creates them as detached
    actors and waits until they have imported the training code); a line saying so. A
    failure is said and leaves the services up: commands then start workers of their own."""
    log = Path(state.folder) / "warm-workers.log"
    ok = _warm_workers(state, "--workers", str(count), timeout=600)
    if not ok:
        return f"Warm workers: not started (log {log}); commands start their own.\n"
    return (
        f"Warm workers: {count}, one per CPU, with the training code imported: cells start "
        "on them at once.\n"
    )


def _warm_workers(state: Services, *args: str, timeout: float) -> bool:
    """Run `python -m rnngen_tasks.warm_pool ARGS` against the Ray of `up` (its output in
    warm-workers.log, appended); whether it succeeded in time."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    env.update(
        RAY_ADDRESS=state.ray_address,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=state.ray_token_file,
        RAY_USAGE_STATS_ENABLED="0",
    )
    command = [sys.executable, "-m", "rnngen_tasks.warm_pool", *args]
    with open(Path(state.folder) / "warm-workers.log", "a") as fh:
        try:
            done = subprocess.run(
                command, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def down() -> str:
    """Stop what `up` started (its two sessions only) and forget it."""
    folder = state_dir()
    state = read_state(folder)
    if state is None:
        return f"down: nothing to stop (no {folder / STATE_NAME})."
    if _session_alive(state.ray_pid):
        _warm_workers(state, "--stop", timeout=60)
    started = (("Prefect server", state.prefect_pid), ("Ray head", state.ray_pid))
    stopped = [name for name, pid in started if _stop_session(pid)]
    (folder / STATE_NAME).unlink(missing_ok=True)
    shutil.rmtree(_ray_temp_dir(folder), ignore_errors=True)  # the head's sockets and logs
    return f"down: stopped {' and '.join(stopped) or 'nothing (both had ended)'}."


def _start_prefect(folder: Path, port: int, auth: Path, services: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(folder / "prefect-server"),  # its own database, kept across ups
        PREFECT_SERVER_API_AUTH_STRING=_secret(str(auth)),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    if not services:  # what a local run needs, as Prefect's temporary API runs it
        env.update(dict.fromkeys(DEPLOYMENT_SERVICES, "false"))
    command = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    return _spawn(command, env, folder / "prefect-server.log")


def _start_ray(folder: Path, port: int, token: Path, cpus: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [
        _bin("ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", HOST, "--port", str(port),
        # Only what a local run needs: no dashboard, no autoscaler monitor. `ray start`
        # always runs a Ray Client server when its dependencies are installed: it and the
        # node agent get free ports (Ray's defaults, 10001 and 52365, are often taken).
        "--include-dashboard", "false", "--no-monitor",
        "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--num-cpus", str(cpus or os.cpu_count() or 1),
        "--temp-dir", _ray_temp_dir(folder),
    ]  # fmt: skip
    return _spawn(command, env, folder / "ray-head.log")


def _ray_temp_dir(folder: Path) -> str:
    """Short (Ray's socket paths must stay under 107 characters) and apart from /tmp/ray, so
    a bare ray.init() elsewhere does not attach to this head."""
    import hashlib

    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return f"/tmp/rnngen-up-{os.getuid()}-{tag}"


def _ray_ready(folder: Path, port: int) -> bool:
    log = folder / "ray-head.log"
    started = log.is_file() and "Ray runtime started" in log.read_text(errors="replace")
    return started and _port_open(port)


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: `down` stops it and nothing else
        )


def _wait(name: str, proc: subprocess.Popen, log: Path, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            why = "exited" if proc.poll() is not None else f"did not answer within {timeout:.0f} s"
            raise UserError(f"the {name} {why} during `rnngen up` (log {log}):\n{tail}")
        time.sleep(0.5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=2):
        return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _private_file(path: Path, content: str) -> Path:
    """A secret file of mode 600, written once and kept (a restarted service keeps it)."""
    if not path.is_file():
        _write_private(path, content)
    os.chmod(path, 0o600)
    return path


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _secret(path: str) -> str:
    return Path(path).read_text().strip()


def _session_alive(pid: int) -> bool:
    """True when `pid` lives and still leads its own session (the one `up` started)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[0] != b"Z" and int(fields[3]) == pid
    except (OSError, ValueError, IndexError):
        return False


def _stop_session(pid: int, grace: float = 20.0, proc: subprocess.Popen | None = None) -> bool:
    """SIGTERM the session `pid` leads, then SIGKILL what is left of its process group after
    `grace` s; False when it was not running. `proc`: the leader, when it is our child (it
    is reaped, so that its zombie does not keep the group alive)."""
    if not _session_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pid) and time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        time.sleep(0.2)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            time.sleep(2)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
