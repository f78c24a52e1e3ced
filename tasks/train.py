"""The training stage: the (L, σ, seed) grid fanned out over Ray, one executor unit a cell.

Finished outputs are the completion markers: a run counts as done when its row is in the
store's `runs` table and its weights load from `models/<run_id>.npz`. A rerun skips those;
a half-written file from a killed run is never visible under its final name, so it is
never read as done. Each run's per-epoch history goes to the `history` table.

Before any cell is submitted, the device is resolved against the cluster ('auto': its
GPUs if it has any, else its CPUs) and the largest cell's request -- CPU, GPU share and an
estimate of its memory -- is checked against the cluster's nodes: a grid no node can run
is refused in seconds instead of waiting in Ray's queue forever.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from rnngen.corpus import SplitArrays
from rnngen.errors import ParameterError, UserError
from rnngen.glove import GLOVE_DIM
from rnngen.io import atomic_path
from rnngen.layout import Layout
from rnngen.profiles import check_device, get_profile
from rnngen.provenance import hardware, machine_fields
from rnngen.resources import Request, gigabytes, train_cell_bytes
from rnngen.rows import EpochLog
from rnngen.settings import TrainSettings
from rnngen.specs import RunSpec
from rnngen.weights import save_weights
from rnngen_tasks import ray_pool, warm_pool
from rnngen_tasks.artifacts import publish_table
from rnngen_tasks.corpus import load_corpus, split_sizes
from rnngen_tasks.grid import build_grid  # noqa: F401 (the CLI and benches import it here)
from rnngen_tasks.store import Store, pending_specs

FINISHED = ("done", "diverged")


# --------------------------------------------------------------------------- worker side


_SPLITS: dict[tuple, tuple[SplitArrays, SplitArrays]] = {}


def _splits(spec: RunSpec, table: pa.Table, pad_id: int) -> tuple[SplitArrays, SplitArrays]:
    """The spec's padded id matrices, cached per worker process across cells."""
    from rnngen.train import spec_splits

    key = (spec.data_key, spec.L, spec.n_train, spec.n_test)
    if key not in _SPLITS:
        if len(_SPLITS) >= 3:
            _SPLITS.clear()
        _SPLITS[key] = spec_splits(table, pad_id, spec)
    return _SPLITS[key]


def _epoch_reporter(spec: RunSpec, send, rows: int):
    """The function a worker calls after each epoch of `spec`: one line, with an ETA."""
    spent: list[float] = []

    def report(log: EpochLog) -> None:
        spent.append(log.seconds + log.eval_seconds)
        left = sum(spent) / len(spent) * (spec.epochs - log.epoch)
        send(
            spec.run_id,
            "epoch",
            f"epoch {log.epoch}/{spec.epochs}: loss {log.train_loss:.4f}, train acc "
            f"{log.train_accuracy_clean:.3f} (noisy {log.train_accuracy_noisy:.3f}), test acc "
            f"{log.test_accuracy:.3f}, {rows / log.seconds:,.0f} samples/s, ~{left:.0f} s "
            "left in this cell",
        )

    return report


def _packed_result(result) -> dict[str, Any]:
    return {
        "row": result.to_row() | machine_fields(),
        "weights": result.weights,
        "history": [asdict(h) for h in result.history],
    }


def run_cell(payload: dict[str, Any], table: pa.Table, embeddings: np.ndarray) -> dict[str, Any]:
    """Train one cell inside a Ray worker; returns its row, history and weights (no file
    I/O, so it works the same on a cluster whose nodes do not share the driver's disk).
    The corpus' token ids and the embedding table come through Ray's object store, one
    copy per node: workers need no data files of their own."""
    from rnngen.train import train_model

    spec = RunSpec.from_json(payload["spec"])
    send = payload.get("progress") or ray_pool.Sender(None)
    try:
        send(spec.run_id, "start", hardware())
        _maybe_inject_failure(spec, payload.get("inject"))
        train, test = _splits(spec, table, embeddings.shape[0] - 1)
        report = _epoch_reporter(spec, send, len(train))
        return _packed_result(train_model(spec, train, test, embeddings, on_epoch=report))
    finally:
        send.flush()


def run_pack(payload: dict[str, Any], table: pa.Table, embeddings: np.ndarray) -> dict[str, Any]:
    """Train a pack of cells as one batched model inside a Ray worker (rnngen.packed);
    their results by run_id. When the device runs out of memory, the pack is halved and
    each half trained in turn; a single cell that does not fit is an error naming what it
    asked for."""
    specs = [RunSpec.from_json(text) for text in payload["specs"]]
    send = payload.get("progress") or ray_pool.Sender(None)
    try:
        for spec in specs:
            send(spec.run_id, "start", f"{hardware()}, in a pack of {len(specs)}")
            _maybe_inject_failure(spec, payload.get("inject"))
        train, test = _splits(specs[0], table, embeddings.shape[0] - 1)
        return _train_halving(specs, train, test, embeddings, send, payload.get("memory", 0))
    finally:
        send.flush()


