"""Atomic Parquet and NumPy writes: finished files are the completion markers.

A file is written under a temporary name in the same folder, flushed to disk, then
renamed over the target, so a reader sees either the old complete file or the new
complete file, never a half-written one -- even if the writer is killed mid-way.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rnngen.errors import DataError, UserError
from rnngen.provenance import provenance

# 2: every column typed (rnngen/schemas.py), provenance in the metadata.
SCHEMA_VERSION = "2"
META_KEY = b"rnngen"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# A temporary file untouched this long is abandoned, whoever wrote it: a write renames its
# file within seconds of its last byte.
STALE_TEMP_S = 30 * 60


def _temp_prefix(target: Path) -> str:
    """Temporary files of `target` are `.<name>.<writer pid>.<random>.tmp`."""
    return f".{target.name}.{os.getpid()}."


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid) here
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Remove the temporary files of `target` that a killed writer left beside it: those
    whose writer (the pid in the name) is no longer running on this machine, and any not
    touched for STALE_TEMP_S (a name without a pid, from an older rnngen, included). A
    write in progress -- its writer alive, its file fresh -- is left alone. The paths
    removed."""
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")
    removed: list[Path] = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for path in siblings:
        match = pattern.fullmatch(path.name)
        if match is None:
            continue
        try:
            age = time.time() - path.lstat().st_mtime
            pid = match.group(1)
            if age > STALE_TEMP_S or (pid is not None and not _writer_alive(int(pid))):
                path.unlink()
                removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    Temporary files of `target` left by writers that were killed are removed first
    (:func:`remove_stale_temps`)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual mode
    except OSError as err:
        raise UserError(
            f"cannot write in {target.parent}: {err.strerror}. Check that the "
            "folder exists, is writable and has free space."
        ) from err
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        raise UserError(
            f"writing {target} failed: {err.strerror or err}. The previous "
            "version of the file, if any, is untouched."
        ) from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def with_metadata(table: pa.Table, meta: dict[str, Any]) -> pa.Table:
    """Attach the schema version, the writer's provenance (rnngen.provenance: commit,
    versions, hardware, time, flow run) and `meta` (stage, config, data_key) as metadata."""
    payload = {"schema_version": SCHEMA_VERSION, "provenance": provenance(), **meta}
    existing = dict(table.schema.metadata or {})
    existing[META_KEY] = json.dumps(payload, sort_keys=True, default=str).encode()
    return table.replace_schema_metadata(existing)


def write_parquet(table: pa.Table, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write `table` atomically, with provenance metadata."""
    table = with_metadata(table, meta or {})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    return table_metadata(pq.read_schema(path))


def table_metadata(table: pa.Table | pa.Schema) -> dict[str, Any]:
    """Our metadata (see :func:`with_metadata`) of a table read from Parquet."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def read_parquet(path: str | Path, required: tuple[str, ...] | pa.Schema = ()) -> pa.Table:
    """Read one of our Parquet files, checking its schema version and that it has the
    `required` columns (names, or every column of a declared schema)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(
            f"{path} is not a readable Parquet file ({err}). Delete it and rerun "
            "the stage that writes it."
        ) from err
    if isinstance(required, pa.Schema):  # columns marked as added later are optional
        required = tuple(f.name for f in required if (f.metadata or {}).get(b"added") != b"1")
    version = table_metadata(table).get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(
            f"{path} has schema version {version!r}, this rnngen writes "
            f"{SCHEMA_VERSION!r}. Move the file away (or use another --out) and "
            "rerun the stage."
        )
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(f"{path} lacks columns {missing}. Move it away and rerun the stage.")
    return table


_HELD: dict[Path, int] = {}  # folder -> the open lock file's descriptor
LOCK_NAME = ".rnngen.lock"


def _open_lock(path: Path) -> tuple[int, bool]:
    """`path` open for reading and writing (a bare descriptor: no buffer that a close
    would flush), created if missing; and whether it was created."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
        return os.open(path, os.O_RDWR), False


@contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold `<out>/.rnngen.lock` exclusively while a stage writes into `out`.

    A second process using the same folder is refused at once (not queued), with the
    holder's pid. The lock is an OS file lock, so it disappears with its process even on
    SIGKILL: a killed run never leaves the folder locked. Re-entrant within one process,
    so the study flow and the stage flows it calls share it.
    """
    import fcntl

    folder = Path(out).expanduser().resolve()
    if folder in _HELD:  # already ours: the outermost holder releases it
        yield
        return
    if folder.exists() and not folder.is_dir():
        raise UserError(
            f"the output folder {folder} is a file, not a folder. Choose another --out "
            "(a folder; it is created if it does not exist)."
        )
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, created = _open_lock(lock)
    except OSError as err:
        raise UserError(
            f"cannot use the output folder {folder}: {err.strerror}. Check that it is "
            "writable and has free space, or choose another --out."
        ) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(
            f"the output folder {folder} is in use by {holder} (another rnngen "
            "run). Wait for it to finish or stop it, or choose another --out."
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
    except OSError as err:  # a full disk: the file could be made, not written
        if created:  # leave no empty lock file behind
            lock.unlink(missing_ok=True)
        os.close(fd)
        raise UserError(
            f"cannot write the lock file {lock}: {err.strerror or err}. Free space on "
            f"the file system of {folder} (or make it writable), or choose another --out."
        ) from err
    _HELD[folder] = fd
    try:
        yield
    finally:
        del _HELD[folder]
        os.close(fd)
