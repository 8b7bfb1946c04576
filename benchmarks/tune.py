"""Choose deepseg's defaults without looking at the labels of unlabelled points.

Protocol (rotating folds): for each tuning seed (100+, disjoint from the benchmark's 0..9), draw
the labelled points as the benchmark does and split them into `--folds` stratified folds. Each
fold in turn is hidden (fitted as unlabelled) and the model is scored on it, so every labelled
point is validated exactly once per seed. Only labels a user would have are ever read.

Candidates are deepseg's defaults (the patent's with --patent; --base overrides either) with one
setting changed at a time (coordinate search), or
the product of `--grid` with `--product`. For every data set the script prints each candidate's
validation accuracy and its difference to the first candidate (the base), paired by seed, with
the standard error of that difference; results are written to `--out`.

    python -m benchmarks.tune --seeds 10 --datasets digits5 synthetic --grid unlabeled_weight --jobs 2
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: python benchmarks/tune.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from benchmarks.datasets import DATASETS, labeled_mask
from deepseg import PATENT_PARAMS, DeepSegmentationClassifier

GRID = {
    "unlabeled_weight": [1.0, 10.0, 100.0],
    "retrain_lr_factor": [0.1, 1.0],
    "unlabeled_epochs": [10, 20, 30],
    "labeled_epochs": [10, 30],
    "C": [0.1, 1.0, 10.0],
    "C_unlabeled": [0.1, 1.0, 3.0, 10.0],
    "ema_decay": [0.0, 0.5, 0.8],
    "supervised_epochs": [50, 100, 200, 400],
    "tsvm_calibration_folds": [0, 3],
    "n_iter": [6, 12],
    "ramp_s": [0.0, -0.3],
    "unlabeled_batch_size": [64, 256],
    "learning_rate": [1e-3, 3e-3],
    "mixup_alpha": [0.0, 1.0, 2.0, 4.0],
    "input_noise": [0.0, 0.1, 0.2, 0.4],
}


def label_folds(y: np.ndarray, labeled: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of each labelled point, stratified by class; -1 elsewhere."""
    rng = np.random.default_rng(seed + 7)
    folds = np.full(len(y), -1)
    for k in np.unique(y[labeled]):
        idx = rng.permutation(np.flatnonzero(labeled & (y == k)))
        folds[idx] = np.arange(len(idx)) % n_folds
    return folds


def make_estimator(params: dict, seed: int):
    """deepseg with `params`; a prototype of benchmarks/experiments when they hold "opts"."""
    if "opts" in params:
        from benchmarks.experiments.variants import VariantClassifier
        return VariantClassifier(random_state=seed, **params)
    return DeepSegmentationClassifier(random_state=seed, **params)


def validation_hits(params: dict, dataset: str, seed: int, n_folds: int) -> tuple[int, int]:
    """(correct, validated) over the labelled points of one seed, each hidden once."""
    X, y, per_class = DATASETS[dataset]()
    lab = labeled_mask(y, per_class, seed)
    folds = label_folds(y, lab, n_folds, seed)
    correct = 0
    for fold in range(n_folds):
        hidden = folds == fold
        fit_y = np.where(lab & ~hidden, y, -1)
        clf = make_estimator(params, seed).fit(X, fit_y)
        correct += int(np.sum(clf.transduction_[hidden] == y[hidden]))
    return correct, int(lab.sum())


def _run(task):
    index, params, dataset, seed, n_folds = task
    t = time.perf_counter()
    correct, n = validation_hits(params, dataset, seed, n_folds)
    return index, dataset, seed, correct / n, time.perf_counter() - t


def grid_values(spec: str) -> tuple[str, list]:
    """'name' (GRID's values) or 'name=v1,v2' (these values, parsed as JSON) -> (name, values)."""
    name, _, values = spec.partition("=")
    if name not in GRID:
        raise argparse.ArgumentTypeError(f"unknown setting {name!r}; choose from {sorted(GRID)}")
    return name, [json.loads(v) for v in values.split(",")] if values else GRID[name]


