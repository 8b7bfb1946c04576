"""Issue 19 prototype: the TSVMs see a linear model's scores next to f's embedding.

    python -m benchmarks.experiments.linear_feature hidden 100,101      # -> /tmp/exp/linfeat
    python -m benchmarks.experiments.linear_feature hidden-summary

Better starts (the ST(LR) teacher, the teacher's C by cross-validation) and a linear expert in the
pseudo-labels did not survive the iterations (docs/tuning-log.md): each iteration's TSVMs separate
f's space alone, and f can drop a direction the linear view found. Variant "feature": each
iteration's TSVMs are fitted on [f(x), s·a(x)], where a(x) is the decision function of a logistic
regression (C = 1, the teacher's model) fitted on the fit's labelled users (one column for two
segments, c otherwise) and s scales it to the mean standard deviation of f's coordinates on the
TSVM sample (fixed per iteration). g∘f and everything else as today; the safeguard's fold fits the
same on their part. The hidden-third protocol of `linear_start` (tuning seeds 100+), both variants
on the same split and seed; no label of an unlabelled point is read.
"""
import contextlib
import sys

import numpy as np

OUT = "/tmp/exp/linfeat"
_STATE: dict = {}


def _augment(Z: np.ndarray, X) -> np.ndarray:
    lr, s = _STATE.get("lr"), _STATE.get("scale")
    if lr is None:
        return Z
    A = lr.decision_function(np.asarray(X)).reshape(len(Z), -1)
    return np.hstack([Z, (s * A).astype(Z.dtype)])


@contextlib.contextmanager
def _linear_feature():
    """The loop with the linear scores as TSVM features, for the fits inside the block."""
    from unittest import mock

    from sklearn.linear_model import LogisticRegression

    import deepseg.core.loop as loop
    import deepseg.core.train as train
    from deepseg.core.pseudo import PseudoLabeler

    class WithFeature(PseudoLabeler):
        def probabilities(self, X):
            Z = train.embed(self.net, X)
            P = self.tsvm.predict_proba(_augment(Z, X))
            if self.with_net:
                import torch

                with torch.no_grad():
                    P = P * torch.softmax(self.net.g(torch.as_tensor(Z)), dim=1).double().numpy()
                P /= P.sum(axis=1, keepdims=True)
            return P

    call = loop._Iteration.__call__

    def iteration(self, it):
        if not hasattr(self, "_lr"):  # once per fit (the main one, each fold's)
            self._lr = (LogisticRegression(max_iter=1000).fit(self.X_l, self.y_l)
                        if len(np.unique(self.y_l)) > 1 else None)
        _STATE["lr"], _STATE["scale"] = self._lr, 1.0
        if self._lr is not None:
            S = self.sample[:5000]
            zstd = train.embed(self.net, S).std(axis=0).mean()
            _STATE["scale"] = float(zstd / max(self._lr.decision_function(np.asarray(S)).std(), 1e-12))
        return call(self, it)

    def embed(net, X, *a, **k):
        return _augment(train.embed(net, X, *a, **k), X)

    with mock.patch.object(loop, "PseudoLabeler", WithFeature), mock.patch.object(loop, "embed", embed), \
            mock.patch.object(loop._Iteration, "__call__", iteration):
        yield


def _variant(variant, seed, X, seen):
    return contextlib.nullcontext() if variant == "base" else _linear_feature()


def task(job):
    """One hidden-third fit of one variant (`_oof.paired_fit`)."""
    from benchmarks.experiments._oof import paired_fit

    return paired_fit(OUT, job, _variant)


if __name__ == "__main__":
    if sys.argv[1] == "hidden":
        from benchmarks.experiments._oof import run_cells

        run_cells(task, OUT, [int(s) for s in sys.argv[2].split(",")], variants=("base", "feature"))
    elif sys.argv[1] == "hidden-summary":
        from benchmarks.experiments._oof import paired_summary

        paired_summary(OUT, "base", "feature")
