"""Train one ReLU RNN (eq. 1) on IMDB with Gaussian input noise, and measure it.

One call of `train_model` is one run of the grid: seed the streams,
train with fresh N(0, sigma^2) noise on every input coordinate each time an example is
used, then evaluate clean test error, clean training error and the training error under
ONE recorded noise draw -- the quantity Theorem 3 bounds against. Every epoch leaves a
record in the run's history (loss, noisy and clean training accuracy, test accuracy). A
run whose loss turns non-finite stops and reports status 'diverged' instead of raising,
so a grid goes on.

The defaults (rnngen/specs.py: IRNN init, m = 128, Adam lr 5e-4, batch 64, clip 5, 10
epochs) were chosen on the full data (25,000 train / 25,000 test), 2 CPU threads a run:
L = 100, sigma = 0 reached 82-83 % clean test accuracy in ~1.5 min; L = 200 / 300 reach
~86 % in ~3 / ~5 min. Seeds, L and sigma change only the result, never the code path.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from rnngen.corpus import SplitArrays, split_arrays
from rnngen.errors import ParameterError
from rnngen.model import ReLURNN
from rnngen.rows import QUANTILES, EpochLog
from rnngen.specs import RunSpec

if TYPE_CHECKING:
    import pyarrow as pa

STREAM_NAMES = ("init", "order", "noise", "eval_noise")


# ---------------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class Streams:
    """Independent random streams of one run, so e.g. changing sigma leaves init unchanged.

    init: initial weights. order: the shuffling of each epoch. noise: the training noise.
    eval_noise: the one recorded noise draw on which the noisy training error is measured.
    """

    init: torch.Generator
    order: torch.Generator
    noise: torch.Generator
    eval_noise: torch.Generator


def seed_streams(spec: RunSpec) -> Streams:
    """The one seeding entry point: call it first. Same spec => bit-identical run on one machine.

    Child seeds come from numpy's SeedSequence(spec.seed).spawn, which makes the streams
    statistically independent; torch's global RNG is seeded too, for anything else that
    draws from it (nn.RNN's own initialisation, overwritten by `init_weights`).
    """
    torch.manual_seed(spec.seed)
    children = np.random.SeedSequence(spec.seed).spawn(len(STREAM_NAMES))
    device = torch.device(spec.device)
    gens = {}
    for name, child in zip(STREAM_NAMES, children, strict=True):
        # Training noise is drawn where the inputs live (fast on a GPU). Everything else,
        # the recorded eval_noise draw included, is drawn on the CPU, so that it is the same
        # whichever device trained the run (device is not part of run_id).
        where = device if name == "noise" else torch.device("cpu")
        gen = torch.Generator(device=where)
        gen.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0]))
        gens[name] = gen
    return Streams(**gens)


# ------------------------------------------------------------------------------------ inputs


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """x + eps with eps ~ N(0, sigma^2) iid on every coordinate; a fresh draw on every call.

    Every coordinate means every step of the (B, L, d) input, padding included: the theory
    perturbs the whole vector x in R^{Ld}, and the model cannot tell padding from text.
    """
    if sigma == 0.0:
        return x
    eps = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return x + sigma * eps.to(x.device)  # a no-op when the generator lives with x


def spec_splits(table: pa.Table, pad_id: int, spec: RunSpec) -> tuple[SplitArrays, SplitArrays]:
    """The (train, test) splits a spec asks for: length spec.L, n_train / n_test reviews.

    Subsets are class-balanced and fixed (split_arrays' own seed), the same for every run
    seed, so that the seeds of one group differ only in init, order and noise.
    """
    return (
        split_arrays(table, "train", spec.L, pad_id, limit=spec.n_train),
        split_arrays(table, "test", spec.L, pad_id, limit=spec.n_test),
    )


def embedding_tensor(embeddings: np.ndarray) -> torch.Tensor:
    """The (vocabulary, d) table as a float32 CPU tensor sharing its memory when it can.

    In a Ray worker the table is a read-only view of the object store (one copy per node);
    torch warns that it cannot guard such memory, but the table is only ever read here.
    """
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def embed(ids: np.ndarray, table: torch.Tensor) -> torch.Tensor:
    """(B, L) GloVe ids -> (B, L, d) vectors, gathered on the table's device."""
    return F.embedding(torch.from_numpy(ids).to(table.device, torch.long), table)


def split_batches(
    split: SplitArrays,
    table: torch.Tensor,
    batch_size: int,
    sigma: float = 0.0,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of a split in stored order, with noise from `generator` if sigma > 0.

    This is THE definition of the recorded noisy training set: with batch_size =
    spec.eval_batch_size and generator = seed_streams(spec).eval_noise (a CPU stream
    whatever spec.device) it reproduces, bit for bit, the noise on which
    `train_error_noisy` and the training margins were measured.
    """
    labels = torch.from_numpy(split.labels).to(table.device)
    for start in range(0, len(split), batch_size):
        x = embed(split.ids[start : start + batch_size], table)
        if sigma > 0.0:
            assert generator is not None, "split_batches: sigma > 0 needs a generator"
            x = add_noise(x, sigma, generator)
        yield x, labels[start : start + batch_size]


def epoch_batches(
    split: SplitArrays, table: torch.Tensor, spec: RunSpec, streams: Streams
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled (indices, noisy x, y) batches; each use gets new noise.

    The indices (rows of `split`) say which examples a batch holds, for instrumentation.
    """
    order = torch.randperm(len(split), generator=streams.order).numpy()
    labels = torch.from_numpy(split.labels).to(table.device)
    for start in range(0, len(order), spec.batch_size):
        idx = order[start : start + spec.batch_size]
        x = add_noise(embed(split.ids[idx], table), spec.sigma, streams.noise)
        yield idx, x, labels[torch.from_numpy(idx).to(table.device)]


# -------------------------------------------------------------------------------- evaluation


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """M = y_L[label] - max over other classes of y_L (for k = 2: y_true - y_other)."""
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


@dataclass
class Evaluation:
    """Per-example margins and the mean cross-entropy of one pass over a split."""

    margins: np.ndarray
    loss: float

    @property
    def error(self) -> float:
        """0-1 error with the theory's convention: misclassified iff M <= 0 (NaN if undefined)."""
        if not np.all(np.isfinite(self.margins)):
            return math.nan
        return float(np.mean(self.margins <= 0.0))


@torch.no_grad()
def evaluate(model: ReLURNN, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> Evaluation:
    """Margins and loss of `model` over the given batches (no gradients, eval mode)."""
    model.eval()
    parts, loss_sum, n = [], 0.0, 0
    for x, y in batches:
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        parts.append(margins(logits, y).double().cpu().numpy())
        n += len(y)
    return Evaluation(np.concatenate(parts), loss_sum / max(n, 1))


def margin_summary(values: np.ndarray) -> dict[str, float]:
    """Mean and the 5/25/50/75/95 % quantiles of a margin vector."""
    out = {"mean": float(np.mean(values))}
    qs = np.quantile(values, QUANTILES)
    out.update({f"q{round(100 * q):02d}": float(v) for q, v in zip(QUANTILES, qs, strict=True)})
    return out


# ---------------------------------------------------------------------------------- training


def make_optimizer(spec: RunSpec, params: Any) -> torch.optim.Optimizer:
    """The optimizer the spec names, with its lr, momentum and weight decay."""
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )


def project_rows(W: torch.Tensor, max_row_sum: float) -> None:
    """Scale down, in place, every row of W whose absolute sum exceeds `max_row_sum`.

    Afterwards beta_W = ||W^T||_1 (the largest absolute row sum) is at most `max_row_sum`;
    rows within the limit are untouched, and a scaled row keeps its direction.
    """
    with torch.no_grad():
        # rows are the last axis: W (m, m), or (P, m, m) for a pack of models
        sums = W.abs().sum(dim=-1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)
        W.mul_(torch.clamp(max_row_sum / sums, max=1.0))


@dataclass(frozen=True)
class EpochStats:
    """What one training epoch did: its loss and the accuracy on the noisy batches seen."""

    loss: float  # mean cross-entropy over the epoch's minibatches (NaN once non-finite)
    accuracy_noisy: float  # share of the epoch's noisy training examples classified right


def train_epoch(
    model: ReLURNN,
    opt: torch.optim.Optimizer,
    spec: RunSpec,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
) -> EpochStats:
    """One pass of minibatch training; NaN loss once it is non-finite.

    Stops at the first non-finite loss, before the step that would spread it into the
    weights; a finite loss with non-finite gradients shows up as non-finite weights.
    With `spec.w_row_sum_max` set, W is projected after every step (:func:`project_rows`).
    The accuracy is counted on each batch as it was trained on (noisy inputs, the weights
    of that moment): the usual running training accuracy, free of any extra pass.
    """
    model.train()
    loss_sum, right, n = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            return EpochStats(math.nan, math.nan)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip_grad_norm)
        opt.step()
        if spec.w_row_sum_max is not None:
            project_rows(model.W, spec.w_row_sum_max)
        loss_sum += loss.item() * len(y)
        right += int((margins(logits.detach(), y) > 0).sum())
        n += len(y)
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return EpochStats(math.nan, math.nan)
    return EpochStats(loss_sum / max(n, 1), right / max(n, 1))


# Reviews in the fixed, class-balanced subsets on which each epoch's clean training and
# test accuracy are measured (the history). A full pass over both 25,000-review splits
# after every epoch would add about half an epoch's time; 5,000 reviews each add ~10 %, with
# a standard error of ~0.5 points. A run's final errors are measured on the whole splits.
HISTORY_ROWS = 5000


def subset(split: SplitArrays, rows: int, seed: int = 0) -> SplitArrays:
    """A fixed class-balanced subset of about `rows` reviews in stored order (the whole
    split when it is not larger); the same for every run on that split."""
    if rows >= len(split):
        return split
    rng = np.random.default_rng(seed)
    classes = np.unique(split.labels)
    chosen = np.sort(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(split.labels == c))[: rows // len(classes)]
                for c in classes
            ]
        )
    )
    return SplitArrays(split.ids[chosen], split.labels[chosen])


