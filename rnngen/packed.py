"""A pack of runs trained as one batched model: the cells of a grid that share L and every
setting but σ and seed, stepped together over a leading model axis.

On a GPU one small RNN (hidden 128, batch 64) leaves the device mostly idle; P of them in
one batched recurrence (`torch.bmm` over the model axis; `nn.RNN` cannot be vmapped) keep
it busy. Nothing is shared between members but the arithmetic's shape: each member draws
its own initial weights, data order, training noise and recorded evaluation draw from its
own streams (`seed_streams`, exactly as alone), has its own optimizer state (the optimizers
are elementwise, so one optimizer over the stacked parameters is P independent ones), its
own gradient-norm clipping, and its own divergence detection. A member's result is the
result of training that cell alone, up to floating-point rounding (tested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnngen.corpus import SplitArrays
from rnngen.errors import ParameterError
from rnngen.model import ReLURNN
from rnngen.rows import EpochLog
from rnngen.specs import RunSpec
from rnngen.train import (
    EpochStats,
    TrainResult,
    epoch_batches,
    make_optimizer,
    margins,
    outcome,
    project_rows,
    setup,
)

# Fields that may differ between the members of one pack: the rest is the pack's shape.
MEMBER_FIELDS = frozenset({"sigma", "seed"})


def check_pack(specs: list[RunSpec]) -> None:
    """Refuse a pack whose members differ in anything but σ and seed, naming the field."""
    if not specs:
        raise ParameterError("a pack needs at least one run.")
    first = specs[0].model_dump(exclude=set(MEMBER_FIELDS))
    for spec in specs[1:]:
        other = spec.model_dump(exclude=set(MEMBER_FIELDS))
        for name, value in first.items():
            if other[name] != value:
                raise ParameterError(
                    f"runs of one pack may differ only in σ and seed; run {spec.run_id} has "
                    f"{name} = {other[name]!r} where the pack has {value!r}."
                )
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ParameterError("a pack lists the same run twice.")


class PackedReLURNN(nn.Module):
    """P copies of eq. (1) over a leading model axis: U (P, m, d), W (P, m, m), V (P, k, m)."""

    def __init__(self, members: list[ReLURNN]) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.stack([m.U.detach() for m in members]).clone())
        self.W = nn.Parameter(torch.stack([m.W.detach() for m in members]).clone())
        self.V = nn.Parameter(torch.stack([m.V.detach() for m in members]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y_L of every member: x (P, B, L, d) -> logits (P, B, k), h_0 = 0."""
        P, B, L, d = x.shape
        # U x_t for all t in one batched product, as nn.RNN does for the input projection
        ux = torch.bmm(x.reshape(P, B * L, d), self.U.transpose(1, 2)).reshape(P, B, L, -1)
        Wt = self.W.transpose(1, 2)
        h = torch.relu(ux[:, :, 0])
        for t in range(1, L):
            h = torch.relu(ux[:, :, t] + torch.bmm(h, Wt))
        return torch.bmm(h, self.V.transpose(1, 2))

    def copy_into(self, p: int, model: ReLURNN) -> ReLURNN:
        """Member p's weights written into `model` (an eq. (1) module of the same shape)."""
        with torch.no_grad():
            for name in ("U", "W", "V"):
                getattr(model, name).copy_(getattr(self, name)[p])
        return model


def _clip_members(model: PackedReLURNN, max_norm: float) -> None:
    """Each member's gradient scaled as torch.nn.utils.clip_grad_norm_ scales one model's:
    by max_norm / (its total norm + 1e-6) when that is below 1."""
    grads = [p.grad for p in (model.U, model.W, model.V) if p.grad is not None]
    squares = torch.stack([(g.reshape(g.shape[0], -1) ** 2).sum(dim=1) for g in grads])
    norms = torch.sqrt(squares.sum(dim=0))
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))


