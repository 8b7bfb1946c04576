"""Choose deepseg's defaults without looking at the labels of unlabelled points.

Protocol: for each tuning seed (100+, disjoint from the benchmark's 0..9), draw the labelled
points as the benchmark does, then hide a third of them per class: the model is fitted with
those hidden too, and scored on them. Only labels a user would have are ever read. Settings
are varied one at a time from the patent's values (coordinate search), and the mean
validation accuracy over datasets and seeds is printed, best last.

    python benchmarks/tune.py --seeds 4 --datasets digits10 wine
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np

from benchmarks.datasets import DATASETS, labelled_mask
from deepseg import PATENT_PARAMS, DeepSegmentationClassifier

GRID = {
    "unlabeled_weight": [1.0, 10.0, 100.0],
    "C": [0.1, 1.0, 10.0],
    "C_unlabeled": [0.1, 1.0, 3.0, 10.0],
    "ema_decay": [0.0, 0.5, 0.8],
    "supervised_epochs": [50, 100, 200],
    "tsvm_calibration_folds": [0, 3],
}


def validation_accuracy(params: dict, dataset: str, seed: int) -> float:
    X, y, per_class = DATASETS[dataset]()
    lab = labelled_mask(y, per_class, seed)
    rng = np.random.default_rng(seed + 7)
    hidden = np.zeros_like(lab)
    for k in np.unique(y):
        idx = np.flatnonzero(lab & (y == k))
        hidden[rng.choice(idx, max(1, len(idx) // 3), replace=False)] = True
    fit_y = np.where(lab & ~hidden, y, -1)
    clf = DeepSegmentationClassifier(random_state=seed, **params).fit(X, fit_y)
    return float(np.mean(clf.transduction_[hidden] == y[hidden]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--datasets", nargs="+", default=["digits10", "wine", "cancer"])
    parser.add_argument("--base", type=json.loads, default={}, help="JSON settings to search around")
    parser.add_argument("--grid", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--product", action="store_true", help="all combinations of --grid, not one at a time")
    parser.add_argument("--out", default="benchmarks/results/tune.json")
    args = parser.parse_args(argv)

    base = {**PATENT_PARAMS, **args.base}
    if args.product:
        candidates = [{**base, **dict(zip(args.grid, values))}
                      for values in itertools.product(*(GRID[name] for name in args.grid))]
    else:
        candidates = [base] + [
            {**base, name: value} for name in args.grid for value in GRID[name] if value != base.get(name)
        ]
    results = []
    for params in candidates:
        t = time.perf_counter()
        accs = [
            validation_accuracy(params, ds, 100 + s)
            for ds, s in itertools.product(args.datasets, range(args.seeds))
        ]
        results.append({"params": params, "val_accuracy": float(np.mean(accs)), "seconds": time.perf_counter() - t})
        changed = {k: v for k, v in params.items() if base.get(k) != v} or "patent"
        print(f"{changed}: validation accuracy {np.mean(accs):.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
    results.sort(key=lambda r: r["val_accuracy"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
    print("best:", results[-1])


if __name__ == "__main__":
    main()
