"""The `certify` flow on a tiny real grid: one row per cell, the certificate identity,
disjoint parts, the report and figure of a certificates-only folder, reruns."""

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rnngen import pacbayes as PB
from rnngen.layout import Layout
from rnngen_flows.certify import certify
from rnngen_flows.figures import figures
from rnngen_flows.report import report

pytestmark = pytest.mark.integration

TINY = {"hidden": 6, "epochs": 1, "n_train": 400, "n_test": 200, "eval_batch_size": 100}
FAST = {"m": 20, "posterior_epochs": 1, "select_draws": 2, "draws_per_pass": 5}


def test_certify_rows_identity_report_and_rerun(prefect_harness, ray_local, corpus_out):
    out = str(corpus_out)
    counts = certify(
        out=out, lengths=[4], sigmas=[0.0, 0.2], seeds=[0], overrides=TINY, settings=FAST
    )
    assert counts == {"cells": 2, "skipped": 0, "done": 2, "not_done": 0}
    rows = pq.read_table(Layout.at(out).certificates).to_pylist()
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == "done" and r["n_overlap"] == 0
        assert r["n_prior"] + r["n_bound"] == 400
        assert r["prior_ids_digest"] != r["bound_ids_digest"]
        # the two-step certificate, exactly as the row's columns state it
        mc = PB.kl_inv_upper(r["emp_error_mc"], math.log(2 / r["delta_mc"]) / r["m"])
        budget = (r["kl"] + math.log(2 * math.sqrt(r["n_bound"]) / r["delta"])) / r["n_bound"]
        assert r["certificate"] == pytest.approx(PB.kl_inv_upper(mc, budget), abs=1e-12)
        assert r["emp_error_bound"] >= r["emp_error_mc"]
        assert 0 <= r["test_error_stochastic"] <= 1 and r["git_commit"] is not None
    figures(out=out)
    assert (Layout.at(out).figures / "certificates.png").is_file()
    text = Path(report(out=out)).read_text()
    assert "## A non-vacuous certificate" in text and "certified cells" in text
    again = certify(
        out=out, lengths=[4], sigmas=[0.0, 0.2], seeds=[0], overrides=TINY, settings=FAST
    )
    assert again["skipped"] == 2 and again["done"] == 0
