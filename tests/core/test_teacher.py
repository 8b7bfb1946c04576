"""The linear teacher of the start (deepseg.core.teacher)."""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from deepseg import DeepSegmentationClassifier
from deepseg.core.embed import SegmentationNet, smooth_labels
from deepseg.core.teacher import TEACHER_ROWS, teach, teacher_sample, teacher_targets
from deepseg.core.train import make_optimizer, predict_proba, train_labeled

SMALL = dict(supervised_epochs=30, n_iter=1, unlabeled_epochs=1, labeled_epochs=2)


def blobs(n=600, d=20, seed=0):
    """Two classes apart along one direction among `d` noisy ones; 3 labelled users per class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 0] += 3.0 * (2 * y - 1)
    lab = np.concatenate([np.flatnonzero(y == k)[:3] for k in (0, 1)])
    return X, y, lab


def test_targets_are_the_logistic_regressions_floored_probabilities():
    X, y, lab = blobs()
    T = teacher_targets(X[lab], y[lab], X, 3)  # a third class without labelled users keeps the floor
    assert T.shape == (len(X), 3) and T.dtype == np.float32
    np.testing.assert_allclose(T.sum(axis=1), 1, rtol=1e-6)
    assert np.allclose(T[:, 2], T[:, 2].min()) and T.min() > 0
    lr = LogisticRegression(max_iter=1000).fit(X[lab], y[lab])
    np.testing.assert_array_equal(T[:, :2].argmax(axis=1), lr.predict(X))
    assert teacher_targets(X[:3], np.zeros(3, dtype=int), X, 2) is None  # one class: nothing to teach


def test_the_sample_is_seeded_and_bounded():
    X = np.arange(2 * (TEACHER_ROWS + 7), dtype=np.float32).reshape(-1, 2)
    S = teacher_sample(X, seed=3)
    assert len(S) == TEACHER_ROWS and len(np.unique(S[:, 0])) == TEACHER_ROWS
    np.testing.assert_array_equal(S, teacher_sample(X, seed=3))
    assert teacher_sample(X[:10], seed=3) is not None and len(teacher_sample(X[:10], seed=3)) == 10


def test_teaching_moves_the_start_towards_the_teacher():
    """Three labelled users per class among 20 columns: the network fits them along any direction;
    after the teacher it calls the unlabelled users as the logistic regression does."""
    X, y, lab = blobs()
    H = smooth_labels(y[lab], 2)
    torch.manual_seed(0)
    net = SegmentationNet(X.shape[1], 2)
    optimizer = make_optimizer(net, 1e-3)
    train_labeled(net, optimizer, X[lab], H, 200, 32, 0)
    lr_calls = LogisticRegression(max_iter=1000).fit(X[lab], y[lab]).predict(X)
    before = np.mean(predict_proba(net, X).argmax(axis=1) == lr_calls)
    assert teach(net, optimizer, X[lab], y[lab], H, X, 10, 10, 32, 0)
    after = np.mean(predict_proba(net, X).argmax(axis=1) == lr_calls)
    assert after > before and after > 0.95
    assert not teach(net, optimizer, X[lab], y[lab], H, X[:0], 10, 10, 32, 0)  # no unlabelled users
    assert not teach(net, optimizer, X[lab], y[lab], H, X, 0, 10, 32, 0)  # no epochs


def test_a_fit_keeps_its_labelled_only_start_and_records_the_teacher():
    X, y, lab = blobs()
    ys = np.full(len(y), -1)
    ys[lab] = y[lab]
    taught = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, ys)
    assert taught.history_[-1]["linear_teacher"] is True and taught.history_[-1]["linear_teacher_s"] > 0
    # the network before the teacher is the labelled users' network: the n_iter=0 fit
    alone = DeepSegmentationClassifier(random_state=0, **{**SMALL, "n_iter": 0}).fit(X, ys)
    np.testing.assert_allclose(predict_proba(taught.model_.labeled_only, X), alone.predict_proba(X), atol=1e-6)
    assert alone.model_.labeled_only is None
    untaught = DeepSegmentationClassifier(random_state=0, linear_teacher_epochs=0, **SMALL).fit(X, ys)
    assert untaught.model_.labeled_only is None and "linear_teacher" not in untaught.history_[-1]
    np.testing.assert_allclose(predict_proba(untaught.model_.supervised, X), alone.predict_proba(X), atol=1e-6)
