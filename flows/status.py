"""`rnngen status`: a report of what is on disk (read-only; needs no Prefect or Ray)."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from rnngen.io import read_parquet
from rnngen.labels import spec_label
from rnngen.layout import Layout

# `rnngen status` answers in well under a second: it reads the results with pyarrow alone
# (no torch, scipy, pydantic, Prefect or Ray), so the store's reader and the analysis helpers
# (which import them) are not used here; tests/unit/test_cli_startup.py checks both agree.
RUN_COLUMNS = ("run_id", "experiment_id", "L", "sigma", "seed", "status", "spec_json")

MARK = {
    "done": "[green]done[/]",
    "diverged": "[yellow]diverged[/]",
    "failed": "[red]failed[/]",
    "running": "[cyan]running[/]",
    "queued": "[dim]queued[/]",
}


def _live(cell: dict, now: float) -> dict:
    """A cell of a live training run: queued (waiting for a worker) or running, and since
    when (minutes:seconds)."""
    started = cell.get("started")
    since = now - (started or cell.get("since") or now)
    status = "running" if started else "queued"
    return dict(cell, status=status, elapsed=f"{int(since) // 60}:{int(since) % 60:02d}")


def _data_rows(layout: Layout) -> list[tuple[str, str]]:
    rows = []
    if layout.imdb_verified.is_file():
        rows.append(("IMDB tarball", f"verified ({layout.imdb_tarball})"))
    elif layout.imdb_tarball.is_file():
        rows.append(("IMDB tarball", "present, NOT verified (run `rnngen embed`)"))
    else:
        rows.append(("IMDB tarball", "absent (run `rnngen embed`)"))
    if layout.corpus_pointer.is_file():
        pointer = json.loads(layout.corpus_pointer.read_text())
        corpus = layout.interim / pointer["corpus"]
        state = "present" if corpus.is_file() else "MISSING"
        rows.append(
            (
                "corpus",
                f"{state}: data_key {pointer['data_key']} (source {pointer['imdb']['kind']})",
            )
        )
    else:
        rows.append(("corpus", "absent (run `rnngen embed`)"))
    if layout.spectrum.is_file():
        for r in read_parquet(layout.spectrum).to_pylist():
            value = f"{r['lambda_min']:.4e}" if r["lambda_min"] is not None else "—"
            rows.append(
                (
                    f"spectrum L={r['L']}",
                    f"{r['status']}: λ_min {value} "
                    f"(residual {r['lambda_min_residual']:.1e}, n={r['n']})",
                )
            )
    else:
        rows.append(("spectrum", "absent (run `rnngen spectrum`)"))
    for name, path in (("bounds", layout.bounds),):
        rows.append(
            (
                name,
                f"{pq.read_metadata(path).num_rows} rows in {path}" if path.is_file() else "absent",
            )
        )
    return rows


def _running(layout: Layout) -> dict[str, dict]:
    """Cells a live training process has in flight (a dead process's list is stale)."""
    path = layout.train_state
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError):
        return {}
    return state.get("running", {})


def run_rows(layout: Layout) -> list[dict]:
    """The runs table's rows (its columns for the grid), with the fragments of a train not
    compacted yet merged in: a fragment's row replaces its run's row (tasks/store.py)."""
    rows = {}
    if layout.runs.is_file():
        rows = {r["run_id"]: r for r in _read_runs(layout.runs)}
    folder = layout.fragments("runs")
    for fragment in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        rows.update((r["run_id"], r) for r in _read_runs(fragment))
    return sorted(rows.values(), key=_grid_order)


def _grid_order(row: dict) -> tuple:
    return tuple((row[c] is None, row[c] or 0) for c in ("L", "sigma", "seed", "run_id"))


def _read_runs(path: Path) -> list[dict]:
    table = read_parquet(path, required=RUN_COLUMNS)
    return table.select(list(RUN_COLUMNS)).to_pylist()


def experiments(rows: list[dict]) -> list[str]:
    """experiment_ids, the one with most finished runs first (ties: by id)."""
    done = defaultdict(int)
    for r in rows:
        done[r["experiment_id"]] += r["status"] == "done"
    return sorted(done, key=lambda e: (-done[e], e))


def experiment_label(row: dict) -> str:
    """'hidden 128, 10 epochs, adam lr 0.0005, batch 64, ...' from one run of it."""
    return spec_label(row["spec_json"])


def grid_tables(layout: Layout) -> list[tuple[str, Table]]:
    """One table per experiment: L × σ rows, one column per seed (done / running / failed /
    diverged). Runs that differ in anything but L, σ and seed are never counted together."""
    running, now = _running(layout), time.time()
    rows = run_rows(layout)  # with the rows of a train still running
    if not rows and not running:
        return []
    order = experiments(rows)
    tables = []
    for eid in order:
        mine = [r for r in rows if r["experiment_id"] == eid]
        ids = {r["run_id"] for r in mine}
        live = [
            _live(cell, now)
            for rid, cell in running.items()
            if rid not in ids and cell.get("experiment_id") == eid
        ]
        label = experiment_label(mine[0])
        busy = sum(c["status"] == "running" for c in live)
        headline = (
            f"training grid ({label}): {len(mine)} cells on disk, "
            f"{sum(r['status'] == 'done' for r in mine)} done, {busy} running, "
            f"{len(live) - busy} queued"
        )
        tables.append((headline, _grid(mine + live)))
    others = [
        _live(cell, now) for cell in running.values() if cell.get("experiment_id") not in order
    ]
    if others:
        tables.append((f"training grid: {len(others)} cells in flight", _grid(others)))
    return tables


def _grid(cells_: list[dict]) -> Table:
    cells: dict[tuple, dict[int, tuple[str, str]]] = defaultdict(dict)
    seeds: set[int] = set()
    for r in cells_:
        mark = MARK.get(r["status"], r["status"])
        cells[(r["L"], r["sigma"])][r["seed"]] = (
            r["status"],
            mark + (f" {r['elapsed']}" if r.get("elapsed") else ""),
        )
        seeds.add(r["seed"])
    table = Table(title="L × σ × seed")
    table.add_column("L")
    table.add_column("σ")
    for seed in sorted(seeds):
        table.add_column(f"seed {seed}")
    for (L, sigma), by_seed in sorted(cells.items()):
        table.add_row(str(L), f"{sigma:g}", *(by_seed.get(s, ("", "·"))[1] for s in sorted(seeds)))
    counts: dict[str, int] = defaultdict(int)
    for by_seed in cells.values():
        for status, _ in by_seed.values():
            counts[status] += 1
    table.caption = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return table


def render_status(out: Path, console: Console | None = None) -> None:
    console = console or Console()
    layout = Layout.at(out)
    table = Table(title=f"rnngen status: {layout.out}")
    table.add_column("item")
    table.add_column("state")
    for item, state in _data_rows(layout):
        table.add_row(item, state)
    console.print(table)
    grids = grid_tables(layout)
    if not grids:
        console.print("training grid: no runs yet (`rnngen train`)")
    for headline, table in grids:
        console.print(headline)
        console.print(table)
