"""Flow `study`: the whole pipeline, stage after stage, for one profile."""

from __future__ import annotations

from prefect import flow

from flows.embed import embed
from rnngen.profiles import get_profile


@flow(name="study", log_prints=True)
def study(profile: str = "quick", out: str = "data", imdb_path: str | None = None) -> dict:
    """Run every stage that exists, in order; each skips work already on disk."""
    prof = get_profile(profile)
    key = embed(out=out, lengths=list(prof.lengths), imdb_path=imdb_path)
    print(f"study[{prof.name}]: data stage done (corpus {key})")
    return {"data_key": key}
