"""Issue 19 prototype: the answer's temperature averaged over its posterior instead of its best fit.

    python -m benchmarks.experiments.tau_posterior hidden 100,101     # real data, hidden third
    python -m benchmarks.experiments.tau_posterior synthetic 0 8       # synthetic users (few_label_shift)
    python -m benchmarks.experiments.tau_posterior summary hidden|synthetic [records.jsonl]
    python -m benchmarks.experiments.tau_posterior dump hidden|synthetic > records.jsonl

The answer's τ minimises the out-of-fold log-loss of the labelled users. With two or three labelled
users of a segment that minimum is a guess: the diagnosis of the proportional 10×c cells found
every fit below the majority rate at a moderate τ (0.2-0.8), where most of its calls of the small
segment were wrong (docs/tuning-log.md). Averaging the calibrated answer over τ, weighted by the
out-of-fold likelihood of the labelled users on a uniform grid of log τ over the answer's bounds
(Bayesian model averaging; the bounds are the calibration's own), keeps the best fit's answer where
the labelled users pin τ down and leans towards the prior where they cannot. No new constant.

Each fit's calibration inputs (the out-of-fold probabilities of the labelled users, their labels,
the fitted calibration) and its raw answer on the scored users are captured to
`/tmp/exp/taupost/<protocol>/*.npz`; the rules are re-analysed from them without refitting. The
records of the run that chose the rule: `benchmarks/results/tau-posterior-{hidden,synthetic}.jsonl`.
Hidden third: the protocol of `linear_start` (tuning seeds 100+, a stratified third of the
benchmark's labelled draw fitted as unlabelled and scored). Synthetic: `few_label_shift`'s users
and designs, scored on all unlabelled users. No label of an unlabelled point is read by a fit.
"""
import collections
import glob
import json
import os
import sys
from dataclasses import asdict, replace

import numpy as np

from benchmarks.experiments._oof import SHIFTED

OUT = "/tmp/exp/taupost"

_CAP: dict = {}


def _spy() -> None:
    import deepseg.core.loop as loop

    fit = loop.fit_answer_calibration

    def spy(P_oof, y, train_prior, prior, few):
        cal, record = fit(P_oof, y, train_prior, prior, few)
        _CAP.update(P_oof=np.asarray(P_oof), y=np.asarray(y), cal=cal)
        return cal, record

    loop.fit_answer_calibration = spy


def _save(path: str, raw: np.ndarray, truth: np.ndarray, **meta) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, P_oof=_CAP["P_oof"], y=_CAP["y"], raw=raw, truth=truth,
                        calibration=json.dumps(asdict(_CAP["cal"])), meta=json.dumps(meta))


def hidden(job) -> None:
    import warnings

    from benchmarks.experiments._oof import hidden_third
    from deepseg import DeepSegmentationClassifier

    ds, proto, seed = job
    _spy()
    X, y, seen, hid, y_semi, _ = hidden_third(ds, proto, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = DeepSegmentationClassifier(random_state=seed).fit(X, y_semi)
    raw = replace(clf.model_.ensemble, calibration=None)(X[hid])
    if "cal" not in _CAP:
        return
    maj = int(np.bincount(y[seen]).argmax())
    _save(f"{OUT}/hidden/{ds}-{proto}-{seed}.npz", raw, y[hid], ds=ds, proto=proto, seed=seed,
          maj=float(np.mean(y[hid] == maj)))


def synthetic(lo: int, hi: int) -> None:
    from benchmarks.experiments.few_label_shift import SHARES, data, fitted

    _spy()
    for seed in range(lo, hi):
        for small in SHARES:
            for design in ("random", "quota"):
                clf, raw, truth, _ = fitted(*data(small, seed), design, seed)
                _save(f"{OUT}/synthetic/{small}-{design}-{seed}.npz", raw, truth, ds=f"{small} {design}",
                      proto=0, seed=seed, maj=float(max(truth.mean(), 1 - truth.mean())))
                print(small, design, seed, flush=True)


def answers(f) -> dict:
    """One capture's record: the accuracy of each rule's answer on its scored users (`acc`), the best
    fit's τ and the posterior mean τ."""
    from deepseg.core.calibration import POSTERIOR_LOG_TAU, OutputCalibration

    cal = OutputCalibration.from_dict(json.loads(str(f["calibration"])))
    P_oof, y, raw, truth = f["P_oof"], f["y"], f["raw"], f["truth"]
    acc = lambda P: float(np.mean(P.argmax(1) == truth))
    averaged = cal.averaged(P_oof, y)  # the library's rule
    return {"acc": {"answer": acc(cal(raw)), "bma": acc(averaged(raw)),
                    "post-mean": acc(replace(cal, temperature=averaged.temperature)(raw)),
                    "prior-only": acc(replace(cal, temperature=float(np.exp(POSTERIOR_LOG_TAU[0])))(raw))},
            "tau": cal.temperature, "tau_post": averaged.temperature, "anchored": cal.anchored, "n": len(y)}


def rows(protocol: str, reanalyse=None) -> list[dict]:
    """One record per captured fit: its cell, seed, majority rate, and `reanalyse` of its capture
    (:func:`answers` by default)."""
    out = []
    for path in sorted(glob.glob(f"{OUT}/{protocol}/*.npz")):
        f = np.load(path, allow_pickle=False)
        meta = json.loads(str(f["meta"]))
        out.append({k: meta[k] for k in ("ds", "proto", "seed", "maj")} | (reanalyse or answers)(f))
    return out


def summary(records: list[dict], protocol: str) -> None:
    """`_oof.variants_table` of the records, then the cells below their majority rate per rule."""
    from benchmarks.experiments._oof import variants_table

    variants_table(records, "answer", SHIFTED if protocol == "hidden" else ())
    cells = collections.defaultdict(list)
    for r in records:
        cells[(r["ds"], r["proto"])].append(r)
    for name in records[0]["acc"]:
        below = sum(np.mean([r["acc"][name] for r in rs]) < np.mean([r["maj"] for r in rs]) - 1e-9
                    for rs in cells.values())
        print(f"cells below their majority rate, {name}: {below} of {len(cells)}")


if __name__ == "__main__":
    if sys.argv[1] == "hidden":
        from benchmarks.experiments._oof import run_cells

        run_cells(hidden, OUT, [int(s) for s in sys.argv[2].split(",")])
    elif sys.argv[1] == "synthetic":
        synthetic(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "dump":  # the records, one JSON line each (benchmarks/results/tau-posterior-*.jsonl)
        for r in rows(sys.argv[2]):
            print(json.dumps(r))
    else:  # summary hidden|synthetic [records.jsonl]
        recs = [json.loads(line) for line in open(sys.argv[3])] if len(sys.argv) > 3 else rows(sys.argv[2])
        summary(recs, sys.argv[2])
