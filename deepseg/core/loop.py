"""Algorithm 1 (Deep Segmentation) over a small backend interface.

The labelled users are few and live on the driver as numpy arrays. The unlabelled users live
wherever the backend keeps them (memory, or a Spark DataFrame); the loop only asks the backend
for a sample to fit the TSVMs on, a parallel map for the per-class TSVMs, and a stream of
pseudo-labelled batches for retraining. It never knows which backend it talks to.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Protocol, Sequence

import numpy as np
import torch

from deepseg.core.checkpoint import Checkpoint, run_fingerprint
from deepseg.core.embed import NetConfig, SegmentationNet, smooth_labels
from deepseg.core.ovr import OvRTSVM, fit_ovr_tsvm
from deepseg.core.pseudo import EMAEnsemble, PseudoLabeler, balancing_weights, frozen_copy
from deepseg.core.train import (
    TrainConfig,
    embed,
    make_optimizer,
    predict_proba,
    resolve_input_noise,
    resolve_unlabeled_epochs,
    set_learning_rate,
    torch_threads,
    train_labelled,
    train_unlabelled,
)
from deepseg.core.tsvm import TSVMConfig

log = logging.getLogger("deepseg")


class PseudoLabeled(Protocol):
    """Unlabelled users paired with this iteration's TSVM probabilities."""

    def batches(self, batch_size: int, seed: int, max_rows: int | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of (features, probabilities) mini-batches in a seeded order; with
        `max_rows`, of a seeded random subset of about that many users (new each seed)."""


class Backend(Protocol):
    """Where the unlabelled users are: the only thing the algorithm needs from them."""

    def sample_unlabeled(self, max_rows: int | None, seed: int) -> np.ndarray:
        """Features of all unlabelled users, or a seeded sample of at most `max_rows`."""

    def map(self, fn: Callable, items: Sequence) -> list:
        """[fn(item) for item in items], possibly in parallel (the per-class TSVMs)."""

    def pseudo_label(self, labeler: Callable[[np.ndarray], np.ndarray]) -> ContextManager[PseudoLabeled]:
        """Apply `labeler` (features -> probabilities) to every unlabelled user."""

    # Optional: `resume_from(iteration)`, called when a run continues from a checkpoint after
    # `iteration` iterations, for a backend that numbers the iterations itself.


@dataclass(frozen=True)
class DeepSegConfig:
    """Every setting of Algorithm 1. The defaults are deepseg's; `PATENT` holds the patent's."""

    net: NetConfig = NetConfig()
    train: TrainConfig = TrainConfig()
    tsvm: TSVMConfig = TSVMConfig(C=10.0)  # C = 10 validated better with mixup (README, Benchmarks)
    n_iter: int = 6
    label_smoothing: float = 1e-3
    ema_decay: float = 0.5  # the patent's ρ is 0.8; 0.5 validated better with input noise (README)
    tsvm_sample_size: int | None = None  # None: fit the TSVMs on every unlabelled user
    # folds for the TSVM probability temperature; < 2 fits it in-sample (sharper pseudo-labels)
    tsvm_calibration_folds: int = 3
    # "tsvm": the TSVM probabilities (the patent); "tsvm_and_net": times g∘f's, renormalised
    pseudo_labels: str = "tsvm_and_net"


@dataclass
class DeepSegResult:
    """A fitted Deep Segmentation model: the EMA ensemble, the last TSVMs and diagnostics."""

    ensemble: EMAEnsemble
    supervised: SegmentationNet  # g∘f after the supervised start (iteration 0)
    tsvm: OvRTSVM | None
    history: list[dict] = field(default_factory=list)


def fit_deep_segmentation(
    X_l: np.ndarray,
    y_l: np.ndarray,
    backend: Backend,
    n_classes: int,
    config: DeepSegConfig = DeepSegConfig(),
    seed: int = 0,
    checkpoint: Checkpoint | str | os.PathLike | None = None,
) -> DeepSegResult:
    """Run Algorithm 1: supervised start, then `n_iter` rounds of embed → TSVM → retrain.

    `checkpoint` (a :class:`~deepseg.core.checkpoint.Checkpoint`, or a directory: a run that
    starts over) saves the state after the supervised start and after every iteration; with
    ``Checkpoint(directory, resume=True)`` a killed run continues from there and returns what
    an uninterrupted run with the same seed returns.
    """
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint(checkpoint)
    with torch_threads(config.train.num_threads):
        return _fit(X_l, y_l, backend, n_classes, config, seed, checkpoint)


def _fit(X_l, y_l, backend, n_classes, config, seed, checkpoint: Checkpoint | None = None) -> DeepSegResult:
    torch.manual_seed(seed)
    tc = config.train
    X_l = np.asarray(X_l, dtype=np.float32)
    H = smooth_labels(y_l, n_classes, config.label_smoothing)
    net = SegmentationNet(X_l.shape[1], n_classes, config.net)
    optimizer = make_optimizer(net, tc.learning_rate)
    sample = np.asarray(backend.sample_unlabeled(config.tsvm_sample_size, seed), dtype=np.float32)

    restored = fingerprint = None
    if checkpoint is not None:
        fingerprint = run_fingerprint(X_l, y_l, sample, n_classes, config, seed)
        if checkpoint.resume:
            restored = checkpoint.restore(fingerprint, net, optimizer, config.n_iter)
            if restored is None:
                log.info("no training checkpoint at %s: starting from the beginning", checkpoint.path)
        elif checkpoint.exists():
            log.info("discarding the training checkpoint at %s (not resuming)", checkpoint.path)
            checkpoint.clear()

    def save(iteration: int) -> None:
        if checkpoint is not None:
            checkpoint.save(fingerprint=fingerprint, iteration=iteration, net=net, optimizer=optimizer,
                            supervised=supervised, snapshots=snapshots, history=history, tsvm=tsvm)
            log.info("checkpoint: iteration %d saved to %s", iteration, checkpoint.path)

    if restored is None:
        t0 = time.perf_counter()
        train_labelled(net, optimizer, X_l, H, tc.supervised_epochs, tc.batch_size, seed)
        log.info("supervised start: %d labelled users, %d epochs, %.1fs",
                 len(X_l), tc.supervised_epochs, time.perf_counter() - t0)
        supervised = frozen_copy(net)
        start, snapshots, history, tsvm = 0, [], [], None
    else:
        supervised, snapshots, history, tsvm = (
            restored.supervised, restored.snapshots, restored.history, restored.tsvm)
        start = restored.iteration
        if hasattr(backend, "resume_from"):
            backend.resume_from(start)
        log.info("resumed from the training checkpoint at %s after iteration %d/%d",
                 checkpoint.path, start, config.n_iter)

    set_learning_rate(optimizer, tc.learning_rate * tc.retrain_lr_factor)
    input_noise = resolve_input_noise(tc.input_noise, len(y_l), n_classes)
    unlabeled_epochs = resolve_unlabeled_epochs(tc.unlabeled_epochs, len(y_l), n_classes)
    if "auto" in (tc.input_noise, tc.unlabeled_epochs) and config.n_iter > start:
        log.info("input noise: std %.3g, unlabelled epochs %d, for %.1f labelled users per class",
                 input_noise, unlabeled_epochs, len(y_l) / n_classes)
    if restored is None:
        save(0)
    for it in range(start + 1, config.n_iter + 1):
        times = {}
        t = time.perf_counter()
        Z_l, Z_u = embed(net, X_l), embed(net, sample)
        times["embed_s"] = time.perf_counter() - t

        # Pseudo-labels are recomputed from scratch: the TSVMs see only this iteration's embedding.
        t = time.perf_counter()
        tsvm = fit_ovr_tsvm(Z_l, y_l, Z_u, n_classes, config.tsvm, mapper=backend.map,
                            n_folds=config.tsvm_calibration_folds, seed=seed + it)
        times["tsvm_s"] = time.perf_counter() - t
        tsvm_labels = np.argmax(tsvm.decision_function(Z_u), axis=1)

        t = time.perf_counter()
        labeler = PseudoLabeler(frozen_copy(net), tsvm, with_net=config.pseudo_labels == "tsvm_and_net")
        if tc.unlabeled_loss == "weighted_ce" and len(sample):
            # class shares from the TSVM sample: every unlabelled user in memory, a sample on Spark
            labeler.class_weights = balancing_weights(labeler.probabilities(sample))
        with backend.pseudo_label(labeler) as data:
            mse = train_unlabelled(
                net, optimizer,
                lambda e: data.batches(tc.unlabeled_batch_size, seed + 1000 * it + e, tc.unlabeled_rows_per_epoch),
                unlabeled_epochs, tc.unlabeled_weight, tc.unlabeled_loss, tc.mixup_alpha, seed + 1000 * it,
                input_noise,
            )
        kl = train_labelled(net, optimizer, X_l, H, tc.labeled_epochs, tc.batch_size, seed + 1000 * it)
        times["retrain_s"] = time.perf_counter() - t
        snapshots.append(frozen_copy(net))

        net_labels = np.argmax(predict_proba(net, sample), axis=1)
        history.append({
            "iteration": it,
            "tsvm_objective": float(np.mean([s.objective for s in tsvm.separators])),
            "tsvm_cccp_rounds": [s.n_iter for s in tsvm.separators],
            "agreement": float(np.mean(net_labels == tsvm_labels)) if len(sample) else float("nan"),
            "class_shares": np.bincount(net_labels, minlength=n_classes).tolist(),
            "mse": mse[-1] if mse else float("nan"),
            "kl": kl[-1] if kl else float("nan"),
            "input_noise": input_noise,
            "unlabeled_epochs": unlabeled_epochs,
            **times,
        })
        log.info("iteration %d/%d: TSVM objective %.4f, g∘f/TSVM agreement %.3f, %s",
                 it, config.n_iter, history[-1]["tsvm_objective"], history[-1]["agreement"],
                 ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
        save(it)

    if not snapshots:
        snapshots.append(supervised)
    return DeepSegResult(EMAEnsemble(snapshots, config.ema_decay), supervised, tsvm, history)
