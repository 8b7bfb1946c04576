"""Accuracy on real data (issue 19): deepseg against supervised and semi-supervised peers.

    python -m benchmarks.accuracy                      # every set of benchmarks/realdata.py, 10 and 100
                                                       # labels per class, 10 seeds, every method
    python -m benchmarks.accuracy --quick --jobs 2     # 2 seeds, two worker processes
    python -m benchmarks.accuracy --datasets attrition,austen --protocols 10 --methods logreg,deepseg --seeds 3
    python -m benchmarks.accuracy --seeds 0,1,2        # add seeds: cells already in the results are kept
    python -m benchmarks.accuracy --from-json          # rewrite the report from the saved results
    python -m benchmarks.accuracy --suite toy          # the earlier sklearn-toy + synthetic suite

Protocol: `benchmarks.realdata.split` draws, per seed, 10 or 100 labelled points per class (for the
imbalanced sets 10*c or 100*c in total, in proportion to the population); every other point is
unlabelled and every metric is computed on those (transductive). Each method sees the same split.

Resumable: every finished (data set, protocol, seed, method) is written at once to the results JSON
(`benchmarks/results/realdata.json`) with a fingerprint of what produced it (the method's settings,
the code of the deepseg modules it ran, not their docstrings or comments, library versions, the
data set's artefact checksum, the input preparation). A run skips what is already there with the same fingerprint, so an interrupted
run continues, and a later run with more seeds only adds them. Records of another fingerprint stay
in the file but are neither reused nor reported.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: python benchmarks/accuracy_real.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import ast
import datetime
import functools
import hashlib
import json
import math
import shlex
import time
import traceback
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "realdata.json")
REPORT = os.path.join(ROOT, "docs", "benchmarks.md")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: Bump when the harness changes what a record means (split, scoring, input preparation).
HARNESS_VERSION = 1

#: Methods in table order. "supervised-start" is read off the "deepseg" fit (its iteration 0).
METHODS = ("logreg", "hgb", "mlp", "label-spreading", "self-training", "supervised-start",
           "deepseg-patent", "deepseg")
SUPERVISED_PEERS = ("logreg", "hgb", "mlp")
PEERS = tuple(m for m in METHODS if m != "deepseg")
PROTOCOLS = (10, 100)

DESCRIPTIONS = {
    "logreg": "`LogisticRegression(max_iter=1000)` on the labelled points (sparse input as CSR)",
    "hgb": "`HistGradientBoostingClassifier(min_samples_leaf=max(1, min(20, n_labelled // 10)), "
           "random_state=seed)` on the labelled points: scikit-learn's default leaf size of 20 would "
           "leave a tree of 20 labelled points without a split; the rule reads only the number of labelled "
           "points (dense input: a sparse set is densified, see below)",
    "mlp": "`MLPClassifier((128, 32), activation='tanh', random_state=seed)` on the labelled points "
           "(scikit-learn defaults otherwise; sparse input as CSR)",
    "label-spreading": "`LabelSpreading(kernel='knn')` (scikit-learn defaults: 7 neighbours, α = 0.2), "
                       "its transductive `label_distributions_`",
    "self-training": "`SelfTrainingClassifier(LogisticRegression(max_iter=1000))` (threshold 0.75, "
                     "10 rounds: scikit-learn defaults)",
    "supervised-start": "deepseg's own supervised start: g∘f after its 200 labelled epochs, before the "
                        "linear teacher, read off the `deepseg` fit (`model_.labeled_only`; identical to "
                        "`DeepSegmentationClassifier(n_iter=0)` with the same seed)",
    "deepseg-patent": "`DeepSegmentationClassifier(**PATENT_PARAMS, random_state=seed)`",
    "deepseg": "`DeepSegmentationClassifier(random_state=seed)`: the current defaults",
}
SHORT = {"logreg": "LR", "hgb": "HGB", "mlp": "MLP", "label-spreading": "LS kNN", "self-training": "ST (LR)",
         "supervised-start": "sup. start", "deepseg-patent": "patent", "deepseg": "deepseg"}

#: With `--sparse raw`, methods that need dense input get X.toarray() (float32), timed apart.
DENSE_ONLY = {"hgb"}

#: deepseg's fits: with `--sparse raw` or `deepseg-raw` they get the CSR matrix times one global scale
#: (`globally_scaled`; deepseg takes scipy.sparse without densifying it).
DEEPSEG_METHODS = {"deepseg", "deepseg-patent", "supervised-start"}

#: How the sparse (TF-IDF) sets are given to the methods: "svd256", a label-free reduction to 256
#: dimensions that every method gets (see `reduced`); "raw", the CSR matrix to the methods that take
#: it (deepseg's scaled by `globally_scaled`) and its densified copy to HGB; "deepseg-raw", the
#: (scaled) CSR matrix to deepseg's fits and the reduction to every other method.
SPARSE_POLICIES = ("svd256", "raw", "deepseg-raw")
SVD_DIMS = 256
_SPARSE = {"policy": "svd256"}  # set by main(), passed to the workers with each task


# ---------------------------------------------------------------------------------------------
# Fingerprints (what makes a stored record reusable)
# ---------------------------------------------------------------------------------------------


def _code_without_docstrings(source: bytes) -> bytes:
    """The module's syntax tree without its docstrings (comments and layout are not in it): what
    the code does, so that editing documentation keeps the stored results."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


@functools.cache
def _deepseg_source_hash() -> str:
    """sha256 over the code (docstrings, comments and layout left out) of every deepseg module that
    the estimator imports."""
    import deepseg.baselines  # noqa: F401
    import deepseg.classifier  # noqa: F401

    h = hashlib.sha256()
    for name in sorted(n for n in sys.modules if n == "deepseg" or n.startswith("deepseg.")):
        path = getattr(sys.modules[name], "__file__", None)
        if path and path.endswith(".py") and os.path.exists(path):
            h.update(name.encode())
            with open(path, "rb") as fh:
                h.update(_code_without_docstrings(fh.read()))
    return h.hexdigest()[:16]


