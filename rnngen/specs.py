"""What one training run is: a frozen, typed spec whose content hash names the run.

`RunSpec` holds everything that decides a run's result -- the paper's grid axes (L, sigma,
seed), the training choices the paper leaves open (hidden size, optimizer, ...) and the
`data_key` of the corpus -- and nothing about where it runs except `device`, which is kept
out of the hash. `run_id` names a run; `group_id` (the hash without the seed) names the
set of seeds that are averaged into one point of the figures.

`expand_grid` turns a base spec plus swept axes into the list of runs, validating every
value before anything runs.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rnngen.errors import ParameterError
from rnngen.hashing import content_key

# Bump when the training code changes what a spec produces: every run_id changes with it,
# so results of the old code are never mistaken for results of the new one.
# 2: the W row-sum projection (`w_row_sum_max`) and evaluation batches of 250.
SPEC_VERSION = 2

# Fields that say where or how fast a run goes, not what it computes: not hashed.
NOT_HASHED = frozenset({"device"})
# Fields added after runs were committed: left out of the hash while unset, so the
# run_ids of every earlier run stay what they were.
HASHED_WHEN_SET = frozenset({"stop_train_accuracy"})


class RunSpec(BaseModel):
    """One training run. Defaults are our choices (the paper gives none); see each comment.

    The defaults were chosen on the full IMDB data (25,000 / 25,000) at L = 100..300,
    sigma = 0 (see rnngen/train.py). Build a spec with ``RunSpec(**fields)`` or
    ``RunSpec.from_json``: both turn invalid values into a `ParameterError` naming the field
    (``model_copy(update=...)`` skips validation; do not use it to make new runs).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # The paper's grid axes and the data: no defaults, a run must say what it is.
    L: int = Field(gt=0, strict=True, description="a positive sequence length (100, 200, 300)")
    sigma: float = Field(ge=0.0, description="the input-noise standard deviation, a number >= 0")
    seed: int = Field(ge=0, strict=True, description="a non-negative integer seed")
    data_key: str = Field(min_length=1, description="the corpus' data_key (non-empty)")

    # Model. 128 hidden units: 83 % test accuracy at L = 100 (64 units: 81.7 % at 6 epochs),
    # still ~5 s per epoch of 25,000 reviews at L = 100 on two CPU cores.
    hidden: int = Field(128, gt=0, strict=True, description="a positive hidden size m")
    # IRNN (W = I) keeps gradients O(1) through L = 100..300 ReLU steps at the start.
    init: Literal["irnn", "orthogonal", "default"] = Field(
        "irnn", description="one of 'irnn', 'orthogonal', 'default'"
    )
    init_scale: float = Field(1.0, gt=0.0, description="the initial gain of W, a number > 0")

    # Optimisation: Adam, lr 5e-4 rather than the usual 1e-3. Adam moves every entry of W by
    # ~lr per step, so W = I drifts past spectral radius 1 and over L = 300 steps a few
    # batches' logits explode: at 1e-3 every L = 300 run had epoch-mean losses of 1e4..1e11
    # (it recovers, but a spike can hit the last epoch). 5e-4 kept them rare and mild with
    # L = 300 accuracy unchanged (~86 %) and the best L = 100 accuracy (83 %); 3e-4 was as
    # stable but 1-2 points worse at L = 100. Batch 64: ~390 updates per epoch.
    optimizer: Literal["adam", "sgd", "rmsprop"] = Field(
        "adam", description="one of 'adam', 'sgd', 'rmsprop'"
    )
    lr: float = Field(5e-4, gt=0.0, description="a learning rate > 0")
    momentum: float = Field(
        0.0, ge=0.0, lt=1.0, description="a momentum in [0, 1) (sgd and rmsprop only)"
    )
    # No weight decay: the study measures the norms plain training produces.
    weight_decay: float = Field(0.0, ge=0.0, description="a weight decay >= 0")
    # Clipping bounds the step a rare exploding batch can take (W near I). 5.0 trained more
    # smoothly than 1.0 at L = 100; at L = 300 a run clipped at 1.0 diverged.
    clip_grad_norm: float | None = Field(
        5.0, gt=0.0, description="a gradient-norm limit > 0, or null for none"
    )
    batch_size: int = Field(64, gt=0, strict=True, description="a positive batch size")
    # The paper's bounds are polynomial in L only when beta_W = ||W^T||_1 <= 1. None leaves
    # W free (the paper's setting); a number projects W after every optimizer step: each
    # row whose absolute sum exceeds it is scaled down to it (the `constrained` profile).
    w_row_sum_max: float | None = Field(
        None,
        gt=0.0,
        description="a bound > 0 on every absolute row sum of W after each step, or null for none",
    )
    # Test accuracy levels off by ~10 epochs (15 epochs gained < 1 point at L = 100 and
    # widened the train-test gap); 10 epochs is ~1-1.5 min at L = 100 on two CPU cores.
    epochs: int = Field(10, gt=0, strict=True, description="a positive number of epochs")
    # Stop before `epochs` once the clean training accuracy (on the monitored training
    # subset: the whole training set up to 5,000 reviews) reaches this value: `epochs` is
    # then a cap (the `fit` profile). None: always train `epochs` epochs.
    stop_train_accuracy: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="a clean training accuracy in (0, 1] to stop at, or null for none",
    )

    # Data and evaluation. None = the full 25,000-review split.
    n_train: int | None = Field(
        None, gt=1, strict=True, description="a training subset size >= 2, or null for all"
    )
    n_test: int | None = Field(
        None, gt=1, strict=True, description="a test subset size >= 2, or null for all"
    )
    # 250 rows per evaluation batch: larger batches' activations leave the cache, and an
    # evaluation pass over the data gets slower on a CPU (1,000 rows: ~1.7× the time).
    eval_batch_size: int = Field(
        250, gt=0, strict=True, description="a positive evaluation batch size"
    )

    # Where, not what: kept out of run_id (a CPU and a GPU run of one spec are one run).
    # 'auto' is resolved against the cluster before any spec is built (tasks/ray_pool.py).
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="a torch device: 'cpu', 'cuda' or 'cuda:N'",
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise _parameter_error(err) from None

    @field_validator("*", mode="after")
    @classmethod
    def _one_zero(cls, value: Any) -> Any:
        """-0.0 is 0.0 (`--sigma -0` is σ = 0): one value, one run_id. Any other spelling
        of a number (0, "0", 1e-1 for 0.1) is already the same float once validated."""
        return value + 0.0 if isinstance(value, float) else value

    @property
    def run_id(self) -> str:
        """16 hex digits naming this run: the hash of every field except `device`."""
        return content_key(self._hashed(), length=16)

    @property
    def group_id(self) -> str:
        """The run_id without the seed: runs that differ only by seed share it (one point
        of a figure, one mean ± s.e.)."""
        return self._hash_without("seed")

    @property
    def experiment_id(self) -> str:
        """The run_id without seed, σ and L: the runs of one experiment's grid (one series
        of a figure, one section of a report). Runs with another hidden size, epoch count,
        optimizer, ... belong to another experiment and are never averaged with these."""
        return self._hash_without("seed", "sigma", "L")

    @property
    def pack_id(self) -> str:
        """The run_id without seed and σ: runs that can be trained together as one batched
        model (rnngen.packed), since they differ only in what each member draws."""
        return self._hash_without("seed", "sigma")

    def _hash_without(self, *names: str) -> str:
        payload = self._hashed()
        for name in names:
            del payload[name]
        return content_key(payload, length=16)

    def _hashed(self) -> dict[str, Any]:
        fields = self.model_dump(exclude=set(NOT_HASHED))
        unset = {name for name in HASHED_WHEN_SET if fields[name] is None}
        return {"spec_version": SPEC_VERSION, **{k: v for k, v in fields.items() if k not in unset}}

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise _parameter_error(err) from None


