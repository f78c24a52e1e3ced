"""The measures stage: the zoo of generalization measures for every trained model, ranked.

One row per (model, measure) in results/measures.parquet (rnngen.measures: the bounds of
Tu et al. read from the bounds rows, the RNN bounds of Zhang et al. and Chen et al., the
norm, margin and flatness measures of Jiang et al. adapted to the recurrence). Each unit
is one model, computed in a Ray task: one forward pass over its training set gives the
margins and the input statistics; flatness perturbs the weights on a fixed subset.

A model's rows are done when their inputs_key matches: the settings, the model file and
the model's bound rows. Then every measure is ranked against the clean gap and the
paper's generalization error (rnngen.ranking: Kendall τ, granulated Ψ, bootstrap
intervals) into results/measure_ranking.parquet.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rnngen import ranking as R
from rnngen import schemas
from rnngen.errors import DataError
from rnngen.glove import GLOVE_DIM
from rnngen.hashing import content_key
from rnngen.io import read_metadata
from rnngen.layout import Layout
from rnngen.provenance import machine_fields
from rnngen.resources import Request, bound_stats_bytes
from rnngen.settings import MeasuresSettings
from rnngen.specs import RunSpec
from rnngen_tasks import ray_pool
from rnngen_tasks.corpus import load_corpus, split_sizes
from rnngen_tasks.store import Store, Table, register

register(
    Table("measures", schemas.MEASURES, ("run_id",), ("L", "sigma", "seed", "run_id", "measure"))
)
register(
    Table(
        "ranking",
        schemas.RANKING,
        ("scope", "target", "measure"),
        ("scope", "target", "rank"),
        provenance=False,
    )
)

TARGETS = ("clean_gap", "gen_error")
# RunSpec fields that are never a hyperparameter axis of the ranking.
NOT_AXES = {"seed", "data_key", "device", "eval_batch_size"}


def model_measures(
    payload: dict[str, Any], table: pa.Table, embeddings: np.ndarray
) -> list[dict[str, Any]]:
    """Worker side: every measure of one model; the timing says what they cost in forward
    passes over the model's training set."""
    # torch is imported where the measures run, not at the top: the command line builds
    # this module's step before anything starts only to ask what is pending.
    import torch

    from rnngen import measures as M
    from rnngen.model import model_with
    from rnngen.train import embed, embedding_tensor, evaluate, spec_splits, split_batches

    torch.set_num_threads(1)
    spec: RunSpec = payload["spec"]
    settings: MeasuresSettings = payload["settings"]
    weights = payload["weights"]
    began = time.perf_counter()
    train, _ = spec_splits(table, embeddings.shape[0] - 1, spec)
    emb = embedding_tensor(embeddings)
    model = model_with(weights)
    t0 = time.perf_counter()
    margins = evaluate(model, split_batches(train, emb, spec.eval_batch_size)).margins
    forward = time.perf_counter() - t0
    stats = M.input_stats(x.numpy() for x, _ in split_batches(train, emb, spec.eval_batch_size))
    init = M.initial_weights(spec, embeddings.shape[1], weights["V"].shape[0])
    rows = M.compute_measures(
        weights, spec, margins, stats, init, payload["bounds"], delta=settings.delta
    )
    cost = time.perf_counter() - t0
    flat_cost = None
    if settings.flatness:
        t1 = time.perf_counter()
        # a fixed, class-balanced subset: the first reviews of each class
        half = min(settings.flatness_reviews, len(train)) // 2
        subset = np.concatenate([np.flatnonzero(train.labels == c)[:half] for c in (0, 1)])
        x = embed(train.ids[subset], emb).numpy()
        error = M.subset_error(x, train.labels[subset])
        rows += M.flatness_rows(
            spec.run_id,
            weights,
            init,
            error,
            len(train),
            steps=settings.flatness_steps,
            draws=settings.flatness_draws,
            seed=spec.seed,
        )
        flat_cost = (time.perf_counter() - t1) / forward
    where = {
        "group_id": spec.group_id,
        "experiment_id": spec.experiment_id,
        "L": spec.L,
        "sigma": spec.sigma,
        "seed": spec.seed,
        "seconds": time.perf_counter() - began,
        "forward_seconds": forward,
        "cost_forward_passes": cost / forward,
        "flatness_forward_passes": flat_cost,
        **machine_fields(),
    }
    return [row | where for row in rows]


