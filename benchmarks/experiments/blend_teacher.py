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
    from benchmarks.experiments._oof import variants_summary

    variants_summary(OUT, "deepseg", SHIFTED)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run([int(s) for s in sys.argv[2].split(",")], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
    else:
        summary()
