"""`rnngen status`: a report of what is on disk (read-only; needs no Prefect or Ray)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from rnngen.io import read_parquet
from rnngen.layout import Layout

MARK = {"done": "[green]done[/]", "diverged": "[yellow]diverged[/]", "failed": "[red]failed[/]",
        "running": "[cyan]running[/]"}


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
        rows.append(("corpus", f"{state}: data_key {pointer['data_key']} "
                               f"(source {pointer['imdb']['kind']})"))
    else:
        rows.append(("corpus", "absent (run `rnngen embed`)"))
    if layout.spectrum.is_file():
        for r in read_parquet(layout.spectrum).to_pylist():
            value = f"{r['lambda_min']:.4e}" if r["lambda_min"] is not None else "—"
            rows.append((f"spectrum L={r['L']}", f"{r['status']}: λ_min {value} "
                         f"(residual {r['lambda_min_residual']:.1e}, n={r['n']})"))
    else:
        rows.append(("spectrum", "absent (run `rnngen spectrum`)"))
    for name, path in (("bounds", layout.bounds),):
        rows.append((name, f"{pq.read_metadata(path).num_rows} rows in {path}"
                     if path.is_file() else "absent"))
    return rows


def _running(layout: Layout) -> dict[str, dict]:
    """Cells a live training process has in flight (a dead process's list is stale)."""
    path = layout.results / "train_state.json"
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError):
        return {}
    return state.get("running", {})


def grid_table(layout: Layout) -> tuple[str, Table] | None:
    """L × σ rows, one column per seed: done / running / failed / diverged."""
    running = _running(layout)
    rows = read_parquet(layout.runs, required=("run_id", "L", "sigma", "seed", "status")
                        ).select(["run_id", "L", "sigma", "seed", "status"]
                                 ).to_pylist() if layout.runs.is_file() else []
    if not rows and not running:
        return None
    cells: dict[tuple, dict[int, str]] = defaultdict(dict)
    seeds: set[int] = set()
    for r in rows + [dict(cell, status="running") for cell in running.values()]:
        cells[(r["L"], r["sigma"])][r["seed"]] = r["status"]
        seeds.add(r["seed"])
    table = Table(title="training grid (L × σ × seed)")
    table.add_column("L")
    table.add_column("σ")
    for seed in sorted(seeds):
        table.add_column(f"seed {seed}")
    for (L, sigma), by_seed in sorted(cells.items()):
        table.add_row(str(L), f"{sigma:g}", *(MARK.get(by_seed.get(s, ""), "·")
                                             for s in sorted(seeds)))
    counts = defaultdict(int)
    for by_seed in cells.values():
        for status in by_seed.values():
            counts[status] += 1
    table.caption = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return f"training grid: {len(rows)} cells on disk, {len(running)} running", table


def render_status(out: Path, console: Console | None = None) -> None:
    console = console or Console()
    layout = Layout.at(out)
    table = Table(title=f"rnngen status: {layout.out}")
    table.add_column("item")
    table.add_column("state")
    for item, state in _data_rows(layout):
        table.add_row(item, state)
    console.print(table)
    grid = grid_table(layout)
    if grid is None:
        console.print("training grid: no runs yet (`rnngen train`)")
    else:
        headline, table = grid
        console.print(headline)
        console.print(table)
