"""Issue 19 prototype: each iteration's pseudo-labels aligned to the estimated class prior.

    python -m benchmarks.experiments.pseudo_alignment synthetic 0 4 > records.jsonl
    python -m benchmarks.experiments.pseudo_alignment summary records.jsonl
    python -m benchmarks.experiments.pseudo_alignment hidden 100,101      # -> /tmp/exp/align/hidden
    python -m benchmarks.experiments.pseudo_alignment hidden-summary

The TSVMs are fitted under a class-balance constraint at the estimated prior, and the retraining
weighs each class in total by its prior share (`balancing_weights`); which users are *called* each
class follows the argmax of p̂ = TSVM × g∘f, and that can drift. In the suite's stackoverflow 10×c
seed 8 (a diagnosis of judged data) the calls of the 9% segment grew from 509 to 939 over the
iterations while the estimated prior was right (0.09), and the answer fell 6.6 points below the
majority rate. The variant "aligned" adds per-class log-offsets to p̂ so that its argmax shares on
the TSVM sample equal the estimated prior (distribution alignment, as in ReMixMatch, Berthelot et
al. 2020, but to the prior rather than to the labelled shares), then weighs and trains as today.

Synthetic users of `few_label_shift` (segment shares 50/30/15/7%, 20 labelled at random or 10 per
segment): the protocol that judges prior rules, because the estimate is wrong on quota surveys.
Then the hidden-third protocol of `linear_start` on the real-data suite's cells (tuning seeds 100+).
Both variants are fitted on the same users, labels and seed. No label of an unlabelled point is read.
"""
import collections
import contextlib
import json
import sys

import numpy as np

OUT = "/tmp/exp/align/hidden"
_STATE: dict = {}


def offsets(P: np.ndarray, prior: np.ndarray, rounds: int = 200) -> np.ndarray:
    """Per-class log-offsets b with the argmax shares of log P + b close to `prior` (damped updates)."""
    L, b, n = np.log(np.maximum(P, 1e-12)), np.zeros(P.shape[1]), len(P)
    for r in range(rounds):
        share = np.maximum(np.bincount((L + b).argmax(1), minlength=P.shape[1]) / n, 1.0 / n)
        b += 0.5 * 0.98 ** r * np.log(prior / share)
    return b


@contextlib.contextmanager
def _aligned():
    """The loop with aligned pseudo-labels, for the fits inside the block."""
    import deepseg.core.loop as loop
    from deepseg.core.pseudo import PseudoLabeler

    class Aligned(PseudoLabeler):
        _b = None

        def probabilities(self, X):
            P = super().probabilities(X)
            prior = _STATE.get("prior")
            if prior is None:
                return P
            if self._b is None:  # the first call is on the TSVM sample (`balancing_weights`)
                self._b = offsets(P, np.asarray(prior))
            P = P * np.exp(self._b)
            return P / P.sum(axis=1, keepdims=True)

    call = loop._Iteration.__call__

    def iteration(self, it):
        _STATE["prior"] = self.class_prior
        return call(self, it)

    loop.PseudoLabeler, loop._Iteration.__call__ = Aligned, iteration
    try:
        yield
    finally:
        loop.PseudoLabeler, loop._Iteration.__call__ = PseudoLabeler, call


def one(small: float, design: str, seed: int) -> dict:
    from benchmarks.experiments.few_label_shift import data, fitted

    X, seg = data(small, seed)
    out = {"small": small, "design": design, "seed": seed}
    for variant in ("base", "aligned"):
        with _aligned() if variant == "aligned" else contextlib.nullcontext():
            clf, _, truth, lab = fitted(X, seg, design, seed)
        unl = np.ones(len(seg), dtype=bool)
        unl[lab] = False
        out[variant] = float(np.mean(clf.predict(X[unl]) == truth))
        out[f"{variant}_calls"] = [h["class_shares"][1] for h in clf.history_]
        out[f"{variant}_safeguard"] = clf.history_[-1].get("safeguard")
    out["estimate"] = round(float(clf.history_[-1]["class_prior"][1]), 3)
    out["majority"] = float(max(truth.mean(), 1 - truth.mean()))
    return out


def _variant(variant, seed, X, seen):
    return _aligned() if variant == "aligned" else contextlib.nullcontext()


def task(job):
    """One hidden-third fit of one variant (`_oof.paired_fit`)."""
    from benchmarks.experiments._oof import paired_fit

    return paired_fit(OUT, job, _variant)


def summary(recs: list[dict]) -> None:
    cells = collections.defaultdict(list)
    for r in recs:
        cells[(r["small"], r["design"])].append(r)
    diffs = []
    for (small, design), rs in sorted(cells.items()):
        d = [100 * (r["aligned"] - r["base"]) for r in rs]
        diffs.append(np.mean(d))
        below = {v: sum(r[v] < r["majority"] - 1e-9 for r in rs) for v in ("base", "aligned")}
        print(f"{small:5} {design:7} n={len(rs)} base {100 * np.mean([r['base'] for r in rs]):6.2f} "
              f"aligned {100 * np.mean([r['aligned'] for r in rs]):6.2f} diff {np.mean(d):+.2f} ± "
              f"{np.std(d, ddof=1) / np.sqrt(len(d)):.2f}; below majority {below['base']} → {below['aligned']}")
    print(f"per cell {np.mean(diffs):+.2f} ± {np.std(diffs, ddof=1) / np.sqrt(len(diffs)):.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "hidden":
        from benchmarks.experiments._oof import run_cells

        run_cells(task, OUT, [int(s) for s in sys.argv[2].split(",")], variants=("base", "aligned"))
    elif sys.argv[1] == "hidden-summary":
        from benchmarks.experiments._oof import paired_summary

        paired_summary(OUT, "base", "aligned")
    elif sys.argv[1] == "synthetic":
        from benchmarks.experiments.few_label_shift import SHARES, main

        main(one, SHARES, sys.argv[1:])
    else:
        summary([json.loads(line) for line in open(sys.argv[2])])
