"""Where a result came from: code version, software versions, hardware, time, flow run.

Every Parquet file the pipeline writes carries :func:`provenance` in its metadata. The code
version is read once per process (the code a process runs is the code it loaded at start,
whatever happens to the checkout later): the git commit of the checkout this package was
imported from, and whether tracked files differed from it then (`git_dirty`).

The Prefect flow-run id comes from the orchestration layer, which registers a getter with
:func:`set_flow_run_source`; this module itself knows nothing of Prefect.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "scipy", "pyarrow", "ray", "prefect")
_ROOT = Path(__file__).resolve().parents[1]
_flow_run_source: Callable[[], str | None] = lambda: None  # noqa: E731


def set_flow_run_source(getter: Callable[[], str | None]) -> None:
    """Register how to read the id of the flow run the process is in (None outside one)."""
    global _flow_run_source
    _flow_run_source = getter


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's word)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# What a GPU driver puts on a Linux machine (NVIDIA's, AMD's ROCm, CUDA under WSL). Where
# none is present torch can see no GPU, and asking it (importing torch: seconds) is skipped.
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def gpu_driver_present() -> bool:
    return any(os.path.exists(path) for path in GPU_DRIVER_PATHS)


def gpu_count() -> int:
    """CUDA devices this process sees (torch's count; 0 at once without a GPU driver)."""
    if not gpu_driver_present():
        return 0
    import torch

    return torch.cuda.device_count()


def gpus() -> list[str]:
    """Names of the CUDA devices this process sees (empty without any)."""
    if not gpu_driver_present():
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def hardware() -> str:
    """'AMD EPYC 7B13 (2 cores)' or '… (16 cores); NVIDIA H100 80GB HBM3': one line."""
    text = f"{cpu_model()} ({os.cpu_count()} cores)"
    names = gpus()
    return f"{text}; {', '.join(names)}" if names else text


@functools.cache
def _static() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    # The code's state only: results the pipeline itself rewrites under data/ (figures, a
    # report) do not make the code that writes the next ones "uncommitted".
    status = (
        _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)data")
        if commit
        else None
    )
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("rnngen", *PACKAGES)},
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpus": gpus(),
        "platform": platform.platform(terse=True),
    }


def provenance() -> dict[str, Any]:
    """What every result file records about how it was made (JSON-serialisable)."""
    return {**_static(), "written_at": utc_now(), "flow_run_id": _flow_run_source()}


def isa_level() -> str | None:
    """The vector instruction set ATen dispatches to on this CPU ('AVX2', 'AVX512', ...):
    two CPUs with different levels can round a float sum differently."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def code_fields() -> dict[str, Any]:
    """The code a row was computed with: the driver's commit and whether its checkout had
    uncommitted changes (workers run the code the driver shipped)."""
    static = _static()
    return {"git_commit": static["git_commit"], "git_dirty": static["git_dirty"]}


MACHINE_COLUMNS = frozenset({"hardware", "cpu_model", "isa_level", "gpu_model", "torch_version"})


@functools.cache
def machine_fields() -> dict[str, Any]:
    """The machine a row was computed on, as columns (read where the unit ran)."""
    names = gpus()
    return {
        "hardware": hardware(),
        "cpu_model": cpu_model(),
        "isa_level": isa_level(),
        "gpu_model": ", ".join(names) if names else None,
        "torch_version": _version("torch"),
    }


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second: '2026-12-02T08:15:00Z'."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
