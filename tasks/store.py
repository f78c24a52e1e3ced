"""The results store: every results table of an output folder, read and written in one place.

A table is one Parquet file under `results/` (rnngen.layout names each). A stage never
rewrites it per unit: a finished unit's rows go to a small fragment file of their own
(`results/.fragments/<table>/<unit>.parquet`, written atomically), so recording a unit
costs the same at the 10th unit as at the 2,000th (bench/bench_store.py). At the end of a
stage -- also when it fails or is interrupted -- the fragments are compacted into the
table: one atomic rewrite, then the fragments are removed. A reader always sees the table
plus any fragments not compacted yet (e.g. after a kill -9), so nothing finished is lost
and a resumed stage skips what its killed predecessor finished.

Rows of one unit replace that unit's earlier rows (a model's bound rows for every α, a
run's history). Each appended row gets its provenance: the driver's commit and dirty
flag, the machine it was computed on, and `finished_at` (a UTC timestamp).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rnngen import schemas
from rnngen.errors import DataError
from rnngen.hashing import content_key, sha256_file
from rnngen.io import read_parquet, write_parquet
from rnngen.layout import Layout
from rnngen.provenance import MACHINE_COLUMNS, code_fields, machine_fields
from rnngen.specs import RunSpec
from rnngen.weights import load_weights


@dataclass(frozen=True)
class Table:
    """A results table: its schema, the columns naming a unit (whose rows are replaced
    together) and the columns the file is sorted by."""

    name: str
    schema: pa.Schema
    unit: tuple[str, ...]
    order: tuple[str, ...]
    provenance: bool = True  # rows get the provenance columns when appended


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("runs", schemas.RUNS, ("run_id",), ("L", "sigma", "seed", "run_id")),
        Table(
            "history",
            schemas.HISTORY,
            ("run_id",),
            ("L", "sigma", "seed", "run_id", "epoch"),
            provenance=False,
        ),
        Table("bounds", schemas.BOUNDS, ("run_id",), ("L", "sigma", "seed", "run_id", "alpha")),
        Table("spectrum", schemas.SPECTRUM, ("L", "data_key", "n"), ("L", "n")),
    )
}


def register(table: Table) -> None:
    """Add a table (a stage of its own declares its table here, once)."""
    TABLES[table.name] = table


def _sort_value(value: Any) -> tuple:
    return (value is None, value if value is not None else 0)


def _timestamp(value: Any) -> datetime | None:
    """finished_at as a datetime: files written before it was a timestamp hold ISO text."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# Columns whose type changed: files written before hold the old type, read as such.
LEGACY_TYPES = {"finished_at": pa.string()}


def _read(path: Path, table: Table) -> list[dict[str, Any]]:
    """A table file's rows, refused at once (naming the file and the column) when a
    column holds another type than the one declared: it would fail only later, when the
    stage writes, after its work."""
    data = read_parquet(path, required=table.schema)
    for field in data.schema:
        if field.name not in table.schema.names or pa.types.is_null(field.type):
            continue
        declared = table.schema.field(field.name).type
        if field.type != declared and field.type != LEGACY_TYPES.get(field.name):
            raise DataError(
                f"{path}: column {field.name!r} holds {field.type}, not {declared} as "
                f"rnngen writes it. The file was changed by something else; move it away "
                f"and rerun the stage that writes it."
            )
    return data.to_pylist()


