"""``rnngen.bound_stats_torch`` against the numpy ``ModelDataStats`` on tiny synthetic data.

Everything runs on the CPU; the CUDA variant only runs where torch sees a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from rnngen import bounds as bd
from rnngen.bound_stats_torch import (
    OnePass,
    TorchModelDataStats,
    tau_matrix,
    three_paths,
    update_pair,
)
from rnngen.corpus import SplitArrays
from rnngen.model_stats import clean_and_noisy_batches, model_stats, train_split
from rnngen.specs import RunSpec
from rnngen.train import embedding_tensor, seed_streams, spec_splits, split_batches

L, D, M, K = 7, 5, 6, 2
BATCH, N_BATCHES = 16, 3
RTOL = 1e-10
MARGIN_ATOL = 1e-12  # a margin is a difference of O(1) logits: near 0 its error is absolute
PROPERTIES = ("n", "L", "d", "r_fs", "r_fr", "frob_X", "norm1_XT", "B")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(rng: np.random.Generator, radius: float) -> dict[str, np.ndarray]:
    """U, W, V with W of spectral radius ``radius``, and two hand-set units for the masks.

    Unit 1 reads x_{t,1} and nothing else; unit 0 reads x_{t,0} and h_{t-1,1} / 2, so on
    the samples `batches` crafts its g_L is exactly -1 + 2/2 = 0. Rows 0 and 1 of W touch
    only columns 0 and 1 (a nilpotent block), so the spectrum of W is that of its lower
    block; the small coupling block keeps β_W < 1 reachable.
    """
    U = rng.normal(size=(M, D)) / math.sqrt(D)
    U[:2] = np.eye(2, D)
    W = rng.normal(size=(M, M))
    W[:2] = 0.0
    W[0, 1] = 0.5
    W[2:, :2] *= 0.05
    W[2:, 2:] *= radius / max(abs(np.linalg.eigvals(W[2:, 2:])))
    V = rng.normal(size=(K, M)) / math.sqrt(M)
    return {"U": U, "W": W, "V": V}


def batches(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-padded float32 batches, as training feeds them. In every fourth sample
    x_{L-1} = (0, 2, ...) and x_L = (-1, 0, ...): g_L of unit 0 is exactly 0 there, while
    c_L U x_L + W z_{L-1} is not, so relu'(0) = 0 versus 1 changes η(θ)c."""
    out = []
    for _ in range(N_BATCHES):
        x = rng.normal(size=(BATCH, L, D)).astype(np.float32)
        for i, pad in enumerate(rng.integers(0, L // 2 + 1, size=BATCH)):
            x[i, :pad] = 0.0
        x[::4, L - 2, :2] = (0.0, 2.0)
        x[::4, L - 1, :2] = (-1.0, 0.0)
        out.append((x, rng.integers(0, K, size=BATCH)))
    return out


def fed(stats: bd.ModelDataStats, data: list[tuple[Any, Any]]) -> bd.ModelDataStats:
    for x, y in data:
        stats.update(x, y)
    return stats


def assert_same_stats(got: bd.ModelDataStats, want: bd.ModelDataStats) -> None:
    """Every statistic agrees; r_fr only where ``got`` computes it (else reading it raises)."""
    for name in PROPERTIES:
        if name == "r_fr" and not getattr(got, "with_fr", True):
            with pytest.raises(ValueError, match="skip η"):
                _ = got.r_fr
            continue
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=RTOL, abs=0), name
    np.testing.assert_allclose(got.margins, want.margins, rtol=RTOL, atol=MARGIN_ATOL)


def assert_same_row(got: dict[str, float | None], want: dict[str, float | None]) -> None:
    """Rows agree column by column; None ("not applicable", β_W ≥ 1) only where it is None."""
    assert tuple(got) == tuple(want) == bd.TERM_COLUMNS
    for name, value in want.items():
        if value is None:
            assert got[name] is None, name
        else:
            assert got[name] == pytest.approx(value, rel=RTOL, abs=0), name


def pair(radius: float, device: str) -> tuple[bd.ModelDataStats, TorchModelDataStats]:
    rng = np.random.default_rng(int(radius * 10))
    w = weights(rng, radius)
    data = batches(rng)
    numpy_stats = fed(bd.ModelDataStats(w["U"], w["W"], w["V"]), data)
    on_device = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in data]
    torch_stats = TorchModelDataStats(w["U"], w["W"], w["V"], device)
    fed(torch_stats, on_device)
    return numpy_stats, torch_stats


