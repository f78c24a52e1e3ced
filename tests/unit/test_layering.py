"""The layering rule: the pure layer never imports Prefect or Ray."""

import ast
from pathlib import Path

PURE = Path(__file__).resolve().parents[2] / "rnngen"
FORBIDDEN = {"prefect", "ray", "tasks", "flows"}


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
