"""``rnngen.train`` on tiny synthetic data: noise, seeding, divergence, evaluation."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from rnngen.bounds import beta
from rnngen.corpus import SplitArrays
from rnngen.errors import ParameterError
from rnngen.model import ReLURNN, reference_forward
from rnngen.specs import RunSpec
from rnngen.train import (
    TrainResult,
    add_noise,
    embed,
    epoch_batches,
    evaluate,
    margins,
    seed_streams,
    spec_splits,
    split_batches,
    subset,
    train_model,
)

VOCAB, D, L = 20, 4, 6


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads; on a busy machine extra threads only wait.

    (The first optimizer step of a process also imports torch._dynamo: a few seconds once.)
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PAD = VOCAB  # the last embedding row is the zero padding vector, as in the real table


def embeddings() -> np.ndarray:
    """Words 0-9 carry +1 on coordinate 0 ('positive'), words 10-19 carry -1."""
    rng = np.random.default_rng(0)
    table = np.zeros((VOCAB + 1, D), dtype=np.float32)
    table[:VOCAB, 1:] = rng.normal(scale=0.3, size=(VOCAB, D - 1))
    table[:VOCAB, 0] = np.where(np.arange(VOCAB) < 10, 1.0, -1.0)
    return table


def synthetic_split(n: int, seed: int) -> SplitArrays:
    """Pre-padded reviews of 2..L words; label 1 iff most words are 'positive'."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, L), PAD, dtype=np.int32)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        length = int(rng.integers(2, L + 1)) | 1  # odd lengths: no ties (2 -> 3)
        length = min(length, L - 1) if length > L else length
        words = rng.integers(0, VOCAB, size=length)
        ids[i, L - length :] = words
        labels[i] = int(np.sum(words < 10) > length / 2)
    return SplitArrays(ids, labels)


TRAIN, TEST = synthetic_split(128, 1), synthetic_split(96, 2)


def tiny_spec(**changes: Any) -> RunSpec:
    base = {
        "L": L,
        "sigma": 0.0,
        "seed": 0,
        "data_key": "synthetic",
        "hidden": 8,
        "epochs": 2,
        "batch_size": 16,
        "eval_batch_size": 40,
        "lr": 0.01,
    }
    return RunSpec(**{**base, **changes})


def run(**changes: Any) -> TrainResult:
    return train_model(tiny_spec(**changes), TRAIN, TEST, embeddings())


# ------------------------------------------------------------------------------------- noise


def test_add_noise_statistics_and_freshness() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(200, 50, 10)
    sigma, n = 0.3, x.numel()
    first, second = add_noise(x, sigma, gen), add_noise(x, sigma, gen)
    for eps in (first, second):
        assert abs(float(eps.mean())) < 5 * sigma / math.sqrt(n)
        assert float(eps.var()) == pytest.approx(sigma**2, rel=0.02)
    assert not torch.equal(first, second)  # a fresh draw each time


def test_zero_sigma_returns_the_input_and_draws_nothing() -> None:
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    x = torch.ones(3, 4, 5)
    assert add_noise(x, 0.0, gen) is x
    assert torch.equal(gen.get_state(), state)


def test_training_noise_is_fresh_per_use_and_covers_padding() -> None:
    """Two epochs: every example appears once per epoch and never sees the same noise twice."""
    spec = tiny_spec(sigma=0.5, batch_size=32)
    streams = seed_streams(spec)
    table = torch.from_numpy(embeddings())
    clean = embed(TRAIN.ids, table)
    labels = torch.from_numpy(TRAIN.labels)
    noise_of: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(TRAIN))}
    for _ in range(2):
        for idx, x, y in epoch_batches(TRAIN, table, spec, streams):
            assert torch.equal(y, labels[idx])  # labels travel with their inputs
            for i, eps in zip(idx.tolist(), x - clean[idx], strict=True):
                noise_of[i].append(eps)
    for draws in noise_of.values():
        assert len(draws) == 2 and not torch.equal(draws[0], draws[1])
    first = torch.stack([draws[0] for draws in noise_of.values()])  # (n, L, D)
    assert float(first.std()) == pytest.approx(0.5, rel=0.05)
    padded = torch.from_numpy(TRAIN.ids == PAD)
    assert padded.any() and float(first[padded].std()) == pytest.approx(0.5, rel=0.15)


def curves(result: TrainResult) -> list[tuple[float, ...]]:
    """A run's history without its timings: what the same spec must reproduce exactly."""
    return [
        (h.train_loss, h.train_accuracy_noisy, h.train_accuracy_clean, h.test_accuracy)
        for h in result.history
    ]


