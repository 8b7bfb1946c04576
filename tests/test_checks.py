"""scikit-learn's common estimator checks for deepseg's public estimators."""

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


@parametrize_with_checks(
    [DeepSegmentationClassifier(random_state=0, **FAST), TransductiveSVC()],
    expected_failed_checks=lambda est: EXPECTED_FAILED.get(type(est).__name__, {}),
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