def _train_halving(specs, train, test, embeddings, send, memory: int) -> dict[str, Any]:
    import torch

    from rnngen.packed import train_pack

    reports = [_epoch_reporter(spec, send, len(train)) for spec in specs]
    try:
        results = train_pack(
            specs, train, test, embeddings, on_epoch=lambda p, log: reports[p](log)
        )
    except torch.OutOfMemoryError as err:
        if len(specs) == 1:
            raise UserError(
                f"{cell_name(specs[0])} does not fit in its device's memory ({err}); one cell "
                f"was estimated at {gigabytes(memory)}. Use a smaller --batch-size, "
                "--hidden or --eval-batch-size, or a device with more memory."
            ) from None
        torch.cuda.empty_cache()
        half = len(specs) // 2
        return _train_halving(specs[:half], train, test, embeddings, send, memory) | (
            _train_halving(specs[half:], train, test, embeddings, send, memory)
        )
    return {spec.run_id: _packed_result(r) for spec, r in zip(specs, results, strict=True)}


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


@dataclass(frozen=True)
class Placement:
    """Where the cells of a grid run: the resolved device and each cell's request."""

    requested: str
    device: str
    gpu_fraction: float
    split_sizes: tuple[int, int]  # reviews in the corpus' train and test splits
    pack_size: int = 1  # cells trained together as one batched model (resolved, >= 1)

    def request(self, spec: RunSpec, members: int = 1) -> Request:
        """A cell's request (a share of a GPU on cuda), or a pack's (one whole GPU)."""
        n_train = spec.n_train or self.split_sizes[0]
        n_test = spec.n_test or self.split_sizes[1]
        memory = train_cell_bytes(
            n_train=min(n_train, self.split_sizes[0]),
            n_test=min(n_test, self.split_sizes[1]),
            L=spec.L,
            d=GLOVE_DIM,
            hidden=spec.hidden,
            batch_size=spec.batch_size,
            eval_batch_size=spec.eval_batch_size,
            members=members,
        )
        gpus = (
            0.0
            if not self.device.startswith("cuda")
            else (self.gpu_fraction if members == 1 else 1.0)
        )
        return Request(1, gpus, memory)

    def packs(self, specs: list[RunSpec]) -> list[list[RunSpec]]:
        """The cells grouped into packs: same pack_id (all but σ and seed), at most
        pack_size each, in grid order."""
        groups: dict[str, list[RunSpec]] = {}
        for spec in specs:
            # cells that stop at a training accuracy end at epochs of their own: alone
            key = spec.run_id if spec.stop_train_accuracy is not None else spec.pack_id
            groups.setdefault(key, []).append(spec)
        return [
            group[i : i + self.pack_size]
            for group in groups.values()
            for i in range(0, len(group), self.pack_size)
        ]

    def describe(self) -> str:
        why = {
            "auto": "the cluster's GPUs"
            if self.device != "cpu"
            else "the Ray cluster has no GPU, so cells run on CPUs"
        }.get(self.requested, "as asked")
        packs = (
            f"; cells trained in packs of up to {self.pack_size} (one batched model, one GPU each)"
            if self.pack_size > 1
            else ""
        )
        return f"device {self.requested} -> {self.device} ({why}){packs}"


def place(
    out: str, specs: list[RunSpec], requested: str, gpu_fraction: float, pack_size: int = 0
) -> Placement:
    """Resolve the device (and the pack size: 0 = every σ × seed of one L on GPUs, single
    cells on CPUs) against the cluster, and refuse a grid that no node can run: the cell
    with the largest request is checked (CPU, GPU share, memory)."""
    device = ray_pool.resolve_device(check_device(requested))
    if pack_size < 0:
        raise ParameterError(
            f"--pack-size must be 0 (automatic) or a positive number of cells, got {pack_size}."
        )
    size = pack_size or (len(specs) if device.startswith("cuda") else 1)
    placement = Placement(requested, device, gpu_fraction, split_sizes(out), max(size, 1))
    if specs:
        worst = max(
            placement.packs(specs), key=lambda p: placement.request(p[0], members=len(p)).memory
        )
        unit = "training cell" if len(worst) == 1 else f"pack of {len(worst)} training cells"
        ray_pool.check_request(
            placement.request(worst[0], members=len(worst)),
            unit,
            f"L={worst[0].L}, {worst[0].n_train or placement.split_sizes[0]} training reviews, "
            f"batch {worst[0].batch_size}, hidden {worst[0].hidden}, on {placement.device}",
            "Use a smaller --L, --n-train, --batch-size, --hidden or --pack-size, another "
            "--device, or a cluster with a larger node.",
        )
    return placement


