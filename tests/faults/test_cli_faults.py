"""The CLI's own faults: the CLI SIGKILLed (what it started must not outlive it), its local
raylet killed (a message, not a bare exit 1), the first write on a full disk, and
`--pack-size` reaching the training."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.faults.harness import (
    CliRun,
    cli,
    grid_args,
    grid_ids,
    link_interim,
    message_line,
    report,
    run_cli,
    statuses,
    stray_temp_files,
)
from tests.faults.test_disk_faults import _fill

pytestmark = pytest.mark.faults

# One cell that trains for a minute or more, so the fault certainly lands while it trains.
LONG = {"hidden": 8, "epochs": 100, "n_train": 20000, "n_test": 200}
RESUME_HINT = "run the same command again to resume where it stopped"
GRACE_S = 10  # "a few seconds": what the CLI started must be gone by then


def _member(run: CliRun, match) -> psutil.Process | None:
    """A live process of the run whose command line satisfies `match`."""
    for proc in run.members():
        try:
            if match(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return None


def _prefect_server(run: CliRun) -> psutil.Process | None:
    return _member(run, lambda cmd: "prefect.server.api.server:create_app" in cmd)


def _raylet(run: CliRun) -> psutil.Process | None:
    return _member(run, lambda cmd: bool(cmd) and os.path.basename(cmd[0]) == "raylet")


def _ended(proc: psutil.Process, within: float) -> bool:
    """Whether `proc` (that very process, not a later one with its pid) ended in time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_sigkill_to_the_cli_stops_everything_it_started(
    corpus_out, fault_env, tmp_path, record_property
):
    args = ["train", "--out", str(corpus_out), *grid_args([0], LONG)]
    with cli(args, fault_env, tmp_path / "cli.log") as run:
        run.wait_until(lambda: run.find("ray::train L="), 240, "a training cell in flight")
        server = run.wait_until(lambda: _prefect_server(run), 10, "Prefect's temporary API")
        os.kill(run.pid, signal.SIGKILL)  # the CLI alone: none of its handlers can run
        assert run.wait(30) == -signal.SIGKILL
        killed = time.monotonic()
        server_ended = _ended(server, GRACE_S)
        server_seconds = time.monotonic() - killed
        left = run.settle(GRACE_S)  # everything else of the run (Ray, its agents, ...)
    message = message_line(run.output(), "error:")
    report(
        record_property,
        fault="CLI SIGKILLed (its pid only)",
        injected="SIGKILL to the CLI's pid (not its group) while a cell trains",
        message=message,
        rows_lost=None,
        server_gone_seconds=round(server_seconds, 1),
    )
    assert server_ended, f"Prefect's temporary API (pid {server.pid}) outlived the CLI"
    assert left == [], f"left running {GRACE_S} s after the CLI was killed: {left}"
    assert f"rnngen (pid {run.pid}) was killed" in message and RESUME_HINT in message
    assert stray_temp_files(corpus_out) == []


def test_a_dead_raylet_ends_the_cli_with_a_message(
    corpus_out, fault_env, tmp_path, record_property
):
    args = ["train", "--out", str(corpus_out), *grid_args([0], LONG)]
    with cli(args, fault_env, tmp_path / "cli.log") as run:
        run.wait_until(lambda: run.find("ray::train L="), 240, "a training cell in flight")
        raylet = run.wait_until(lambda: _raylet(run), 10, "the local raylet")
        os.kill(raylet.pid, signal.SIGKILL)
        rc = run.wait(120)
        left = run.settle(GRACE_S) if rc is not None else ["the CLI itself"]
    message = message_line(run.output(), "error:")
    report(
        record_property,
        fault="the local raylet killed",
        injected="SIGKILL to the raylet of the CLI's local Ray while a cell trains",
        message=message,
        rows_lost=None,
    )
    assert rc is not None and rc != 0, f"exit {rc}:\n{run.tail()}"
    assert f"raylet (pid {raylet.pid}) died" in message, run.tail()
    assert RESUME_HINT in message
    assert left == [], f"left running after the CLI ended: {left}"


def test_the_first_write_on_a_full_disk_is_a_clear_error(
    real_data, tmpfs, fault_env, tmp_path, record_property
):
    """A new output folder on a full file system: the lock file can be created (an inode is
    free) but not written."""
    out = link_interim(real_data, tmpfs / "out")
    filled = _fill(tmpfs)
    run = run_cli(["train", "--out", str(out), *grid_args([0])], fault_env, tmp_path / "cli.log")
    message = message_line(run.output(), "error:")
    report(
        record_property,
        fault="first write on a full disk",
        injected=f"tmpfs filled to the last byte ({filled >> 20} MiB), then `rnngen train` "
        "on a new output folder there",
        message=message,
        rows_lost=None,
    )
    assert run.proc.returncode == 2, run.tail()
    assert f"cannot write the lock file {out / '.rnngen.lock'}" in message
    assert "No space left on device" in message and "choose another --out" in message
    assert "Traceback" not in run.output()
    assert not (out / ".rnngen.lock").exists()
    assert sorted(p.name for p in out.iterdir()) == ["interim"]


def test_pack_size_reaches_the_training(corpus_out, fault_env, tmp_path: Path):
    seeds = [0, 1]
    run = run_cli(
        ["train", "--out", str(corpus_out), *grid_args(seeds), "--pack-size", "2"],
        fault_env,
        tmp_path / "cli.log",
        timeout=300,
    )
    assert run.proc.returncode == 0, run.tail()
    assert message_line(run.output(), "error:") == ""  # a clean exit: the watchdog is quiet
    assert "cells trained in packs of up to 2" in run.text()
    assert run.text().count("in a pack of 2") == len(seeds)  # each cell says it, from Ray
    assert statuses(corpus_out) == dict.fromkeys(grid_ids(corpus_out, seeds), "done")
