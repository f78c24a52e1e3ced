"""Start-up costs of the `rnngen` command line, part by part, beside their targets.

    python -m bench.bench_startup                    # everything below (~5-10 min on 2 cores)
    python -m bench.bench_startup --quick            # imports, --help, status, the services' starts
    python -m bench.bench_startup --study-out data   # time a second `rnngen study` on that
                                                     # finished folder instead of a tiny study

Every part runs in fresh processes, as a user's commands do:

- imports: `python -c pass` (the baseline), the CLI's light entry (what `status` loads), the
  whole command line (what `--help` loads), and Prefect, Ray and torch alone;
- `rnngen --help` and `rnngen status` (on the committed data/paper);
- Prefect's temporary API start and a private local Ray's start, each alone;
- a 2-cell tiny `rnngen train`, cold (temporary Prefect API, private Ray: zero setup), then
  the same command again (a stage with nothing to do), then warm on a new folder with the
  services of `rnngen up` (whose own start is shown too);
- a second `rnngen study` with nothing to do (a tiny study is run first, untimed).

The bench uses its own RNNGEN_HOME (no `rnngen up` of the user's is touched or used) and
temporary output folders linked to the corpus under data/ (`make data`). The figures depend
on the machine and its load: the table says how loaded it was (load average per core).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
PY = sys.executable
TINY = ["--L", "4", "--sigma", "0", "0.3", "--seeds", "0", "--n-train", "300", "--n-test", "200"]
TINY += ["--epochs", "1", "--hidden", "6"]

# part -> (target in seconds, what the target is); None: no target (shown for reference)
TARGETS = {
    "status": (1.0, "rnngen status <= 1 s"),
    "nothing to do": (3.0, "a stage with nothing to do <= 3 s"),
    "train cold": (20.0, "2-cell tiny train, end to end, cold <= 20 s"),
    "train warm": (8.0, "2-cell tiny train, warm (rnngen up) <= 8 s"),
    "second study": (10.0, "a second study with nothing to do <= 10 s"),
}


def timed(args: list[str], env: dict[str, str], check: bool = True) -> tuple[float, str]:
    """Wall seconds of a command in a fresh process, and its output."""
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    seconds = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise SystemExit(f"`{' '.join(map(str, args))}` failed:\n{output[-3000:]}")
    return seconds, output


def rnngen(*args: str | Path) -> list[str]:
    return [PY, "-m", "rnngen_flows.cli", *map(str, args)]


def fresh_out(parent: Path, name: str, raw: bool = False) -> Path:
    """An output folder holding the real corpus (and the verified tarball), linked."""
    out = parent / name
    for folder in ("interim", "raw") if raw else ("interim",):
        (out / folder).mkdir(parents=True)
        for item in (DATA / folder).iterdir():
            if item.is_file():
                (out / folder / item.name).symlink_to(item)
    return out


def python_seconds(code: str, env: dict[str, str]) -> float:
    return timed([PY, "-c", code], env)[0]


PREFECT_START = """
import time
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer()
t = time.perf_counter(); server.start(); print("SECONDS", time.perf_counter() - t); server.stop()
"""

RAY_START = """
import time
from rnngen_tasks import ray_pool
import ray
ray_pool.connect(None, num_cpus=2)
t = time.perf_counter(); ray_pool.ensure_connected(); print("SECONDS", time.perf_counter() - t)
ray.shutdown()
"""


def reported(output: str) -> float:
    """The seconds a snippet printed on its `SECONDS <s>` line."""
    return float(next(line for line in output.splitlines() if line.startswith("SECONDS"))[8:])


def measure(args: argparse.Namespace, env: dict[str, str], scratch: Path) -> list[tuple]:
    rows: list[tuple] = []

    def row(part: str, seconds: float, note: str = "") -> None:
        rows.append((part, seconds, note))
        print(f"  {part}: {seconds:.2f} s {note}", flush=True)

    print("imports (fresh interpreters)", flush=True)
    row("python -c pass (baseline)", python_seconds("pass", env))
    entries = (("rnngen_flows.cli", "status's entry"), ("rnngen_flows.commands", "--help"))
    for module, what in entries:
        row(f"import {module} ({what})", python_seconds(f"import {module}", env))
    for package in ("prefect", "ray", "torch"):
        row(f"import {package} (alone)", python_seconds(f"import {package}", env))
    row("rnngen --help", timed(rnngen("--help"), env)[0])
    row("status", timed(rnngen("status", "--out", DATA / "paper"), env)[0], "(data/paper)")

    print("services, each alone", flush=True)
    row("Prefect temporary API start", reported(timed([PY, "-c", PREFECT_START], env)[1]))
    row("Ray local start (ray.init)", reported(timed([PY, "-c", RAY_START], env)[1]))
    if args.quick:
        return rows

    print("a 2-cell tiny train", flush=True)
    cold = fresh_out(scratch, "cold")
    row("train cold", timed(rnngen("train", *TINY, "--out", cold), env)[0], "(zero setup)")
    seconds, output = timed(rnngen("train", *TINY, "--out", cold), env)
    row("nothing to do", seconds, "(the same train again)")
    assert "already finished" in output, output[-2000:]
    row("rnngen up", timed(rnngen("up", "--cpus", "2"), env)[0], "(once)")
    try:
        warm = fresh_out(scratch, "warm")
        seconds, output = timed(rnngen("train", *TINY, "--out", warm), env)
        assert "using `rnngen up`" in output, output[-2000:]
        row("train warm", seconds, "(with rnngen up)")
    finally:
        row("rnngen down", timed(rnngen("down"), env)[0])

    print("a second study with nothing to do", flush=True)
    if args.study_out:
        study = [*rnngen("study", "--out", args.study_out)]
    else:
        out = fresh_out(scratch, "study", raw=True)
        study = rnngen("study", *TINY, "--out", out)
        timed(study, env)  # the first one does the work (untimed)
    seconds, output = timed(study, env)
    assert "finished" in output, output[-2000:]
    row("second study", seconds, f"({args.study_out or 'tiny quick study, 2 cells'})")
    return rows


def table(rows: list[tuple]) -> str:
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    lines = [
        f"rnngen start-up on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        f"({load:.1f} per core{': a LOADED machine' if load > 0.7 else ''})",
        f"{'part':<44} {'measured':>9}  {'target':<46} {'met':>4}",
    ]
    for part, seconds, note in rows:
        target, text = TARGETS.get(part, (None, ""))
        met = "" if target is None else ("yes" if seconds <= target else "NO")
        lines.append(f"{part:<44} {seconds:>8.2f}s  {text:<46} {met:>4}  {note}")
    base = next(s for p, s, _ in rows if p.startswith("python -c pass"))
    status = next(s for p, s, _ in rows if p == "status")
    lines.append(f"status / bare interpreter start: {status / base:.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="imports, help, status, services")
    parser.add_argument("--study-out", help="a finished study folder to run `study` on again")
    args = parser.parse_args()
    if not (DATA / "interim" / "corpus.json").is_file():
        raise SystemExit("no corpus under data/: run `make data` first.")
    scratch = Path(tempfile.mkdtemp(prefix="rnngen-bench-startup-"))
    env = {
        **os.environ,
        "RNNGEN_HOME": str(scratch / "home"),  # a private `rnngen up`, never the user's
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RNNGEN_LIVE": "0",
        "COLUMNS": "160",
    }
    for name in ("PREFECT_API_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    try:
        rows = measure(args, env, scratch)
    finally:
        subprocess.run(rnngen("down"), env=env, capture_output=True, cwd=ROOT)
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
