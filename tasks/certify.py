"""The certify stage: a PAC-Bayes-kl certificate for each cell of a grid (rnngen.certify).

Each unit is one cell (a RunSpec: L, σ, seed and the training recipe), certified in one
Ray task from the corpus alone: the prior mean is trained on the prior part of the
training set, the posterior on the bound part, the certificate computed, and only then
the test set read. One row per cell in results/certificates.parquet; a cell is done when
its row is 'done' under the same settings (`settings_id`) and code version.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from rnngen import schemas
from rnngen.certify import CertifySettings, certify_cell
from rnngen.corpus import select_split
from rnngen.glove import GLOVE_DIM
from rnngen.provenance import machine_fields
from rnngen.resources import Request, train_cell_bytes
from rnngen.specs import RunSpec
from rnngen.train import spec_splits
from rnngen_tasks import ray_pool
from rnngen_tasks.corpus import load_corpus, split_sizes
from rnngen_tasks.store import Store, Table, register

register(Table("certificates", schemas.CERTIFICATES, ("run_id",), ("L", "sigma", "seed", "run_id")))


def certify_remote(
    payload: dict[str, Any], table: pa.Table, embeddings: np.ndarray
) -> dict[str, Any]:
    """Worker side: one cell's certificate row. The test split is built only when
    rnngen.certify asks for it, after the certificate."""
    torch.set_num_threads(1)
    spec: RunSpec = payload["spec"]
    pad = embeddings.shape[0] - 1
    train, _ = spec_splits(table, pad, spec.model_copy(update={"n_test": 2}))
    ids = None
    if spec.n_train is None:  # the whole split: name each row by its review
        ids = select_split(table, "train").column("review_index").to_numpy()
    send = payload.get("progress")

    def test_loader():
        return spec_splits(table, pad, spec)[1]

    def on_stage(name: str) -> None:
        if send is not None:
            send(spec.run_id, "stage", f"certify: {name}")

    try:
        row = certify_cell(
            spec, train, embeddings, payload["settings"], test_loader,
            review_ids=ids, on_stage=on_stage,
        )  # fmt: skip
    finally:
        if send is not None:
            send.flush()
    return row | machine_fields()


class CertifyStep:
    """The certify stage as a step of the grid executor: one unit per cell."""

    stage = "certify"

    def __init__(
        self, out: str, specs: list[RunSpec], settings: CertifySettings, max_retries: int = 0
    ) -> None:
        self.out, self.store, self.settings = out, Store(out), settings
        self.units, self.max_retries = specs, max_retries
        self.cancelled = threading.Event()
        self.refs: tuple = ()
        self.relay: ray_pool.ProgressRelay | None = None
        self.split_sizes = (0, 0)

    def key(self, spec: RunSpec) -> str:
        return spec.run_id

    def name(self, spec: RunSpec) -> str:
        return f"certify L={spec.L} σ={spec.sigma:g} seed={spec.seed}"

    def group(self, spec: RunSpec) -> int:
        return spec.L

    def pending(self) -> list[RunSpec]:
        have = {k[0]: rows[0] for k, rows in self.store.by_unit("certificates").items()}
        return [
            s
            for s in self.units
            if not (
                (row := have.get(s.run_id)) is not None
                and row["status"] == "done"
                and row.get("settings_id") == self.settings.settings_id
            )
        ]

    def request(self, spec: RunSpec) -> Request:
        n_train, n_test = self.split_sizes
        memory = train_cell_bytes(
            n_train=min(spec.n_train or n_train, n_train),
            n_test=min(spec.n_test or n_test, n_test),
            L=spec.L,
            d=GLOVE_DIM,
            hidden=spec.hidden,
            batch_size=spec.batch_size,
            eval_batch_size=spec.eval_batch_size,
            members=self.settings.draws_per_pass,
        )
        return Request(1, 0.0, memory)

    def prepare(self, todo: list[RunSpec]) -> None:
        self.split_sizes = split_sizes(self.out)
        worst = max(todo, key=lambda s: self.request(s).memory)
        ray_pool.check_request(
            self.request(worst),
            "certified cell",
            f"L={worst.L}, hidden {worst.hidden}, {self.settings.draws_per_pass} networks "
            "evaluated at once",
            "Use a smaller --draws-per-pass or a node with more memory.",
        )
        corpus = load_corpus(self.out)
        self.refs = ray_pool.share(corpus.table, corpus.embeddings)
        self.relay = ray_pool.ProgressRelay()

    def compute(self, spec: RunSpec, attempt: int) -> dict[str, Any]:
        from prefect import get_run_logger

        logger = get_run_logger()
        assert self.relay is not None
        self.relay.listen(spec.run_id, lambda kind, text: logger.info(text))
        try:
            payload = {"spec": spec, "settings": self.settings, "progress": self.relay.sender()}
            return ray_pool.run_remote(
                certify_remote,
                payload,
                *self.refs,
                request=self.request(spec),
                name=self.name(spec),
                max_retries=self.max_retries,
                cancelled=self.cancelled,
            )
        finally:
            self.relay.forget(spec.run_id)

    def record(self, spec: RunSpec, row: dict[str, Any], attempt: int) -> tuple[str, str]:
        self.store.append("certificates", [row], self.meta)
        if row["status"] != "done":
            return row["status"], f"{row['status']}: {row['reason']}"
        return "done", (
            f"certificate {row['certificate']:.4f} (KL {row['kl']:.1f}, empirical "
            f"{row['emp_error_mc']:.4f}); stochastic test error {row['test_error_stochastic']:.4f}"
        )

    def record_failure(self, spec: RunSpec, error: str, attempt: int) -> None:
        where = {"run_id": spec.run_id, "L": spec.L, "sigma": spec.sigma, "seed": spec.seed}
        row = where | {
            "status": "failed",
            "reason": error,
            "settings_id": self.settings.settings_id,
        }
        self.store.append("certificates", [row], self.meta)

    def compact(self) -> None:
        if self.relay is not None:
            self.relay.close()
        self.store.compact("certificates", self.meta)

    @property
    def meta(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict()}
