"""Issue 19 prototype: the answer's calibration not extrapolated beyond the out-of-fold span.

    python -m benchmarks.experiments.beyond_span summary hidden|synthetic [records.jsonl]
    python -m benchmarks.experiments.beyond_span dump hidden|synthetic > records.jsonl
    python -m benchmarks.experiments.beyond_span many 0 8 > records.jsonl   # refits, below

The answer's temperature (and bias) are fitted on the fold networks' out-of-fold probabilities of
a few hundred labelled users at most; the answer is the network trained on all of them, scored on
every unlabelled user. Among thousands of users it reaches log-odds beyond any the labelled users
had out of fold, and the fitted map, linear in log p, carries some of them across the boundary on
no evidence: caravan 100×c seed 2 of the suite (12 of its 200 labelled users in the small segment)
called 37 users the small segment at 0.51-0.76, 3 of them rightly, every one at a raw probability
above 0.99, while no labelled user's out-of-fold probability passed 0.92 (the diagnosis that
prompted this; the suite's figures chose nothing). The rule: each segment's log p held within the
span of the labelled users' out-of-fold log p, compressed by e^-5 beyond it (the calibration's
smallest temperature), so that every user keeps their order (an isotonic map would clip).

Re-analysed from the captures of `benchmarks.experiments.tau_posterior` (its `hidden` and
`synthetic` runs write `/tmp/exp/taupost/<protocol>/*.npz`: the out-of-fold probabilities, labels,
the raw answer on the scored users, the calibration's settings); no refit. Per fit, the accuracy on
the scored users of: today's answer (τ averaged over its posterior, `answer`), the rule (`span`),
plain clipping (`clip`: the same accuracy, but users beyond the span tie), and the answer's mean
aligned to its class prior (`aligned`: Saerens' EM fixed point for a fixed prior, the other
explanation of the drift in stackoverflow 10×c seed 8); with the ROC AUC (binary) and log-loss of
`answer` and `span`. Records: `benchmarks/results/beyond-span-{hidden,synthetic}.jsonl`. No label of
an unlabelled point is read by a fit.

`many`: the captures hold few labelled users (20 synthetic, 13-67 hidden) and 100-4,000 scored
ones; the case that prompted the rule is a few hundred labelled users drawn at random from an
imbalanced population and thousands scored. Synthetic users of `few_label_shift`'s generator,
8,000, segment 0 at 6% or 15%, 200 labelled at random; one default fit per (share, seed), the answer
with and without its span from the same fit, scored on all unlabelled users
(`benchmarks/results/beyond-span-many.jsonl`).
"""
import json
import sys

import numpy as np
from scipy.special import softmax

from benchmarks.experiments._oof import SHIFTED
from benchmarks.experiments.tau_posterior import rows


def _aligned(Q: np.ndarray, prior) -> np.ndarray:
    """`Q` with a per-class offset such that its mean on the scored users is `prior`."""
    from deepseg.core.calibration import _log

    L, b = _log(Q), np.zeros(Q.shape[1])
    for _ in range(100):
        b += _log(prior) - _log(softmax(L + b, axis=1).mean(axis=0))
    return softmax(L + b, axis=1)


def answers(f) -> dict:
    """One capture's record: each rule's accuracy (`acc`), AUC and log-loss, the share beyond the span."""
    from sklearn.metrics import log_loss, roc_auc_score

    from deepseg.core.calibration import OutputCalibration, _log

    cal = OutputCalibration.from_dict(json.loads(str(f["calibration"])))
    P_oof, y, raw, truth = f["P_oof"], f["y"], f["raw"], f["truth"]
    answer = cal.averaged(P_oof, y)
    span = answer.with_span(P_oof)
    L = _log(raw)
    clipped = np.exp(np.clip(L, *span.log_span))
    Q = {"answer": answer(raw), "span": span(raw), "clip": answer(clipped),
         "aligned": _aligned(answer(raw), np.asarray(cal.prior))}
    out = {"acc": {k: float(np.mean(q.argmax(1) == truth)) for k, q in Q.items()},
           "beyond": float(np.mean(((L < span.log_span[0]) | (L > span.log_span[1])).any(axis=1)))}
    labels = np.arange(raw.shape[1])
    out["log_loss"] = {k: float(log_loss(truth, Q[k], labels=labels)) for k in ("answer", "span")}
    if raw.shape[1] == 2 and len(np.unique(truth)) == 2:
        out["auc"] = {k: float(roc_auc_score(truth, Q[k][:, 1])) for k in ("answer", "span", "clip")}
    return out


def many(lo: int, hi: int) -> None:
    """One JSON line per fit of the `many` design (module doc)."""
    import warnings
    from dataclasses import replace

    from benchmarks.experiments.few_label_shift import data
    from deepseg import DeepSegmentationClassifier

    for seed in range(lo, hi):
        for small in (0.06, 0.15):
            X, seg = data(small, seed, n=8000)
            lab = np.random.default_rng(seed + 1).choice(len(seg), 200, replace=False)
            y = np.full(len(seg), -1)
            y[lab] = seg[lab]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf = DeepSegmentationClassifier(random_state=seed).fit(X, y)
            unl, ens = y == -1, clf.model_.ensemble
            truth, span = seg[unl], ens.calibration
            raw = replace(ens, calibration=None)(X[unl])
            Q = {"answer": replace(span, log_span=())(raw), "span": span(raw)}
            print(json.dumps({"ds": f"{small} random 200", "proto": 200, "seed": seed,
                              "maj": float(max(truth.mean(), 1 - truth.mean())),
                              "acc": {k: float(np.mean(q.argmax(1) == truth)) for k, q in Q.items()},
                              "calls": {k: int((q.argmax(1) == 0).sum()) for k, q in Q.items()},
                              "rule": clf.history_[-1].get("calibration_rule")}), flush=True)


def summary(records: list[dict], protocol: str) -> None:
    """`_oof.variants_table`, fits below their majority rate per rule, mean AUC and log-loss."""
    from benchmarks.experiments._oof import variants_table

    variants_table(records, "answer", SHIFTED if protocol == "hidden" else ())
    for name in records[0]["acc"]:
        below = sum(r["acc"][name] < r["maj"] - 1e-9 for r in records)
        print(f"fits below their majority rate, {name}: {below} of {len(records)}")
    for key in ("auc", "log_loss"):
        rs = [r for r in records if key in r]
        if not rs:
            continue
        print(key, {k: round(float(np.mean([r[key][k] for r in rs])), 4) for k in rs[0][key]}, f"({len(rs)} fits)")
    if "beyond" in records[0]:
        print("users beyond the span:", round(float(np.mean([r["beyond"] for r in records])), 3))


if __name__ == "__main__":
    if sys.argv[1] == "many":
        many(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "dump":
        for r in rows(sys.argv[2], answers):
            print(json.dumps(r))
    else:  # summary hidden|synthetic [records.jsonl]
        recs = [json.loads(line) for line in open(sys.argv[3])] if len(sys.argv) > 3 else rows(sys.argv[2], answers)
        summary(recs, sys.argv[2])
