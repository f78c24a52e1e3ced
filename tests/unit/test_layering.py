"""The layering rule: the pure layer never imports Prefect or Ray."""

import ast
from pathlib import Path

PURE = Path(__file__).resolve().parents[2] / "rnngen"
FORBIDDEN = {"prefect", "ray", "rnngen_tasks", "rnngen_flows", "tasks", "flows"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_pure_layer_imports_no_orchestration():
    files = sorted(PURE.rglob("*.py"))
    assert files, "no pure-layer modules found"
    offenders = {
        str(f.relative_to(PURE)): sorted(_imported_roots(f) & FORBIDDEN)
        for f in files
        if _imported_roots(f) & FORBIDDEN
    }
    assert offenders == {}


def test_the_pure_layer_and_the_gpu_bench_compile_under_python_3_12():
    """The GPU machine runs Python 3.12 (this project 3.11): what it runs must at least be
    valid 3.12 (its packages are not installed here for 3.12, so this checks the syntax and
    the compile step, not the imports). Skipped where no python3.12 is installed."""
    import subprocess

    import pytest

    python = _python312()
    if python is None:
        pytest.skip("no python3.12 on this machine")
    files = [
        *map(str, sorted(PURE.rglob("*.py"))),
        *(
            str(PURE.parent / "bench" / n)
            for n in (
                "bench_gpu_study.py",
                "gpu_spectrum.py",
                "gpu_bundle.py",
                "gpu_bounds.py",
                "gpu_stages.py",
                "bench_gpu_cell.py",
            )
        ),
    ]
    code = "import sys\nfor f in sys.argv[1:]: compile(open(f, encoding='utf-8').read(), f, 'exec')"
    done = subprocess.run([python, "-c", code, *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _python312() -> str | None:
    """A working python3.12: on PATH, or one pyenv installed without selecting it."""
    import glob
    import shutil
    import subprocess

    candidates = [
        shutil.which("python3.12"),
        *sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12*/bin/python3.12"))),
    ]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


ROOT = PURE.parent
# The stage modules of tasks/: each may use the shared modules (store, executor, data,
# ray_pool, ...) but never another stage, so a new stage copies nothing from an old one.
STAGES = {"train", "bounds", "spectrum", "measures", "certify", "figures", "report"}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_stage_module_imports_another_stage():
    offenders = {}
    for stage in sorted(STAGES):
        path = ROOT / "tasks" / f"{stage}.py"
        if not path.is_file():
            continue
        others = {f"rnngen_tasks.{s}" for s in STAGES - {stage}}
        bad = _imported_modules(path) & others
        if bad:
            offenders[stage] = sorted(bad)
    assert offenders == {}


def test_tasks_never_import_flows():
    offenders = {
        p.name: sorted(
            n for n in _imported_modules(p) if n.split(".")[0] in ("rnngen_flows", "flows")
        )
        for p in sorted((ROOT / "tasks").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_results_file_name_is_spelled_once():
    """Paths of results live in rnngen/layout.py: no other module spells a results file."""
    names = ("history.parquet", "train_state.json", "runs.parquet", "bounds.parquet")
    spelled = {}
    for path in [
        *(ROOT / "rnngen").glob("*.py"),
        *(ROOT / "tasks").glob("*.py"),
        *(ROOT / "flows").glob("*.py"),
    ]:
        for name in names:
            if f'"{name}"' in path.read_text() and path.name != "layout.py":
                spelled.setdefault(name, []).append(path.name)
    assert spelled == {}
