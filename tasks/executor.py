"""The grid executor: runs any stage's step over its units, the same way for every stage.

A stage is a `Step`: given a unit (a training cell, a trained model, a sequence length),
it computes the unit's result from inputs the store hands it and records it. The executor
does, once for all stages:

- one Prefect task run per unit, named by the step ("bounds L=100 σ=0.2 seed=3"), tagged
  `stage:<stage>`; units already done show as Skipped task runs;
- retries with one policy: an exception raised by the unit's own computation
  (`UnitFailed`) is retried up to `settings.max_retries` times (Prefect's task retries);
  after the last attempt the step records the unit as failed and the grid goes on. Errors
  of the driver itself (`UserError`: a full disk, a refused request) stop the run;
- progress: a log line per finished unit with counts and an ETA from the mean time of
  the finished units of its group (e.g. its L), and a Prefect progress artifact;
- cancellation: stopping the flow (Ctrl-C, SIGTERM) cancels every unit's Ray work;
- compaction of the store's fragments when the grid ends, however it ends;
- packs, where a step trains several units as one Ray task (`Shared.once`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.states import Completed, State

from rnngen.errors import UserError
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import Progress
from rnngen_tasks.errors import error_text

U = TypeVar("U")


class UnitFailed(RuntimeError):
    """A unit's own computation raised: worth another attempt."""


class Step(Protocol[U]):
    """What a stage tells the executor about its units."""

    stage: str
    max_retries: int
    cancelled: threading.Event  # set by the executor when the grid is stopped

    def key(self, unit: U) -> str: ...
    def name(self, unit: U) -> str: ...
    def group(self, unit: U) -> Hashable: ...
    def compute(self, unit: U, attempt: int) -> Any: ...
    def record(self, unit: U, result: Any, attempt: int) -> tuple[str, str]: ...
    def record_failure(self, unit: U, error: str, attempt: int) -> None: ...
    def compact(self) -> None: ...


@dataclass
class Counts:
    """How a grid's units ended."""

    total: int
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def __getitem__(self, status: str) -> int:
        return self.statuses.get(status, 0)

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "skipped": self.skipped, **self.statuses}


class Shared(Generic[U]):
    """Work several units share (a pack trained as one Ray task): the first unit to ask
    submits it, the others wait on the same result."""

    def __init__(self) -> None:
        self._refs: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def once(self, key: Hashable, submit: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._refs:
                self._refs[key] = submit()
            return self._refs[key]


class Grid(Generic[U]):
    """One run of a step over its units on the driver: progress, cancellation, ETA."""

    def __init__(self, step: Step[U], todo: list[U], total: int) -> None:
        self.step, self.todo, self.total = step, todo, total
        self.began = time.perf_counter()
        self.progress = Progress(step.stage, total, total - len(todo))
        self._seconds: dict[Hashable, list[float]] = {}
        self._left: dict[Hashable, int] = {}
        for unit in todo:
            group = step.group(unit)
            self._left[group] = self._left.get(group, 0) + 1
        self._lock = threading.Lock()

    def finished(self, unit: U, seconds: float) -> str:
        """'[3/75] (1200 s elapsed, ~3400 s to go)': the ETA sums, over the groups, the
        units left times the mean time of that group's finished units (the overall mean
        where a group has none yet), divided by how many ran at once so far."""
        self.progress.advance()
        with self._lock:
            group = self.step.group(unit)
            self._seconds.setdefault(group, []).append(seconds)
            self._left[group] -= 1
            done = sum(len(v) for v in self._seconds.values())
            elapsed = time.perf_counter() - self.began
            overall = sum(sum(v) for v in self._seconds.values()) / done
            work = sum(
                n
                * (sum(self._seconds[g]) / len(self._seconds[g]) if g in self._seconds else overall)
                for g, n in self._left.items()
            )
            parallel = max(sum(sum(v) for v in self._seconds.values()) / max(elapsed, 1e-9), 1.0)
        return (
            f"[{done}/{len(self.todo)}] ({elapsed:.0f} s elapsed, ~{work / parallel:.0f} s to go)"
        )


def _retry_unit_failures(task, task_run, state) -> bool:
    try:
        state.result()
    except UnitFailed:
        return True
    except BaseException:
        return False
    return False


@task(name="unit", cache_policy=NO_CACHE, retry_condition_fn=_retry_unit_failures)
def run_unit(grid: Grid, unit: Any) -> str:
    """One unit: compute (retried on its own failure), record, log one line; its status."""
    from prefect.runtime import task_run

    logger = get_run_logger()
    step, attempt = grid.step, task_run.run_count
    started = time.perf_counter()
    try:
        result = step.compute(unit, attempt)
    except (ray_pool.Cancelled, UserError):
        raise
    except Exception as err:
        attempts = step.max_retries + 1
        logger.error(f"attempt {attempt} of {attempts} failed: {err}")  # the whole traceback
        if attempt >= attempts:
            step.record_failure(unit, error_text(err), attempt)
            eta = grid.finished(unit, time.perf_counter() - started)
            logger.error(f"{step.name(unit)}: failed {eta}: {error_text(err)}")
        raise UnitFailed(error_text(err)) from err
    status, summary = step.record(unit, result, attempt)
    eta = grid.finished(unit, time.perf_counter() - started)
    logger.info(f"{step.name(unit)}: {summary} {eta}")
    return status


@task(name="unit", cache_policy=NO_CACHE)
def skipped_unit(message: str) -> State:
    """A unit whose result is already in the store: shown as Skipped."""
    return Completed(name="Skipped", message=message)


def show_skipped(stage: str, names: list[str]) -> None:
    """One Skipped task run per unit when a grid has nothing to do (no step is built)."""
    options = {"name": f"{stage}-unit", "tags": [f"stage:{stage}"]}
    wait(
        [
            skipped_unit.with_options(**options, task_run_name=n).submit(f"{n}: already done")
            for n in names
        ]
    )


def _stop(step: Step, on_stop: Callable[[], None] | None) -> None:
    step.compact()
    if on_stop is not None:
        on_stop()


def run_grid(step: Step[U], units: list[U], todo: list[U], on_stop=None) -> Counts:
    """Run `step` over `units` (those not in `todo` are done and shown as Skipped), each a
    task run in the calling flow's task runner; wait for all, compact the store, and count
    the statuses. `on_stop` runs after the units, however the grid ends."""
    pending = {step.key(u) for u in todo}
    grid = Grid(step, todo, len(units)) if todo else None
    tags = [f"stage:{step.stage}"]
    futures = []
    for unit in units:
        name = step.name(unit)
        options = {"name": f"{step.stage}-unit", "task_run_name": name, "tags": tags}
        if step.key(unit) in pending:
            futures.append(
                run_unit.with_options(**options, retries=step.max_retries).submit(grid, unit)
            )
        else:
            futures.append(skipped_unit.with_options(**options).submit(f"{name}: already done"))
    try:
        wait(futures)
    except BaseException:
        step.cancelled.set()
        # The first error is the one to report: on a full disk the compaction fails again,
        # and that second error must not hide the first.
        with contextlib.suppress(OSError, UserError):
            _stop(step, on_stop)
        raise
    _stop(step, on_stop)
    counts = Counts(len(units), skipped=len(units) - len(pending))
    for unit, future in zip(units, futures, strict=True):
        if step.key(unit) not in pending:
            continue
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, BaseException) and not isinstance(outcome, UnitFailed):
            raise outcome  # the driver's own error (disk full, ...): it stops the run
        counts.add("failed" if isinstance(outcome, BaseException) else outcome)
    return counts
