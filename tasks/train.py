"""Prefect task of the training stage: the (L, σ, seed) grid fanned out over Ray.

Finished outputs are the completion markers: a run counts as done when its row is in
`results/runs.parquet` (written atomically) and its weights are in `models/<run_id>.npz`.
A rerun skips those; a half-written file from a killed run is never visible under its
final name, so it is never read as done.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from rnngen.corpus import SplitArrays
from rnngen.glove import load_glove
from rnngen.io import atomic_path, read_parquet, table_from_rows, write_parquet
from rnngen.layout import Layout
from rnngen.model import save_weights
from rnngen.specs import RunSpec
from rnngen.train import spec_splits
from tasks import ray_pool
from tasks.data import load_corpus

FINISHED = ("done", "diverged")
RUN_COLUMNS = ("run_id", "L", "sigma", "seed", "hidden", "epochs", "train_error_noisy",
               "test_error_clean", "gen_error", "test_accuracy", "status", "seconds")


# --------------------------------------------------------------------------- worker side


_SPLITS: dict[tuple, tuple[SplitArrays, SplitArrays]] = {}


def _splits(spec: RunSpec, table: pa.Table, pad_id: int) -> tuple[SplitArrays, SplitArrays]:
    """The spec's padded id matrices, cached per worker process across cells."""
    key = (spec.data_key, spec.L, spec.n_train, spec.n_test)
    if key not in _SPLITS:
        if len(_SPLITS) >= 3:
            _SPLITS.clear()
        _SPLITS[key] = spec_splits(table, pad_id, spec)
    return _SPLITS[key]


@lru_cache(maxsize=1)
def _embeddings(glove_path: str | None) -> np.ndarray:
    return load_glove(glove_path).table


def run_cell(payload: dict[str, Any], table: pa.Table) -> dict[str, Any]:
    """Train one cell inside a Ray worker; returns its row and its weights (no file I/O, so
    it works the same on a cluster whose nodes do not share the driver's disk)."""
    from rnngen.train import train_model

    spec = RunSpec.from_json(payload["spec"])
    _maybe_inject_failure(spec, payload.get("inject"))
    embeddings = _embeddings(payload["glove"])
    train, test = _splits(spec, table, embeddings.shape[0] - 1)
    result = train_model(spec, train, test, embeddings)
    return {"row": result.to_row(), "weights": result.weights}


def _maybe_inject_failure(spec: RunSpec, inject: dict | None) -> None:
    """Fault injection for the test suite (env RNNGEN_FAIL_RUN_IDS on the driver); off by
    default. Each attempt is logged to RNNGEN_FAIL_LOG so tests can count the retries."""
    if inject and spec.run_id in inject["run_ids"]:
        if inject.get("log"):
            with open(inject["log"], "a") as fh:
                fh.write(f"{spec.run_id}\n")
        raise RuntimeError(f"injected failure for run {spec.run_id}")


def _injection() -> dict | None:
    ids = [i for i in os.environ.get("RNNGEN_FAIL_RUN_IDS", "").split(",") if i]
    return {"run_ids": ids, "log": os.environ.get("RNNGEN_FAIL_LOG")} if ids else None


# --------------------------------------------------------------------------- driver side


def read_runs(out: str) -> list[dict[str, Any]]:
    path = Layout.at(out).runs
    return read_parquet(path, required=RUN_COLUMNS).to_pylist() if path.is_file() else []


def _spec_columns(spec: RunSpec) -> dict[str, Any]:
    fields = spec.model_dump()
    return {"run_id": spec.run_id, "group_id": spec.group_id, **fields,
            "spec_json": spec.to_json()}


class RunsWriter:
    """Keeps runs.parquet and the `running` state file up to date as cells finish."""

    def __init__(self, out: str, specs: list[RunSpec]) -> None:
        self.layout = Layout.at(out)
        self.rows = {r["run_id"]: r for r in read_runs(out)}
        self.running = {s.run_id: {"L": s.L, "sigma": s.sigma, "seed": s.seed,
                                   "since": time.time()} for s in specs}
        self._write_state()

    def record(self, spec: RunSpec, row: dict[str, Any]) -> None:
        self.rows[spec.run_id] = _spec_columns(spec) | row
        write_parquet(table_from_rows(sorted(self.rows.values(), key=_order), RUN_COLUMNS),
                      self.layout.runs, {"stage": "train"})
        self.running.pop(spec.run_id, None)
        self._write_state()

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "running": self.running}
        with atomic_path(self.layout.results / "train_state.json") as tmp:
            tmp.write_text(json.dumps(state))

    def close(self) -> None:
        self.running = {}
        self._write_state()


def _order(row: dict[str, Any]) -> tuple:
    return (row["L"], row["sigma"], row["seed"], row["run_id"])


def pending_specs(out: str, specs: list[RunSpec]) -> list[RunSpec]:
    """Specs whose run is not finished on disk (row done/diverged AND weights present)."""
    layout = Layout.at(out)
    rows = {r["run_id"]: r for r in read_runs(out)}
    return [s for s in specs if not (rows.get(s.run_id, {}).get("status") in FINISHED and (
        rows[s.run_id]["status"] == "diverged" or (layout.models / f"{s.run_id}.npz").is_file()))]


@task(name="train-grid", cache_policy=NO_CACHE)
def train_grid(out: str, specs: list[RunSpec], resources: dict[str, float] | None = None,
               max_retries: int = 2) -> dict[str, int]:
    """Train every pending spec over Ray; one progress line per finished cell."""
    todo = pending_specs(out, specs)
    counts = {"total": len(specs), "skipped": len(specs) - len(todo), "done": 0,
              "diverged": 0, "failed": 0}
    if not todo:
        print(f"train: all {len(specs)} cells already finished")
        return counts
    corpus = load_corpus(out)
    writer = RunsWriter(out, todo)
    payloads = [{"spec": s.to_json(), "glove": corpus.meta.get("glove"), "inject": _injection()}
                for s in todo]
    by_payload = {id(p): s for p, s in zip(payloads, todo, strict=True)}
    started = time.perf_counter()

    def on_done(payload: dict, result: dict | None, error: BaseException | None) -> None:
        spec = by_payload[id(payload)]
        if error is None:
            row = result["row"]
            if row["status"] == "done":
                save_weights(writer.layout.models / f"{spec.run_id}.npz", result["weights"],
                             spec.to_json())
            row |= {"error": None, "attempts": None}
        else:
            row = {"status": "failed", "error": _error_text(error), "seconds": None}
        writer.record(spec, row)
        counts[row["status"]] += 1
        finished = counts["done"] + counts["diverged"] + counts["failed"]
        print(f"[{finished}/{len(todo)}] L={spec.L} σ={spec.sigma} seed={spec.seed} "
              f"run {spec.run_id}: {row['status']}" + (
                  f", test acc {row['test_accuracy']:.3f}, gen err {row['gen_error']:+.3f}"
                  if row["status"] == "done" else "") +
              f" ({time.perf_counter() - started:.0f} s elapsed)")

    try:
        ray_pool.fan_out(run_cell, payloads, shared=(corpus.table,),
                         resources=resources or {"CPU": 1},
                         max_retries=max_retries, on_done=on_done)
    except BaseException:
        # The first error is the one to report: on a full or read-only disk, writing the
        # state file fails again, and that second error must not hide the first.
        with contextlib.suppress(OSError):
            writer.close()
        raise
    writer.close()
    return counts


def _error_text(error: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    return text[-2000:]
