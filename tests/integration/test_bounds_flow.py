"""The `bounds` and `figures` flows on a tiny real grid, and their bad-input handling."""

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rnngen import bounds as B
from rnngen.layout import Layout
from rnngen.weights import load_weights, save_weights
from rnngen_flows.bounds import bounds
from rnngen_flows.figures import figures
from rnngen_flows.report import report
from rnngen_flows.spectrum import spectrum
from rnngen_flows.train import train

pytestmark = pytest.mark.integration

TINY = {"hidden": 6, "epochs": 1, "n_train": 300, "n_test": 200, "eval_batch_size": 100}


@pytest.fixture
def trained(prefect_harness, ray_local, corpus_out):
    out = str(corpus_out)
    train(out=out, lengths=[4, 5], sigmas=[0.0, 0.2], seeds=[0], overrides=TINY)
    spectrum(out=out, lengths=[4], n_train=1000)  # L=5 deliberately has no spectrum row
    return out


def test_bounds_rows_terms_and_reasons(trained):
    out = trained
    counts = bounds(out=out, delta=0.05)
    assert counts["models"] == 4 and counts["ok"] == 2 and counts["not_computed"] == 2
    rows = pq.read_table(Layout.at(out).bounds).to_pylist()
    assert {r["alpha"] for r in rows if r["status"] == "ok"} == set(B.DEFAULT_ALPHA_GRID)
    assert {r["alpha_rule"] for r in rows if r["status"] == "ok"} == {B.DEFAULT_ALPHA_RULE}
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["L"] for r in skipped} == {5}
    assert all("no spectrum row for L=5" in r["reason"] for r in skipped)
    ok = [r for r in rows if r["status"] == "ok"]
    lam = pq.read_table(Layout.at(out).spectrum).to_pylist()[0]["lambda_min"]
    for run_id in {r["run_id"] for r in ok}:
        mine = [r for r in ok if r["run_id"] == run_id]
        assert sum(r["alpha_best"] for r in mine) == 1
        assert all(r["delta"] == pytest.approx(0.05 / len(mine)) for r in mine)
        best = min(mine, key=lambda r: r["bound_thm3"])
        assert best["alpha_best"]
        for r in mine:
            assert r["lambda_min"] == lam and r["n"] == 300
            assert r["confidence_term"] == pytest.approx(B.confidence_term(r["delta"], 300))
            assert r["bound_thm3"] == pytest.approx(
                r["margin_loss"] + r["complexity_term"] + r["noise_term"] + r["confidence_term"]
            )
            assert r["bound_thm2"] == pytest.approx(
                r["indicator_loss_clean"] + r["complexity_term_thm2"] + r["confidence_term"]
            )
            if r["beta_W"] >= 1:
                assert r["bound_thm2_remark6"] is None
    # Independent recomputation of β's from the saved weights.
    weights, _ = load_weights(Layout.at(out).models / f"{ok[0]['run_id']}.npz")
    assert ok[0]["beta_W"] == pytest.approx(np.abs(weights["W"]).sum(axis=1).max())
    assert ok[0]["beta_U"] == pytest.approx(np.abs(weights["U"]).sum(axis=1).max())
    # Rerun: models done are skipped; figures draw from the Parquet files alone.
    again = bounds(out=out)
    assert again["skipped"] == 2 and again["ok"] == 0
    paths = figures(out=out)
    # L = 4, 5: not the paper's lengths, so one gen_error figure holds both
    png = next(Path(p) for p in paths if p.endswith("figures/gen_error.png"))
    drawn_at = png.stat().st_mtime_ns
    assert figures(out=out) == paths and png.stat().st_mtime_ns == drawn_at  # not redrawn
    png.unlink()
    assert figures(out=out) == paths and png.is_file()  # an output went missing: redrawn
    tau = pq.read_table(Layout.at(out).results / "kendall_tau.parquet").to_pylist()
    assert {"bound_thm3", "bound_thm2"} <= {r["quantity"] for r in tau}
    # The report: from the Parquet files, written once, then only checked.
    path = Path(report(out=out))
    text = path.read_text()
    assert "## Did it reproduce?" in text and "| 4 | generalization error (paper) |" in text
    written = path.stat().st_mtime_ns
    assert report(out=out) == str(path) and path.stat().st_mtime_ns == written


def test_foreign_model_file_is_reported_and_others_proceed(trained):
    out = trained
    runs = [r for r in pq.read_table(Layout.at(out).runs).to_pylist() if r["L"] == 4]
    victim, other = runs[0], runs[1]
    model = Layout.at(out).models / f"{victim['run_id']}.npz"
    weights, _ = load_weights(Layout.at(out).models / f"{other['run_id']}.npz")
    save_weights(model, weights, other["spec_json"])  # the weights of another run
    bounds(out=out)
    rows = pq.read_table(Layout.at(out).bounds).to_pylist()
    bad = [r for r in rows if r["run_id"] == victim["run_id"]]
    assert len(bad) == 1 and bad[0]["status"] == "failed"
    assert "holds the weights of another run" in bad[0]["reason"]
    assert any(r["run_id"] == other["run_id"] and r["status"] == "ok" for r in rows)
    model.write_bytes(b"\x80\x04not a weight file")  # e.g. a pickle dropped in models/
    Layout.at(out).bounds.unlink()
    bounds(out=out)
    rows = pq.read_table(Layout.at(out).bounds).to_pylist()
    bad = [r for r in rows if r["run_id"] == victim["run_id"]]
    assert "not a readable weight file" in bad[0]["reason"] and str(model) in bad[0]["reason"]
    assert not any(isinstance(v, float) and math.isnan(v) for r in bad for v in r.values())


def test_torch_statistics_give_the_numpy_rows(trained):
    """The bounds' default path (float64 torch on the model's device, here the CPU) against
    the numpy reference, on real models and data: every term to 1e-10 relative."""
    out = trained
    bounds(out=out)
    torch_rows = pq.read_table(Layout.at(out).bounds).to_pylist()
    Layout.at(out).bounds.unlink()
    bounds(out=out, device="numpy")
    numpy_rows = pq.read_table(Layout.at(out).bounds).to_pylist()
    assert len(torch_rows) == len(numpy_rows) > 2
    for t, n in zip(torch_rows, numpy_rows, strict=True):
        assert (t["run_id"], t["alpha"], t["status"]) == (n["run_id"], n["alpha"], n["status"])
        for name in B.TERM_COLUMNS:
            if isinstance(n[name], float) and math.isfinite(n[name]):
                assert t[name] == pytest.approx(n[name], rel=1e-10, abs=1e-300), name
            else:
                assert t[name] == n[name] or (t[name] != t[name] and n[name] != n[name]), name