@functools.cache
def _versions() -> dict:
    import scipy
    import sklearn

    out = {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def method_spec(method: str) -> str:
    """A description of the method's settings that changes whenever they do (seed excluded)."""
    if method in ("deepseg", "deepseg-patent", "supervised-start"):
        from deepseg import PATENT_PARAMS, DeepSegmentationClassifier

        params = PATENT_PARAMS if method == "deepseg-patent" else {}
        est = DeepSegmentationClassifier(**params)
        return f"{method}:{sorted(est.get_params().items())!r}:src={_deepseg_source_hash()}"
    est = make_estimator(method, seed=0, n_labelled=0)
    params = {k: v for k, v in est.get_params(deep=True).items() if "random_state" not in k
              and k != "min_samples_leaf"}
    rule = "min_samples_leaf=max(1,min(20,n_labelled//10))" if method == "hgb" else ""
    return f"{method}:{type(est).__name__}:{sorted((k, repr(v)) for k, v in params.items())!r}{rule}"


def fingerprint(dataset: str, method: str) -> str:
    from benchmarks import realdata

    art = realdata.ARTEFACTS[realdata.DATASETS[dataset].artefact]
    blob = json.dumps({
        "harness": HARNESS_VERSION, "method": method_spec(method), "versions": _versions(),
        "data": art.sha256, "input": input_policy(dataset, method),
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------


def input_policy(dataset: str, method: str, sparse_policy: str | None = None) -> str:
    """How `method` sees the features of `dataset`: "as is"; for a sparse set under "raw", "sparse CSR"
    (scaled for deepseg) or "densified"; under "svd256", the reduction (the same for every method);
    under "deepseg-raw", the scaled CSR for deepseg's fits and the reduction for the others."""
    from benchmarks import realdata

    policy = sparse_policy or _SPARSE["policy"]
    if "sparse" not in realdata.DATASETS[dataset].kinds:
        return "as is"
    if policy == "svd256" or (policy == "deepseg-raw" and method not in DEEPSEG_METHODS):
        return f"TruncatedSVD({SVD_DIMS}) of all rows, rows L2-normalised, centred, one global scale"
    if method in DEEPSEG_METHODS:
        return "sparse CSR times one global scale (mean column variance 1)"
    return "densified" if method in DENSE_ONLY else "sparse CSR"


def globally_scaled(X):
    """CSR `X` times one common factor so that the mean column variance is 1 (label-free; no
    centring, which would densify, and no per-column scaling, which would blow up rare words):
    the scale deepseg's first layer expects, as `reduced` gives the SVD."""
    X = X.tocsr().astype(np.float32)
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0)).ravel()
    mean_sq = np.asarray(X.multiply(X).sum(axis=0)).ravel() / n
    var = float(np.mean(mean_sq - mean ** 2))
    return (X * np.float32(1.0 / np.sqrt(var))).tocsr() if var > 0 else X


def reduced(dataset: str) -> np.ndarray:
    """The label-free reduction of a sparse set (latent semantic analysis): TruncatedSVD to SVD_DIMS
    dimensions (randomized, random_state=0) fitted on all rows; rows L2-normalised (as the TF-IDF
    rows are, so that Euclidean neighbours are cosine neighbours; an empty row stays 0); columns
    centred, then divided by one common scale so that the mean column variance is 1 (no per-column
    scaling: distances keep their geometry). Cached next to the data (`$DEEPSEG_BENCH_DATA/reduced`)."""
    from benchmarks import realdata

    art = realdata.ARTEFACTS[realdata.DATASETS[dataset].artefact]
    path = realdata.cache_dir() / "reduced" / f"{dataset}-svd{SVD_DIMS}-l2-{art.sha256[:12]}.npy"
    if path.exists():
        return np.load(path)
    from sklearn.decomposition import TruncatedSVD

    t = time.perf_counter()
    X = realdata.load(dataset)[0]
    Z = TruncatedSVD(SVD_DIMS, algorithm="randomized", n_iter=7, random_state=0).fit_transform(X)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z = Z / np.where(norms > 0, norms, 1.0)
    Z -= Z.mean(axis=0)
    Z /= np.sqrt(Z.var(axis=0).mean())
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, Z)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"seconds": round(time.perf_counter() - t, 1)}))
    return Z