class MeasuresStep:
    """The measures stage as a step of the grid executor: one unit per trained model."""

    stage = "measures"

    def __init__(self, out: str, settings: MeasuresSettings) -> None:
        self.out, self.store, self.settings = out, Store(out), settings
        self.max_retries = settings.max_retries
        self.cancelled = threading.Event()
        self.runs = self.store.done_runs()
        self.units = [RunSpec.from_json(r["spec_json"]) for r in self.runs]
        self.bounds = {k[0]: v for k, v in self.store.by_unit("bounds").items()}
        self.refs: tuple = ()
        self.n_train = 0

    def key(self, spec: RunSpec) -> str:
        return spec.run_id

    def name(self, spec: RunSpec) -> str:
        return f"measures L={spec.L} σ={spec.sigma:g} seed={spec.seed} {spec.run_id[:6]}"

    def group(self, spec: RunSpec) -> tuple:
        return (spec.L, spec.hidden)

    def _bound_rows(self, spec: RunSpec) -> list[dict[str, Any]]:
        return self.bounds.get(spec.run_id, [])

    def inputs_key(self, spec: RunSpec) -> str:
        bounds = sorted(
            (r.get("alpha"), r.get("status"), r.get("inputs_key"), r.get("bound_thm3"))
            for r in self._bound_rows(spec)
        )
        try:
            digest = self.store.model_digest(spec.run_id)
        except OSError:
            digest = None
        return content_key(
            {"settings": self.settings.settings_key, "model": digest, "bounds": bounds},
            length=12,
        )

    def pending(self) -> list[RunSpec]:
        have = self.store.by_unit("measures")
        return [
            s
            for s in self.units
            if not have.get((s.run_id,))
            or any(r.get("inputs_key") != self.inputs_key(s) for r in have[(s.run_id,)])
        ]

    def prepare(self, todo: list[RunSpec]) -> None:
        self.n_train = split_sizes(self.out)[0]
        worst = max(todo, key=lambda s: self._request(s).memory)
        ray_pool.check_request(
            self._request(worst),
            "model's measures",
            f"L={worst.L}, {worst.n_train or self.n_train} training reviews",
            "Use a node with more memory.",
        )
        corpus = load_corpus(self.out)
        self.refs = ray_pool.share(corpus.table, corpus.embeddings)

    def _request(self, spec: RunSpec) -> Request:
        memory = bound_stats_bytes(
            n_train=min(spec.n_train or self.n_train, self.n_train),
            L=spec.L,
            d=GLOVE_DIM,
            hidden=spec.hidden,
            eval_batch_size=spec.eval_batch_size,
        )
        return Request(1, 0.0, memory)

    def _failed(self, spec: RunSpec, reason: str) -> list[dict[str, Any]]:
        return [
            {
                "run_id": spec.run_id,
                "L": spec.L,
                "sigma": spec.sigma,
                "seed": spec.seed,
                "measure": "(all)",
                "status": "failed",
                "reason": reason,
                "inputs_key": self.inputs_key(spec),
                "settings_key": self.settings.settings_key,
            }
        ]

    def compute(self, spec: RunSpec, attempt: int) -> list[dict[str, Any]]:
        try:
            weights = self.store.load_model(spec)
        except DataError as err:  # this model fails; the others go on
            return self._failed(spec, str(err))
        payload = {
            "spec": spec,
            "settings": self.settings,
            "weights": weights,
            "bounds": self._bound_rows(spec),
        }
        rows = ray_pool.run_remote(
            model_measures,
            payload,
            *self.refs,
            request=self._request(spec),
            name=self.name(spec),
            max_retries=self.max_retries,
            cancelled=self.cancelled,
        )
        keys = {"inputs_key": self.inputs_key(spec), "settings_key": self.settings.settings_key}
        return [r | keys for r in rows]

    def record(self, spec: RunSpec, rows: list[dict], attempt: int) -> tuple[str, str]:
        self.store.append("measures", rows, self.meta)
        from rnngen.measures import OK

        ok = sum(r["status"] == OK for r in rows)
        if rows[0]["status"] == "failed":
            return "failed", f"failed: {rows[0]['reason']}"
        cost = rows[0].get("cost_forward_passes")
        return "ok", f"{ok} of {len(rows)} measures ok, {cost:.2f} forward passes"

    def record_failure(self, spec: RunSpec, error: str, attempt: int) -> None:
        self.store.append("measures", self._failed(spec, error), self.meta)

    def compact(self) -> None:
        self.store.compact("measures", self.meta)

    @property
    def meta(self) -> dict[str, Any]:
        return {"settings": self.settings.keyed()}


