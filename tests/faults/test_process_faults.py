"""Processes killed or interrupted under a real `rnngen train`: a Ray worker, the whole CLI,
Ctrl-C, a cell that always raises, and a second run on the same output folder."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from rnngen.io import output_lock
from rnngen.layout import Layout
from tests.faults.harness import (
    changed_files,
    cli,
    grid_args,
    grid_ids,
    line_with,
    message_line,
    parquet_readable,
    read_rows,
    report,
    rows_lost,
    run_cli,
    snapshot,
    statuses,
    stray_temp_files,
)

pytestmark = pytest.mark.faults

# One cell that trains for a minute or more, so the signal certainly lands while the driver
# waits for it (it is interrupted, so its length costs nothing).
LONG = {"hidden": 8, "epochs": 100, "n_train": 20000, "n_test": 200}
INTERRUPT_BOUND_S = 20  # a normal SIGINT exit takes ~5 s here
RESUME_HINT = "run the same command again to resume"


def test_ray_worker_killed_mid_cell_is_retried(trained_out, fault_env, tmp_path, record_property):
    seeds = [0, 1, 2, 3]
    ids = grid_ids(trained_out, seeds)
    before = read_rows(trained_out)
    with cli(
        ["train", "--out", str(trained_out), *grid_args(seeds)], fault_env, tmp_path / "cli.log"
    ) as run:
        worker = run.wait_until(
            lambda: run.find("ray::train L="), 240, "a training cell's Ray worker (ray::train L=…)"
        )
        os.kill(worker.pid, signal.SIGKILL)
        rc = run.wait(240)
    after = read_rows(trained_out)
    lost = rows_lost(before, after)
    died = [line.strip() for line in run.output().splitlines() if "worker died" in line.lower()]
    report(
        record_property,
        fault="Ray worker killed mid-cell",
        injected="SIGKILL to the `ray::train L=… σ=… seed=…` worker process training a new cell",
        message=(died[0] if died else line_with(run.output(), "[1/1]")),
        rows_lost=lost,
    )
    assert rc == 0, run.tail()
    assert {i: r["status"] for i, r in after.items()} == dict.fromkeys(ids, "done")
    assert lost == 0
    assert (Layout.at(trained_out).models / f"{ids[3]}.npz").is_file()


def test_cli_sigkilled_mid_grid_then_rerun_resumes(
    trained_out, fault_env, tmp_path, record_property
):
    # Four new cells of ~2 s on 2 CPUs (two rounds) beside the 3 base rows, so the kill
    # after the first progress line lands with cells both finished and in flight.
    seeds, cells = [0, 1, 2, 3], {"hidden": 8, "epochs": 2, "n_train": 1000, "n_test": 200}
    ids = set(read_rows(trained_out)) | set(grid_ids(trained_out, seeds, cells))
    args = ["train", "--out", str(trained_out), *grid_args(seeds, cells)]
    progress = re.compile(r"done, test acc .* \[\d+/\d+\]")
    with cli(args, fault_env, tmp_path / "killed.log") as run:
        run.wait_until(lambda: progress.search(run.output()), 240, "first progress line")
        os.killpg(run.pid, signal.SIGKILL)
        assert run.wait(30) == -signal.SIGKILL
    readable = parquet_readable(Layout.at(trained_out).runs)
    at_kill = read_rows(trained_out)
    models = Layout.at(trained_out).models
    mtimes = {i: (models / f"{i}.npz").stat().st_mtime_ns for i in at_kill}
    assert len(at_kill) < len(ids), "every cell finished before the kill; nothing was cut"

    rerun = run_cli(args, fault_env, tmp_path / "rerun.log")
    after = read_rows(trained_out)
    lost = rows_lost(at_kill, after)
    retrained = [i for i in at_kill if (models / f"{i}.npz").stat().st_mtime_ns != mtimes[i]]
    report(
        record_property,
        fault="CLI SIGKILLed mid-grid, then rerun",
        injected=f"SIGKILL to the whole process group after the first progress line "
        f"({len(at_kill) - 3} of 4 new cells on disk), then the same command",
        message=line_with(rerun.output(), "already finished"),
        rows_lost=lost,
        retrained=len(retrained),
        stray_temp_files=len(stray_temp_files(trained_out)),
    )
    assert readable
    assert rerun.proc.returncode == 0, rerun.tail()
    assert f"{len(at_kill) - 3} already finished" in rerun.text()
    assert {i: r["status"] for i, r in after.items()} == dict.fromkeys(ids, "done")
    assert lost == 0 and retrained == []


def _interrupt(
    trained_out, fault_env, tmp_path, whole_group: bool, sig: signal.Signals = signal.SIGINT
) -> dict:
    """Start a slow cell, send `sig` once it trains; what happened, for the assertions."""
    before = snapshot(trained_out)
    rows_before = read_rows(trained_out)
    with cli(
        ["train", "--out", str(trained_out), *grid_args([0], LONG)], fault_env, tmp_path / "cli.log"
    ) as run:
        run.wait_until(lambda: run.find("ray::train L="), 240, "a training cell in flight")
        masked = _sigint_masked(run.pid)
        (os.killpg if whole_group else os.kill)(run.pid, sig)
        sent = time.monotonic()
        rc = run.wait(INTERRUPT_BOUND_S)
        seconds = time.monotonic() - sent
        left = run.settle() if rc is not None else ["the CLI itself"]
    assert not masked, f"SIGINT was {masked} in the CLI before it was sent; nothing was tested"
    return {
        "rc": rc,
        "seconds": seconds,
        "left": left,
        "run": run,
        "changed": changed_files(before, snapshot(trained_out)),
        "lost": rows_lost(rows_before, read_rows(trained_out)),
    }


def _sigint_masked(pid: int) -> str:
    """'ignored' / 'blocked' if SIGINT is so in `pid`'s main thread (/proc status), else ''."""
    bit, found = 1 << (signal.SIGINT - 1), []
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    for name, word in (("SigIgn", "ignored"), ("SigBlk", "blocked")):
        if int(fields.get(name, "0"), 16) & bit:
            found.append(word)
    return " and ".join(found)


