"""Ray plumbing: choosing and starting the cluster, what it can run, and fanning work out.

Everything else calls these helpers and stays unaware of Ray's API. Which work runs
(training a cell, a model's bound statistics) is the callers' business; the spectrum's
actors live in tasks/ray_shards.py. The per-unit resource check (:func:`check_request`)
refuses, before anything is submitted, what no node of the cluster could ever run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Hashable
from typing import Any

from rnngen.errors import UserError
from rnngen.provenance import gpu_count
from rnngen.resources import Request, gigabytes
from rnngen_tasks.tokens import secure_local_token


class _Ray:
    """`ray`, imported on first use: deciding what a stage has to do reads its steps (which
    import this module) and should not load Ray (seconds) when the answer is "nothing".
    The first attribute read puts the real module in its place."""

    def __getattr__(self, name: str):
        import ray as module

        globals()["ray"] = module
        return getattr(module, name)


ray = _Ray()

_chosen: dict | None = None  # what connect() chose; Ray starts or attaches on first use


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Choose the Ray cluster at `address`, or a private local one, and fail at once when a
    remote address does not answer. Ray itself starts (or attaches) on first use
    (:func:`ensure_connected`), so a run that finds everything done never starts it.
    """
    global _chosen
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "", "local"):
        try:
            _check_reachable(address)
        except (OSError, ValueError) as err:
            raise _unreachable(address, err) from err
    _chosen = {"address": address, "num_cpus": num_cpus}


def ensure_connected() -> None:
    """Start or attach to the cluster :func:`connect` chose (by default: RAY_ADDRESS, else
    a private local one). A bare `ray.init()` may attach to a stale head left on this
    machine, so the local case asks explicitly for a new cluster (`address="local"`).
    """
    if ray.is_initialized():
        return
    if _chosen is None:
        connect()
    address, num_cpus = _chosen["address"], _chosen["num_cpus"]
    with _keeping_sigterm():
        _init(address, num_cpus)


@contextlib.contextmanager
def _keeping_sigterm():
    """`ray.init` replaces the SIGTERM handler with its own (exit at once). A handler the
    program set itself (the CLI's: stop the way Ctrl-C does, so the temporary Prefect API
    and the local Ray are shut down and the resume hint is printed) is put back."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


# What a local run of the pipeline needs of Ray beyond its core (GCS, raylet, workers):
# nothing. The dashboard is left out (include_dashboard=False: no web UI, no dashboard
# modules; Ray still runs its small API server for the state and job APIs) and so is the
# metrics pipeline (no metrics collection or export from the node agent). The log monitor
# stays: workers' prints and errors reach the driver through it (log_to_driver).
LOCAL_SYSTEM_CONFIG = {"enable_metrics_collection": False}


def _init(address: str | None, num_cpus: int | None) -> None:
    local = address in (None, "", "local")
    note = secure_local_token(address)  # before Ray writes a token readable by everyone
    if note:
        print(f"note: {note}")
    _say_token_auth_once(local)
    try:
        if local:
            ray.init(
                address="local",
                num_cpus=num_cpus or os.cpu_count(),
                include_dashboard=False,
                log_to_driver=True,
                _system_config=LOCAL_SYSTEM_CONFIG,
            )
        else:
            ray.init(address=address, log_to_driver=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise _unreachable(address, err) from err


# Ray warns, in three lines, that it turned token authentication on by itself whenever
# RAY_AUTH_MODE is unset. rnngen keeps it on on purpose, so it says so once, in its own words.
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_said_auth: list[bool] = []


def _token_line() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        where = "from RAY_AUTH_TOKEN"
    else:
        where = f"in {os.environ.get('RAY_AUTH_TOKEN_PATH') or '~/.ray/auth_token'}"
    return (
        f"Ray: token authentication on (token {where}, readable by you only); "
        "RAY_AUTH_MODE=disabled turns it off."
    )


class _OwnAuthLine(logging.Filter):
    """Ray's 'Token authentication is enabled ... RAY_AUTH_MODE=disabled to opt out'
    becomes rnngen's line, said once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Token authentication is enabled" not in record.getMessage():
            return True
        if not _said_auth:
            _said_auth.append(True)
            print(_token_line())
        return False


