"""Seconds of one default fit on wide sparse input, and on digits (issue 19's acceptance figures).

    python -m benchmarks.sparse_fit                     # 20,000 x 10,000 CSR, 1% non-zero, 100 labels; digits
    python -m benchmarks.sparse_fit --classes 10 --rows 20000 --cols 10000 --density 0.01 --labels 100
    python -m benchmarks.sparse_fit --profile           # + the 25 costliest functions (cProfile) of the sparse fit
    python -m benchmarks.sparse_fit --sparse-components none   # f's first layer on the raw columns

The sparse set is generated (seeded): c classes, each row ~density·cols non-zeros drawn from a
class-specific topic over the columns mixed with a shared background (`--signal`, the topic's share),
TF-IDF-like positive values, columns scaled to unit second moment (StandardScaler(with_mean=False):
centring would densify). `--labels` labelled rows in total, stratified (the same count per class).
`DeepSegmentationClassifier(random_state=0)` with its defaults is fitted once on the CSR matrix (by
default reduced to 256 dimensions inside the fit: deepseg.core.lsa; `--sparse-components`); the
script prints wall-clock seconds (fit only, the reduction included; data generation apart), the process's CPU seconds (on a
shared machine, closer to what an idle one would take), the per-step seconds from
`history_`, accuracy on the unlabelled rows, the load average before and after, and torch's threads.
Digits: load_digits standardised, 10 labels per class, the same estimator.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import time
import warnings

import numpy as np
import scipy.sparse as sp


def make_sparse(rows: int, cols: int, density: float, classes: int, signal: float, seed: int = 0):
    """(X CSR float32, y): bag-of-words-like rows of `classes` topics (see the module doc)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    # topic k: a Dirichlet distribution concentrated on its own random tenth of the columns
    topics = np.zeros((classes, cols))
    for k in range(classes):
        own = rng.choice(cols, max(1, cols // 10), replace=False)
        topics[k, own] = rng.gamma(0.5, size=len(own))
        topics[k] /= topics[k].sum()
    background = rng.gamma(0.5, size=cols)
    background /= background.sum()
    per_row = np.maximum(1, rng.poisson(density * cols, rows))
    indptr = np.concatenate([[0], np.cumsum(per_row)])
    indices = np.empty(indptr[-1], dtype=np.int64)
    for k in range(classes):
        mix = signal * topics[k] + (1 - signal) * background
        members = np.flatnonzero(y == k)
        draws = rng.choice(cols, size=int(per_row[members].sum()), p=mix)
        pos = np.concatenate([np.arange(indptr[i], indptr[i + 1]) for i in members])
        indices[pos] = draws
    data = rng.exponential(1.0, size=len(indices)).astype(np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(rows, cols))
    X.sum_duplicates()
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler(with_mean=False).fit_transform(X).astype(np.float32).tocsr()
    return X, y


def stratified_labels(y: np.ndarray, n_labels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    out = np.full(len(y), -1)
    for k in classes:
        pick = rng.choice(np.flatnonzero(y == k), n_labels // len(classes), replace=False)
        out[pick] = k
    return out


def timed_fit(X, y_semi, y_true, profile: bool = False, **params) -> dict:
    from deepseg import DeepSegmentationClassifier

    clf = DeepSegmentationClassifier(random_state=0, **params)
    load_before = os.getloadavg()
    t, cpu = time.perf_counter(), time.process_time()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        clf.fit(X, y_semi)
        prof.disable()
    else:
        clf.fit(X, y_semi)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    unl = y_semi == -1
    steps = {k: round(sum(h.get(k, 0.0) for h in clf.history_), 1) for k in ("embed_s", "tsvm_s", "retrain_s")}
    last = clf.history_[-1]
    out = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), **steps, "safeguard_s": round(last.get("safeguard_s", 0.0), 1),
           "safeguard": last.get("safeguard"), "unlabeled_epochs": last.get("unlabeled_epochs"),
           "reduced_to": None if clf.reduction_ is None else clf.reduction_.components.shape[0],
           "accuracy_unlabelled": round(float(np.mean(clf.transduction_[unl] == y_true[unl])), 4),
           "load_before": [round(v, 2) for v in load_before],
           "load_after": [round(v, 2) for v in os.getloadavg()]}
    if profile:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--cols", type=int, default=10000)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--labels", type=int, default=100, help="labelled rows in total (stratified)")
    parser.add_argument("--signal", type=float, default=0.3, help="share of a row's words from its class topic")
    parser.add_argument("--sparse-components", default="256",
                        help="the estimator's sparse_components (\"none\": no reduction)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-digits", action="store_true")
    parser.add_argument("--no-sparse", action="store_true")
    args = parser.parse_args(argv)
    import torch

    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()} (the fit uses num_threads=1), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
    if not args.no_sparse:
        t = time.perf_counter()
        X, y = make_sparse(args.rows, args.cols, args.density, args.classes, args.signal)
        y_semi = stratified_labels(y, args.labels)
        print(f"sparse: {X.shape[0]} x {X.shape[1]} CSR, {X.nnz / np.prod(X.shape):.2%} non-zero, "
              f"{args.classes} classes, {int((y_semi >= 0).sum())} labels; generated in "
              f"{time.perf_counter() - t:.1f}s", flush=True)
        k = None if args.sparse_components.lower() == "none" else int(args.sparse_components)
        print(f"sparse fit (sparse_components={k}):", timed_fit(X, y_semi, y, args.profile, sparse_components=k),
              flush=True)
    if not args.no_digits:
        from sklearn.datasets import load_digits
        from sklearn.preprocessing import StandardScaler

        Xd, yd = load_digits(return_X_y=True)
        Xd = StandardScaler().fit_transform(Xd).astype(np.float32)
        print("digits fit (10 labels per class):", timed_fit(Xd, stratified_labels(yd, 100), yd), flush=True)


if __name__ == "__main__":
    main()