@dataclass(frozen=True)
class _Monitor:
    """The fixed subsets each epoch's clean accuracies are measured on."""

    train: SplitArrays
    test: SplitArrays

    def accuracies(self, model: ReLURNN, table: torch.Tensor, batch: int) -> tuple[float, float]:
        train = evaluate(model, split_batches(self.train, table, batch))
        test = evaluate(model, split_batches(self.test, table, batch))
        return 1.0 - train.error, 1.0 - test.error


def clean_gap(test_error_clean: float, train_error_clean: float) -> float:
    """The clean gap: clean test error − clean training error (STUDY.md §7). Unlike the
    paper's generalization error it subtracts no noisy error, so it does not fall with σ
    merely because the noisy training error rises."""
    return test_error_clean - train_error_clean


@dataclass
class TrainResult:
    """Outcome of one run. Errors are 0-1 errors (M <= 0); gen_error is the paper's.

    epochs_run counts completed epochs; a diverged run has NaN errors and losses, and
    `diverged_epoch` (1-based) is the epoch in which the loss became non-finite.
    train_margins are measured on the recorded noisy draw (see `split_batches`).
    """

    status: str  # "done" | "diverged"
    diverged_epoch: int | None
    epochs_run: int
    train_error_noisy: float
    train_error_clean: float
    test_error_clean: float
    gen_error: float  # test_error_clean - train_error_noisy
    test_accuracy: float
    final_train_loss: float  # cross-entropy on the recorded noisy draw of the training set
    final_test_loss: float
    margin_train: dict[str, float]  # mean, q05..q95 of the noisy training margins
    margin_test: dict[str, float]
    history: list[EpochLog]  # one record per completed epoch
    seconds: float
    samples_per_second: float
    n_train: int
    n_test: int
    weights: dict[str, np.ndarray] = field(repr=False)
    train_margins: np.ndarray = field(repr=False)
    test_margins: np.ndarray = field(repr=False)

    def to_row(self) -> dict[str, Any]:
        """Flat scalars for one Parquet row (arrays and history stay out)."""
        row = {
            name: getattr(self, name)
            for name in (
                "status",
                "diverged_epoch",
                "epochs_run",
                "train_error_noisy",
                "train_error_clean",
                "test_error_clean",
                "gen_error",
                "test_accuracy",
                "final_train_loss",
                "final_test_loss",
                "seconds",
                "samples_per_second",
                "n_train",
                "n_test",
            )
        }
        row["clean_gap"] = clean_gap(self.test_error_clean, self.train_error_clean)
        row.update({f"margin_train_{k}": v for k, v in self.margin_train.items()})
        row.update({f"margin_test_{k}": v for k, v in self.margin_test.items()})
        return row