# ----------------------------------------------------------------------------------- seeding


def test_same_spec_gives_bit_identical_runs() -> None:
    a, b = run(sigma=0.2), run(sigma=0.2)
    for name in ("U", "W", "V"):
        np.testing.assert_array_equal(a.weights[name], b.weights[name])
    assert curves(a) == curves(b)
    np.testing.assert_array_equal(a.train_margins, b.train_margins)
    np.testing.assert_array_equal(a.test_margins, b.test_margins)


def test_another_seed_gives_another_run() -> None:
    a, b = run(sigma=0.2, seed=0), run(sigma=0.2, seed=1)
    assert not np.array_equal(a.weights["U"], b.weights["U"])
    assert curves(a) != curves(b)


def test_streams_are_independent_and_sigma_leaves_init_alone() -> None:
    streams = seed_streams(tiny_spec())
    draws = [
        torch.randn(8, generator=getattr(streams, name))
        for name in ("init", "order", "noise", "eval_noise")
    ]
    assert all(not torch.equal(draws[i], draws[j]) for i in range(4) for j in range(i))
    init0 = ReLURNN(D, 8, generator=seed_streams(tiny_spec(sigma=0.0)).init).weights_numpy()
    init1 = ReLURNN(D, 8, generator=seed_streams(tiny_spec(sigma=0.3)).init).weights_numpy()
    np.testing.assert_array_equal(init0["U"], init1["U"])


# ------------------------------------------------------------------------------- divergence


def test_non_finite_loss_stops_the_run_as_diverged() -> None:
    # W = 1e12 I: after a few steps h_t exceeds float32's range, in the very first batch.
    result = train_model(tiny_spec(epochs=3, init_scale=1e12), TRAIN, TEST, embeddings())
    assert result.status == "diverged" and result.diverged_epoch == 1
    assert result.epochs_run == 0 and result.history == []
    assert math.isnan(result.test_error_clean) and math.isnan(result.gen_error)
    assert result.to_row()["status"] == "diverged"


def test_divergence_records_the_epoch_it_happened_in() -> None:
    result = run(optimizer="sgd", lr=1e6, clip_grad_norm=None, epochs=4, init_scale=3.0)
    assert result.status == "diverged"
    assert result.diverged_epoch is not None and 1 <= result.diverged_epoch <= 4
    assert result.epochs_run == result.diverged_epoch - 1 == len(result.history)


# ------------------------------------------------------------------------------- evaluation


def test_margins_are_true_minus_best_other() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    np.testing.assert_array_equal(margins(logits, torch.tensor([0, 1])).numpy(), [3.0, 0.0])
    three = torch.tensor([[1.0, 3.0, 2.5], [4.0, 3.0, 2.5]])
    np.testing.assert_array_equal(margins(three, torch.tensor([2, 0])).numpy(), [-0.5, 1.0])


def test_test_inputs_are_clean_and_the_noisy_draw_is_reproducible() -> None:
    spec = tiny_spec(sigma=0.4)
    result = train_model(spec, TRAIN, TEST, embeddings())
    w, table = result.weights, embeddings().astype(np.float64)
    y = reference_forward(w["U"], w["W"], w["V"], table[TEST.ids])
    expected = y[np.arange(len(TEST)), TEST.labels] - y[np.arange(len(TEST)), 1 - TEST.labels]
    np.testing.assert_allclose(result.test_margins, expected, rtol=1e-4, atol=1e-5)
    assert result.test_error_clean == np.mean(expected <= 0)
    # The recorded noisy training draw: split_batches with the eval_noise stream.
    model = ReLURNN(D, spec.hidden)
    with torch.no_grad():
        for name in ("U", "W", "V"):
            getattr(model, name).copy_(torch.from_numpy(w[name]))
    batches = split_batches(
        TRAIN,
        torch.from_numpy(embeddings()),
        spec.eval_batch_size,
        spec.sigma,
        seed_streams(spec).eval_noise,
    )
    np.testing.assert_array_equal(evaluate(model, batches).margins, result.train_margins)
    clean = evaluate(model, split_batches(TRAIN, torch.from_numpy(embeddings()), 40)).margins
    assert not np.allclose(clean, result.train_margins)
    assert result.train_error_clean == np.mean(clean <= 0)


