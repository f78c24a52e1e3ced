"""The Parquet tables of the study, each declared once: its columns and their Arrow types.

Writers build their tables through :func:`to_table` (every column typed, also when all its
values are null, so tables from different runs always concatenate), readers check the
columns they need against the same declaration (:func:`rnngen.io.read_parquet`), and the
figures, the report and `rnngen status` name columns from here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import pyarrow as pa

from rnngen.bounds import TERM_COLUMNS
from rnngen.certify import _LIST_COLUMNS as CERT_LIST_COLUMNS
from rnngen.certify import ROW_COLUMNS as CERT_ROW_COLUMNS
from rnngen.specs import HASHED_WHEN_SET, RunSpec
from rnngen.train import QUANTILES, EpochLog

_SCALARS: dict[type, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
}
F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
TIME = pa.timestamp("ms", tz="UTC")  # what Parquet stores (it has no seconds unit)

# Columns added after files of schema version 2 were committed: declared (writers always
# write them) but not required of a file being read, so the committed results stay readable.
ADDED = {b"added": b"1"}


def added(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, metadata=ADDED)


def required_names(schema: pa.Schema) -> tuple[str, ...]:
    """The columns a file of `schema` must have (all but those marked `added`)."""
    return tuple(f.name for f in schema if (f.metadata or {}) != ADDED)


# Where and with what code each row was computed (rnngen.provenance.code_fields and
# machine_fields), on every row of runs, bounds and spectrum. `finished_at` is a timestamp;
# files written before it was one hold ISO text (tasks/store.py reads both).
PROVENANCE = [
    added("git_commit", STR),
    added("git_dirty", BOOL),
    added("cpu_model", STR),
    added("isa_level", STR),
    added("gpu_model", STR),
    added("torch_version", STR),
    added("finished_at", TIME),
]


def arrow_type(annotation: Any) -> pa.DataType:
    """int/float/str/bool, a Literal of strings, or `X | None` of those -> its Arrow type."""
    if isinstance(annotation, str):  # postponed annotations of dataclasses
        annotation = eval(annotation, {"float": float, "int": int, "str": str, "bool": bool})
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return pa.string()
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return arrow_type(inner[0])
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no Arrow type declared for {annotation!r}")


def _fields(pairs: list[tuple[str, pa.DataType] | pa.Field]) -> pa.Schema:
    names = [p.name if isinstance(p, pa.Field) else p[0] for p in pairs]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise TypeError(f"columns declared twice: {sorted(duplicated)}")
    return pa.schema(pairs)


_SPEC = [
    added(name, arrow_type(f.annotation))
    if name in HASHED_WHEN_SET
    else (name, arrow_type(f.annotation))
    for name, f in RunSpec.model_fields.items()
    if name not in ("n_train", "n_test")
]
_MARGIN_STATS = ("mean", *(f"q{round(100 * q):02d}" for q in QUANTILES))

RUNS = _fields(
    [
        ("run_id", STR),
        ("group_id", STR),
        ("experiment_id", STR),
        *_SPEC,
        # the reviews a run used (its spec's n_train / n_test resolved; null before it ran)
        ("n_train", I64),
        ("n_test", I64),
        ("spec_json", STR),
        ("status", STR),
        ("error", STR),
        ("attempts", I64),
        ("diverged_epoch", I64),
        ("epochs_run", I64),
        ("train_error_noisy", F64),
        ("train_error_clean", F64),
        ("test_error_clean", F64),
        ("gen_error", F64),
        ("clean_gap", F64),
        ("test_accuracy", F64),
        ("final_train_loss", F64),
        ("final_test_loss", F64),
        *((f"margin_{split}_{s}", F64) for split in ("train", "test") for s in _MARGIN_STATS),
        ("seconds", F64),
        ("samples_per_second", F64),
        ("hardware", STR),
        *PROVENANCE,
    ]
)

HISTORY = _fields(
    [
        ("run_id", STR),
        ("L", I64),
        ("sigma", F64),
        ("seed", I64),
        *((f.name, arrow_type(f.type)) for f in dataclasses.fields(EpochLog)),
    ]
)

BOUNDS = _fields(
    [
        ("run_id", STR),
        ("group_id", STR),
        ("experiment_id", STR),
        ("L", I64),
        ("sigma", F64),
        ("seed", I64),
        ("hidden", I64),
        ("data_key", STR),
        ("gen_error", F64),
        ("alpha", F64),
        ("delta", F64),
        ("delta_total", F64),
        ("alpha_grid_size", I64),
        ("alpha_rule", STR),
        ("n", I64),
        *((name, F64) for name in TERM_COLUMNS),
        ("indicator_loss_clean", F64),
        ("r_fs_clean", F64),
        ("B", F64),
        ("complexity_term_thm2", F64),
        ("noise_draw", STR),
        ("alpha_best", BOOL),
        ("status", STR),
        ("reason", STR),
        ("seconds", F64),
        # what the row was computed from: the settings (δ, α grid, formula version) and
        # the inputs (the λ_min row used); a row whose inputs_key differs is recomputed
        added("settings_key", STR),
        added("inputs_key", STR),
        added("hardware", STR),
        *PROVENANCE,
    ]
)

_F64_LIST = pa.list_(F64)
SPECTRUM = _fields(
    [
        ("L", I64),
        ("n", I64),
        ("dim", I64),
        ("lambda_min", F64),
        ("lambda_min_estimate", F64),
        ("lambda_min_residual", F64),
        ("lambda_min_error_bound", F64),
        ("lambda_max", F64),
        ("lambda_max_residual", F64),
        ("condition", F64),
        ("trace", F64),
        ("method", STR),
        ("iterations", I64),
        ("iterations_top", I64),
        ("status", STR),
        ("message", STR),
        ("seconds", F64),
        ("seconds_gram", F64),
        ("seconds_factor", F64),
        ("seconds_lanczos", F64),
        ("workers", I64),
        ("data_key", STR),
        ("smallest", _F64_LIST),
        ("smallest_residuals", _F64_LIST),
        ("largest", _F64_LIST),
        ("frob_X", F64),
        ("norm1_XT", F64),
        ("B", F64),
        ("dense_lambda_min", F64),
        ("dense_rel_diff", F64),
        ("dense_seconds", F64),
        added("settings_key", STR),
        added("hardware", STR),
        *PROVENANCE,
    ]
)

EMBED = _fields(
    [
        ("L", I64),
        ("reviews", I64),
        ("median_tokens", F64),
        ("fraction_truncated", F64),
        ("mean_padding_fraction", F64),
        ("oov_rate", F64),
        ("empty_reviews", I64),
        # the scale of the inputs, to put sigma in proportion: over the training split's word
        # vectors (tokens, OOV zeros included) and over its L-windows (padding zeros included)
        ("coord_std_tokens", F64),
        ("coord_rms_tokens", F64),
        ("coord_std_window", F64),
        ("data_key", STR),
    ]
)

KENDALL = _fields(
    [
        ("experiment_id", STR),
        ("scope", STR),
        ("quantity", STR),
        ("tau", F64),
        ("p_value", F64),
        ("n_models", I64),
        ("n_dropped", I64),
        ("n_joined", I64),
    ]
)


MEASURES = _fields(
    [
        ("run_id", STR),
        ("group_id", STR),
        ("experiment_id", STR),
        ("L", I64),
        ("sigma", F64),
        ("seed", I64),
        ("measure", STR),
        ("value", F64),
        ("status", STR),
        ("reason", STR),
        ("uses", STR),
        ("reference", STR),
        # what one model's measures cost, in units of one forward pass over its training set
        ("seconds", F64),
        ("forward_seconds", F64),
        ("cost_forward_passes", F64),
        ("flatness_forward_passes", F64),
        ("settings_key", STR),
        ("inputs_key", STR),
        ("hardware", STR),
        *PROVENANCE,
    ]
)

RANKING = _fields(
    [
        ("scope", STR),  # which models: this folder, or the folders pooled
        ("target", STR),  # clean_gap or gen_error
        ("measure", STR),
        ("reference", STR),
        ("tau", F64),
        ("tau_lo", F64),
        ("tau_hi", F64),
        ("psi", F64),
        ("psi_lo", F64),
        ("psi_hi", F64),
        ("axes", STR),  # the axes Ψ averages over, with each ψ: JSON
        ("n_models", I64),
        ("n_resamples", I64),
        ("rank", I64),
    ]
)


# One row per certified cell (rnngen.certify.ROW_COLUMNS, in that order), then where it ran.
_CERT_TYPES = {
    **dict.fromkeys(
        ("run_id", "settings_id", "status", "reason", "prior_ids_digest", "bound_ids_digest",
         "mc_draws", "objective"),
        STR,
    ),
    **dict.fromkeys(
        ("L", "seed", "n_prior", "n_bound", "n_overlap", "m", "m_test", "posterior_epochs",
         "select_draws", "prior_epochs", "prior_var_index", "n_test"),
        I64,
    ),
    "posterior_input_noise": BOOL,
    **dict.fromkeys(CERT_LIST_COLUMNS, _F64_LIST),
}  # fmt: skip
CERTIFICATES = _fields(
    [
        *((name, _CERT_TYPES.get(name, F64)) for name in CERT_ROW_COLUMNS),
        ("hardware", STR),
        *PROVENANCE,
    ]
)


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of exactly `schema`'s columns and types; a missing value is null.

    A key the schema does not declare is an error (a column would be silently lost).
    """
    names = set(schema.names)
    for row in rows:
        unknown = set(row) - names
        if unknown:
            raise ValueError(
                f"columns {sorted(unknown)} are not declared in the schema; "
                "declare them in rnngen/schemas.py"
            )
    return pa.Table.from_pylist(
        [{n: row.get(n) for n in schema.names} for row in rows], schema=schema
    )