def _pack_epoch(
    model: PackedReLURNN,
    opt: torch.optim.Optimizer,
    specs: list[RunSpec],
    batches: list,
    alive: torch.Tensor,
) -> list[EpochStats]:
    """One epoch of every member: losses, running noisy accuracies. A member whose batch
    loss turns non-finite is marked dead (`alive`, in place) from that batch on, as a run
    alone stops before the step that would spread it; the others go on."""
    spec = specs[0]
    P = len(specs)
    device = model.U.device
    loss_sum = torch.zeros(P, dtype=torch.float64, device=device)
    right = torch.zeros(P, dtype=torch.float64, device=device)
    n = 0
    for parts in zip(*batches, strict=True):  # one (idx, x, y) per member, same shapes
        x = torch.stack([xp for _, xp, _ in parts])
        y = torch.stack([yp for _, _, yp in parts])
        logits = model(x)
        losses = (
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            .reshape(P, -1)
            .mean(dim=1)
        )
        alive &= torch.isfinite(losses)
        if not bool(alive.any()):
            break
        opt.zero_grad(set_to_none=True)
        torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
        if spec.clip_grad_norm is not None:
            _clip_members(model, spec.clip_grad_norm)
        opt.step()
        if spec.w_row_sum_max is not None:
            project_rows(model.W, spec.w_row_sum_max)
        with torch.no_grad():
            batch = y.shape[1]
            loss_sum += torch.where(alive, losses.detach().double(), 0.0) * batch
            right += (
                (
                    margins(logits.detach().reshape(-1, logits.shape[-1]), y.reshape(-1)).reshape(
                        P, -1
                    )
                    > 0
                )
                .sum(dim=1)
                .double()
            )
            n += batch
    with torch.no_grad():
        finite = torch.stack(
            [torch.isfinite(p.reshape(P, -1)).all(dim=1) for p in (model.U, model.W, model.V)]
        ).all(dim=0)
        alive &= finite
    loss = (loss_sum / max(n, 1)).tolist()
    accuracy = (right / max(n, 1)).tolist()
    return [
        EpochStats(loss[p], accuracy[p]) if bool(alive[p]) else EpochStats(math.nan, math.nan)
        for p in range(P)
    ]


def train_pack(
    specs: list[RunSpec],
    train: SplitArrays,
    test: SplitArrays,
    embeddings: np.ndarray,
    *,
    on_epoch: Callable[[int, EpochLog], None] | None = None,
) -> list[TrainResult]:
    """Train the pack's runs together; one TrainResult per spec, in order, each what
    `train_model(spec, ...)` would return up to rounding. `on_epoch(member, log)` hears
    every member's epochs."""
    check_pack(specs)
    began = time.perf_counter()
    runs, table = [], None
    for spec in specs:  # each member seeded and initialised exactly as alone
        streams, member_table, member, monitor = setup(spec, train, test, embeddings)
        table = member_table if table is None else table  # one table on the device
        runs.append((streams, member, monitor))
    assert table is not None
    model = PackedReLURNN([member for _, member, _ in runs])
    opt = make_optimizer(specs[0], model.parameters())
    alive = torch.ones(len(specs), dtype=torch.bool, device=model.U.device)
    histories: list[list[EpochLog]] = [[] for _ in specs]
    diverged: list[int | None] = [None] * len(specs)
    fit_seconds = 0.0
    for epoch in range(1, specs[0].epochs + 1):
        start = time.perf_counter()
        batches = [
            epoch_batches(train, table, spec, streams)
            for spec, (streams, _, _) in zip(specs, runs, strict=True)
        ]
        stats = _pack_epoch(model, opt, specs, batches, alive)
        trained = time.perf_counter()
        fit_seconds += trained - start
        for p, (spec, (_, member, monitor)) in enumerate(zip(specs, runs, strict=True)):
            if diverged[p] is not None:
                continue
            if math.isnan(stats[p].loss):
                diverged[p] = epoch
                continue
            measured = time.perf_counter()
            train_acc, test_acc = monitor.accuracies(
                model.copy_into(p, member), table, spec.eval_batch_size
            )
            histories[p].append(
                EpochLog(
                    epoch,
                    stats[p].loss,
                    stats[p].accuracy_noisy,
                    train_acc,
                    test_acc,
                    len(monitor.train),
                    trained - start,
                    time.perf_counter() - measured,
                )
            )
            if on_epoch is not None:
                on_epoch(p, histories[p][-1])
        if not bool(alive.any()):
            break
    elapsed = time.perf_counter() - began
    return [
        outcome(
            spec,
            model.copy_into(p, member),
            (train, test, table),
            streams,
            histories[p],
            diverged[p],
            (elapsed, fit_seconds),
        )
        for p, (spec, (streams, member, _)) in enumerate(zip(specs, runs, strict=True))
    ]
