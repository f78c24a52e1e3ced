"""Profiles: the named sizes of the study.

A profile fixes the grid (L × σ × seed), the training settings that differ from the
RunSpec defaults, and where cells run (`device`: 'auto' picks the cluster's GPUs when it
has any, else its CPUs). Command-line overrides go on top. The defaults themselves
(optimizer, learning rate, clipping, ...) are RunSpec's, justified in rnngen/specs.py.

- `quick`: the whole pipeline on real data, reduced to run in minutes on a laptop.
- `paper`: the grid of the paper (its section 6) on all the data.
- `paper-long`, `sigma-wide`, `constrained`: three questions the paper leaves open, each at
  L = 100 with 3 seeds on all the data (see each profile's description).
- `constrained-099`: as `constrained` with β_W ≤ 0.99, where Remark 6 is defined.
- `fit`: small training sets trained until they are fitted (clean training accuracy 0.99).
- `zoo`: a factorial design over more axes than σ, on which generalization measures are
  ranked (rnngen.ranking).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rnngen.corpus import DEFAULT_LENGTHS
from rnngen.errors import ParameterError

DEVICES = ("auto", "cpu", "cuda")
PAPER_SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    lengths: tuple[int, ...]
    sigmas: tuple[float, ...]
    seeds: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)  # RunSpec fields beyond the defaults
    # More swept RunSpec fields beside L, σ and seed (a factorial design), e.g. hidden sizes.
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    device: str = "cpu"  # one of DEVICES
    gpu_fraction: float = 0.25  # of one GPU per training cell, when cells run on cuda
    # Cells trained together as one batched model (rnngen.packed), one GPU per pack.
    # 0 = automatic: on GPUs every σ × seed of one L; on CPUs 1 (packing does not pay there:
    # bench/bench_train.py measures it).
    pack_size: int = 0
    spectrum_n_train: int | None = None  # None: all 25,000 training reviews
    # Settings of later stages beyond their defaults (rnngen.settings), by stage name.
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    out: str = "data"  # the folder its deployment writes to (the CLI's --out default is data)


# The later stages' settings of the profiles trained on the full data: flatness searched on
# 500 training reviews per model (two bisections of Monte Carlo passes per model, affordable
# on two CPU cores for a few hundred models), the ranking's intervals from 1,000 bootstrap
# resamples of the models.
FULL_DATA_STAGES: dict[str, dict[str, Any]] = {
    "measures": {"flatness_reviews": 500, "n_resamples": 1000}
}

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        "real IMDB and GloVe, reduced so every stage at every L runs in minutes on 2 cores: "
        "3,000 train / 2,000 test reviews per run, hidden 32, 4 epochs at lr 1e-3 "
        "(the smaller model learns faster at the larger rate), 3 σ × 2 seeds",
        lengths=DEFAULT_LENGTHS,
        sigmas=(0.0, 0.2, 0.4),
        seeds=(0, 1),
        train={"hidden": 32, "epochs": 4, "lr": 1e-3, "n_train": 3000, "n_test": 2000},
        stages={"measures": {"flatness_reviews": 300, "n_resamples": 200}},
    ),
    "paper": Profile(
        "paper",
        "the full grid of the paper on all the data (25,000 / 25,000): L ∈ {100, 200, 300} × "
        "σ ∈ {0, 0.1, 0.2, 0.3, 0.4} × 5 seeds, RunSpec defaults",
        lengths=DEFAULT_LENGTHS,
        sigmas=PAPER_SIGMAS,
        seeds=(0, 1, 2, 3, 4),
        device="auto",
        stages=FULL_DATA_STAGES,
        out="data/paper",
    ),
    "paper-long": Profile(
        "paper-long",
        "trained to fit: the paper's σ grid at L = 100 for 40 epochs (4× the default), "
        "3 seeds; does the U-shape appear once the models overfit?",
        lengths=(100,),
        sigmas=PAPER_SIGMAS,
        seeds=(0, 1, 2),
        train={"epochs": 40},
        device="auto",
        stages=FULL_DATA_STAGES,
        out="data/paper-long",
    ),
    "sigma-wide": Profile(
        "sigma-wide",
        "where does the rise begin: σ ∈ {0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5} at "
        "L = 100, 8 seeds, everything else as in the paper profile",
        lengths=(100,),
        sigmas=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5),
        seeds=tuple(range(8)),
        device="auto",
        stages=FULL_DATA_STAGES,
        out="data/sigma-wide",
    ),
    "constrained": Profile(
        "constrained",
        "the bound's own regime: after every optimizer step each row of W is scaled down to "
        "an absolute sum of at most 1 (β_W ≤ 1), the paper's σ grid at L = 100, 3 seeds",
        lengths=(100,),
        sigmas=PAPER_SIGMAS,
        seeds=(0, 1, 2),
        train={"w_row_sum_max": 1.0},
        device="auto",
        stages=FULL_DATA_STAGES,
        out="data/constrained",
    ),
    "constrained-099": Profile(
        "constrained-099",
        "the constrained profile with every row of W capped at an absolute sum of 0.99 "
        "(β_W ≤ 0.99 < 1), so that Remark 6's bound is defined: the paper's σ grid at "
        "L = 100, 3 seeds",
        lengths=(100,),
        sigmas=PAPER_SIGMAS,
        seeds=(0, 1, 2),
        train={"w_row_sum_max": 0.99},
        device="auto",
        stages=FULL_DATA_STAGES,
        out="data/constrained-099",
    ),
    "fit": Profile(
        "fit",
        "models that fit their data: L = 100 on 2,500 training reviews (class-balanced), "
        "trained until the clean training accuracy reaches 0.99 or for at most 60 epochs, "
        "σ ∈ {0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8}, 5 seeds; tested on all 25,000 reviews",
        lengths=(100,),
        sigmas=(0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8),
        seeds=(0, 1, 2, 3, 4),
        train={"n_train": 2500, "epochs": 60, "stop_train_accuracy": 0.99},
        device="auto",
        stages=FULL_DATA_STAGES,
        out="data/fit",
    ),
    "certificates": Profile(
        "certificates",
        "PAC-Bayes-kl certificates (rnngen.certify): the paper's σ grid at L = 100, one "
        "seed, the paper profile's recipe for the prior mean, all 25,000 / 25,000 reviews, "
        "one sampled network per bound-set example",
        lengths=(100,),
        sigmas=PAPER_SIGMAS,
        seeds=(0,),
        device="auto",
        # One fresh network per bound-set example (m = 12,500 draws): the Monte Carlo step
        # then costs ~0.01 instead of ~0.1 of the certificate (rnngen/certify.py).
        stages={"certify": {"mc_draws": "per_example", "mc_passes": 1}},
        out="data/certificates",
    ),
    "zoo": Profile(
        "zoo",
        "models that differ for more reasons than σ, to rank generalization measures: a "
        "factorial design at L = 100 over hidden size {32, 128} × training-set size "
        "{1,000, 4,000, 16,000} × epochs {4, 16} × σ {0, 0.2, 0.4}, 3 seeds (108 models), "
        "every model tested on all 25,000 test reviews",
        lengths=(100,),
        sigmas=(0.0, 0.2, 0.4),
        seeds=(0, 1, 2),
        axes={"hidden": (32, 128), "n_train": (1000, 4000, 16000), "epochs": (4, 16)},
        device="auto",
        stages=FULL_DATA_STAGES,
        out="data/zoo",
    ),
}


def get_profile(name: str) -> Profile:
    """A built-in profile by name, or the profile in a file `*.toml` (rnngen/profile_file.py)."""
    if str(name).endswith(".toml"):
        from rnngen.profile_file import load_profile_file  # it imports this module

        return load_profile_file(name)
    try:
        return PROFILES[name]
    except KeyError:
        raise ParameterError(
            f"unknown --profile {name!r}; choose one of {', '.join(PROFILES)}."
        ) from None


def check_device(device: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N', or a ParameterError naming --device."""
    base = device.split(":", 1)[0]
    if base not in DEVICES or (
        ":" in device and (base != "cuda" or not device.split(":", 1)[1].isdigit())
    ):
        raise ParameterError(
            f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}."
        )
    return device
