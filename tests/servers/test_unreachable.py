"""An address nobody answers at is a one-paragraph error naming it, and a non-zero exit.

Each test holds a port that is bound but not listening, so a connection to it is refused
at once, whatever else runs on the machine.
"""

import socket
from contextlib import contextmanager

import pytest

from tests.servers.conftest import BIN, run

pytestmark = pytest.mark.servers


@contextmanager
def refused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield sock.getsockname()[1]


def _error_paragraph(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one 'error:' paragraph, got:\n{output[-4000:]}"
    return lines[0]


def test_unreachable_ray_address(prefect_server, servers_env, corpus_out):
    env = {**servers_env, "PREFECT_API_URL": prefect_server}  # no temporary API to wait for
    with refused_port() as port:
        address = f"127.0.0.1:{port}"
        done = run(
            [
                BIN / "rnngen",
                "spectrum",
                "--L",
                "3",
                "--n-train",
                "600",
                "--out",
                corpus_out,
                "--ray-address",
                address,
            ],
            env,
            timeout=45,
        )
    assert done.returncode != 0
    assert address in _error_paragraph(done.stdout)


def test_unreachable_prefect_api(servers_env, tmp_path):
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}/api"
        done = run(
            # embed reaches Prefect at once (figures would first find its inputs missing)
            [BIN / "rnngen", "embed", "--out", tmp_path, "--L", "10"],
            {**servers_env, "PREFECT_API_URL": url},
            timeout=120,
        )
    assert done.returncode != 0
    assert "Traceback" not in done.stdout
    assert url in _error_paragraph(done.stdout)
