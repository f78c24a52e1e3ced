"""Prefect task of the report stage: REPORT.md in the output folder, from its Parquet files."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from rnngen import schemas
from rnngen.io import atomic_path, read_parquet
from rnngen.layout import Layout
from rnngen.report import Inputs, overview, render


def report_inputs(out: str) -> Inputs:
    """The result tables of `out` (runs, spectrum and bounds must be there; history,
    embed and the figures stage's kendall_tau when written) and the names of the figures
    drawn; a missing or foreign file is a one-paragraph error."""
    layout = Layout.at(out)

    def optional(path: Path, schema) -> object:
        return read_parquet(path, required=schema) if path.is_file() else None

    figures = tuple(sorted(p.name for p in layout.figures.glob("*.png")))
    if layout.certificates.is_file() and not layout.runs.is_file():  # certificates only
        return Inputs(
            runs=None,
            certificates=optional(layout.certificates, schemas.CERTIFICATES),
            figures=figures,
        )
    layout.require("train", "spectrum", "bounds")
    return Inputs(
        runs=read_parquet(layout.runs, required=schemas.RUNS),
        spectrum=read_parquet(layout.spectrum, required=schemas.SPECTRUM),
        bounds=read_parquet(layout.bounds, required=schemas.BOUNDS),
        history=optional(layout.history, schemas.HISTORY),
        embed=optional(layout.embed_summary, schemas.EMBED),
        figures=figures,
        baseline=_baseline(layout),
        kendall=optional(layout.kendall_tau, schemas.KENDALL),
        measures=optional(layout.measures, schemas.MEASURES),
        ranking=optional(layout.ranking, schemas.RANKING),
        certificates=optional(layout.certificates, schemas.CERTIFICATES),
    )


def _baseline(layout: Layout):
    """The paper profile's runs, when this folder has a sibling `paper/` (the committed
    study's layout: data/paper beside data/paper-long, ...) and is not it."""
    path = Layout.at(layout.out.parent / "paper").runs
    if layout.out.name == "paper" or not path.is_file():
        return None
    return read_parquet(path, required=schemas.RUNS)


@task(name="write-report", cache_policy=NO_CACHE)
def write_report(out: str) -> tuple[Path, bool]:
    """Write `<out>/REPORT.md` (atomically, and only when its text changed) -> (path,
    whether it was written)."""
    text = render(report_inputs(out))
    path = Layout.at(out).out / "REPORT.md"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path, False
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path, True


# The committed study's folders, in the order of the README's results table.
COMMITTED = ("paper", "paper-long", "sigma-wide", "constrained", "constrained-099", "fit")
README_BEGIN, README_END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"


def readme_verdicts(data: Path) -> str:
    """The README's verdict table over the committed folders under `data` (those with a
    REPORT.md)."""
    folders = [
        (n, report_inputs(str(data / n))) for n in COMMITTED if (data / n / "REPORT.md").is_file()
    ]
    return "\n".join([README_BEGIN, *overview(folders), README_END])


def write_readme_verdicts(readme: Path, data: Path) -> bool:
    """Replace the block between the verdict markers of `readme`; whether it changed."""
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    new = head + readme_verdicts(data) + tail
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":  # python -m rnngen_tasks.report: refresh README.md's verdict table
    root = Path(__file__).resolve().parents[1]
    changed = write_readme_verdicts(root / "README.md", root / "data")
    print("README.md verdicts " + ("updated" if changed else "already current"))
