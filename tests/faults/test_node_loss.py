"""A whole node lost mid-grid, as a spot instance is: a real multi-node Ray cluster on this
machine (`ray.cluster_utils.Cluster`: a head without CPUs and two one-CPU worker nodes,
each with its own raylet), `rnngen train --ray-address` against it, and the node running a
cell removed while that cell trains."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.faults.harness import (
    cli,
    grid_args,
    grid_ids,
    line_with,
    read_rows,
    report,
    rows_lost,
    statuses,
)

pytestmark = pytest.mark.faults

# Cells long enough (~10-20 s each here) that the node is certainly removed mid-cell.
CELL = {"hidden": 8, "epochs": 8, "n_train": 4000, "n_test": 200}


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def _training_workers(raylets: dict[int, object]) -> list[tuple[psutil.Process, object]]:
    """Every `ray::train L=…` worker process, with the cluster node whose raylet started it."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if " ".join(proc.info["cmdline"] or []).startswith("ray::train L="):
                node = raylets.get(proc.ppid())
                if node is not None:
                    found.append((proc, node))
        except psutil.Error:
            continue
    return found


def _on_both_nodes(raylets: dict[int, object]) -> list[tuple[psutil.Process, object]] | None:
    """The training workers once cells run on both worker nodes (the grid spread out)."""
    workers = _training_workers(raylets)
    return workers if len({id(node) for _, node in workers}) == 2 else None


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_a_node_lost_mid_cell_is_retried_on_another(
    cluster, corpus_out, fault_env, tmp_path, record_property
):
    seeds = [0, 1, 2, 3]
    raylets = {_raylet_pid(node): node for node in cluster.worker_nodes}
    args = [
        "train",
        "--out",
        str(corpus_out),
        "--ray-address",
        cluster.address,
        *grid_args(seeds, CELL),
    ]
    with cli(args, fault_env, tmp_path / "cli.log") as run:
        workers = run.wait_until(
            lambda: _on_both_nodes(raylets), 240, "cells training on both worker nodes"
        )
        worker, node = workers[0]
        runs_file = corpus_out / "results" / "runs.parquet"
        before = read_rows(corpus_out) if runs_file.is_file() else {}  # cells already done
        cluster.remove_node(node)  # its raylet and every worker on it are gone
        removed_at = time.monotonic()
        rc = run.wait(600)
    ids = grid_ids(corpus_out, seeds, CELL)
    after = read_rows(corpus_out)
    lost = rows_lost(before, after)
    report(
        record_property,
        fault="a whole node lost mid-cell",
        injected="ray.cluster_utils.Cluster (head + 2 one-CPU nodes); the node of a "
        "training cell removed while it trains",
        message=line_with(run.output(), "train: 4 cells") or run.tail(1),
        rows_lost=lost,
        recovered_seconds=round(time.monotonic() - removed_at, 1),
    )
    assert rc == 0, run.tail()
    assert statuses(corpus_out) == dict.fromkeys(ids, "done")
    assert not worker.is_running()
    assert lost == 0


def test_the_spectrum_across_two_nodes_equals_the_dense_reference(
    cluster, corpus_out, fault_env, tmp_path
):
    """Two shards on two nodes (each node has one CPU): the Gram slabs travel between
    raylets through the object store, not through one node's shared memory."""
    import numpy as np
    import pyarrow.parquet as pq

    from rnngen.corpus import embed_batch
    from rnngen.layout import Layout
    from rnngen_tasks.corpus import load_corpus
    from rnngen_tasks.spectrum import train_tokens
    from tests.faults.harness import run_cli

    run = run_cli(
        [
            "spectrum",
            "--out",
            str(corpus_out),
            "--L",
            "4",
            "--n-train",
            "1000",
            "--ray-address",
            cluster.address,
        ],
        fault_env,
        tmp_path / "cli.log",
        timeout=300,
    )
    assert run.proc.returncode == 0, run.tail()
    row = pq.read_table(Layout.at(corpus_out).spectrum).to_pylist()[0]
    assert row["status"] == "certified" and row["workers"] == 2
    corpus = load_corpus(str(corpus_out))
    tokens = train_tokens(corpus, 1000)
    x = embed_batch(tokens, 4, corpus.embeddings).reshape(len(tokens), -1).astype(np.float64)
    dense = np.linalg.eigvalsh(x.T @ x / len(x))[0]
    assert abs(row["lambda_min"] - dense) / dense < 1e-9
