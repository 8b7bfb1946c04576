"""scikit-learn's common estimator checks for deepseg's public estimators."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from tests.settings import FAST
from deepseg import DeepSegmentationClassifier, TransductiveSVC

# y == -1 marks unlabelled points; this check fits with labels {-1, 1}. scikit-learn exempts
# its own semi-supervised estimators by name (LabelSpreading, LabelPropagation,
# SelfTrainingClassifier in `_choose_check_classifiers_labels`), which a third party cannot.
_MINUS_ONE = "y == -1 marks unlabelled points, so labels {-1, 1} leave a single labelled class"
EXPECTED_FAILED = {
    "DeepSegmentationClassifier": {"check_classifiers_classes": _MINUS_ONE},
    "TransductiveSVC": {"check_classifiers_classes": _MINUS_ONE},
}


# The common checks fit fully labelled data, which deepseg accepts with a UserWarning.
@pytest.mark.filterwarnings("ignore:DeepSegmentationClassifier. y has no unlabelled point:UserWarning")
@parametrize_with_checks(
    [DeepSegmentationClassifier(random_state=0, **FAST), TransductiveSVC()],
    expected_failed_checks=lambda est: EXPECTED_FAILED.get(type(est).__name__, {}),
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ------------------------------------------------------------------ input validation at fit


@pytest.mark.parametrize("where, value, match", [
    ("X", np.nan, "Input X contains NaN"),
    ("X", np.inf, "Input X contains infinity"),
    ("X", -np.inf, "Input X contains infinity"),
    ("y", np.nan, "Input y contains NaN"),
])
def test_fit_refuses_non_finite_input(moons, where, value, match):
    X, y, _ = moons
    X, y = X.copy(), y.astype(float)
    if where == "X":
        X[7, 1] = value
    else:
        y[7] = value
    with pytest.raises(ValueError, match=match):
        DeepSegmentationClassifier(random_state=0, **FAST).fit(X, y)


def test_fit_refuses_a_single_labeled_class(moons):
    X, y, _ = moons
    y = np.where(y == 1, -1, y)
    with pytest.raises(ValueError, match=r"only one class \[0\]; need at least 2"):
        DeepSegmentationClassifier(random_state=0, **FAST).fit(X, y)


def test_fit_without_unlabeled_points_warns_and_fits(moons):
    """Decision: a warning, not an error -- scikit-learn expects classifiers to fit fully
    labelled data (its common checks do); the train job, by contrast, refuses it."""
    X, _, y_true = moons
    with pytest.warns(UserWarning, match=r"no unlabelled point \(y == -1\)"):
        clf = DeepSegmentationClassifier(random_state=0, **FAST).fit(X[:60], y_true[:60])
    assert clf.predict_proba(X).shape == (400, 2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # semi-supervised input: no warning
        y = y_true.copy()
        y[60:] = -1
        DeepSegmentationClassifier(random_state=0, **FAST).fit(X, y)
