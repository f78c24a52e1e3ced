"""The `train` flow on a tiny real grid, on local Ray, under prefect_test_harness."""

import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from rnngen import schemas
from rnngen.errors import ParameterError, UserError
from rnngen.io import read_metadata
from rnngen.layout import Layout
from rnngen.weights import load_weights
from rnngen_flows.train import train
from rnngen_tasks.train import build_grid

pytestmark = pytest.mark.integration

TINY = {"hidden": 8, "epochs": 1, "n_train": 200, "n_test": 200, "eval_batch_size": 200}


def test_tiny_grid_writes_rows_and_resumes(prefect_harness, ray_local, corpus_out):
    out = str(corpus_out)
    counts = train(out=out, lengths=[10, 20], sigmas=[0.0, 0.3], seeds=[0], overrides=TINY)
    assert counts == {"total": 4, "skipped": 0, "done": 4, "diverged": 0, "failed": 0}
    rows = pq.read_table(Layout.at(out).runs).to_pylist()
    assert sorted((r["L"], r["sigma"]) for r in rows) == [
        (10, 0.0),
        (10, 0.3),
        (20, 0.0),
        (20, 0.3),
    ]
    specs = build_grid(out, lengths=[10, 20], sigmas=[0.0, 0.3], seeds=[0], overrides=TINY)
    assert {r["run_id"] for r in rows} == {s.run_id for s in specs}
    for r in rows:
        assert r["status"] == "done" and 0 <= r["test_error_clean"] <= 1
        assert r["gen_error"] == pytest.approx(r["test_error_clean"] - r["train_error_noisy"])
        weights, spec_json = load_weights(Layout.at(out).models / f"{r['run_id']}.npz")
        assert weights["W"].shape == (8, 8) and r["run_id"] in {s.run_id for s in specs}
        assert spec_json == r["spec_json"]
    history = pq.read_table(Layout.at(out).results / "history.parquet")
    assert history.schema.equals(schemas.HISTORY, check_metadata=False)
    assert sorted(history.column("run_id").to_pylist()) == sorted(r["run_id"] for r in rows)
    runs_table = pq.read_table(Layout.at(out).runs)
    assert not [f.name for f in runs_table.schema if str(f.type) == "null"]
    prov = read_metadata(Layout.at(out).runs)["provenance"]
    assert prov["flow_run_id"] and prov["git_commit"] and prov["versions"]["ray"]
    assert all(r["device"] == "cpu" and r["hardware"] and r["finished_at"] for r in rows)
    # Second invocation: nothing trained, nothing duplicated.
    again = train(out=out, lengths=[10, 20], sigmas=[0.0, 0.3], seeds=[0], overrides=TINY)
    assert again["skipped"] == 4 and again["done"] == 0
    assert pq.read_table(Layout.at(out).runs).num_rows == 4


def test_a_raising_cell_is_retried_then_failed_while_others_finish(
    prefect_harness, ray_local, corpus_out, monkeypatch, tmp_path
):
    out = str(corpus_out)
    specs = build_grid(out, lengths=[10], sigmas=[0.0, 0.1, 0.2], seeds=[1], overrides=TINY)
    bad = specs[1].run_id
    log = tmp_path / "attempts.log"
    monkeypatch.setenv("RNNGEN_FAIL_RUN_IDS", bad)
    monkeypatch.setenv("RNNGEN_FAIL_LOG", str(log))
    with pytest.raises(UserError, match="1 of 3 training cells failed"):
        train(
            out=out, lengths=[10], sigmas=[0.0, 0.1, 0.2], seeds=[1], overrides=TINY, max_retries=2
        )
    rows = {r["run_id"]: r for r in pq.read_table(Layout.at(out).runs).to_pylist()}
    assert len(rows) == 3 and rows[bad]["status"] == "failed"
    assert "injected failure" in rows[bad]["error"]
    assert log.read_text().split() == [bad] * 3  # one try + two retries
    assert sum(r["status"] == "done" for r in rows.values()) == 2
    # Fixed: the rerun trains only the failed cell and replaces its row.
    monkeypatch.delenv("RNNGEN_FAIL_RUN_IDS")
    counts = train(out=out, lengths=[10], sigmas=[0.0, 0.1, 0.2], seeds=[1], overrides=TINY)
    assert counts["skipped"] == 2 and counts["done"] == 1
    rows = pq.read_table(Layout.at(out).runs).to_pylist()
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigmas": [-0.1]}, "sigma"),
        ({"lengths": [0]}, "'L'"),
        ({"seeds": []}, "seed"),
        ({"sigmas": [0.1, 0.1]}, "twice"),
        ({"overrides": {"optimizer": "adamw"}}, "optimizer"),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(corpus_out, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        build_grid(str(corpus_out), **kwargs)
    assert not Layout.at(corpus_out).runs.exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # no GPU in the local cluster: refused, not queued forever
        ({"lengths": [10], "overrides": {**TINY, "device": "cuda"}}, "has no GPU"),
        # one cell's padded ids alone (50,000 × 100,000 int32) exceed every node's memory
        (
            {"lengths": [100_000], "overrides": {"hidden": 8, "epochs": 1}},
            r"asks Ray for 1 CPU, ~2\d\.\d GB of memory .*no node",
        ),
    ],
)
def test_a_grid_no_node_can_run_is_refused_in_seconds(
    prefect_harness, ray_local, corpus_out, kwargs, match
):
    started = time.perf_counter()
    with pytest.raises(UserError, match=match):
        train(out=str(corpus_out), sigmas=[0.0], seeds=[0], **kwargs)
    assert time.perf_counter() - started < 30
    assert not Layout.at(corpus_out).runs.exists()
    assert not Layout.at(corpus_out).models.exists()


def test_packs_train_like_single_cells_skip_finished_members_and_keep_the_rest(
    prefect_harness, ray_local, corpus_out, tmp_path, monkeypatch
):
    from rnngen.weights import load_weights

    grid = {"lengths": [10], "sigmas": [0.0, 0.3], "overrides": TINY}
    alone = tmp_path / "alone"
    (alone / "interim").mkdir(parents=True)
    for item in (corpus_out / "interim").iterdir():
        (alone / "interim" / item.name).symlink_to(item.resolve())
    train(out=str(alone), seeds=[0, 1], pack_size=1, **grid)
    out = str(corpus_out)
    first = train(out=out, seeds=[0], pack_size=4, **grid)  # one pack of 2
    assert first["done"] == 2
    specs = build_grid(out, seeds=[0, 1], lengths=[10], sigmas=[0.0, 0.3], overrides=TINY)
    bad = specs[3].run_id  # σ = 0.3, seed 1: its pack fails, then it fails alone
    monkeypatch.setenv("RNNGEN_FAIL_RUN_IDS", bad)
    with pytest.raises(UserError, match="1 of 4 training cells failed"):
        train(out=out, seeds=[0, 1], pack_size=4, max_retries=1, **grid)  # a pack of 2 new
    rows = {r["run_id"]: r for r in pq.read_table(Layout.at(out).runs).to_pylist()}
    assert rows[bad]["status"] == "failed" and "injected failure" in rows[bad]["error"]
    for spec in specs[:3]:  # packed (or retried alone) equals trained alone
        assert rows[spec.run_id]["status"] == "done"
        mine, _ = load_weights(Layout.at(out).models / f"{spec.run_id}.npz")
        theirs, _ = load_weights(Layout.at(alone).models / f"{spec.run_id}.npz")
        for name in ("U", "W", "V"):
            np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-4, atol=1e-6)
