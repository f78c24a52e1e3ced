"""`rnngen status`: a report of what is on disk (read-only; needs no Prefect or Ray)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rnngen.layout import Layout


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
    for name, path in (("embed summary", layout.embed_summary), ("spectrum", layout.spectrum),
                       ("runs", layout.runs), ("bounds", layout.bounds)):
        rows.append((name, str(path) if path.is_file() else "absent"))
    return rows


def render_status(out: Path, console: Console | None = None) -> None:
    console = console or Console()
    layout = Layout.at(out)
    table = Table(title=f"rnngen status: {layout.out}")
    table.add_column("item")
    table.add_column("state")
    for item, state in _data_rows(layout):
        table.add_row(item, state)
    console.print(table)
