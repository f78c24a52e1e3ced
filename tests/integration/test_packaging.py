"""What `pip install` puts into site-packages: the three packages under the project's own
names (the folders tasks/ and flows/ install as rnngen_tasks and rnngen_flows), and the
`rnngen` command pointing into them."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_the_wheel_holds_no_generic_top_level_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("rnngen", "tasks", "flows"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("rnngen-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = zf.read(entry).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"rnngen", "rnngen_tasks", "rnngen_flows"}
    assert "rnngen_tasks/train.py" in names and "rnngen_flows/cli.py" in names
    assert "rnngen = rnngen_flows.cli:main" in entry_points