# ----------------------------------------------------------------------------- the ranking


def _axis_value(value: Any) -> Any:
    return round(value, 9) if isinstance(value, float) else value


def ranking_rows(
    runs: list[dict[str, Any]],
    measure_rows: list[dict[str, Any]],
    scope: str,
    n_resamples: int = R.N_RESAMPLES,
) -> list[dict[str, Any]]:
    """Every measure ranked against each target over `runs` (trained models): Kendall τ,
    granulated Ψ over the RunSpec fields that vary among them (groups pair the same seed),
    and bootstrap intervals; sorted by Ψ, ranks from 1."""
    from rnngen.measures import INFO  # torch: see model_measures

    runs = [r for r in runs if r["status"] == "done"]
    specs = [json.loads(r["spec_json"]) for r in runs]
    ids = [r["run_id"] for r in runs]
    varying = (
        sorted(
            name
            for name in specs[0]
            if name not in NOT_AXES and len({json.dumps(s.get(name)) for s in specs}) > 1
        )
        if specs
        else []
    )
    axes = {name: [_axis_value(s.get(name)) for s in specs] for name in varying}
    match = {"seed": [s["seed"] for s in specs]}
    columns = R.measure_columns(measure_rows, ids)
    out = []
    for target in TARGETS:
        values = np.array([np.nan if r[target] is None else r[target] for r in runs], float)
        table = R.ranking_table(
            columns, values, axes, match, target_name=target, n_resamples=n_resamples
        )
        for rank, row in enumerate(table, start=1):
            per_axis = {k[4:]: v for k, v in row.items() if k.startswith("psi_") and k[4:] in axes}
            out.append(
                {
                    "scope": scope,
                    "target": target,
                    "measure": row["measure"],
                    "reference": INFO[row["measure"]].reference,
                    **{k: row[k] for k in ("tau", "tau_lo", "tau_hi", "psi", "psi_lo", "psi_hi")},
                    "axes": json.dumps(per_axis, sort_keys=True),
                    "n_models": row["n_models"],
                    "n_resamples": n_resamples,
                    "rank": rank,
                }
            )
    return out


THIS_FOLDER = "this folder"
POOLED = "pooled: "  # the scope of a pooled ranking: "pooled: zoo, paper, …"


def recorded_pool(out: str) -> list[str]:
    """The folders the ranking of `out` was last pooled with (its file's metadata)."""
    path = Layout.at(out).ranking
    recorded = read_metadata(path).get("pool") or [] if path.is_file() else []
    # stored relative to `out`, so a committed folder's pool holds in any clone
    return [str((Path(out) / f).resolve()) for f in recorded]


