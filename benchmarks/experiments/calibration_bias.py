"""Issue 19: a per-class bias in the answer's calibration (bias-corrected temperature scaling),
validated on labelled points only.

    python -m benchmarks.experiments.calibration_bias run 100,101,102     # fits -> /tmp/exp/bias/*.npz
    python -m benchmarks.experiments.calibration_bias summary             # the variants, per cell

Tuning seeds 100+ (disjoint from the benchmark's 0-9). For each data set, protocol and seed the
benchmark's labelled draw is made; a stratified third of the labelled points is hidden (fitted as
unlabelled, like every other unlabelled point) and `DeepSegmentationClassifier(calibration="none")`
is fitted on the rest. `run` keeps the out-of-fold probabilities of the safeguard's fold fits (the
labelled points the fit saw), the raw answer and the supervised start on the hidden third, and the
start's probabilities on a sample of the unlabelled points. `summary` re-scores the hidden third
under each calibration variant. No label of an unlabelled point is read: the hidden third's labels
are labels a user has.
"""
import collections
import glob
import os
import sys
from multiprocessing import Pool

import numpy as np

OUT = "/tmp/exp/bias"


def task(a):
    ds, proto, seed = a
    path = f"{OUT}/{ds}-{proto}-{seed}.npz"
    if os.path.exists(path):
        return path
    from benchmarks.experiments._oof import split_with_spy
    from deepseg import DeepSegmentationClassifier
    from deepseg.core.safeguard import stratified_folds
    from deepseg.core.train import predict_proba

    X, y, lab, unl, cap = split_with_spy(ds, proto, seed)
    hidden = lab[stratified_folds(y[lab], 3, seed) == 0]
    seen = np.setdiff1d(lab, hidden)
    ys = np.full(len(y), -1)
    ys[seen] = y[seen]
    clf = DeepSegmentationClassifier(random_state=seed, calibration="none").fit(X, ys)
    res = clf.model_
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(unl, min(len(unl), 5000), replace=False))
    last = clf.history_[-1]
    np.savez(path, y_h=y[hidden], y_l=y[seen], answer=res.ensemble(X[hidden]),
             start=predict_proba(res.supervised, X[hidden]), start_u=predict_proba(res.supervised, X[sample]),
             prior=np.array(last["class_prior"]), label_shift=bool(last.get("label_shift", False)),
             chose_start=last["safeguard"] == "supervised start", **cap)
    print(ds, proto, seed, flush=True)
    return path


def run(seeds: list[int], datasets: list[str] | None = None) -> None:
    from benchmarks import realdata

    os.makedirs(OUT, exist_ok=True)
    names = datasets or list(realdata.DATASETS)
    jobs = [(d, p, s) for s in seeds for d in names for p in (10, 100)]
    with Pool(2) as pool:
        list(pool.imap_unordered(task, jobs))


def bias_pvalue(P_oof, y) -> float:
    """The version-3 rule's test (commit 61d3bbb): χ² of the out-of-fold segment counts against the labelled ones."""
    from scipy.stats import chisquare

    c = np.shape(P_oof)[1]
    true = np.bincount(y, minlength=c)[:c]
    called = np.bincount(np.asarray(P_oof).argmax(axis=1), minlength=c)[:c]
    present = true > 0
    if called[~present].sum() > 0:
        return 0.0
    if present.sum() < 2:
        return 1.0
    return float(chisquare(called[present], true[present]).pvalue)


def summary() -> None:
    from scipy.special import softmax

    from deepseg.core import calibration as cal
    from deepseg.core.prior import SHIFT_ALPHA, floor_prior, label_shift_pvalue, labeled_shares

    cells = collections.defaultdict(list)
    for f in sorted(glob.glob(f"{OUT}/*.npz")):
        z = np.load(f)
        ds, p, s = os.path.basename(f)[:-4].rsplit("-", 2)
        c, y_l = z["answer"].shape[1], z["y_l"]
        pil = floor_prior(labeled_shares(y_l, c))
        few = cal.few_labels(y_l, c)
        oof = z["oof_start"] if bool(z["chose_start"]) else z["oof_deep"]
        P = z["answer"]
        shift = z["prior"] if few or bool(z["label_shift"]) else pil
        out = {}
        # version 3 (commit 61d3bbb): anchored with few labels or where the χ² test of the call counts rejects
        anchored = few or bias_pvalue(oof, y_l) < cal.EVIDENCE_ALPHA
        out["current"] = cal.OutputCalibration.fit(oof, y_l, pil, shift, anchored)
        out["bcts"] = cal.OutputCalibration.fit_bias(oof, y_l, pil, shift)  # the bias always
        gate, record = cal.fit_answer_calibration(oof, y_l, pil, shift, few)  # this commit's rule
        out["gate"] = gate
        # the prior estimated from the start calibrated by BCTS (τ up to e^3, as the prior's calibration)
        tau, b = cal.fit_temperature_and_bias(z["oof_start"], y_l, cal.LOG_TAU_BOUNDS[1])
        est = floor_prior(softmax(tau * np.log(np.clip(z["start_u"], 1e-12, 1)) + b, axis=1).mean(0))
        shift2 = est if few or label_shift_pvalue(y_l, est) < SHIFT_ALPHA else pil
        out["bcts_pe"] = cal.OutputCalibration.fit_bias(oof, y_l, pil, shift2)
        out = {k: np.mean(C(P).argmax(1) == z["y_h"]) for k, C in out.items()}
        out["lr_rejects"] = float(record.get("calibration_bias_p", 1.0) < cal.EVIDENCE_ALPHA)
        out["raw"] = np.mean(P.argmax(1) == z["y_h"])
        out["start"] = np.mean(z["start"].argmax(1) == z["y_h"])
        out["maj"] = np.mean(z["y_h"] == np.argmax(np.bincount(y_l, minlength=c)))
        cells[(ds, int(p))].append(out)
    keys = sorted({k for rs in cells.values() for r in rs for k in r})
    print(f"{'cell':22}{'n':>3}" + "".join(f"{k:>9}" for k in keys))
    tot = collections.defaultdict(list)
    for cell, rs in sorted(cells.items()):
        m = {k: 100 * np.mean([r[k] for r in rs if k in r]) for k in keys}
        print(f"{cell[0] + ' ' + str(cell[1]):22}{len(rs):3d}" + "".join(f"{m[k]:9.2f}" for k in keys))
        for k in keys:
            tot[k].append(m[k])
    print(f"{'mean':25}" + "".join(f"{np.mean(tot[k]):9.2f}" for k in keys))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run([int(s) for s in sys.argv[2].split(",")], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
    else:
        summary()
