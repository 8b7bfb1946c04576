"""Calibrated answers: the network's probabilities scaled by a temperature fitted out of fold, and
moved between segments only where the labelled users give a reason to.

A network trained on a few labelled users fits them exactly; its probabilities on everyone else are
over-confident. Out-of-fold probabilities of the labelled users measure how confident it should
be: τ ≤ 1 scales its log-probabilities to minimise their log-loss. Two further moves change users'
segments:

- *anchoring*: the evidence is scaled against the labelled shares π_l, so that the prior weighs in
  as the evidence weakens. A boundary fitted to a handful of users of a segment sits halfway
  between them whatever the segment's share (17 and 3 labelled users: the small segment takes a
  third of the users);
- *the prior shift*: the Bayes adjustment of Saerens, Latinne & Decaestecker (Neural Computation
  2002) from π_l to the class prior π of the unlabelled users (a fixed number per segment of an
  imbalanced population).

    anchored:  p̃(k | x) ∝ exp(τ · (log p(k | x) - log π_l,k) + log π_k)
    otherwise: p̃(k | x) ∝ exp(τ · log p(k | x) + log π_k - log π_l,k)

With few labelled users (`few_labels`: some segment has at most AUTO_LABELS_PER_CLASS, the boundary
of the other "auto" rules) both moves are made: that bias is expected, and no test on so few users
could show it. Above, each move needs evidence, a χ² test at EVIDENCE_ALPHA: anchoring where the
out-of-fold segment counts contradict the labelled counts (`bias_pvalue`), the shift where the
labelled shares contradict the estimated prior (:func:`deepseg.core.prior.label_shift_pvalue`).
Otherwise temperature scaling alone changes no user's segment (Guo et al. 2017). On synthetic users
surveyed at random (26+ labelled users per segment) making both moves regardless cost 0.2-1.3 points
against the uncalibrated answer in 9 of 10 seeds (docs/tuning-log.md). τ is at most 1: a few
labelled users that the folds happen to separate perfectly would otherwise push it to its bound
and every propensity to 0 or 1. Only labelled users are read. Models saved before format version 3
load anchored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import chisquare

from deepseg.core.train import AUTO_LABELS_PER_CLASS

#: Bounds of log τ: τ from e^-5 (nearly the prior alone) to e^3 (sharper than the network).
LOG_TAU_BOUNDS = (-5.0, 3.0)

#: The answer's τ is at most 1 (see the module doc).
MAX_ANSWER_LOG_TAU = 0.0

#: Level of the χ² tests that let the calibration move users between segments (module doc).
EVIDENCE_ALPHA = 0.05


def _log(p) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0))


def fit_temperature(P_oof: np.ndarray, y: np.ndarray, train_prior: np.ndarray,
                    max_log_tau: float = LOG_TAU_BOUNDS[1]) -> float:
    """τ ≤ e^max_log_tau minimising the log-loss of softmax(τ·(log P_oof - log π_l) + log π_l) on the
    labels `y` (a uniform `train_prior`: plain temperature scaling, softmax(τ·log P_oof))."""
    log_pi = _log(train_prior)
    E, y = _log(P_oof) - log_pi, np.asarray(y)

    def loss(log_tau):
        return -log_softmax(np.exp(log_tau) * E + log_pi, axis=1)[np.arange(len(y)), y].mean()

    return float(np.exp(minimize_scalar(loss, bounds=(LOG_TAU_BOUNDS[0], max_log_tau), method="bounded").x))


def few_labels(y: np.ndarray, n_classes: int) -> bool:
    """Whether some segment has at most AUTO_LABELS_PER_CLASS labelled users (see the module doc)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)[:n_classes]
    return bool(counts.min() <= AUTO_LABELS_PER_CLASS)


def bias_pvalue(P_oof: np.ndarray, y: np.ndarray) -> float:
    """p-value of the χ² test of the out-of-fold segment counts (argmax of `P_oof`) against the
    labelled counts of `y`: small when the network calls some segment far more or less often than
    the labelled users have it (0 when it calls a segment that no labelled user has)."""
    n_classes = np.shape(P_oof)[1]
    true = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)[:n_classes]
    called = np.bincount(np.asarray(P_oof).argmax(axis=1), minlength=n_classes)[:n_classes]
    present = true > 0
    if called[~present].sum() > 0:
        return 0.0
    if present.sum() < 2:
        return 1.0
    return float(chisquare(called[present], true[present]).pvalue)


@dataclass(frozen=True)
class OutputCalibration:
    """p ↦ softmax(τ·(log p - log π_l) + log π) if anchored, else softmax(τ·log p + log π - log π_l):
    see the module doc."""

    temperature: float
    train_prior: tuple[float, ...]  # π_l: the labelled shares
    prior: tuple[float, ...]  # π: the class prior of the unlabelled users
    anchored: bool = False  # see the module doc; models saved before format version 3 are anchored

    @classmethod
    def fit(cls, P_oof: np.ndarray, y: np.ndarray, train_prior, prior, anchored: bool) -> "OutputCalibration":
        """τ fitted on the out-of-fold `P_oof` of the labelled users `y` in the chosen form."""
        anchor = train_prior if anchored else np.full(np.shape(P_oof)[1], 1.0 / np.shape(P_oof)[1])
        return cls(fit_temperature(P_oof, y, anchor, MAX_ANSWER_LOG_TAU), tuple(map(float, train_prior)),
                   tuple(map(float, prior)), bool(anchored))

    def __call__(self, P: np.ndarray) -> np.ndarray:
        log_train = _log(self.train_prior)
        if self.anchored:
            logits = self.temperature * (_log(P) - log_train) + _log(self.prior)
        else:
            logits = self.temperature * _log(P) + _log(self.prior) - log_train
        return softmax(logits, axis=1).astype(np.asarray(P).dtype, copy=False)

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "train_prior": list(self.train_prior), "prior": list(self.prior),
                "anchored": self.anchored}

    @classmethod
    def from_dict(cls, data: dict | None) -> "OutputCalibration | None":
        """From :meth:`to_dict`; a dict without "anchored" (format version 2) has the anchored form."""
        if data is None:
            return None
        return cls(float(data["temperature"]), tuple(map(float, data["train_prior"])),
                   tuple(map(float, data["prior"])), bool(data.get("anchored", True)))
