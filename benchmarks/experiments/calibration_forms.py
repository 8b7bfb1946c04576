"""Issue 19: forms of the answer's calibration on the supervised start, on synthetic users (the
project's own generator, not the real-data suite), 8 seeds each:

    python -m benchmarks.experiments.calibration_forms multi 0 8    # 3,000 users, 5 segments, 5% surveyed at random
    python -m benchmarks.experiments.calibration_forms binary 0 8   # 85/15 (segment 0 against the rest), 5% surveyed

Prints one JSON line per seed: accuracy on the unsurveyed users of the start and of the start
calibrated as `anchored` (commit bfe013c's form, τ·(log p - log π_l) + log π̂), `anchored_labelled`
(the same under the labelled shares), `plain_shift` (τ·log p + log π̂ - log π_l, always shifted) and
`plain_gated` (the same, shifted only where the χ² test rejects the labelled shares: this commit's
form); the estimate π̂, the labelled shares and the test's p-value. It reads the generator's truth
to score; results in benchmarks/results/calibration-forms-synthetic.json.
"""
import json
import sys

import numpy as np
import torch

from deepseg.core.calibration import fit_temperature
from deepseg.core.embed import SegmentationNet, smooth_labels
from deepseg.core.loop import DeepSegConfig
from deepseg.core.prior import SHIFT_ALPHA, auto_class_prior, floor_prior, labeled_shares
from deepseg.core.safeguard import CrossFit
from deepseg.core.train import make_optimizer, predict_proba, train_labeled
from deepseg.data.synthetic import make_user_matrix


def _log(p):
    return np.log(np.clip(p, 1e-12, 1))


def data(mode: str, seed: int):
    X, seg, surveyed = make_user_matrix(n_users=3000 if mode == "multi" else 6000, n_segments=5,
                                        survey_fraction=0.05, seed=seed, onehot_zscore=True)
    if mode == "binary":
        rng = np.random.default_rng(seed)
        pos, neg = np.flatnonzero(seg == 0), np.flatnonzero(seg != 0)
        keep = rng.permutation(np.concatenate([neg, rng.choice(pos, int(len(neg) * 0.15 / 0.85), replace=False)]))
        X, seg, surveyed = X[keep], (seg[keep] == 0).astype(int), surveyed[keep]
    return X.astype(np.float32), seg, surveyed


def one(mode: str, seed: int) -> dict:
    c, tc = DeepSegConfig(), DeepSegConfig().train
    X, seg, surveyed = data(mode, seed)
    k = int(seg.max()) + 1
    lab, unl = np.flatnonzero(surveyed), np.flatnonzero(~surveyed)
    y = seg[lab]
    torch.manual_seed(seed)
    net = SegmentationNet(X.shape[1], k, c.net)
    train_labeled(net, make_optimizer(net, tc.learning_rate), X[lab], smooth_labels(y, k, c.label_smoothing),
                  tc.supervised_epochs, tc.batch_size, seed)
    P = predict_proba(net, X[unl])
    P_oof = CrossFit(X[lab], y, k, c.safeguard_folds, c.label_smoothing, c.net, tc.learning_rate,
                     tc.supervised_epochs, tc.batch_size, seed).supervised()
    pl = floor_prior(labeled_shares(y, k))
    sample = P[np.random.default_rng(seed).permutation(len(P))[:1500]]
    pi, record = auto_class_prior(sample, P_oof, y, k)
    tau_anchored = fit_temperature(P_oof, y, pl, 0.0)
    tau_plain = fit_temperature(P_oof, y, np.full(k, 1 / k), 0.0)
    shift = _log(pi) - _log(pl)

    def acc(logits):
        return round(100 * float(np.mean(logits.argmax(1) == seg[unl])), 2)

    return {"mode": mode, "seed": seed, "start": acc(_log(P)),
            "anchored": acc(tau_anchored * (_log(P) - _log(pl)) + _log(pi)),
            "anchored_labelled": acc(tau_anchored * (_log(P) - _log(pl)) + _log(pl)),
            "plain_shift": acc(tau_plain * _log(P) + shift),
            "plain_gated": acc(tau_plain * _log(P) + (shift if record["label_shift_p"] < SHIFT_ALPHA else 0)),
            "estimate": np.round(pi, 3).tolist(), "labelled": np.round(pl, 3).tolist(),
            "p": round(record["label_shift_p"], 4), "tau_anchored": round(tau_anchored, 3),
            "tau_plain": round(tau_plain, 3)}


if __name__ == "__main__":
    mode, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for s in range(lo, hi):
        print(json.dumps(one(mode, s)), flush=True)
