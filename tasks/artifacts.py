"""What a run shows in Prefect besides its logs: its name and tags, and its artifacts.

Every flow run is named `<stage> <profile>` (or `<stage>` where no profile applies) and
tagged `rnngen`, `stage:<stage>` and `profile:<profile>`, the same whether the CLI, a
deployment or a parent flow (the study) started it; its task runs carry the same tags.
Every stage flow publishes its provenance (the code, software and hardware it ran on, and
its profile); training and bounds keep a progress artifact that moves model by model; the
study adds its headline numbers.

Prefect is imported inside the functions: the CLI decides what a stage has to do (reading
the steps that import this module) before Prefect is loaded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from rnngen.io import read_parquet
from rnngen.layout import Layout
from rnngen.profile_file import profile_label, profile_record
from rnngen.provenance import provenance

PROFILE_TAG = "profile:"
STAGE_TAG = "stage:"


def run_tags(stage: str, profile: str | None = None) -> list[str]:
    """The tags of a run of `stage`: `rnngen`, `stage:<stage>`, `profile:<label>`."""
    tags = ["rnngen", f"{STAGE_TAG}{stage}"]
    if profile:
        tags.append(f"{PROFILE_TAG}{profile_label(profile)}")
    return tags


def _inherited_profile(tags) -> str | None:
    """The profile of a parent run (a study's stage runs carry the study's profile)."""
    return next((t[len(PROFILE_TAG) :] for t in sorted(tags) if t.startswith(PROFILE_TAG)), None)


def run_name(stage: str) -> Callable[[], str]:
    """A flow's `flow_run_name`: `<stage> <profile>` from the run's `profile` parameter, or
    the profile its parent run was tagged with, else `<stage>`."""

    def name() -> str:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        profile = (ctx.parameters or {}).get("profile") if ctx else None
        label = profile_label(profile) if profile else None
        if label is None and ctx is not None:
            label = _inherited_profile(ctx.flow_run.tags)
        return f"{stage} {label}" if label else stage

    name.__name__ = f"{stage}_run_name"
    return name


@contextlib.contextmanager
def labelled(stage: str, profile: str | None = None) -> Iterator[None]:
    """Tag the current flow run as a run of `stage` (and `profile`, else its parent's) and
    give the task runs and flow runs started inside the same tags: a stage run inside a
    study is tagged `stage:train`, not `stage:study`."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext, TagsContext

    ctx = FlowRunContext.get()
    current = set(TagsContext.get().current_tags) | set(ctx.flow_run.tags if ctx else ())
    label = profile_label(profile) if profile else _inherited_profile(current)
    mine = set(run_tags(stage)) | ({f"{PROFILE_TAG}{label}"} if label else set())
    tags = {t for t in current if not t.startswith((STAGE_TAG, PROFILE_TAG))} | mine
    if ctx is not None and set(ctx.flow_run.tags) != tags:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, tags=sorted(tags))
        ctx.flow_run.tags = sorted(tags)
    with TagsContext(current_tags=tags):
        yield


def publish_provenance(stage: str, out: str, profile: str | None = None) -> None:
    """A markdown artifact `<stage>-provenance`: commit, versions, hardware, output folder,
    and the profile (a profile file's own text)."""
    from prefect.artifacts import create_markdown_artifact

    p = provenance()
    versions = ", ".join(f"{k} {v}" for k, v in sorted(p["versions"].items()) if v)
    commit = (p["git_commit"] or "unknown") + (" (uncommitted changes)" if p["git_dirty"] else "")
    lines = [
        f"# rnngen {stage}",
        "",
        f"- output folder: `{Layout.at(out).out}`",
        f"- git commit: `{commit}`",
        f"- Python {p['python']}; {versions}",
        f"- host: {p['cpu']} ({p['cpu_cores']} cores)"
        + (f"; GPUs: {', '.join(p['gpus'])}" if p["gpus"] else "; no GPU"),
        f"- platform: {p['platform']}; started {p['written_at']}",
    ]
    if profile:
        lines += [f"- profile: `{profile_label(profile)}`", "", "```", profile_record(profile)]
        lines += ["```"]
    create_markdown_artifact(
        key=f"{stage}-provenance",
        markdown="\n".join(lines),
        description=f"What this {stage} run ran on",
    )


class Progress:
    """A progress artifact `<stage>-progress` that moves as units of work finish (from any
    thread)."""

    def __init__(self, stage: str, total: int, already: int = 0) -> None:
        self.stage, self.total, self.done = stage, max(total, 1), already
        self._lock = threading.Lock()
        from prefect.artifacts import create_progress_artifact

        self.id = create_progress_artifact(
            progress=self._percent(), key=f"{stage}-progress", description=self._text()
        )

    def _percent(self) -> float:
        return 100.0 * self.done / self.total

    def _text(self) -> str:
        return f"{self.stage}: {self.done} of {self.total} finished"

    def advance(self) -> None:
        from prefect.artifacts import update_progress_artifact

        with self._lock:
            self.done += 1
            update_progress_artifact(self.id, self._percent(), description=self._text())


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key=key, table=rows, description=description)


def publish_artifacts(out: str, profile: str) -> dict[str, Any]:
    """The study's table of the grid and markdown of its headline numbers."""
    from prefect.artifacts import create_markdown_artifact

    from rnngen.analysis import cells

    layout = Layout.at(out)
    runs = read_parquet(layout.runs)
    grid = [
        {k: r[k] for k in ("L", "sigma", "seed", "status", "test_accuracy", "gen_error")}
        for r in runs.to_pylist()
    ]
    profile = profile_label(profile)
    publish_table(f"study-grid-{profile}", grid, f"Training grid of the `{profile}` study ({out})")
    spectrum_rows = read_parquet(layout.spectrum).to_pylist()
    lam = {r["L"]: r["lambda_min"] for r in spectrum_rows}
    gen = [
        {
            "experiment_id": c.experiment_id,
            "L": c.L,
            "sigma": c.sigma,
            "mean": c.mean,
            "sem": c.sem,
            "count": c.n,
        }
        for c in cells(runs, "gen_error")
    ]
    lines = [f"# rnngen study `{profile}`", "", "| L | λ_min(E xxᵀ) | residual |", "|---|---|---|"]
    lines += [
        f"| {r['L']} | {r['lambda_min'] if r['lambda_min'] is not None else 'uncertified'}"
        f" | {r['lambda_min_residual']:.1e} |"
        for r in spectrum_rows
    ]
    lines += ["", "| L | σ | gen. error (mean ± s.e.) | seeds |", "|---|---|---|---|"]
    lines += [
        f"| {g['L']} | {g['sigma']:g} | {g['mean']:+.4f} ± {g['sem']:.4f} | {g['count']} |"
        for g in gen
    ]  # one experiment per study folder; others are in REPORT.md
    lines += [
        "",
        "Figures: " + ", ".join(f"`{p.name}`" for p in sorted(layout.figures.glob("*.png"))),
        "",
        f"Report: `{layout.out / 'REPORT.md'}`",
    ]
    create_markdown_artifact(key=f"study-summary-{profile}", markdown="\n".join(lines))
    return {"lambda_min": lam, "gen_error": gen}