def _fit(
    model: ReLURNN,
    spec: RunSpec,
    train: SplitArrays,
    table: torch.Tensor,
    streams: Streams,
    monitor: _Monitor,
    on_epoch: Callable[[EpochLog], None] | None,
) -> tuple[list[EpochLog], int | None, float]:
    """Run the epochs: the history, the epoch of divergence (None if none), and the
    seconds spent training (the history's measurements and `on_epoch` not counted)."""
    opt = make_optimizer(spec, model.parameters())
    history: list[EpochLog] = []
    seconds = 0.0
    for epoch in range(1, spec.epochs + 1):
        start = time.perf_counter()
        batches = ((x, y) for _, x, y in epoch_batches(train, table, spec, streams))
        stats = train_epoch(model, opt, spec, batches)
        trained = time.perf_counter()
        seconds += trained - start
        if math.isnan(stats.loss):
            return history, epoch, seconds
        train_acc, test_acc = monitor.accuracies(model, table, spec.eval_batch_size)
        history.append(
            EpochLog(
                epoch,
                stats.loss,
                stats.accuracy_noisy,
                train_acc,
                test_acc,
                len(monitor.train),
                trained - start,
                time.perf_counter() - trained,
            )
        )
        if on_epoch is not None:
            on_epoch(history[-1])
        if spec.stop_train_accuracy is not None and train_acc >= spec.stop_train_accuracy:
            break  # fitted: `epochs` was a cap
    return history, None, seconds