def _say_token_auth_once(local: bool) -> None:
    """For a local Ray, ask for token authentication explicitly when the user did not say
    (Ray turns it on then anyway, with its warning), and say so once; for a cluster, turn
    Ray's warning (when it has one) into the same line."""
    logger = logging.getLogger(_AUTH_LOGGER)
    if not any(isinstance(f, _OwnAuthLine) for f in logger.filters):
        logger.addFilter(_OwnAuthLine())
    if local and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"  # also for the processes Ray starts
        # Ray read its settings when it was imported: have it read them again (what Ray's
        # own default does after setting the variable).
        ray._raylet.Config.initialize("")
        if not _said_auth:
            _said_auth.append(True)
            print(_token_line())


def _unreachable(address: str | None, err: Exception) -> UserError:
    return UserError(
        f"cannot reach the Ray cluster at {address!r} ({err}). Check the "
        "address (ray://host:10001 or host:6379) and that the head is up, "
        "or leave --ray-address/RAY_ADDRESS unset to run on a local Ray."
    )


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after ray.init's ~13 minutes of retries, when nothing listens."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()


def cluster_cpus() -> int:
    return int(sum(node.get("CPU", 0) for node in _nodes()) or 1)


def cluster_gpus() -> int:
    return int(sum(node.get("GPU", 0) for node in _nodes()))


def _nodes() -> list[dict[str, float]]:
    """Total resources of each live node (what a single task can at most be given). For the
    private local Ray that has not started yet, this machine's, as Ray will count them:
    checks of a grid then need no Ray start and answer in a moment."""
    if not ray.is_initialized() and _local_chosen():
        return [_local_resources()]
    ensure_connected()
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def _local_chosen() -> bool:
    chosen = _chosen or {"address": os.environ.get("RAY_ADDRESS") or None}
    return chosen["address"] in (None, "", "local")


def _local_resources() -> dict[str, float]:
    """CPUs, GPUs and memory a local `ray.init` gives tasks here: the memory Ray offers is
    what is available less its object store (30 % of it)."""
    cpus = (_chosen or {}).get("num_cpus") or os.cpu_count() or 1
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
    available = info.get("MemAvailable", info.get("MemFree", 0))
    return {"CPU": float(cpus), "GPU": float(gpu_count()), "memory": 0.7 * available}


def describe_cluster() -> str:
    """'1 node; largest: 2 CPUs, 0 GPUs, 17.5 GB of memory for tasks'."""
    nodes = _nodes()
    if not nodes:
        return "no live node"
    big = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0), r.get("memory", 0)))
    total = {k: sum(node.get(k, 0) for node in nodes) for k in ("CPU", "GPU")}
    return (
        f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} with {total.get('CPU', 0):g} "
        f"CPUs and {total.get('GPU', 0):g} GPUs in all; the largest has "
        f"{big.get('CPU', 0):g} CPUs, {big.get('GPU', 0):g} GPUs and "
        f"{gigabytes(big.get('memory', 0))} of memory for tasks"
    )


def resolve_device(requested: str) -> str:
    """The torch device cells run on: 'auto' is cuda when the cluster has GPUs, else cpu;
    'cuda' on a cluster without GPUs is refused at once (it would wait forever)."""
    if requested == "cpu":
        return "cpu"
    gpus = sum(node.get("GPU", 0) for node in _nodes())
    if requested == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if gpus == 0:
        raise UserError(
            f"--device {requested}: the Ray cluster has no GPU "
            f"({describe_cluster()}). Use --device cpu (or auto), or add a GPU "
            "node to the cluster."
        )
    return requested


def check_request(request: Request, unit: str, detail: str, hint: str) -> None:
    """Refuse, in one paragraph, a per-unit request that no live node can meet (Ray would
    queue it forever). `unit` names one unit of work ("training cell"), `detail` what the
    request was computed from, `hint` what the user can change."""
    wanted = request.as_ray()
    if any(all(node.get(k, 0.0) >= v for k, v in wanted.items()) for node in _nodes()):
        return
    raise UserError(
        f"each {unit} asks Ray for {request.describe()} ({detail}), but no node "
        f"of the cluster has that: {describe_cluster()}. Nothing was submitted. "
        f"{hint}"
    )


