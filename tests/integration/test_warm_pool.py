"""The warm workers of `rnngen up` (rnngen_tasks.warm_pool) on a real local Ray: they run a
cell's function, are refused when the code changed since they started or the unit needs a
GPU, hand a cell whose worker died to a plain Ray task, and stop (and come back) when a run
is stopped. A cell trained on a warm worker is bit for bit the cell trained as a task."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from rnngen.resources import Request
from rnngen_tasks import ray_pool, warm_pool

pytestmark = pytest.mark.integration

ONE_CPU = Request(1, 0.0, 0)


@pytest.fixture
def warm(ray_local):
    """Two warm workers on the session's Ray, killed afterwards (other tests must not find
    them: their cells would run on them)."""
    import ray

    names = warm_pool.start(2)
    yield names
    for name in names:
        ray.kill(ray.get_actor(name, namespace=warm_pool.NAMESPACE), no_restart=True)


def where_am_i() -> str:
    """'actor' on a warm worker, 'task' in a plain Ray task."""
    import ray

    return "actor" if ray.get_runtime_context().get_actor_id() else "task"


def die_on_a_warm_worker() -> str:
    if where_am_i() == "actor":
        os._exit(1)
    return "task"


def test_cells_run_on_the_warm_workers_of_a_matching_code(warm):
    assert warm == ["rnngen-warm-0", "rnngen-warm-1"]
    pool, line = warm_pool.pool_for(ONE_CPU)
    assert pool is not None and pool.size == 2
    assert line == "cells run on 2 warm workers of `rnngen up`"
    kwargs = {"request": ONE_CPU, "max_retries": 0}
    assert pool.run(where_am_i, name="probe", **kwargs) == "actor"
    # a worker that dies mid-cell: the cell runs again as a plain task; Ray restarts it
    assert pool.run(die_on_a_warm_worker, name="dies", **kwargs) == "task"
    _all_answer(warm)
    assert [pool.run(where_am_i, name=f"again {i}", **kwargs) for i in range(3)] == ["actor"] * 3


def _all_answer(names: list[str]) -> None:
    """Wait until every warm worker answers (a killed one has been restarted by Ray)."""
    import ray

    handles = [ray.get_actor(n, namespace=warm_pool.NAMESPACE) for n in names]
    deadline = time.monotonic() + 120
    while True:
        try:
            stamps = ray.get([h.stamp.remote() for h in handles], timeout=30)
            assert len(set(stamps)) == 1
            return
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline, "a warm worker did not come back"
            time.sleep(0.5)


def test_warm_workers_are_not_used_for_other_code_or_for_gpu_units(warm, monkeypatch):
    assert warm_pool.pool_for(Request(1, 0.25, 0)) == (None, "")
    assert warm_pool.pool_for(Request(2, 0.0, 0)) == (None, "")
    monkeypatch.setattr(warm_pool, "code_stamp", lambda: "an edit since `up`")
    pool, line = warm_pool.pool_for(ONE_CPU)
    assert pool is None and "it has changed since" in line


def test_no_warm_workers_no_pool(ray_local):
    assert warm_pool.pool_for(ONE_CPU) == (None, "")


def sleep_long() -> None:
    import time

    time.sleep(600)


def test_stopping_a_run_kills_its_warm_worker_which_comes_back(warm):
    pool, _ = warm_pool.pool_for(ONE_CPU)
    assert pool is not None
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()
    with pytest.raises(ray_pool.Cancelled):
        pool.run(sleep_long, request=ONE_CPU, name="long", max_retries=0, cancelled=stop)
    _all_answer(warm)
    assert pool.run(where_am_i, request=ONE_CPU, name="after", max_retries=0) == "actor"


def test_a_cell_trained_on_a_warm_worker_is_the_cell_trained_as_a_task(warm, corpus_out):
    from rnngen_tasks.corpus import load_corpus
    from rnngen_tasks.grid import build_grid
    from rnngen_tasks.train import run_cell

    [spec] = build_grid(
        str(corpus_out), "quick", [4], [0.3], [0], {"epochs": 1, "hidden": 6, "n_train": 300,
                                                    "n_test": 200},
    )  # fmt: skip
    corpus = load_corpus(str(corpus_out))
    refs = ray_pool.share(corpus.table, corpus.embeddings)
    payload = {"spec": spec.to_json()}
    pool, _ = warm_pool.pool_for(ONE_CPU)
    assert pool is not None
    on_warm = pool.run(run_cell, payload, *refs, request=ONE_CPU, name="warm", max_retries=0)
    as_task = ray_pool.run_remote(run_cell, payload, *refs, request=ONE_CPU, name="task",
                                  max_retries=0)  # fmt: skip
    timing = {"seconds", "samples_per_second"}
    assert {k: v for k, v in on_warm["row"].items() if k not in timing} == {
        k: v for k, v in as_task["row"].items() if k not in timing
    }
    assert on_warm["row"]["final_test_loss"] > 0

    def untimed(history: list[dict]) -> list[dict]:
        return [
            {k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")} for h in history
        ]

    assert untimed(on_warm["history"]) == untimed(as_task["history"])
    assert on_warm["weights"].keys() == as_task["weights"].keys()
    for name, value in as_task["weights"].items():
        np.testing.assert_array_equal(on_warm["weights"][name], value)
