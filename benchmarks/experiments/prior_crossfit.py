"""Issue 19: the "auto" class prior estimated with the networks its temperature was fitted on, on
synthetic users (the project's generator, not the real-data suite).

    python -m benchmarks.experiments.prior_crossfit 0 30      # seeds 0..29, one JSON line each

The "auto" prior calibrates the supervised start's probabilities on the unlabelled users with a
temperature fitted on out-of-fold probabilities of the labelled users, which come from the K fold
networks (each trained on the other folds). The start is trained on all labelled users, so the
temperature fitted on the folds may not fit it. "crossfit": the K fold networks' calibrated
probabilities on the unlabelled users, averaged (as scikit-learn's CalibratedClassifierCV(ensemble=True)
predicts with the models its calibration was fitted on).

Users: 6,000 of the generator's, segment 0 against the rest resampled to 85/15; 20 labelled users
drawn at random ("random": the labelled share follows the population) or 10 per segment ("quota").
Prints the true share of the small segment among the unlabelled users and each estimate of it.
"""
import json
import sys

import numpy as np
import torch

from benchmarks.experiments.calibration_forms import data
from deepseg.core.embed import SegmentationNet, smooth_labels
from deepseg.core.loop import DeepSegConfig
from deepseg.core.prior import auto_class_prior
from deepseg.core.safeguard import CrossFit
from deepseg.core.train import make_optimizer, predict_proba, train_labeled


def one(seed: int, design: str) -> dict:
    c, tc = DeepSegConfig(), DeepSegConfig().train
    X, seg, _ = data("binary", seed)
    rng = np.random.default_rng(seed)
    if design == "random":
        lab = rng.choice(len(seg), 20, replace=False)
    else:
        lab = np.concatenate([rng.choice(np.flatnonzero(seg == k), 10, replace=False) for k in (0, 1)])
    unl = np.setdiff1d(np.arange(len(seg)), lab)
    y = seg[lab]
    if np.bincount(y, minlength=2).min() < 1:
        return {}
    torch.manual_seed(seed)
    net = SegmentationNet(X.shape[1], 2, c.net)
    train_labeled(net, make_optimizer(net, tc.learning_rate), X[lab], smooth_labels(y, 2, c.label_smoothing),
                  tc.supervised_epochs, tc.batch_size, seed)
    sample = X[unl][rng.permutation(len(unl))[:1500]]
    cross = CrossFit(X[lab], y, 2, c.safeguard_folds, c.label_smoothing, c.net, tc.learning_rate,
                     tc.supervised_epochs, tc.batch_size, seed)
    P_oof = cross.supervised()
    current, record = auto_class_prior(predict_proba(net, sample), P_oof, y, 2)
    folds = np.mean([auto_class_prior(predict_proba(f.net, sample), P_oof, y, 2)[0] for f in cross._fits], axis=0)
    return {"seed": seed, "design": design, "true": round(float(np.mean(seg[unl] == 1)), 3),
            "labelled": round(float(np.mean(y == 1)), 3), "current": round(float(current[1]), 3),
            "crossfit": round(float(folds[1]), 3), "tau": round(record["prior_temperature"], 3)}


if __name__ == "__main__":
    for design in ("random", "quota"):
        for s in range(int(sys.argv[1]), int(sys.argv[2])):
            r = one(s, design)
            if r:
                print(json.dumps(r), flush=True)
