import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not an installed package
from benchmarks.datasets import labeled_mask  # noqa: E402
from benchmarks.metrics import expected_calibration_error  # noqa: E402
from deepseg import DeepSegmentationClassifier  # noqa: E402
from deepseg.baselines import DeepLabelPropagation, SelfTrainingNet, SupervisedNet, diffuse, knn_affinity  # noqa: E402

FAST = dict(supervised_epochs=30, random_state=0)
BASELINES = {
    "supervised": lambda: SupervisedNet(**FAST),
    "self-training": lambda: SelfTrainingNet(n_rounds=2, epochs=3, **FAST),
    "deep-lp": lambda: DeepLabelPropagation(n_neighbors=10, n_rounds=2, epochs=3, **FAST),
}


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_fits_two_moons_with_valid_probabilities(name, moons):
    X, y, y_true = moons
    clf = clone(BASELINES[name]()).fit(X, y)
    P = clf.predict_proba(X)
    assert P.shape == (len(X), 2)
    assert np.all(P >= 0) and np.allclose(P.sum(axis=1), 1, atol=1e-5)
    assert set(np.unique(clf.transduction_)) <= {0, 1}
    np.testing.assert_array_equal(clf.transduction_[y != -1], y[y != -1])
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[P.argmax(axis=1)])
    assert np.mean(clf.predict(X) == y_true) > 0.75  # better than chance with 8 labels


def test_supervised_net_is_deepseg_without_iterations():
    clf = SupervisedNet(random_state=3)
    assert isinstance(clf, DeepSegmentationClassifier)
    assert clf.get_params()["n_iter"] == 0 and clf.random_state == 3
    with pytest.raises(TypeError):
        SupervisedNet(n_iter=2)


def test_self_training_uses_only_confident_points(moons):
    X, y, _ = moons
    never = SelfTrainingNet(threshold=1.0, n_rounds=1, epochs=1, **FAST).fit(X, y)
    always = SelfTrainingNet(threshold=0.0, n_rounds=1, epochs=1, **FAST).fit(X, y)
    assert never.history_[0]["n_confident"] == 0
    assert always.history_[0]["n_confident"] == np.sum(y == -1)


def test_diffusion_propagates_labels_within_connected_components():
    # Two chains 0-1-2-3 and 4-5-6, one labelled node each (0: class 0, 6: class 1).
    edges = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6)]
    rows, cols = zip(*(edges + [(j, i) for i, j in edges]))
    W = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(7, 7))
    Z = diffuse(W, labeled_idx=np.array([0, 6]), y_idx=np.array([0, 1]), n_classes=2)
    np.testing.assert_array_equal(Z.argmax(axis=1), [0, 0, 0, 0, 1, 1, 1])
    assert np.all(Z[:4, 1] == 0) and np.all(Z[4:, 0] == 0)  # nothing crosses between components
    assert Z[1, 0] > Z[2, 0] > Z[3, 0] > 0  # decays with distance from the label


def test_knn_affinity_is_symmetric_non_negative_without_self_loops():
    V = np.random.default_rng(0).normal(size=(30, 4))
    W = knn_affinity(V, n_neighbors=5, gamma=3.0)
    assert abs(W - W.T).max() < 1e-12
    assert W.min() >= 0 and np.all(W.diagonal() == 0)
    assert np.all(np.diff(W.indptr) >= 1)


def test_expected_calibration_error_hand_computed():
    # confidences 0.95, 0.95 (one right) and 0.7, 0.7 (both right), 15 bins of width 1/15:
    # ECE = 2/4·|0.5 - 0.95| + 2/4·|1.0 - 0.7| = 0.225 + 0.15 = 0.375
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.7, 0.3], [0.3, 0.7]])
    assert expected_calibration_error([0, 1, 0, 1], proba) == pytest.approx(0.375)
    # labels that are not 0..c-1 go through `classes`; perfectly confident and right: 0
    assert expected_calibration_error(["a", "b"], np.eye(2), classes=np.array(["a", "b"])) == 0.0
    # two bins with accuracy = confidence: 0
    proba = np.array([[0.5, 0.5]] * 2 + [[1.0, 0.0]] * 2)
    assert expected_calibration_error([0, 1, 0, 0], proba) == pytest.approx(0.0)


def test_labeled_mask_draws_a_count_or_a_fraction_of_each_class():
    y = np.repeat([0, 1, 2], [100, 60, 40])
    fixed = labeled_mask(y, 5, seed=3)
    assert np.bincount(y[fixed]).tolist() == [5, 5, 5]
    share = labeled_mask(y, 0.05, seed=3)  # proportional: round(0.05 * n_k), at least one
    assert np.bincount(y[share]).tolist() == [5, 3, 2]
    np.testing.assert_array_equal(share, labeled_mask(y, 0.05, seed=3))
    assert not np.array_equal(share, labeled_mask(y, 0.05, seed=4))
