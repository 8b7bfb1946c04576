"""The class prior of the unlabelled users: the TSVMs' balance target and the unlabelled loss's class weights.

Few labelled users say little about how common each segment is, and the labelled share is no
estimate at all when the survey drew a fixed number per segment. The prior is estimated from the
unlabelled users instead: the mean of the supervised start's probabilities on them, after a
temperature fitted on out-of-fold probabilities of the labelled users has calibrated them
(probabilistic classify-and-count, Bella et al. 2010; calibration first, as Alexandari, Kundaje &
Shrikumar, ICML 2020, recommend for label shift). That mean is the first step of the EM of
Saerens, Latinne & Decaestecker (Neural Computation 2002), started at the labelled shares; the
EM's fixed point (the maximum-likelihood prior) is not used: with 10 labelled users per class the
start is weak, its calibrated probabilities nearly flat, and the likelihood so flat that EM ran to
a corner of the simplex on 6 of 13 real data sets (benchmarks/experiments/prior_safeguard.py), where
one step stays between the labelled shares and what the start sees.

The answer is shifted from the labelled shares to the estimate only where the labelled shares
contradict it: a χ² goodness-of-fit test of the labelled class counts against the estimate
(`label_shift_pvalue`) must reject at SHIFT_ALPHA. A survey drawn in proportion to the segments then
keeps its own shares, an unbiased estimate that the start's errors cannot bend, while a fixed number
per segment of an imbalanced population is corrected. With a few labelled users in some segment
(:func:`deepseg.core.calibration.few_labels`) no test can show that shift; there the answer shifts
without a test where the labelled users hold as many users of every segment (`fixed_per_segment`),
the mark of a fixed-number survey, and keeps the test otherwise (synthetic users,
docs/tuning-log.md). The iterations' balance target is the estimate either way: a
soft target, not a decision. No label of an unlabelled user is read.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from scipy.special import softmax
from scipy.stats import chisquare

from deepseg.core.calibration import EVIDENCE_ALPHA, fit_temperature

#: The values of `class_prior` that name a rule (an array gives the prior itself).
PRIOR_RULES = ("auto", "labeled", "uniform")

#: EM steps of the "auto" prior: one, the calibrated classify-and-count (see the module doc).
EM_STEPS = 1

#: The answer leaves the labelled shares for the estimate when the χ² test rejects them at this level.
SHIFT_ALPHA = EVIDENCE_ALPHA

#: No class gets a smaller prior: keeps the TSVM balance r = 2π - 1 inside (-1, 1).
MIN_PRIOR = 1e-3


def labeled_shares(y_l: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of each class among the labelled users."""
    return np.bincount(np.asarray(y_l, dtype=np.int64), minlength=n_classes)[:n_classes] / max(len(y_l), 1)


