"""Shared test setup: project-local Prefect home, no analytics, Ray token auth on.

Every Ray the tests start keeps token authentication on, as the CLI's local Ray does: its
GCS listens on all interfaces. The session gets its own random token (in the environment,
inherited by every subprocess and Ray worker) instead of writing ~/.ray/auth_token.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("RAY_AUTH_MODE", "token")
if not any(os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

DATA = Path(os.environ.get("RNNGEN_TEST_DATA", ROOT / "data"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The data folder that `make data` filled; integration tests need it (no skipping)."""
    if not (DATA / "interim" / "corpus.json").is_file():
        pytest.fail(f"real data not prepared under {DATA}: run `make data` (make test does).")
    return DATA


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray cluster with 2 CPUs for the whole session."""
    from rnngen_tasks import ray_pool

    ray_pool.connect(None, num_cpus=2)
    ray_pool.ensure_connected()
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def corpus_out(real_data, tmp_path) -> Path:
    """A fresh output folder that already holds the real tokenized corpus (linked, not copied)."""
    interim = tmp_path / "interim"
    interim.mkdir()
    for item in (real_data / "interim").iterdir():
        (interim / item.name).symlink_to(item)
    return tmp_path
