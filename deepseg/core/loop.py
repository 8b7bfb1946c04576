"""Algorithm 1 (Deep Segmentation) over a small backend interface.

The labelled users are few and live on the driver as numpy arrays. The unlabelled users live
wherever the backend keeps them (memory, or a Spark DataFrame); the loop only asks the backend
for a sample to fit the TSVMs on, a parallel map for the per-class TSVMs, and a stream of
pseudo-labelled batches for retraining. It never knows which backend it talks to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence

import numpy as np
import torch

from deepseg.core._local import LocalBackend
from deepseg.core.checkpoint import Checkpoint, CheckpointHook, RunState, run_fingerprint
from deepseg.core.embed import NetConfig, SegmentationNet, smooth_labels
from deepseg.core.ovr import OvRTSVM, fit_ovr_tsvm
from deepseg.core.params import PARAMS, default, section_defaults
from deepseg.core.calibration import OutputCalibration, few_labels, fit_answer_calibration
from deepseg.core.prior import (answer_prior, auto_class_prior, check_class_prior, floor_prior, labeled_shares,
                                resolve_class_prior)
from deepseg.core.pseudo import EMAEnsemble, PseudoLabeler, balancing_weights, frozen_copy
from deepseg.core.safeguard import START, CrossFit, cv_possible, decide
from deepseg.core.sparse import as_float32, issparse, n_rows
from deepseg.core.train import (
    TrainConfig,
    embed,
    make_optimizer,
    predict_proba,
    resolve_input_noise,
    resolve_unlabeled_epochs,
    set_learning_rate,
    torch_threads,
    train_labeled,
    train_unlabeled,
)
from deepseg.core.teacher import TEACHER_ROWS, teach, teacher_sample
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
    """Every setting of Algorithm 1 (defaults and docs: :mod:`deepseg.core.params`)."""

    net: NetConfig = NetConfig()
    train: TrainConfig = TrainConfig()
    tsvm: TSVMConfig = TSVMConfig(**section_defaults("tsvm"))
    n_iter: int = default("n_iter")
    label_smoothing: float = default("label_smoothing")
    ema_decay: float = default("ema_decay")
    tsvm_sample_size: int | None = default("tsvm_sample_size")
    tsvm_calibration_folds: int = default("tsvm_calibration_folds")
    pseudo_labels: str = default("pseudo_labels")
    class_prior: str | tuple[float, ...] = default("class_prior")
    safeguard: str = default("safeguard")
    safeguard_folds: int = default("safeguard_folds")
    safeguard_unlabeled_size: int = default("safeguard_unlabeled_size")
    calibration: str = default("calibration")

    @classmethod
    def from_params(cls, values: Mapping[str, Any]) -> "DeepSegConfig":
        """The configuration of parameters `values` (names of :data:`~deepseg.core.params.PARAMS`;
        the others keep their defaults). Values are assumed valid; `l2` must have 3 values."""
        sections: dict[str, dict] = {"net": {}, "train": {}, "tsvm": {}, "": {}}
        for p in PARAMS:
            if p.name in values:
                section, _, name = p.field.rpartition(".")
                sections[section][name] = values[p.name]
        if "l2" in sections["net"]:
            l2 = sections["net"]["l2"]
            if len(l2) != 3:
                raise ValueError(f"The 'l2' parameter must have 3 values; got {l2!r}.")
            sections["net"]["l2"] = tuple(float(v) for v in l2)
        prior = sections[""].get("class_prior")
        if prior is not None and not isinstance(prior, str):
            try:
                sections[""]["class_prior"] = tuple(float(v) for v in prior)
            except (TypeError, ValueError):
                raise ValueError(f"The 'class_prior' parameter must be a rule name or one weight per class; "
                                 f"got {prior!r}.") from None
        base = cls()
        return dataclasses.replace(
            base, **sections[""], net=dataclasses.replace(base.net, **sections["net"]),
            train=dataclasses.replace(base.train, **sections["train"]),
            tsvm=dataclasses.replace(base.tsvm, **sections["tsvm"]))


@dataclass
class DeepSegResult:
    """A fitted Deep Segmentation model: the EMA ensemble, the last TSVMs and diagnostics."""

    ensemble: EMAEnsemble
    supervised: SegmentationNet  # g∘f after the start (iteration 0), the linear teacher's epochs included
    tsvm: OvRTSVM | None
    history: list[dict] = field(default_factory=list)
    # the iterations' EMA where the safeguard kept the supervised start instead (not saved with the model)
    iterated: EMAEnsemble | None = None
    # g∘f after the labelled epochs alone, where the linear teacher then trained it (not saved with the
    # model; None without a teacher, where `supervised` is that network, and after a resume)
    labeled_only: SegmentationNet | None = None


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


class LogProgress:
    """Logs the supervised start and each iteration (hook of the loop)."""

    def __init__(self, n_labeled: int, config: DeepSegConfig):
        self.n_labeled, self.epochs, self.n_iter = n_labeled, config.train.supervised_epochs, config.n_iter

    def on_supervised_end(self, state: RunState, seconds: float) -> None:
        log.info("supervised start: %d labelled users, %d epochs, %.1fs", self.n_labeled, self.epochs, seconds)

    def on_iteration_end(self, state: RunState) -> None:
        record = state.history[-1]
        times = {k: v for k, v in record.items() if k in _STEP_TIMES}
        log.info("iteration %d/%d: TSVM objective %.4f, g∘f/TSVM agreement %.3f, %s",
                 state.iteration, self.n_iter, record["tsvm_objective"], record["agreement"],
                 ", ".join(f"{k} {v:.1f}" for k, v in times.items()))


_STEP_TIMES = ("embed_s", "tsvm_s", "retrain_s")


class _Stopwatch:
    """``with watch("step"):`` records the block's wall-clock seconds in ``watch.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, step: str):
        start = time.perf_counter()
        yield
        self.seconds[step] = time.perf_counter() - start


