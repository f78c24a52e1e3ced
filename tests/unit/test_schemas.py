"""Each Parquet table is declared once, with types: nulls stay typed, tables concatenate."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnngen import schemas
from rnngen.bounds import TERM_COLUMNS
from rnngen.specs import RunSpec


def test_a_failed_run_alone_gives_typed_columns_that_concatenate_with_a_done_one():
    spec = RunSpec(L=10, sigma=0.1, seed=0, data_key="k")
    failed = schemas.to_table(
        [{"run_id": spec.run_id, "L": 10, "status": "failed", "error": "RuntimeError: boom"}],
        schemas.RUNS,
    )
    done = schemas.to_table(
        [
            {
                "run_id": "x",
                "L": 10,
                "status": "done",
                "gen_error": 0.01,
                "w_row_sum_max": 1.0,
                "seconds": 3.5,
            }
        ],
        schemas.RUNS,
    )
    assert not [f.name for f in failed.schema if pa.types.is_null(f.type)]
    both = pa.concat_tables([failed, done])
    assert both.column("gen_error").to_pylist() == [None, 0.01]
    assert both.schema.field("w_row_sum_max").type == pa.float64()
    assert both.schema.field("L").type == pa.int64()


def test_every_runspec_field_and_bound_term_is_a_declared_column():
    assert set(RunSpec.model_fields) <= set(schemas.RUNS.names)
    assert set(TERM_COLUMNS) <= set(schemas.BOUNDS.names)
    for name in TERM_COLUMNS:
        assert schemas.BOUNDS.field(name).type == pa.float64()
    assert schemas.RUNS.field("optimizer").type == pa.string()  # a Literal
    assert schemas.RUNS.field("clip_grad_norm").type == pa.float64()  # float | None


def test_an_undeclared_column_is_refused_not_dropped():
    with pytest.raises(ValueError, match="not declared"):
        schemas.to_table([{"run_id": "x", "surprise": 1}], schemas.RUNS)


def test_history_rows_round_trip():
    row = {
        "run_id": "r",
        "L": 10,
        "sigma": 0.0,
        "seed": 0,
        "epoch": 1,
        "train_loss": 0.5,
        "train_accuracy_noisy": 0.6,
        "train_accuracy_clean": 0.7,
        "test_accuracy": 0.65,
        "eval_rows": 100,
        "seconds": 1.0,
        "eval_seconds": math.nan,
    }
    table = schemas.to_table([row], schemas.HISTORY)
    assert table.to_pylist()[0]["epoch"] == 1 and table.schema.field("epoch").type == pa.int64()


ALL_SCHEMAS = {
    name: getattr(schemas, name)
    for name in (
        "RUNS",
        "HISTORY",
        "BOUNDS",
        "SPECTRUM",
        "EMBED",
        "KENDALL",
        "MEASURES",
        "RANKING",
        "CERTIFICATES",
    )
}


@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
def test_every_declared_field_says_what_it_holds_and_its_unit(name):
    for field in ALL_SCHEMAS[name]:
        text, unit = schemas.description(ALL_SCHEMAS[name], field.name)
        assert len(text) > 3, f"{name}.{field.name} has no description"
        assert unit in schemas.UNITS, f"{name}.{field.name} has unit {unit!r}"


def test_descriptions_survive_a_parquet_round_trip_and_added_columns_stay_optional(tmp_path):
    from rnngen.io import read_parquet, write_parquet

    table = schemas.to_table([{"run_id": "r", "L": 10, "status": "done"}], schemas.RUNS)
    path = write_parquet(table, tmp_path / "runs.parquet")
    for read in (read_parquet(path, schemas.RUNS).schema, pq.read_schema(path)):
        for field in schemas.RUNS:
            assert schemas.description(read, field.name) == schemas.description(
                schemas.RUNS, field.name
            )
    assert schemas.description(read, "seconds") == (
        "wall-clock time of the run, evaluation included",
        "s",
    )
    # the `added` mark is one key beside description and unit: those columns stay optional
    added = {f.name for f in schemas.RUNS if schemas.is_added(f)}
    assert {"git_commit", "finished_at", "stop_train_accuracy"} <= added
    assert added.isdisjoint(schemas.required_names(schemas.RUNS))
    assert "gen_error" in schemas.required_names(schemas.RUNS)
    older = table.drop_columns(sorted(added))  # a file written before those columns
    write_parquet(older, tmp_path / "old.parquet")
    assert read_parquet(tmp_path / "old.parquet", schemas.RUNS).num_rows == 1


def test_a_column_without_a_description_is_refused_at_declaration():
    with pytest.raises(TypeError, match="without a description"):
        schemas._fields([("no_such_column_anywhere", pa.float64())])
    with pytest.raises(TypeError, match="does not declare"):
        schemas._fields([("L", pa.int64())], {"LL": ("typo", "1")})
