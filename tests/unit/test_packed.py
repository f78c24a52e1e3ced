"""``rnngen.packed``: a pack of runs trained as one batched model equals each run alone."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from rnngen.errors import ParameterError
from rnngen.packed import check_pack, train_pack
from rnngen.train import train_model
from tests.unit.test_train import TEST, TRAIN, embeddings, tiny_spec


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_run(packed, alone, rtol=1e-5) -> None:
    assert packed.status == alone.status
    for name in ("U", "W", "V"):
        np.testing.assert_allclose(packed.weights[name], alone.weights[name], rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(packed.train_margins, alone.train_margins, rtol=rtol, atol=1e-5)
    np.testing.assert_allclose(packed.test_margins, alone.test_margins, rtol=rtol, atol=1e-5)
    for field in ("train_error_noisy", "train_error_clean", "test_error_clean"):
        assert getattr(packed, field) == getattr(alone, field), field
    for p, a in zip(packed.history, alone.history, strict=True):
        assert p.train_loss == pytest.approx(a.train_loss, rel=rtol)
        assert p.train_accuracy_noisy == a.train_accuracy_noisy


@pytest.mark.parametrize(
    "options",
    [
        {},  # Adam, clipped at 5 (the defaults' shape)
        {"optimizer": "sgd", "momentum": 0.9, "clip_grad_norm": 0.5, "weight_decay": 1e-3},
        {"w_row_sum_max": 0.9},  # the projection after every step
    ],
)
def test_each_member_equals_its_run_alone(options):
    specs = [
        tiny_spec(sigma=s, seed=seed, epochs=1, **options)
        for s, seed in ((0.0, 0), (0.3, 0), (0.3, 1))
    ]
    packed = train_pack(specs, TRAIN, TEST, embeddings())
    for spec, result in zip(specs, packed, strict=True):
        assert_same_run(result, train_model(spec, TRAIN, TEST, embeddings()))


def test_a_diverging_member_is_recorded_and_the_others_are_kept():
    # σ = 1e38: the noisy inputs overflow float32 in the first batch, the loss turns
    # non-finite, and that member stops as it would alone.
    specs = [tiny_spec(sigma=0.2, seed=0, epochs=2), tiny_spec(sigma=1e38, seed=0, epochs=2)]
    kept, gone = train_pack(specs, TRAIN, TEST, embeddings())
    alone = train_model(specs[1], TRAIN, TEST, embeddings())
    # Overflowing arithmetic need not overflow at the same batch in both forms of eq. (1);
    # what must hold is that the member is recorded as diverged, as alone.
    assert alone.status == "diverged" and gone.status == "diverged"
    assert len(gone.history) == gone.diverged_epoch - 1
    assert math.isnan(gone.test_error_clean) and math.isnan(gone.gen_error)
    assert_same_run(kept, train_model(specs[0], TRAIN, TEST, embeddings()))


def test_epochs_are_reported_per_member():
    specs = [tiny_spec(sigma=0.1, seed=s, epochs=2) for s in (0, 1)]
    heard = []
    train_pack(
        specs, TRAIN, TEST, embeddings(), on_epoch=lambda p, log: heard.append((p, log.epoch))
    )
    assert sorted(heard) == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_members_may_differ_only_in_sigma_and_seed():
    with pytest.raises(ParameterError, match="hidden = 16"):
        check_pack([tiny_spec(), tiny_spec(seed=1, hidden=16)])
    with pytest.raises(ParameterError, match="twice"):
        check_pack([tiny_spec(), tiny_spec()])
    check_pack([tiny_spec(sigma=0.1, seed=3), tiny_spec(sigma=0.4, seed=0)])
