"""Issue 19 prototype: the linear teacher's regularisation chosen by labelled-only cross-validation.

    python -m benchmarks.experiments.teacher_cv hidden 100,101,102      # -> /tmp/exp/teachercv
    python -m benchmarks.experiments.teacher_cv hidden-summary

The linear teacher (`deepseg.core.teacher`) is a logistic regression with C = 1 whatever the data:
on 52 income columns and on a 256-column LSA of text alike. The start learns its probabilities on up
to 5,000 unlabelled users, so an over- or under-regularised teacher teaches over- or under-confident
targets. Variant "cv": scikit-learn's `LogisticRegressionCV` chooses C from 10⁻² to 10² (9 values) by
the log-loss of stratified folds of the fit's labelled users (3, or as many as the smallest class
allows; C = 1 below 2), then refits on all of them. The safeguard's fold fits get the same, on their
part. The hidden-third protocol of `linear_start` (tuning seeds 100+), both variants on the same
split and seed; no label of an unlabelled point is read.
"""
import contextlib
import sys

import numpy as np

OUT = "/tmp/exp/teachercv"
CS = np.logspace(-2, 2, 9)


class CVLogistic:
    """A logistic regression whose C is chosen by the log-loss of stratified folds (see the module doc)."""

    def __init__(self, max_iter: int = 1000):
        self.max_iter = max_iter

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        folds = min(3, int(np.unique(y, return_counts=True)[1].min()))
        if folds < 2:
            self.model_ = LogisticRegression(max_iter=self.max_iter).fit(X, y)
        else:
            self.model_ = LogisticRegressionCV(Cs=CS, cv=StratifiedKFold(folds, shuffle=True, random_state=0),
                                               scoring="neg_log_loss", max_iter=self.max_iter).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


def _variant(variant, seed, X, seen):
    from unittest import mock

    import deepseg.core.teacher as teacher

    return contextlib.nullcontext() if variant == "base" else mock.patch.object(teacher, "LogisticRegression",
                                                                                CVLogistic)


def task(job):
    """One hidden-third fit of one variant (`_oof.paired_fit`)."""
    from benchmarks.experiments._oof import paired_fit

    return paired_fit(OUT, job, _variant)


if __name__ == "__main__":
    if sys.argv[1] == "hidden":
        from benchmarks.experiments._oof import run_cells

        run_cells(task, OUT, [int(s) for s in sys.argv[2].split(",")], variants=("base", "cv"))
    elif sys.argv[1] == "hidden-summary":
        from benchmarks.experiments._oof import paired_summary

        paired_summary(OUT, "base", "cv")
