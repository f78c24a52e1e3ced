"""What every `rnngen` command shares on the terminal: the console, the one-paragraph
error and the `--out` check. Light (typer and rich only): the commands that need nothing
else (`status`, `up`, `down`) import this and no more."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Print `message` as one paragraph (`error: ...`) and exit with status 2."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def check_out(value: Path) -> Path:
    """`--out` names a folder (created when missing), never an existing regular file."""
    if value.exists() and not value.is_dir():
        fail(
            f"--out {value} is a file, not a folder. Give the folder the outputs go to "
            "(it is created if it does not exist), e.g. --out data."
        )
    return value
