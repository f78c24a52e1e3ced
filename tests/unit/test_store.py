"""The results store: fragments read as rows at once, compaction, unit replacement,
provenance on every row, and a wrong-typed column refused before any work."""

from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnngen import schemas
from rnngen.errors import DataError
from rnngen.io import write_parquet
from rnngen.layout import Layout
from rnngen_tasks.store import Store


def _bound(run_id: str, alpha: float, value: float = 1.0) -> dict:
    return {"run_id": run_id, "L": 4, "sigma": 0.0, "seed": 0, "alpha": alpha,
            "bound_thm3": value, "status": "ok"}  # fmt: skip


def test_a_units_rows_are_read_before_and_after_compaction(tmp_path):
    store = Store(tmp_path)
    store.append("bounds", [_bound("a", 1.0), _bound("a", 2.0)], {})
    store.append("bounds", [_bound("b", 1.0)], {})
    assert not Layout.at(tmp_path).bounds.exists()  # nothing rewritten per unit
    assert [(r["run_id"], r["alpha"]) for r in store.rows("bounds")] == [
        ("a", 1.0), ("a", 2.0), ("b", 1.0)
    ]  # fmt: skip
    assert store.compact("bounds", {"stage": "bounds"})
    assert not list(Layout.at(tmp_path).fragments("bounds").glob("*"))
    on_disk = pq.read_table(Layout.at(tmp_path).bounds).to_pylist()
    assert len(on_disk) == 3 and not store.compact("bounds", {})
    # A unit appended again replaces all of its rows (here: one α instead of two).
    store.append("bounds", [_bound("a", 4.0, 9.0)], {})
    assert [(r["run_id"], r["alpha"]) for r in store.rows("bounds")] == [("a", 4.0), ("b", 1.0)]
    store.compact("bounds", {})
    assert len(pq.read_table(Layout.at(tmp_path).bounds)) == 2


def test_every_appended_row_carries_its_provenance(tmp_path):
    store = Store(tmp_path)
    store.append("bounds", [_bound("a", 1.0)], {})
    row = store.rows("bounds")[0]
    assert isinstance(row["finished_at"], datetime) and row["finished_at"].tzinfo is not None
    assert row["cpu_model"] and row["torch_version"] and "git_dirty" in row
    store.compact("bounds", {})
    table = pq.read_table(Layout.at(tmp_path).bounds)
    assert table.schema.field("finished_at").type == pa.timestamp("ms", tz="UTC")


def test_rows_from_another_machine_keep_its_columns_and_this_ones_are_not_read(
    tmp_path, monkeypatch
):
    from rnngen import provenance
    from rnngen_tasks import store as store_module

    assert set(provenance.machine_fields()) == provenance.MACHINE_COLUMNS
    there = {"hardware": "Intel Xeon (16 cores)", "cpu_model": "Intel Xeon",
             "isa_level": "AVX512", "gpu_model": None, "torch_version": "2.13.0"}  # fmt: skip

    def not_here() -> dict:
        raise AssertionError("this machine's columns were read for rows that carry their own")

    monkeypatch.setattr(store_module, "machine_fields", not_here)
    store = Store(tmp_path)
    store.append("bounds", [_bound("a", 1.0) | there], {})
    row = store.rows("bounds")[0]
    assert {k: row[k] for k in there} == there and row["git_commit"] is not None
    with pytest.raises(AssertionError, match="this machine's columns"):
        store.append("bounds", [_bound("b", 1.0)], {})  # no machine columns: read here


def test_without_a_gpu_driver_torch_is_not_loaded_to_look_for_a_gpu():
    import subprocess
    import sys

    code = (
        "import sys; from rnngen import provenance as p; "
        "p.GPU_DRIVER_PATHS = ('/nonexistent/gpu-driver',); "
        "print(p.gpu_count(), p.gpus(), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "[]", "False"]


def test_one_append_holds_one_unit(tmp_path):
    with pytest.raises(ValueError, match="one unit"):
        Store(tmp_path).append("bounds", [_bound("a", 1.0), _bound("b", 1.0)], {})


def test_a_column_of_another_type_is_refused_naming_the_file(tmp_path):
    table = schemas.to_table([_bound("a", 1.0)], schemas.BOUNDS)
    i = table.schema.get_field_index("bound_thm3")
    table = table.set_column(i, "bound_thm3", pa.array(["1.0"]))
    write_parquet(table, Layout.at(tmp_path).bounds, {})
    with pytest.raises(DataError, match=r"bounds.parquet: column 'bound_thm3' holds string"):
        Store(tmp_path).rows("bounds")


def test_files_written_before_finished_at_was_a_timestamp_are_read(tmp_path):
    row = _bound("a", 1.0)
    schema = schemas.BOUNDS.set(
        schemas.BOUNDS.get_field_index("finished_at"), pa.field("finished_at", pa.string())
    )
    write_parquet(
        schemas.to_table([row | {"finished_at": "2026-12-02T08:15:00Z"}], schema),
        Layout.at(tmp_path).bounds,
        {},
    )
    store = Store(tmp_path)
    assert store.rows("bounds")[0]["finished_at"].isoformat() == "2026-12-02T08:15:00+00:00"
    store.append("bounds", [_bound("b", 1.0)], {})
    store.compact("bounds", {})  # old and new rows in one file of the declared types
    assert len(Store(tmp_path).rows("bounds")) == 2
