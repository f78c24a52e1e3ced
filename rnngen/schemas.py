"""The Parquet tables of the study, each declared once: its columns, their Arrow types, and
what each column holds.

Writers build their tables through :func:`to_table` (every column typed, also when all its
values are null, so tables from different runs always concatenate), readers check the
columns they need against the same declaration (:func:`rnngen.io.read_parquet`), and the
figures, the report and `rnngen status` name columns from here.

Every field carries its meaning in the field metadata, so a results file explains itself
to any Parquet reader: ``b"description"`` (one sentence) and ``b"unit"`` (``UNITS``); e.g.
``pyarrow.parquet.read_schema(path).field("gen_error").metadata``. A column without a
description is an error at import (declare it in ``DESCRIPTIONS`` or the table's own notes).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import pyarrow as pa

from rnngen.bounds import TERM_COLUMNS
from rnngen.rows import LIST_COLUMNS as CERT_LIST_COLUMNS
from rnngen.rows import QUANTILES, EpochLog
from rnngen.rows import ROW_COLUMNS as CERT_ROW_COLUMNS
from rnngen.specs import HASHED_WHEN_SET, RunSpec

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
# The mark is one key of the field's metadata, beside its description and unit.
ADDED = {b"added": b"1"}


def added(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, metadata=ADDED)


def is_added(field: pa.Field) -> bool:
    """Whether `field` is marked as added later (optional in a file being read)."""
    return (field.metadata or {}).get(b"added") == b"1"


def required_names(schema: pa.Schema) -> tuple[str, ...]:
    """The columns a file of `schema` must have (all but those marked `added`)."""
    return tuple(f.name for f in schema if not is_added(f))


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


# Field metadata: what each column holds and its unit ------------------------------------

Note = tuple[str, str]  # (description, unit)

# The units a column can have (the b"unit" of its field metadata).
UNITS: dict[str, str] = {
    "-": "not a quantity: an identifier, a name, a category, text or a flag",
    "1": "a dimensionless number: an error rate, a fraction, a ratio, a norm or bound term",
    "count": "a number of things (reviews, models, epochs, iterations, ...)",
    "s": "seconds of wall-clock time",
    "samples/s": "training sequences processed per second",
    "tokens": "tokens of a review (words after tokenization)",
    "nats": "natural-log units of information (a KL divergence)",
    "logit": "units of the network's outputs y_L (logits); a margin is a difference of two",
    "glove": "units of the GloVe 6B 50-d coordinates the inputs x are made of",
    "glove^2": "squared GloVe coordinate units (second moments of the inputs)",
    "UTC": "a point in time, UTC",
}

_MARGIN_STAT_TEXT = {
    "mean": "mean",
    **{f"q{round(100 * q):02d}": f"{round(100 * q)} % quantile" for q in QUANTILES},
}

# Columns that mean the same wherever they appear. A table whose column means something
# else says so in its own notes (passed to _fields).
DESCRIPTIONS: dict[str, Note] = {
    # names of runs
    "run_id": (
        "16 hex digits naming the trained run: the hash of its RunSpec (all but device)",
        "-",
    ),
    "group_id": ("the run_id without the seed: the seeds averaged into one point", "-"),
    "experiment_id": ("the run_id without seed, σ and L: the runs of one grid", "-"),
    # the RunSpec (rnngen/specs.py)
    "L": ("sequence length: the last L tokens of each review, pre-padded with zeros", "tokens"),
    "sigma": (
        "σ: standard deviation of the Gaussian noise added to every input coordinate in training",
        "glove",
    ),
    "seed": ("the run's seed (initial weights, data order, noise)", "-"),
    "data_key": ("12 hex digits naming the tokenized corpus and embedding table used", "-"),
    "hidden": ("m: hidden units of the ReLU RNN", "count"),
    "init": ("initialization of W: 'irnn' (identity), 'orthogonal' or 'default' (PyTorch's)", "-"),
    "init_scale": ("initial gain of W", "1"),
    "optimizer": ("'adam', 'sgd' or 'rmsprop'", "-"),
    "lr": ("learning rate", "1"),
    "momentum": ("momentum (sgd and rmsprop only)", "1"),
    "weight_decay": ("weight decay (L2 penalty) of the optimizer", "1"),
    "clip_grad_norm": ("limit on the gradient norm per step; null: no clipping", "1"),
    "batch_size": ("training sequences per optimizer step", "count"),
    "w_row_sum_max": (
        "bound on every absolute row sum of W after each step (β_W); null: none",
        "1",
    ),
    "epochs": ("epochs asked for (a cap when stop_train_accuracy is set)", "count"),
    "stop_train_accuracy": (
        "clean training accuracy at which training stops early; null: never",
        "1",
    ),
    "n_train": ("training reviews used (class-balanced subset; all 25,000 by default)", "count"),
    "n_test": ("test reviews used (class-balanced subset; all 25,000 by default)", "count"),
    "eval_batch_size": (
        "sequences per evaluation batch (also fixes the recorded noise draw)",
        "count",
    ),
    "device": (
        "torch device the run trained on: 'cpu', 'cuda' or 'cuda:N' (not part of run_id)",
        "-",
    ),
    "spec_json": ("the full RunSpec as JSON (RunSpec.from_json rebuilds it)", "-"),
    # outcomes
    "status": ("how the row's unit ended", "-"),
    "reason": ("why the status is what it is (empty when ok)", "-"),
    "error": ("why the run failed, one sentence (null unless failed)", "-"),
    "seconds": ("wall-clock time of the row's unit", "s"),
    "gen_error": ("the paper's generalization error: clean test error - noisy training error", "1"),
    "n": ("training sequences the statistics were computed over", "count"),
    "B": ("B = max over training sequences of ‖x‖_∞ (clean inputs)", "glove"),
    "settings_key": ("12 hex digits naming the settings the row was computed with", "-"),
    "inputs_key": ("12 hex digits naming the inputs the row was computed from", "-"),
    # provenance (rnngen/provenance.py)
    "hardware": ("the machine the row was computed on: CPU model, cores and GPUs", "-"),
    "git_commit": ("git commit of the code that computed the row", "-"),
    "git_dirty": ("whether tracked files differed from git_commit when it ran", "-"),
    "cpu_model": ("CPU model name of the machine that computed the row", "-"),
    "isa_level": ("vector instruction set ATen dispatched to (AVX2, AVX512, ...)", "-"),
    "gpu_model": ("GPU model(s) of the machine, null without one", "-"),
    "torch_version": ("PyTorch version that computed the row", "-"),
    "finished_at": ("when the row was computed", "UTC"),
}

_RUNS_NOTES: dict[str, Note] = {
    "status": ("done, diverged (the loss became non-finite) or failed", "-"),
    "attempts": ("attempts the run took (1 unless retried)", "count"),
    "diverged_epoch": (
        "epoch (1-based) whose loss became non-finite; null unless diverged",
        "count",
    ),
    "epochs_run": ("epochs completed", "count"),
    "train_error_noisy": (
        "0-1 error (margin <= 0) on the recorded noisy draw of the training set",
        "1",
    ),
    "train_error_clean": ("0-1 error on the clean training set", "1"),
    "test_error_clean": ("0-1 error on the clean test set", "1"),
    "clean_gap": ("clean test error - clean training error", "1"),
    "test_accuracy": ("accuracy on the clean test set (1 - test_error_clean)", "1"),
    "final_train_loss": ("cross-entropy on the recorded noisy draw of the training set", "nats"),
    "final_test_loss": ("cross-entropy on the clean test set", "nats"),
    **{
        f"margin_{split}_{stat}": (
            f"{text} of the {'noisy training' if split == 'train' else 'clean test'} margins "
            "M = y_L[label] - max of the other logits",
            "logit",
        )
        for split in ("train", "test")
        for stat, text in _MARGIN_STAT_TEXT.items()
    },
    "seconds": ("wall-clock time of the run, evaluation included", "s"),
    "samples_per_second": ("training sequences per second of training time", "samples/s"),
}

_HISTORY_NOTES: dict[str, Note] = {
    "epoch": ("epoch number, from 1", "count"),
    "train_loss": ("mean cross-entropy of the epoch's noisy training batches", "nats"),
    "train_accuracy_noisy": ("running accuracy on the noisy batches the epoch trained on", "1"),
    "train_accuracy_clean": ("accuracy on a fixed clean training subset after the epoch", "1"),
    "test_accuracy": ("accuracy on a fixed clean test subset after the epoch", "1"),
    "eval_rows": ("reviews in each of the two fixed evaluation subsets", "count"),
    "seconds": ("time the epoch spent training", "s"),
    "eval_seconds": ("time of the two measurements after the epoch", "s"),
}

_BOUNDS_NOTES: dict[str, Note] = {
    "status": ("ok, non_finite (reason names the first non-finite input), skipped or failed", "-"),
    "gen_error": ("the run's generalization error (runs.parquet), for the comparison", "1"),
    "alpha": ("α: the margin at which the bound is evaluated (a value of the fixed grid)", "logit"),
    "delta": ("δ for this α: delta_total split evenly over the α grid (union bound)", "1"),
    "delta_total": ("δ: the bound holds with probability >= 1 - δ over the grid", "1"),
    "alpha_grid_size": ("values of α in the grid", "count"),
    "alpha_rule": ("how the α grid was fixed and the best α chosen", "-"),
    "beta_U": ("β_U = ‖Uᵀ‖₁: largest absolute row sum of U", "1"),
    "beta_V": ("β_V = ‖Vᵀ‖₁: largest absolute row sum of V", "1"),
    "beta_W": ("β_W = ‖Wᵀ‖₁: largest absolute row sum of W", "1"),
    "Lambda": ("Λ = Σ_{t=1}^{L} t β_W^{t-1}", "1"),
    "r_fs": ("‖θ‖_fs = sqrt(mean ‖τ(θ)c‖²_∞) on the noisy training inputs (Theorem 3)", "logit"),
    "r_fr": ("Fisher-Rao norm sqrt(mean ⟨η(θ)c, ∂l/∂y_L⟩²) on the noisy training inputs", "1"),
    "frob_X": ("‖X + X_ε‖_F: Frobenius norm of the noisy training inputs", "glove"),
    "norm1_XT": ("‖(X + X_ε)ᵀ‖₁: largest sum over sequences of |coordinate| (noisy)", "glove"),
    "lambda_min": (
        "λ_min of the clean second moment E xxᵀ at this L (spectrum.parquet)",
        "glove^2",
    ),
    "margin_loss": ("ramp loss at α on the noisy training margins (Theorem 3)", "1"),
    "rademacher_fs_term": ("(4k/α) r_fs ‖X‖_F/(2n) sqrt(1/(λ_min + σ²)): the fs part", "1"),
    "rademacher_norm1_term": ("(4k/α)(1/n) β_V β_U ‖Xᵀ‖₁ Λ: the 1-norm part", "1"),
    "complexity_term": ("Theorem 3's complexity term: the sum of the two Rademacher parts", "1"),
    "noise_term": ("(2/α) Σ_i β_V β_U β_W^{L-i} σ sqrt(2 log 2d): Theorem 3's noise term", "1"),
    "confidence_term": ("3 sqrt(log(2/δ)/(2n))", "1"),
    "bound_thm2": ("Theorem 2 on the clean data: indicator loss + complexity + confidence", "1"),
    "bound_thm3": ("Theorem 3: noisy ramp loss + noise + confidence + complexity terms", "1"),
    "bound_thm2_remark6": ("Theorem 2 with Remark 6's data-free r; null when β_W >= 1", "1"),
    "zhang_order": ("Zhang et al.'s order max{d,m,k} L² ‖U‖₂‖V‖₂ max{1,‖W‖₂^L}/(sqrt(n) α)", "1"),
    "indicator_loss_clean": ("share of clean training margins <= α (Theorem 2's loss)", "1"),
    "r_fs_clean": ("‖θ‖_fs on the clean training inputs (Theorem 2)", "logit"),
    "complexity_term_thm2": ("Theorem 2's complexity term on the clean inputs", "1"),
    "noise_draw": ("which noise draw the noisy statistics used", "-"),
    "alpha_best": ("whether this α gives the model's smallest finite Theorem 3 bound", "-"),
    "seconds": ("time to compute the model's rows (all α)", "s"),
}

_SPECTRUM_NOTES: dict[str, Note] = {
    "n": ("training sequences in the second moment Σ = E xxᵀ", "count"),
    "dim": ("dimension L·d of the inputs x", "count"),
    "lambda_min": ("λ_min(Σ), null unless certified", "glove^2"),
    "lambda_min_estimate": ("λ_min(Σ) as computed, certified or not", "glove^2"),
    "lambda_min_residual": ("‖Σv - λv‖ of the smallest eigenpair (the certificate)", "glove^2"),
    "lambda_min_error_bound": (
        "bound on |λ_min estimate - λ_min| from the residual and gap",
        "glove^2",
    ),
    "lambda_max": ("largest eigenvalue of Σ", "glove^2"),
    "lambda_max_residual": ("‖Σv - λv‖ of the largest eigenpair", "glove^2"),
    "condition": ("λ_max / λ_min", "1"),
    "trace": ("trace of Σ", "glove^2"),
    "method": ("how the spectrum was computed", "-"),
    "iterations": ("Lanczos iterations for the smallest eigenvalues", "count"),
    "iterations_top": ("Lanczos iterations for the largest eigenvalues", "count"),
    "status": ("certified or uncertified", "-"),
    "message": ("what the solver reported", "-"),
    "seconds": ("wall-clock time of the whole spectrum", "s"),
    "seconds_gram": ("time to accumulate the Gram matrix", "s"),
    "seconds_factor": ("time to factor Σ", "s"),
    "seconds_lanczos": ("time of the Lanczos iterations", "s"),
    "workers": ("workers that accumulated the Gram matrix", "count"),
    "smallest": ("the smallest eigenvalues of Σ, ascending", "glove^2"),
    "smallest_residuals": ("‖Σv - λv‖ of each of `smallest`", "glove^2"),
    "largest": ("the largest eigenvalues of Σ, descending", "glove^2"),
    "frob_X": ("‖X‖_F of the clean training inputs", "glove"),
    "norm1_XT": ("‖Xᵀ‖₁ of the clean training inputs", "glove"),
    "dense_lambda_min": ("λ_min from a dense eigvalsh, when the check ran", "glove^2"),
    "dense_rel_diff": ("|lambda_min_estimate - dense_lambda_min| / dense_lambda_min", "1"),
    "dense_seconds": ("time of the dense check", "s"),
}

_EMBED_NOTES: dict[str, Note] = {
    "reviews": ("reviews in the corpus (both splits)", "count"),
    "median_tokens": ("median review length", "tokens"),
    "fraction_truncated": ("share of reviews longer than L (their start is cut)", "1"),
    "mean_padding_fraction": ("mean share of an L-window that is padding", "1"),
    "oov_rate": ("share of tokens not in GloVe (read as the zero vector)", "1"),
    "empty_reviews": ("reviews without a token", "count"),
    "coord_std_tokens": ("std of the GloVe coordinates over the training tokens", "glove"),
    "coord_rms_tokens": ("root mean square of those coordinates", "glove"),
    "coord_std_window": ("std of every coordinate of the padded training L-windows", "glove"),
}

_KENDALL_NOTES: dict[str, Note] = {
    "scope": ("which models: 'all' of the experiment, or 'L=…'", "-"),
    "quantity": ("the bound or term (a bounds.parquet column at each model's best α)", "-"),
    "tau": ("Kendall's τ-b between the quantity and gen_error", "1"),
    "p_value": ("two-sided p-value of τ", "1"),
    "n_models": ("models with a finite quantity and gen_error", "count"),
    "n_dropped": ("models of the scope left out for a non-finite value", "count"),
    "n_joined": ("models of the scope with both a bounds row and a finished run", "count"),
}

_MEASURES_NOTES: dict[str, Note] = {
    "measure": ("the measure's name (rnngen.measures.MEASURES)", "-"),
    "value": ("the measure's value (units as its reference defines; null unless ok)", "1"),
    "status": ("ok, non_finite, not_applicable, missing or failed", "-"),
    "uses": ("what data the measure needs: none (weights only), train or test", "-"),
    "reference": ("paper and equation the measure comes from", "-"),
    "seconds": ("time to compute all of the model's measures", "s"),
    "forward_seconds": ("time of one forward pass over the model's training set", "s"),
    "cost_forward_passes": ("cost of the measures but flatness, in forward passes", "1"),
    "flatness_forward_passes": ("cost of the flatness measures, in forward passes", "1"),
}

_RANKING_NOTES: dict[str, Note] = {
    "scope": ("which models: this folder, or the folders pooled", "-"),
    "target": ("what the measure is ranked against: clean_gap or gen_error", "-"),
    "measure": ("the measure's name (rnngen.measures.MEASURES)", "-"),
    "reference": ("paper and equation the measure comes from", "-"),
    "tau": ("Kendall's τ between the measure and the target over models", "1"),
    "tau_lo": ("lower end of τ's 95 % bootstrap interval", "1"),
    "tau_hi": ("upper end of τ's 95 % bootstrap interval", "1"),
    "psi": ("granulated Kendall Ψ: mean of the per-axis ψ", "1"),
    "psi_lo": ("lower end of Ψ's 95 % bootstrap interval", "1"),
    "psi_hi": ("upper end of Ψ's 95 % bootstrap interval", "1"),
    "axes": ("the axes Ψ averages over, with each ψ, as JSON", "-"),
    "n_models": ("models ranked", "count"),
    "n_resamples": ("bootstrap resamples", "count"),
    "rank": ("rank by Ψ, from 1", "count"),
}

_CERTIFICATES_NOTES: dict[str, Note] = {
    "run_id": ("run_id of the cell whose recipe trained the prior mean", "-"),
    "settings_id": ("12 hex digits naming the certificate settings and code version", "-"),
    "status": ("done, prior_diverged or posterior_failed", "-"),
    "n_prior": ("training reviews that trained the prior mean", "count"),
    "n_bound": (
        "training reviews the certificate is computed on (disjoint from the prior's)",
        "count",
    ),
    "n_overlap": ("reviews in both parts (0 when the split is sound)", "count"),
    "prior_ids_digest": ("16 hex digits naming the prior part's review ids", "-"),
    "bound_ids_digest": ("16 hex digits naming the bound part's review ids", "-"),
    "mc_draws": ("'networks' (m networks on the whole bound part) or 'per_example'", "-"),
    "mc_passes": (
        "passes over the bound part, one fresh network per example (per_example)",
        "count",
    ),
    "m": ("sampled networks behind emp_error_mc", "count"),
    "m_test": ("sampled networks behind test_error_stochastic", "count"),
    "delta": ("δ of the PAC-Bayes step after its split over the prior grid", "1"),
    "delta_mc": ("δ' of the Monte Carlo sampling step", "1"),
    "delta_total": ("δ of the PAC-Bayes step before its split over the grid", "1"),
    "confidence": ("1 - δ - δ': probability with which the certificate holds", "1"),
    "objective": ("training objective of the posterior: fquad or fclassic", "-"),
    "p_min": ("p_min of the bounded cross-entropy", "1"),
    "prior_var_grid": ("the prior variances tried (absolute, per weight)", "1"),
    "posterior_epochs": ("epochs of posterior training", "count"),
    "posterior_lr": ("learning rate of posterior training", "1"),
    "posterior_input_noise": (
        "whether the posterior trained on inputs with the cell's σ noise",
        "-",
    ),
    "select_draws": ("networks per grid point for the estimate that chooses the prior", "count"),
    "prior_epochs": ("epochs the prior mean trained", "count"),
    "prior_train_loss": ("the prior's last training loss", "nats"),
    "train_error_prior_on_bound": ("0-1 error of the prior mean on the bound part", "1"),
    "selection_estimates": ("estimated certificate of each grid point (inf: diverged)", "1"),
    "kl_grid": ("KL(Q‖P) of each grid point's posterior", "nats"),
    "objective_grid": ("final objective of each grid point's posterior", "1"),
    "prior_var": ("the chosen prior variance", "1"),
    "prior_var_index": ("index of the chosen prior variance in prior_var_grid", "count"),
    "posterior_objective": ("chosen posterior's objective, mean over its last epoch", "1"),
    "posterior_risk": (
        "chosen posterior's bounded cross-entropy, mean over its last epoch",
        "nats",
    ),
    "posterior_train_error": ("0-1 error of the networks drawn in its last epoch", "1"),
    "train_error_mean_on_bound": (
        "0-1 error of the posterior's mean network on the bound part",
        "1",
    ),
    "posterior_mean_shift": ("mean |μ - μ_prior| in prior standard deviations", "1"),
    "posterior_std_ratio": ("mean posterior std / prior std", "1"),
    "kl": ("KL(Q‖P) of the chosen posterior", "nats"),
    "kl_term": ("(KL + ln(2 sqrt(n_bound)/δ)) / n_bound", "nats"),
    "emp_error_mc": ("mean 0-1 error of the m sampled networks on the bound part", "1"),
    "emp_error_mc_std": ("std of those errors", "1"),
    "emp_error_bound": ("kl⁻¹(emp_error_mc, ln(2/δ')/m): upper bound on the empirical risk", "1"),
    "certificate": (
        "the risk certificate: kl⁻¹(emp_error_bound, kl_term), a bound on the clean 0-1 risk",
        "1",
    ),
    "n_test": ("test reviews measured after the certificate", "count"),
    "test_error_stochastic": (
        "clean test error of the stochastic classifier (sampled networks)",
        "1",
    ),
    "test_error_mean": ("clean test error of the posterior's mean network", "1"),
    "test_error_prior": ("clean test error of the prior mean network", "1"),
    "prior_seconds": ("time to train the prior mean", "s"),
    "posterior_seconds": ("time to train every grid point's posterior", "s"),
    "mc_seconds": ("time of the certifying Monte Carlo draws", "s"),
    "test_seconds": ("time of the test measurements", "s"),
    "seconds": ("time of the whole cell", "s"),
}


def _fields(
    pairs: list[tuple[str, pa.DataType] | pa.Field], notes: dict[str, Note] | None = None
) -> pa.Schema:
    """A schema of `pairs`, each field's metadata holding its description and unit: from
    the table's own `notes` first, then from DESCRIPTIONS (an `added` mark is kept)."""
    fields = [p if isinstance(p, pa.Field) else pa.field(*p) for p in pairs]
    names = [f.name for f in fields]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise TypeError(f"columns declared twice: {sorted(duplicated)}")
    notes = notes or {}
    stray = sorted(set(notes) - set(names))
    if stray:
        raise TypeError(f"notes for columns the table does not declare: {stray}")
    undescribed = [n for n in names if n not in notes and n not in DESCRIPTIONS]
    if undescribed:
        raise TypeError(
            f"columns without a description: {undescribed}; describe them (and give their "
            "unit) in rnngen/schemas.py's DESCRIPTIONS or the table's own notes"
        )
    described = []
    for f in fields:
        text, unit = notes.get(f.name) or DESCRIPTIONS[f.name]
        if unit not in UNITS:
            raise TypeError(f"column {f.name}: unit {unit!r} is not one of UNITS")
        meta = {**(f.metadata or {}), b"description": text.encode(), b"unit": unit.encode()}
        described.append(f.with_metadata(meta))
    return pa.schema(described)


def description(schema: pa.Schema, name: str) -> tuple[str, str]:
    """(description, unit) of column `name` of `schema` (or of a table read from Parquet)."""
    meta = schema.field(name).metadata or {}
    return meta.get(b"description", b"").decode(), meta.get(b"unit", b"").decode()


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
    ],
    _RUNS_NOTES,
)

HISTORY = _fields(
    [
        ("run_id", STR),
        ("L", I64),
        ("sigma", F64),
        ("seed", I64),
        *((f.name, arrow_type(f.type)) for f in dataclasses.fields(EpochLog)),
    ],
    _HISTORY_NOTES,
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
    ],
    _BOUNDS_NOTES,
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
    ],
    _SPECTRUM_NOTES,
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
    ],
    _EMBED_NOTES,
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
    ],
    _KENDALL_NOTES,
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
    ],
    _MEASURES_NOTES,
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
    ],
    _RANKING_NOTES,
)


# One row per certified cell (rnngen.rows.ROW_COLUMNS, in that order), then where it ran.
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
    ],
    _CERTIFICATES_NOTES,
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