def _lock_free(out) -> bool:
    try:
        with output_lock(out):
            return True
    except Exception:  # noqa: BLE001 (any refusal means: still locked)
        return False


def test_sigint_to_the_cli_exits_with_a_resume_hint(
    trained_out, fault_env, tmp_path, record_property
):
    got = _interrupt(trained_out, fault_env, tmp_path, whole_group=False)
    run = got["run"]
    report(
        record_property,
        fault="SIGINT to the CLI process",
        injected="SIGINT to the CLI's pid while a cell trains",
        message=message_line(run.output(), "interrupted") or run.tail(1),
        rows_lost=got["lost"],
        exit_seconds=round(got["seconds"], 1),
    )
    assert got["rc"] is not None and got["rc"] != 0, f"exit {got['rc']}:\n{run.tail()}"
    assert "interrupted" in run.text() and RESUME_HINT in run.text()
    assert got["changed"] == [] and got["lost"] == 0
    assert got["left"] == [], f"left running after exit: {got['left']}"
    assert _lock_free(trained_out)


def test_sigterm_to_the_cli_stops_it_and_everything_it_started(
    trained_out, fault_env, tmp_path, record_property
):
    got = _interrupt(trained_out, fault_env, tmp_path, whole_group=False, sig=signal.SIGTERM)
    run = got["run"]
    report(
        record_property,
        fault="SIGTERM to the CLI process",
        injected="SIGTERM (what kill and timeout send) to the CLI's pid while a cell trains",
        message=message_line(run.output(), "interrupted") or run.tail(1),
        rows_lost=got["lost"],
        exit_seconds=round(got["seconds"], 1),
    )
    assert got["rc"] is not None and got["rc"] != 0, f"exit {got['rc']}:\n{run.tail()}"
    assert RESUME_HINT in run.text()
    assert got["changed"] == [] and got["lost"] == 0
    # the temporary Prefect API and the local Ray are stopped with it, not orphaned
    assert got["left"] == [], f"left running after exit: {got['left']}"
    assert _lock_free(trained_out)