def share(*values: object) -> tuple:
    """Place values in the object store once (one copy per node that uses them); the refs
    go to tasks as arguments, which Ray resolves to the values in the worker."""
    ensure_connected()
    return tuple(ray.put(value) for value in values)


class Cancelled(RuntimeError):
    """The run was stopped (Ctrl-C, SIGTERM) while a Ray task was waited on."""


@functools.cache
def _remote(fn: Callable):
    return ray.remote(fn)


def submit(
    fn: Callable, *args: object, request: Request, name: str, max_retries: int
) -> ray.ObjectRef:
    """Submit `fn(*args)` as one Ray task called `name` (as `ray list tasks` and the
    dashboard show it). Ray reruns the task when its worker or node dies, up to
    `max_retries` times; an exception the task raises comes back at once (the caller
    decides about retrying it)."""
    ensure_connected()
    return (
        _remote(fn)
        .options(
            name=name, max_retries=max_retries, retry_exceptions=False, **_ray_options(request)
        )
        .remote(*args)
    )


def wait_for(
    ref: ray.ObjectRef,
    name: str,
    cancelled: threading.Event | None = None,
    stop: Callable[[], None] | None = None,
) -> object:
    """The result of a submitted task, waited for in the calling thread; setting
    `cancelled` stops the wait and the task (with `stop` when given: an actor's task)."""
    while not ray.wait([ref], timeout=0.5)[0]:
        if cancelled is not None and cancelled.is_set():
            if stop is not None:
                stop()
            else:
                ray.cancel(ref, force=True)
            raise Cancelled(f"{name}: stopped")
    return get(ref)


def run_remote(
    fn: Callable,
    *args: object,
    request: Request,
    name: str,
    max_retries: int,
    cancelled: threading.Event | None = None,
) -> object:
    """Run `fn(*args)` as one Ray task called `name` and wait for its result
    (:func:`submit`, then :func:`wait_for`)."""
    ref = submit(fn, *args, request=request, name=name, max_retries=max_retries)
    return wait_for(ref, name, cancelled)


