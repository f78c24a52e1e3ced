"""The bounds stage: every term of Theorems 2 and 3 for every trained model.

One row per (model, α) in results/bounds.parquet. α ranges over a grid fixed before any
data is seen (rnngen.bounds.DEFAULT_ALPHA_GRID, or the user's --alpha values), and the
union bound over that grid is applied: each row's `delta` is δ/|grid| (`delta_total` = δ,
`alpha_rule` states the rule). `alpha_best` flags the α with the tightest finite Theorem 3
bound of its model.

A model's rows are done when their `inputs_key` matches what they would be computed from
now: the settings (δ, α grid, formula version), the λ_min row used and the model file's
digest. Rows from other settings or stale inputs are computed again. A value that comes
out NaN or inf is a status (`non_finite`, the reason naming the first non-finite input),
never an "ok" number; a model file that cannot be read fails its own model's rows.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from rnngen import bounds as B
from rnngen.bounds import usable_lambda_min
from rnngen.corpus import SplitArrays
from rnngen.errors import DataError
from rnngen.glove import GLOVE_DIM
from rnngen.hashing import content_key
from rnngen.provenance import machine_fields
from rnngen.resources import Request, bound_stats_bytes
from rnngen.settings import BoundsSettings
from rnngen.specs import RunSpec
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import publish_table
from rnngen_tasks.corpus import load_corpus, split_sizes
from rnngen_tasks.store import Store

# The inputs of a model's statistics, in the order a non-finite value is looked for.
INPUT_COLUMNS = ("beta_U", "beta_V", "beta_W", "r_fs", "r_fr", "frob_X", "norm1_XT", "lambda_min")


def lambda_rows(store: Store) -> dict[tuple[int, str], dict]:
    """The spectrum row of each (L, data_key) a bound may use: the certified one, if any."""
    rows: dict[tuple[int, str], dict] = {}
    for row in store.rows("spectrum"):
        key = (row["L"], row["data_key"])
        if key not in rows or row["status"] == "certified":
            rows[key] = row
    return rows


def alpha_rule(settings: BoundsSettings) -> str:
    if not settings.custom_grid:
        return B.DEFAULT_ALPHA_RULE
    return (
        f"given grid of {len(settings.alphas)} values; δ split evenly over it "
        "(union bound); the best α minimizes Theorem 3"
    )


def _base(spec: RunSpec, gen_error: float | None) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "group_id": spec.group_id,
        "experiment_id": spec.experiment_id,
        "L": spec.L,
        "sigma": spec.sigma,
        "seed": spec.seed,
        "hidden": spec.hidden,
        "gen_error": gen_error,
        "data_key": spec.data_key,
    }


def first_non_finite(row: dict[str, Any]) -> str | None:
    """The first input (then the first term) of a bound row that is NaN or inf."""
    for name in (*INPUT_COLUMNS, *B.TERM_COLUMNS):
        value = row.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def _mark_non_finite(rows: list[dict[str, Any]]) -> None:
    """Rows with a non-finite value get status `non_finite` and say where it came from."""
    for row in rows:
        bad = first_non_finite(row)
        if bad is not None:
            row["status"] = "non_finite"
            row["reason"] = (
                f"{bad} is {row[bad]} at α={row['alpha']:g}: the first non-finite input "
                "(weights of extreme size, or a degenerate λ_min)"
            )


def model_rows(
    payload: dict[str, Any], train: SplitArrays, embeddings: np.ndarray
) -> list[dict[str, Any]]:
    """Worker side: the rows of one model (all α). Its training split (built once per L
    on the driver) and the embedding table come through Ray's object store."""
    # torch is imported where the statistics run, not at the top: the command line builds
    # this module's step before anything starts only to ask what is pending.
    from rnngen.model_stats import model_stats

    started = time.perf_counter()
    spec: RunSpec = payload["spec"]
    settings: BoundsSettings = payload["settings"]
    lam = payload["lambda_min"]
    clean, noisy = model_stats(
        payload["weights"], spec, train, embeddings, device=payload["device"]
    )
    grid = settings.alphas
    delta = B.union_bound_delta(settings.delta, len(grid))
    rows = []
    for alpha in grid:
        terms = B.bound_row(
            clean, noisy, alpha=alpha, sigma=spec.sigma, lambda_min=lam, delta=delta
        )
        rows.append(
            payload["base"]
            | terms
            | B.thm2_clean_columns(clean, alpha=alpha, lambda_min=lam)
            | {
                "alpha": float(alpha),
                "delta": delta,
                "delta_total": settings.delta,
                "alpha_grid_size": len(grid),
                "alpha_rule": alpha_rule(settings),
                "n": clean.n,
                "noise_draw": (
                    "one evaluation draw of N(0, σ²) per training sequence (the run's "
                    "eval_noise stream), not the draws seen in training"
                ),
                "status": "ok",
                "reason": "",
            }
        )
    _mark_non_finite(rows)
    finite = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    best = min(finite, key=lambda i: rows[i]["bound_thm3"]) if finite else -1
    seconds = time.perf_counter() - started
    for i, row in enumerate(rows):
        row.update(alpha_best=i == best, seconds=seconds, **machine_fields())
    return rows


