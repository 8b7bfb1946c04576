"""Issue 19 prototype: what the safeguard chooses between, and how sure it must be.

    python -m benchmarks.experiments.safeguard_candidates run 100,101,102,103   # then 104-107, 108-111, 112-115
    python -m benchmarks.experiments.safeguard_candidates summary

The safeguard keeps the supervised start when its out-of-fold accuracy is strictly higher than the
iterations'. In the suite it keeps the start in 116 of 260 fits, 35 of them on one labelled user
(the fit's own records; no hidden label read). Two questions, answered on labelled points only:

1. **How sure**: keep the start only on evidence, a one-sided exact McNemar test on the labelled
   users the two out-of-fold answers disagree on, at several levels (0.5 is close to today's rule).
2. **Between what**: the issue names candidates beyond start and iterations; a logistic regression
   on the labelled users and scikit-learn's self-training of it are the suite's strongest peers in
   the text and multiclass cells. Their out-of-fold probabilities on the safeguard's own folds make
   them candidates of the same cross-validation.

Each fit (defaults) captures the safeguard's folds and out-of-fold probabilities, the hidden third's
raw probabilities of the start and of the iterations with the calibration each branch would get,
and the two linear candidates' out-of-fold and hidden probabilities; every rule is a re-analysis.
Protocol as `linear_start`: tuning seeds 100+, the benchmark's labelled draw, a stratified third of
it hidden (fitted as unlabelled) and scored. No label of an unlabelled point is read.
"""
import glob
import json
import os
import sys
from dataclasses import asdict, replace

import numpy as np

OUT = "/tmp/exp/sgcand"
ST_ROWS = 5000
_CAP: dict = {}


def _patch() -> None:
    """Keep, per fit: the safeguard (`guard`), its labelled users, folds and out-of-fold probabilities,
    the calibration of each branch and the calibration's other inputs (`cal_args`)."""
    import deepseg.core.loop as loop

    decide, calibration, fit_cal = loop._Safeguard.decide, loop._Safeguard.calibration, loop.fit_answer_calibration

    def spy_decide(self, prior):
        out = decide(self, prior)
        if self._cross is not None:
            _CAP.update(guard=self, y=self.y_l, folds=self._cross.folds, oof_start=self._oof,
                        oof_deep=self._deepseg_out_of_fold(prior))
        return out

    def spy_calibration(self, prior, kept_start):
        for kept in (True, False):
            _CAP["cal_start" if kept else "cal_deep"] = calibration(self, prior, kept)[0]
        return calibration(self, prior, kept_start)

    def spy_fit_cal(P_oof, y, train_prior, prior, few):
        _CAP["cal_args"] = (train_prior, prior, few)
        return fit_cal(P_oof, y, train_prior, prior, few)

    loop._Safeguard.decide, loop._Safeguard.calibration = spy_decide, spy_calibration
    loop.fit_answer_calibration = spy_fit_cal


