"""Scores of probability vectors on the unlabelled points: accuracy, macro-F1, log-loss, ECE."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss


def expected_calibration_error(y_true, proba, classes=None, n_bins: int = 15) -> float:
    """ECE of Guo et al. (2017): Σ_b (|B_b|/n)·|accuracy(B_b) - mean confidence(B_b)|.

    Confidence is the largest probability of each row; bins are `n_bins` equal-width intervals
    (lo, hi] of [0, 1]. `classes[j]` is the label of column j (default: 0..c-1).
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.arange(proba.shape[1]) if classes is None else np.asarray(classes)
    confidence = proba.max(axis=1)
    correct = classes[proba.argmax(axis=1)] == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def score(y_true, proba, classes) -> dict:
    """All four metrics; rows of `proba` are renormalised (NaN or all-zero rows become uniform)."""
    proba = np.nan_to_num(np.asarray(proba, dtype=np.float64), nan=0.0)
    s = proba.sum(axis=1, keepdims=True)
    proba = np.where(s > 0, proba / np.where(s > 0, s, 1.0), 1.0 / proba.shape[1])
    y_pred = np.asarray(classes)[proba.argmax(axis=1)]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=classes)),
        "log_loss": float(log_loss(y_true, proba, labels=classes)),
        "ece": expected_calibration_error(y_true, proba, classes),
    }