def prewarm(placement: Placement, todo: list[RunSpec]) -> None:
    """Before the flow starts: the workers the first cells will run on, warmed (the warm
    workers of `rnngen up` when it has them, else one new worker per cell that can run at
    once: ray_pool.prewarm)."""
    packs = placement.packs(todo)
    request = placement.request(packs[0][0], members=len(packs[0]))
    if warm_pool.pool_for(request)[0] is not None:
        ray_pool.start_mailbox()
    else:
        ray_pool.prewarm(warm_pool.WORKER_MODULES, request, len(packs))


def preflight(
    out: str,
    specs: list[RunSpec],
    device: str | None,
    profile: str,
    ray_address: str | None = None,
    pack_size: int | None = None,
) -> tuple[Placement, list[RunSpec]] | None:
    """Check, before anything else starts, that the cluster can run the grid's unfinished
    cells on `device` (default: the profile's): their placement and the cells; None when
    every cell is finished."""
    todo = pending_specs(out, specs)
    if not todo:
        return None
    prof = get_profile(profile)
    ray_pool.connect(ray_address)
    size = prof.pack_size if pack_size is None else pack_size
    placement = place(out, todo, device or prof.device, prof.gpu_fraction, size)
    return placement, todo


def on_device(spec: RunSpec, device: str) -> RunSpec:
    """The same run (same run_id) placed on `device`."""
    return RunSpec(**{**spec.model_dump(), "device": device})


# --------------------------------------------------------------------------- driver side


def _spec_columns(spec: RunSpec) -> dict[str, Any]:
    fields = spec.model_dump()
    return {
        "run_id": spec.run_id,
        "group_id": spec.group_id,
        "experiment_id": spec.experiment_id,
        **fields,
        "spec_json": spec.to_json(),
    }


class LiveState:
    """`results/train_state.json`: the cells a running `train` has queued or started, read
    by `rnngen status` (a dead process's file is ignored there)."""

    def __init__(self, out: str, specs: list[RunSpec]) -> None:
        self.path = Layout.at(out).train_state
        self.queued = {
            s.run_id: {
                "L": s.L,
                "sigma": s.sigma,
                "seed": s.seed,
                "experiment_id": s.experiment_id,
                "since": time.time(),
                "started": None,
            }
            for s in specs
        }
        self._lock = threading.Lock()
        self._write()

    def started(self, spec: RunSpec) -> None:
        with self._lock:
            if spec.run_id in self.queued:
                self.queued[spec.run_id]["started"] = time.time()
                self._write()

    def finished(self, spec: RunSpec) -> None:
        with self._lock:
            self.queued.pop(spec.run_id, None)
            self._write()

    def close(self) -> None:
        with self._lock:
            self.queued = {}
            self._write()

    def _write(self) -> None:
        state = {"pid": os.getpid(), "running": self.queued}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(state))


def cell_name(spec: RunSpec) -> str:
    """'train L=100 σ=0.2 seed=3': the cell's name in Prefect and in Ray."""
    return f"train L={spec.L} σ={spec.sigma:g} seed={spec.seed}"