def _fit(X_l, y_l, backend, n_classes, config, seed, checkpoint: Checkpoint | None = None) -> DeepSegResult:
    check_class_prior(config.class_prior, n_classes)
    torch.manual_seed(seed)
    tc = config.train
    X_l = as_float32(X_l)  # a sparse matrix stays sparse: deepseg.core.sparse
    H = smooth_labels(y_l, n_classes, config.label_smoothing)
    net = SegmentationNet(X_l.shape[1], n_classes, config.net, sparse_input=issparse(X_l))
    optimizer = make_optimizer(net, tc.learning_rate)
    sample = as_float32(backend.sample_unlabeled(config.tsvm_sample_size, seed))

    hooks: list = [LogProgress(n_rows(X_l), config)]
    state, labeled_only, start_record = None, None, {}
    if checkpoint is not None:
        if issparse(X_l) or issparse(sample):
            raise ValueError("checkpoints need dense features; got a sparse matrix")
        saver = CheckpointHook(checkpoint, run_fingerprint(X_l, y_l, sample, n_classes, config, seed),
                               net, optimizer)
        hooks.append(saver)
        state = saver.restore(config.n_iter)
    if state is None:
        watch = _Stopwatch()
        with watch("supervised"):
            train_labeled(net, optimizer, X_l, H, tc.supervised_epochs, tc.batch_size, seed)
        if teaching(config):
            before = frozen_copy(net)
            with watch("linear_teacher"):
                taught = teach(net, optimizer, X_l, y_l, H, teacher_sample(sample, seed), tc.linear_teacher_epochs,
                               tc.labeled_epochs, tc.batch_size, seed)
            labeled_only = before if taught else None
            start_record = {"linear_teacher": taught, "linear_teacher_s": watch.seconds["linear_teacher"]}
            log.info("linear teacher: %s (%.1fs)", f"{tc.linear_teacher_epochs} epochs on "
                     f"{min(n_rows(sample), TEACHER_ROWS)} unlabelled users" if taught else
                     "skipped (no unlabelled users or one class)", watch.seconds["linear_teacher"])
        state = RunState(0, frozen_copy(net), [], [], None)
        for hook in hooks:
            hook.on_supervised_end(state, watch.seconds["supervised"])
    elif hasattr(backend, "resume_from"):
        backend.resume_from(state.iteration)

    set_learning_rate(optimizer, tc.learning_rate * tc.retrain_lr_factor)
    input_noise = resolve_input_noise(tc.input_noise, len(y_l), n_classes)
    unlabeled_epochs = resolve_unlabeled_epochs(tc.unlabeled_epochs, len(y_l), n_classes)
    if "auto" in (tc.input_noise, tc.unlabeled_epochs) and config.n_iter > state.iteration:
        log.info("input noise: std %.3g, unlabelled epochs %d, for %.1f labelled users per class",
                 input_noise, unlabeled_epochs, len(y_l) / n_classes)
    guard = _Safeguard(X_l, y_l, sample, n_classes, config, seed, input_noise, unlabeled_epochs)
    prior = guard.class_prior(state.supervised) if config.n_iter > 0 else None
    step = _Iteration(net, optimizer, X_l, y_l, H, sample, backend, n_classes, config, seed,
                      input_noise, unlabeled_epochs, prior)
    for it in range(state.iteration + 1, config.n_iter + 1):
        record, state.tsvm = step(it)
        state.snapshots.append(frozen_copy(net))
        state.history.append(record)
        state.iteration = it
        for hook in hooks:
            hook.on_iteration_end(state)

    snapshots, iterated, calibration = state.snapshots or [state.supervised], None, None
    if state.history:
        last = state.history[-1]
        last.update(start_record)
        last.update(guard.prior_record)
        kept_start = False
        if config.safeguard == "cv":
            last.update(guard.decide(prior))
            kept_start = last["safeguard"] == START
            if kept_start:
                iterated, snapshots = EMAEnsemble(snapshots, config.ema_decay), [state.supervised]
        if config.calibration == "cv":
            calibration, record = guard.calibration(prior, kept_start)
            last.update(record)
    return DeepSegResult(EMAEnsemble(snapshots, config.ema_decay, calibration), state.supervised, state.tsvm,
                         state.history, iterated, labeled_only)


