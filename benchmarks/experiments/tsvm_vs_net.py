"""Diagnostic (reads the labels of unlabelled points: never used to choose a setting): on the
supervised start's embedding, how accurate are the OvR TSVMs (C* 0..3; balance from the
labelled shares, an EM estimate, or the true shares) against g∘f itself, and kNN label
spreading in the same space?

    PYTHONPATH=. python benchmarks/experiments/tsvm_vs_net.py digits5,synthetic 3
"""
import sys, numpy as np
from benchmarks.datasets import DATASETS, labeled_mask
from benchmarks.experiments.variants import em_prior, fit_ovr
from deepseg import DeepSegmentationClassifier
from deepseg.core.train import embed, predict_proba
from deepseg.core.tsvm import TSVMConfig
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading
for ds in sys.argv[1].split(","):
    X, y, pc = DATASETS[ds]()
    X = StandardScaler().fit_transform(X)
    res = {}
    for seed in range(int(sys.argv[2])):
        lab = labeled_mask(y, pc, seed)
        fy = np.where(lab, y, -1)
        clf = DeepSegmentationClassifier(n_iter=0, random_state=seed).fit(X, fy)
        net = clf.model_.supervised
        cls = clf.classes_; c = len(cls)
        Xl, yl = X[lab], np.searchsorted(cls, y[lab]); Xu, yu = X[~lab], np.searchsorted(cls, y[~lab])
        Zl, Zu = embed(net, Xl), embed(net, Xu)
        Pu = predict_proba(net, Xu).astype(np.float64)
        res.setdefault("net", []).append(np.mean(Pu.argmax(1) == yu))
        tp = np.bincount(yl, minlength=c) / len(yl)
        true = np.bincount(yu, minlength=c) / len(yu)
        pri = em_prior(Pu, tp)
        for cs in (0.0, 0.3, 1.0, 3.0):
            for bname, bal in (("lab", None), ("em", 2 * pri - 1), ("oracle", 2 * true - 1)):
                m = fit_ovr(Zl, yl, Zu, c, TSVMConfig(C_unlabeled=cs), 3, seed, balance=bal)
                res.setdefault(f"C*={cs} {bname}", []).append(np.mean(m.decision_function(Zu).argmax(1) == yu))
        ls = LabelSpreading(kernel="knn", n_neighbors=10).fit(np.vstack([Zl, Zu]), np.r_[yl, -np.ones(len(yu), int)])
        res.setdefault("LS-emb", []).append(np.mean(ls.transduction_[len(yl):] == yu))
        print(ds, seed, {k: round(v[-1], 3) for k, v in res.items()}, flush=True)
    print("MEAN", ds, {k: round(float(np.mean(v)), 4) for k, v in res.items()}, flush=True)
