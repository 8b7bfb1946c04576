"""Calibrated answers: the network's probabilities scaled by a temperature fitted out of fold,
moved to the class prior of the unlabelled users where it differs from the labelled shares.

A network trained on a few labelled users fits them exactly; its probabilities on everyone else are
over-confident. Out-of-fold probabilities of the labelled users measure how confident it should
be: τ ≤ 1 scales its log-probabilities to minimise their log-loss (temperature scaling, Guo et al.
2017), which changes no user's segment. Where the class prior π of the unlabelled users
(`class_prior`) differs from the labelled shares π_l the network was trained under, the answer
then takes the Bayes adjustment of Saerens, Latinne & Decaestecker (Neural Computation 2002):

    p̃(k | x) ∝ exp(τ · log p(k | x) + log π_k - log π_l,k)

Only that prior shift moves users between segments; under the default prior it happens only where
the labelled shares fail a test against the unlabelled users' estimate (:mod:`deepseg.core.prior`).
τ is at most 1: a few labelled users that the folds happen to separate perfectly would otherwise
push it to its bound and every propensity to 0 or 1. Only labelled users are read.

Models saved before format version 3 scaled the evidence against the labelled shares instead,
exp(τ·(log p - log π_l) + log π), which pulls every answer toward the common segments as τ falls;
they load with that form (`anchored`). On synthetic users surveyed at random it cost 0.5-3 points
of accuracy against the uncalibrated answer in every seed tried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

#: Bounds of log τ: τ from e^-5 (nearly the prior alone) to e^3 (sharper than the network).
LOG_TAU_BOUNDS = (-5.0, 3.0)

#: The answer's τ is at most 1 (see the module doc).
MAX_ANSWER_LOG_TAU = 0.0


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


@dataclass(frozen=True)
class OutputCalibration:
    """p ↦ softmax(τ·log p + log π - log π_l): see the module doc."""

    temperature: float
    train_prior: tuple[float, ...]  # π_l: the labelled shares
    prior: tuple[float, ...]  # π: the class prior of the unlabelled users
    anchored: bool = False  # the form of models saved before format version 3 (module doc)

    @classmethod
    def fit(cls, P_oof: np.ndarray, y: np.ndarray, train_prior, prior) -> "OutputCalibration":
        uniform = np.full(np.shape(P_oof)[1], 1.0 / np.shape(P_oof)[1])
        return cls(fit_temperature(P_oof, y, uniform, MAX_ANSWER_LOG_TAU), tuple(map(float, train_prior)),
                   tuple(map(float, prior)))

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
