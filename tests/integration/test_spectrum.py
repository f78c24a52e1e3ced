"""The spectrum stage: the distributed operator vs dense products, and the flow end to end."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnngen.corpus import embed_batch
from rnngen.lanczos import SingularMatrixError
from rnngen.layout import Layout
from rnngen_flows.spectrum import spectrum
from rnngen_tasks.corpus import load_corpus
from rnngen_tasks.ray_shards import ShardPool
from rnngen_tasks.spectrum import UncertifiedSpectrum, spectrum_for_length, train_tokens

pytestmark = pytest.mark.integration


def test_distributed_gram_and_matvec_equal_dense_products(ray_local, real_data):
    corpus = load_corpus(str(real_data))
    tokens = train_tokens(corpus, 600)
    # At L = 120 about a third of the reviews are shorter than L, so the length-sorted
    # 64-row blocks start at many different columns (the staircase), and 700-column slabs
    # do not divide D = 6000.
    L = 120
    x = embed_batch(tokens, L, corpus.embeddings).reshape(len(tokens), -1).astype(np.float64)
    lengths = np.diff(
        tokens.combine_chunks().offsets.to_numpy()
        if isinstance(tokens, pa.ChunkedArray)
        else tokens.offsets.to_numpy()
    )
    assert 0.1 < np.mean(lengths < L) < 0.9
    pool = ShardPool.create(tokens, corpus.embeddings, workers=2, block_rows=64)
    try:
        pool.reduce_gram(L, columns_per_slab=700)
        acc = pool.gram()
        assert acc.n == 600 and acc.n == x.shape[0]
        sigma = acc.second_moment(symmetrize=True)
        dense = x.T @ x / x.shape[0]
        np.testing.assert_allclose(sigma, dense, rtol=1e-12, atol=1e-14 * np.abs(dense).max())
        apply = pool.second_moment_operator(L)
        v = np.random.default_rng(0).standard_normal((x.shape[1], 3))
        ref = dense @ v  # entries near 0 by cancellation get an absolute tolerance
        scale = 1e-13 * np.abs(ref).max()
        np.testing.assert_allclose(apply(v), ref, rtol=1e-11, atol=scale)
        np.testing.assert_allclose(apply(v[:, 0]), ref[:, 0], rtol=1e-11, atol=scale)
        np.testing.assert_allclose(acc.frobenius, np.linalg.norm(x), rtol=1e-12)
        np.testing.assert_allclose(acc.norm1_T, np.abs(x).sum(axis=0).max(), rtol=1e-12)
        assert acc.B == pytest.approx(np.abs(x).max())
    finally:
        pool.close()


def test_factorization_in_the_first_shard_solves_like_dense(ray_local, real_data):
    corpus = load_corpus(str(real_data))
    tokens = train_tokens(corpus, 800)
    L = 4  # D = 200 < n = 800: Σ is positive definite
    x = embed_batch(tokens, L, corpus.embeddings).reshape(len(tokens), -1).astype(np.float64)
    dense = x.T @ x / x.shape[0]
    pool = ShardPool.create(tokens, corpus.embeddings, workers=2, block_rows=64)
    try:
        stats = pool.reduce_gram(L, columns_per_slab=70)
        assert stats.n == 800 and stats.frobenius == pytest.approx(np.linalg.norm(x), rel=1e-12)
        fac = pool.factorize()
        assert fac.trace == pytest.approx(np.trace(dense), rel=1e-12)
        V = np.random.default_rng(1).standard_normal((x.shape[1], 3))
        # Σ (Σ⁻¹ V) = V: the reduced Gram in the first shard is Σ of ALL shards' data.
        np.testing.assert_allclose(dense @ fac.solve(V), V, atol=1e-8 * np.abs(V).max())
    finally:
        pool.close()


def test_singular_sigma_in_an_actor_raises_the_users_error(ray_local):
    # Every review is shorter than L, so the first position is padding in every sample: a
    # zero coordinate. n = 600 >= D = 150 passes the rank check; the factor's pivots fail.
    tokens = pa.array([[5, 6]] * 300 + [[7, 9]] * 300, type=pa.large_list(pa.int32()))
    table = np.random.default_rng(0).standard_normal((11, 50)).astype(np.float32)
    table[-1] = 0.0  # the padding row
    pool = ShardPool.create(tokens, table, workers=2, block_rows=64)
    try:
        pool.reduce_gram(3)
        with pytest.raises(SingularMatrixError, match="n=600 samples, D=150"):
            pool.factorize()
    finally:
        pool.close()


def test_flow_writes_certified_rows_matching_dense(prefect_harness, ray_local, corpus_out):
    rows = spectrum(out=str(corpus_out), lengths=[3, 4], n_train=800, check_dense=True)
    table = pq.read_table(Layout.at(corpus_out).spectrum).to_pylist()
    assert [r["L"] for r in table] == [3, 4] and [r["dim"] for r in table] == [150, 200]
    for row in table:
        assert row["status"] == "certified" and row["n"] == 800
        assert row["dense_rel_diff"] <= 1e-6
        assert row["lambda_min_residual"] <= 1e-6 * row["lambda_min"] + 1e-12
        assert len(row["smallest"]) == 20 and row["smallest"][0] == row["lambda_min"]
        assert row["largest"][0] == row["lambda_max"] >= row["largest"][-1]
    # A second run finds the rows and computes nothing new.
    again = spectrum(out=str(corpus_out), lengths=[3], n_train=800)
    assert again[0]["seconds"] == rows[0]["seconds"]


def test_fewer_samples_than_dimensions_is_explained(ray_local, corpus_out):
    with pytest.raises(SingularMatrixError, match=r"n=100 training sequences < D=150"):
        spectrum_for_length(str(corpus_out), 3, n_train=100)
    assert not Layout.at(corpus_out).spectrum.exists()


def test_non_convergence_is_recorded_not_hidden(ray_local, corpus_out):
    with pytest.raises(UncertifiedSpectrum, match=r"L=3: λ_min could not be certified"):
        spectrum_for_length(str(corpus_out), 3, n_train=800, max_blocks=1)
    row = pq.read_table(Layout.at(corpus_out).spectrum).to_pylist()[0]
    assert row["status"] == "uncertified" and row["lambda_min"] is None
    assert row["lambda_min_residual"] > 0


def test_real_data_L100_agrees_with_dense_reference(ray_local, corpus_out):
    row = spectrum_for_length(str(corpus_out), 100, check_dense=True)
    assert row["n"] == 25_000 and row["dim"] == 5_000 and row["status"] == "certified"
    assert row["dense_rel_diff"] <= 1e-6
    assert row["lambda_max"] > 1e2 and row["condition"] > 1e5