def test_ctrl_c_to_the_process_group_exits_with_a_resume_hint(
    trained_out, fault_env, tmp_path, record_property
):
    got = _interrupt(trained_out, fault_env, tmp_path, whole_group=True)
    run = got["run"]
    seen = message_line(run.output(), "interrupted", "error:")
    if got["rc"] is None:
        seen = f"no exit within {INTERRUPT_BOUND_S} s"
    report(
        record_property,
        fault="Ctrl-C (SIGINT to the process group)",
        injected="SIGINT to the CLI's whole process group while a cell trains",
        message=seen,
        rows_lost=got["lost"],
        exit_seconds=round(got["seconds"], 1),
    )
    assert got["rc"] is not None and got["rc"] != 0, f"exit {got['rc']}:\n{run.tail()}"
    assert "interrupted" in run.text() and RESUME_HINT in run.text()
    assert got["changed"] == [] and got["lost"] == 0
    assert got["left"] == [], f"left running after exit: {got['left']}"
    assert _lock_free(trained_out)


def test_a_cell_that_always_raises_is_retried_then_failed(
    trained_out, fault_env, tmp_path, record_property
):
    seeds = [0, 1, 2, 3, 4]
    ids = grid_ids(trained_out, seeds)
    bad, attempts = ids[3], tmp_path / "attempts.log"
    before = read_rows(trained_out)
    env = fault_env | {"RNNGEN_FAIL_RUN_IDS": bad, "RNNGEN_FAIL_LOG": str(attempts)}
    run = run_cli(
        ["train", "--out", str(trained_out), *grid_args(seeds), "--max-retries", "2"],
        env,
        tmp_path / "cli.log",
    )
    after = read_rows(trained_out)
    tries = attempts.read_text().split() if attempts.is_file() else []
    lost = rows_lost(before, after)
    report(
        record_property,
        fault="a cell raises on every attempt",
        injected=f"RNNGEN_FAIL_RUN_IDS={bad} (RuntimeError in the worker), --max-retries 2",
        message=message_line(run.output(), "error:"),
        rows_lost=lost,
        attempts=len(tries),
    )
    assert run.proc.returncode != 0, run.tail()
    assert "1 of 5 training cells failed" in run.text()
    assert tries == [bad] * 3  # the first try and two retries, then no more
    assert {i: r["status"] for i, r in after.items()} == (
        dict.fromkeys(ids, "done") | {bad: "failed"}
    )
    assert f"injected failure for run {bad}" in after[bad]["error"]
    assert not (Layout.at(trained_out).models / f"{bad}.npz").exists()
    assert lost == 0


def test_a_second_run_on_the_same_folder_is_refused(
    corpus_out, fault_env, second_env, tmp_path, record_property
):
    args = ["train", "--out", str(corpus_out), *grid_args([0])]
    expected = grid_ids(corpus_out, [0])
    lock = corpus_out / ".rnngen.lock"
    with cli(args, fault_env, tmp_path / "first.log") as first:
        worker = first.wait_until(lambda: first.find("ray::train L="), 240, "the first's cell")
        assert lock.read_text() == f"pid {first.pid}"
        # Pause the first run's training worker while the second one starts (~10-20 s), so
        # the first certainly still holds the folder when the second asks, whatever the
        # machine's speed; it resumes untouched afterwards.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            second = run_cli(args, second_env, tmp_path / "second.log", timeout=120)
            second_seconds = time.monotonic() - started
            first_busy = first.proc.poll() is None
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        first_rc = first.wait(240)
    after = statuses(corpus_out) if Layout.at(corpus_out).runs.is_file() else {}
    report(
        record_property,
        fault="two runs on one output folder",
        injected="the same `rnngen train` started again while the first trains",
        message=message_line(second.output(), "error:"),
        rows_lost=sum(after.get(i) != "done" for i in expected),
        second_exit_seconds=round(second_seconds, 1),
    )
    assert first_busy, "the first run ended before the second asked; nothing was tested"
    assert second.proc.returncode != 0, second.tail()
    assert f"in use by pid {first.pid}" in second.text()
    assert first_rc == 0, first.tail()
    assert after == dict.fromkeys(expected, "done")