def test_result_row_and_learning() -> None:
    result = run(epochs=15)
    assert result.status == "done" and result.epochs_run == 15 and len(result.history) == 15
    assert result.test_accuracy > 0.85  # the synthetic task is easy: this checks training works
    assert result.gen_error == result.test_error_clean - result.train_error_noisy
    assert result.train_error_noisy == result.train_error_clean  # sigma = 0
    row = result.to_row()
    assert all(isinstance(v, int | float | str | type(None)) for v in row.values())
    assert {
        "margin_train_q05",
        "margin_train_mean",
        "margin_test_q95",
        "gen_error",
        "samples_per_second",
        "diverged_epoch",
    } <= set(row)
    assert row["n_train"] == len(TRAIN) and row["n_test"] == len(TEST)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_each_optimizer_trains(optimizer: str) -> None:
    result = run(
        optimizer=optimizer,
        lr=0.01,
        momentum=0.5 if optimizer != "adam" else 0.0,
        weight_decay=1e-4,
        clip_grad_norm=5.0,
    )
    assert result.status == "done" and np.all(np.isfinite(curves(result)))


def test_spec_splits_take_balanced_subsets_of_length_L() -> None:
    n = 12
    table = pa.table(
        {
            "split": pa.array(["train", "test"] * n).dictionary_encode(),
            "label": pa.array([0, 0, 1, 1] * (n // 2), pa.int8()),
            "review_index": pa.array(range(2 * n), pa.int32()),
            "token_ids": pa.array(
                [list(range(i % 9)) for i in range(2 * n)], pa.large_list(pa.int32())
            ),
        }
    )
    train, test = spec_splits(table, PAD, tiny_spec(n_train=4))
    assert train.ids.shape == (4, L) and sorted(train.labels.tolist()) == [0, 0, 1, 1]
    assert test.ids.shape == (n, L)


def test_split_of_another_length_is_refused() -> None:
    with pytest.raises(ParameterError, match="L = 7"):
        train_model(tiny_spec(L=7), TRAIN, TEST, embeddings())


def test_pure_layer_imports_neither_prefect_nor_ray() -> None:
    code = (
        "import sys, rnngen.model, rnngen.specs, rnngen.train; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'ray')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------- history


def test_history_has_one_record_per_epoch_and_its_last_matches_the_final_errors() -> None:
    spec = tiny_spec(sigma=0.3, epochs=3)
    result = train_model(spec, TRAIN, TEST, embeddings())
    assert [h.epoch for h in result.history] == [1, 2, 3]
    last = result.history[-1]
    # The splits are smaller than HISTORY_ROWS, so the history measures the whole splits
    # after the last epoch: exactly the final clean errors.
    assert last.eval_rows == len(TRAIN)
    assert last.train_accuracy_clean == 1.0 - result.train_error_clean
    assert last.test_accuracy == result.test_accuracy
    assert all(0.0 <= h.train_accuracy_noisy <= 1.0 and h.seconds > 0 for h in result.history)


def test_subset_is_fixed_class_balanced_and_in_stored_order() -> None:
    split = synthetic_split(400, seed=5)
    a, b = subset(split, 100), subset(split, 100)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert len(a) == 100 and np.bincount(a.labels).tolist() == [50, 50]
    rows = [np.flatnonzero((split.ids == row).all(axis=1))[0] for row in a.ids[:5]]
    assert rows == sorted(rows)
    assert subset(split, 10_000) is split


# -------------------------------------------------------------------------------- projection


def test_projection_scales_only_the_rows_above_the_limit() -> None:
    from rnngen.train import project_rows

    W = torch.tensor([[0.2, -0.3], [3.0, -1.0]])
    project_rows(W, 1.0)
    np.testing.assert_allclose(W.numpy(), [[0.2, -0.3], [0.75, -0.25]], rtol=1e-6)


def test_constrained_training_keeps_beta_W_at_most_the_limit() -> None:
    free = run(lr=0.05, epochs=3)
    bound = run(lr=0.05, epochs=3, w_row_sum_max=0.9)
    assert beta(free.weights["W"]) > 0.9  # W = I starts at row sums of 1
    assert beta(bound.weights["W"]) <= 0.9 * (1 + 1e-6)


def test_training_stops_once_the_clean_training_accuracy_reaches_its_target() -> None:
    """`stop_train_accuracy` makes `epochs` a cap: the run stops after the first epoch whose
    clean training accuracy reaches it, and only then."""
    full = run(epochs=4)
    accuracies = [h.train_accuracy_clean for h in full.history]
    target = accuracies[1]  # reached at epoch 2 at the latest
    first = next(i for i, a in enumerate(accuracies) if a >= target) + 1
    stopped = run(epochs=4, stop_train_accuracy=target)
    assert stopped.epochs_run == len(stopped.history) == first < 4
    assert [h.train_accuracy_clean for h in stopped.history] == accuracies[:first]
    assert run(epochs=4, stop_train_accuracy=1.0).epochs_run == 4 or max(accuracies) >= 1.0
