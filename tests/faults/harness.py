"""The rnngen CLI as a real child process, and the means to find, kill and audit it.

Every run starts in a session of its own (`start_new_session=True`). The CLI, Prefect's
temporary API server and the Ray processes the CLI starts (gcs_server, raylet, agents) share
its process group; Ray puts each worker in a process group of its own, but workers stay in
the session. So a run's processes are found by session id (plus any process whose command
line names this run's Ray session, in case one left the session) and killed by pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from rnngen.io import read_parquet
from rnngen.layout import Layout
from rnngen.schemas import RUNS

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden": 8, "epochs": 1, "n_train": 200, "n_test": 200}
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")


def grid_args(seeds: list[int], overrides: dict[str, Any] | None = None) -> list[str]:
    """`rnngen train` options for the grid L=10, σ=0 over `seeds` (tiny by default)."""
    args = ["--L", "10", "--sigma", "0"]
    for seed in seeds:
        args += ["--seeds", str(seed)]
    for name, value in (overrides or TINY).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def grid_ids(out: Path, seeds: list[int], overrides: dict[str, Any] | None = None) -> list[str]:
    """The run_ids of that grid, in seed order, as the CLI computes them."""
    from rnngen_tasks.train import build_grid

    specs = build_grid(
        str(out), lengths=[10], sigmas=[0.0], seeds=seeds, overrides=dict(overrides or TINY)
    )
    return [s.run_id for s in specs]


def link_interim(real_data: Path, out: Path) -> Path:
    """An output folder holding the real tokenized corpus (linked, not copied)."""
    (out / "interim").mkdir(parents=True)
    for item in (real_data / "interim").iterdir():
        (out / "interim" / item.name).symlink_to(item)
    return out


def copy_results(src: Path, out: Path) -> Path:
    """`out` with the corpus linked and `src`'s results and models copied byte for byte."""
    (out / "interim").mkdir(parents=True)
    for item in (src / "interim").iterdir():
        (out / "interim" / item.name).symlink_to(item.resolve())
    for folder in ("results", "models"):
        shutil.copytree(src / folder, out / folder)
    return out


# ------------------------------------------------------------------------ results on disk


def read_rows(out: Path) -> dict[str, dict]:
    """The recorded runs by run_id, as the store reads them: runs.parquet with the rows of
    fragments not compacted yet (a stage killed mid-grid leaves its finished cells there).
    Fails if runs.parquet is unreadable, of another schema, or holds duplicates."""
    from rnngen_tasks.store import Store

    if Layout.at(out).runs.is_file():
        table = read_parquet(Layout.at(out).runs, required=RUNS)
        ids = table.column("run_id").to_pylist()
        assert len(ids) == len(set(ids)), f"duplicate run_ids in runs.parquet: {sorted(ids)}"
    return {r["run_id"]: r for r in Store(out).rows("runs")}


def statuses(out: Path) -> dict[str, str]:
    return {run_id: row["status"] for run_id, row in read_rows(out).items()}


def snapshot(out: Path) -> dict[str, bytes]:
    """The bytes of every result: results/*.parquet and models/*. (train_state.json is the
    live progress file, rewritten by every train run, not a result.)"""
    files = [*out.glob("results/*.parquet"), *out.glob("models/*")]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(files) if p.is_file()}