def teaching(config: DeepSegConfig) -> bool:
    """Whether the start learns from the linear teacher (:mod:`deepseg.core.teacher`): only when it
    is iterated on, so that ``n_iter=0`` is the network of the labelled users alone."""
    return config.n_iter > 0 and config.train.linear_teacher_epochs > 0


TOO_FEW = "fewer than 2 labelled users per fold's training part"


@dataclass
class _Safeguard:
    """The class prior and the safeguard of one run (:mod:`deepseg.core.prior`,
    :mod:`deepseg.core.safeguard`): the fold fits run only when one of them needs them."""

    X_l: np.ndarray
    y_l: np.ndarray
    sample: np.ndarray
    n_classes: int
    config: DeepSegConfig
    seed: int
    input_noise: float
    unlabeled_epochs: int
    prior_record: dict = field(default_factory=dict)
    _cross: CrossFit | None = None
    _oof: np.ndarray | None = None
    _oof_deepseg: np.ndarray | None = None
    _seconds: float = 0.0

    def _cross_fit(self) -> CrossFit | None:
        c, tc = self.config, self.config.train
        if self._cross is None and cv_possible(len(self.y_l), c.safeguard_folds):
            start = time.perf_counter()
            teacher = None
            if teaching(c):
                X_u = teacher_sample(self.sample, self.seed)

                def teacher(net, optimizer, X, y, H, seed):
                    teach(net, optimizer, X, y, H, X_u, tc.linear_teacher_epochs, tc.labeled_epochs, tc.batch_size,
                          seed)
            self._cross = CrossFit(self.X_l, self.y_l, self.n_classes, c.safeguard_folds, c.label_smoothing, c.net,
                                   tc.learning_rate, tc.supervised_epochs, tc.batch_size, self.seed, teacher)
            self._oof = self._cross.supervised()
            self._seconds += time.perf_counter() - start
        return self._cross

    def class_prior(self, supervised: SegmentationNet) -> np.ndarray:
        """The prior the iterations use (`class_prior`); for "auto", estimated here."""

        def estimate():
            self._cross_fit()
            pi, record = auto_class_prior(predict_proba(supervised, self.sample), self._oof, self.y_l,
                                          self.n_classes)
            self.prior_record.update(record)
            return pi

        prior = resolve_class_prior(self.config.class_prior, self.y_l, self.n_classes, estimate)
        self.prior_record["class_prior"] = prior.tolist()
        if self.config.class_prior == "auto":
            r = self.prior_record
            log.info("class prior of the unlabelled users (EM, temperature %.3g): %s; the labelled shares %s "
                     "(chi-squared p = %.3g)", r["prior_temperature"], np.round(prior, 3).tolist(),
                     "differ: the answer shifts" if r["label_shift"] else "agree: the answer keeps them",
                     r["label_shift_p"])
        return prior

    def _deepseg_out_of_fold(self, prior: np.ndarray) -> np.ndarray:
        """Deep Segmentation's out-of-fold probabilities of the labelled users (computed once)."""
        if self._oof_deepseg is None:
            c, tc = self.config, self.config.train
            start = time.perf_counter()
            rng = np.random.default_rng(self.seed + 4099)
            unlabeled = self.sample
            if n_rows(unlabeled) > c.safeguard_unlabeled_size:
                pick = np.sort(rng.choice(n_rows(unlabeled), c.safeguard_unlabeled_size, replace=False))
                unlabeled = unlabeled[pick]

            def iterate(net, optimizer, X_tr, y_tr, X_u, seed):
                set_learning_rate(optimizer, tc.learning_rate * tc.retrain_lr_factor)
                H = smooth_labels(y_tr, self.n_classes, c.label_smoothing)
                step = _Iteration(net, optimizer, X_tr, y_tr, H, X_u, LocalBackend(X_u), self.n_classes, c, seed,
                                  self.input_noise, self.unlabeled_epochs, prior)
                snapshots = []
                for it in range(1, c.n_iter + 1):
                    step(it)
                    snapshots.append(frozen_copy(net))
                return snapshots

            self._oof_deepseg = self._cross.deep_segmentation(unlabeled, iterate, c.ema_decay)
            self._seconds += time.perf_counter() - start
        return self._oof_deepseg

    def decide(self, prior: np.ndarray) -> dict:
        """The safeguard's decision and out-of-fold accuracies (or why there are none)."""
        if self._cross_fit() is None:
            return {"safeguard": "skipped: " + TOO_FEW}
        decision = decide(self.y_l, self._oof, self._deepseg_out_of_fold(prior))
        log.info("safeguard: %s (out-of-fold accuracy: supervised start %.3f, Deep Segmentation %.3f)",
                 decision["safeguard"], decision["cv_accuracy_start"], decision["cv_accuracy_deepseg"])
        return {**decision, "safeguard_s": self._seconds}

    def calibration(self, prior: np.ndarray, kept_start: bool) -> tuple[OutputCalibration | None, dict]:
        """The answer's calibration (:mod:`deepseg.core.calibration`) from the out-of-fold
        probabilities of the answer the run keeps, and its history record."""
        if self._cross_fit() is None:
            return None, {"calibration": "skipped: " + TOO_FEW}
        P_oof = self._oof if kept_start else self._deepseg_out_of_fold(prior)
        few = few_labels(self.y_l, self.n_classes)
        shifted = answer_prior(self.config.class_prior, prior, self.prior_record, self.y_l, self.n_classes, few)
        calibration, record = fit_answer_calibration(
            P_oof, self.y_l, floor_prior(labeled_shares(self.y_l, self.n_classes)), shifted, few)
        log.info("calibration: temperature %.3g, %s, answer's class prior %s", calibration.temperature,
                 "anchored at the labelled shares (few labelled users)" if calibration.anchored else
                 f"bias {np.round(calibration.bias, 3).tolist() or 0} (likelihood-ratio p = "
                 f"{record['calibration_bias_p']:.3g})", np.round(shifted, 3).tolist())
        return calibration, {**record, "calibration_temperature": calibration.temperature,
                             "calibration_anchored": calibration.anchored, "calibration_bias": list(calibration.bias),
                             "calibration_prior": list(calibration.prior), "calibration_s": self._seconds}