# ------------------------------------------------------------------------------ the statistics


@pytest.mark.parametrize("radius", [0.7, 1.6])
def test_torch_stats_equal_numpy_stats(radius: float) -> None:
    cuda_was_initialized = torch.cuda.is_initialized()
    numpy_stats, torch_stats = pair(radius, "cpu")
    assert_same_stats(torch_stats, numpy_stats)
    assert torch_stats.n == N_BATCHES * BATCH and torch_stats.B > 0.0
    assert isinstance(torch_stats.margins, np.ndarray) and torch_stats.margins.dtype == np.float64
    np.testing.assert_array_equal(torch_stats.U, numpy_stats.U)  # the host copies bound_row reads
    assert torch_stats.W_t.dtype == torch.float64 and torch_stats.W_t.device.type == "cpu"
    assert torch.cuda.is_initialized() == cuda_was_initialized  # the CPU path never touches CUDA


def eta_relu_prime_zero_is_one(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """η(θ)c with the wrong mask D_t = 1[g_t ≥ 0]: what a mistaken relu'(0) = 1 gives."""
    U, W, V = (w[s].astype(np.float64) for s in "UWV")
    c = bd.c_vector(L)
    h = z = np.zeros((x.shape[0], M))
    for t in range(L):
        ux = x[:, t].astype(np.float64) @ U.T
        g = ux + h @ W.T
        h, z = np.where(g >= 0, g, 0.0), np.where(g >= 0, c[t] * ux + z @ W.T, 0.0)
    return z @ V.T


def one_pass_paths(
    U: torch.Tensor, W: torch.Tensor, V: torch.Tensor, x: torch.Tensor, c: list[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`OnePass` as `three_paths` (c must be c_vector): x stacked under another block, η
    run for the rows of x only, as `update_pair` runs it for the noisy rows."""
    assert c == list(bd.c_vector(x.shape[1]))
    other = torch.linspace(-1.0, 1.0, x.numel(), dtype=x.dtype).reshape(x.shape)
    out, eta, tau = OnePass(U, W, V).run(torch.cat((other, x)), x.shape[0])
    return out[x.shape[0] :], eta, tau[x.shape[0] :]


@pytest.mark.parametrize("paths", [three_paths, one_pass_paths])
def test_masks_treat_exact_zeros_as_inactive(paths: Any) -> None:
    """On the crafted samples η depends on relu'(0); the torch pass must take it as 0."""
    rng = np.random.default_rng(5)
    w = weights(rng, 1.6)
    x = batches(rng)[0][0]
    U, W, V, xt = (torch.from_numpy(a.astype(np.float64)) for a in (w["U"], w["W"], w["V"], x))
    out, eta, tau = (a.numpy() for a in paths(U, W, V, xt, list(bd.c_vector(L))))
    np.testing.assert_allclose(eta, bd.eta_c(w["U"], w["W"], w["V"], x), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(out, bd.forward_yL(w["U"], w["W"], w["V"], x), rtol=RTOL)
    np.testing.assert_allclose(tau, bd.tau_c(w["U"], w["W"], w["V"], x), rtol=RTOL)
    wrong = eta_relu_prime_zero_is_one(w, x)
    assert np.allclose(wrong[1::4], eta[1::4], rtol=RTOL)  # not crafted: the masks agree
    assert not np.allclose(wrong[::4], eta[::4], rtol=1e-3)  # the data do test relu'(0)


@pytest.mark.parametrize("radius", [0.7, 1.6])
def test_tau_closed_form_equals_the_recurrence(radius: float) -> None:
    """τ(θ)c = vec(x) M, M built once, is the linear recurrence s_t = W s_{t-1} + c_t U x_t."""
    rng = np.random.default_rng(13)
    w = weights(rng, radius)
    x = rng.normal(size=(9, L, D))
    U, W, V = (torch.from_numpy(w[s]) for s in "UWV")
    M = tau_matrix(U, W, V, L)
    assert M.shape == (L * D, K)
    got = (torch.from_numpy(x).reshape(9, L * D) @ M).numpy()
    np.testing.assert_allclose(got, bd.tau_c(w["U"], w["W"], w["V"], x), rtol=1e-12, atol=0)
    # Block t is c_t (V W^{L-t} U)ᵀ: the first step (t = 1) and the last (t = L).
    Wp = np.linalg.matrix_power(w["W"], L - 1)
    np.testing.assert_allclose(M[:D].numpy(), (L + 1) * (w["V"] @ Wp @ w["U"]).T, rtol=1e-12)
    np.testing.assert_allclose(M[-D:].numpy(), 2.0 * (w["V"] @ w["U"]).T, rtol=1e-12)


@pytest.mark.parametrize("radius", [0.7, 1.6])
def test_update_pair_equals_numpy_clean_and_noisy(radius: float) -> None:
    """One pass for both sides gives each side's numpy statistics (the clean side less r_fr)."""
    rng = np.random.default_rng(int(radius * 10) + 1)
    w = weights(rng, radius)
    data = batches(rng)
    noisy_data = [((x + 0.3 * rng.normal(size=x.shape)).astype(np.float32), y) for x, y in data]
    want_clean = fed(bd.ModelDataStats(w["U"], w["W"], w["V"]), data)
    want_noisy = fed(bd.ModelDataStats(w["U"], w["W"], w["V"]), noisy_data)
    clean, noisy = TorchModelDataStats.pair(w["U"], w["W"], w["V"])
    for (x, y), (xn, _) in zip(data, noisy_data, strict=True):
        update_pair(clean, noisy, torch.from_numpy(x), torch.from_numpy(xn), torch.from_numpy(y))
    assert not clean.with_fr and noisy.with_fr and clean.engine is noisy.engine
    assert_same_stats(clean, want_clean)
    assert_same_stats(noisy, want_noisy)
    x, y = data[0]
    with pytest.raises(ValueError, match="pair"):  # the sides swapped
        update_pair(noisy, clean, x, x, y)


def test_update_equals_the_three_recurrences() -> None:
    """`update` (one pass, τ in closed form) and `update_three_paths` (the old path) agree,
    on batches of two sizes (the buffers are reused and regrown)."""
    rng = np.random.default_rng(17)
    w = weights(rng, 1.2)
    new, old = (TorchModelDataStats(w["U"], w["W"], w["V"]) for _ in range(2))
    for x, y in batches(rng):
        for cut in (slice(0, 5), slice(5, None)):
            new.update(x[cut], y[cut])
            old.update_three_paths(x[cut], y[cut])
    assert_same_stats(new, old)
    assert (new.sum_fs_sq, new.sum_fr_sq) == pytest.approx((old.sum_fs_sq, old.sum_fr_sq), rel=RTOL)


def test_overflowing_batches_keep_the_reference_semantics() -> None:
    """Where inf·0 would be NaN in the masked products, the batch is redone as the
    reference does it: a unit switched off at an overflowing input contributes 0 to η."""
    rng = np.random.default_rng(19)
    w = weights(rng, 0.7)
    w["U"][2] = 0.0
    w["U"][2, 2] = 1e308  # g of unit 2 at x_{t,2} = -2 is -inf: off, while c_t U x_t = -inf
    x, y = batches(rng)[0]
    x[:, :, 2] = 0.0  # unit 2 reads nothing elsewhere, so only sample 1 overflows
    x[1, 2, 2] = -2.0
    with np.errstate(over="ignore", invalid="ignore"):
        want = fed(bd.ModelDataStats(w["U"], w["W"], w["V"]), [(x, y)])
        got = fed(TorchModelDataStats(w["U"], w["W"], w["V"]), [(x, y)])
    assert math.isfinite(want.r_fr) and not math.isfinite(want.r_fs)  # the case at hand
    assert got.r_fr == pytest.approx(want.r_fr, rel=RTOL)
    np.testing.assert_equal(got.r_fs, want.r_fs)  # inf (or NaN) alike
    np.testing.assert_allclose(got.margins, want.margins, rtol=RTOL, atol=MARGIN_ATOL)


@pytest.mark.parametrize("radius", [0.2, 1.3])
def test_bound_row_reads_torch_stats_alike(radius: float) -> None:
    rng = np.random.default_rng(7)
    w = weights(rng, radius)
    data = batches(rng)
    sigma = 0.4
    noisy_data = [(x + sigma * rng.normal(size=x.shape), y) for x, y in data]
    rows = []
    for make in (bd.ModelDataStats, TorchModelDataStats):
        clean = fed(make(w["U"], w["W"], w["V"]), data)
        noisy = fed(make(w["U"], w["W"], w["V"]), noisy_data)
        kw = {"alpha": 0.25, "sigma": sigma, "lambda_min": 1e-3, "delta": 0.01}
        rows.append(bd.bound_row(clean, noisy, **kw))
    # Remark 6 applies (a number) only at the small radius: both kinds of column are compared.
    assert (rows[0]["bound_thm2_remark6"] is None) == (bd.beta(w["W"]) >= 1.0)
    assert_same_row(rows[1], rows[0])


def test_reading_does_not_change_the_sums() -> None:
    """Reads are cached between updates; an update after a read still counts."""
    numpy_stats, torch_stats = pair(0.7, "cpu")
    first = torch_stats.margins
    first[:] = 0.0  # a caller's copy, not the cache
    assert_same_stats(torch_stats, numpy_stats)
    rng = np.random.default_rng(99)
    x, y = batches(rng)[0]
    numpy_stats.update(x, y)
    torch_stats.update(torch.from_numpy(x), torch.from_numpy(y))
    assert_same_stats(torch_stats, numpy_stats)


def test_bad_inputs_raise_readable_errors() -> None:
    rng = np.random.default_rng(3)
    w = weights(rng, 0.7)
    stats = TorchModelDataStats(w["U"], w["W"], w["V"])
    assert stats.B == 0.0 and stats.margins.shape == (0,)
    with pytest.raises(ValueError, match="no data"):
        _ = stats.r_fs
    x, y = batches(rng)[0]
    with pytest.raises(ValueError, match="labels"):
        stats.update(x, np.full(BATCH, K))
    with pytest.raises(ValueError, match="shape"):
        stats.update(x[:, :, :3], y)
    stats.update(x, y)
    with pytest.raises(ValueError, match="does not match"):
        stats.update(x[:, :4], y)


# ------------------------------------------------------------------------------ model_stats

VOCAB = 12
PAD = VOCAB  # the last embedding row is the zero padding vector, as in the real table


def tiny_inputs() -> tuple[dict[str, np.ndarray], SplitArrays, np.ndarray]:
    """Weights, a pre-padded split of 40 reviews (batches 16, 16, 8) and an embedding table."""
    rng = np.random.default_rng(11)
    table = np.zeros((VOCAB + 1, D), dtype=np.float32)
    table[:VOCAB] = rng.normal(size=(VOCAB, D))
    ids = np.full((40, L), PAD, dtype=np.int32)
    for i, length in enumerate(rng.integers(2, L + 1, size=40)):
        ids[i, L - length :] = rng.integers(0, VOCAB, size=length)
    split = SplitArrays(ids, rng.integers(0, K, size=40).astype(np.int64))
    return weights(rng, 1.2), split, table


def tiny_spec(sigma: float) -> RunSpec:
    return RunSpec(L=L, sigma=sigma, seed=3, data_key="synthetic", hidden=M, eval_batch_size=BATCH)


@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_model_stats_on_torch_cpu_equals_numpy(sigma: float, one_pass: bool) -> None:
    """The one-pass path (and the old one, the benchmark's baseline) give numpy's rows."""
    w, split, table = tiny_inputs()
    numpy_clean, numpy_noisy = model_stats(w, tiny_spec(sigma), split, table)
    torch_clean, torch_noisy = model_stats(
        w, tiny_spec(sigma), split, table, device="cpu", one_pass=one_pass
    )
    assert type(numpy_clean) is bd.ModelDataStats and isinstance(torch_clean, TorchModelDataStats)
    assert_same_stats(torch_clean, numpy_clean)
    if sigma == 0.0:
        assert numpy_noisy is None and torch_noisy is None
        return
    assert numpy_noisy is not None and torch_noisy is not None
    assert_same_stats(torch_noisy, numpy_noisy)  # the same recorded noise draw
    assert torch_noisy.frob_X != torch_clean.frob_X  # and the noise is really there
    assert torch_clean.with_fr is not one_pass  # one pass skips the clean η(θ)c
    kw = {"alpha": 0.5, "sigma": sigma, "lambda_min": 1e-2, "delta": 0.05}
    want = bd.bound_row(numpy_clean, numpy_noisy, **kw)
    assert_same_row(bd.bound_row(torch_clean, torch_noisy, **kw), want)


def test_clean_and_noisy_batches_are_split_batches_bit_for_bit() -> None:
    """One embedding per batch, yet the noisy side is the recorded draw of split_batches."""
    _, split, embeddings = tiny_inputs()
    spec, table = tiny_spec(0.5), embedding_tensor(embeddings)
    clean = list(split_batches(split, table, BATCH))
    noisy = list(split_batches(split, table, BATCH, 0.5, seed_streams(spec).eval_noise))
    both = list(clean_and_noisy_batches(split, table, spec))
    assert len(both) == len(clean) == 3
    for (x, xn, y), (x0, y0), (x1, y1) in zip(both, clean, noisy, strict=True):
        assert torch.equal(x, x0) and torch.equal(xn, x1) and torch.equal(y, y0)
        assert torch.equal(y, y1) and not torch.equal(x, xn)


def corpus_table(n: int) -> pa.Table:
    """A corpus table as rnngen.corpus writes it: n train and n test reviews of 0-8 ids."""
    return pa.table(
        {
            "split": pa.array(["train", "test"] * n).dictionary_encode(),
            "label": pa.array([0, 0, 1, 1] * (n // 2), pa.int8()),
            "review_index": pa.array(range(2 * n), pa.int32()),
            "token_ids": pa.array(
                [list(range(i % 9)) for i in range(2 * n)], pa.large_list(pa.int32())
            ),
        }
    )


def test_train_split_is_spec_splits_train_built_once_per_table_and_L() -> None:
    table = corpus_table(12)
    spec = tiny_spec(0.0)
    first = train_split(table, PAD, spec)
    want, _ = spec_splits(table, PAD, spec)
    np.testing.assert_array_equal(first.ids, want.ids)
    np.testing.assert_array_equal(first.labels, want.labels)
    again = RunSpec(L=L, sigma=0.3, seed=9, data_key="synthetic", hidden=M)
    assert train_split(table, PAD, again) is first  # another model of the same L and n_train
    shorter = RunSpec(L=L - 2, sigma=0.0, seed=3, data_key="synthetic", hidden=M)
    assert train_split(table, PAD, shorter).ids.shape == (12, L - 2)
    subset = RunSpec(L=L, sigma=0.0, seed=3, data_key="synthetic", hidden=M, n_train=4)
    assert len(train_split(table, PAD, subset)) == 4
    other = corpus_table(12)  # equal contents, another table: built anew, never confused
    assert train_split(other, PAD, spec) is not first
    assert train_split(other, PAD, spec) is train_split(other, PAD, spec)


def test_model_stats_numpy_name_is_the_default_path() -> None:
    w, split, table = tiny_inputs()
    default = model_stats(w, tiny_spec(0.5), split, table)
    named = model_stats(w, tiny_spec(0.5), split, table, device="numpy")
    for got, want in zip(named, default, strict=True):
        assert type(got) is bd.ModelDataStats and want is not None and got is not None
        assert (got.sum_fs_sq, got.sum_fr_sq, got.frob_sq, got.B, got.norm1_XT) == (
            want.sum_fs_sq,
            want.sum_fr_sq,
            want.frob_sq,
            want.B,
            want.norm1_XT,
        )
        np.testing.assert_array_equal(got.margins, want.margins)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_matches_numpy_where_available(device: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    numpy_stats, torch_stats = pair(1.6, device)
    assert torch_stats.W_t.device.type == "cuda"
    assert_same_stats(torch_stats, numpy_stats)
    w, split, table = tiny_inputs()
    want = model_stats(w, tiny_spec(0.5), split, table)
    got = model_stats(w, tiny_spec(0.5), split, table, device=device)
    for g, v in zip(got, want, strict=True):
        assert g is not None and v is not None
        assert_same_stats(g, v)