def changed_files(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    return [name for name, data in before.items() if after.get(name) != data]


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def rows_lost(before: dict[str, dict], after: dict[str, dict]) -> int:
    """Finished rows of `before` that are missing or altered in `after`."""
    lost = 0
    for run_id, row in before.items():
        if row["status"] not in ("done", "diverged"):
            continue
        new = after.get(run_id)
        if new is None or any(not _same(v, new.get(k)) for k, v in row.items()):
            lost += 1
    return lost


def rows_of(snap: dict[str, bytes]) -> dict[str, dict]:
    """The runs.parquet rows held in a snapshot, read without our schema check."""
    data = snap.get("results/runs.parquet")
    if data is None:
        return {}
    try:
        return {r["run_id"]: r for r in pq.read_table(pa.BufferReader(data)).to_pylist()}
    except (OSError, pa.ArrowInvalid):
        return {}


def stray_temp_files(out: Path) -> list[str]:
    """Temporary files of atomic writes left behind (never visible under a final name)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- the CLI


def message_line(output: str, *starts: str) -> str:
    """The first output line starting with one of `starts` (e.g. the CLI's `error:`), with the
    lines that continue its paragraph (up to a blank line or the next log line)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(starts):
            paragraph = [line.strip()]
            for more in lines[i + 1 :]:
                if not more.strip() or _LOG_LINE.match(more):
                    break
                paragraph.append(more.strip())
            return " ".join(paragraph)
    return ""


def line_with(output: str, needle: str) -> str:
    """The first line containing `needle`, without a Prefect log prefix ("... | Flow run x - ")."""
    for line in output.splitlines():
        if needle in line:
            return line.split(" - ", 1)[-1].strip() if _LOG_LINE.match(line) else line.strip()
    return ""


def report(
    record_property: Callable[[str, object], None],
    *,
    fault: str,
    injected: str,
    message: str,
    rows_lost: int | None,
    **extra: object,
) -> None:
    """Numbers for bench/reliability_table.py (they land in the junit XML)."""
    for name, value in {
        "fault": fault,
        "injected": injected,
        "message": message,
        "rows_lost": "" if rows_lost is None else rows_lost,
        **extra,
    }.items():
        record_property(name, value)


@dataclass
class CliRun:
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def text(self) -> str:
        """The output with all whitespace runs as single spaces (rich wraps long lines)."""
        return " ".join(self.output().split())

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.output().splitlines()[-n:])

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the CLI is still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the CLI exited ({self.proc.returncode}) before {what}:\n{self.tail()}"
                )
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout} s:\n{self.tail()}")

    def members(self) -> list[psutil.Process]:
        """Live processes of this run: its session, or naming its Ray session."""
        ray_session = re.compile(rf"session_[\d_-]+_{self.pid}(?!\d)")
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                    continue
                if os.getsid(proc.pid) == self.pid or ray_session.search(
                    " ".join(proc.info["cmdline"] or [])
                ):
                    found.append(proc)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return found

    def find(self, title: str) -> psutil.Process | None:
        """A process of this run whose title starts with `title` (e.g. `ray::train L=`)."""
        for proc in self.members():
            try:
                if " ".join(proc.cmdline()).startswith(title):
                    return proc
            except psutil.Error:
                continue
        return None

    def settle(self, grace: float = 15.0) -> list[str]:
        """After the CLI exited on its own: what it left running after `grace` seconds."""
        deadline = time.monotonic() + grace
        while True:
            alive = self.members()
            if not alive or time.monotonic() > deadline:
                return [_describe(p) for p in alive]
            time.sleep(0.2)

    def stop(self) -> list[str]:
        """SIGKILL the process group, then every remaining member by pid; return survivors."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is None:
                self.wait(1)
            alive = self.members()
            for proc in alive:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            if not alive:
                return []
            if time.monotonic() > deadline:
                return [_describe(p) for p in alive]
            time.sleep(0.2)


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:120]}"
    except psutil.Error:
        return str(proc.pid)


@contextmanager
def cli(
    args: list[str], env: dict[str, str], log: Path, *, preexec_fn: Callable[[], None] | None = None
) -> Iterator[CliRun]:
    """Start `python -m rnngen_flows.cli ARGS`; on the way out, kill whatever of it still runs and
    fail if any process of the run (raylet, gcs_server, worker, ...) survives that."""

    def as_from_a_shell() -> None:
        # A launcher that ran pytest in the background (`cmd &`, nohup, some CI) leaves SIGINT
        # ignored, and children inherit that: give the CLI the default, as a terminal would.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if preexec_fn is not None:
            preexec_fn()

    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rnngen_flows.cli", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_from_a_shell,
        )
    run = CliRun(proc, log)
    try:
        yield run
    finally:
        survivors = run.stop()
    assert not survivors, f"processes of CLI run {run.pid} survived SIGKILL: {survivors}"


def run_cli(
    args: list[str],
    env: dict[str, str],
    log: Path,
    timeout: float = 240,
    *,
    preexec_fn: Callable[[], None] | None = None,
) -> CliRun:
    """Run the CLI to its end (bounded); the finished run, for its status and output."""
    with cli(args, env, log, preexec_fn=preexec_fn) as run:
        if run.wait(timeout) is None:
            raise AssertionError(
                f"rnngen {' '.join(args)} still running after {timeout} s:\n{run.tail()}"
            )
    return run


def parquet_readable(path: Path) -> bool:
    try:
        pq.read_table(path)
    except Exception:  # noqa: BLE001 (any failure means: not readable)
        return False
    return True


def write_spectrum_row(out: Path, lambda_min: float = 1e-3) -> None:
    """A spectrum row for the fault grid's L = 10 (status 'certified', the given λ_min), so
    that the bounds are computable without computing a spectrum."""
    from rnngen import schemas
    from rnngen.io import write_parquet
    from rnngen_tasks.corpus import corpus_pointer

    row = {
        "L": 10,
        "n": 200,
        "dim": 500,
        "lambda_min": lambda_min,
        "lambda_min_residual": 0.0,
        "lambda_max": 1.0,
        "trace": 1.0,
        "method": "fault-suite fixture",
        "iterations": 0,
        "seconds": 0.0,
        "data_key": corpus_pointer(str(out))["data_key"],
        "status": "certified",
        "message": "fault-suite fixture",
    }
    table = schemas.to_table([row], schemas.SPECTRUM)  # the other columns null
    write_parquet(table, Layout.at(out).spectrum, {"stage": "spectrum"})
