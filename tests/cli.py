"""Running the `rnngen` command line from tests, in fresh interpreters."""

from __future__ import annotations

import os
import subprocess
import sys


def rnngen(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`rnngen ARGS` in a subprocess (unbuffered, 200 columns), output captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rnngen_flows.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_cli_source(packages: tuple[str, ...]) -> str:
    """Python source for `python -c SOURCE ARGS`: runs `rnngen ARGS` and, at exit, prints to
    stderr which of `packages` had been imported ("imported: [...]")."""
    return (
        "import sys\n"
        "from rnngen_flows.cli import main\n"
        "sys.argv = ['rnngen', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        f"    print('imported:', sorted(set({packages!r}) & set(sys.modules)), file=sys.stderr)\n"
    )