class TrainStep:
    """The training stage as a step of the grid executor: one unit per cell. Cells of one
    pack are trained as one Ray task, which the first of them to run submits."""

    stage = "train"

    def __init__(
        self,
        out: str,
        todo: list[RunSpec],
        placement: Placement,
        profile: str | None,
        settings: TrainSettings,
    ) -> None:
        corpus = load_corpus(out)
        self.store, self.placement, self.settings = Store(out), placement, settings
        self.max_retries = settings.max_retries
        self.meta = {
            "profile": profile,
            "device_requested": placement.requested,
            "device": placement.device,
        }
        self.state = LiveState(out, todo)
        self.refs = ray_pool.share(corpus.table, corpus.embeddings)
        self.relay = ray_pool.ProgressRelay()
        self.pool, self.pool_line = warm_pool.pool_for(placement.request(todo[0]))
        self.cancelled = threading.Event()
        self.packs = ray_pool.Shared()
        self.pack_of = {s.run_id: pack for pack in placement.packs(todo) for s in pack}

    def key(self, spec: RunSpec) -> str:
        return spec.run_id

    def name(self, spec: RunSpec) -> str:
        return cell_name(spec)

    def group(self, spec: RunSpec) -> int:
        return spec.L

    def compute(self, spec: RunSpec, attempt: int) -> dict[str, Any]:
        """A cell's result: from its pack, or alone (no pack, or a retry: a cell whose
        pack failed is tried again by itself). Its epochs are logged as they arrive."""
        from prefect import get_run_logger

        logger = get_run_logger()
        spec = on_device(spec, self.placement.device)

        def relayed(kind: str, text: str) -> None:
            if kind == "start":
                self.state.started(spec)
                logger.info(f"started on {text}")
            else:
                logger.info(text)

        self.relay.listen(spec.run_id, relayed)
        try:
            return self._result(spec, attempt)
        finally:
            self.relay.forget(spec.run_id)

    def _result(self, spec: RunSpec, attempt: int) -> dict[str, Any]:
        pack = self.pack_of[spec.run_id]
        common = {"inject": _injection(), "progress": self.relay.sender()}
        if len(pack) == 1 or attempt > 1:
            run = ray_pool.run_remote if self.pool is None else self.pool.run
            return run(
                run_cell,
                common | {"spec": spec.to_json()},
                *self.refs,
                request=self.placement.request(spec),
                name=cell_name(spec),
                max_retries=self.max_retries,
                cancelled=self.cancelled,
            )
        name = f"train pack L={spec.L} ({len(pack)} cells)"
        ref = self.packs.once(
            pack[0].run_id,
            lambda: ray_pool.submit(
                run_pack,
                common
                | {
                    "specs": [s.to_json() for s in pack],
                    "memory": self.placement.request(spec).memory,
                },
                *self.refs,
                name=name,
                max_retries=self.max_retries,
                request=self.placement.request(spec, members=len(pack)),
            ),
        )
        return ray_pool.wait_for(ref, name, self.cancelled)[spec.run_id]

    def record(self, spec: RunSpec, result: dict[str, Any], attempt: int) -> tuple[str, str]:
        spec = on_device(spec, self.placement.device)
        row = result["row"]
        if row["status"] == "done":
            save_weights(self.store.model_path(spec.run_id), result["weights"], spec.to_json())
        self._append(spec, row | {"attempts": attempt}, result["history"])
        summary = row["status"]
        if row["status"] == "done":
            summary += f", test acc {row['test_accuracy']:.3f}, gen err {row['gen_error']:+.3f}"
        return row["status"], summary

    def record_failure(self, spec: RunSpec, error: str, attempt: int) -> None:
        spec = on_device(spec, self.placement.device)
        self._append(spec, {"status": "failed", "error": error, "attempts": attempt}, [])

    def _append(self, spec: RunSpec, row: dict[str, Any], history: list[dict]) -> None:
        if history:  # a failed retry keeps the history of the last attempt that had one
            where = {"run_id": spec.run_id, "L": spec.L, "sigma": spec.sigma, "seed": spec.seed}
            self.store.append("history", [where | h for h in history], self.meta)
        self.store.append("runs", [_spec_columns(spec) | row], self.meta)
        self.state.finished(spec)

    def compact(self) -> None:
        try:
            self.relay.close()
            self.state.close()
        finally:
            self.store.compact("history", self.meta)
            self.store.compact("runs", self.meta)


def prepare_training(
    out: str, specs: list[RunSpec], device: str, profile: str | None, settings: TrainSettings
) -> tuple[list[RunSpec], TrainStep | None]:
    """The unfinished cells placed on the cluster (device resolved, requests checked) and
    the step that trains them; ([], None) when every cell is finished."""
    todo = pending_specs(out, specs)
    if not todo:
        print(f"train: all {len(specs)} cells already finished")
        return [], None
    placement = place(out, todo, device, settings.gpu_fraction, settings.pack_size)
    print(
        f"train: {len(todo)} of {len(specs)} cells to train; {placement.describe()}; each "
        f"cell asks Ray for {placement.request(todo[-1]).describe()}"
    )
    step = TrainStep(out, todo, placement, profile, settings)
    if step.pool_line:
        print(f"train: {step.pool_line}")
    return todo, step


def publish_grid(out: str, specs: list[RunSpec]) -> None:
    """The grid's cells as a table artifact `train-grid` (status, accuracy, errors)."""
    rows = {r["run_id"]: r for r in Store(out).rows("runs")}
    publish_table(
        "train-grid",
        [
            {
                "L": s.L,
                "sigma": s.sigma,
                "seed": s.seed,
                "run_id": s.run_id,
                **{
                    k: rows.get(s.run_id, {}).get(k)
                    for k in (
                        "status",
                        "test_accuracy",
                        "gen_error",
                        "clean_gap",
                        "seconds",
                        "error",
                    )
                },
            }
            for s in specs
        ],
        f"The training grid in {Layout.at(out).out}",
    )
