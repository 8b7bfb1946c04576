"""How good are the pseudo-labels at the first iteration? On the hidden labelled points only
(validate.py's split), compare the supervised net's argmax with the OvR TSVM argmax in its
embedding under several settings (C*, balance prior). No unlabelled label is read.

    python -m benchmarks.experiments.tsvm_quality --datasets synthetic digits5 --seeds 3
"""
import argparse
import numpy as np

from benchmarks.datasets import DATASETS
from benchmarks.experiments.validate import hidden_split
from benchmarks.experiments.variants import em_prior, fit_ovr
from deepseg import DeepSegmentationClassifier
from deepseg.core.train import embed, predict_proba
from deepseg.core.tsvm import TSVMConfig


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["synthetic", "digits5"])
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args(argv)
    for ds in a.datasets:
        X, y, pc = DATASETS[ds]()
        res = {}
        for seed in range(100, 100 + a.seeds):
            lab, hidden = hidden_split(y, pc, seed)
            fit_y = np.where(lab & ~hidden, y, -1)
            clf = DeepSegmentationClassifier(n_iter=0, random_state=seed).fit(X, fit_y)
            net = clf.model_.supervised
            Xl, yl = X[fit_y != -1], np.searchsorted(clf.classes_, y[fit_y != -1])
            Xu = X[fit_y == -1]
            Xh, yh = X[hidden], np.searchsorted(clf.classes_, y[hidden])
            c = len(clf.classes_)
            Zl, Zu, Zh = embed(net, Xl), embed(net, Xu), embed(net, Xh)
            Pu = predict_proba(net, Xu).astype(np.float64)
            tp = np.bincount(yl, minlength=c) / len(yl)
            pri = em_prior(Pu, tp)
            res.setdefault("net", []).append(np.mean(predict_proba(net, Xh).argmax(1) == yh))
            for cs in (0.0, 0.1, 1.0, 3.0):
                for bname, bal in (("lab", None), ("em", 2 * pri - 1)):
                    m = fit_ovr(Zl, yl, Zu, c, TSVMConfig(C_unlabeled=cs), 3, seed, balance=bal)
                    res.setdefault(f"tsvm C*={cs} {bname}", []).append(np.mean(m.decision_function(Zh).argmax(1) == yh))
            print(ds, seed, {k: round(v[-1], 3) for k, v in res.items()}, flush=True)
        print("MEAN", ds, {k: round(float(np.mean(v)), 4) for k, v in res.items()}, flush=True)


if __name__ == "__main__":
    main()
