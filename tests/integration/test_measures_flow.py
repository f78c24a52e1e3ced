"""The `measures` flow on a tiny real grid: every measure per model, the ranking, reruns."""

import json

import pyarrow.parquet as pq
import pytest

from rnngen import measures as M
from rnngen.layout import Layout
from rnngen_flows.bounds import bounds
from rnngen_flows.measures import measures
from rnngen_flows.spectrum import spectrum
from rnngen_flows.train import train

pytestmark = pytest.mark.integration

TINY = {"epochs": 1, "n_test": 200, "eval_batch_size": 100}


@pytest.fixture
def trained(prefect_harness, ray_local, corpus_out):
    out = str(corpus_out)
    for hidden in (4, 6):
        overrides = TINY | {"hidden": hidden, "n_train": 300}
        train(out=out, lengths=[4], sigmas=[0.0, 0.2], seeds=[0, 1], overrides=overrides)
    spectrum(out=out, lengths=[4], n_train=1000)
    bounds(out=out)
    return out


def test_measures_rows_ranking_and_rerun(trained):
    out = trained
    counts = measures(out=out, flatness_reviews=50, n_resamples=50)
    assert counts == {"models": 8, "skipped": 0, "ok": 8, "failed": 0}
    rows = pq.read_table(Layout.at(out).measures).to_pylist()
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["run_id"], []).append(row)
    assert len(by_model) == 8
    for mine in by_model.values():
        assert {r["measure"] for r in mine} == set(M.MEASURE_NAMES)
        assert all(r["reference"] and r["uses"] in M.USES for r in mine)
        assert all(r["git_commit"] is not None and r["finished_at"] is not None for r in mine)
        thm3 = next(r for r in mine if r["measure"] == "tu2020_thm3")
        assert thm3["status"] == "ok" and thm3["value"] > 1  # vacuous, as in the paper's runs
        assert next(r for r in mine if r["measure"] == "param_count")["value"] in (
            4 * 50 + 16 + 8,
            6 * 50 + 36 + 12,
        )
    ranking = pq.read_table(Layout.at(out).ranking).to_pylist()
    assert {r["target"] for r in ranking} == {"clean_gap", "gen_error"}
    gap = [r for r in ranking if r["target"] == "clean_gap"]
    assert [r["rank"] for r in gap] == list(range(1, len(gap) + 1))
    assert set(json.loads(gap[0]["axes"])) <= {"hidden", "sigma"}  # what varies here
    # A rerun computes nothing; other settings recompute every model.
    again = measures(out=out, flatness_reviews=50, n_resamples=50)
    assert again["skipped"] == 8 and again["ok"] == 0
    other = measures(out=out, flatness=False, n_resamples=50)
    assert other["ok"] == 8
    rows = pq.read_table(Layout.at(out).measures).to_pylist()
    assert {r["measure"] for r in rows} == set(M.MEASURE_NAMES) - {
        "pacbayes_init",
        "pacbayes_flatness",
        "pacbayes_mag_flatness",
    }
