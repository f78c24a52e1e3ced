"""The grid executor: runs any stage's step over its units, the same way for every stage.

A stage is a `Step`: given a unit (a training cell, a trained model, a sequence length),
it computes the unit's result from inputs the store hands it and records it. The executor
does, once for all stages:

- one Prefect task run per unit, named by the step ("bounds L=100 σ=0.2 seed=3"), tagged
  `stage:<stage>` (and `profile:<profile>` where the step has one, besides the tags of the
  flow run: tasks/artifacts.py); units already done show as Skipped task runs;
- retries with one policy: an exception raised by the unit's own computation
  (`UnitFailed`) is retried up to `settings.max_retries` times (Prefect's task retries);
  after the last attempt the step records the unit as failed and the grid goes on. Errors
  of the driver itself (`UserError`: a full disk, a refused request) stop the run;
- progress: a log line per finished unit with counts and an ETA from the mean time of
  the finished units of its group (e.g. its L), and a Prefect progress artifact; on a
  terminal, also a live table of the grid (done / running / queued / failed per group,
  with the ETA of each);
- cancellation: stopping the flow (Ctrl-C, SIGTERM) cancels every unit's Ray work;
- compaction of the store's fragments when the grid ends, however it ends;
- packs, where a step trains several units as one Ray task (`Shared.once`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
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
from rnngen.profile_file import profile_label
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import PROFILE_TAG, Progress
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


class Grid(Generic[U]):
    """One run of a step over its units on the driver: progress, cancellation, ETA."""

    def __init__(self, step: Step[U], todo: list[U], total: int) -> None:
        self.step, self.todo, self.total = step, todo, total
        self.began = time.perf_counter()
        self.progress = Progress(step.stage, total, total - len(todo))
        self._seconds: dict[Hashable, list[float]] = {}
        self._left: dict[Hashable, int] = {}
        self._failed: dict[Hashable, int] = {}
        self._computing: dict[str, U] = {}  # key -> unit, while its compute runs
        for unit in todo:
            group = step.group(unit)
            self._left[group] = self._left.get(group, 0) + 1
        self._lock = threading.Lock()

    def started(self, unit: U) -> None:
        with self._lock:
            self._computing[self.step.key(unit)] = unit

    def finished(self, unit: U, seconds: float, failed: bool = False) -> str:
        """'[3/75] (1200 s elapsed, ~3400 s to go)': the ETA sums, over the groups, the
        units left times the mean time of that group's finished units (the overall mean
        where a group has none yet), divided by how many ran at once so far."""
        self.progress.advance()
        with self._lock:
            group = self.step.group(unit)
            self._computing.pop(self.step.key(unit), None)
            self._seconds.setdefault(group, []).append(seconds)
            self._left[group] -= 1
            if failed:
                self._failed[group] = self._failed.get(group, 0) + 1
            done = sum(len(v) for v in self._seconds.values())
            elapsed = time.perf_counter() - self.began
            work = sum(self._eta_work().values())
            parallel = self._parallel(elapsed)
        return (
            f"[{done}/{len(self.todo)}] ({elapsed:.0f} s elapsed, ~{work / parallel:.0f} s to go)"
        )

    def _mean(self, group: Hashable) -> float | None:
        """Mean time of the group's finished units; else of every finished unit."""
        times = self._seconds.get(group) or [t for v in self._seconds.values() for t in v]
        return sum(times) / len(times) if times else None

    def _eta_work(self, group: Hashable | None = None) -> dict[Hashable, float]:
        """Seconds of work left per group (units left × mean time), for the groups known."""
        groups = [group] if group is not None else list(self._left)
        return {g: self._left[g] * (self._mean(g) or 0.0) for g in groups}

    def _parallel(self, elapsed: float) -> float:
        """How many units ran at once so far: the time they took over the time passed."""
        return max(sum(sum(v) for v in self._seconds.values()) / max(elapsed, 1e-9), 1.0)

    def _running(self, unit: U) -> bool:
        """Whether a unit whose compute runs is running on the cluster or waiting in its
        queue. A step that records when its units start (the training step's live state,
        `state.queued[key]["started"]`) says; for the others, computing is running."""
        queued = getattr(getattr(self.step, "state", None), "queued", None)
        if not isinstance(queued, dict):
            return True
        cell = queued.get(self.step.key(unit))
        return cell is None or cell.get("started") is not None

    def view(self):
        """The live table: per group done / running / queued / failed and its ETA."""
        from rich.table import Table

        with self._lock:
            elapsed = time.perf_counter() - self.began
            parallel = self._parallel(elapsed)
            running: dict[Hashable, int] = {}
            for unit in self._computing.values():
                if self._running(unit):
                    group = self.step.group(unit)
                    running[group] = running.get(group, 0) + 1
            rows = []
            for group, left in self._left.items():
                done = len(self._seconds.get(group, []))
                failed = self._failed.get(group, 0)
                mean = self._mean(group)
                eta = f"~{left * mean / parallel:.0f} s" if mean is not None and left else "—"
                rows.append(
                    (
                        _group_label(group),
                        str(done - failed),
                        str(running.get(group, 0)),
                        str(left - running.get(group, 0)),
                        str(failed),
                        f"{mean:.0f} s" if mean is not None else "—",
                        eta,
                    )
                )
            work = sum(self._eta_work().values())
            finished = sum(len(v) for v in self._seconds.values())
        table = Table(
            title=f"{self.step.stage}: {finished} of {len(self.todo)} finished "
            f"({self.total - len(self.todo)} already done)",
            caption=f"{elapsed:.0f} s elapsed"
            + (f", ~{work / parallel:.0f} s to go" if finished else ", ETA after the first unit"),
        )
        for column in ("group", "done", "running", "queued", "failed", "mean time", "ETA"):
            table.add_column(column, justify="left" if column == "group" else "right")
        for row in rows:
            table.add_row(*row)
        return table