def _parameter_error(err: ValidationError) -> ParameterError:
    """One paragraph per bad field: its name, the value given, what is allowed."""
    parts = []
    for e in err.errors():
        name = ".".join(str(p) for p in e["loc"][:1]) or "spec"
        field = RunSpec.model_fields.get(name)
        if e["type"] == "extra_forbidden":
            allowed = f"the known parameters are {', '.join(RunSpec.model_fields)}"
            parts.append(f"unknown run parameter {name!r}; {allowed}.")
            continue
        wanted = field.description if field is not None and field.description else e["msg"]
        got = f"got {e['input']!r}" if e["type"] != "missing" else "it is missing"
        parts.append(f"run parameter {name!r} must be {wanted}; {got} ({e['msg']}).")
    return ParameterError(" ".join(parts))


# ------------------------------------------------------------------------------------- grids


def _check_axes(base: dict[str, Any], sweep: dict[str, list[Any]]) -> None:
    """Reject unknown names, empty or duplicated axes before any spec is built."""
    known = RunSpec.model_fields
    for name in [*base, *sweep]:
        if name not in known:
            raise ParameterError(
                f"unknown run parameter {name!r} in the grid; the known "
                f"parameters are {', '.join(known)}."
            )
    for name, values in sweep.items():
        if name in base:
            raise ParameterError(
                f"run parameter {name!r} is both fixed and swept; give it in one place only."
            )
        if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
            raise ParameterError(
                f"the sweep over {name!r} must be a list of values, got {values!r}."
            )
        if len(values) == 0:
            raise ParameterError(
                f"the sweep over {name!r} is empty; give at least one value "
                "(e.g. seeds [0, 1, 2, 3, 4])."
            )
        for i, v in enumerate(values):
            if any(v == w for w in values[:i]):
                raise ParameterError(
                    f"the sweep over {name!r} lists the value {v!r} twice; "
                    "each value must appear once."
                )


def expand_grid(base: dict[str, Any], sweep: dict[str, list[Any]]) -> list[RunSpec]:
    """Every combination of the swept values on top of `base`, in a fixed order.

    Axes vary in the order given, the last one fastest (like nested for-loops).
    Example: ``expand_grid({"data_key": k}, {"L": [100, 200], "sigma": [0.0, 0.1],
    "seed": [0, 1, 2]})`` gives 12 specs. Every value is validated first; an invalid
    grid raises `ParameterError` before anything runs.
    """
    _check_axes(base, sweep)
    names = list(sweep)
    specs = []
    for combo in itertools.product(*(sweep[n] for n in names)):
        point = dict(zip(names, combo, strict=True))
        try:
            specs.append(RunSpec(**base, **point))
        except ParameterError as err:
            raise ParameterError(f"grid point {point}: {err}") from None
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ParameterError(
            "the grid yields the same run more than once (an axis such as "
            "'device' does not change what a run computes); sweep only "
            "fields that change the result."
        )
    return specs
