"""Issue 19, diagnosis only (nothing is chosen from it): in the real-data suite's proportional
few-label cells (10×c labelled users drawn at random), is the small segment's estimated prior off
because the labelled share is, or because the start's estimate moves away from it?

    python -m benchmarks.experiments.proportional_diagnosis attrition mobile-churn stackoverflow 0 10

Per fit (the suite's own split, `realdata.split`, and estimator, `make_estimator("deepseg")`): the
small segment's share among the labelled users, the "auto" estimate, its share among the unlabelled
users (read here only to describe the failure), the χ² p-value, the calibration's temperature, and
accuracy against the majority rate. One JSON line each.
"""
import json
import sys
import warnings

import numpy as np

from benchmarks import realdata
from benchmarks.accuracy_real import _limit_threads, make_estimator


def one(dataset: str, seed: int) -> dict:
    _limit_threads()
    X, y, lab, unl = realdata.split(dataset, 10, seed)
    small = int(np.argmin(np.bincount(y)))
    y_semi = np.full(len(y), -1)
    y_semi[lab] = y[lab]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = make_estimator("deepseg", seed, len(lab)).fit(X, y_semi)
    last = clf.history_[-1]
    pred = clf.transduction_[unl]
    return {"dataset": dataset, "seed": seed, "labelled_small": int((y[lab] == small).sum()), "n_labelled": len(lab),
            "labelled_share": round(float(np.mean(y[lab] == small)), 3),
            "estimate": round(float(last["class_prior"][small]), 3),
            "true_share": round(float(np.mean(y[unl] == small)), 3),
            "called_small": round(float(np.mean(pred == small)), 3),
            "shift_p": round(float(last["label_shift_p"]), 3), "tau": round(float(last["calibration_temperature"]), 3),
            "safeguard": last.get("safeguard"), "accuracy": round(float(np.mean(pred == y[unl])), 4),
            "majority": round(float(np.bincount(y[unl]).max() / len(unl)), 4)}


if __name__ == "__main__":
    *datasets, lo, hi = sys.argv[1:]
    for ds in datasets:
        for s in range(int(lo), int(hi)):
            print(json.dumps(one(ds, s)), flush=True)
