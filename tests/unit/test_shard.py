"""``rnngen.shard``: a shard's Gram and products against the dense data matrix."""

import numpy as np
import pyarrow as pa
import pytest

from rnngen.corpus import embed_batch
from rnngen.shard import ShardData

VOCAB, D = 30, 5


def shard(block_rows: int = 4) -> tuple[ShardData, pa.Array]:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB + 1, D)).astype(np.float32)
    table[-1] = 0.0  # the padding row
    # lengths 0..11 around L = 7: empty, short (padded) and long (truncated) reviews
    tokens = pa.array(
        [list(rng.integers(0, VOCAB, size=k)) for k in rng.integers(0, 12, 37)],
        type=pa.large_list(pa.int32()),
    )
    return ShardData(tokens, table, block_rows=block_rows), tokens


@pytest.mark.parametrize("block_rows", [1, 4, 64])
def test_gram_and_statistics_equal_the_dense_matrix(block_rows):
    data, tokens = shard(block_rows)
    L = 7
    x = embed_batch(tokens, L, data.table).reshape(len(tokens), -1).astype(np.float64)
    acc = data.accumulate(L)
    assert acc.n == len(tokens) == len(data)
    np.testing.assert_allclose(
        acc.second_moment(symmetrize=True), x.T @ x / len(x), rtol=1e-12, atol=1e-14
    )
    assert acc.frobenius == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert acc.norm1_T == pytest.approx(np.abs(x).sum(axis=0).max(), rel=1e-12)
    assert acc.B == pytest.approx(np.abs(x).max())


def test_tails_skip_only_padding_and_matmat_is_the_dense_product():
    data, tokens = shard()
    L = 7
    x = embed_batch(tokens, L, data.table).reshape(len(tokens), -1).astype(np.float64)
    rows = 0
    for tail, start in data.tails(L):
        assert start % D == 0 and tail.shape[1] == L * D - start
        rows += tail.shape[0]
    assert rows == len(tokens)
    assert any(start > 0 for _, start in data.tails(L))  # the staircase is used
    V = np.random.default_rng(1).standard_normal((L * D, 3))
    np.testing.assert_allclose(data.matmat(L, V), x.T @ (x @ V), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(data.matmat(L, V[:, 0]), x.T @ (x @ V[:, 0]), rtol=1e-12, atol=1e-12)
    # another L rebuilds the cache
    x3 = embed_batch(tokens, 3, data.table).reshape(len(tokens), -1).astype(np.float64)
    np.testing.assert_allclose(data.matmat(3, V[:15]), x3.T @ (x3 @ V[:15]), rtol=1e-12, atol=1e-12)