# The settings a rerun keeps: those that change a row's values (but the formulas' version,
# which a new release raises on purpose), and the ranking's resamples.
RECORDED = (*(k for k in MeasuresSettings.KEYED if k != "measures_version"), "n_resamples")


def recorded_settings(out: str) -> tuple[dict[str, Any], str]:
    """The measures settings of `out` that a rerun keeps unless an option says otherwise,
    and where they were read: the settings its measures were last computed with and the
    ranking's resamples (the two files' metadata); for a folder without measures yet, the
    stage settings of the built-in profile that trained it (runs.parquet's metadata);
    else none. So `rnngen measures --out FOLDER` on a committed folder checks its rows
    instead of recomputing every model under the built-in defaults."""
    from rnngen.profiles import PROFILES

    layout = Layout.at(out)
    found: dict[str, Any] = {}
    source = ""
    if layout.measures.is_file():
        found |= read_metadata(layout.measures).get("settings") or {}
        if layout.ranking.is_file():
            found["n_resamples"] = read_metadata(layout.ranking).get("n_resamples")
        source = str(layout.measures)
    elif layout.runs.is_file():
        profile = PROFILES.get(str(read_metadata(layout.runs).get("profile")))
        found = dict(profile.stages.get("measures", {})) if profile else {}
        source = f"the profile `{profile.name}`" if profile else ""
    kept = {k: v for k, v in found.items() if k in RECORDED and v is not None}
    return kept, (source if kept else "")


def check_pool(out: str, pool: list[str]) -> list[str]:
    """The pool as absolute paths; a DataError naming each folder that has no measures."""
    folders = [str(Path(f).resolve()) for f in pool]
    here = str(Path(out).resolve())
    missing = [
        f
        for f in folders
        if f != here and not (Layout.at(f).measures.is_file() and Layout.at(f).runs.is_file())
    ]
    if missing:
        raise DataError(
            f"--pool: {', '.join(missing)} hold no results/measures.parquet and runs.parquet; "
            "run `rnngen measures --out FOLDER` there first, or leave the folder out."
        )
    return [f for f in dict.fromkeys(folders) if f != here]


def pooled_rows(out: str, pool: list[str], n_resamples: int) -> list[dict[str, Any]]:
    """Every measure ranked over the models of `out` and of each pool folder together. A
    run_id found in two folders (the same spec, trained twice) counts once: the copy of the
    first folder in the order given, `out` first. The axes are the RunSpec fields that vary
    over the pooled models, so granulated groups still differ in one setting alone."""
    runs: list[dict[str, Any]] = []
    measure_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for folder in [out, *pool]:
        store = Store(folder)
        mine = [r for r in store.rows("runs") if r["run_id"] not in seen]
        ids = {r["run_id"] for r in mine}
        seen |= ids
        runs += mine
        measure_rows += [m for m in store.rows("measures") if m["run_id"] in ids]
    scope = POOLED + ", ".join(Path(f).resolve().name for f in [out, *pool])
    return ranking_rows(runs, measure_rows, scope, n_resamples)


def rank_folder(
    out: str, n_resamples: int = R.N_RESAMPLES, pool: list[str] | None = None
) -> list[dict[str, Any]]:
    """Rank this folder's models, and with `pool` (other folders with measures; None: the
    pool of the last ranking, if its folders still hold measures) also every model of this
    folder and the pool together; write results/measure_ranking.parquet."""
    store = Store(out)
    if pool is None:
        pool = [f for f in recorded_pool(out) if Layout.at(f).measures.is_file()]
    pool = check_pool(out, pool)
    rows = ranking_rows(store.rows("runs"), store.rows("measures"), THIS_FOLDER, n_resamples)
    if pool:
        rows += pooled_rows(out, pool, n_resamples)
    here = Path(out).resolve()
    relative = [os.path.relpath(f, here) for f in pool]
    store.replace("ranking", rows, {"n_resamples": n_resamples, "pool": relative})
    return rows
