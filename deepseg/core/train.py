"""⑥ Training g∘f: the supervised start and each iteration's retraining (patent [0104], [0106]).

numpy arrays come in, torch stays inside: callers never handle tensors.
"""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from deepseg.core.embed import SegmentationNet, kl_loss, mse_loss, weighted_cross_entropy
from deepseg.core.params import default
from deepseg.core.sparse import SparseRows, issparse, n_rows

Batches = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]  # epoch -> (x, target) batches


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults and docs: :mod:`deepseg.core.params`)."""

    learning_rate: float = default("learning_rate")
    batch_size: int = default("batch_size")
    supervised_epochs: int = default("supervised_epochs")
    retrain_lr_factor: float = default("retrain_lr_factor")
    unlabeled_epochs: int | str = default("unlabeled_epochs")  # "auto": resolve_unlabeled_epochs
    labeled_epochs: int = default("labeled_epochs")
    linear_teacher_epochs: int = default("linear_teacher_epochs")
    unlabeled_batch_size: int = default("unlabeled_batch_size")
    unlabeled_rows_per_epoch: int | None = default("unlabeled_rows_per_epoch")
    unlabeled_weight: float = default("unlabeled_weight")
    unlabeled_loss: str = default("unlabeled_loss")
    mixup_alpha: float = default("mixup_alpha")
    input_noise: float | str = default("input_noise")  # "auto": resolve_input_noise
    # Small dense nets train fastest on one thread; more threads oversubscribe the cores that
    # Spark executors or other processes use.
    num_threads: int | None = 1


#: The "auto" settings change above this many labelled users per class: below it, the input noise
#: is AUTO_NOISE_STD and the unlabelled epochs are AUTO_EPOCHS[0]; above, less noise and AUTO_EPOCHS[1].
AUTO_LABELS_PER_CLASS = 10
AUTO_NOISE_STD = 0.2
AUTO_EPOCHS = (20, 30)


def resolve_input_noise(input_noise: float | str, n_labeled: int, n_classes: int) -> float:
    """The input noise's standard deviation: `input_noise` itself, or for "auto" 0.2 up to 10
    labelled users per class and 0.2·√(10/m) with m > 10 per class.

    Training on noisy inputs penalises the network's input gradient with weight σ² (Bishop 1995);
    like any fixed penalty it should weigh less as labels grow (the validation behind the rule:
    docs/tuning-log.md).
    """
    if input_noise != "auto":
        return float(input_noise)
    per_class = n_labeled / max(n_classes, 1)
    return AUTO_NOISE_STD * min(1.0, (AUTO_LABELS_PER_CLASS / per_class) ** 0.5) if per_class > 0 else AUTO_NOISE_STD


def resolve_unlabeled_epochs(unlabeled_epochs: int | str, n_labeled: int, n_classes: int) -> int:
    """Epochs of the step on unlabelled users: `unlabeled_epochs` itself, or for "auto" 20 up to
    10 labelled users per class and 30 above.

    The same rule as the input noise, from the other side: pseudo-labels get more accurate as the
    labels grow, so they are worth fitting longer (docs/tuning-log.md).
    """
    if unlabeled_epochs != "auto":
        return int(unlabeled_epochs)
    return AUTO_EPOCHS[n_labeled / max(n_classes, 1) > AUTO_LABELS_PER_CLASS]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with torch limited to `n` intra-op threads (None: leave as is)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_optimizer(net: SegmentationNet, learning_rate: float) -> torch.optim.Optimizer:
    """Adam over every parameter of g∘f: one fused kernel call per step where this torch has it.

    A network for sparse input (f's first weights stored transposed) has those weights in a group
    of their own whose `weight_decay` is their penalty's 2λ: Adam adds 2λ·W to the gradient as
    :func:`optimizer_step` does for the others, inside its kernel (one pass less over d × 128).
    """
    first = getattr(net.f.dense1, "weight_t", None)
    if first is None:
        params = net.parameters()
    else:
        params = [{"params": [first], "weight_decay": 2.0 * net.config.l2[0]},
                  {"params": [p for p in net.parameters() if p is not first]}]
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - torch without fused CPU Adam
        return torch.optim.Adam(params, lr=learning_rate)


def optimizer_step(net: SegmentationNet, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One step on loss + the Tikhonov penalty Σ λ_k‖W_k‖².

    The penalty's gradient 2λ_k·W_k is added to the weights' gradients in place: the same step
    as back-propagating through the penalty, without building it into every step's graph (for a
    weight in a parameter group with `weight_decay`, Adam adds it: :func:`make_optimizer`).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    decayed = [p for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]]
    with torch.no_grad():
        for w, lam in zip(net.penalized_weights(), net.config.l2):
            if not any(w is p for p in decayed):
                w.grad.add_(w, alpha=2.0 * lam)
    optimizer.step()


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate


def shuffled_batches(X: np.ndarray, T: np.ndarray, batch_size: int, seed: int,
                     max_rows: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Mini-batches of (X, T) in a seeded random order; at most `max_rows` rows (a random subset)."""
    order = np.random.default_rng(seed).permutation(n_rows(X))[:max_rows]
    for start in range(0, n_rows(X), batch_size):
        idx = order[start:start + batch_size]
        yield X[idx], T[idx]


def train_epochs(
    net: SegmentationNet,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epochs: int,
    weight: float = 1.0,
    mixup_alpha: float = 0.0,
    seed: int = 0,
    input_noise: float = 0.0,
) -> list[float]:
    """Run `epochs` passes of weight·loss + Tikhonov penalty; returns the mean loss per epoch.

    With `input_noise` > 0 every batch's inputs get N(0, input_noise²) noise; with `mixup_alpha`
    > 0 every batch is then mixed with a shuffled copy of itself (:func:`mixup`). The batches are
    prepared (:func:`prepared_batches`) a few steps ahead on a second thread: their noise is a
    fifth of a step, and it depends on nothing the steps change.
    """
    net.train()
    totals, counts = [0.0] * epochs, [0] * epochs
    with ahead(prepared_batches(batches, epochs, mixup_alpha, seed, input_noise)) as prepared:
        for epoch, x, t, rows in prepared:
            value = weight * loss(net(x), t)
            optimizer_step(net, optimizer, value)
            totals[epoch] += float(value.detach()) * rows
            counts[epoch] += rows
    return [total / max(count, 1) for total, count in zip(totals, counts)]


def prepared_batches(batches: Batches, epochs: int, mixup_alpha: float = 0.0, seed: int = 0,
                     input_noise: float = 0.0) -> Iterator[tuple[int, torch.Tensor | SparseRows, torch.Tensor, int]]:
    """(epoch, f's input, target, rows) of every batch of `epochs` passes, noised and mixed as
    :func:`train_epochs` says; batches of fewer than two rows are skipped (batch-norm needs two in
    training mode). The random draws come from generators of their own, seeded with `seed`, so
    where this runs does not change them."""
    rng = np.random.default_rng(seed) if mixup_alpha > 0 or input_noise > 0 else None
    noise = torch.Generator().manual_seed(seed) if input_noise > 0 else None  # torch's randn: 2.6x numpy's
    for epoch in range(epochs):
        for xb, tb in batches(epoch):
            rows = n_rows(xb)
            if rows < 2:
                continue
            x = as_input(xb)
            t = torch.as_tensor(tb, dtype=torch.float32)
            if input_noise > 0 and isinstance(x, SparseRows):  # on the stored entries (deepseg.core.sparse)
                x = x.with_noise(input_noise, rng)
            elif input_noise > 0:
                x = x + input_noise * torch.randn(x.shape, generator=noise, dtype=x.dtype)
            if mixup_alpha > 0:
                x, t = mixup(x, t, mixup_alpha, rng)
            yield epoch, x, t, rows


T = TypeVar("T")
_END = object()


@contextlib.contextmanager
def ahead(items: Iterator[T], depth: int = 2) -> Iterator[Iterator[T]]:
    """`items`, produced on one background thread up to `depth` items ahead of the consumer.

    One worker runs the generator's steps in order, so it draws its random numbers exactly as it
    would in the caller's thread; an error in it is raised in the consumer. Leaving the block
    early closes the generator. The thread gets the caller's torch thread count (OpenMP's is per
    thread).
    """
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(1, "deepseg-batches", torch.set_num_threads, (threads,)) as pool:
        pending = deque(pool.submit(next, items, _END) for _ in range(depth))

        def consume() -> Iterator[T]:
            while pending:
                item = pending.popleft().result()
                if item is _END:
                    return
                pending.append(pool.submit(next, items, _END))
                yield item

        try:
            yield consume()
        finally:
            for future in pending:
                future.cancel()
            wait(pending)
            if hasattr(items, "close"):
                items.close()


def as_input(xb) -> torch.Tensor | SparseRows:
    """A batch as f takes it: a float32 tensor, or :class:`SparseRows` for a sparse matrix."""
    return SparseRows.of(xb) if issparse(xb) else torch.as_tensor(np.asarray(xb), dtype=torch.float32)


def mixup(x: torch.Tensor | SparseRows, t: torch.Tensor, alpha: float, rng: np.random.Generator
          ) -> tuple[torch.Tensor | SparseRows, torch.Tensor]:
    """λ·(x, t) + (1-λ)·(x, t)[π] for λ ~ Beta(α, α) folded onto [½, 1] and a random order π.

    The targets mix linearly like the inputs; both unlabelled losses accept such soft rows (the
    weighted cross-entropy is linear in its target). Folding keeps each row closest to itself.
    Sparse rows are mixed after f's first (linear) product: :class:`SparseRows`.
    """
    lam = rng.beta(alpha, alpha)
    lam = max(lam, 1.0 - lam)
    perm = torch.as_tensor(rng.permutation(len(x)))
    mixed = x.mixed(lam, perm) if isinstance(x, SparseRows) else lam * x + (1.0 - lam) * x[perm]
    return mixed, lam * t + (1.0 - lam) * t[perm]


def train_labeled(net, optimizer, X: np.ndarray, H: np.ndarray, epochs: int, batch_size: int, seed: int) -> list[float]:
    """Minimise KL(h(y) ‖ g(f(x))) on the labelled users."""
    return train_epochs(
        net, optimizer, lambda e: shuffled_batches(X, H, batch_size, seed + e), kl_loss, epochs
    )


UNLABELED_LOSSES = {"mse": mse_loss, "weighted_ce": weighted_cross_entropy}


def train_unlabeled(net, optimizer, batches: Batches, epochs: int, weight: float, loss: str = "mse",
                     mixup_alpha: float = 0.0, seed: int = 0, input_noise: float = 0.0) -> list[float]:
    """Minimise weight·loss(g(f(x)), target) on pseudo-labelled users streamed by `batches`
    (with noise of std `input_noise` and mixup with `mixup_alpha`, both drawn from `seed`)."""
    return train_epochs(net, optimizer, batches, UNLABELED_LOSSES[loss], epochs, weight, mixup_alpha, seed,
                        input_noise)


@torch.no_grad()
def predict_proba(net: SegmentationNet, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """softmax(g(f(X))) in evaluation mode (dropout off, batch-norm running statistics)."""
    return _forward(net, X, batch_size, lambda x: torch.softmax(net(x), dim=1))


@torch.no_grad()
def embed(net: SegmentationNet, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """f(X) in evaluation mode."""
    return _forward(net, X, batch_size, net.f)


def _forward(net, X, batch_size, fn) -> np.ndarray:
    was_training = net.training
    net.eval()
    try:
        parts = [fn(as_input(X[i:i + batch_size])).numpy() for i in range(0, max(n_rows(X), 1), batch_size)]
    finally:
        net.train(was_training)
    return np.concatenate(parts)
