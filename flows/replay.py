"""Flow `replay`: retrain a few committed cells into a scratch folder and judge them.

The cells are chosen by a fixed rule (rnngen.replay.RULE), trained by the training
stage's own step from their recorded specs (same run_ids) into `scratch`, and compared
with the committed rows and weights. The committed folder is only read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from rnngen import replay as R
from rnngen.errors import DataError, UserError
from rnngen.layout import Layout
from rnngen.settings import TrainSettings
from rnngen.specs import RunSpec
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import labelled, run_name
from rnngen_tasks.corpus import corpus_pointer
from rnngen_tasks.executor import run_grid
from rnngen_tasks.store import Store
from rnngen_tasks.train import prepare_training


def _link_corpus(corpus_from: str, scratch: Path, data_key: str) -> None:
    """The scratch folder reads the corpus of `corpus_from` (linked, not copied); it must
    be the corpus the committed runs were trained on."""
    source = Layout.at(corpus_from)
    try:
        key = corpus_pointer(corpus_from)["data_key"]
    except DataError as err:
        raise DataError(
            f"{err} replay needs the tokenized corpus the committed runs used (data_key "
            f"{data_key}): run `rnngen embed --out {corpus_from}` first."
        ) from None
    if key != data_key:
        raise DataError(
            f"the corpus in {source.interim} has data_key {key}, the committed runs "
            f"{data_key}: they were tokenized differently. Embed with the runs' settings "
            "into another folder and pass it as --corpus-from."
        )
    target = Layout.at(scratch).interim
    target.mkdir(parents=True, exist_ok=True)
    for item in source.interim.iterdir():
        link = target / item.name
        if not link.exists():
            link.symlink_to(item.resolve())


@flow(
    name="replay",
    log_prints=True,
    flow_run_name=run_name("replay"),
    task_runner=ThreadPoolTaskRunner(max_workers=16),
)
def replay(
    out: str = "data/paper",
    cells: int = 3,
    scratch: str | None = None,
    corpus_from: str = "data",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Retrain `cells` committed cells of `out` into `scratch` (a new temporary folder by
    default), print one line per cell and the verdict."""
    with labelled("replay"):
        return _replay(out, cells, scratch, corpus_from, ray_address)


def _replay(
    out: str, cells: int, scratch: str | None, corpus_from: str, ray_address: str | None
) -> dict[str, Any]:
    store = Store(out)
    runs = store.rows("runs")
    chosen = R.choose_cells(runs, cells)
    if not chosen:
        raise UserError(f"{store.layout.runs} holds no finished run to replay.")
    folder = Path(scratch or tempfile.mkdtemp(prefix="rnngen-replay-"))
    _link_corpus(corpus_from, folder, chosen[0]["data_key"])
    specs = [RunSpec.from_json(r["spec_json"]) for r in chosen]
    print(f"replay: {len(specs)} cells of {out} ({R.RULE}) into {folder}")
    ray_pool.connect(ray_address)
    todo, step = prepare_training(str(folder), specs, "cpu", None, TrainSettings(max_retries=0))
    if step is not None:
        run_grid(step, specs, todo)
    again = {r["run_id"]: r for r in Store(folder).rows("runs")}
    comparisons = []
    for row, spec in zip(chosen, specs, strict=True):
        new = again.get(spec.run_id)
        if new is None or new["status"] != "done":
            raise UserError(f"replaying {spec.run_id} failed: {new and new.get('error')}")
        comparisons.append(
            R.compare(
                row,
                new,
                runs,
                store.load_model(spec),
                Store(folder).load_model(spec),
            )
        )
    for c in comparisons:
        print(c.line())
    verdict = R.overall(comparisons)
    machines = sorted({r.get("hardware") or "unknown" for r in chosen})
    print(f"replay verdict: {verdict} (committed on {'; '.join(machines)})")
    return {"verdict": verdict, "cells": [c.line() for c in comparisons], "scratch": str(folder)}
