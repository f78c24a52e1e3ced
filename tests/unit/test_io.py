"""Atomic writes, the schema check and the output-folder lock."""

import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from rnngen.errors import DataError, UserError
from rnngen.io import (
    atomic_path,
    output_lock,
    read_metadata,
    read_parquet,
    with_metadata,
    write_parquet,
)


def test_failed_write_leaves_the_previous_file_and_no_temporaries(tmp_path):
    target = tmp_path / "r.parquet"
    write_parquet(pa.table({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("killed mid-write")
    assert read_parquet(target).column("a").to_pylist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.parquet"]


def test_schema_version_and_required_columns_are_checked(tmp_path):
    old = tmp_path / "old.parquet"
    import pyarrow.parquet as pq

    pq.write_table(
        with_metadata(pa.table({"a": [1]}), {}).replace_schema_metadata(
            {b"rnngen": b'{"schema_version": "0"}'}
        ),
        old,
    )
    with pytest.raises(DataError, match="schema version '0'"):
        read_parquet(old)
    write_parquet(pa.table({"a": [1]}), tmp_path / "new.parquet")
    with pytest.raises(DataError, match=r"lacks columns \['b'\]"):
        read_parquet(tmp_path / "new.parquet", required=("a", "b"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_parquet(tmp_path / "junk.parquet")


def test_every_file_records_its_provenance(tmp_path):
    target = write_parquet(pa.table({"a": [1]}), tmp_path / "p.parquet", {"stage": "x"})
    meta = read_metadata(target)
    prov = meta["provenance"]
    assert meta["stage"] == "x" and meta["schema_version"]
    # this checkout is a git repository: a 40-hex commit and a boolean dirty flag
    assert len(prov["git_commit"]) == 40 and isinstance(prov["git_dirty"], bool)
    assert prov["written_at"].endswith("Z") and prov["python"].count(".") == 2
    assert {"torch", "numpy", "ray", "prefect"} <= set(prov["versions"])
    assert prov["versions"]["numpy"] and prov["cpu"] and prov["cpu_cores"] >= 1
    assert prov["flow_run_id"] is None  # written outside any flow run


def test_second_process_is_refused_and_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from rnngen.io import output_lock\n"
                f"with output_lock({str(tmp_path)!r}):\n"
                "    print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by pid {holder.pid}"), output_lock(tmp_path):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.wait()
    deadline = time.time() + 5
    while True:  # the OS releases the lock with the process
        try:
            with output_lock(tmp_path), output_lock(tmp_path):  # re-entrant in one process
                break
        except UserError:
            assert time.time() < deadline
            time.sleep(0.1)


# The child of the full-disk test: RLIMIT_FSIZE 0 makes every write of a byte fail (EFBIG,
# with SIGXFSZ ignored) while files can still be created -- the state of a full disk that
# still has inodes. The first stage on a new output folder creates and writes its lock.
_LOCK_ON_A_FULL_DISK = """
import resource, signal, sys
from rnngen.errors import UserError
from rnngen.io import output_lock
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
try:
    with output_lock(sys.argv[1]):
        print("held")
except UserError as err:
    print("UserError:", err)
"""


def test_first_lock_on_a_full_disk_is_a_clear_error_and_leaves_no_lock_file(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", _LOCK_ON_A_FULL_DISK, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no traceback
    message = proc.stdout.strip()
    assert message.startswith(f"UserError: cannot write the lock file {out / '.rnngen.lock'}")
    assert "File too large" in message and "choose another --out" in message
    assert sorted(out.iterdir()) == []  # no empty lock file left behind


def test_an_output_folder_that_is_a_file_is_named_as_such(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(UserError, match="is a file, not a folder"), output_lock(tmp_path / "out"):
        pass
    assert (tmp_path / "out").read_text() == "a file"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_writers_are_removed_at_the_next_write(tmp_path):
    target = tmp_path / "runs.parquet"
    hour_ago = time.time() - 3600
    dead = tmp_path / f".runs.parquet.{_dead_pid()}.k2j4h5g6.tmp"  # its writer is gone
    legacy = tmp_path / ".runs.parquet.a1b2c3d4.tmp"  # no pid in the name, untouched 1 h
    live = tmp_path / f".runs.parquet.{os.getpid()}.x9y8z7w6.tmp"  # a write in progress
    fresh_legacy = tmp_path / ".runs.parquet.q1w2e3r4.tmp"  # no pid, written just now
    other = tmp_path / f".bounds.parquet.{_dead_pid()}.m1n2b3v4.tmp"  # another file's
    for path in (dead, legacy, live, fresh_legacy, other):
        path.write_bytes(b"half a file")
    os.utime(legacy, (hour_ago, hour_ago))
    write_parquet(pa.table({"a": [1]}), target)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["runs.parquet", live.name, fresh_legacy.name, other.name])
    assert read_parquet(target).column("a").to_pylist() == [1]
