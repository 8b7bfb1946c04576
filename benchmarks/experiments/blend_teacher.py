"""Issue 19 prototype: blend Deep Segmentation's answer with a linear model's, validated on labelled
points only.

    python -m benchmarks.experiments.blend_teacher run 100,101,102   # fits -> /tmp/exp/blend/*.json
    python -m benchmarks.experiments.blend_teacher summary

A logistic regression on the labelled users, or self-trained on the unlabelled ones too
(`SelfTrainingClassifier`, scikit-learn defaults), is the best peer of the real-data suite in 10 of
its 26 cells, and it errs differently from a network. This records, for one default fit per
(data set, labels, seed), the hidden labelled points' accuracy of the answer, of the two linear
models and of their averages with the answer (probabilities, equal weights; and the geometric
mean), so that a blend can be judged before it is built.

Protocol as `linear_start`: tuning seeds 100+, the benchmark's labelled draw, a stratified third of
it hidden (fitted as unlabelled) and scored. No label of an unlabelled point is read. The hidden
third follows the labelled shares, so in the 10/class and 100/class cells of imbalanced sets it
favours answers that keep them (the linear models) over the answer's shift to the estimated prior:
compare the blends with each other and judge the answer against them per cell with that in mind.
"""
import collections
import glob
import json
import os
import sys

import numpy as np

OUT = "/tmp/exp/blend"
SHIFTED = ("telco-churn", "credit-scoring", "fine-foods", "spam-assassin")


def task(a):
    ds, proto, seed = a
    path = f"{OUT}/{ds}-{proto}-{seed}.json"
    if os.path.exists(path):
        return path
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import SelfTrainingClassifier

    from benchmarks.experiments._oof import hidden_third
    from deepseg import DeepSegmentationClassifier

    X, y, seen, hidden, ys, _ = hidden_third(ds, proto, seed)
    clf = DeepSegmentationClassifier(random_state=seed).fit(X, ys)
    Xh, yh = X[hidden], y[hidden]
    P = {"deepseg": clf.predict_proba(Xh)}
    lr = LogisticRegression(max_iter=1000).fit(X[seen], y[seen])
    P["lr"] = _full(lr, Xh, clf.classes_)
    st = SelfTrainingClassifier(LogisticRegression(max_iter=1000)).fit(X.toarray() if sp.issparse(X) else X, ys)
    P["st"] = _full(st, Xh, clf.classes_)
    for name in ("lr", "st"):
        P[f"mean(deepseg,{name})"] = (P["deepseg"] + P[name]) / 2
        G = np.sqrt(np.clip(P["deepseg"], 1e-9, 1) * np.clip(P[name], 1e-9, 1))
        P[f"geo(deepseg,{name})"] = G / G.sum(axis=1, keepdims=True)
    rec = {"ds": ds, "proto": proto, "seed": seed, "safeguard": clf.history_[-1].get("safeguard"),
           "acc": {k: float(np.mean(clf.classes_[v.argmax(1)] == yh)) for k, v in P.items()},
           "maj": float(np.mean(yh == np.bincount(y[seen]).argmax()))}
    with open(path, "w") as f:
        json.dump(rec, f)
    print(ds, proto, seed, {k: round(v, 3) for k, v in rec["acc"].items()}, flush=True)
    return path


def _full(model, X, classes):
    out = np.zeros((X.shape[0], len(classes)))
    out[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(X)
    return out


def run(seeds: list[int], datasets: list[str] | None = None) -> None:
    from benchmarks.experiments._oof import run_cells

    run_cells(task, OUT, seeds, datasets)


def summary() -> None:
    recs = [json.load(open(f)) for f in sorted(glob.glob(f"{OUT}/*.json"))]
    cells = collections.defaultdict(list)
    for r in recs:
        cells[(r["ds"], r["proto"])].append(r)
    names = list(recs[0]["acc"])
    print(f"{'cell':22}{'n':>3}" + "".join(f"{n[:16]:>18}" for n in names))
    per = collections.defaultdict(list)
    for cell, rs in sorted(cells.items()):
        row = {n: 100 * np.mean([r["acc"][n] for r in rs]) for n in names}
        for n in names:
            per[n].append(row[n])
        print(f"{cell[0] + ' ' + str(cell[1]):22}{len(rs):3d}" + "".join(f"{row[n]:18.2f}" for n in names))
    print(f"{'mean':25}" + "".join(f"{np.mean(per[n]):18.2f}" for n in names))
    base = np.array(per["deepseg"])
    # quota surveys of binary populations at 65-74%: the hidden third is balanced, the answer shifts
    shifted = np.array([c[0] in SHIFTED for c in sorted(cells)])
    for n in names[1:]:
        d = np.array(per[n]) - base
        line = f"{n:22} - deepseg: {d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} per cell; " \
               f"cells up {int((d > 0).sum())}, down {int((d < 0).sum())}"
        for label, mask in (("quota on imbalanced", shifted), ("others", ~shifted)):
            if mask.sum() > 1:
                line += f"; {label} {d[mask].mean():+.2f} ± {d[mask].std(ddof=1) / np.sqrt(mask.sum()):.2f}"
        print(line)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run([int(s) for s in sys.argv[2].split(",")], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
    else:
        summary()
