"""Progress messages from running Ray tasks reach the driver without costing the task its
CPU (a task that waited on its messages lent its CPU back to Ray, which started one cell
more than the cluster has CPUs), in order, and all of them even when the driver stops
listening the moment the task returns."""

import threading
import time

import pytest

from rnngen.resources import Request
from rnngen_tasks import ray_pool

pytestmark = pytest.mark.integration


def _busy(send, key: str) -> tuple[float, float]:
    start = time.time()
    for i in range(40):
        send(key, "info", f"step {i}")
        time.sleep(0.05)
    send.flush()  # as run_cell does before it returns
    return start, time.time()


def test_sending_progress_keeps_the_task_on_its_cpu(ray_local):
    relay = ray_pool.ProgressRelay()
    got: dict[str, list[str]] = {}
    lock = threading.Lock()
    keys = [f"cell{i}" for i in range(4)]

    def listener(key: str):
        def hear(kind: str, text: str) -> None:
            with lock:
                got.setdefault(key, []).append(text)

        return hear

    for key in keys:
        relay.listen(key, listener(key))
    try:
        refs = [
            ray_pool.submit(
                _busy, relay.sender(), key, request=Request(1, 0.0, 0), name=key, max_retries=0
            )
            for key in keys
        ]
        spans = []
        for key, ref in zip(keys, refs, strict=True):
            spans.append(ray_pool.get(ref))
            relay.forget(key)  # at once, as a cell's task run does: nothing may be lost
    finally:
        relay.close()
    # never more tasks at once than the 2 CPUs of the cluster
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2, spans
    # every message arrived, in order, for its own key
    for key in keys:
        assert got[key] == [f"step {i}" for i in range(40)]
