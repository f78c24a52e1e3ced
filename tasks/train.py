"""Prefect task of the training stage: the (L, σ, seed) grid fanned out over Ray.

Finished outputs are the completion markers: a run counts as done when its row is in
`results/runs.parquet` (written atomically) and its weights are in `models/<run_id>.npz`.
A rerun skips those; a half-written file from a killed run is never visible under its
final name, so it is never read as done. Each run's per-epoch history goes to
`results/history.parquet`, keyed by run_id.

Before any cell is submitted, the device is resolved against the cluster ('auto': its
GPUs if it has any, else its CPUs) and the largest cell's request -- CPU, GPU share and an
estimate of its memory -- is checked against the cluster's nodes: a grid no node can run
is refused in seconds instead of waiting in Ray's queue forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from rnngen import schemas
from rnngen.corpus import SplitArrays
from rnngen.glove import GLOVE_DIM
from rnngen.io import atomic_path, read_parquet, write_parquet
from rnngen.layout import Layout
from rnngen.model import save_weights
from rnngen.profiles import check_device, get_profile
from rnngen.provenance import hardware, utc_now
from rnngen.resources import Request, train_cell_bytes
from rnngen.specs import RunSpec, expand_grid
from rnngen.train import EpochLog, spec_splits
from tasks import ray_pool
from tasks.data import corpus_pointer, load_corpus

FINISHED = ("done", "diverged")


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


def run_cell(payload: dict[str, Any], table: pa.Table, embeddings: np.ndarray
             ) -> dict[str, Any]:
    """Train one cell inside a Ray worker; returns its row, history and weights (no file
    I/O, so it works the same on a cluster whose nodes do not share the driver's disk).
    The corpus' token ids and the embedding table come through Ray's object store, one
    copy per node: workers need no data files of their own."""
    from rnngen.train import train_model

    spec = RunSpec.from_json(payload["spec"])
    _maybe_inject_failure(spec, payload.get("inject"))
    train, test = _splits(spec, table, embeddings.shape[0] - 1)
    label = f"L={spec.L} σ={spec.sigma:g} seed={spec.seed}"

    def progress(log: EpochLog) -> None:
        print(f"  {label} epoch {log.epoch}/{spec.epochs}: loss {log.train_loss:.4f}, "
              f"train acc {log.train_accuracy_clean:.3f} (noisy {log.train_accuracy_noisy:.3f})"
              f", test acc {log.test_accuracy:.3f}, {len(train) / log.seconds:,.0f} samples/s")

    result = train_model(spec, train, test, embeddings, on_epoch=progress)
    return {"row": result.to_row() | {"hardware": hardware()}, "weights": result.weights,
            "history": [asdict(h) for h in result.history]}


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


# --------------------------------------------------------------------------- the grid


def build_grid(out: str, profile: str = "quick", lengths: list[int] | None = None,
               sigmas: list[float] | None = None, seeds: list[int] | None = None,
               overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """The profile's grid with the caller's overrides; validated before anything runs.

    The specs say device 'cpu' whatever the profile asks: the device is no part of a run's
    identity and is resolved against the cluster only when cells are submitted.
    """
    prof = get_profile(profile)
    base = {**prof.train, **(overrides or {}), "data_key": corpus_pointer(out)["data_key"]}
    check_device(base.pop("device", prof.device))
    sweep = {"L": list(prof.lengths if lengths is None else lengths),
             "sigma": list(prof.sigmas if sigmas is None else sigmas),
             "seed": list(prof.seeds if seeds is None else seeds)}
    return expand_grid(base, sweep)


@dataclass(frozen=True)
class Placement:
    """Where the cells of a grid run: the resolved device and each cell's request."""

    requested: str
    device: str
    gpu_fraction: float
    split_sizes: tuple[int, int]  # reviews in the corpus' train and test splits

    def request(self, spec: RunSpec) -> Request:
        n_train = spec.n_train or self.split_sizes[0]
        n_test = spec.n_test or self.split_sizes[1]
        memory = train_cell_bytes(n_train=min(n_train, self.split_sizes[0]),
                                  n_test=min(n_test, self.split_sizes[1]), L=spec.L,
                                  d=GLOVE_DIM, hidden=spec.hidden, batch_size=spec.batch_size,
                                  eval_batch_size=spec.eval_batch_size)
        return Request(1, self.gpu_fraction if self.device.startswith("cuda") else 0, memory)

    def describe(self) -> str:
        why = {"auto": "the cluster's GPUs" if self.device != "cpu" else
               "the Ray cluster has no GPU, so cells run on CPUs"}.get(self.requested, "as asked")
        return f"device {self.requested} -> {self.device} ({why})"


def split_sizes(out: str) -> tuple[int, int]:
    """Reviews in the corpus' train and test splits (one column read, not the corpus)."""
    path = Layout.at(out).interim / corpus_pointer(out)["corpus"]
    split = pq.read_table(path, columns=["split"]).column("split").cast(pa.string())
    values = split.to_numpy(zero_copy_only=False)
    return int(np.sum(values == "train")), int(np.sum(values == "test"))


def place(out: str, specs: list[RunSpec], requested: str, gpu_fraction: float) -> Placement:
    """Resolve the device against the cluster and refuse a grid that no node can run: the
    cell with the largest request is checked (CPU, GPU share, memory)."""
    placement = Placement(requested, ray_pool.resolve_device(check_device(requested)),
                          gpu_fraction, split_sizes(out))
    if specs:
        worst = max(specs, key=lambda s: placement.request(s).memory)
        ray_pool.check_request(
            placement.request(worst), "training cell",
            f"L={worst.L}, {worst.n_train or placement.split_sizes[0]} training reviews, "
            f"batch {worst.batch_size}, hidden {worst.hidden}, on {placement.device}",
            "Use a smaller --L, --n-train, --batch-size or --hidden, another --device, or a "
            "cluster with a larger node.")
    return placement


def preflight(out: str, specs: list[RunSpec], device: str | None, profile: str,
              ray_address: str | None = None) -> Placement | None:
    """Check, before anything else starts, that the cluster can run the grid's unfinished
    cells on `device` (default: the profile's); None when every cell is finished."""
    todo = pending_specs(out, specs)
    if not todo:
        return None
    prof = get_profile(profile)
    ray_pool.connect(ray_address)
    return place(out, todo, device or prof.device, prof.gpu_fraction)


def on_device(spec: RunSpec, device: str) -> RunSpec:
    """The same run (same run_id) placed on `device`."""
    return RunSpec(**{**spec.model_dump(), "device": device})


# --------------------------------------------------------------------------- driver side


def read_runs(out: str) -> list[dict[str, Any]]:
    path = Layout.at(out).runs
    return read_parquet(path, required=schemas.RUNS).to_pylist() if path.is_file() else []


def _spec_columns(spec: RunSpec) -> dict[str, Any]:
    fields = spec.model_dump()
    return {"run_id": spec.run_id, "group_id": spec.group_id,
            "experiment_id": spec.experiment_id, **fields, "spec_json": spec.to_json()}


class RunsWriter:
    """Keeps runs.parquet, history.parquet and the `running` state file up to date as
    cells finish."""

    def __init__(self, out: str, specs: list[RunSpec], meta: dict[str, Any]) -> None:
        self.layout = Layout.at(out)
        self.meta = {"stage": "train", **meta}
        self.rows = {r["run_id"]: r for r in read_runs(out)}
        history = self.layout.results / "history.parquet"
        self.history = (read_parquet(history, required=schemas.HISTORY).to_pylist()
                        if history.is_file() else [])
        self.running = {s.run_id: {"L": s.L, "sigma": s.sigma, "seed": s.seed,
                                   "experiment_id": s.experiment_id, "since": time.time()}
                        for s in specs}
        self._write_state()

    def record(self, spec: RunSpec, row: dict[str, Any], history: list[dict]) -> None:
        self.rows[spec.run_id] = _spec_columns(spec) | row | {"finished_at": utc_now()}
        if history or row["status"] != "failed":  # a failed retry keeps the last history
            self.history = [h for h in self.history if h["run_id"] != spec.run_id] + [
                {"run_id": spec.run_id, "L": spec.L, "sigma": spec.sigma, "seed": spec.seed,
                 **h} for h in history]
            self.history.sort(key=lambda h: (h["L"], h["sigma"], h["seed"], h["run_id"],
                                             h["epoch"]))
            write_parquet(schemas.to_table(self.history, schemas.HISTORY),
                          self.layout.results / "history.parquet", self.meta)
        write_parquet(schemas.to_table(sorted(self.rows.values(), key=_order), schemas.RUNS),
                      self.layout.runs, self.meta)
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
def train_grid(out: str, specs: list[RunSpec], device: str = "cpu", gpu_fraction: float = 0.25,
               max_retries: int = 2, profile: str | None = None) -> dict[str, int]:
    """Train every pending spec over Ray on `device` ('auto', 'cpu' or 'cuda'); one
    progress line per finished cell. `profile` is recorded in the files' metadata."""
    todo = pending_specs(out, specs)
    counts = {"total": len(specs), "skipped": len(specs) - len(todo), "done": 0,
              "diverged": 0, "failed": 0}
    if not todo:
        print(f"train: all {len(specs)} cells already finished")
        return counts
    placement = place(out, todo, device, gpu_fraction)
    print(f"train: {len(todo)} of {len(specs)} cells to train; {placement.describe()}; each "
          f"cell asks Ray for {placement.request(todo[-1]).describe()}")
    todo = [on_device(s, placement.device) for s in todo]
    corpus = load_corpus(out)
    writer = RunsWriter(out, todo, {"profile": profile, "device_requested": device,
                                    "device": placement.device})
    payloads = [{"spec": s.to_json(), "inject": _injection()} for s in todo]
    by_payload = {id(p): s for p, s in zip(payloads, todo, strict=True)}
    started = time.perf_counter()

    def on_done(payload: dict, result: dict | None, error: BaseException | None) -> None:
        spec = by_payload[id(payload)]
        history: list[dict] = []
        if error is None:
            row, history = result["row"], result["history"]
            if row["status"] == "done":
                save_weights(writer.layout.models / f"{spec.run_id}.npz", result["weights"],
                             spec.to_json())
            row |= {"clean_gap": row["test_error_clean"] - row["train_error_clean"]}
        else:
            row = {"status": "failed", "error": error_text(error)}
        writer.record(spec, row, history)
        counts[row["status"]] += 1
        finished = counts["done"] + counts["diverged"] + counts["failed"]
        elapsed = time.perf_counter() - started
        print(f"[{finished}/{len(todo)}] L={spec.L} σ={spec.sigma:g} seed={spec.seed} "
              f"run {spec.run_id}: {row['status']}" + (
                  f", test acc {row['test_accuracy']:.3f}, gen err {row['gen_error']:+.3f}"
                  if row["status"] == "done" else f" ({row.get('error')})"
                  if row["status"] == "failed" else "") +
              f" ({elapsed:.0f} s elapsed, ~{elapsed / finished * (len(todo) - finished):.0f}"
              " s to go)")

    try:
        ray_pool.fan_out(run_cell, payloads, shared=(corpus.table, corpus.embeddings),
                         resources=lambda p: placement.request(by_payload[id(p)]),
                         max_retries=max_retries, on_done=on_done)
    except BaseException:
        # The first error is the one to report: on a full or read-only disk, writing the
        # state file fails again, and that second error must not hide the first.
        with contextlib.suppress(OSError):
            writer.close()
        raise
    writer.close()
    return counts


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_text(error: BaseException) -> str:
    """One clean sentence naming the cause of a failed cell (the full traceback is in the
    log): a task's own exception as `Type: message`, without Ray's wrapping and colours."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        lines = [ln for ln in _ANSI.sub("", str(error)).splitlines() if ln.strip()]
        text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return _ANSI.sub("", text).strip()[:2000]
