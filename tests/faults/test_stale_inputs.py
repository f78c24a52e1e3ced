"""Inputs that go bad after rows were computed: a corrupt model file, a NaN λ_min, other
settings, weights of extreme size. Each fails or recomputes its own rows, names the
cause, and loses no finished row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnngen.layout import Layout
from rnngen.weights import load_weights, save_weights
from rnngen_tasks.store import Store
from tests.faults.conftest import BASE_SEEDS
from tests.faults.harness import (
    grid_args,
    grid_ids,
    line_with,
    report,
    rows_lost,
    run_cli,
    write_spectrum_row,
)

pytestmark = pytest.mark.faults


def _bounds(out: Path) -> dict[str, list[dict]]:
    return {k[0]: v for k, v in Store(out).by_unit("bounds").items()}


def _runs(out: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in Store(out).rows("runs")}


def test_a_corrupt_model_file_fails_its_rows_and_train_retrains_it(
    trained_out, fault_env, tmp_path, record_property
):
    bad, *good = grid_ids(trained_out, BASE_SEEDS)
    write_spectrum_row(trained_out, 1e-3)
    path = Layout.at(trained_out).models / f"{bad}.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped inside the compressed weights
    path.write_bytes(bytes(data))
    before = _runs(trained_out)
    run = run_cli(["bounds", "--out", str(trained_out)], fault_env, tmp_path / "bounds.log")
    assert run.proc.returncode == 0, run.tail()
    rows = _bounds(trained_out)
    (row,) = rows[bad]
    assert row["status"] == "failed" and str(path) in row["reason"]
    assert all(r["status"] == "ok" for g in good for r in rows[g])
    train = run_cli(
        ["train", "--out", str(trained_out), *grid_args(BASE_SEEDS)],
        fault_env,
        tmp_path / "train.log",
    )
    assert train.proc.returncode == 0, train.tail()
    aside = list(path.parent.glob(f"{bad}.npz.bad-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(data)  # kept, never deleted
    load_weights(path)  # retrained: a good file again
    after = _runs(trained_out)
    assert after[bad]["status"] == "done"
    report(
        record_property,
        fault="a corrupt model file (one byte flipped)",
        injected="models/<run_id>.npz with one byte of its compressed weights flipped; "
        "`rnngen bounds`, then `rnngen train`",
        message=line_with(train.output(), "Moved to") or row["reason"],
        rows_lost=rows_lost({k: v for k, v in before.items() if k != bad}, after),
    )
    again = run_cli(["bounds", "--out", str(trained_out)], fault_env, tmp_path / "again.log")
    assert again.proc.returncode == 0, again.tail()
    assert all(r["status"] == "ok" for rs in _bounds(trained_out).values() for r in rs)


def test_rows_of_stale_inputs_or_other_settings_are_computed_again(
    trained_out, fault_env, tmp_path, record_property
):
    ids = grid_ids(trained_out, BASE_SEEDS)
    write_spectrum_row(trained_out, float("nan"))
    run = run_cli(["bounds", "--out", str(trained_out)], fault_env, tmp_path / "nan.log")
    assert run.proc.returncode == 0, run.tail()
    for run_id in ids:
        (row,) = _bounds(trained_out)[run_id]
        assert row["status"] == "skipped" and "not a finite positive number" in row["reason"]
    write_spectrum_row(trained_out, 1e-3)  # the spectrum fixed: every model computed now
    fixed = run_cli(["bounds", "--out", str(trained_out)], fault_env, tmp_path / "fixed.log")
    assert fixed.proc.returncode == 0, fixed.tail()
    assert "3 computed" in fixed.text()
    assert all(r["status"] == "ok" for rs in _bounds(trained_out).values() for r in rs)
    other = run_cli(
        ["bounds", "--out", str(trained_out), "--delta", "0.01", "--alpha", "1", "2"],
        fault_env,
        tmp_path / "delta.log",
    )
    assert other.proc.returncode == 0, other.tail()
    rows = [r for rs in _bounds(trained_out).values() for r in rs]
    assert {r["delta_total"] for r in rows} == {0.01} and {r["alpha"] for r in rows} == {1.0, 2.0}
    report(
        record_property,
        fault="stale rows: a NaN λ_min later fixed, then other δ and α",
        injected="spectrum.parquet with λ_min NaN, `rnngen bounds`; λ_min fixed, `rnngen "
        "bounds`; `rnngen bounds --delta 0.01 --alpha 1 2`",
        message=line_with(other.output(), "computed") or other.tail(1),
        rows_lost=0,
    )


def test_weights_of_extreme_size_give_non_finite_rows_not_ok_ones(
    trained_out, fault_env, tmp_path, record_property
):
    big, *_ = grid_ids(trained_out, BASE_SEEDS)
    write_spectrum_row(trained_out, 1e-3)
    path = Layout.at(trained_out).models / f"{big}.npz"
    weights, spec = load_weights(path)
    save_weights(path, {k: np.asarray(v) * 1e30 for k, v in weights.items()}, spec)
    run = run_cli(["bounds", "--out", str(trained_out)], fault_env, tmp_path / "big.log")
    assert run.proc.returncode == 0, run.tail()
    rows = _bounds(trained_out)[big]
    assert rows and all(r["status"] == "non_finite" for r in rows)
    assert all("first non-finite input" in r["reason"] for r in rows)
    assert not any(r["alpha_best"] for r in rows)
    report(
        record_property,
        fault="weights of extreme size (× 1e30)",
        injected="models/<run_id>.npz with every weight × 1e30; `rnngen bounds`",
        message=rows[0]["reason"],
        rows_lost=0,
    )
