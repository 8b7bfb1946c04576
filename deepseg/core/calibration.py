"""Calibrated answers: the network's evidence scaled by a temperature fitted out of fold, under the
class prior of the unlabelled users.

A network trained on a few labelled users fits them exactly; its probabilities on everyone else are
over-confident, and its boundary sits halfway between the few users of each class whatever their
share. Out-of-fold probabilities of the labelled users measure how confident it should be: τ scales
the evidence log p - log π_l (π_l: the labelled shares the network was trained under) to minimise
their log-loss. The answer then puts the evidence under the prior π of the unlabelled users
(`class_prior`), the Bayes adjustment of Saerens, Latinne & Decaestecker (Neural Computation 2002):

    p̃(k | x) ∝ exp(τ · (log p(k | x) - log π_l,k) + log π_k)

τ < 1 pulls an over-confident network towards the prior, as a regularised model would be; for two
classes the order of the users by propensity is unchanged. τ is at most 1 here: a few labelled
users that the folds happen to separate perfectly would otherwise push it to its bound and every
propensity to 0 or 1. Only labelled users are read.
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
    """τ ≤ e^max_log_tau minimising the log-loss of softmax(τ·(log P_oof - log π_l) + log π_l) on the labels `y`."""
    log_pi = _log(train_prior)
    E, y = _log(P_oof) - log_pi, np.asarray(y)

    def loss(log_tau):
        return -log_softmax(np.exp(log_tau) * E + log_pi, axis=1)[np.arange(len(y)), y].mean()

    return float(np.exp(minimize_scalar(loss, bounds=(LOG_TAU_BOUNDS[0], max_log_tau), method="bounded").x))


@dataclass(frozen=True)
class OutputCalibration:
    """p ↦ softmax(τ·(log p - log π_l) + log π): see the module doc."""

    temperature: float
    train_prior: tuple[float, ...]  # π_l: the labelled shares
    prior: tuple[float, ...]  # π: the class prior of the unlabelled users

    @classmethod
    def fit(cls, P_oof: np.ndarray, y: np.ndarray, train_prior, prior) -> "OutputCalibration":
        return cls(fit_temperature(P_oof, y, train_prior, MAX_ANSWER_LOG_TAU), tuple(map(float, train_prior)), tuple(map(float, prior)))

    def __call__(self, P: np.ndarray) -> np.ndarray:
        logits = self.temperature * (_log(P) - _log(self.train_prior)) + _log(self.prior)
        return softmax(logits, axis=1).astype(np.asarray(P).dtype, copy=False)

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "train_prior": list(self.train_prior), "prior": list(self.prior)}

    @classmethod
    def from_dict(cls, data: dict | None) -> "OutputCalibration | None":
        if data is None:
            return None
        return cls(float(data["temperature"]), tuple(map(float, data["train_prior"])), tuple(map(float, data["prior"])))
