"""Both IMDB readers on small archives the tests build themselves, and safe extraction."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from rnngen.errors import DataError
from rnngen.imdb import read_acl_archive, read_acl_folder, read_npm_tarball, safe_extract

PER_CLASS = 2
# Block order of the npm package: test/neg, train/neg, test/pos, train/pos.
NPM_RECORDS = [
    {"t": "test neg one", "s": 0},
    {"t": "test neg two", "s": 0},
    {"t": "train neg one", "s": 0},
    {"t": "train neg two", "s": 0},
    {"t": "test pos one", "s": 1},
    {"t": "test pos two", "s": 1},
    {"t": "train pos one", "s": 1},
    {"t": "train pos two", "s": 1},
]


def _tar_with(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _npm_tarball(tmp_path: Path, records=NPM_RECORDS) -> Path:
    return _tar_with(tmp_path / "imdb.tgz", {"package/reviews.json": json.dumps(records).encode()})


def _acl_files(prefix: str = "aclImdb/") -> dict[str, bytes]:
    files = {}
    for split in ("train", "test"):
        for name in ("neg", "pos"):
            for i in (10, 2):  # numeric, not lexicographic, order: 2 before 10
                files[f"{prefix}{split}/{name}/{i}_7.txt"] = f"{split} {name} {i}".encode()
    return files


def test_npm_reader_recovers_the_split(tmp_path):
    r = read_npm_tarball(_npm_tarball(tmp_path), per_class=PER_CLASS)
    assert len(r) == 8
    train = r.splits == "train"
    assert [t for t, s in zip(r.texts, train, strict=True) if s] == [
        "train neg one",
        "train neg two",
        "train pos one",
        "train pos two",
    ]
    np.testing.assert_array_equal(r.labels[train], [0, 0, 1, 1])
    np.testing.assert_array_equal(r.index[train], [0, 1, 2, 3])
    np.testing.assert_array_equal(r.index[~train], [0, 1, 2, 3])


def test_npm_reader_checks_counts_and_layout(tmp_path):
    with pytest.raises(DataError, match="expected 8"):
        read_npm_tarball(_npm_tarball(tmp_path, NPM_RECORDS[:-1]), per_class=PER_CLASS)
    swapped = [dict(r, s=1 - r["s"]) for r in NPM_RECORDS]
    with pytest.raises(DataError, match="block layout"):
        read_npm_tarball(_npm_tarball(tmp_path, swapped), per_class=PER_CLASS)


def test_npm_reader_on_truncated_archive(tmp_path):
    good = _npm_tarball(tmp_path).read_bytes()
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="unreadable or truncated"):
        read_npm_tarball(bad, per_class=PER_CLASS)


def test_acl_archive_and_folder_give_the_same_reviews(tmp_path):
    archive = _tar_with(tmp_path / "aclImdb_v1.tar.gz", _acl_files())
    from_archive = read_acl_archive(archive, tmp_path / "x", per_class=PER_CLASS)
    from_folder = read_acl_folder(tmp_path / "x" / "aclImdb", per_class=PER_CLASS)
    assert from_archive.texts == from_folder.texts
    train = from_folder.splits == "train"
    assert [t for t, s in zip(from_folder.texts, train, strict=True) if s] == [
        "train neg 2",
        "train neg 10",
        "train pos 2",
        "train pos 10",
    ]
    np.testing.assert_array_equal(from_folder.labels[train], [0, 0, 1, 1])


def test_an_interrupted_extraction_is_not_reused(tmp_path):
    good = _tar_with(tmp_path / "aclImdb_v1.tar.gz", _acl_files()).read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    dest = tmp_path / "x"
    with pytest.raises(DataError, match="unreadable or truncated"):
        read_acl_archive(truncated, dest, per_class=PER_CLASS)
    assert sorted(p.name for p in dest.iterdir()) == []  # no half-filled aclImdb/, no scratch
    (dest / ".extract-left-by-a-kill").mkdir()  # a scratch folder from a killed process
    reviews = read_acl_archive(tmp_path / "aclImdb_v1.tar.gz", dest, per_class=PER_CLASS)
    assert len(reviews) == 8
    assert sorted(p.name for p in dest.iterdir()) == ["aclImdb"]


def test_an_archive_without_acl_folder_is_refused(tmp_path):
    archive = _tar_with(tmp_path / "other.tar.gz", _acl_files(prefix="reviews/"))
    with pytest.raises(DataError, match="no aclImdb/ folder"):
        read_acl_archive(archive, tmp_path / "x", per_class=PER_CLASS)
    assert list((tmp_path / "x").iterdir()) == []


@pytest.mark.parametrize(
    "evil", ["../escape.txt", "/tmp/rnngen-abs-escape.txt", "aclImdb/../../escape.txt"]
)
def test_extraction_refuses_escaping_members(tmp_path, evil):
    archive = _tar_with(tmp_path / "evil.tar.gz", {**_acl_files(), evil: b"pwned"})
    with pytest.raises(DataError, match="refused to extract"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/rnngen-abs-escape.txt").exists()
    assert not (tmp_path / "dest").exists()  # nothing at all was extracted


def test_extraction_refuses_escaping_symlink(tmp_path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("aclImdb/link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="refused to extract"):
        safe_extract(archive, tmp_path / "dest")


def test_empty_and_non_utf8_review_files(tmp_path):
    _tar_with(tmp_path / "a.tar.gz", _acl_files())
    safe_extract(tmp_path / "a.tar.gz", tmp_path / "d")
    target = tmp_path / "d" / "aclImdb" / "train" / "pos" / "2_7.txt"
    target.write_bytes(b"   ")
    with pytest.raises(DataError, match="empty review file"):
        read_acl_folder(tmp_path / "d", per_class=PER_CLASS)
    target.write_bytes(b"caf\xe9 latin-1")
    with pytest.raises(DataError, match="not UTF-8"):
        read_acl_folder(tmp_path / "d", per_class=PER_CLASS)


def test_missing_folder_layout(tmp_path):
    with pytest.raises(DataError, match="aclImdb layout"):
        read_acl_folder(tmp_path, per_class=PER_CLASS)
