"""The safeguard: labelled-only cross-validation of Deep Segmentation against its own supervised start.

The unlabelled users do not help on every data set; on some the iterations end below the network
they started from. The labelled users are split into K stratified folds. For each fold a network
is trained on the other folds exactly as the supervised start is; its probabilities on the
held-out fold are the start's out-of-fold predictions (they also calibrate the class prior,
:mod:`deepseg.core.prior`). It then runs Algorithm 1's iterations on a seeded sample of at most
``safeguard_unlabeled_size`` unlabelled users plus the held-out fold (unlabelled to that fit,
as the users being scored are to the real one); the EMA's probabilities on the held-out fold are
Deep Segmentation's out-of-fold predictions. The fit keeps the supervised start only if its
out-of-fold accuracy is higher (ties keep Deep Segmentation).

The sample lives on the driver (it is drawn from the TSVMs' sample), so this works whatever the
backend. Everything runs under its own torch random state: the main fit is the same with or
without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from deepseg.core.embed import SegmentationNet, smooth_labels
from deepseg.core.pseudo import EMAEnsemble
from deepseg.core.sparse import as_float32, issparse, vstack
from deepseg.core.train import make_optimizer, predict_proba, train_labeled

#: The safeguard's choices, as recorded in the history.
DEEPSEG, START = "deep segmentation", "supervised start"


def stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per labelled user: each class's users in a seeded random order, dealt round-robin
    in one sequence over the classes, so every fold gets each class's share (± 1) and a class of
    fewer users than folds lands in different folds, not all in the first."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == k)) for k in np.unique(y)])
    folds = np.empty(len(y), dtype=np.int64)
    folds[order] = np.arange(len(order)) % n_folds
    return folds


def cv_possible(n_labeled: int, n_folds: int) -> bool:
    """Whether each fold's training part has at least two users (batch norm trains on ≥ 2 rows)."""
    return n_labeled >= 2 * n_folds


def decide(y: np.ndarray, P_start: np.ndarray, P_deepseg: np.ndarray) -> dict:
    """The safeguard's decision from out-of-fold probabilities of the labelled users `y`:
    the supervised start only if its accuracy is strictly higher."""
    start = float(np.mean(P_start.argmax(axis=1) == y))
    deepseg = float(np.mean(P_deepseg.argmax(axis=1) == y))
    return {"safeguard": START if start > deepseg else DEEPSEG,
            "cv_accuracy_start": start, "cv_accuracy_deepseg": deepseg}


@dataclass
class _Fold:
    held: np.ndarray  # mask of the held-out labelled users
    net: SegmentationNet
    optimizer: torch.optim.Optimizer
    seed: int


@dataclass
class CrossFit:
    """The K fold fits of one training run (see the module doc)."""

    X_l: np.ndarray
    y_l: np.ndarray
    n_classes: int
    n_folds: int
    label_smoothing: float
    net_config: object
    learning_rate: float
    epochs: int
    batch_size: int
    seed: int
    # after each fold's labelled epochs, as after the start's: teach(net, optimizer, X, y, H, seed)
    teach: Callable | None = None
    folds: np.ndarray = field(init=False)
    _fits: list[_Fold] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.folds = stratified_folds(self.y_l, self.n_folds, self.seed)

    def supervised(self) -> np.ndarray:
        """Out-of-fold probabilities of the supervised start (n_labeled, n_classes)."""
        P = np.zeros((len(self.y_l), self.n_classes))
        for k in range(self.n_folds):
            held = self.folds == k
            seed = self.seed + 7919 * (k + 1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = SegmentationNet(self.X_l.shape[1], self.n_classes, self.net_config,
                                      sparse_input=issparse(self.X_l))
                optimizer = make_optimizer(net, self.learning_rate)
                H = smooth_labels(self.y_l[~held], self.n_classes, self.label_smoothing)
                train_labeled(net, optimizer, self.X_l[~held], H, self.epochs, self.batch_size, seed)
                if self.teach is not None:
                    self.teach(net, optimizer, self.X_l[~held], self.y_l[~held], H, seed)
            P[held] = predict_proba(net, self.X_l[held])
            self._fits.append(_Fold(held, net, optimizer, seed))
        return P

    def deep_segmentation(self, unlabeled: np.ndarray, iterate: Callable, ema_decay: float) -> np.ndarray:
        """Out-of-fold probabilities of Deep Segmentation: each fold's network iterated by
        `iterate(net, optimizer, X_l, y_l, X_u, seed)` (-> its snapshots) on `unlabeled` plus
        the held-out fold; after :meth:`supervised`."""
        P = np.zeros((len(self.y_l), self.n_classes))
        for fit in self._fits:
            X_u = as_float32(vstack([unlabeled, self.X_l[fit.held]]))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(fit.seed + 1)
                snapshots = iterate(fit.net, fit.optimizer, self.X_l[~fit.held], self.y_l[~fit.held], X_u,
                                    fit.seed)
            P[fit.held] = EMAEnsemble(snapshots, ema_decay)(self.X_l[fit.held]) if snapshots else \
                predict_proba(fit.net, self.X_l[fit.held])
        return P
