"""The committed study (data/paper and the other profiles' folders): each REPORT.md is
exactly what `rnngen report` writes from the committed Parquet files, and the results hold
what the report claims they hold."""

import pyarrow.parquet as pq
import pytest

from rnngen.io import read_metadata
from rnngen.report import render
from rnngen_tasks.report import report_inputs
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

FOLDERS = {
    "paper": 75,
    "paper-long": 15,
    "sigma-wide": 72,
    "constrained": 15,
    "constrained-099": 15,
    "fit": 35,
    "zoo": 108,
}


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_the_committed_report_is_what_the_command_writes(name):
    folder = ROOT / "data" / name
    committed = (folder / "REPORT.md").read_text(encoding="utf-8")
    assert render(report_inputs(str(folder))) == committed


@pytest.mark.parametrize(("name", "cells"), sorted(FOLDERS.items()))
def test_the_committed_grid_is_complete_and_carries_its_provenance(name, cells):
    results = ROOT / "data" / name / "results"
    runs = pq.read_table(results / "runs.parquet").to_pylist()
    assert len(runs) == cells and all(r["status"] == "done" for r in runs)
    models = {p.stem for p in (ROOT / "data" / name / "models").glob("*.npz")}
    assert models == {r["run_id"] for r in runs}
    history = pq.read_table(results / "history.parquet").to_pylist()
    assert {h["run_id"] for h in history} == models
    for table in ("runs", "history", "spectrum", "bounds"):
        prov = read_metadata(results / f"{table}.parquet")["provenance"]
        assert len(prov["git_commit"]) == 40 and prov["written_at"] and prov["versions"]["torch"]


def test_the_readme_verdict_table_is_the_committed_results():
    from rnngen_tasks.report import readme_verdicts

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_verdicts(ROOT / "data") in readme, (
        "README.md's verdict table differs from data/: run `python -m rnngen_tasks.report`"
    )
