"""Issue 19: class-prior estimators re-analysed on the captured probabilities of `prior_pacc`.

    DEEPSEG_CAPTURES=/tmp/exp/captures python -m benchmarks.experiments.prior_pacc 0 16 > rows.jsonl
    python -m benchmarks.experiments.prior_rules /tmp/exp/captures

More EM steps on the calibrated start's probabilities help a quota survey of a small segment and
cost a balanced population, where EM drifts from 0.5 (tuning-log). One suspect is a mismatch: the
temperature is fitted on the fold networks' out-of-fold probabilities and applied to the start,
trained on all labelled users and more confident on the unlabelled users than the fold networks
are. Here the same estimators also run on the fold networks' own probabilities on the unlabelled
users (each calibrated with that temperature, then averaged), where temperature and network
match; and on the start's probabilities after bias-corrected temperature scaling (BCTS,
Alexandari et al. 2020, the EM's recommended calibration). For each estimator: the mean absolute error of the small segment's share and the answer's
accuracy when it is shifted to that estimate, against today's (one step on the start).
"""
import collections
import glob
import os
import sys
from dataclasses import replace

import numpy as np

from scipy.special import softmax

from deepseg.core.calibration import OutputCalibration, fit_temperature_and_bias
from deepseg.core.prior import calibrated, em_prior, floor_prior, labeled_shares


def estimates(d) -> dict[str, np.ndarray]:
    y_l, P_oof = d["y_l"], d["P_oof"]
    train = labeled_shares(y_l, P_oof.shape[1])
    Q_start, _ = calibrated(d["P_u"], P_oof, y_l, train)
    Q_folds = np.mean([calibrated(P, P_oof, y_l, train)[0] for P in d["P_u_folds"]], axis=0)
    tau, b = fit_temperature_and_bias(P_oof, y_l)  # bias-corrected temperature scaling (BCTS)
    Q_bcts = softmax(tau * np.log(np.clip(d["P_u"], 1e-12, 1)) + b, axis=1)
    out = {}
    for name, Q in (("start", Q_start), ("folds", Q_folds), ("BCTS", Q_bcts)):
        for k in (1, 3, 1000):
            out[f"{name} EM {k}"] = floor_prior(em_prior(Q, train, max_iter=k))
    return out


def main(folder: str) -> None:
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in sorted(glob.glob(f"{folder}/*.npz")):
        small, design, _ = os.path.basename(path)[:-4].split("-")
        d = np.load(path, allow_pickle=True)
        cal = OutputCalibration(**d["calibration"].item())
        truth, raw = d["truth"], d["raw"]
        answer = lambda pi: 100 * np.mean(replace(cal, prior=tuple(map(float, pi)))(raw).argmax(1) == truth)
        base = answer(cal.prior)
        for name, pi in estimates(d).items():
            rows[(float(small), design)][name].append((abs(pi[1] - truth.mean()), answer(pi) - base))
    names = list(next(iter(rows.values())))
    print(f"{'share':>6} {'design':>7} {'n':>3}" + "".join(f"{n:>22}" for n in names))
    for (small, design), r in sorted(rows.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        cells = []
        for n in names:
            e, a = np.array(r[n]).T
            cells.append(f"{e.mean():.3f} {a.mean():+6.2f}±{a.std(ddof=1) / np.sqrt(len(a)):.2f}")
        print(f"{small:6.2f} {design:>7} {len(r[names[0]]):3d}" + "".join(f"{c:>22}" for c in cells))
    print("each cell: |estimate - true share|, the answer's accuracy shifted to it - today's (points)")


if __name__ == "__main__":
    main(sys.argv[1])
