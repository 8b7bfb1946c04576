"""Issue 19 prototype: let the labelled-only cross-validation choose how many iterations the answer
averages (0 = the start), not only start-or-all. Validated on labelled points only.

    python -m benchmarks.experiments.iterations_cv run 100,101,102   # fits -> /tmp/exp/iters/*.json
    python -m benchmarks.experiments.iterations_cv summary

On the real-data suite's per-iteration curves some cells peak after one or two iterations and then
decline (telco-churn 10, marketing-income 10, stackoverflow 10×c, fine-foods 100), others climb to
the sixth (austen 10, mnist-10k). The safeguard already fits every fold's iterations; this records,
for one fit with the defaults, the out-of-fold probabilities of the EMA after k = 0..n_iter
iterations and the hidden third's accuracy of the same k (uncalibrated argmax, so the k differ
only in the iterations), and `summary` compares rules that pick k from the out-of-fold figures
alone with k = n_iter and with today's safeguard (start when strictly better, else n_iter).

Protocol as `linear_start`: tuning seeds 100+, the benchmark's labelled draw, a stratified third
of it hidden (fitted as unlabelled) and scored. No label of an unlabelled point is read.
"""
import collections
import glob
import json
import os
import sys

import numpy as np

OUT = "/tmp/exp/iters"
_CAP: dict = {}


def _patch() -> None:
    """Keep each fold's snapshots as the library's `CrossFit.deep_segmentation` iterates them, and
    their EMA after k = 1..n_iter iterations on the held-out fold."""
    from deepseg.core import safeguard
    from deepseg.core.pseudo import EMAEnsemble

    library = safeguard.CrossFit.deep_segmentation

    def deep_segmentation(self, unlabeled, iterate, ema_decay):
        per_fold = []  # the folds are iterated in the order of self._fits

        def recording(*args):
            per_fold.append(iterate(*args))
            return per_fold[-1]

        P_last = library(self, unlabeled, recording, ema_decay)
        P = np.zeros((len(per_fold[0]), len(self.y_l), self.n_classes))
        for fit, snapshots in zip(self._fits, per_fold):
            ens = EMAEnsemble(snapshots, ema_decay)
            for k in range(1, len(snapshots) + 1):
                P[k - 1, fit.held] = ens(self.X_l[fit.held], k)
        _CAP["oof_k"] = P
        return P_last

    safeguard.CrossFit.deep_segmentation = deep_segmentation


def task(a):
    ds, proto, seed = a
    path = f"{OUT}/{ds}-{proto}-{seed}.json"
    if os.path.exists(path):
        return path
    from benchmarks.experiments._oof import hidden_third
    from deepseg import DeepSegmentationClassifier
    from deepseg.core.pseudo import EMAEnsemble
    from deepseg.core.train import predict_proba

    _patch()
    X, y, seen, hidden, ys, cap = hidden_third(ds, proto, seed)
    clf = DeepSegmentationClassifier(random_state=seed).fit(X, ys)
    m = clf.model_
    snaps = m.iterated.nets if m.iterated is not None else m.ensemble.nets
    ens = EMAEnsemble(snaps, clf.ema_decay)
    Xh, yh = X[hidden], y[hidden]
    hidden_k = [predict_proba(m.supervised, Xh)] + [ens(Xh, k) for k in range(1, len(snaps) + 1)]
    oof_k = [cap["oof_start"]] + list(_CAP["oof_k"])
    y_oof = cap["y"]
    rec = {"ds": ds, "proto": proto, "seed": seed, "safeguard": clf.history_[-1].get("safeguard"),
           "answer": float(np.mean(clf.predict(Xh) == yh)),
           "hidden_acc": [float(np.mean(clf.classes_[P.argmax(1)] == yh)) for P in hidden_k],
           "oof_acc": [float(np.mean(P.argmax(1) == y_oof)) for P in oof_k],
           "oof_nll": [float(-np.mean(np.log(np.clip(P[np.arange(len(y_oof)), y_oof], 1e-6, 1)))) for P in oof_k]}
    with open(path, "w") as f:
        json.dump(rec, f)
    print(ds, proto, seed, rec["hidden_acc"], rec["oof_acc"], flush=True)
    return path


def run(seeds: list[int], datasets: list[str] | None = None) -> None:
    from benchmarks.experiments._oof import run_cells

    run_cells(task, OUT, seeds, datasets)


RULES = {
    "k = n_iter": lambda r: len(r["oof_acc"]) - 1,
    "safeguard today": lambda r: 0 if r["oof_acc"][0] > r["oof_acc"][-1] else len(r["oof_acc"]) - 1,
    "oof acc, largest k of the best": lambda r: max(k for k, a in enumerate(r["oof_acc"]) if a == max(r["oof_acc"])),
    "oof acc, smallest k of the best": lambda r: r["oof_acc"].index(max(r["oof_acc"])),
    "oof nll, best k": lambda r: int(np.argmin(r["oof_nll"])),
    "oof acc then nll": lambda r: min(range(len(r["oof_acc"])), key=lambda k: (-r["oof_acc"][k], r["oof_nll"][k])),
}


def summary() -> None:
    recs = [json.load(open(f)) for f in sorted(glob.glob(f"{OUT}/*.json"))]
    cells = collections.defaultdict(list)
    for r in recs:
        cells[(r["ds"], r["proto"])].append(r)
    print(f"{'cell':22}{'n':>3}" + "".join(f"{name[:14]:>16}" for name in RULES) + f"{'oracle':>9}")
    per_rule = collections.defaultdict(list)
    for cell, rs in sorted(cells.items()):
        row = {}
        for name, rule in RULES.items():
            row[name] = 100 * np.mean([r["hidden_acc"][rule(r)] for r in rs])
            per_rule[name].append(row[name])
        oracle = 100 * np.mean([max(r["hidden_acc"]) for r in rs])
        per_rule["oracle"].append(oracle)
        print(f"{cell[0] + ' ' + str(cell[1]):22}{len(rs):3d}" + "".join(f"{row[n]:16.2f}" for n in RULES)
              + f"{oracle:9.2f}")
    base = np.array(per_rule["k = n_iter"])
    print(f"{'mean':25}" + "".join(f"{np.mean(per_rule[n]):16.2f}" for n in RULES)
          + f"{np.mean(per_rule['oracle']):9.2f}")
    for name in RULES:
        d = np.array(per_rule[name]) - base
        print(f"{name:34} - (k = n_iter): {d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} per cell; "
              f"cells up {int((d > 0).sum())}, down {int((d < 0).sum())}")


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run([int(s) for s in sys.argv[2].split(",")], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
    else:
        summary()
