"""The self-contained bundle bench/bench_gpu_study.py runs from on a GPU machine.

The GPU machine has Python 3.12 with torch, numpy, scipy and pyarrow, but neither the
project's data folder nor pydantic (which rnngen.specs and rnngen.settings need), and no
network. The bundle, made here, holds:

- `corpus.parquet`: every review's token ids cut to its last MAX_L tokens (all any L of
  the study reads), remapped to the GloVe rows they use; `glove.npy`: those rows (the last
  one zeros, the padding);
- `bundle.json`: the corpus' data_key (so run_ids are the study's own) and what was cut;
- `wheels/`: pydantic and its needs at the versions of requirements.lock, for the GPU
  machine's Python. They are installed there without pip: a wheel is a zip archive laid
  out for sys.path, so :func:`use_wheels` unpacks them into a folder and puts it first on
  sys.path.

Nothing here imports the orchestration layer (Prefect and Ray are not on that machine, and
importing them here costs seconds).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_L = 300  # the longest window of the study: tokens before the last 300 are never read
LOCK = ROOT / "requirements.lock"
# What `import rnngen.specs` / `rnngen.settings` need beyond the GPU machine's packages.
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-extensions", "typing-inspection")
# The platforms pip may pick a compiled wheel for (x86-64 Linux, any manylinux the
# GPU machine's glibc runs).
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


# ----------------------------------------------------------------------------------- data


def _read_corpus(out: str | Path):
    """(corpus table, embedding table, pointer) of the data folder `out`."""
    from rnngen.corpus import CORPUS_COLUMNS
    from rnngen.glove import load_glove
    from rnngen.io import read_parquet
    from rnngen.layout import Layout

    layout = Layout.at(out)
    if not layout.corpus_pointer.is_file():
        raise SystemExit(
            f"no tokenized corpus under {layout.interim}: run `rnngen embed --out {out}` "
            "(or `make data`) first, or pass --out the data folder that has one."
        )
    pointer = json.loads(layout.corpus_pointer.read_text())
    table = read_parquet(layout.interim / pointer["corpus"], required=CORPUS_COLUMNS)
    return table, load_glove(pointer.get("glove")).table, pointer


def _first_per_class(table, reviews: int):
    """Of each split, the first reviews/2 of each class in stored order (a smoke bundle)."""
    import numpy as np

    split = table.column("split").cast("string").to_numpy(zero_copy_only=False)
    label = table.column("label").to_numpy()
    keep = [
        np.flatnonzero((split == s) & (label == c))[: reviews // 2]
        for s in np.unique(split)
        for c in (0, 1)
    ]
    rows = np.sort(np.concatenate(keep))
    return table.take(rows)


def make_bundle(
    folder: Path,
    out: str | Path,
    *,
    wheels: bool = True,
    reviews: int | None = None,
    python_version: str = "3.12",
) -> dict:
    """Write the data and the wheels the GPU run needs into `folder` (run here).

    `reviews`: keep only the first reviews/2 of each class of each split (a small bundle
    for the smoke test); None keeps all 50,000."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table, embeddings, pointer = _read_corpus(out)
    if reviews is not None:
        table = _first_per_class(table, reviews)
    tokens = table.column("token_ids").combine_chunks()
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    offsets = tokens.offsets.to_numpy()
    keep = np.minimum(lengths, MAX_L)
    starts = offsets[1:] - keep
    values = tokens.values.to_numpy()
    flat = np.concatenate(
        [values[s:e] for s, e in zip(starts, offsets[1:], strict=True)] or [values[:0]]
    )
    pad = embeddings.shape[0] - 1
    used = np.unique(np.append(flat, pad))  # the pad row last, as the table wants it
    remap = np.full(embeddings.shape[0], -1, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    ids = pa.LargeListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(keep)]), pa.int64()), pa.array(remap[flat])
    )
    table = table.set_column(table.column_names.index("token_ids"), "token_ids", ids)
    level = 19 if reviews is None else 3  # the full bundle must travel; a smoke one need not
    pq.write_table(table, folder / "corpus.parquet", compression="zstd", compression_level=level)
    np.save(folder / "glove.npy", np.ascontiguousarray(embeddings[used]))
    info = {
        "data_key": pointer["data_key"],
        "max_L": MAX_L,
        "reviews": int(table.num_rows),
        "subset": reviews is not None,
        "glove_rows": int(len(used)),
    }
    (folder / "bundle.json").write_text(json.dumps(info, indent=1) + "\n")
    if wheels:
        download_wheels(folder / "wheels", python_version)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"bundle in {folder}: {size / 2**20:.1f} MiB ({len(used)} GloVe rows)")
    return info