class Store:
    """The results of one output folder."""

    _locks: dict[Path, threading.Lock] = {}

    def __init__(self, out: str | Path) -> None:
        self.layout = Layout.at(out)

    # ------------------------------------------------------------------------------ reads

    def path(self, name: str) -> Path:
        return self.layout.table(name)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The table's rows with any fragments not compacted yet merged in (a fragment's
        rows replace its unit's rows)."""
        table = TABLES[name]
        path = self.path(name)
        rows = _read(path, table) if path.is_file() else []
        fragments = self._fragments(name)
        if fragments:
            fresh = [r for f in fragments for r in self._read_fragment(f, table)]
            units = {self._unit(table, r) for r in fresh}
            rows = [r for r in rows if self._unit(table, r) not in units] + fresh
        for row in rows:
            if "finished_at" in row:
                row["finished_at"] = _timestamp(row["finished_at"])
        return sorted(rows, key=lambda r: tuple(_sort_value(r.get(c)) for c in table.order))

    def by_unit(self, name: str) -> dict[tuple, list[dict[str, Any]]]:
        """The table's rows grouped by unit."""
        table, grouped = TABLES[name], {}
        for row in self.rows(name):
            grouped.setdefault(self._unit(table, row), []).append(row)
        return grouped

    def done_runs(self) -> list[dict[str, Any]]:
        """The runs rows of trained models (status 'done'), in grid order."""
        return [r for r in self.rows("runs") if r["status"] == "done"]

    # ----------------------------------------------------------------------------- models

    def model_path(self, run_id: str) -> Path:
        return self.layout.models / f"{run_id}.npz"

    def load_model(self, spec: RunSpec) -> dict[str, np.ndarray]:
        """The weights of `spec`'s run; a DataError naming the file when it is missing,
        unreadable or holds another run's weights."""
        path = self.model_path(spec.run_id)
        weights, stored = load_weights(path)
        if RunSpec.from_json(stored).run_id != spec.run_id:
            raise DataError(
                f"{path} holds the weights of another run "
                f"({RunSpec.from_json(stored).run_id}); move it away and retrain."
            )
        return weights

    def model_digest(self, run_id: str) -> str:
        """sha256 of a model file (part of the identity of the rows computed from it)."""
        return sha256_file(self.model_path(run_id))

    def set_aside(self, run_id: str) -> Path:
        """Move a model file that cannot be loaded out of the way (never delete it): the
        run then counts as not trained and `train` trains it again."""
        path = self.model_path(run_id)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}.bad-{stamp}")
        os.replace(path, target)
        return target

    # ----------------------------------------------------------------------------- writes

    def append(self, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        """Record one unit's rows (all with the same unit key) as a fragment: replaces the
        unit's earlier rows once compacted, and is read as such until then."""
        table = TABLES[name]
        if not rows:
            return
        units = {self._unit(table, r) for r in rows}
        if len(units) != 1:
            raise ValueError(f"{name}: one append holds one unit's rows, got {sorted(units)}")
        if table.provenance:
            now = datetime.now(UTC).replace(microsecond=0)
            # Rows computed elsewhere carry their machine's columns; this one's (a torch
            # import, seconds) is read only for rows that lack them.
            lacking = any(not MACHINE_COLUMNS <= row.keys() for row in rows)
            code, here = code_fields(), machine_fields() if lacking else {}
            rows = [
                here | r | code | {"finished_at": _timestamp(r.get("finished_at")) or now}
                for r in rows
            ]
        fragment = self.layout.fragments(name) / f"{content_key(list(units.pop()))}.parquet"
        write_parquet(schemas.to_table(rows, table.schema), fragment, {"stage": name, **meta})

    def compact(self, name: str, meta: dict[str, Any]) -> bool:
        """Merge the table's fragments into its file (one atomic write) and remove them;
        False when there was nothing to merge."""
        with self._lock(name):
            fragments = self._fragments(name)
            if not fragments:
                return False
            rows = self.rows(name)
            write_parquet(
                schemas.to_table(rows, TABLES[name].schema),
                self.path(name),
                {"stage": name, **meta},
            )
            for fragment in fragments:
                fragment.unlink(missing_ok=True)
            return True

    def replace(self, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        """Write the whole table (no fragment left behind); for a table a stage rewrites
        in full, such as a ranking."""
        with self._lock(name):
            table = TABLES[name]
            write_parquet(
                schemas.to_table(rows, table.schema), self.path(name), {"stage": name, **meta}
            )
            for fragment in self._fragments(name):
                fragment.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------- helpers

    def _lock(self, name: str) -> threading.Lock:
        return self._locks.setdefault(self.path(name), threading.Lock())

    def _fragments(self, name: str) -> list[Path]:
        folder = self.layout.fragments(name)
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    @staticmethod
    def _read_fragment(path: Path, table: Table) -> list[dict[str, Any]]:
        return _read(path, table)

    @staticmethod
    def _unit(table: Table, row: dict[str, Any]) -> tuple:
        return tuple(row.get(c) for c in table.unit)


def pending_specs(out: str, specs: list[RunSpec]) -> list[RunSpec]:
    """Specs whose run is not finished in the store: no row done/diverged, or a 'done' row
    whose model file is missing or cannot be loaded. Such a file is moved aside (never
    deleted) and its cell trained again."""
    store = Store(out)
    rows = {r["run_id"]: r for r in store.rows("runs")}
    todo = []
    for spec in specs:
        status = rows.get(spec.run_id, {}).get("status")
        if status == "diverged":
            continue
        if status == "done" and store.model_path(spec.run_id).is_file():
            try:
                store.load_model(spec)
                continue
            except DataError as err:
                moved = store.set_aside(spec.run_id)
                print(f"train: {err} Moved to {moved.name}; the cell is trained again.")
        todo.append(spec)
    return todo
