"""Typed, frozen settings of each grid stage: what a stage is run *with*, beside what it
runs *on* (a RunSpec, an L).

A setting either changes what a stage's rows hold (δ, the α grid, a tolerance) or only
how the stage runs (retries, GPU fraction, pack size). The first kind is hashed into the
row's `settings_key`: a row computed under other settings is not "done" and is computed
again (`rnngen bounds --delta 0.01` after a run at 0.05 recomputes every row). The second
kind is not part of any row's identity.

Each settings object is validated once, when it is built, and every bad field is named in
one message (pydantic collects them all), in the manner of torchtune's config checks.
Profiles carry them and the CLI builds its options from their fields.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rnngen.bounds import DEFAULT_ALPHA_GRID
from rnngen.errors import ParameterError
from rnngen.hashing import content_key

# The version of the bound formulas: part of every bounds row's settings_key, so rows from
# an older formula are recomputed. Raise it whenever rnngen/bounds.py changes what it computes.
BOUNDS_FORMULA_VERSION = 1


def settings_error(err: ValidationError, model: type[BaseModel], what: str) -> ParameterError:
    """All of a validation's errors in one message, one clause per bad field: its name as
    an option, the value given and what is allowed."""
    parts = []
    for e in err.errors():
        name = str(e["loc"][0]) if e["loc"] else what
        field = model.model_fields.get(name)
        option = "--" + name.replace("_", "-")
        if e["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            parts.append(f"unknown {what} {name!r}; the known ones are {known}.")
            continue
        wanted = field.description if field is not None and field.description else e["msg"]
        parts.append(f"{option} must be {wanted}; got {e['input']!r}.")
    return ParameterError(f"invalid {what}s: " + " ".join(parts))


class StageSettings(BaseModel):
    """Fields every grid stage has. Subclasses add their own and name the ones that enter
    a row's identity in `KEYED`."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    WHAT: ClassVar[str] = "stage setting"
    KEYED: ClassVar[tuple[str, ...]] = ()

    max_retries: int = Field(
        1, ge=0, le=100, strict=True, description="a number of retries from 0 to 100"
    )
    gpu_fraction: float = Field(
        0.25, gt=0.0, le=1.0, description="a share of one GPU per unit, in (0, 1]"
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise settings_error(err, type(self), self.WHAT) from None

    def keyed(self) -> dict[str, Any]:
        """The settings that change a row's values (recorded in every row)."""
        return {name: getattr(self, name) for name in self.KEYED}

    @property
    def settings_key(self) -> str:
        """12 hex digits naming `keyed()`: equal keys, interchangeable rows."""
        return content_key({"stage": self.WHAT, **self.keyed()}, length=12)


class TrainSettings(StageSettings):
    """How the training grid runs. Nothing here changes a cell's result (that is the
    RunSpec's), so no field is keyed."""

    WHAT: ClassVar[str] = "train setting"
    max_retries: int = Field(
        2, ge=0, le=100, strict=True, description="a number of retries from 0 to 100"
    )
    # 0 = automatic: on GPUs every σ × seed of one L; on CPUs 1 (bench/bench_train.py).
    pack_size: int = Field(
        0, ge=0, strict=True, description="0 (automatic) or a positive number of cells"
    )


class BoundsSettings(StageSettings):
    """The bounds stage: δ and the α grid enter every row (with the formula version)."""

    WHAT: ClassVar[str] = "bounds setting"
    KEYED: ClassVar[tuple[str, ...]] = ("delta", "alphas", "formula_version")

    delta: float = Field(0.05, gt=0.0, lt=1.0, description="a confidence δ in (0, 1)")
    alphas: tuple[float, ...] = Field(
        DEFAULT_ALPHA_GRID,
        min_length=1,
        description="a non-empty list of finite margins α > 0, each given once",
    )
    formula_version: int = Field(BOUNDS_FORMULA_VERSION, ge=1, strict=True)

    @field_validator("alphas")
    @classmethod
    def _positive_distinct(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if any(not a > 0 for a in values):
            raise ValueError("every α must be > 0")
        if len(set(values)) != len(values):
            raise ValueError("an α is given twice")
        return tuple(float(a) for a in values)

    @property
    def custom_grid(self) -> bool:
        return self.alphas != tuple(DEFAULT_ALPHA_GRID)


class SpectrumSettings(StageSettings):
    """The spectrum stage: the certification tolerance enters the rows."""

    WHAT: ClassVar[str] = "spectrum setting"
    KEYED: ClassVar[tuple[str, ...]] = ("tol",)
    max_retries: int = Field(
        0, ge=0, le=100, strict=True, description="a number of retries from 0 to 100"
    )
    tol: float = Field(1e-8, gt=0.0, lt=1.0, description="a relative tolerance in (0, 1)")


# The version of the measure formulas (rnngen/measures.py): part of every measure row's
# settings_key. Raise it whenever a measure changes what it computes.
MEASURES_VERSION = 2


class MeasuresSettings(StageSettings):
    """The measures stage: the bound measures' δ and the flatness search enter the rows."""

    WHAT: ClassVar[str] = "measures setting"
    KEYED: ClassVar[tuple[str, ...]] = (
        "delta",
        "flatness_reviews",
        "flatness_steps",
        "flatness_draws",
        "measures_version",
    )

    delta: float = Field(0.05, gt=0.0, lt=1.0, description="a confidence δ in (0, 1)")
    # The fixed training subset on which flatness perturbs the weights: the first reviews of
    # the model's own (class-balanced) training split.
    flatness_reviews: int = Field(
        2000, ge=10, strict=True, description="a number of training reviews >= 10"
    )
    flatness_steps: int = Field(12, ge=1, le=60, strict=True, description="bisection steps, 1-60")
    flatness_draws: int = Field(
        4, ge=1, le=1000, strict=True, description="Monte Carlo draws per σ′, 1-1000"
    )
    flatness: bool = Field(True, description="true to compute the flatness measures")
    measures_version: int = Field(MEASURES_VERSION, ge=1, strict=True)
