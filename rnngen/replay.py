"""Replaying committed cells: which to retrain, and how to judge what comes back.

A run's identity (run_id) is its settings and data, not its machine: retrained elsewhere,
the same run_id may round differently (MKL and ATen pick code paths by CPU). A replay
retrains a few committed cells and compares them with what is committed:

- **identical**: the weights are equal bit for bit (so every number is);
- **within seed noise**: accuracy and generalization error each differ by no more than
  twice the seed-to-seed standard deviation at that (L, σ) -- the spread a reader already
  accepts between seeds;
- **differs**: more than that.

The verdict of a replay is the worst of its cells'.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnngen.errors import ParameterError

VERDICTS = ("identical", "within seed noise", "differs")
NOISE_MULTIPLE = 2.0  # differences up to this many seed standard deviations are noise

RULE = (
    "one cell per L at the smallest σ and the smallest seed, then the next seed at each L, "
    "and so on, up to --cells"
)


def choose_cells(runs: Sequence[Mapping[str, Any]], count: int) -> list[Mapping[str, Any]]:
    """`count` finished runs chosen by `RULE` (the order is fixed by the data alone)."""
    if count < 1:
        raise ParameterError(f"--cells must be a positive number of cells, got {count}.")
    done = [r for r in runs if r["status"] == "done"]
    by_length: dict[int, list[Mapping[str, Any]]] = {}
    for row in sorted(done, key=lambda r: (r["L"], r["sigma"], r["seed"], r["run_id"])):
        by_length.setdefault(row["L"], []).append(row)
    smallest = {
        L: [r for r in rows if r["sigma"] == rows[0]["sigma"]] for L, rows in by_length.items()
    }
    chosen: list[Mapping[str, Any]] = []
    depth = 0
    while len(chosen) < count and any(depth < len(rows) for rows in smallest.values()):
        for L in sorted(smallest):
            if depth < len(smallest[L]) and len(chosen) < count:
                chosen.append(smallest[L][depth])
        depth += 1
    return chosen


def seed_std(runs: Sequence[Mapping[str, Any]], row: Mapping[str, Any], column: str) -> float:
    """The standard deviation over seeds of `column` among runs of `row`'s group (same
    spec but the seed); NaN with fewer than two seeds."""
    values = [
        r[column]
        for r in runs
        if r["group_id"] == row["group_id"] and r["status"] == "done" and r[column] is not None
    ]
    return statistics.stdev(values) if len(values) > 1 else float("nan")


@dataclass(frozen=True)
class Comparison:
    """One replayed cell against its committed row."""

    run_id: str
    L: int
    sigma: float
    seed: int
    accuracy: tuple[float, float]  # (committed, replayed)
    gen_error: tuple[float, float]
    accuracy_std: float  # over seeds at this (L, σ), committed
    gen_error_std: float
    same_weights: bool
    verdict: str

    def line(self) -> str:
        (a0, a1), (g0, g1) = self.accuracy, self.gen_error
        return (
            f"L={self.L} σ={self.sigma:g} seed={self.seed} ({self.run_id}): test accuracy "
            f"{a0:.4f} -> {a1:.4f} (Δ {a1 - a0:+.4f}, seed std {self.accuracy_std:.4f}); gen "
            f"error {g0:+.4f} -> {g1:+.4f} (Δ {g1 - g0:+.4f}, seed std "
            f"{self.gen_error_std:.4f}); weights {'equal' if self.same_weights else 'differ'}: "
            f"{self.verdict}"
        )


def compare(
    committed: Mapping[str, Any],
    replayed: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    committed_weights: Mapping[str, np.ndarray] | None,
    replayed_weights: Mapping[str, np.ndarray] | None,
) -> Comparison:
    """Judge one replayed cell (see the module's verdicts)."""
    same = (
        committed_weights is not None
        and replayed_weights is not None
        and all(
            np.array_equal(committed_weights[k], replayed_weights[k]) for k in committed_weights
        )
    )
    acc = (committed["test_accuracy"], replayed["test_accuracy"])
    gen = (committed["gen_error"], replayed["gen_error"])
    acc_std = seed_std(runs, committed, "test_accuracy")
    gen_std = seed_std(runs, committed, "gen_error")
    if same:
        verdict = "identical"
    elif replayed["status"] == "done" and all(
        abs(b - a) <= NOISE_MULTIPLE * s for (a, b), s in ((acc, acc_std), (gen, gen_std))
    ):
        verdict = "within seed noise"
    else:
        verdict = "differs"
    return Comparison(
        committed["run_id"],
        committed["L"],
        committed["sigma"],
        committed["seed"],
        acc,
        gen,
        acc_std,
        gen_std,
        same,
        verdict,
    )


def overall(comparisons: Sequence[Comparison]) -> str:
    """The worst verdict of the cells ('identical' < 'within seed noise' < 'differs')."""
    if not comparisons:
        raise ParameterError("no cell was replayed")
    return max((c.verdict for c in comparisons), key=VERDICTS.index)
