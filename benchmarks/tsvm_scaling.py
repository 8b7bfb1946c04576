"""How the one-vs-rest TSVM scales: seconds for 5 classes × 32 dims from 100k to 1M points.

Prints one line per size with seconds, points/s and the ratio to the smallest size (linear
scaling gives time ratio = size ratio), and scikit-learn's supervised LinearSVC on the same
rows for reference.

    python -m benchmarks.tsvm_scaling [--sizes 100000 300000 1000000] [--no-linearsvc]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from deepseg.core.ovr import fit_ovr_tsvm


def embedded_users(n: int, n_classes: int = 5, dims: int = 32, seed: int = 0):
    """Embedding-like data: tanh of noisy class centres, unequal class shares."""
    rng = np.random.default_rng(seed)
    shares = np.linspace(1.0, 2.0, n_classes)
    y = rng.choice(n_classes, size=n, p=shares / shares.sum())
    centres = rng.normal(scale=1.0, size=(n_classes, dims))
    Z = np.tanh(centres[y] + rng.normal(scale=0.8, size=(n, dims))).astype(np.float32)
    return Z, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--labelled-per-class", type=int, default=50)
    parser.add_argument("--no-linearsvc", action="store_true")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}")
    base = None
    for n in args.sizes:
        Z, y = embedded_users(n)
        lab = np.zeros(n, bool)
        for k in range(5):
            lab[np.flatnonzero(y == k)[: args.labeled_per_class]] = True
        t = time.perf_counter()
        model = fit_ovr_tsvm(Z[lab], y[lab], Z[~lab], 5)
        secs = time.perf_counter() - t
        acc = np.mean(model.decision_function(Z[~lab]).argmax(axis=1) == y[~lab])
        base = base or (n, secs)
        line = (f"n={n:>9,d}  OvR TSVM {secs:7.2f}s  {n / secs:>12,.0f} points/s  "
                f"time ratio {secs / base[1]:5.2f} for size ratio {n / base[0]:5.1f}  "
                f"CCCP rounds {[s.n_iter for s in model.separators]}  accuracy {acc:.3f}")
        if not args.no_linearsvc:
            from sklearn.svm import LinearSVC

            t = time.perf_counter()
            LinearSVC().fit(Z, y)  # supervised, all labels: the reference cost of one OvR linear SVM
            line += f"  | sklearn LinearSVC {time.perf_counter() - t:7.2f}s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
