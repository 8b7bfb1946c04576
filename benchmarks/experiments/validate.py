"""Labelled-only validation of prototype variants (benchmarks/tune.py's protocol).

For tuning seed s (100+), the benchmark's labelled draw is made, a third of the labelled points per
class is hidden (fitted as unlabelled) and the accuracy on them is recorded. Labels of the
unlabelled points are never read. One JSON line per (variant, dataset, seed) is appended to --out.

    python -m benchmarks.experiments.validate --variants base em --datasets synthetic --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks.datasets import DATASETS, labeled_mask
from benchmarks.experiments.variants import VariantClassifier, em_prior
from deepseg.core.train import predict_proba

VARIANTS = {
    "base": ({}, {}),
    "uw100": ({"unlabeled_weight": 100.0}, {}),
    "em": ({}, {"prior": "em"}),
    "em-once": ({}, {"prior": "em", "prior_every": False}),
    "em-out": ({}, {"prior": "em", "prior_out": True}),
    "em-uw100": ({"unlabeled_weight": 100.0}, {"prior": "em"}),
    "em-uw10": ({"unlabeled_weight": 10.0}, {"prior": "em"}),
    "ce": ({}, {"loss": "ce"}),
    "ce-em": ({}, {"loss": "ce", "prior": "em"}),
    "ce-hard-em": ({}, {"loss": "ce", "prior": "em", "target": "hard"}),
    "hard-uw10": ({"unlabeled_weight": 10.0}, {"target": "hard"}),
    "hard-em-uw10": ({"unlabeled_weight": 10.0}, {"target": "hard", "prior": "em"}),
    "em-uw100-f0": ({"unlabeled_weight": 100.0, "tsvm_calibration_folds": 0}, {"prior": "em"}),
    "lr1": ({"retrain_lr_factor": 1.0}, {}),
    "em-lr1": ({"retrain_lr_factor": 1.0}, {"prior": "em"}),
    "em-uw100-ep30": ({"unlabeled_weight": 100.0, "unlabeled_epochs": 30}, {"prior": "em"}),
    "em-uw100-sharp": ({"unlabeled_weight": 100.0}, {"prior": "em", "target": "sharpen", "sharpen_T": 0.5}),
    "em-uw100-hard": ({"unlabeled_weight": 100.0}, {"prior": "em", "target": "hard"}),
    "anneal": ({}, {"cstar_anneal": [0.01, 0.1, 1.0]}),
    "ce-hard-w": ({}, {"loss": "ce", "target": "hard", "weight": "certainty"}),
    "ce-soft-w": ({}, {"loss": "ce", "weight": "certainty"}),
    "ce-hard-w-prod": ({}, {"loss": "ce", "target": "hard", "weight": "certainty", "teacher": "product"}),
    "ce-hard-w-cap2k": ({"unlabeled_rows_per_epoch": 2048}, {"loss": "ce", "target": "hard", "weight": "certainty"}),
    "pi10": ({}, {"consistency": 10.0}),
    "pi100": ({}, {"consistency": 100.0}),
    "pi100-uw100": ({"unlabeled_weight": 100.0}, {"consistency": 100.0}),
    "prod-uw100": ({"unlabeled_weight": 100.0}, {"teacher": "product"}),
    "em-uw100-anneal": ({"unlabeled_weight": 100.0}, {"prior": "em", "cstar_anneal": [0.01, 0.1, 1.0]}),
}


def hidden_split(y, per_class, seed):
    lab = labeled_mask(y, per_class, seed)
    rng = np.random.default_rng(seed + 7)
    hidden = np.zeros_like(lab)
    for k in np.unique(y):
        idx = np.flatnonzero(lab & (y == k))
        hidden[rng.choice(idx, max(1, len(idx) // 3), replace=False)] = True
    return lab, hidden


def run(variant, dataset, seed):
    """One fit; returns its record, plus a '<variant>+out' record (prediction multiplied by
    π̂/π_l and renormalised, same fit) when the variant estimates the prior."""
    params, opts = VARIANTS[variant]
    X, y, per_class = DATASETS[dataset]()
    lab, hidden = hidden_split(y, per_class, seed)
    fit_y = np.where(lab & ~hidden, y, -1)
    t = time.perf_counter()
    clf = VariantClassifier(opts=opts, random_state=seed, **params).fit(X, fit_y)
    acc = float(np.mean(clf.transduction_[hidden] == y[hidden]))
    ok = clf.transduction_[hidden] == y[hidden]
    recall = [float(ok[y[hidden] == k].mean()) for k in clf.classes_]
    # Estimated unlabelled prior (EM on the supervised start's probabilities of the points fitted
    # as unlabelled, training prior = labelled fractions): weights hidden-point recalls to estimate
    # accuracy under the unlabelled class distribution (the hidden points are stratified).
    P0 = predict_proba(clf.model_.supervised, X[fit_y == -1]).astype(np.float64)
    yl = np.searchsorted(clf.classes_, y[fit_y != -1])
    prior0 = em_prior(P0, np.bincount(yl, minlength=len(clf.classes_)) / len(yl))
    rec = {"variant": variant, "dataset": dataset, "seed": seed, "val_acc": acc,
           "recall": recall, "prior0": prior0.tolist(),
           "n_hidden": int(hidden.sum()), "seconds": time.perf_counter() - t,
           "prior": clf.history_[-1].get("prior") if clf.history_ else None}
    out = [rec]
    ratio = getattr(clf.model_, "prior_ratio", None)
    if ratio is not None and not opts.get("prior_out"):
        P = clf.predict_proba(X[hidden]) * ratio
        ok = clf.classes_[P.argmax(axis=1)] == y[hidden]
        out.append({**rec, "variant": variant + "+out", "val_acc": float(ok.mean()),
                    "recall": [float(ok[y[hidden] == k].mean()) for k in clf.classes_]})
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--variants", nargs="+", required=True, choices=list(VARIANTS))
    p.add_argument("--datasets", nargs="+", default=["digits10", "digits5", "wine", "synthetic"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--out", default="benchmarks/experiments/val.jsonl")
    a = p.parse_args(argv)
    done = set()
    if os.path.exists(a.out):
        done = {(r["variant"], r["dataset"], r["seed"]) for r in map(json.loads, open(a.out))}
    for ds in a.datasets:
        for s in range(a.first_seed, a.first_seed + a.seeds):
            for v in a.variants:
                if (v, ds, s) in done:
                    continue
                for r in run(v, ds, s):
                    print(f"{ds:>9} {r['variant']:>16} seed {s}: val {r['val_acc']:.4f} ({r['seconds']:.0f}s)", flush=True)
                    with open(a.out, "a") as fh:
                        fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