def _linear(X_tr, y_tr, X_u, X_out, n_classes, self_trained: bool) -> np.ndarray:
    """Probabilities on `X_out` of LogisticRegression(max_iter=1000) on (`X_tr`, `y_tr`), or of its
    SelfTrainingClassifier (scikit-learn defaults) with `X_u` and `X_out` unlabelled."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import SelfTrainingClassifier

    P = np.zeros((X_out.shape[0], n_classes))
    if len(np.unique(y_tr)) < 2:  # a fold without the small segment's one or two users
        P[:, y_tr[0]] = 1.0
        return P
    lr = LogisticRegression(max_iter=1000)
    if self_trained:
        stack = sp.vstack if sp.issparse(X_tr) else np.vstack
        X = stack([X_tr, X_u, X_out])
        y = np.concatenate([y_tr, np.full(X.shape[0] - len(y_tr), -1)])
        model = SelfTrainingClassifier(lr).fit(X, y)
    else:
        model = lr.fit(X_tr, y_tr)
    P[:, model.classes_] = model.predict_proba(X_out)
    return P


def captured(job) -> dict | None:
    """One default fit of the hidden-third protocol under the spy: the split (`X`, `y`, `seen`, `hid`,
    `y_semi`), the classifier (`clf`) and what every capture of it saves (`arrays`: the labelled users'
    labels and out-of-fold probabilities, each branch's raw hidden probabilities and calibration, the
    fit's answer, `meta`); None where the fit had too few labelled users for a calibration."""
    import warnings

    from benchmarks.experiments._oof import hidden_third
    from deepseg import DeepSegmentationClassifier
    from deepseg.core.train import predict_proba

    ds, proto, seed = job
    _patch()
    X, y, seen, hid, y_semi, _ = hidden_third(ds, proto, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = DeepSegmentationClassifier(random_state=seed).fit(X, y_semi)
    if "cal_deep" not in _CAP:
        return None
    assert np.array_equal(_CAP["y"], y[seen])
    model = clf.model_
    iterated = model.iterated if model.iterated is not None else model.ensemble
    arrays = {"y": y[seen], "oof_start": _CAP["oof_start"], "oof_deep": _CAP["oof_deep"], "truth": y[hid],
              "raw_start": predict_proba(model.supervised, X[hid]),
              "raw_deep": replace(iterated, calibration=None)(X[hid]), "answer": clf.predict_proba(X[hid]),
              "cal_start": json.dumps(asdict(_CAP["cal_start"])), "cal_deep": json.dumps(asdict(_CAP["cal_deep"])),
              "meta": json.dumps({"ds": ds, "proto": proto, "seed": seed,
                                  "maj": float(np.mean(y[hid] == np.bincount(y[seen]).argmax()))})}
    return {"X": X, "y": y, "seen": seen, "hid": hid, "y_semi": y_semi, "clf": clf, "arrays": arrays}


def fit(job) -> None:
    run = captured(job)
    if run is None:
        return
    X, y, seen, hid, y_semi = (run[k] for k in ("X", "y", "seen", "hid", "y_semi"))
    ds, proto, seed = job
    c = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    unl = np.setdiff1d(np.flatnonzero(y_semi < 0), hid)
    X_u = X[np.sort(rng.choice(unl, min(ST_ROWS, len(unl)), replace=False))]
    X_l, y_l, folds = X[seen], y[seen], _CAP["folds"]
    lin = {}
    for name, st in (("lr", False), ("st", True)):
        oof = np.zeros((len(y_l), c))
        for k in np.unique(folds):
            held = folds == k
            oof[held] = _linear(X_l[~held], y_l[~held], X_u, X_l[held], c, st)
        lin[f"oof_{name}"], lin[f"hid_{name}"] = oof, _linear(X_l, y_l, X_u, X[hid], c, st)
    os.makedirs(OUT, exist_ok=True)
    np.savez_compressed(f"{OUT}/{ds}-{proto}-{seed}.npz", folds=folds, safeguard=run["clf"].history_[-1]["safeguard"],
                        **run["arrays"], **lin)
    print(ds, proto, seed, flush=True)


def mcnemar_p(y, P_a, P_b) -> float:
    """One-sided exact McNemar p-value that answer `a` is more often right than `b` on the users where
    exactly one of them is right (binomial, 1/2)."""
    from scipy.stats import binomtest

    ra, rb = P_a.argmax(1) == y, P_b.argmax(1) == y
    a_only, b_only = int(np.sum(ra & ~rb)), int(np.sum(rb & ~ra))
    return 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5, alternative="greater").pvalue


def answers(f) -> dict:
    """One capture's hidden accuracy under each rule."""
    from deepseg.core.calibration import OutputCalibration

    y, truth = f["y"], f["truth"]
    cal_s = OutputCalibration.from_dict(json.loads(str(f["cal_start"])))
    cal_d = OutputCalibration.from_dict(json.loads(str(f["cal_deep"])))
    hid = {"start": cal_s(f["raw_start"]), "deep": cal_d(f["raw_deep"]), "lr": f["hid_lr"], "st": f["hid_st"]}
    oof = {"start": f["oof_start"], "deep": f["oof_deep"], "lr": f["oof_lr"], "st": f["oof_st"]}
    acc_h = {k: float(np.mean(P.argmax(1) == truth)) for k, P in hid.items()}
    acc_o = {k: float(np.mean(P.argmax(1) == y)) for k, P in oof.items()}
    out = {"start": acc_h["start"], "deep": acc_h["deep"], "lr": acc_h["lr"], "st": acc_h["st"],
           "today": acc_h["start"] if acc_o["start"] > acc_o["deep"] else acc_h["deep"],
           "start on ties": acc_h["start"] if acc_o["start"] >= acc_o["deep"] else acc_h["deep"],
           "start and deep averaged": float(np.mean((hid["start"] + hid["deep"]).argmax(1) == truth))}
    p = mcnemar_p(y, oof["start"], oof["deep"])
    for level in (0.5, 0.25, 0.1, 0.05):
        out[f"mcnemar {level}"] = acc_h["start"] if p < level else acc_h["deep"]
    for names in (("start", "deep", "lr"), ("start", "deep", "lr", "st")):
        best = max(names[1:], key=lambda k: acc_o[k])  # ties keep the earlier: deep, then lr, then st
        best = "start" if acc_o["start"] > acc_o[best] else best
        out["argmax " + "+".join(names[2:])] = acc_h[best]
    return {"acc": out, "oof": acc_o, "p": p, "n": len(y)}


def rows() -> list[dict]:
    out = []
    for path in sorted(glob.glob(f"{OUT}/*.npz")):
        f = np.load(path, allow_pickle=False)
        meta = json.loads(str(f["meta"]))
        out.append({k: meta[k] for k in ("ds", "proto", "seed", "maj")} | answers(f))
    return out


if __name__ == "__main__":
    if sys.argv[1] == "run":
        from benchmarks.experiments._oof import run_cells

        run_cells(fit, OUT, [int(s) for s in sys.argv[2].split(",")])
    elif sys.argv[1] == "dump":  # one JSON line per fit (benchmarks/results/safeguard-candidates-hidden-third.jsonl)
        for r in rows():
            print(json.dumps(r))
    else:
        from benchmarks.experiments._oof import SHIFTED, variants_table

        recs = [json.loads(line) for line in open(sys.argv[2])] if len(sys.argv) > 2 else rows()
        variants_table(recs, "today", SHIFTED)
        print(f"{len(recs)} fits; start kept today in {sum(r['oof']['start'] > r['oof']['deep'] for r in recs)}")
