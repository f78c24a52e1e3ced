"""What recording one finished cell costs as a grid grows: the store's fragments against
rewriting the whole table after every cell (what runs.parquet cost before the store).

For N cells (10 and 2,000 by default) of synthetic runs rows, each cell is recorded in
turn into an empty folder, timing every record; the per-cell cost is the mean over the
last 10 records (when the table holds ~N rows). The compaction at the end of the stage is
timed too. Ratios are against the same measurement at the smallest N, in this run.

    python -m bench.bench_store [--cells 10 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rnngen import schemas
from rnngen.io import write_parquet
from rnngen_tasks.store import Store

LAST = 10  # records averaged at the end of each grid


def _row(i: int) -> dict:
    return {
        "run_id": f"{i:016x}",
        "group_id": f"{i // 5:016x}",
        "experiment_id": "0" * 16,
        "L": 100,
        "sigma": (i % 5) / 10,
        "seed": i // 5,
        "data_key": "synthetic",
        "hidden": 128,
        "epochs": 10,
        "status": "done",
        "train_error_noisy": 0.1,
        "train_error_clean": 0.1,
        "test_error_clean": 0.17,
        "gen_error": 0.07,
        "clean_gap": 0.07,
        "test_accuracy": 0.83,
        "seconds": 120.0,
        "spec_json": "{}" * 200,
    }


def _fragments(folder: Path, cells: int) -> tuple[float, float]:
    store, spent = Store(folder), []
    for i in range(cells):
        t0 = time.perf_counter()
        store.append("runs", [_row(i)], {})
        spent.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    store.compact("runs", {})
    compact = time.perf_counter() - t0
    assert len(store.rows("runs")) == cells
    return sum(spent[-LAST:]) / min(LAST, cells), compact


def _rewrite(folder: Path, cells: int) -> float:
    rows, spent, path = [], [], folder / "results" / "runs.parquet"
    for i in range(cells):
        t0 = time.perf_counter()
        rows.append(_row(i))
        write_parquet(schemas.to_table(rows, schemas.RUNS), path, {})
        spent.append(time.perf_counter() - t0)
    return sum(spent[-LAST:]) / min(LAST, cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10, 2000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as warm:  # first-call costs (provenance, imports)
        _fragments(Path(warm), 2)
        _rewrite(Path(warm), 2)
    base_frag = base_rewrite = None
    print(f"{'cells':>6} {'fragment/cell':>14} {'×(first)':>9} {'compact':>9} "
          f"{'rewrite/cell':>13} {'×(first)':>9}")  # fmt: skip
    for cells in args.cells:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            frag, compact = _fragments(Path(a), cells)
            rewrite = _rewrite(Path(b), cells)
        base_frag, base_rewrite = base_frag or frag, base_rewrite or rewrite
        print(
            f"{cells:>6} {frag * 1e3:>11.2f} ms {frag / base_frag:>8.2f}× {compact:>7.2f} s "
            f"{rewrite * 1e3:>10.2f} ms {rewrite / base_rewrite:>8.2f}×"
        )


if __name__ == "__main__":
    main()
