"""Profiles: the named sizes of the study (`quick` for a laptop, `paper` for GPU nodes).

A profile fixes the grid (L × σ × seed) and the training settings that differ from the
RunSpec defaults; command-line overrides go on top. The defaults themselves (optimizer,
learning rate, clipping, ...) are RunSpec's, justified in rnngen/specs.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rnngen.errors import ParameterError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    lengths: tuple[int, ...]
    sigmas: tuple[float, ...]
    seeds: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)  # RunSpec fields beyond the defaults
    resources: dict[str, float] = field(default_factory=lambda: {"CPU": 1})
    spectrum_n_train: int | None = None  # None: all 25,000 training reviews


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        "real IMDB and GloVe, reduced so every stage at every L runs in ~10 min on 2 cores: "
        "3,000 train / 2,000 test reviews per run, hidden 32, 4 epochs at lr 1e-3 "
        "(the smaller model learns faster at the larger rate), 3 σ × 2 seeds",
        lengths=(100, 200, 300), sigmas=(0.0, 0.2, 0.4), seeds=(0, 1),
        train={"hidden": 32, "epochs": 4, "lr": 1e-3, "n_train": 3000, "n_test": 2000},
    ),
    "paper": Profile(
        "paper",
        "the full grid of STUDY.md section 6 on all the data (25,000 / 25,000), for GPU nodes",
        lengths=(100, 200, 300), sigmas=(0.0, 0.1, 0.2, 0.3, 0.4), seeds=(0, 1, 2, 3, 4),
        train={"device": "cuda"}, resources={"CPU": 1, "GPU": 0.25},
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ParameterError(f"unknown --profile {name!r}; choose one of "
                             f"{', '.join(PROFILES)}.") from None
