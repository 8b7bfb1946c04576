"""The answer's calibration: a temperature fitted out of fold, and the shift to the class prior of the unlabelled users."""

import numpy as np
import pytest
from scipy.special import softmax

from deepseg import DeepSegmentationClassifier
from deepseg.core.calibration import EVIDENCE_ALPHA, OutputCalibration, bias_pvalue, few_labels, fit_temperature
from deepseg.core.prior import floor_prior, labeled_shares
from deepseg.spark.persistence import load_model, save_model

SMALL = dict(supervised_epochs=30, n_iter=2, unlabeled_epochs=2, labeled_epochs=2)


def test_identity_at_temperature_one_under_the_training_prior():
    P = softmax(np.random.default_rng(0).normal(size=(50, 3)), axis=1)
    same = OutputCalibration(1.0, (0.2, 0.3, 0.5), (0.2, 0.3, 0.5))
    np.testing.assert_allclose(same(P), P, rtol=1e-10)


def test_the_temperature_of_an_over_confident_network_is_below_one():
    """Labels drawn from softened probabilities p^0.3: the network's sharp p is over-confident by
    a factor 1/0.3, and the fitted τ finds about 0.3."""
    rng = np.random.default_rng(0)
    logits = 4 * rng.normal(size=(20000, 3))
    true = softmax(0.3 * logits, axis=1)
    y = np.array([rng.choice(3, p=p) for p in true])
    tau = fit_temperature(softmax(logits, axis=1), y, np.full(3, 1 / 3))
    assert tau == pytest.approx(0.3, abs=0.03)


def test_the_answer_is_never_sharpened():
    """Out-of-fold probabilities that are right with certainty would ask for τ at its upper bound;
    the answer's τ stops at 1."""
    y = np.array([0, 1] * 20)
    P = np.where(np.eye(2)[y] == 1, 0.9, 0.1)
    assert fit_temperature(P, y, (0.5, 0.5)) > 5
    for anchored in (False, True):
        assert OutputCalibration.fit(P, y, (0.5, 0.5), (0.5, 0.5), anchored).temperature == pytest.approx(1.0, abs=1e-4)


def test_a_temperature_alone_changes_no_segment_and_flattens_towards_uniform():
    """Under the labelled shares (no prior shift) τ < 1 keeps every user's segment, whatever the
    shares, and moves every propensity vector towards 1/c."""
    P = softmax(np.random.default_rng(1).normal(size=(500, 4)) * 3, axis=1)
    Q = OutputCalibration(0.1, (0.55, 0.25, 0.15, 0.05), (0.55, 0.25, 0.15, 0.05))(P)
    np.testing.assert_array_equal(Q.argmax(1), P.argmax(1))
    assert np.abs(Q - 0.25).max() < np.abs(P - 0.25).max()


def test_the_anchored_form_of_format_version_2_moves_answers_to_the_labelled_shares():
    P = softmax(np.random.default_rng(1).normal(size=(200, 2)) * 3, axis=1)
    cal = OutputCalibration(0.1, (0.85, 0.15), (0.85, 0.15), anchored=True)
    Q = cal(P)
    assert (Q.argmax(1) == 0).mean() > (P.argmax(1) == 0).mean()
    assert np.abs(Q - [0.85, 0.15]).max() < np.abs(P - [0.85, 0.15]).max()
    np.testing.assert_array_equal(np.argsort(Q[:, 1], kind="stable"), np.argsort(P[:, 1], kind="stable"))
    assert OutputCalibration.from_dict({"temperature": 0.1, "train_prior": [0.85, 0.15],
                                        "prior": [0.85, 0.15]}) == cal


def test_a_boundary_biased_towards_a_small_segment_is_detected_from_the_labelled_users_alone():
    """17 and 3 labelled users; out of fold the network calls 9 of them the small segment: biased.
    Calling 4 is within chance; calling a segment no labelled user has is biased outright."""
    y = np.array([0] * 17 + [1] * 3)
    called = lambda n1: np.eye(2)[np.r_[np.zeros(20 - n1, int), np.ones(n1, int)]] * 0.8 + 0.1
    assert bias_pvalue(called(9), y) < EVIDENCE_ALPHA
    assert bias_pvalue(called(4), y) > 0.5
    assert bias_pvalue(called(3), y) == pytest.approx(1.0)
    assert bias_pvalue(np.eye(3)[[0] * 19 + [2]], y) == 0.0
    assert bias_pvalue(called(5), np.zeros(20, int)) == 0.0 and bias_pvalue(called(0), np.zeros(20, int)) == 1.0


def test_few_labels_is_some_segment_with_at_most_ten_labelled_users():
    assert few_labels(np.r_[np.zeros(90, int), np.ones(10, int)], 2)
    assert not few_labels(np.r_[np.zeros(90, int), np.ones(11, int)], 2)
    assert few_labels(np.r_[np.zeros(90, int), np.ones(50, int)], 3)  # a segment nobody labelled


