"""Padding/truncation on hand-made id lists, the embedding gather, length checks."""

import numpy as np
import pyarrow as pa
import pytest

from rnngen.corpus import embed_batch, pad_ids, select_split
from rnngen.errors import ParameterError
from rnngen.glove import load_glove

LISTS = pa.array([[1, 2, 3], [], [4, 5, 6, 7, 8], [9]], pa.large_list(pa.int32()))


def test_pre_padding_and_pre_truncation():
    got = pad_ids(LISTS, 4, pad_id=0)
    np.testing.assert_array_equal(got, [[0, 1, 2, 3], [0, 0, 0, 0], [5, 6, 7, 8], [0, 0, 0, 9]])


def test_length_one_keeps_the_last_token():
    np.testing.assert_array_equal(pad_ids(LISTS, 1, pad_id=-1)[:, 0], [3, -1, 8, 9])


def test_long_window_is_all_padding_in_front():
    got = pad_ids(LISTS, 7, pad_id=0)
    assert got.shape == (4, 7)
    np.testing.assert_array_equal(got[2], [0, 0, 4, 5, 6, 7, 8])


def test_chunked_input_is_accepted():
    chunked = pa.chunked_array([LISTS.slice(0, 2), LISTS.slice(2)])
    np.testing.assert_array_equal(pad_ids(chunked, 3, 0), pad_ids(LISTS, 3, 0))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_length_is_refused(bad):
    with pytest.raises(ParameterError, match="L must be a positive integer"):
        pad_ids(LISTS, bad, 0)


def test_unknown_split_is_refused():
    table = pa.table({"split": ["train"], "label": [0]})
    with pytest.raises(ParameterError, match="unknown split 'dev'"):
        select_split(table, "dev")


def test_gather_equals_glove_rows():
    glove = load_glove()
    words = glove.words.to_pylist()
    the, movie = words.index("the"), words.index("movie")
    np.testing.assert_allclose(glove.table[the][:3], [0.418, 0.24968, -0.41242], rtol=0, atol=1e-6)
    ids = pa.array([[movie, the]], pa.large_list(pa.int32()))
    x = embed_batch(ids, 3, glove.table)
    assert x.shape == (1, 3, 50) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, 0], np.zeros(50, np.float32))  # padding row
    np.testing.assert_array_equal(x[0, 1], glove.table[movie])
    np.testing.assert_array_equal(x[0, 2], glove.table[the])
    assert glove.table.flags.c_contiguous and glove.pad_id == 400_000
