"""`rnngen`: the command line. Each subcommand triggers the Prefect flow of the same name.

This module is the entry point and stays light: `rnngen status`, `up` and `down` (and the
checks every command runs first) answer without importing Prefect, Ray, torch or the
commands that need them; the commands that run flows are in flows/commands.py, imported
only for them (`python -X importtime -m rnngen_flows.cli status` shows what is loaded).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from rnngen_flows.terminal import check_out, fail

# Prefect reads its settings once, when it is first imported, and keeps them: setting these
# later (as the commands once did) changes nothing. Nothing above imports prefect (its
# imports are lazy, inside functions), so they are set here, at import, unless the user set
# them. 90 s: the temporary API's start (creating or migrating its SQLite database) takes
# longer than Prefect's 20 s on a busy two-core machine.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
for _name, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

Out = Annotated[
    Path,
    typer.Option("--out", help="Output folder (data, results, figures).", callback=check_out),
]


def status(out: Out = Path("data")) -> None:
    """What is on disk: data, corpus, stages and grid cells (reads files only: no Prefect,
    no Ray)."""
    from rnngen.errors import UserError
    from rnngen_flows.status import render_status

    try:
        render_status(out)
    except UserError as err:
        fail(str(err))


def up(
    prefect_port: Annotated[
        int | None, typer.Option(help="Port of the Prefect API and UI; default: a free one.")
    ] = None,
    ray_port: Annotated[
        int | None, typer.Option(help="Port of the Ray head (GCS); default: a free one.")
    ] = None,
    cpus: Annotated[
        int | None, typer.Option(help="CPUs the Ray head offers; default: this machine's.")
    ] = None,
    services: Annotated[
        bool,
        typer.Option(
            help="Also run Prefect's services for deployments and workers (schedules, late "
            "runs, ...); a local run does without them, as Prefect's temporary API does."
        ),
    ] = False,
    warm_workers: Annotated[
        bool,
        typer.Option(
            help="Start one warm training worker per CPU (the training code imported), on "
            "which later commands' training cells start at once."
        ),
    ] = True,
) -> None:
    """Start a local Prefect server and a local Ray head in the background (127.0.0.1,
    authentication on) that later commands use, instead of starting their own each time.
    Their addresses are in the state file (RNNGEN_HOME, else PREFECT_HOME/rnngen-up, else
    ~/.rnngen); `rnngen down` stops them."""
    from rnngen.errors import UserError
    from rnngen_flows import services as local

    try:
        typer.echo(local.up(prefect_port, ray_port, cpus, services, warm_workers))
    except UserError as err:
        fail(str(err))


def down() -> None:
    """Stop the Prefect server and the Ray head that `rnngen up` started (nothing else)."""
    from rnngen_flows import services as local

    typer.echo(local.down())


LIGHT = {"status": status, "up": up, "down": down}


def _light_app() -> typer.Typer:
    light = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    for name, command in LIGHT.items():
        light.command(name)(command)
    return light


_FULL: list[typer.Typer] = []


def _full_app() -> typer.Typer:
    """Every command (flows/commands.py and the light ones), built once."""
    if not _FULL:
        from rnngen_flows.commands import app as full

        for name, command in LIGHT.items():
            full.command(name)(command)
        _FULL.append(full)
    return _FULL[0]


def __getattr__(name: str):
    """`app`, the whole command line, is built on first use (it imports the commands)."""
    if name == "app":
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    args = expand_list_options(sys.argv[1:])
    if args and args[0] in LIGHT:
        _light_app()(args=args, prog_name="rnngen")
        return
    # Before anything imports Prefect (which reads its settings once): point the command at
    # the services of `rnngen up` when they run and the user named no others.
    from rnngen_flows import services

    services.attach()
    _full_app()(args=args, prog_name="rnngen")


if __name__ == "__main__":
    sys.exit(main())
