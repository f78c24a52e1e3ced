"""The train, measures and certify phases of bench/bench_gpu_study.py (no Ray, no Prefect).

Each phase takes one L, drives the pure layer directly and returns its rows (the columns
of the study's own tables, rnngen/schemas.py) and what it measured, with the comparison
against the CPU or one-at-a-time reference where there is one:

- train: every σ × seed of one L as one pack (rnngen.packed) against one cell trained
  alone (samples/s, and how far the alone cell's weights and accuracy land from its packed
  twin's);
- measures: rnngen.measures.compute_measures per model, its forward pass over all training
  sequences at once and its flatness search on the device; checked against the measures
  stage's own CPU recipe (tasks/measures.py) on a prefix of the training set;
- certify: rnngen.certify.certify_cell per cell on the device (it follows spec.device),
  checked by the certificate identity of its own row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from rnngen import measures as M
from rnngen.corpus import SplitArrays, split_arrays
from rnngen.model import ReLURNN, model_with
from rnngen.provenance import code_fields, machine_fields
from rnngen.specs import RunSpec
from rnngen.train import embed, embedding_tensor, evaluate, margins, split_batches
from rnngen.weights import WEIGHT_KEYS

Weights = dict[str, np.ndarray]


def provenance_columns() -> dict[str, Any]:
    """Where and with what code a row was computed (the study's provenance columns)."""
    return {**code_fields(), **machine_fields(), "finished_at": datetime.now(UTC)}


def splits(corpus, spec: RunSpec) -> tuple[SplitArrays, SplitArrays]:
    """The (train, test) splits of a spec, as rnngen.train.spec_splits cuts them."""
    return (
        split_arrays(corpus.table, "train", spec.L, corpus.pad_id, limit=spec.n_train),
        split_arrays(corpus.table, "test", spec.L, corpus.pad_id, limit=spec.n_test),
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------- train


def _spec_columns(spec: RunSpec) -> dict[str, Any]:
    """The spec's columns of a runs row (as tasks/train.py writes them)."""
    return {
        "run_id": spec.run_id,
        "group_id": spec.group_id,
        "experiment_id": spec.experiment_id,
        **spec.model_dump(),
        "spec_json": spec.to_json(),
    }


def _weights_gap(a: Weights, b: Weights) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in WEIGHT_KEYS)


def train_phase(
    corpus, specs: list[RunSpec], device: str, reference: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train `specs` (one L) as one pack; with `reference`, the first cell alone too."""
    from rnngen.packed import train_pack
    from rnngen.train import train_model

    train, test = splits(corpus, specs[0])
    summary: dict[str, Any] = {"cells": len(specs), "n_train": len(train), "n_test": len(test)}
    alone = None
    if reference:  # first a tiny run: kernels, autotuning, the first step's lazy imports
        warm = RunSpec(**{**specs[0].model_dump(), "epochs": 1, "n_train": 16, "n_test": 16})
        train_model(warm, *splits(corpus, warm), corpus.embeddings)
        sync(device)
        t0 = time.perf_counter()
        alone = train_model(specs[0], train, test, corpus.embeddings)
        sync(device)
        summary["alone_seconds"] = time.perf_counter() - t0
    sync(device)
    t0 = time.perf_counter()
    results = train_pack(specs, train, test, corpus.embeddings)
    sync(device)
    summary["seconds"] = time.perf_counter() - t0
    epochs = sum(r.epochs_run for r in results)
    summary["samples_per_second"] = epochs * len(train) / summary["seconds"]
    summary["status"] = {s: sum(r.status == s for r in results) for s in ("done", "diverged")}
    if alone is not None:
        first = results[0]
        summary["alone_samples_per_second"] = (
            alone.epochs_run * len(train) / summary["alone_seconds"]
        )
        summary["max_abs_weight_diff"] = _weights_gap(alone.weights, first.weights)
        summary["test_accuracy_diff"] = abs(alone.test_accuracy - first.test_accuracy)
    rows = []
    prov = provenance_columns()
    for spec, result in zip(specs, results, strict=True):
        rows.append(_spec_columns(spec) | result.to_row() | {"attempts": 1} | prov)
    summary["results"] = results
    return rows, summary


# -------------------------------------------------------------------------------- measures


class DeviceSubsetError:
    """rnngen.measures.subset_error on a device: the 0-1 error (margin <= 0) of given U, W, V
    on fixed inputs x (n, L, d) float32 with labels y, all n in one forward pass."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.models: dict[tuple[int, int, int], ReLURNN] = {}

    @torch.no_grad()
    def __call__(self, weights: Mapping[str, Any]) -> float:
        w = {k: np.asarray(weights[k], dtype=np.float64) for k in WEIGHT_KEYS}
        (m, d), k = w["U"].shape, w["V"].shape[0]
        model = self.models.get((m, d, k))
        if model is None:  # its own init draws are overwritten; the global RNG is untouched
            model = ReLURNN(d, m, k, generator=torch.Generator().manual_seed(0))
            model = self.models[m, d, k] = model.to(self.x.device).eval()
        for key in WEIGHT_KEYS:
            getattr(model, key).copy_(torch.from_numpy(w[key]))
        wrong = margins(model(self.x), self.y) <= 0.0
        return int(wrong.sum()) / max(len(self.y), 1)


def input_norm_max(x: torch.Tensor, rows: int) -> float:
    """B_x = max over sequences and steps of ‖x_t‖₂ (float64), `rows` sequences at a time."""
    best = 0.0
    for start in range(0, x.shape[0], rows):
        part = x[start : start + rows].double()
        best = max(best, float(part.square().sum(dim=2).amax().sqrt()))
    return best


def _flatness(
    spec: RunSpec, weights: Weights, error: Callable, n_train: int, settings, d: int
) -> list[dict[str, Any]]:
    """The flatness rows, as the study's measures stage makes them."""
    init = M.initial_weights(spec, d, weights["V"].shape[0])
    return M.flatness_rows(
        spec.run_id, weights, init, error, n_train,
        steps=settings.flatness_steps, draws=settings.flatness_draws, seed=spec.seed,
    )  # fmt: skip


def device_measures(
    spec: RunSpec,
    weights: Weights,
    x: torch.Tensor,
    y: torch.Tensor,
    bx: float,
    bounds: list[dict[str, Any]] | None,
    settings,
    rows: int,
) -> list[dict[str, Any]]:
    """One model's measures with its forward pass and flatness on x's device; x (n, L, d)
    float32 and y are the model's whole clean training set, bx its B_x."""
    began = time.perf_counter()
    n, _, d = x.shape
    model = model_with(weights).to(x.device)
    t0 = time.perf_counter()
    parts = ((x[s : s + rows], y[s : s + rows]) for s in range(0, n, rows))
    train_margins = evaluate(model, parts).margins
    forward = time.perf_counter() - t0
    stats = M.InputStats(n=n, L=x.shape[1], B_x=bx)
    init = M.initial_weights(spec, d, weights["V"].shape[0])
    out = M.compute_measures(
        weights, spec, train_margins, stats, init, bounds, delta=settings.delta
    )
    cost = time.perf_counter() - t0
    flat_cost = None
    if settings.flatness:
        t1 = time.perf_counter()
        k = min(settings.flatness_reviews, n)
        out += _flatness(spec, weights, DeviceSubsetError(x[:k], y[:k]), n, settings, d)
        flat_cost = (time.perf_counter() - t1) / forward
    return _where(out, spec, began, forward, cost, flat_cost)


def cpu_measures(
    spec: RunSpec,
    weights: Weights,
    train: SplitArrays,
    embeddings: np.ndarray,
    bounds: list[dict[str, Any]] | None,
    settings,
) -> list[dict[str, Any]]:
    """The measures stage's own recipe (tasks/measures.py model_measures): float32 forward
    pass on the CPU in eval batches, input statistics in numpy, flatness on the CPU."""
    began = time.perf_counter()
    emb = embedding_tensor(embeddings)
    d = emb.shape[1]
    model = model_with(weights)
    t0 = time.perf_counter()
    train_margins = evaluate(model, split_batches(train, emb, spec.eval_batch_size)).margins
    forward = time.perf_counter() - t0
    stats = M.input_stats(x.numpy() for x, _ in split_batches(train, emb, spec.eval_batch_size))
    init = M.initial_weights(spec, d, weights["V"].shape[0])
    out = M.compute_measures(
        weights, spec, train_margins, stats, init, bounds, delta=settings.delta
    )
    cost = time.perf_counter() - t0
    if settings.flatness:
        k = min(settings.flatness_reviews, len(train))
        error = M.subset_error(embed(train.ids[:k], emb).numpy(), train.labels[:k])
        out += _flatness(spec, weights, error, len(train), settings, d)
    return _where(out, spec, began, forward, cost, None)


def _where(rows, spec, began, forward, cost, flat_cost) -> list[dict[str, Any]]:
    where = {
        "group_id": spec.group_id,
        "experiment_id": spec.experiment_id,
        "L": spec.L,
        "sigma": spec.sigma,
        "seed": spec.seed,
        "seconds": time.perf_counter() - began,
        "forward_seconds": forward,
        "cost_forward_passes": cost / forward if forward > 0 else None,
        "flatness_forward_passes": flat_cost,
    }
    return [row | where for row in rows]


def measures_rel_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[float, int]:
    """(largest relative difference of the values both rate 'ok', measures whose status
    differs) between two models' measure rows."""
    by_name = {r["measure"]: r for r in b}
    worst, differ = 0.0, 0
    for ra in a:
        rb = by_name[ra["measure"]]
        if ra["status"] != rb["status"]:
            differ += 1
        elif ra["status"] == M.OK:
            va, vb = float(ra["value"]), float(rb["value"])
            worst = max(worst, abs(va - vb) / max(abs(va), abs(vb), 1e-300))
    return worst, differ


# --------------------------------------------------------------------------------- certify


def certify_phase(
    corpus, specs: list[RunSpec], settings
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """certify_cell for each spec (its device is spec.device), and the certificate
    identity of each row: certificate == kl⁻¹(kl⁻¹(ê_m, ln(2/δ')/m), (KL + ln(2√n/δ))/n)."""
    from rnngen.certify import certificate_of, certify_cell
    from rnngen.corpus import select_split

    rows, worst = [], 0.0
    t0 = time.perf_counter()
    for spec in specs:
        train, _ = splits(corpus, spec.model_copy(update={"n_test": 2}))
        ids = None
        if spec.n_train is None:  # the whole split: name each row by its review
            ids = select_split(corpus.table, "train").column("review_index").to_numpy()

        def test_loader(spec: RunSpec = spec) -> SplitArrays:
            return splits(corpus, spec)[1]

        row = certify_cell(spec, train, corpus.embeddings, settings, test_loader, review_ids=ids)
        if row["status"] == "done":
            worst = max(worst, abs(certificate_of(row) - row["certificate"]))
        rows.append(row | provenance_columns())
    done = [r for r in rows if r["status"] == "done"]
    summary = {
        "cells": len(rows),
        "done": len(done),
        "seconds": time.perf_counter() - t0,
        "m": done[0]["m"] if done else None,
        "identity_max_abs_diff": worst,
        "certificates": [r["certificate"] for r in done],
        "test_errors": [r["test_error_stochastic"] for r in done],
    }
    return rows, summary