@pytest.mark.parametrize("per_class, anchored", [(5, True), (40, False)])
def test_few_labels_anchor_and_shift_without_a_test_many_need_evidence(per_class, anchored):
    """Two well separated segments of 90/10, labelled `per_class` each: with 5 per segment the
    answer is anchored and shifted to the estimated prior whatever the tests say; with 40, whose
    out-of-fold counts match the labelled ones, it is neither anchored nor (the labelled shares
    being ½ against an estimate near 0.9, a clear shift) left at the labelled shares."""
    rng = np.random.default_rng(0)
    y_true = (rng.random(4000) < 0.1).astype(int)
    X = rng.normal(0, 1, (4000, 4)) + 3 * y_true[:, None]
    y = np.full(4000, -1)
    for k in (0, 1):
        y[rng.choice(np.flatnonzero(y_true == k), per_class, replace=False)] = k
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    last = clf.history_[-1]
    assert last["calibration_rule"] == ("few labels" if per_class <= 10 else "evidence")
    assert last["calibration_anchored"] is anchored
    np.testing.assert_allclose(clf.model_.ensemble.calibration.prior, last["class_prior"])
    assert last["class_prior"][0] > 0.7


def test_the_anchored_temperature_is_fitted_in_its_own_form():
    """Out-of-fold probabilities that over-call the small segment: anchored at the labelled shares
    the fitted τ moves those users back (fewer small-segment calls); the plain form keeps them."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(85, int), np.ones(15, int)]
    P = softmax(np.c_[rng.normal(0, 1, 100), rng.normal(0.3, 1, 100) + 1.5 * y] * 2, axis=1)
    pi = (0.85, 0.15)
    anchored, plain = OutputCalibration.fit(P, y, pi, pi, True), OutputCalibration.fit(P, y, pi, pi, False)
    assert anchored.anchored and not plain.anchored
    assert anchored.temperature == pytest.approx(fit_temperature(P, y, np.array(pi), 0.0))
    assert plain.temperature == pytest.approx(fit_temperature(P, y, np.array([0.5, 0.5]), 0.0))
    assert (anchored(P).argmax(1) == 1).sum() < (P.argmax(1) == 1).sum()
    np.testing.assert_array_equal(plain(P).argmax(1), P.argmax(1))


def test_a_prior_shift_is_the_bayes_adjustment():
    P = np.array([[0.5, 0.5], [0.7, 0.3]])
    Q = OutputCalibration(1.0, (0.5, 0.5), (0.8, 0.2))(P)
    np.testing.assert_allclose(Q, [[0.8, 0.2], [0.7 * 0.8 / (0.7 * 0.8 + 0.3 * 0.2), 0.3 * 0.2 / (0.7 * 0.8 + 0.3 * 0.2)]])


def test_the_fitted_answer_is_the_calibrated_ema_and_survives_save_and_load(moons, tmp_path):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    raw = DeepSegmentationClassifier(random_state=0, calibration="none", **SMALL).fit(X, y)
    last = clf.history_[-1]
    cal = clf.model_.ensemble.calibration
    assert cal.temperature == last["calibration_temperature"] and 0 < cal.temperature <= 1
    assert cal.prior == tuple(last["calibration_prior"])
    few = last["calibration_rule"] == "few labels"
    assert few == few_labels(y[y >= 0], 2)
    assert cal.anchored == last["calibration_anchored"] == (few or last["calibration_bias_p"] < EVIDENCE_ALPHA)
    assert cal.train_prior == tuple(floor_prior(labeled_shares(y[y >= 0], 2)))
    assert "calibration_temperature" not in raw.history_[-1] and raw.model_.ensemble.calibration is None
    np.testing.assert_allclose(clf.predict_proba(X), cal(raw.predict_proba(X)), rtol=1e-5, atol=1e-6)
    save_model(clf.model_, tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.ensemble.calibration == cal
    np.testing.assert_array_equal(loaded.ensemble(X.astype(np.float32)), clf.model_.ensemble(X.astype(np.float32)))


def test_too_few_labelled_users_leave_the_answer_uncalibrated(moons):
    X, y, _ = moons
    few = np.full(len(y), -1)
    few[np.flatnonzero(y == 0)[:2]], few[np.flatnonzero(y == 1)[:2]] = 0, 1
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, few)
    assert clf.history_[-1]["calibration"].startswith("skipped") and clf.model_.ensemble.calibration is None


def test_a_format_version_2_model_loads_with_the_anchored_calibration(moons, tmp_path):
    import json

    from deepseg.spark.persistence import MODEL_FILE

    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    save_model(clf.model_, tmp_path / "m")
    document = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    assert document["format_version"] == 3 and "anchored" in document["ensemble"]["calibration"]
    document["format_version"] = 2
    del document["ensemble"]["calibration"]["anchored"]
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps(document))
    loaded, _ = load_model(tmp_path / "m")
    cal = clf.model_.ensemble.calibration
    assert loaded.ensemble.calibration == OutputCalibration(cal.temperature, cal.train_prior, cal.prior, True)
    raw = DeepSegmentationClassifier(random_state=0, calibration="none", **SMALL).fit(X, y)
    np.testing.assert_allclose(loaded.ensemble(X), loaded.ensemble.calibration(raw.predict_proba(X)),
                               rtol=1e-5, atol=1e-6)


def test_a_format_version_1_model_loads_uncalibrated(moons, tmp_path):
    import json

    from deepseg.spark.persistence import MODEL_FILE

    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    save_model(clf.model_, tmp_path / "m")
    document = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    assert document["format_version"] == 3 and document["ensemble"]["calibration"]["temperature"] > 0
    document["format_version"] = 1
    del document["ensemble"]["calibration"]
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps(document))
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.ensemble.calibration is None
    raw = DeepSegmentationClassifier(random_state=0, calibration="none", **SMALL).fit(X, y)
    np.testing.assert_allclose(loaded.ensemble(X), raw.predict_proba(X), rtol=1e-5, atol=1e-6)