def _group_label(group: Hashable) -> str:
    if isinstance(group, int):
        return f"L={group}"
    if isinstance(group, tuple) and group and isinstance(group[0], int):
        return f"L={group[0]} · " + " · ".join(map(str, group[1:]))
    return str(group)


class LiveView:
    """The grid as a table that redraws in place, on a terminal only (a log file or a
    deployment's worker keeps the log lines). Prefect's console log lines go through it,
    printed above the table instead of breaking it. RNNGEN_LIVE=0 turns it off."""

    def __init__(self, grid: Grid) -> None:
        self.grid, self.live, self._handlers = grid, None, []

    @staticmethod
    def wanted() -> bool:
        return sys.stdout.isatty() and os.environ.get("RNNGEN_LIVE", "1") != "0"

    def __rich__(self):
        return self.grid.view()

    def start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.live = Live(self, console=Console(), refresh_per_second=2, redirect_stderr=True)
        self.live.start()
        for name in ("prefect", ""):  # Prefect's console handlers hold the real stderr
            for handler in logging.getLogger(name).handlers:
                console = getattr(handler, "console", None)
                if console is not None and isinstance(handler, logging.StreamHandler):
                    self._handlers.append((handler, handler.stream, console.file))
                    handler.stream = console.file = sys.stderr

    def stop(self) -> None:
        for handler, stream, file in self._handlers:
            handler.stream, handler.console.file = stream, file
        if self.live is not None:
            self.live.stop()


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
    grid.started(unit)
    try:
        result = step.compute(unit, attempt)
    except (ray_pool.Cancelled, UserError):
        raise
    except Exception as err:
        attempts = step.max_retries + 1
        logger.error(f"attempt {attempt} of {attempts} failed: {err}")  # the whole traceback
        if attempt >= attempts:
            step.record_failure(unit, error_text(err), attempt)
            eta = grid.finished(unit, time.perf_counter() - started, failed=True)
            logger.error(f"{step.name(unit)}: failed {eta}: {error_text(err)}")
        raise UnitFailed(error_text(err)) from err
    status, summary = step.record(unit, result, attempt)
    eta = grid.finished(unit, time.perf_counter() - started, failed=status == "failed")
    logger.info(f"{step.name(unit)}: {summary} {eta}")
    return status


@task(name="unit", cache_policy=NO_CACHE)
def skipped_unit(message: str) -> State:
    """A unit whose result is already in the store: shown as Skipped."""
    return Completed(name="Skipped", message=message)


def _unit_tags(stage: str, profile: str | None) -> list[str]:
    """A unit's task-run tags: `stage:<stage>`, and `profile:<profile>` where known."""
    return [f"stage:{stage}"] + ([f"{PROFILE_TAG}{profile_label(profile)}"] if profile else [])


def show_skipped(stage: str, names: list[str], profile: str | None = None) -> None:
    """One Skipped task run per unit when a grid has nothing to do (no step is built)."""
    options = {"name": f"{stage}-unit", "tags": _unit_tags(stage, profile)}
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
    view = LiveView(grid) if grid is not None and LiveView.wanted() else None
    profile = getattr(step, "profile", None) or (getattr(step, "meta", None) or {}).get("profile")
    tags = _unit_tags(step.stage, profile)
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
    if view is not None:
        view.start()
    try:
        wait(futures)
    except BaseException:
        step.cancelled.set()
        # The first error is the one to report: on a full disk the compaction fails again,
        # and that second error must not hide the first.
        with contextlib.suppress(OSError, UserError):
            _stop(step, on_stop)
        raise
    finally:
        if view is not None:
            view.stop()
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