def model_request(spec: RunSpec, n_train: int, gpus: float = 0.0) -> Request:
    """What one model's bound statistics ask of Ray: a CPU (and a share of a GPU when they
    run on one) and their memory."""
    return Request(
        1,
        gpus,
        bound_stats_bytes(
            n_train=min(spec.n_train or n_train, n_train),
            L=spec.L,
            d=GLOVE_DIM,
            hidden=spec.hidden,
            eval_batch_size=spec.eval_batch_size,
        ),
    )


class BoundsStep:
    """The bounds stage as a step of the grid executor: one unit per trained model."""

    stage = "bounds"

    def __init__(self, out: str, settings: BoundsSettings, device: str) -> None:
        self.out, self.store, self.settings = out, Store(out), settings
        self.max_retries = settings.max_retries
        self.cancelled = threading.Event()
        runs = self.store.done_runs()
        self.units = [RunSpec.from_json(r["spec_json"]) for r in runs]
        self.gen_error = {r["run_id"]: r["gen_error"] for r in runs}
        self.lambdas = lambda_rows(self.store)
        self.device = device
        self.gpus = 0.0
        self.embeddings_ref: Any = None
        self.n_train = 0
        self._splits: dict[tuple, Any] = {}  # (L, n_train) -> the training split's ref
        self._splits_lock = threading.Lock()

    # what the executor asks
    def key(self, spec: RunSpec) -> str:
        return spec.run_id

    def name(self, spec: RunSpec) -> str:
        return f"bounds L={spec.L} σ={spec.sigma:g} seed={spec.seed}"

    def group(self, spec: RunSpec) -> int:
        return spec.L

    def inputs_key(self, spec: RunSpec) -> str:
        """What a model's rows depend on beyond its run_id: the settings, the λ_min used
        and the model file. Rows with another key are stale."""
        lam_row = self.lambdas.get((spec.L, spec.data_key))
        lam, _ = usable_lambda_min(lam_row, spec.L)
        try:
            digest = self.store.model_digest(spec.run_id)
        except OSError:
            digest = None
        return content_key(
            {"settings": self.settings.settings_key, "lambda_min": lam, "model": digest},
            length=12,
        )

    def pending(self) -> list[RunSpec]:
        """The models whose rows are missing, not 'ok', or computed from other inputs."""
        have = self.store.by_unit("bounds")
        todo = []
        for spec in self.units:
            rows = have.get((spec.run_id,), [])
            fresh = rows and all(
                r["status"] == "ok" and r.get("inputs_key") == self.inputs_key(spec) for r in rows
            )
            if not fresh:
                todo.append(spec)
        return todo

    def prepare(self, todo: list[RunSpec]) -> None:
        """Place the data in Ray's object store and check that a model's request fits."""
        where = "numpy" if self.device == "numpy" else ray_pool.resolve_device(self.device)
        self.device = where
        self.gpus = self.settings.gpu_fraction if where.startswith("cuda") else 0.0
        self.n_train = split_sizes(self.out)[0]
        worst = max(todo, key=lambda s: model_request(s, self.n_train).memory)
        ray_pool.check_request(
            model_request(worst, self.n_train, self.gpus),
            "model's bound statistics",
            f"L={worst.L}, {worst.n_train or self.n_train} training reviews",
            "Use a node with more memory.",
        )
        self.corpus = load_corpus(self.out)
        (self.embeddings_ref,) = ray_pool.share(self.corpus.embeddings)

    def _split_ref(self, spec: RunSpec) -> Any:
        """The model's training split in Ray's object store, built once per (L, n_train)
        (model tasks run in several threads, hence the lock)."""
        key = (spec.L, spec.n_train)
        with self._splits_lock:
            if key not in self._splits:
                from rnngen.model_stats import train_split  # torch: see model_rows

                pad = self.corpus.embeddings.shape[0] - 1
                (self._splits[key],) = ray_pool.share(train_split(self.corpus.table, pad, spec))
            return self._splits[key]

    def _skipped(self, spec: RunSpec, reason: str, status: str = "skipped") -> list[dict]:
        return [
            _base(spec, self.gen_error.get(spec.run_id))
            | {"status": status, "reason": reason, "inputs_key": self.inputs_key(spec)}
        ]

    def compute(self, spec: RunSpec, attempt: int) -> list[dict[str, Any]]:
        lam, why = usable_lambda_min(self.lambdas.get((spec.L, spec.data_key)), spec.L)
        if lam is None:
            return self._skipped(spec, why)
        try:
            weights = self.store.load_model(spec)
        except DataError as err:  # this model's rows fail; the others go on
            return self._skipped(spec, str(err), status="failed")
        payload = {
            "spec": spec,
            "settings": self.settings,
            "lambda_min": lam,
            "weights": weights,
            "device": self.device,
            "base": _base(spec, self.gen_error.get(spec.run_id)),
        }
        rows = ray_pool.run_remote(
            model_rows,
            payload,
            self._split_ref(spec),
            self.embeddings_ref,
            request=model_request(spec, self.n_train, self.gpus),
            name=self.name(spec),
            max_retries=self.max_retries,
            cancelled=self.cancelled,
        )
        key = self.inputs_key(spec)
        settings_key = self.settings.settings_key
        return [r | {"inputs_key": key, "settings_key": settings_key} for r in rows]

    def record(self, spec: RunSpec, rows: list[dict], attempt: int) -> tuple[str, str]:
        self.store.append("bounds", rows, self.meta)
        best = next((r for r in rows if r.get("alpha_best")), None)
        if best is not None:
            return "ok", f"bound_thm3 {best['bound_thm3']:.3g} at α={best['alpha']:.3g}"
        return rows[0]["status"], f"{rows[0]['status']}: {rows[0]['reason']}"

    def record_failure(self, spec: RunSpec, error: str, attempt: int) -> None:
        self.store.append("bounds", self._skipped(spec, error, status="failed"), self.meta)

    def compact(self) -> None:
        self.store.compact("bounds", self.meta)

    @property
    def meta(self) -> dict[str, Any]:
        return {"delta": self.settings.delta, "settings": self.settings.keyed()}


def publish_best(out: str) -> None:
    """Each model's best-α row as a table artifact `bounds-best`."""
    columns = (
        "L", "sigma", "seed", "run_id", "alpha", "bound_thm3", "bound_thm2",
        "rademacher_norm1_term", "beta_W", "gen_error",
    )  # fmt: skip
    publish_table(
        "bounds-best",
        [{k: r.get(k) for k in columns} for r in Store(out).rows("bounds") if r.get("alpha_best")],
        "Every model's bounds at its best α",
    )