def _measure(
    model: ReLURNN,
    spec: RunSpec,
    train: SplitArrays,
    test: SplitArrays,
    table: torch.Tensor,
    streams: Streams,
) -> dict[str, Evaluation]:
    """Clean test, clean train and (if sigma > 0) one recorded noisy pass over train."""
    bs = spec.eval_batch_size
    evals = {
        "test": evaluate(model, split_batches(test, table, bs)),
        "train_clean": evaluate(model, split_batches(train, table, bs)),
    }
    evals["train_noisy"] = (
        evals["train_clean"]
        if spec.sigma == 0.0
        else evaluate(model, split_batches(train, table, bs, spec.sigma, streams.eval_noise))
    )
    return evals


def _nan_evaluation() -> Evaluation:
    """What a diverged run reports: no margins, NaN error and loss."""
    return Evaluation(np.array([math.nan]), math.nan)


def _check_inputs(
    spec: RunSpec, train: SplitArrays, test: SplitArrays, embeddings: np.ndarray
) -> None:
    """Catch a split padded to another L, or an embedding table of the wrong shape."""
    for name, split in (("train", train), ("test", test)):
        if split.ids.ndim != 2 or split.ids.shape[1] != spec.L or len(split) == 0:
            raise ParameterError(
                f"the {name} split has ids of shape {split.ids.shape}, but the "
                f"spec asks for L = {spec.L}; build it with split_arrays(..., "
                f"L={spec.L}, ...)."
            )
    if embeddings.ndim != 2:
        raise ParameterError(
            f"embeddings must be a (vocabulary, d) table, got shape {embeddings.shape}."
        )


