"""Atomic Parquet and NumPy writes: finished files are the completion markers.

A file is written under a temporary name in the same folder, flushed to disk, then
renamed over the target, so a reader sees either the old complete file or the new
complete file, never a half-written one -- even if the writer is killed mid-way.
"""

from __future__ import annotations

import json
import os
import tempfile
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


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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


_HELD: dict[Path, Any] = {}


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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / ".rnngen.lock", "a+")  # noqa: SIM115 (held across the yield)
    except OSError as err:
        raise UserError(f"cannot use the output folder {folder}: {err.strerror}.") from err
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise UserError(
            f"the output folder {folder} is in use by {holder} (another rnngen "
            "run). Wait for it to finish or stop it, or choose another --out."
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    _HELD[folder] = fh
    try:
        yield
    finally:
        del _HELD[folder]
        fh.close()