# --------------------------------------------------------------------------------- wheels


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(names: tuple[str, ...] = WHEELS, lock: Path = LOCK) -> dict[str, str]:
    """`name==version` pins of requirements.lock for `names`, or an error naming the
    missing ones."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalized(name)] = version.strip()
    missing = [n for n in names if normalized(n) not in pins]
    if missing:
        raise SystemExit(f"{lock} pins no version of {missing}: regenerate it (see its header).")
    return {normalized(n): pins[normalized(n)] for n in names}


def wheel_name_version(path: Path) -> tuple[str, str]:
    """(normalized distribution name, version) of a wheel file name (PEP 427)."""
    name, version = path.name.split("-")[:2]
    return normalized(name), version


def download_wheels(wheels: Path, python_version: str = "3.12") -> list[Path]:
    """The locked wheels of WHEELS for CPython `python_version` on x86-64 Linux, in
    `wheels` (any other version of them there is removed: two versions of one package
    would shadow each other)."""
    pins = locked_versions()
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--python-version", python_version,
            "--implementation", "cp", *platforms, "-d", str(wheels),
            *(f"{name}=={version}" for name, version in pins.items()),
        ],
        check=True,
    )  # fmt: skip
    kept = []
    for path in sorted(wheels.glob("*.whl")):
        name, version = wheel_name_version(path)
        if pins.get(name) == version:
            kept.append(path)
        else:
            path.unlink()
    got = {wheel_name_version(p)[0] for p in kept}
    if got != set(pins):
        raise SystemExit(f"pip fetched no wheel of {sorted(set(pins) - got)}.")
    return kept


def unpack_wheels(wheels: list[Path], site: Path) -> Path:
    """Unpack wheels into `site` (a folder for sys.path), without pip. A wheel's
    `<name>.data/purelib` and `platlib` parts go to the top, as an installer puts them."""
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                parts = Path(member.filename).parts
                if ".." in parts or Path(member.filename).is_absolute():
                    raise SystemExit(f"{wheel} holds an unsafe path {member.filename!r}.")
                if len(parts) > 2 and parts[0].endswith(".data"):
                    if parts[1] not in ("purelib", "platlib"):
                        continue  # scripts, headers: nothing an import needs
                    member.filename = str(Path(*parts[2:]))
                archive.extract(member, site)
    return site


def use_wheels(folder: Path) -> str | None:
    """Make the bundle's wheels importable when pydantic is missing; the folder put on
    sys.path (None when pydantic was already there)."""
    try:
        import pydantic  # noqa: F401

        return None
    except ImportError:
        pass
    wheels = sorted((folder / "wheels").glob("*.whl"))
    if not wheels:
        raise SystemExit(
            f"pydantic is missing and {folder / 'wheels'} holds no wheels: make the bundle "
            "here with `python -m bench.bench_gpu_study --make-bundle DIR` (without "
            "--no-wheels) and carry it."
        )
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    compiled = [w for w in wheels if "-cp3" in w.name]
    if any(f"-{tag}-" not in w.name for w in compiled):
        raise SystemExit(
            f"the bundle's compiled wheels ({', '.join(w.name for w in compiled)}) are not "
            f"for this Python ({tag}): make the bundle with --python-version "
            f"{sys.version_info.major}.{sys.version_info.minor}."
        )
    digest = hashlib.sha256("".join(w.name for w in wheels).encode()).hexdigest()[:12]
    site = Path(tempfile.gettempdir()) / f"rnngen-bench-site-{digest}"
    if not site.is_dir():  # unpacked once per machine; a half-unpacked folder is redone
        partial = site.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        unpack_wheels(wheels, partial)
        partial.rename(site)
    sys.path.insert(0, str(site))
    return str(site)