class ProgressRelay:
    """Messages that running Ray tasks send (`send`), handed on the driver to the listener
    registered for their key: a cell's epochs reach its own Prefect task run's logger.

    One mailbox actor carries them (:class:`Mailbox`); a driver thread drains it. Workers get
    `sender()`, a picklable :class:`Sender`; a task calls its `flush()` before it returns,
    and `forget(key)` delivers what is still in the mailbox before it drops the listener, so
    a cell's last epochs are not lost when the cell ends between two drains.
    """

    def __init__(self) -> None:
        self._box = _EARLY_MAILBOX.pop() if _EARLY_MAILBOX else _new_mailbox()
        self._listeners: dict[str, Callable[[str, str], None]] = {}
        self._draining = threading.Lock()  # one drain at a time: messages stay in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="progress-relay", daemon=True)
        self._thread.start()

    def sender(self) -> Sender:
        return Sender(self._box)

    def listen(self, key: str, listener: Callable[[str, str], None]) -> None:
        """Call `listener(kind, text)` for every message sent for `key`."""
        self._listeners[key] = listener

    def forget(self, key: str) -> None:
        """Deliver what the mailbox holds (the key's task has flushed its messages into it),
        then stop listening for `key`."""
        self._deliver()
        self._listeners.pop(key, None)

    def _deliver(self) -> bool:
        """Hand what the mailbox holds to the listeners; False once its actor is gone."""
        with self._draining:
            try:
                messages = ray.get(self._box.drain.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - the actor is gone (shutdown): nothing to relay
                return False
            for key, kind, text in messages:
                listener = self._listeners.get(key)
                if listener is not None:
                    listener(kind, text)
            return True

    def _pump(self) -> None:
        while not self._stop.wait(0.25) and self._deliver():
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._deliver()  # what arrived since the last drain
        ray.kill(self._box)


def _new_mailbox():
    ensure_connected()
    return _remote(Mailbox).options(num_cpus=0).remote()


# A mailbox started ahead of the first ProgressRelay (start_mailbox).
_EARLY_MAILBOX: list = []


class Mailbox:
    """The actor behind ProgressRelay: a list that workers append to and the driver drains.
    A plain (synchronous, one-threaded) actor runs the calls of one caller in the order they
    were made, so a cell's epochs arrive in order (ray.util.queue's actor is asynchronous,
    and its puts from one worker were seen out of order under load)."""

    def __init__(self) -> None:
        self._messages: list[tuple[str, str, str]] = []

    def post(self, message: tuple[str, str, str]) -> None:
        self._messages.append(message)

    def drain(self) -> list[tuple[str, str, str]]:
        out, self._messages = self._messages, []
        return out

    def pending(self) -> int:
        """How many messages wait (a round trip that orders after a caller's posts)."""
        return len(self._messages)


class Sender:
    """Worker side of ProgressRelay: `sender(key, kind, text)` posts a message without
    waiting (a task blocked in `ray.get` lends its CPU back to Ray, which then starts
    another cell on it: more cells than CPUs); `flush()` waits once, at the end of a task,
    until everything it posted is in the mailbox. A lost message is not worth failing a
    cell for. `Sender(None)` sends nothing (a benchmark, a test)."""

    def __init__(self, box) -> None:
        self._box = box

    def __call__(self, key: str, kind: str, text: str) -> None:
        if self._box is not None:
            try:
                self._box.post.remote((key, kind, text))
            except Exception:  # noqa: BLE001 - progress is best effort
                pass

    def flush(self) -> None:
        if self._box is not None:
            try:  # one caller's calls run in order: after this, its posts are in
                ray.get(self._box.pending.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - progress is best effort
                pass


def units_that_fit(request: Request) -> int:
    """How many units of this request the live nodes can run at the same time."""
    wanted = {k: v for k, v in request.as_ray().items() if v > 0}
    return sum(int(min(node.get(k, 0.0) // v for k, v in wanted.items())) for node in _nodes())


def prewarm(modules: tuple[str, ...], request: Request, count: int) -> None:
    """Start up to `count` workers shaped for units of `request` and import `modules` in
    them now, while the driver still prepares the flow run. Ray gives this job's later
    tasks of the same shape to these idle workers, which then start at once instead of
    spending seconds on a process start and imports; the progress mailbox of the next
    :class:`ProgressRelay` starts now too. Fire and forget: a warm-up that fails
    costs nothing, and the unit that would have used its worker does its own imports."""
    start_mailbox()
    count = min(count, units_that_fit(request))
    warm = _remote(import_modules)
    for _ in range(count):
        warm.options(name="warm-up", max_retries=0, **_ray_options(request)).remote(modules)


def start_mailbox() -> None:
    """Start the progress mailbox of the next :class:`ProgressRelay` now (an actor gets a
    process of its own, which takes seconds; a cell's last flush waits for it)."""
    if not _EARLY_MAILBOX:
        _EARLY_MAILBOX.append(_new_mailbox())


def import_modules(modules: tuple[str, ...]) -> None:
    """Import `modules` in this worker (what :func:`prewarm` runs)."""
    import importlib

    for module in modules:
        importlib.import_module(module)


def _ray_options(request: Request) -> dict:
    out: dict = {"num_cpus": request.cpus}
    if request.memory:
        out["memory"] = request.memory
    if request.gpus:
        out["num_gpus"] = request.gpus
    return out


def get(refs):
    """`ray.get`, re-raising a UserError from an actor as itself, so its message reaches the
    user as written (e.g. a singular Σ) instead of inside a Ray traceback."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserError):
            raise err.cause from None
        raise


class Shared:
    """Work several units share (a pack trained as one Ray task): the first unit to ask
    submits it, the others wait on the same result (its object ref)."""

    def __init__(self) -> None:
        self._refs: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def once(self, key: Hashable, submit: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._refs:
                self._refs[key] = submit()
            return self._refs[key]
