"""``rnngen.certify`` on tiny synthetic data: settings, the split, the posterior, the
stochastic RNN's map, and one whole cell (identity, disjointness, test-after-certificate)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from rnngen import pacbayes as pb
from rnngen import schemas
from rnngen.certify import (
    CertifySettings,
    GaussianPosterior,
    RNNLogits,
    certificate_of,
    certify_cell,
    certify_streams,
    deterministic_error,
    mc_errors,
    mc_errors_per_example,
    packed_rnn_logits,
    per_example_rnn_logits,
    split_prior_bound,
    train_posterior,
)
from rnngen.corpus import SplitArrays
from rnngen.errors import DataError, ParameterError
from rnngen.model import ReLURNN, reference_forward
from rnngen.rows import ROW_COLUMNS
from rnngen.train import embed, embedding_tensor, evaluate, split_batches
from tests.unit.test_train import embeddings, synthetic_split, tiny_spec

TRAIN, TEST = synthetic_split(200, 11), synthetic_split(120, 12)
TINY = CertifySettings(
    prior_var_grid=(1e-4, 1e-3, 1e-2),
    posterior_epochs=2,
    posterior_lr=0.05,
    m=30,
    select_draws=4,
    draws_per_pass=8,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_weights(P: int, d: int = 4, m: int = 8, k: int = 2, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "U": torch.randn(P, m, d, generator=gen) * 0.5,
        "W": torch.randn(P, m, m, generator=gen) / math.sqrt(m),
        "V": torch.randn(P, k, m, generator=gen),
    }


# ---------------------------------------------------------------------------------- settings


def test_default_settings_are_valid_and_named_by_their_content() -> None:
    s = CertifySettings()
    assert s.delta_per_prior == s.delta / len(s.prior_var_grid)
    assert s.confidence == pytest.approx(1 - s.delta - s.delta_mc)
    assert s.settings_id == CertifySettings().settings_id
    assert s.settings_id != CertifySettings(m=151).settings_id
    assert CertifySettings(prior_var_grid=[1e-6, 1e-5]).prior_var_grid == (1e-6, 1e-5)  # type: ignore[arg-type]


def test_bad_settings_are_all_named_in_one_error() -> None:
    with pytest.raises(ParameterError) as err:
        CertifySettings(
            prior_share=1.0,
            prior_var_grid=(1e-6, -1.0),
            delta=0.0,
            objective="fbbb",  # type: ignore[arg-type]
            m=0,
            draws_per_pass=2.5,  # type: ignore[arg-type]
        )
    message = str(err.value)
    for name in ("prior_share", "prior_var_grid", "delta", "objective", "m must", "draws_per_pass"):
        assert name in message
    with pytest.raises(ParameterError, match="mc_draws"):
        CertifySettings(mc_draws="pointwise")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="twice"):
        CertifySettings(prior_var_grid=(1e-6, 1e-6))


# ------------------------------------------------------------------------------------- split


def test_split_is_disjoint_class_balanced_and_seeded() -> None:
    labels = np.array([0] * 50 + [1] * 30)
    ids = np.arange(1000, 1080)
    prior, bound = split_prior_bound(labels, ids, 0.5, seed=3)
    assert np.intersect1d(ids[prior], ids[bound]).size == 0
    assert np.array_equal(np.sort(np.concatenate([prior, bound])), np.arange(80))
    assert np.sum(labels[prior] == 0) == 25 and np.sum(labels[prior] == 1) == 15
    again, _ = split_prior_bound(labels, ids, 0.5, seed=3)
    other, _ = split_prior_bound(labels, ids, 0.5, seed=4)
    assert np.array_equal(prior, again) and not np.array_equal(prior, other)
    with pytest.raises(DataError, match="twice"):
        split_prior_bound(labels, np.zeros(80, dtype=int), 0.5, seed=0)


def test_streams_come_from_the_seed_and_differ_between_seeds() -> None:
    a, b = certify_streams(tiny_spec(seed=0), 2), certify_streams(tiny_spec(seed=0), 2)
    c = certify_streams(tiny_spec(seed=1), 2)
    assert a.split_seed == b.split_seed != c.split_seed
    draw = [torch.randn(3, generator=s.mc) for s in (a, b, c)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert not torch.equal(
        torch.randn(3, generator=a.grid[0][1]), torch.randn(3, generator=a.grid[1][1])
    )


# --------------------------------------------------------------------------------- posterior


def test_posterior_starts_at_the_prior_and_samples_it() -> None:
    mean = {"a": torch.linspace(-1, 1, 2000), "b": torch.ones(3, 4)}
    q = GaussianPosterior(mean, 0.04)
    assert q.kl_value() == pytest.approx(0.0, abs=1e-6 * 2012)
    with torch.no_grad():
        draws = q.sample(50, torch.Generator().manual_seed(0))
    assert draws["a"].shape == (50, 2000) and draws["b"].shape == (50, 3, 4)
    noise = (draws["a"] - mean["a"]).flatten()
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.005)
    assert float(noise.std()) == pytest.approx(0.2, rel=0.02)
    with torch.no_grad():
        q.z["a"].add_(0.5)
        q.rho["b"].sub_(1.0)
        want = sum(
            pb.kl_diag_gaussians(
                q.mean(n).double().numpy(), q.std(n).double().numpy() ** 2, mean[n].numpy(), 0.04
            )
            for n in ("a", "b")
        )
    assert q.kl_value() == pytest.approx(want, rel=1e-12)
    assert float(q.kl().detach()) == pytest.approx(want, rel=1e-9)
    assert float(q.mean("a")[0].detach()) == pytest.approx(-1.0 + 0.5 * 0.2)


# ------------------------------------------------------------------------------ the RNN's map


def test_packed_and_single_paths_are_eq_1() -> None:
    weights = random_weights(3)
    x = torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(1))
    packed = packed_rnn_logits(weights, x)
    logits_fn = RNNLogits(4, 8, 2)
    for p in range(3):
        one = {name: w[p : p + 1] for name, w in weights.items()}
        ref = reference_forward(*(one[n][0].double().numpy() for n in "UWV"), x.double().numpy())
        np.testing.assert_allclose(packed[p].numpy(), ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(logits_fn(one, x)[0].detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert logits_fn(weights, x).shape == (3, 5, 2)


def test_per_example_path_gives_each_example_its_own_network() -> None:
    weights = random_weights(5)
    x = torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(1))
    every_pair = packed_rnn_logits(weights, x)  # (network, example, k)
    diagonal = every_pair[torch.arange(5), torch.arange(5)]
    torch.testing.assert_close(per_example_rnn_logits(weights, x), diagonal, rtol=1e-5, atol=1e-5)


def test_single_path_passes_gradients_to_the_posterior() -> None:
    prior = {n: w[0] for n, w in random_weights(1).items()}
    q = GaussianPosterior(prior, 1e-2)
    x = torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(1))
    sample = q.sample(1, torch.Generator().manual_seed(2))
    RNNLogits(4, 8, 2)(sample, x).sum().backward()
    packed_grads = {n: (q.z[n].grad.clone(), q.rho[n].grad.clone()) for n in q.names}
    q.zero_grad()
    sample = q.sample(1, torch.Generator().manual_seed(2))
    packed_rnn_logits(sample, x).sum().backward()
    for n in q.names:
        assert q.z[n].grad is not None and float(q.z[n].grad.abs().sum()) > 0
        torch.testing.assert_close(q.z[n].grad, packed_grads[n][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(q.rho[n].grad, packed_grads[n][1], rtol=1e-4, atol=1e-5)


def test_mc_errors_count_margins_as_rnngen_train_does() -> None:
    table = embedding_tensor(embeddings())
    prior = ReLURNN(table.shape[1], 8, 2, generator=torch.Generator().manual_seed(0))
    weights = {n: getattr(prior, n).detach().clone() for n in "UWV"}
    q = GaussianPosterior(weights, 1e-12)  # every draw is the mean network, to float32
    batches = functools.partial(split_batches, TEST, table, 40)
    errors = mc_errors(q, RNNLogits(4, 8, 2), batches, 5, generator=torch.Generator())
    want = evaluate(prior, split_batches(TEST, table, 40)).error
    assert errors.shape == (5,) and np.all(errors == want)
    assert deterministic_error(q.means(), RNNLogits(4, 8, 2), batches) == want


def test_per_example_errors_are_one_network_per_example_and_pass() -> None:
    table = embedding_tensor(embeddings())
    prior = ReLURNN(table.shape[1], 8, 2, generator=torch.Generator().manual_seed(0))
    batches = functools.partial(split_batches, TEST, table, 40)
    sharp = GaussianPosterior({n: getattr(prior, n).detach() for n in "UWV"}, 1e-12)
    errors = mc_errors_per_example(
        sharp, per_example_rnn_logits, batches, 3, generator=torch.Generator()
    )
    want = evaluate(prior, split_batches(TEST, table, 40)).error
    assert errors.shape == (3 * len(TEST),) and set(errors.tolist()) <= {0.0, 1.0}
    assert errors.mean() == pytest.approx(want)
    wide = GaussianPosterior({n: getattr(prior, n).detach() for n in "UWV"}, 0.5)
    a = mc_errors_per_example(
        wide, per_example_rnn_logits, batches, 2, generator=torch.Generator().manual_seed(3)
    )
    b = mc_errors_per_example(
        wide, per_example_rnn_logits, batches, 2, generator=torch.Generator().manual_seed(3)
    )
    assert np.array_equal(a, b) and not np.array_equal(a[: len(TEST)], a[len(TEST) :])


def test_mc_errors_are_reproducible_and_chunking_free() -> None:
    table = embedding_tensor(embeddings())
    q = GaussianPosterior({n: w[0] for n, w in random_weights(1).items()}, 0.05)
    batches = functools.partial(split_batches, TEST, table, 40)
    fn = RNNLogits(4, 8, 2)
    a = mc_errors(q, fn, batches, 12, generator=torch.Generator().manual_seed(5), draws_per_pass=12)
    b = mc_errors(q, fn, batches, 12, generator=torch.Generator().manual_seed(5), draws_per_pass=12)
    assert np.array_equal(a, b) and len(set(a.tolist())) > 1  # draws differ from each other


@pytest.mark.parametrize("objective", ["fquad", "fclassic"])
def test_training_the_posterior_lowers_its_objective(objective: str) -> None:
    table = embedding_tensor(embeddings())
    prior = ReLURNN(table.shape[1], 8, 2, generator=torch.Generator().manual_seed(0))
    q = GaussianPosterior({n: getattr(prior, n).detach() for n in "UWV"}, 1e-2)
    gen = torch.Generator().manual_seed(0)
    order = torch.Generator().manual_seed(1)
    labels = torch.from_numpy(TRAIN.labels)

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(TRAIN), generator=order).numpy()
        for i in range(0, len(perm), 20):
            rows = perm[i : i + 20]
            yield embed(TRAIN.ids[rows], table), labels[rows]

    fit = train_posterior(
        q, RNNLogits(4, 8, 2), epoch, n=len(TRAIN), delta=0.025, objective=objective,
        epochs=6, lr=0.05, generator=gen,
    )  # fmt: skip
    assert not fit.diverged and len(fit.history) == 6
    assert fit.history[-1]["objective"] < fit.history[0]["objective"]
    assert fit.kl == pytest.approx(fit.history[-1]["kl"], rel=1e-5) and fit.kl > 0


# ---------------------------------------------------------------------------------- one cell


def run_cell(
    test: SplitArrays = TEST, settings: CertifySettings = TINY, **spec_changes: Any
) -> tuple[dict[str, Any], list[str], list[SplitArrays]]:
    """certify_cell on the tiny data: the row, the stages heard (with 'test loaded' where the
    loader was called) and what the loader handed out."""
    events: list[str] = []
    handed: list[SplitArrays] = []

    def loader() -> SplitArrays:
        events.append("test loaded")
        handed.append(test)
        return test

    spec = tiny_spec(hidden=8, epochs=3, **spec_changes)
    row = certify_cell(spec, TRAIN, embeddings(), settings, loader, on_stage=events.append)
    return row, events, handed


@functools.cache
def cell() -> tuple[dict[str, Any], list[str], list[SplitArrays]]:
    return run_cell()


def test_a_cell_meets_the_certificate_identity_exactly() -> None:
    row, _, _ = cell()
    assert row["status"] == "done" and row["reason"] == ""
    want = pb.kl_inv_upper(
        pb.kl_inv_upper(row["emp_error_mc"], math.log(2 / row["delta_mc"]) / row["m"]),
        (row["kl"] + math.log(2 * math.sqrt(row["n_bound"]) / row["delta"])) / row["n_bound"],
    )
    assert row["certificate"] == want == certificate_of(row)
    assert row["delta"] == TINY.delta / 3 and row["delta_mc"] == TINY.delta_mc
    assert row["emp_error_mc"] <= row["emp_error_bound"] <= row["certificate"] <= 1.0
    assert row["prior_var"] in TINY.prior_var_grid and len(row["selection_estimates"]) == 3
    for name in ("test_error_stochastic", "test_error_mean", "test_error_prior", "kl", "seconds"):
        assert math.isfinite(row[name]), name
    # the synthetic task is learnable: the prior and the certificate are far from chance
    assert row["test_error_prior"] < 0.3 and row["certificate"] < 0.9


def test_a_cell_with_a_network_per_example_meets_the_identity_with_its_m() -> None:
    settings = CertifySettings(
        prior_var_grid=TINY.prior_var_grid, mc_draws="per_example", mc_passes=2
    )
    row, events, _ = run_cell(settings=settings)
    assert row["status"] == "done" and row["mc_draws"] == "per_example"
    assert row["m"] == 2 * row["n_bound"] and row["m_test"] == 2 * len(TEST)
    assert row["certificate"] == certificate_of(row)
    assert events.index("certificate") < events.index("test loaded")


def test_every_row_has_the_declared_columns() -> None:
    done, _, _ = cell()
    diverged, _, _ = run_cell(init_scale=1e12)
    assert tuple(done) == ROW_COLUMNS == tuple(diverged)
    assert diverged["selection_estimates"] == [] and diverged["kl"] is None
    # both fit the certificates table's schema (a stopped cell's missing values are nulls)
    table = schemas.to_table([done, diverged], schemas.CERTIFICATES)
    assert table.column("certificate").null_count == 1


def test_a_cell_splits_into_disjoint_parts() -> None:
    row, _, _ = cell()
    assert row["n_overlap"] == 0
    assert row["n_prior"] + row["n_bound"] == len(TRAIN) and row["n_prior"] == 100
    assert row["prior_ids_digest"] != row["bound_ids_digest"]


def test_the_test_set_is_loaded_once_and_only_after_the_certificate() -> None:
    row, events, handed = cell()
    assert events.count("test loaded") == 1 and len(handed) == 1
    assert events.index("certificate") < events.index("test loaded")
    assert events[: events.index("certificate")] == ["split", "prior", "posteriors"]
    assert row["n_test"] == len(TEST)


def test_the_certificate_does_not_depend_on_the_test_set_and_repeats_exactly() -> None:
    row, _, _ = cell()
    other, _, _ = run_cell(test=synthetic_split(80, 99))
    certified = [k for k in row if not k.startswith("test_") and "seconds" not in k]
    certified.remove("n_test")
    assert {k: other[k] for k in certified} == {k: row[k] for k in certified}
    assert other["test_error_prior"] != row["test_error_prior"] or other["n_test"] != row["n_test"]


def test_a_diverged_prior_gives_no_certificate_and_never_loads_the_test_set() -> None:
    row, events, handed = run_cell(init_scale=1e12)
    assert row["status"] == "prior_diverged" and "non-finite" in row["reason"]
    assert row["certificate"] is None and handed == [] and "test loaded" not in events


def test_bad_inputs_are_refused_before_anything_runs() -> None:
    wrong_length = SplitArrays(TRAIN.ids[:, :4], TRAIN.labels)
    with pytest.raises(DataError, match="L = 6"):
        certify_cell(tiny_spec(), wrong_length, embeddings(), TINY, lambda: TEST)
    with pytest.raises(DataError, match="twice"):
        certify_cell(
            tiny_spec(), TRAIN, embeddings(), TINY, lambda: TEST, review_ids=np.zeros(200, int)
        )
