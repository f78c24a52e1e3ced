"""Flow `embed`: IMDB + GloVe -> tokenized corpus Parquet (the data stage)."""

from __future__ import annotations

from prefect import flow

from rnngen.corpus import check_lengths
from rnngen.io import output_lock
from rnngen.text import TokenizerConfig
from rnngen_tasks.artifacts import labelled, publish_provenance, run_name
from rnngen_tasks.data import build_corpus_task, fetch_imdb, summarize_lengths


@flow(name="embed", log_prints=True, flow_run_name=run_name("embed"))
def embed(
    out: str = "data",
    lengths: list[int] | None = None,
    imdb_path: str | None = None,
    glove_path: str | None = None,
    tokenizer: TokenizerConfig | None = None,
) -> str:
    """Fetch and verify IMDB, tokenize it into GloVe ids, summarize each window length L."""
    with output_lock(out), labelled("embed"):
        publish_provenance("embed", out)
        lengths = check_lengths(lengths)
        tokenizer = tokenizer or TokenizerConfig()
        source = fetch_imdb(out, imdb_path)
        key = build_corpus_task(out, source, tokenizer, glove_path)
        summarize_lengths(out, key, lengths)
        print(f"corpus {key} from {source.kind}:{source.path}")
        return key
