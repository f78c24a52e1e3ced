"""What one unit of work needs from a machine: CPUs, GPUs and an estimate of its memory.

Every stage that asks Ray for resources states its request per unit (a training cell, a
model's bound statistics, a spectrum shard) from these functions, and the request is
checked against the cluster before anything is submitted: a request no node can meet is
refused at once instead of waiting forever in Ray's queue, and an L so large that one cell
would not fit in a node's memory is refused before a worker grows past it.

The estimates count the large arrays each unit holds at its peak, plus a fixed base for a
worker process (the interpreter, torch, numpy and the mapped corpus). They are meant to be
on the safe side of what `ru_maxrss` shows, not exact.
"""

from __future__ import annotations

from dataclasses import dataclass

# Resident memory of a worker before its first batch: Python, torch, the GloVe table
# (400,001 × 50 float32 = 80 MB) and the corpus' token ids mapped from the object store.
WORKER_BASE_BYTES = 800 << 20
_F32, _F64, _I32 = 4, 8, 4


@dataclass(frozen=True)
class Request:
    """Resources of one unit of work, in Ray's terms (memory in bytes)."""

    cpus: float
    gpus: float
    memory: int

    def as_ray(self) -> dict[str, float]:
        """The resource dict Ray's `options` / `cluster_resources` use."""
        out = {"CPU": self.cpus, "memory": float(self.memory)}
        if self.gpus:
            out["GPU"] = self.gpus
        return out

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU")
        parts.append(f"~{gigabytes(self.memory)} of memory")
        return ", ".join(parts)


def gigabytes(n_bytes: float) -> str:
    """'1.3 GB' (decimal gigabytes, one decimal; '< 0.1 GB' for small amounts)."""
    value = n_bytes / 1e9
    return f"{value:.1f} GB" if value >= 0.1 else "< 0.1 GB"


def train_cell_bytes(
    *,
    n_train: int,
    n_test: int,
    L: int,
    d: int,
    hidden: int,
    batch_size: int,
    eval_batch_size: int,
    members: int = 1,
) -> int:
    """Peak memory of one training cell (rnngen.train.train_model), or of a pack of
    `members` cells trained as one batched model (rnngen.packed.train_pack), on its device.

    The padded id matrices of both splits (int32, shared by a pack's members) and, per
    member, the per-example margins, backpropagation through time (inputs, noise, hidden
    states and their gradients at every step of one batch) and one evaluation batch.
    """
    ids = (n_train + n_test) * L * _I32
    margins = (n_train + n_test) * _F64 * 3
    bptt = batch_size * L * (3 * d + 4 * hidden) * _F32
    evaluation = eval_batch_size * L * (3 * d + 2 * hidden) * _F32
    return WORKER_BASE_BYTES + ids + members * (margins + bptt + evaluation)


def bound_stats_bytes(*, n_train: int, L: int, d: int, hidden: int, eval_batch_size: int) -> int:
    """Peak memory of one model's bound statistics (rnngen.model_stats, float64 numpy):
    the padded ids, one batch as float64 with its |x| and noise, the three recurrences'
    states, the per-coordinate sums and the margins."""
    ids = n_train * L * _I32
    batch = eval_batch_size * L * d * _F64 * 5  # clean and noisy float64 batches in one pass
    states = eval_batch_size * hidden * _F64 * 8
    return WORKER_BASE_BYTES + ids + batch + states + L * d * _F64 + n_train * _F64 * 2


def spectrum_shard_bytes(*, n_shard: int, L: int, d: int, on_gpu: bool = False) -> int:
    """Peak host memory of one spectrum shard (tasks/ray_shards.CorpusShard): its reviews
    embedded as float32 (at most n_shard × L·d) and, unless the shard keeps it on a GPU,
    its partial Gram, a (L·d)² float64 matrix."""
    dim = L * d
    gram = 0 if on_gpu else dim * dim * _F64
    return WORKER_BASE_BYTES + gram + n_shard * dim * _F32
