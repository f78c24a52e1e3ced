"""The ranking over several output folders together: each model once, the axes that vary
across the pool, and clear errors for folders without measures."""

import json

import pytest

from rnngen import measures as M
from rnngen.errors import DataError
from rnngen_tasks import measures as T

MEASURE = "param_count"  # any measure with a reference


def _run(run_id: str, sigma: float, seed: int, hidden: int, gap: float) -> dict:
    spec = {"L": 100, "sigma": sigma, "seed": seed, "hidden": hidden, "data_key": "k"}
    return {
        "run_id": run_id,
        "status": "done",
        "spec_json": json.dumps(spec),
        "clean_gap": gap,
        "gen_error": gap,
    }


class FakeStore:
    """Store.rows for two folders held in memory."""

    folders: dict[str, dict[str, list[dict]]] = {}

    def __init__(self, out: str) -> None:
        self.tables = self.folders[out]

    def rows(self, name: str) -> list[dict]:
        return self.tables[name]


@pytest.fixture
def two_folders(monkeypatch):
    # folder a varies σ at hidden 8; folder b varies hidden at σ 0 and holds a copy of a1
    a_runs = [_run(f"a{i}{s}", 0.1 * i, s, 8, 0.1 * i + 0.01 * s) for i in range(3) for s in (0, 1)]
    b_runs = [_run(f"b{h}{s}", 0.0, s, h, h / 100 + 0.01 * s) for h in (16, 32) for s in (0, 1)]
    copy = {**a_runs[1], "clean_gap": 99.0, "gen_error": 99.0}  # the same run_id as a01
    b_runs.append(copy)

    def rows(runs):
        # the measure equals each model's own target, except on the copy (-5 against 99)
        return [
            {
                "run_id": r["run_id"],
                "measure": MEASURE,
                "status": "ok",
                "value": -5.0 if r is copy else r["clean_gap"],
            }
            for r in runs
        ]

    FakeStore.folders = {
        "/x/a": {"runs": a_runs, "measures": rows(a_runs)},
        "/x/b": {"runs": b_runs, "measures": rows(b_runs)},
    }
    monkeypatch.setattr(T, "Store", FakeStore)
    return a_runs, b_runs


def test_pooled_ranking_counts_each_run_once_and_scores_the_pooled_axes(two_folders):
    a_runs, b_runs = two_folders
    rows = T.pooled_rows("/x/a", ["/x/b"], n_resamples=20)
    gap = [r for r in rows if r["target"] == "clean_gap" and r["measure"] == MEASURE]
    assert len(gap) == 1
    row = gap[0]
    assert row["scope"] == "pooled: a, b"
    # 6 models of a, 4 new ones of b; b's copy of a01 is left out
    assert row["n_models"] == 10
    assert set(json.loads(row["axes"])) == {"hidden", "sigma"}
    # the measure equals the target on every model counted: τ = Ψ = 1 (the copy, with
    # measure -5 and target 99, would break this if it were counted)
    assert row["tau"] == pytest.approx(1.0) and row["psi"] == pytest.approx(1.0)
    assert row["reference"] == M.INFO[MEASURE].reference


def test_a_pool_folder_without_measures_is_named(tmp_path):
    out, other = tmp_path / "out", tmp_path / "other"
    (other / "results").mkdir(parents=True)
    with pytest.raises(DataError, match="other.*rnngen measures --out FOLDER"):
        T.check_pool(str(out), [str(other)])
    # the folder itself and repeats are dropped from its own pool
    assert T.check_pool(str(out), []) == []


def test_the_report_shows_the_folder_ranking_and_the_pooled_one(two_folders):
    from types import SimpleNamespace

    import pyarrow as pa

    from rnngen import report

    here = T.ranking_rows(
        FakeStore("/x/a").rows("runs"), FakeStore("/x/a").rows("measures"), T.THIS_FOLDER, 20
    )
    rows = here + T.pooled_rows("/x/a", ["/x/b"], n_resamples=20)
    text = "\n".join(
        report.measures_section(SimpleNamespace(ranking=pa.Table.from_pylist(rows), measures=None))
    )
    assert "## Which measure tracks generalization?" in text
    assert "### Over every model of a, b" in text and "(10 models;" in text
    assert "**Pooled verdict.** 1 of 1 measures reach Ψ > 0" in text


def test_the_pool_is_recorded_relative_to_the_folder(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from rnngen.layout import Layout

    written = {}

    class Recording(FakeStore):
        def replace(self, name, rows, meta):
            written["meta"] = meta

    for name in ("a", "b"):
        (tmp_path / name / "results").mkdir(parents=True)
        for table in ("measures", "runs"):
            pq.write_table(pa_table(), Layout.at(tmp_path / name).results / f"{table}.parquet")
    empty = {"runs": [], "measures": []}
    FakeStore.folders = {str(tmp_path / "a"): empty, str(tmp_path / "b"): empty}
    monkeypatch.setattr(T, "Store", Recording)
    T.rank_folder(str(tmp_path / "a"), 10, pool=[str(tmp_path / "b")])
    assert written["meta"]["pool"] == ["../b"]


def pa_table():
    import pyarrow as pa

    return pa.table({"x": [1]})
