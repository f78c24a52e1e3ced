"""The torch Gram and factor (on the CPU here, a GPU in a pool that has one) give the numpy
path's certified λ_min on the real data, the certificate being the same numpy operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from rnngen.gram_torch import factorize_torch
from rnngen.shard import ShardData
from rnngen.spectrum import SpectrumResult, certified_spectrum, factorize
from rnngen_tasks.corpus import load_corpus
from rnngen_tasks.spectrum import train_tokens

pytestmark = pytest.mark.integration

L = 100


def reduced_spectrum(shards: list[ShardData], n: int) -> tuple[SpectrumResult, float]:
    """What the actors do, in-process: accumulate per shard, add the second shard's slabs
    into the first, factorize there, certify with the matrix-free operator over both."""
    head, other = (shard.accumulate(L) for shard in shards)
    head.add_stats(other.stats())
    dim = shards[0].dim(L)
    for c0 in range(0, dim, 1024):
        head.add_upper_columns(c0, other.drain_upper_columns(c0, min(c0 + 1024, dim)))
    frobenius = head.frobenius
    sigma = head.second_moment(symmetrize=False)
    fac = factorize(sigma, n) if isinstance(sigma, np.ndarray) else factorize_torch(sigma, n)

    def apply(V: np.ndarray) -> np.ndarray:
        return (shards[0].matmat(L, V) + shards[1].matmat(L, V)) / n

    return certified_spectrum(fac, apply, n, dim), frobenius


@pytest.fixture
def one_thread():
    """One BLAS thread per library, as each shard actor has (Ray's OMP_NUM_THREADS=1):
    with two, the matrix-free product's 26-row GEMMs ran 200× slower on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def test_torch_gram_and_factor_give_the_numpy_lambda_min(real_data, one_thread):
    corpus = load_corpus(str(real_data))
    tokens = train_tokens(corpus, None)
    n = len(tokens)
    assert n == 25_000
    # One pair of shards for both paths, so their cached rows serve both Grams and both
    # certificates; the device only changes the accumulator.
    shards = [
        ShardData(tokens.slice(a, b - a), corpus.embeddings) for a, b in [(0, n // 2), (n // 2, n)]
    ]
    ref, ref_frobenius = reduced_spectrum(shards, n)
    for shard in shards:
        shard.device = "cpu"
    res, frobenius = reduced_spectrum(shards, n)
    assert ref.converged and res.converged, (ref.message, res.message)
    assert abs(res.lambda_min - ref.lambda_min) <= 1e-9 * ref.lambda_min
    assert res.trace == pytest.approx(ref.trace, rel=1e-12)
    assert frobenius == pytest.approx(ref_frobenius, rel=1e-12)
    assert res.condition > 1e5  # the ill-conditioned Σ this is about
