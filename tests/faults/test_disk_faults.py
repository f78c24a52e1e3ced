"""The output disk full or read-only while rnngen writes: a clear error, a non-zero exit, and
every result that was there before left byte for byte as it was."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess

import pytest

from tests.faults.harness import (
    changed_files,
    cli,
    copy_results,
    grid_args,
    message_line,
    read_rows,
    report,
    rows_lost,
    run_cli,
    snapshot,
    stray_temp_files,
)

pytestmark = pytest.mark.faults

FSIZE_LIMIT = 12 << 20  # above Prefect's SQLite files, below a rebuilt corpus (~20 MB)


def _limit_file_size() -> None:
    """In the child: writes past FSIZE_LIMIT fail with EFBIG instead of killing it."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _fill(folder) -> int:
    """Fill the file system of `folder` to the last byte; the bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as fh:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    written += fh.write(b"\0" * chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
    return written


def test_file_size_limit_while_writing_the_corpus(
    trained_out, imdb_tarball, fault_env, tmp_path, record_property
):
    """Portable "disk full": RLIMIT_FSIZE in the CLI, which rebuilds the corpus (--keep-case)."""
    before, rows, interim = (
        snapshot(trained_out),
        read_rows(trained_out),
        sorted(p.name for p in (trained_out / "interim").iterdir()),
    )
    run = run_cli(
        [
            "embed",
            "--out",
            str(trained_out),
            "--L",
            "10",
            "--keep-case",
            "--imdb",
            str(imdb_tarball),
        ],
        fault_env,
        tmp_path / "cli.log",
        preexec_fn=_limit_file_size,
    )
    changed = changed_files(before, snapshot(trained_out))
    report(
        record_property,
        fault="disk full (file size limit) while writing",
        injected=f"RLIMIT_FSIZE={FSIZE_LIMIT >> 20} MiB on the CLI, SIGXFSZ ignored; "
        "`rnngen embed --keep-case` writes a new ~20 MB corpus",
        message=message_line(run.output(), "error:"),
        rows_lost=rows_lost(rows, read_rows(trained_out)),
        changed_files=len(changed),
    )
    assert run.proc.returncode != 0
    assert "File too large" in run.text() and "corpus-" in message_line(run.output(), "error:")
    assert changed == []
    assert sorted(p.name for p in (trained_out / "interim").iterdir()) == interim
    assert stray_temp_files(trained_out) == []


def test_disk_full_while_training_writes(trained_base, tmpfs, fault_env, tmp_path, record_property):
    """A real full disk (tmpfs), filled while the new cell trains: its weights and row
    cannot be written."""
    out = copy_results(trained_base, tmpfs / "out")
    before, rows = snapshot(out), read_rows(out)
    with cli(
        ["train", "--out", str(out), *grid_args([0, 1, 2, 3])], fault_env, tmp_path / "cli.log"
    ) as run:
        run.wait_until(lambda: run.find("ray::train L="), 240, "the new cell training")
        filled = _fill(tmpfs)
        rc = run.wait(240)
    changed = changed_files(before, snapshot(out))
    report(
        record_property,
        fault="disk full while training writes",
        injected=f"tmpfs output folder filled to the last byte ({filled >> 20} MiB) while "
        "the one new cell trains",
        message=message_line(run.output(), "error:"),
        rows_lost=rows_lost(rows, read_rows(out)),
        changed_files=len(changed),
    )
    assert rc is not None and rc != 0
    assert "No space left on device" in run.text()
    assert changed == []
    assert stray_temp_files(out) == []


def test_read_only_output_folder(trained_base, tmpfs, fault_env, tmp_path, record_property):
    out = copy_results(trained_base, tmpfs / "out")
    before, rows = snapshot(out), read_rows(out)
    remount = subprocess.run(
        ["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True, text=True
    )
    if remount.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only ({remount.stderr.strip()})")
    assert os.statvfs(out).f_flag & os.ST_RDONLY
    run = run_cli(
        ["train", "--out", str(out), *grid_args([0, 1, 2, 3])], fault_env, tmp_path / "cli.log"
    )
    changed = changed_files(before, snapshot(out))
    report(
        record_property,
        fault="read-only output folder",
        injected="tmpfs output folder remounted read-only; `rnngen train` with one new cell",
        message=message_line(run.output(), "error:"),
        rows_lost=rows_lost(rows, read_rows(out)),
        changed_files=len(changed),
    )
    assert run.proc.returncode != 0
    assert "Read-only file system" in run.text()
    assert changed == []