def em_prior(P: np.ndarray, train_prior: np.ndarray, max_iter: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """Saerens et al. (2002): the class prior of points whose posteriors `P` a model trained under
    `train_prior` computed.

    EM: the posteriors re-weighted by π/π_train and renormalised give a new π, their mean; the
    fixed point maximises the likelihood of the points under π (p(x|k) unchanged). One step
    (`max_iter` = 1) is the mean of `P`, the probabilistic classify-and-count.
    """
    P = np.asarray(P, dtype=np.float64)
    if len(P) == 0:
        return np.asarray(train_prior, dtype=np.float64)
    train = np.maximum(np.asarray(train_prior, dtype=np.float64), 1e-12)
    pi = train / train.sum()
    for _ in range(max_iter):
        Q = P * (pi / train)
        Q /= np.maximum(Q.sum(axis=1, keepdims=True), 1e-300)
        new = Q.mean(axis=0)
        done = np.abs(new - pi).max() < tol
        pi = new
        if done:
            break
    return pi


def calibrated(P_u: np.ndarray, P_oof: np.ndarray | None, y_l: np.ndarray, train_prior: np.ndarray
               ) -> tuple[np.ndarray, float]:
    """(P_u recalibrated, τ): softmax(τ·(log p - log π_l) + log π_l), τ minimising the log-loss of the
    out-of-fold probabilities `P_oof` of the labelled users `y_l`; τ = 1 without them.

    τ scales the evidence of the features, log p - log π_l, and keeps the training prior π_l (the
    labelled shares): τ < 1 pulls an over-confident network towards π_l, not towards 1/c as plain
    temperature scaling would (a network no better than chance then leaves the prior at π_l;
    flattened to 1/c, EM would read the flattening as a prior shift).
    """
    log_pi = np.log(np.maximum(np.asarray(train_prior, dtype=np.float64), 1e-12))
    tau = fit_temperature(P_oof, y_l, train_prior) if P_oof is not None and len(P_oof) else 1.0
    evidence = np.log(np.clip(np.asarray(P_u, dtype=np.float64), 1e-12, 1.0)) - log_pi
    return softmax(tau * evidence + log_pi, axis=1), tau


def estimate_class_prior(P_u: np.ndarray, P_oof: np.ndarray | None, y_l: np.ndarray, n_classes: int
                         ) -> tuple[np.ndarray, float]:
    """(the prior of the unlabelled users from the supervised start's probabilities `P_u` on them,
    calibrated with the out-of-fold `P_oof`: EM_STEPS steps of EM; the temperature), floored at MIN_PRIOR."""
    train = labeled_shares(y_l, n_classes)
    Q, tau = calibrated(P_u, P_oof, y_l, train)
    return floor_prior(em_prior(Q, train, max_iter=EM_STEPS)), tau


def label_shift_pvalue(y_l: np.ndarray, prior: np.ndarray) -> float:
    """p-value of the χ² goodness-of-fit test of the labelled class counts against `prior`: how
    likely counts this far from it are if the labelled users were drawn from a population with
    that prior."""
    counts = np.bincount(np.asarray(y_l, dtype=np.int64), minlength=len(prior))[:len(prior)]
    if counts.sum() == 0:
        return 1.0
    return float(chisquare(counts, np.asarray(prior, dtype=np.float64) * counts.sum()).pvalue)


def auto_class_prior(P_u: np.ndarray, P_oof: np.ndarray | None, y_l: np.ndarray, n_classes: int
                     ) -> tuple[np.ndarray, dict]:
    """The "auto" prior, `estimate_class_prior`, and its history record: the temperature, and the
    χ² test of the labelled shares against it (whether the answer shifts: "label_shift")."""
    estimate, tau = estimate_class_prior(P_u, P_oof, y_l, n_classes)
    p = label_shift_pvalue(y_l, estimate)
    return estimate, {"prior_temperature": tau, "label_shift_p": p, "label_shift": bool(p < SHIFT_ALPHA)}


def fixed_per_segment(y_l: np.ndarray, n_classes: int) -> bool:
    """Whether the labelled users hold the same number of users of every segment: the mark of a
    survey that drew a fixed number per segment, whose shares say nothing of the population's."""
    counts = np.bincount(np.asarray(y_l, dtype=np.int64), minlength=n_classes)[:n_classes]
    return bool(counts.min() == counts.max())


def answer_prior(rule: Any, prior: np.ndarray, record: dict, y_l: np.ndarray, n_classes: int,
                 few: bool = False) -> np.ndarray:
    """The prior the answer is shifted to: for "auto" the estimate `prior` where the χ² test
    rejected the labelled shares (`record`), or without a test where there are `few` labelled users
    and as many of every segment (:func:`fixed_per_segment`: no test on so few could show the shift
    such a survey implies); else the labelled shares. Any other rule's prior as is."""
    if isinstance(rule, str) and rule == "auto" and not record.get("label_shift", False) \
            and not (few and fixed_per_segment(y_l, n_classes)):
        return floor_prior(labeled_shares(y_l, n_classes))
    return prior


def floor_prior(pi: np.ndarray) -> np.ndarray:
    """`pi` with every class at least MIN_PRIOR, renormalised."""
    pi = np.maximum(np.asarray(pi, dtype=np.float64), MIN_PRIOR)
    return pi / pi.sum()


def check_class_prior(value: Any, n_classes: int) -> np.ndarray | str:
    """The rule name, or the given prior as an array normalised to sum 1; ValueError naming
    'class_prior' and the value otherwise."""
    if isinstance(value, str):
        if value not in PRIOR_RULES:
            raise ValueError(f"The 'class_prior' parameter must be one of {PRIOR_RULES} or one weight per class; "
                             f"got {value!r}.")
        return value
    try:
        pi = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pi = None
    if (pi is None or pi.ndim != 1 or len(pi) != n_classes or not np.all(np.isfinite(pi)) or np.any(pi < 0)
            or pi.sum() <= 0 or any(isinstance(v, bool) or not isinstance(v, (Real, np.number)) for v in value)):
        raise ValueError(f"The 'class_prior' parameter must be one of {PRIOR_RULES} or {n_classes} non-negative "
                         f"finite weights (one per class, not all 0); got {value!r}.")
    return floor_prior(pi / pi.sum())


def resolve_class_prior(value: Any, y_l: np.ndarray, n_classes: int, estimate) -> np.ndarray:
    """The prior that `class_prior` = `value` means: "auto", `estimate()` (called only then);
    "labeled", the labelled shares; "uniform", 1/c; an array, itself (normalised)."""
    rule = check_class_prior(value, n_classes)
    if not isinstance(rule, str):
        return rule
    if rule == "auto":
        return estimate()
    if rule == "labeled":
        return floor_prior(labeled_shares(y_l, n_classes))
    return np.full(n_classes, 1.0 / n_classes)
