"""The reliability table: run the fault-injection suite, tabulate what each fault did.

    .venv/bin/python bench/reliability_table.py                  # run tests/faults, print
    .venv/bin/python bench/reliability_table.py --write-readme   # ... and update README.md
    .venv/bin/python bench/reliability_table.py --junit FILE     # tabulate an existing report

Each fault test records what it injected, the message the CLI printed and the result rows
it lost (`record_property`, which pytest writes into its junit XML); this script runs
`pytest tests/faults -m faults --junitxml=...` and reads them back. A test that passed
means the fault was survived; an expected failure (xfail) is a known gap.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
MODULE_ORDER = (
    "test_process_faults",
    "test_cli_faults",
    "test_disk_faults",
    "test_bad_inputs",
    "test_stale_inputs",
)
TMP_PATH = re.compile(r"/[^\s'\"]*?/pytest-of-[^/\s]+/pytest-\d+/[^/\s'\"]+")
ANSI = re.compile(r"(\x1b|#x1B)\[[0-9;]*m")
MESSAGE_CHARS = 160


def run_suite(junit: Path) -> int:
    """pytest on tests/faults, its junit XML written to `junit`; pytest's exit status."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/faults",
        "-m",
        "faults",
        "-p",
        "no:cacheprovider",
        "-o",
        "junit_family=xunit1",
        f"--junitxml={junit}",
        "-q",
    ]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def _clean(text: str, limit: int | None = None) -> str:
    text = " ".join(ANSI.sub("", TMP_PATH.sub("<tmp>", text)).split())
    if limit and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.replace("|", "\\|")


def _outcome(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "**no** (test FAILED)"
    skipped = case.find("skipped")
    if skipped is not None:
        if skipped.get("type") == "pytest.xfail":
            return "**no** — known gap (xfail)"
        return f"skipped: {_clean(skipped.get('message', ''), 80)}"
    return "yes"


def read_cases(junit: Path) -> tuple[list[dict[str, str]], float]:
    """One dict per test case (its properties, outcome, module), and the suite's time."""
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    cases, seconds = [], sum(float(s.get("time", 0)) for s in suites)
    for index, case in enumerate(root.iter("testcase")):
        props = {p.get("name"): p.get("value", "") for p in case.iter("property")}
        module = case.get("classname", "").rsplit(".", 1)[-1]
        cases.append(
            props
            | {
                "test": case.get("name", ""),
                "outcome": _outcome(case),
                "module": module,
                "index": str(index),
            }
        )
    order = {m: i for i, m in enumerate(MODULE_ORDER)}
    cases.sort(key=lambda c: (order.get(c["module"], len(order)), int(c["index"])))
    return cases, seconds


def markdown(cases: list[dict[str, str]], seconds: float) -> str:
    lines = [
        "| fault / input | what was injected | survived | rows lost | message seen |",
        "|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {_clean(c.get('fault') or c['test'])} | {_clean(c.get('injected', ''))}"
            f" | {c['outcome']} | {c.get('rows_lost', '') or '—'}"
            f" | {_clean(c.get('message', ''), MESSAGE_CHARS) or '—'} |"
        )
    survived = sum(c["outcome"] == "yes" for c in cases)
    gaps = sum("xfail" in c["outcome"] for c in cases)
    failed = sum("FAILED" in c["outcome"] for c in cases)
    lost = sum(int(c["rows_lost"]) for c in cases if c.get("rows_lost", "").isdigit())
    lines += [
        "",
        f"{len(cases)} faults and inputs: {survived} survived, {gaps} known gaps "
        f"(xfail), {failed} failed; {lost} result rows lost in all. Suite time "
        f"{seconds:.0f} s on {os.cpu_count()} CPU cores (`pytest tests/faults -m faults`).",
    ]
    return "\n".join(lines)


def write_readme(table: str, readme: Path = README) -> None:
    """Replace what lies between the reliability markers of README.md with `table`."""
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        sys.exit(
            f"error: {readme} lacks the markers {BEGIN} ... {END} (in its "
            "'## Reliability' section); add them where the table should go."
        )
    readme.write_text(text[: start + len(BEGIN)] + "\n" + table + "\n" + text[end:])
    print(f"wrote the table into {readme}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--junit", type=Path, help="tabulate this junit XML instead of running")
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="replace the table between the markers in README.md",
    )
    args = parser.parse_args()
    status = 0
    with tempfile.TemporaryDirectory(prefix="rnngen-faults-") as scratch:
        junit = args.junit
        if junit is None:
            junit = Path(scratch) / "faults.xml"
            status = run_suite(junit)
            if not junit.is_file():
                print(f"error: pytest wrote no report (exit {status})", file=sys.stderr)
                return status or 1
        cases, seconds = read_cases(junit)
    table = markdown(cases, seconds)
    print(table)
    if args.write_readme:
        write_readme(table)
    return status


if __name__ == "__main__":
    sys.exit(main())
