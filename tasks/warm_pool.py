"""Warm training workers that live with `rnngen up`.

A Ray worker that trains its first cell spends seconds before the first batch: the process
starts, imports torch, and torch.optim imports torch._dynamo inside its first step. A
command's own workers pay that every time, because Ray starts new workers for every job
(every command is a job). `rnngen up` therefore also starts one long-lived worker per CPU
(:func:`start`): a detached Ray actor that has imported the training code and waits. Later
commands that attach to that Ray hand their training cells to these workers (:class:`Pool`)
and skip the start-up.

What keeps this safe:
- The actors hold no CPU of their own (num_cpus=0), so the stages that run as plain Ray
  tasks (bounds, spectrum) still get every CPU; a command never runs more cells on them at
  once than the cluster has room for (:func:`pool_for`).
- Each actor records which code it imported (:func:`code_stamp`: every source file's path,
  size and modification time). A command whose code differs (an edit since `up`) does not
  use them; it starts workers of its own, as without `up`.
- A worker that dies during a cell (killed, out of memory) is restarted by Ray in the
  background, and the cell runs again as a plain Ray task with the usual retries. Stopping a
  command kills the worker running its cell; Ray restarts it.

    python -m rnngen_tasks.warm_pool --workers 2   # what `rnngen up` runs (RAY_ADDRESS set)
    python -m rnngen_tasks.warm_pool --stop        # what `rnngen down` runs first
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from rnngen.resources import Request
from rnngen_tasks import ray_pool

NAMESPACE = "rnngen-up"
PREFIX = "rnngen-warm-"
# What a training worker imports before its first cell: the training code with torch, and
# torch._dynamo, which torch.optim loads inside its first step (about as long as torch).
WORKER_MODULES = ("rnngen_tasks.train", "rnngen.train", "rnngen.packed", "torch._dynamo")
PACKAGES = ("rnngen", "rnngen_tasks")


def code_stamp() -> str:
    """Which code this process would import: the path, size and modification time of every
    source file of the pipeline's packages (a few milliseconds; no file is read)."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            for path in sorted(Path(folder).rglob("*.py")):
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class WarmWorker:
    """One warm worker (a detached actor): imports `modules` when it starts, then runs
    whatever function it is handed, one call at a time."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        for module in modules:
            importlib.import_module(module)
        self._stamp = code_stamp()

    def stamp(self) -> str:
        return self._stamp

    def run(self, fn: Callable, *args: object) -> object:
        return fn(*args)


def start(workers: int) -> list[str]:
    """Start (or find) `workers` warm workers on the cluster at RAY_ADDRESS and wait until
    each has imported the training code; their names."""
    ray = ray_pool.ray
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    actor = ray.remote(WarmWorker)
    handles = [
        actor.options(
            name=f"{PREFIX}{i}",
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=0,
        ).remote(WORKER_MODULES)
        for i in range(workers)
    ]
    ray.get([h.stamp.remote() for h in handles], timeout=600)
    return [f"{PREFIX}{i}" for i in range(workers)]


def stop() -> int:
    """Kill the warm workers on the cluster at RAY_ADDRESS for good (no restart); how many.
    `rnngen down` runs this first: a Ray head whose detached actors are alive takes about
    20 s longer to stop."""
    ray = ray_pool.ray
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    handles = _handles()
    for handle in handles:
        ray.kill(handle, no_restart=True)
    return len(handles)


def _handles() -> list:
    """The warm workers the cluster has, in the order of their names."""
    ray = ray_pool.ray
    names = sorted(
        (entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
         if entry["namespace"] == NAMESPACE and entry["name"].startswith(PREFIX)),
        key=lambda name: int(name[len(PREFIX):]),
    )  # fmt: skip
    return [ray.get_actor(name, namespace=NAMESPACE) for name in names]


class Pool:
    """The warm workers one command may use: a cell takes a free one, runs on it, and
    gives it back."""

    def __init__(self, handles: list) -> None:
        self.size = len(handles)
        self._free: queue.Queue = queue.Queue()
        for handle in handles:
            self._free.put(handle)

    def run(
        self,
        fn: Callable,
        *args: object,
        request: Request,
        name: str,
        max_retries: int,
        cancelled: threading.Event | None = None,
    ) -> object:
        """`fn(*args)` on a free warm worker; as a plain Ray task when that worker dies."""
        ray = ray_pool.ray
        handle = self._free.get()
        try:
            ref = handle.run.options(name=name).remote(fn, *args)
            try:
                return ray_pool.wait_for(
                    ref, name, cancelled, stop=lambda: ray.kill(handle, no_restart=False)
                )
            except ray.exceptions.RayActorError:
                pass  # the worker died (Ray restarts it): the cell runs as a plain task
        finally:
            self._free.put(handle)
        return ray_pool.run_remote(
            fn, *args, request=request, name=name, max_retries=max_retries, cancelled=cancelled
        )


def pool_for(request: Request) -> tuple[Pool | None, str]:
    """The warm workers of `rnngen up` that units of `request` may use, and a line saying
    so (or why not); (None, "") when the cluster has none. Only single-CPU units without a
    GPU use them, at most as many at once as the cluster has room for."""
    if request.gpus or request.cpus != 1:
        return None, ""
    ray = ray_pool.ray
    ray_pool.ensure_connected()
    handles = _handles()
    if not handles:
        return None, ""
    try:
        stamps = set(ray.get([h.stamp.remote() for h in handles], timeout=10))
    except (ray.exceptions.RayError, TimeoutError) as err:
        return None, f"the warm workers of `rnngen up` did not answer ({err}); not used"
    if stamps != {code_stamp()}:
        return None, (
            "the warm workers of `rnngen up` run the code as it was when they started, and "
            "it has changed since: not used (`rnngen down` and `rnngen up` renews them)"
        )
    room = ray_pool.units_that_fit(request)
    handles = handles[: max(1, min(len(handles), room))]
    return Pool(handles), f"cells run on {len(handles)} warm workers of `rnngen up`"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, help="how many to start (one per CPU)")
    parser.add_argument("--stop", action="store_true", help="kill them instead")
    args = parser.parse_args()
    if args.stop:
        print(f"warm workers stopped: {stop()}")
    elif args.workers is None or args.workers < 1:
        raise SystemExit("--workers must be at least 1 (or --stop)")
    else:
        print(f"warm workers: {', '.join(start(args.workers))}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
