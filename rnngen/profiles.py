"""Profiles: the named sizes of the study (`quick` for a laptop, `paper` for GPU nodes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnngen.errors import ParameterError


@dataclass(frozen=True)
class Profile:
    name: str
    lengths: tuple[int, ...]
    description: str
    extra: dict = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick", (100, 200, 300),
        "real IMDB and GloVe, reduced so every stage at every L runs in ~10 min on 2 cores"),
    "paper": Profile(
        "paper", (100, 200, 300),
        "the full grid of STUDY.md section 6 on all the data, sized for GPU nodes"),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ParameterError(f"unknown --profile {name!r}; choose one of "
                             f"{', '.join(PROFILES)}.") from None
