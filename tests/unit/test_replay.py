"""Which committed cells a replay retrains, and how it judges them."""

import numpy as np
import pytest

from rnngen import replay as R
from rnngen.errors import ParameterError


def _run(L, sigma, seed, acc=0.8, gen=0.05, group=None):
    return {
        "run_id": f"{L}-{sigma}-{seed}",
        "group_id": group or f"{L}-{sigma}",
        "L": L,
        "sigma": sigma,
        "seed": seed,
        "status": "done",
        "test_accuracy": acc,
        "gen_error": gen,
    }


RUNS = [_run(L, s, seed) for L in (100, 200) for s in (0.0, 0.2) for seed in (0, 1, 2)]


def test_one_cell_per_length_at_the_smallest_sigma_then_the_next_seed():
    chosen = R.choose_cells(RUNS, 3)
    assert [(r["L"], r["sigma"], r["seed"]) for r in chosen] == [
        (100, 0.0, 0),
        (200, 0.0, 0),
        (100, 0.0, 1),
    ]
    assert len(R.choose_cells(RUNS, 100)) == 6  # every smallest-σ cell, no more
    with pytest.raises(ParameterError, match="--cells"):
        R.choose_cells(RUNS, 0)


def test_verdicts():
    runs = [_run(100, 0.0, s, acc=0.80 + 0.01 * s, gen=0.05) for s in range(3)]
    runs[1]["gen_error"], runs[2]["gen_error"] = 0.06, 0.07  # seed std 0.01 for both
    w = {"U": np.ones((2, 2)), "W": np.eye(2), "V": np.ones((2, 2))}
    same = R.compare(runs[0], runs[0], runs, w, {k: v.copy() for k, v in w.items()})
    assert same.verdict == "identical" and same.accuracy_std == pytest.approx(0.01)
    other = {k: v + 1e-9 for k, v in w.items()}
    close = R.compare(runs[0], runs[0] | {"test_accuracy": 0.815}, runs, w, other)
    assert close.verdict == "within seed noise"
    far = R.compare(runs[0], runs[0] | {"test_accuracy": 0.83}, runs, w, other)
    assert far.verdict == "differs" and "Δ +0.0300" in far.line()
    assert R.overall([same, close]) == "within seed noise"
    assert R.overall([same, close, far]) == "differs"