@dataclass
class _Iteration:
    """One iteration of Algorithm 1 on the network being trained: embed → TSVMs → retrain."""

    net: SegmentationNet
    optimizer: torch.optim.Optimizer
    X_l: np.ndarray
    y_l: np.ndarray
    H: np.ndarray  # smoothed one-hot labels h(y)
    sample: np.ndarray  # the unlabelled users the TSVMs are fitted on
    backend: Backend
    n_classes: int
    config: DeepSegConfig
    seed: int
    input_noise: float
    unlabeled_epochs: int
    class_prior: np.ndarray | None = None  # None: the TSVMs' labelled shares, uniform class weights

    def __call__(self, it: int) -> tuple[dict, OvRTSVM]:
        """The iteration's history record and TSVMs."""
        net, sample, config, tc, seed = self.net, self.sample, self.config, self.config.train, self.seed
        watch = _Stopwatch()
        with watch("embed_s"):
            Z_l, Z_u = embed(net, self.X_l), embed(net, sample)

        # Pseudo-labels are recomputed from scratch: the TSVMs see only this iteration's embedding.
        with watch("tsvm_s"):
            tsvm = fit_ovr_tsvm(Z_l, self.y_l, Z_u, self.n_classes, config.tsvm, mapper=self.backend.map,
                                n_folds=config.tsvm_calibration_folds, seed=seed + it, class_prior=self.class_prior)
        tsvm_labels = np.argmax(tsvm.decision_function(Z_u), axis=1)

        with watch("retrain_s"):
            labeler = PseudoLabeler(frozen_copy(net), tsvm, with_net=config.pseudo_labels == "tsvm_and_net")
            if tc.unlabeled_loss == "weighted_ce" and n_rows(sample):
                # class shares from the TSVM sample: every unlabelled user in memory, a sample on Spark
                labeler.class_weights = balancing_weights(labeler.probabilities(sample), self.class_prior)
            with self.backend.pseudo_label(labeler) as data:
                unlabeled_loss = train_unlabeled(
                    net, self.optimizer,
                    lambda e: data.batches(tc.unlabeled_batch_size, seed + 1000 * it + e, tc.unlabeled_rows_per_epoch),
                    self.unlabeled_epochs, tc.unlabeled_weight, tc.unlabeled_loss, tc.mixup_alpha,
                    seed + 1000 * it, self.input_noise,
                )
            kl = train_labeled(net, self.optimizer, self.X_l, self.H, tc.labeled_epochs, tc.batch_size,
                                seed + 1000 * it)

        net_labels = np.argmax(predict_proba(net, sample), axis=1)
        record = {
            "iteration": it,
            "tsvm_objective": float(np.mean([s.objective for s in tsvm.separators])),
            "tsvm_cccp_rounds": [s.n_iter for s in tsvm.separators],
            "agreement": float(np.mean(net_labels == tsvm_labels)) if n_rows(sample) else float("nan"),
            "class_shares": np.bincount(net_labels, minlength=self.n_classes).tolist(),
            "mse": unlabeled_loss[-1] if unlabeled_loss else float("nan"),
            "kl": kl[-1] if kl else float("nan"),
            "input_noise": self.input_noise,
            "unlabeled_epochs": self.unlabeled_epochs,
            **watch.seconds,
        }
        return record, tsvm