def setup(
    spec: RunSpec, train: SplitArrays, test: SplitArrays, embeddings: np.ndarray
) -> tuple[Streams, torch.Tensor, ReLURNN, _Monitor]:
    """Everything a run needs before its first step, in a fixed order: the seeded streams
    first, the table on the spec's device, the initial model (from the init stream) and
    the fixed subsets of the history."""
    streams = seed_streams(spec)
    _check_inputs(spec, train, test, embeddings)
    table = embedding_tensor(embeddings).to(spec.device)
    k = max(2, int(max(train.labels.max(), test.labels.max())) + 1)
    model = ReLURNN(
        table.shape[1],
        spec.hidden,
        k,
        init=spec.init,
        init_scale=spec.init_scale,
        generator=streams.init,
    ).to(spec.device)
    return streams, table, model, _Monitor(subset(train, HISTORY_ROWS), subset(test, HISTORY_ROWS))


def outcome(
    spec: RunSpec,
    model: ReLURNN,
    data: tuple[SplitArrays, SplitArrays, torch.Tensor],
    streams: Streams,
    history: list[EpochLog],
    diverged_epoch: int | None,
    seconds: tuple[float, float],
) -> TrainResult:
    """A trained model measured: clean test, clean train and the recorded noisy draw (or
    NaNs when it diverged). `data` = (train, test, table); `seconds` = (since the run
    began, spent training)."""
    train, test, table = data
    if diverged_epoch is None:
        evals = _measure(model, spec, train, test, table, streams)
    else:
        evals = dict.fromkeys(("test", "train_clean", "train_noisy"), _nan_evaluation())
    noisy, test_eval = evals["train_noisy"], evals["test"]
    return TrainResult(
        status="done" if diverged_epoch is None else "diverged",
        diverged_epoch=diverged_epoch,
        epochs_run=len(history),
        train_error_noisy=noisy.error,
        train_error_clean=evals["train_clean"].error,
        test_error_clean=test_eval.error,
        gen_error=test_eval.error - noisy.error,
        test_accuracy=1.0 - test_eval.error,
        final_train_loss=noisy.loss,
        final_test_loss=test_eval.loss,
        margin_train=margin_summary(noisy.margins),
        margin_test=margin_summary(test_eval.margins),
        history=history,
        seconds=seconds[0],
        samples_per_second=len(train) * len(history) / max(seconds[1], 1e-9),
        n_train=len(train),
        n_test=len(test),
        weights=model.weights_numpy(),
        train_margins=noisy.margins,
        test_margins=test_eval.margins,
    )


def train_model(
    spec: RunSpec,
    train: SplitArrays,
    test: SplitArrays,
    embeddings: np.ndarray,
    *,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainResult:
    """Train eq. (1) as `spec` says on `train`, evaluate on `test` (clean) and on `train`.

    `embeddings` is the (vocabulary, d) GloVe table whose last row is the zero padding
    vector; inputs are gathered from it per batch, so the float dataset never exists.
    """
    began = time.perf_counter()
    streams, table, model, monitor = setup(spec, train, test, embeddings)
    history, diverged_epoch, fit_seconds = _fit(
        model, spec, train, table, streams, monitor, on_epoch
    )
    return outcome(
        spec,
        model,
        (train, test, table),
        streams,
        history,
        diverged_epoch,
        (time.perf_counter() - began, fit_seconds),
    )