def reduction_seconds(dataset: str) -> float | None:
    """Seconds that computing the cached reduction took (data loading included), if recorded."""
    from benchmarks import realdata

    art = realdata.ARTEFACTS[realdata.DATASETS[dataset].artefact]
    path = realdata.cache_dir() / "reduced" / f"{dataset}-svd{SVD_DIMS}-l2-{art.sha256[:12]}.json"
    try:
        return json.loads(path.read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        return None


def hgb_min_samples_leaf(n_labelled: int) -> int:
    return max(1, min(20, n_labelled // 10))


def make_estimator(method: str, seed: int, n_labelled: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

    if method == "logreg":
        return LogisticRegression(max_iter=1000)
    if method == "hgb":
        return HistGradientBoostingClassifier(min_samples_leaf=hgb_min_samples_leaf(n_labelled), random_state=seed)
    if method == "mlp":
        return MLPClassifier((128, 32), activation="tanh", random_state=seed)
    if method == "label-spreading":
        return LabelSpreading(kernel="knn")
    if method == "self-training":
        return SelfTrainingClassifier(LogisticRegression(max_iter=1000))
    from deepseg import PATENT_PARAMS, DeepSegmentationClassifier

    if method == "deepseg":
        return DeepSegmentationClassifier(random_state=seed)
    if method == "deepseg-patent":
        return DeepSegmentationClassifier(**PATENT_PARAMS, random_state=seed)
    if method == "supervised-start":  # only when it is asked for without "deepseg"
        return DeepSegmentationClassifier(n_iter=0, random_state=seed)
    raise ValueError(f"unknown method {method!r}")


def _limit_threads() -> None:
    """One thread per process for BLAS/OpenMP and torch (workers run side by side)."""
    for k in THREAD_VARS:
        os.environ.setdefault(k, "1")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@functools.cache
def _warm_up() -> None:
    """One tiny deepseg fit per process, so torch's first-call set-up is not timed."""
    from deepseg import DeepSegmentationClassifier

    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.where(np.arange(64) < 8, np.arange(64) % 2, -1)
    DeepSegmentationClassifier(supervised_epochs=2, n_iter=1, unlabeled_epochs=1, labeled_epochs=1).fit(X, y)


def run_task(dataset: str, per_class: int, seed: int, method: str, fingerprints: dict,
             sparse_policy: str = "svd256") -> list[dict]:
    """Fit `method` on one seeded split and score it on the unlabelled points.

    Returns one record, or two for "deepseg" (its supervised start too). A failure is a record
    with `error` set and no scores.
    """
    import scipy.sparse as sp

    from benchmarks import realdata
    from benchmarks.metrics import score

    _limit_threads()
    _SPARSE["policy"] = sparse_policy
    X, y, lab, unl = realdata.split(dataset, per_class, seed)
    c = int(y.max()) + 1
    base = {
        "dataset": dataset, "protocol": per_class, "seed": seed, "n_labelled": int(len(lab)),
        "n_unlabelled": int(len(unl)),
        "majority_unlabelled": float(np.bincount(y[unl], minlength=c).max() / len(unl)),
    }
    record = {**base, "method": method, "config": fingerprints[method], "input": input_policy(dataset, method)}
    try:
        if method.startswith("deepseg") or method == "supervised-start":
            _warm_up()
        t0 = time.perf_counter()
        if sp.issparse(X) and (sparse_policy == "svd256"
                               or (sparse_policy == "deepseg-raw" and method not in DEEPSEG_METHODS)):
            X = reduced(dataset)
        elif sp.issparse(X) and method in DEEPSEG_METHODS:
            X = globally_scaled(X)
        elif sp.issparse(X) and method in DENSE_ONLY:
            if method == "hgb":  # fitted on the labelled rows only: densify those, predict in chunks
                X_fit, X_unl = X[lab].toarray(), X[unl]
            else:
                X = X.toarray()
        prep_s = time.perf_counter() - t0
        est = make_estimator(method, seed, len(lab))
        y_semi = np.full(len(y), -1, dtype=np.int64)
        y_semi[lab] = y[lab]
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if method in ("logreg", "hgb", "mlp"):
                if method == "hgb" and sp.issparse(X):
                    est.fit(X_fit, y[lab])
                    P = np.vstack([est.predict_proba(X_unl[i:i + 1024].toarray())
                                   for i in range(0, X_unl.shape[0], 1024)])
                else:
                    est.fit(X[lab], y[lab])
                    P = est.predict_proba(X[unl])
            elif method == "label-spreading":
                est.fit(X, y_semi)
                P = est.label_distributions_[unl]
            else:
                est.fit(X, y_semi)
                P = est.predict_proba(X[unl])
        seconds = time.perf_counter() - t
        record.update(score(y[unl], P, est.classes_), seconds=seconds, prep_s=prep_s)
        record["warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:100]}" for w in caught})[:5]
        out = [record]
        if method == "deepseg":
            from deepseg.core.train import predict_proba

            X_u = X[unl]
            start = est.model_.labeled_only if est.model_.labeled_only is not None else est.model_.supervised
            P0 = predict_proba(start, X_u)  # the labelled users' network, before the linear teacher
            staged = [predict_proba(est.model_.supervised, X_u), *est.staged_predict_proba(X_u)]
            record["accuracy_per_iteration"] = [float(np.mean(est.classes_[p.argmax(axis=1)] == y[unl]))
                                                for p in staged]
            record["history"] = [{k: v for k, v in h.items() if k in ("iteration", "agreement", "class_shares",
                                                                        "input_noise", "unlabeled_epochs",
                                                                        "safeguard", "cv_accuracy_start",
                                                                        "cv_accuracy_deepseg")}
                                 for h in est.history_]
            if "supervised-start" in fingerprints:
                out.append({**base, "method": "supervised-start", "config": fingerprints["supervised-start"],
                            "input": input_policy(dataset, "supervised-start"),
                            **score(y[unl], P0, est.classes_), "seconds": None, "prep_s": prep_s,
                            "note": "read off the deepseg fit (iteration 0)"})
        return out
    except Exception as e:  # noqa: BLE001 - a failed method is a result ("n/a"), not a crash
        record["error"] = f"{type(e).__name__}: {e}"[:300]
        record["traceback"] = traceback.format_exc()[-1500:]
        return [record]


# ---------------------------------------------------------------------------------------------
# The results file
# ---------------------------------------------------------------------------------------------


def _key(r: dict) -> tuple:
    return r["dataset"], int(r["protocol"]), int(r["seed"]), r["method"]


def load_results(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {"meta": {}, "results": []}


def save_results(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=0)
    os.replace(tmp, path)


def current(results: list[dict], fingerprints: dict[tuple[str, str], str]) -> list[dict]:
    """The records whose fingerprint is the current one (the last such record per key)."""
    by_key = {}
    for r in results:
        if fingerprints.get((r["dataset"], r["method"])) == r.get("config") and "error" not in r:
            by_key[_key(r)] = r
    return list(by_key.values())


# ---------------------------------------------------------------------------------------------
# Summary and report
# ---------------------------------------------------------------------------------------------


def _mean_se(v) -> tuple[float, float, int]:
    v = np.asarray(v, dtype=float)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se, len(v)


def summarise(records: list[dict]) -> dict:
    """{(dataset, protocol): {"methods": {m: {accuracy, macro_f1, seconds...}}, "majority", paired diffs}}.

    A cell uses only the seeds that every method in it has (so that the methods are compared on
    the same splits: an interrupted run, or one method's failure on a seed, leaves a seed out);
    `dropped_seeds` lists the others.
    """
    cells: dict = {}
    for r in records:
        cells.setdefault((r["dataset"], int(r["protocol"])), []).append(r)
    out = {}
    for cell, rs in cells.items():
        seeds_by_m: dict = {}
        for r in rs:
            seeds_by_m.setdefault(r["method"], set()).add(r["seed"])
        common = set.intersection(*seeds_by_m.values())
        dropped = sorted(set.union(*seeds_by_m.values()) - common)
        rs = [r for r in rs if r["seed"] in common]
        by_m: dict = {}
        for r in rs:
            by_m.setdefault(r["method"], []).append(r)
        methods = {}
        for m, runs in by_m.items():
            secs = [r["seconds"] for r in runs if r.get("seconds") is not None]
            methods[m] = {
                "accuracy": _mean_se([r["accuracy"] for r in runs]),
                "macro_f1": _mean_se([r["macro_f1"] for r in runs]),
                "seconds": float(np.mean(secs)) if secs else None,
                "prep_s": float(np.mean([r.get("prep_s") or 0.0 for r in runs])),
                "seeds": sorted(r["seed"] for r in runs),
                "input": runs[0].get("input", "as is"),
            }
            curves = [r["accuracy_per_iteration"] for r in runs if "accuracy_per_iteration" in r]
            # a fit whose safeguard kept the supervised start has a shorter curve (start, answer): left out
            curves = [c for c in curves if len(c) == max(map(len, curves))]
            if curves:
                methods[m]["accuracy_per_iteration"] = np.mean(curves, axis=0).tolist()
        majority = {r["seed"]: r["majority_unlabelled"] for r in rs}
        out[cell] = {"methods": methods, "majority": float(np.mean(list(majority.values()))),
                     "seeds": sorted(common), "dropped_seeds": dropped,
                     "n_labelled": int(np.mean([r["n_labelled"] for r in rs])),
                     "n_unlabelled": int(np.mean([r["n_unlabelled"] for r in rs]))}
        # deepseg - supervised start, paired over the seeds both have
        acc = {m: {r["seed"]: r["accuracy"] for r in runs} for m, runs in by_m.items()}
        if "deepseg" in acc and "supervised-start" in acc:
            common = sorted(set(acc["deepseg"]) & set(acc["supervised-start"]))
            if common:
                out[cell]["deepseg_minus_start"] = _mean_se(
                    [acc["deepseg"][s] - acc["supervised-start"][s] for s in common])
    return out


def acceptance(summary: dict) -> dict:
    """The issue's acceptance figures over the cells that have deepseg and every peer."""
    from benchmarks import realdata

    rows, skipped = [], []
    for (ds, proto), cell in sorted(summary.items(), key=lambda kv: _cell_order(kv[0])):
        ms = cell["methods"]
        if "deepseg" not in ms:
            continue
        d = ms["deepseg"]["accuracy"][0]
        sup = {m: ms[m]["accuracy"][0] for m in SUPERVISED_PEERS if m in ms}
        allp = {m: ms[m]["accuracy"][0] for m in PEERS if m in ms}
        row = {"dataset": ds, "protocol": proto, "deepseg": d, "majority": cell["majority"],
               "proportional": realdata.DATASETS[ds].proportional, "n_seeds": len(ms["deepseg"]["seeds"]),
               "missing_peers": [m for m in PEERS if m not in ms]}
        if "deepseg_minus_start" in cell:
            row["minus_start"] = cell["deepseg_minus_start"]
        if sup:
            best = max(sup, key=sup.get)
            row["best_supervised"] = (best, sup[best])
        if allp:
            best = max(allp, key=allp.get)
            row["best_peer"] = (best, allp[best])
        rows.append(row)
        if row["missing_peers"]:
            skipped.append((ds, proto))
    n = len(rows)
    diffs = [r["minus_start"][0] for r in rows if "minus_start" in r]
    ge_sup = [r for r in rows if "best_supervised" in r and r["deepseg"] >= r["best_supervised"][1]]
    ge_all = [r for r in rows if "best_peer" in r and r["deepseg"] >= r["best_peer"][1]]
    below = [r for r in rows if r["deepseg"] < r["majority"]]
    return {
        "rows": rows, "n_cells": n, "incomplete_cells": skipped,
        "mean_minus_start": float(np.mean(diffs)) if diffs else float("nan"),
        "cells_below_start_by_half_point": [r for r in rows if "minus_start" in r and r["minus_start"][0] < -0.005],
        "ge_best_supervised": len(ge_sup), "n_with_supervised": sum("best_supervised" in r for r in rows),
        "ge_best_peer": len(ge_all), "n_with_peer": sum("best_peer" in r for r in rows),
        "below_majority": below,
        "below_majority_proportional": [r for r in below if r["proportional"]],
        "n_proportional": sum(r["proportional"] for r in rows),
    }


def _cell_order(cell) -> tuple:
    from benchmarks import realdata

    names = list(realdata.DATASETS)
    return (names.index(cell[0]) if cell[0] in names else len(names), cell[0], cell[1])


def _cells(rows) -> str:
    return ", ".join(f"{r['dataset']} {r['protocol']}" for r in rows)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _pm(mean_se) -> str:
    m, se, n = mean_se
    return f"{100 * m:.1f} ± {100 * se:.1f}" if n > 1 else f"{100 * m:.1f}"


def _protocol_label(ds: str, proto: int) -> str:
    from benchmarks import realdata

    return f"{proto}×c total" if realdata.DATASETS[ds].proportional else f"{proto}/class"


def report_lines(summary: dict, meta: dict, methods: list[str], errors: list[dict] = ()) -> list[str]:
    acc = acceptance(summary)
    cells = sorted(summary, key=_cell_order)
    seeds_all = sorted({s for c in summary.values() for m in c["methods"].values() for s in m["seeds"]})
    lines = [
        "# Accuracy benchmark: deepseg on real data",
        "",
        "Generated by `benchmarks/accuracy_real.py` (`make bench-accuracy`); do not edit by hand. Issue 19, item 1.",
        "",
        f"- Command(s): {'; '.join(f'`{c}`' for c in meta.get('commands', [])[-6:])}",
        f"- Date of the last run: {meta.get('date', '?')}",
        f"- Machine: {', '.join(sorted({r.get('cpu', '?') for r in meta.get('runs', [])}) or ['?'])}; "
        f"{meta.get('machine', {}).get('cpu_count', '?')} logical CPUs, shared with other work while measured; "
        f"{meta.get('machine', {}).get('platform', '?')}",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        + "; one thread per worker process (OMP/MKL/OpenBLAS and torch)",
        f"- Seeds: {', '.join(map(str, seeds_all))}; per cell the seeds that every method has (column *seeds*)"
        + ("; left out as incomplete: " + ", ".join(f"{c[0]} {c[1]}: {summary[c]['dropped_seeds']}" for c in cells
                                                    if summary[c]["dropped_seeds"]) if any(
            summary[c]["dropped_seeds"] for c in cells) else ""),
        f"- Wall time of the runs that produced these results: {meta.get('wall_s_total', 0) / 60:.1f} min in all "
        f"({meta.get('jobs', '?')} worker processes in the last run)",
        "",
        "## Protocol",
        "",
        "Thirteen public data sets fetched, checksummed and featurised by `benchmarks/realdata.py` (its "
        "docstring: sources, features built without labels; `python -m benchmarks.realdata --list`). For each "
        "seed, `realdata.split` draws 10 or 100 labelled points per class, or for the imbalanced sets "
        "(majority ≥ 80%: attrition, mobile-churn, lending-club, stackoverflow, caravan) 10·c or 100·c in total "
        "in proportion to the population (column *labels*: `10/class` or `10×c total`). Every other point is "
        "unlabelled; every method sees the same split and is scored on the unlabelled points (transductive). "
        "Cells are mean ± standard error over seeds of the accuracy in %; *majority* is the share of the "
        "largest class among the unlabelled points. Bold: the best mean of the row.",
        "",
        "Methods:",
        "",
        *[f"- **{m}** ({SHORT[m]}): {DESCRIPTIONS[m]}" for m in methods],
        "",
        *sparse_paragraph(summary, meta),
        "",
        "## Accuracy on the unlabelled points (%)",
        "",
        "| data set | labels | seeds | majority | " + " | ".join(SHORT[m] for m in methods) + " |",
        "|---|---|---:|---:|" + "---:|" * len(methods),
    ]
    for cell in cells:
        ds, proto = cell
        ms = summary[cell]["methods"]
        means = {m: ms[m]["accuracy"][0] for m in methods if m in ms}
        best = max(means.values()) if means else None
        row = []
        for m in methods:
            if m not in ms:
                row.append(meta.get("na", {}).get(f"{ds}/{proto}/{m}", "n/a"))
                continue
            text = _pm(ms[m]["accuracy"])
            row.append(f"**{text}**" if means[m] == best else text)
        lines.append(f"| {ds} | {_protocol_label(ds, proto)} | {len(summary[cell]['seeds'])} | "
                     f"{_pct(summary[cell]['majority'])} | " + " | ".join(row) + " |")
    if any(m not in summary[c]["methods"] for c in cells for m in methods):
        lines += ["", "n/a: not run, or failed on every seed."]
    failed = sorted({(e["dataset"], e["protocol"], e["method"], e["error"][:160]) for e in errors})
    if failed:
        lines += ["", "Failed fits (not in the means): " + "; ".join(
            f"{ds} {p} {m}: {err}" for ds, p, m, err in failed) + "."]
    lines.append("")

    # acceptance
    lines += [
        "## Acceptance figures (issue 19)",
        "",
        "Per cell (means over seeds, points of accuracy): deepseg defaults − its supervised start (± standard "
        "error of the paired difference), and deepseg − the best supervised peer (LR, HGB, MLP) and − the best "
        "peer of all (every other method in the table, deepseg's supervised start and `PATENT_PARAMS` included).",
        "",
        "| data set | labels | deepseg | − sup. start | − best supervised peer | − best peer | below majority |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in acc["rows"]:
        ms = r.get("minus_start")
        bs, bp = r.get("best_supervised"), r.get("best_peer")
        lines.append(
            f"| {r['dataset']} | {_protocol_label(r['dataset'], r['protocol'])} | {_pct(r['deepseg'])} | "
            + (f"{100 * ms[0]:+.1f} ± {100 * ms[1]:.1f}" if ms and ms[2] > 1 else (f"{100 * ms[0]:+.1f}" if ms else "n/a"))
            + " | " + (f"{100 * (r['deepseg'] - bs[1]):+.1f} ({SHORT[bs[0]]})" if bs else "n/a")
            + " | " + (f"{100 * (r['deepseg'] - bp[1]):+.1f} ({SHORT[bp[0]]})" if bp else "n/a")
            + " | " + ("**yes**" + (" (labels follow the population)" if r["proportional"] else "")
                       if r["deepseg"] < r["majority"] else "no") + " |"
        )
    n = acc["n_cells"]
    if n:
        low = acc["cells_below_start_by_half_point"]
        lines += [
            "",
            f"Over the {n} cells" + (f" ({len(acc['incomplete_cells'])} without every peer)" if acc["incomplete_cells"] else "")
            + ":",
            "",
            "| criterion | target | measured | met |",
            "|---|---|---|---|",
            f"| deepseg ≥ supervised start − 0.5 points, every cell | {n}/{n} cells | "
            f"{n - len(low)}/{n}" + (f" (below: {_cells(low)})" if low else "")
            + f" | {'yes' if not low else 'no'} |",
            f"| mean over cells of deepseg − supervised start | ≥ +1.0 points | {100 * acc['mean_minus_start']:+.2f} points "
            f"| {'yes' if acc['mean_minus_start'] >= 0.01 else 'no'} |",
            f"| cells where deepseg ≥ best supervised peer (LR, HGB, MLP) | ≥ 75% | "
            f"{acc['ge_best_supervised']}/{acc['n_with_supervised']} = "
            f"{100 * acc['ge_best_supervised'] / max(acc['n_with_supervised'], 1):.0f}% "
            f"| {'yes' if acc['ge_best_supervised'] >= 0.75 * acc['n_with_supervised'] else 'no'} |",
            f"| cells where deepseg ≥ best peer of all | ≥ 50% | {acc['ge_best_peer']}/{acc['n_with_peer']} = "
            f"{100 * acc['ge_best_peer'] / max(acc['n_with_peer'], 1):.0f}% "
            f"| {'yes' if acc['ge_best_peer'] >= 0.5 * acc['n_with_peer'] else 'no'} |",
            f"| cells below the majority rate of the unlabelled points, labels following the population | 0 of "
            f"{acc['n_proportional']} | {len(acc['below_majority_proportional'])}"
            + (f" ({_cells(acc['below_majority_proportional'])})"
               if acc["below_majority_proportional"] else "")
            + f" | {'yes' if not acc['below_majority_proportional'] else 'no'} |",
            f"| (all cells below their majority rate, for information) | | {len(acc['below_majority'])} of {n}"
            + (f" ({_cells(acc['below_majority'])})"
               if acc["below_majority"] else "") + " | |",
            "",
        ]

    # time
    lines += [
        "## Seconds per fit (mean over seeds; fit + predict; densification apart, the cached SVD not counted)",
        "",
        "| data set | labels | " + " | ".join(SHORT[m] for m in methods if m != "supervised-start")
        + " | densify / load SVD |",
        "|---|---|" + "---:|" * (len([m for m in methods if m != "supervised-start"]) + 1),
    ]
    for cell in cells:
        ms = summary[cell]["methods"]
        row = []
        for m in methods:
            if m == "supervised-start":
                continue
            s = ms.get(m, {}).get("seconds")
            row.append("n/a" if s is None else f"{s:.2f}" if s < 1 else f"{s:.1f}")
        prep = max((ms[m]["prep_s"] for m in ms), default=0.0)
        lines.append(f"| {cell[0]} | {_protocol_label(*cell)} | " + " | ".join(row)
                     + (f" | {prep:.1f} |" if prep > 0.05 else " | |"))
    curves = [(cell, summary[cell]["methods"]["deepseg"]["accuracy_per_iteration"]) for cell in cells
              if "accuracy_per_iteration" in summary[cell]["methods"].get("deepseg", {})]
    if curves:
        lines += ["", "## deepseg accuracy per iteration (%, mean over seeds; 0 = the start the iterations begin from: the "
              "supervised start, then the linear teacher where the defaults have one)", "",
                  "| data set | labels | " + " | ".join(str(i) for i in range(len(curves[0][1]))) + " |",
                  "|---|---|" + "---:|" * len(curves[0][1])]
        for cell, curve in curves:
            lines.append(f"| {cell[0]} | {_protocol_label(*cell)} | " + " | ".join(_pct(a) for a in curve) + " |")
    lines += [
        "",
        "## How to reproduce",
        "",
        "`make bench-accuracy` (= `OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m "
        "benchmarks.accuracy --jobs 2`; `make bench-accuracy ACCURACY_ARGS=--quick` for 2 seeds). Options: "
        "`--datasets a,b`, `--protocols 10,100`, `--methods logreg,deepseg`, `--seeds N` or `--seeds 0,3,7`, "
        "`--jobs N`, `--sparse svd256|raw|deepseg-raw`, `--from-json` (rewrite this report from the saved results), "
        "`--prune` (drop records of older code or settings from the JSON). Per-seed results: "
        "`benchmarks/results/realdata.json` (a run resumes from it and adds only what is missing). "
        "The earlier suite on scikit-learn's toy sets and synthetic users (which the hand-written notes below "
        "discuss): `python -m benchmarks.accuracy --suite toy`, report in `benchmarks/results/accuracy-toy.md`.",
        "",
    ]
    fewest = min((len(summary[c]["seeds"]) for c in cells), default=0)
    if 0 < fewest < 10:
        lines[-1:-1] = ["", f"These results have {fewest} to {max(len(summary[c]['seeds']) for c in cells)} seeds per "
                        "cell, fewer than the protocol's 10 (the measuring run was stopped for time); "
                        "`python -m benchmarks.accuracy --jobs 2 --seeds 10` adds the missing ones."]
    return lines


def sparse_paragraph(summary: dict, meta: dict) -> list[str]:
    from benchmarks import realdata

    inputs = {m["input"] for (ds, _), c in summary.items() if "sparse" in realdata.DATASETS[ds].kinds
              for m in c["methods"].values()}
    if not inputs:
        return []
    head = "Sparse sets (spam-assassin, fine-foods, austen: TF-IDF, 7,400-20,000 columns, 0.6% non-zero): "
    scaled = ("deepseg (and its supervised start, and the patent's settings) get the CSR matrix (it takes "
              "`scipy.sparse` without densifying it) times one label-free global scale that makes the mean "
              "column variance 1 (`accuracy_real.globally_scaled`; TF-IDF rows are L2-normalised, far below the "
              "standardised scale f's first layer expects). ")
    if any(i.startswith("sparse CSR times") for i in inputs) and any(i.startswith("TruncatedSVD") for i in inputs):
        return [head + "with `--sparse deepseg-raw`, " + scaled + f"Every other method gets the label-free "
                f"`TruncatedSVD({SVD_DIMS})` reduction described under `--sparse svd256` (`accuracy_real.reduced`).",
                ""]
    if any(i.startswith("TruncatedSVD") for i in inputs):
        secs = meta.get("reduction_s", {})
        return [head + "every method gets the same label-free reduction of these sets (`--sparse svd256`, "
                f"`accuracy_real.reduced`): `TruncatedSVD({SVD_DIMS})` (randomized, random_state 0) fitted on all "
                "rows, rows L2-normalised (as the TF-IDF rows were: Euclidean neighbours are cosine neighbours), "
                "columns centred, divided by one common scale (mean column variance 1); no label is read. "
                "deepseg takes `scipy.sparse` without densifying it (`--sparse deepseg-raw` gives only deepseg's "
                "fits the CSR matrix), but its labelled-only cross-validation scored the reduction higher; HGB "
                "would need the 20,000 columns densified (277 s with 200 labels). So this measures the methods on "
                "an LSA representation of the text; `--sparse raw` runs the CSR matrix for all. SVD time, "
                "once per set and cached (data loading included): "
                + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items() if v is not None) + ".", ""]
    return [head + "With `--sparse raw`, " + scaled + "HGB gets the densified labelled rows (and the "
            "unlabelled rows densified in chunks to predict); LR, MLP, LabelSpreading and self-training get the CSR matrix. The densification time is recorded "
            "apart (`prep_s` in the JSON) and is not in the seconds below.", ""]


def write_report(path: str, lines: list[str]) -> None:
    from benchmarks.accuracy import _commentary

    commentary = _commentary(path)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + commentary)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.replace(" ", ",").split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items
    return parse


def _protocols(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def parse_seeds(text: str) -> list[int]:
    """'10' → seeds 0..9; '0,3,7' → those seeds; '10-19' → 10..19."""
    if "," in text:
        return [int(s) for s in text.split(",")]
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return list(range(int(text)))


def plan(datasets, protocols, seeds, methods) -> list[tuple[str, int, int, str]]:
    """Tasks in the order seed → data set → protocol → method: an interrupted run leaves whole seeds."""
    tasks = []
    for seed in seeds:
        for ds in datasets:
            for proto in protocols:
                for m in methods:
                    if m == "supervised-start" and "deepseg" in methods:
                        continue  # comes with the deepseg fit
                    tasks.append((ds, proto, seed, m))
    return tasks


def main(argv=None) -> None:
    from benchmarks import realdata

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="python -m benchmarks.accuracy --suite toy --help: the earlier suite on scikit-learn's toy sets")
    parser.add_argument("--quick", action="store_true", help="2 seeds (unless --seeds is given)")
    parser.add_argument("--seeds", type=parse_seeds, default=None, help="N (0..N-1), a list 0,3,7 or a range 10-19")
    parser.add_argument("--datasets", type=_csv(list(realdata.DATASETS)), default=list(realdata.DATASETS),
                        help="comma-separated data sets of benchmarks/realdata.py (default: all)")
    parser.add_argument("--protocols", type=_protocols, default=list(PROTOCOLS),
                        help="labels per class, comma-separated (default 10,100)")
    parser.add_argument("--methods", type=_csv(list(METHODS)), default=list(METHODS),
                        help="comma-separated, from " + ", ".join(METHODS))
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    parser.add_argument("--sparse", choices=SPARSE_POLICIES, default="svd256",
                        help="input of the sparse sets: svd256 (label-free reduction, every method; default), "
                             "deepseg-raw (deepseg's fits get the CSR matrix, one global scale; the others the "
                             "reduction) "
                             "or raw (CSR where accepted, deepseg's scaled; densified for HGB)")
    parser.add_argument("--json", default=RESULTS, help="per-seed results (read to resume, then updated)")
    parser.add_argument("--report", default=REPORT, help="Markdown report (text below the marker is kept)")
    parser.add_argument("--from-json", action="store_true", help="only rewrite the report from --json")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    parser.add_argument("--prune", action="store_true",
                        help="drop from --json the records of another fingerprint (old code or settings) and failures")
    args = parser.parse_args(argv)
    for k in THREAD_VARS:  # inherited by the spawned workers before they import numpy
        os.environ.setdefault(k, "1")
    _SPARSE["policy"] = args.sparse
    methods = [m for m in METHODS if m in args.methods]
    seeds = args.seeds if args.seeds is not None else list(range(2 if args.quick else 10))

    data = load_results(args.json)
    all_ds = sorted({r["dataset"] for r in data["results"]} | set(args.datasets), key=lambda d: _cell_order((d, 0)))
    all_ds = [d for d in all_ds if d in realdata.DATASETS]
    fps = {(ds, m): fingerprint(ds, m) for ds in all_ds for m in METHODS}

    if args.prune:
        keep = current(data["results"], fps)
        print(f"--prune: dropping {len(data['results']) - len(keep)} of {len(data['results'])} records", flush=True)
        data["results"] = keep
        save_results(args.json, data)
    if not args.from_json:
        run(args, data, methods, seeds, fps, argv)
    records = current(data["results"], fps)
    if args.datasets != list(realdata.DATASETS) and not args.from_json:
        pass  # the report covers every cell in the results file, not only this run's
    summary = summarise(records)
    stale = len(data["results"]) - len(records)
    if not args.no_report:
        report_methods = [m for m in METHODS if any(m in c["methods"] for c in summary.values())]
        errors = [r for r in data["results"] if "error" in r and fps.get((r["dataset"], r["method"])) == r.get("config")
                  and _key(r) not in {_key(x) for x in records}]
        write_report(args.report, report_lines(summary, data["meta"], report_methods, errors))
        print(f"wrote {args.report} ({len(records)} records; {stale} stale or failed in {args.json} not used)")
    acc = acceptance(summary)
    if acc["n_cells"]:
        print(f"acceptance over {acc['n_cells']} cells: mean deepseg - start {100 * acc['mean_minus_start']:+.2f} pts, "
              f"cells below start-0.5: {len(acc['cells_below_start_by_half_point'])}, "
              f">= best supervised {acc['ge_best_supervised']}/{acc['n_with_supervised']}, "
              f">= best peer {acc['ge_best_peer']}/{acc['n_with_peer']}, "
              f"below majority (proportional) {len(acc['below_majority_proportional'])}/{acc['n_proportional']}")


def run(args, data: dict, methods: list[str], seeds: list[int], fps: dict, argv) -> None:
    from benchmarks.accuracy import machine

    done = {_key(r) for r in current(data["results"], fps)}
    tasks = [t for t in plan(args.datasets, args.protocols, seeds, methods)
             if (t[0], t[1], t[2], t[3]) not in done
             or (t[3] == "deepseg" and "supervised-start" in methods
                 and (t[0], t[1], t[2], "supervised-start") not in done)]
    skipped = len(plan(args.datasets, args.protocols, seeds, methods)) - len(tasks)
    print(f"{len(tasks)} fits to run ({skipped} already in {os.path.relpath(args.json)}), {args.jobs} worker(s)",
          flush=True)
    meta = data.setdefault("meta", {})
    command = "python -m benchmarks.accuracy" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if tasks:
        meta.setdefault("commands", []).append(command)
    meta.update(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), machine=machine(),
                versions=_versions(), jobs=args.jobs, sparse=args.sparse)
    start = time.perf_counter()

    def finished(recs: list[dict], n_done: int) -> None:
        data["results"].extend(recs)
        save_results(args.json, data)
        r = recs[0]
        elapsed = time.perf_counter() - start
        eta = elapsed / n_done * (len(tasks) - n_done)
        what = (f"error {r['error'][:80]}" if "error" in r else
                f"acc {100 * r['accuracy']:.1f}" + (f" (start {100 * recs[1]['accuracy']:.1f})" if len(recs) > 1 else "")
                + f"  {r['seconds']:.1f}s")
        print(f"[{n_done}/{len(tasks)}] {r['dataset']} {r['protocol']} seed {r['seed']} {r['method']}: {what}"
              f"  | {elapsed / 60:.1f} min, ~{eta / 60:.0f} min left", flush=True)

    wall_before = meta.get("wall_s_total", 0.0)
    n_done = 0
    if args.sparse in ("svd256", "deepseg-raw"):  # once, here, rather than in every worker at the same time
        from benchmarks import realdata

        for ds in sorted({t[0] for t in tasks}):
            if "sparse" in realdata.DATASETS[ds].kinds:
                t = time.perf_counter()
                reduced(ds)
                meta.setdefault("reduction_s", {})[ds] = reduction_seconds(ds)
                print(f"{ds}: TruncatedSVD({SVD_DIMS}) ready ({time.perf_counter() - t:.1f}s here; "
                      f"computed in {reduction_seconds(ds)}s, data loading included)", flush=True)
    try:
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=_limit_threads) as pool:
                pending = {pool.submit(run_task, *t, {m: fps[(t[0], m)] for m in METHODS}, args.sparse)
                           for t in tasks}
                try:
                    while pending:
                        finished_set, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for f in finished_set:
                            n_done += 1
                            meta["wall_s_total"] = wall_before + time.perf_counter() - start
                            finished(f.result(), n_done)
                except KeyboardInterrupt:
                    running = [f for f in pending if not f.cancel()]
                    print(f"interrupted: finishing the {len(running)} fit(s) under way", flush=True)
                    for f in running:
                        try:
                            recs = f.result()
                        except BaseException:  # noqa: BLE001
                            continue
                        n_done += 1
                        meta["wall_s_total"] = wall_before + time.perf_counter() - start
                        finished(recs, n_done)
                    raise
        else:
            _limit_threads()
            for t in tasks:
                recs = run_task(*t, {m: fps[(t[0], m)] for m in METHODS}, args.sparse)
                n_done += 1
                meta["wall_s_total"] = wall_before + time.perf_counter() - start
                finished(recs, n_done)
    except KeyboardInterrupt:
        print("interrupted: the results so far are saved; run the same command again to continue", flush=True)
    meta["wall_s_total"] = wall_before + time.perf_counter() - start
    if n_done:
        meta.setdefault("runs", []).append({"command": command, "date": meta["date"], "jobs": args.jobs,
                                            "cpu": meta["machine"]["cpu"], "fits": n_done,
                                            "wall_s": round(time.perf_counter() - start, 1)})
    save_results(args.json, data)
    print(f"ran {n_done} of {len(tasks)} fits in {(time.perf_counter() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
