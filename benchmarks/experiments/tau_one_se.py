"""Issue 19: the answer's temperature by the one-standard-error rule instead of the minimum of the
out-of-fold log-loss, with few labelled users. On synthetic users (the project's generator, not the
real-data suite).

    python -m benchmarks.experiments.tau_one_se 0 8      # seeds 0..7, one JSON line per fit

The diagnosis of 2026-12-06 (docs/tuning-log.md) found proportional few-label fits below the majority
rate wherever τ stayed moderate on 1-3 labelled users of a segment. The one-standard-error rule
(Breiman et al. 1984; glmnet's lambda.1se) takes the smallest τ whose mean out-of-fold log-loss is
within one standard error of the minimum: the simplest answer the labelled users cannot tell apart
from the best. Data and designs as benchmarks.experiments.few_label_shift; both answers from the
same fit (the fitted calibration, and the same with τ by the rule).
"""
import sys
from dataclasses import replace

import numpy as np
from scipy.special import log_softmax

import deepseg.core.loop as loop
from benchmarks.experiments.few_label_shift import data, fitted, main
from deepseg.core.calibration import LOG_TAU_BOUNDS, MAX_ANSWER_LOG_TAU, _log

SHARES = (0.3, 0.15, 0.07)
_seen = {}
_original = loop.fit_answer_calibration


def _capture(P_oof, y, train_prior, prior, few):
    _seen.update(P_oof=np.asarray(P_oof), y=np.asarray(y), train_prior=np.asarray(train_prior))
    return _original(P_oof, y, train_prior, prior, few)


loop.fit_answer_calibration = _capture


def one_se_tau(P_oof, y, train_prior) -> float:
    """The smallest τ on a log grid whose mean anchored log-loss is within one standard error of the least."""
    log_pi = _log(train_prior)
    E = _log(P_oof) - log_pi
    grid = np.exp(np.linspace(LOG_TAU_BOUNDS[0], MAX_ANSWER_LOG_TAU, 201))
    losses = np.array([-log_softmax(t * E + log_pi, axis=1)[np.arange(len(y)), y] for t in grid])
    best = losses.mean(axis=1).argmin()
    bar = losses[best].mean() + losses[best].std(ddof=1) / np.sqrt(len(y))
    return float(grid[np.flatnonzero(losses.mean(axis=1) <= bar)[0]])


def one(small: float, design: str, seed: int) -> dict:
    _seen.clear()
    clf, raw, truth, _ = fitted(*data(small, seed), design, seed)
    cal = clf.model_.ensemble.calibration
    tau = one_se_tau(_seen["P_oof"], _seen["y"], _seen["train_prior"])
    acc = lambda P: float(np.mean(np.argmax(P, axis=1) == truth))
    return {"small": small, "design": design, "seed": seed, "true": round(float(truth.mean()), 3),
            "estimate": round(float(clf.history_[-1]["class_prior"][1]), 3), "tau": round(cal.temperature, 3),
            "tau_1se": round(tau, 3), "current": acc(cal(raw)), "one_se": acc(replace(cal, temperature=tau)(raw)),
            "majority": float(max(truth.mean(), 1 - truth.mean()))}


if __name__ == "__main__":
    main(one, SHARES, sys.argv)