def candidates_from(base: dict, grid: dict[str, list], product: bool) -> list[dict]:
    if product:
        return [{**base, **dict(zip(grid, values))} for values in itertools.product(*grid.values())]
    current = {**DeepSegmentationClassifier().get_params(), **base}
    return [base] + [{**base, name: value}
                     for name, values in grid.items() for value in values if value != current[name]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS),
                        choices=list(DATASETS))
    parser.add_argument("--base", type=json.loads, default={},
                        help="JSON settings to search around (on top of deepseg's defaults)")
    parser.add_argument("--patent", action="store_true", help="search around the patent's settings")
    parser.add_argument("--grid", nargs="*", type=grid_values, default=[grid_values("unlabeled_weight")],
                        metavar="NAME[=V1,V2]",
                        help=f"settings to vary, with GRID's values or the listed ones: {', '.join(GRID)}")
    parser.add_argument("--product", action="store_true", help="all combinations of --grid, not one at a time")
    parser.add_argument("--variants", nargs="+", default=[],
                        help="prototypes of benchmarks/experiments/validate.py to add as candidates "
                             "(name 'base' is the prototype loop with deepseg's settings)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", default="benchmarks/results/tune.json")
    args = parser.parse_args(argv)

    base = {**(PATENT_PARAMS if args.patent else {}), **args.base}
    candidates = candidates_from(base, dict(args.grid), args.product) if args.grid else [base]
    if args.variants:
        from benchmarks.experiments.validate import VARIANTS
        candidates += [{**base, **VARIANTS[v][0], "opts": {"name": v, **VARIANTS[v][1]}} for v in args.variants]
    tasks = [(i, params, ds, 100 + s, args.folds)
             for ds in args.datasets for s in range(args.seeds) for i, params in enumerate(candidates)]
    acc = np.full((len(candidates), len(args.datasets), args.seeds), np.nan)
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) if args.jobs > 1 else None
    results = pool.map(_run, tasks) if pool else map(_run, tasks)
    for done, (i, ds, seed, a, secs) in enumerate(results, 1):
        acc[i, args.datasets.index(ds), seed - 100] = a
        print(f"[{done}/{len(tasks)} {time.perf_counter() - t0:.0f}s] {ds} seed {seed} candidate {i}: "
              f"validation accuracy {a:.4f} ({secs:.0f}s)", flush=True)
    if pool:
        pool.shutdown()

    report = []
    for i, params in enumerate(candidates):
        changed = {k: v for k, v in params.items() if base.get(k) != v} or "base"
        if "opts" in params:
            changed = {**changed, "opts": params["opts"]["name"]}
        row = {"params": params, "changed": changed, "datasets": {}}
        for d, ds in enumerate(args.datasets):
            diff = acc[i, d] - acc[0, d]
            row["datasets"][ds] = {
                "val_accuracy": float(acc[i, d].mean()),
                "diff_vs_base": float(diff.mean()),
                "diff_se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan"),
                "per_seed": acc[i, d].tolist(),
            }
        row["mean_val_accuracy"] = float(acc[i].mean())
        report.append(row)
    print(f"\n{args.seeds} seeds x {args.folds} rotating folds; difference to the base paired by seed (± s.e.)")
    for row in report:
        cells = "  ".join(f"{ds} {r['val_accuracy']:.4f} ({r['diff_vs_base']:+.4f}±{r['diff_se']:.4f})"
                          for ds, r in row["datasets"].items())
        print(f"{json.dumps(row['changed']):>30}: mean {row['mean_val_accuracy']:.4f} | {cells}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"seeds": args.seeds, "folds": args.folds, "datasets": args.datasets,
                   "seconds": time.perf_counter() - t0, "candidates": report}, fh, indent=1)


if __name__ == "__main__":
    main()
