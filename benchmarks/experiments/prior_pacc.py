"""Issue 19 prototype: the unlabelled users' class prior by adjusted classify-and-count, or by more
EM steps, on synthetic users.

    python -m benchmarks.experiments.prior_pacc 0 16 > rows.jsonl    # seeds 0..15, one JSON line per fit
    python -m benchmarks.experiments.prior_pacc summary rows.jsonl

With 10 labelled users per segment of an imbalanced population the "auto" prior (the calibrated
start's mean probability on the unlabelled users: probabilistic classify-and-count, PCC) stays
near the labelled shares: on these synthetic users it put a 15% or 7% segment at 0.39-0.41
(`few_label_shift`). A weak start's mean probability is shrunk towards its training prior; the
adjusted count (PACC, Bella et al. 2010; the soft form of Lipton et al.'s BBSE, 2018) undoes that
with the start's out-of-fold behaviour on the labelled users: μ = M π, M[j, k] = the mean
out-of-fold probability of class j over the labelled users of class k, solved for π on the simplex
(non-negative least squares, renormalised).

Users and designs as `few_label_shift` (the project's generator; segment 0 at 50/30/15/7%; 20
labelled at random or 10 per segment). One default fit per (share, design, seed): the start's
probabilities on the unlabelled users and its out-of-fold ones are captured where the fit
estimates its prior; every estimate comes from them (PACC, and `EM_STEPS` steps of Saerens et
al.'s EM from the same calibrated probabilities as the fit's one step). Also printed: the
answer's accuracy with the fitted calibration and with the same calibration shifted to each
estimate instead. Synthetic users' labels are read to score; no real data set is involved.
"""
import json
import sys
import os
from dataclasses import asdict, replace

import numpy as np
from scipy.optimize import nnls

from benchmarks.experiments.few_label_shift import SHARES, data, fitted, labelled
from deepseg.core.prior import calibrated, em_prior, floor_prior, labeled_shares

EM_STEPS = (1, 2, 3, 5, 10, 1000)
#: Where each fit's captured probabilities go (set DEEPSEG_CAPTURES; unset: nowhere).
CAPTURES = os.environ.get("DEEPSEG_CAPTURES")

_CAP: dict = {}


def pacc(P_u: np.ndarray, P_oof: np.ndarray, y_l: np.ndarray, n_classes: int) -> np.ndarray:
    """Adjusted classify-and-count (see the module doc), floored at 1e-3."""
    M = np.column_stack([P_oof[y_l == k].mean(axis=0) if np.any(y_l == k) else np.eye(n_classes)[k]
                         for k in range(n_classes)])
    A = np.vstack([M, np.ones(n_classes)])  # the row of ones asks for a sum of 1
    pi, _ = nnls(A, np.concatenate([P_u.mean(axis=0), [1.0]]))
    pi = np.maximum(pi, 1e-3)
    return pi / pi.sum()


def _spy() -> None:
    """Capture what the fit's prior is estimated from (once per process: the patches stay)."""
    import deepseg.core.loop as loop
    from deepseg.core.safeguard import CrossFit
    from deepseg.core.train import predict_proba

    if _CAP.get("patched"):
        return
    supervised, estimate = CrossFit.supervised, loop.auto_class_prior

    def fold_nets_too(self):
        # the fold networks' probabilities on the unlabelled users, before the safeguard iterates them
        P = supervised(self)
        _CAP["P_u_folds"] = np.stack([predict_proba(fit.net, _CAP["X_u"]) for fit in self._fits])
        return P

    def spy(P_u, P_oof, y_l, n_classes):
        _CAP.update(P_u=P_u, P_oof=P_oof, y_l=y_l, n_classes=n_classes)
        return estimate(P_u, P_oof, y_l, n_classes)

    CrossFit.supervised, loop.auto_class_prior = fold_nets_too, spy
    _CAP["patched"] = True


