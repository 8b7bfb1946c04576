"""Issue 19: with few labelled users, shift the answer to the estimated prior always (the rule of
2026-12-06) or only where a χ² test rejects the labelled shares against the estimate (as above 10
labelled users per segment)? On synthetic users (the project's generator, not the real-data suite).

    python -m benchmarks.experiments.few_label_shift 0 10     # seeds 0..9, one JSON line per fit

Users: 4,000 of the generator's, segment 0 against the rest resampled so that segment 0 has the
share `small` (0.5, 0.3, 0.15, 0.07); 20 labelled users drawn at random ("random": the labelled
share follows the population; at least one per segment) or 10 per segment ("quota"). One default
fit per (share, design, seed); both answers come from the same fit: the fitted calibration, and
the same calibration with its prior set to the labelled shares where the χ² test did not reject.
Prints accuracy on the unlabelled users of each answer, the estimated and true share.
"""
import json
import sys
import warnings
from dataclasses import replace

import numpy as np

from deepseg import DeepSegmentationClassifier
from deepseg.data.synthetic import make_user_matrix

SHARES = (0.5, 0.3, 0.15, 0.07)


def data(small: float, seed: int, n: int = 4000):
    X, seg, _ = make_user_matrix(n_users=3 * n, n_segments=5, survey_fraction=0.05, seed=seed, onehot_zscore=True)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(seg == 0), np.flatnonzero(seg != 0)
    n_pos = int(round(n * small))
    keep = rng.permutation(np.concatenate([rng.choice(neg, n - n_pos, replace=False), rng.choice(pos, n_pos, replace=False)]))
    return X[keep].astype(np.float32), (seg[keep] == 0).astype(int)


def labelled(seg: np.ndarray, design: str, seed: int) -> np.ndarray:
    """The labelled users of one fit: 20 at random with both segments present ("random"), or 10 per
    segment ("quota")."""
    rng = np.random.default_rng(seed + 1)
    if design == "quota":
        return np.concatenate([rng.choice(np.flatnonzero(seg == k), 10, replace=False) for k in (0, 1)])
    while True:
        lab = rng.choice(len(seg), 20, replace=False)
        if np.bincount(seg[lab], minlength=2).min() >= 1:
            return lab


def fitted(X: np.ndarray, seg: np.ndarray, design: str, seed: int):
    """(the default fit, its raw EMA answer on the unlabelled users, their segments, the labelled
    indices) for the users `data` gave and one (design, seed) of the module doc."""
    lab = labelled(seg, design, seed)
    y = np.full(len(seg), -1)
    y[lab] = seg[lab]
    unl = y == -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = DeepSegmentationClassifier(random_state=seed).fit(X, y)
    return clf, replace(clf.model_.ensemble, calibration=None)(X[unl]), seg[unl], lab


def one(small: float, design: str, seed: int) -> dict:
    clf, raw, truth, lab = fitted(*data(small, seed), design, seed)
    last = clf.history_[-1]
    cal = clf.model_.ensemble.calibration
    gated = cal if last["label_shift"] else replace(cal, prior=cal.train_prior)
    acc = lambda P: float(np.mean(np.argmax(P, axis=1) == truth))
    return {"small": small, "design": design, "seed": seed, "true": round(float(truth.mean()), 3),
            "labelled": round(float(np.mean(clf.transduction_[lab] == 1)), 3),
            "estimate": round(float(last["class_prior"][1]), 3),
            "shift_p": round(last["label_shift_p"], 4), "rule": last.get("calibration_rule"),
            "safeguard": last.get("safeguard"), "always": acc(cal(raw)), "on_test": acc(gated(raw)),
            "majority": float(max(truth.mean(), 1 - truth.mean()))}


def main(one, shares, argv) -> None:
    """One JSON line per (seed in argv's range, share, design) of `one`."""
    for s in range(int(argv[1]), int(argv[2])):
        for small in shares:
            for design in ("random", "quota"):
                print(json.dumps(one(small, design, s)), flush=True)


if __name__ == "__main__":
    main(one, SHARES, sys.argv)