def one(small: float, design: str, seed: int) -> dict:
    _spy()
    X, seg = data(small, seed)
    _CAP["X_u"] = np.delete(X, labelled(seg, design, seed), axis=0)  # the fit's unlabelled users, in order
    clf, raw, truth, lab = fitted(X, seg, design, seed)
    last = clf.history_[-1]
    est = pacc(_CAP["P_u"], _CAP["P_oof"], _CAP["y_l"], _CAP["n_classes"])
    cal = clf.model_.ensemble.calibration
    seg_l = clf.transduction_[lab]
    acc = lambda P: float(np.mean(np.argmax(P, axis=1) == truth))
    shifted = lambda pi: acc(replace(cal, prior=tuple(map(float, pi)))(raw))
    # more EM steps from the same calibrated probabilities: between PCC (1) and the maximum likelihood
    train = labeled_shares(_CAP["y_l"], _CAP["n_classes"])
    Q, _ = calibrated(_CAP["P_u"], _CAP["P_oof"], _CAP["y_l"], train)
    em = {k: floor_prior(em_prior(Q, train, max_iter=k)) for k in EM_STEPS}
    if CAPTURES:  # for re-analysis without refitting: OutputCalibration(**calibration) re-shifts `raw`
        os.makedirs(CAPTURES, exist_ok=True)
        np.savez_compressed(f"{CAPTURES}/{small}-{design}-{seed}.npz", P_u=_CAP["P_u"], P_oof=_CAP["P_oof"],
                            y_l=_CAP["y_l"], P_u_folds=_CAP["P_u_folds"], raw=raw, truth=truth, calibration=np.array(asdict(cal), dtype=object))
    return {"small": small, "design": design, "seed": seed, "true": round(float(truth.mean()), 3),
            "labelled": round(float(np.mean(seg_l == 1)), 3), "pcc": round(float(last["class_prior"][1]), 3),
            "pacc": round(float(est[1]), 3), "answer_prior": round(float(cal.prior[1]), 3),
            "answer": acc(cal(raw)), "answer_pacc": shifted(est),
            "em": {k: round(float(pi[1]), 3) for k, pi in em.items()},
            "answer_em": {k: shifted(pi) for k, pi in em.items()},
            "majority": float(max(truth.mean(), 1 - truth.mean()))}


def summary(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    print(f"{'share':>6} {'design':>7} {'n':>3} {'true':>6} {'|pcc-true|':>11} {'|pacc-true|':>12} "
          f"{'answer':>8} {'w/ pacc':>8} {'diff':>14} {'majority':>9}")
    for small in SHARES:
        for design in ("random", "quota"):
            rs = [r for r in rows if r["small"] == small and r["design"] == design]
            if not rs:
                continue
            t = np.array([r["true"] for r in rs])
            e1 = np.abs(np.array([r["pcc"] for r in rs]) - t).mean()
            e2 = np.abs(np.array([r["pacc"] for r in rs]) - t).mean()
            a, b = (np.array([r[k] for r in rs]) * 100 for k in ("answer", "answer_pacc"))
            d = b - a
            print(f"{small:6.2f} {design:>7} {len(rs):3d} {t.mean():6.3f} {e1:11.3f} {e2:12.3f} {a.mean():8.2f} "
                  f"{b.mean():8.2f} {d.mean():+7.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} "
                  f"{100 * np.mean([r['majority'] for r in rs]):9.2f}")
            if "em" in rs[0]:
                for k in rs[0]["em"]:
                    e = np.abs(np.array([r["em"][k] for r in rs]) - t).mean()
                    d = np.array([r["answer_em"][k] for r in rs]) * 100 - a
                    print(f"{'':15} EM {k:>4} steps: |error| {e:.3f}, answer {d.mean():+.2f} ± "
                          f"{d.std(ddof=1) / np.sqrt(len(d)):.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "summary":
        summary(sys.argv[2])
    else:
        for s in range(int(sys.argv[1]), int(sys.argv[2])):
            for small in SHARES:
                for design in ("random", "quota"):
                    print(json.dumps(one(small, design, s)), flush=True)
