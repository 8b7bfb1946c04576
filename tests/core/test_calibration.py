"""The answer's calibration: a temperature fitted out of fold, and the shift to the class prior of the unlabelled users."""

import numpy as np
import pytest
from scipy.special import softmax

from deepseg import DeepSegmentationClassifier
from deepseg.core.calibration import (EVIDENCE_ALPHA, OutputCalibration, bias_lr_pvalue, few_labels,
                                      fit_answer_calibration, fit_temperature, fit_temperature_and_bias)
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


def test_the_temperature_and_bias_are_recovered_from_many_labels():
    """Labels drawn from softmax(0.5·log p + b): the fit finds τ ≈ 0.5 and b ≈ b (centred)."""
    rng = np.random.default_rng(0)
    P = softmax(3 * rng.normal(size=(20000, 3)), axis=1)
    b = np.array([1.0, -0.5, -0.5])
    y = np.array([rng.choice(3, p=q) for q in softmax(0.5 * np.log(P) + b, axis=1)])
    tau, bias = fit_temperature_and_bias(P, y)
    assert tau == pytest.approx(0.5, abs=0.03)
    np.testing.assert_allclose(bias, b - b.mean(), atol=0.08)


def _over_calling(n, rng):
    """Out-of-fold probabilities of 85/15 labelled users whose boundary calls the small segment for
    about a third of them (a boundary halfway between the few users of each segment)."""
    y = (np.arange(n) >= 0.85 * n).astype(int)
    score = rng.normal(0, 1, n) + 1.2 * y + 0.6
    return softmax(np.c_[np.zeros(n), 2 * score - 2 * 0.6 - 0.3], axis=1), y


def test_a_bias_shown_by_the_likelihood_ratio_test_moves_users_back_to_the_large_segment():
    """200 labelled users that the out-of-fold boundary over-calls as the small segment: the test
    rejects τ alone, and the answer calls the small segment less often (ranking unchanged)."""
    P, y = _over_calling(200, np.random.default_rng(0))
    pi = floor_prior(labeled_shares(y, 2))
    cal, record = fit_answer_calibration(P, y, pi, pi, few=False)
    assert record["calibration_bias_p"] < EVIDENCE_ALPHA and cal.bias and not cal.anchored
    assert (cal(P).argmax(1) == 1).sum() < (P.argmax(1) == 1).sum()
    np.testing.assert_array_equal(np.argsort(cal(P)[:, 1], kind="stable"), np.argsort(P[:, 1], kind="stable"))


def test_without_evidence_of_a_bias_the_temperature_alone_changes_no_segment():
    """Out-of-fold probabilities calibrated up to a temperature: the test keeps τ alone (no bias),
    and no user changes segment."""
    rng = np.random.default_rng(1)
    logits = 2 * rng.normal(size=(300, 3))
    y = np.array([rng.choice(3, p=q) for q in softmax(0.6 * logits, axis=1)])
    P = softmax(logits, axis=1)
    pi = floor_prior(labeled_shares(y, 3))
    cal, record = fit_answer_calibration(P, y, pi, pi, few=False)
    assert record["calibration_bias_p"] >= EVIDENCE_ALPHA and cal.bias == ()
    assert record["calibration_temperature_fit"] == pytest.approx(fit_temperature(P, y, np.full(3, 1 / 3), 0.0))
    np.testing.assert_array_equal(cal(P).argmax(1), P.argmax(1))


def test_the_likelihood_ratio_statistic_is_never_negative():
    P, y = _over_calling(60, np.random.default_rng(2))
    pi = labeled_shares(y, 2)
    plain = OutputCalibration.fit(P, y, pi, pi, anchored=False)
    assert bias_lr_pvalue(P, y, plain, plain) == pytest.approx(1.0)


def test_a_biased_calibration_survives_to_dict_and_from_dict():
    cal = OutputCalibration(0.7, (0.8, 0.2), (0.9, 0.1), bias=(0.4, -0.4))
    assert OutputCalibration.from_dict(cal.to_dict()) == cal
    P = np.array([[0.5, 0.5]])
    np.testing.assert_allclose(cal(P), softmax(np.log([[0.9 / 0.8, 0.1 / 0.2]]) + [0.4, -0.4], axis=1))


def test_many_labelled_users_pin_the_temperature_and_the_average_is_the_best_fit():
    """20,000 labelled users: the posterior over τ is one grid step wide, and the averaged answer is
    the best fit's."""
    rng = np.random.default_rng(0)
    logits = 4 * rng.normal(size=(20000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(0.3 * logits, axis=1)])
    P, pi = softmax(logits, axis=1), np.full(3, 1 / 3)
    best = OutputCalibration.fit(P, y, pi, (0.5, 0.3, 0.2), anchored=False)
    averaged = best.averaged(P, y)
    assert len(averaged.temperatures) <= 3 and averaged.temperature == pytest.approx(best.temperature, rel=0.05)
    np.testing.assert_allclose(averaged(P), best(P), atol=0.02)


def test_few_labelled_users_lean_the_answer_towards_the_prior():
    """17 and 3 labelled users cannot pin τ down: the posterior spreads over the grid, its weights
    sum to 1, and the averaged answer calls the small segment less often than the best τ's."""
    P, y = _over_calling(20, np.random.default_rng(3))
    users, _ = _over_calling(2000, np.random.default_rng(4))
    pi = floor_prior(labeled_shares(y, 2))
    best = OutputCalibration.fit(P, y, pi, pi, anchored=True)
    averaged = best.averaged(P, y)
    assert len(averaged.temperatures) > 10 and sum(averaged.weights) == pytest.approx(1.0)
    assert all(np.exp(-5) - 1e-12 <= t <= 1 + 1e-12 for t in averaged.temperatures)
    assert averaged.temperature < best.temperature
    assert (averaged(users).argmax(1) == 1).sum() < (best(users).argmax(1) == 1).sum()


def test_an_averaged_calibration_survives_to_dict_and_from_dict():
    P, y = _over_calling(20, np.random.default_rng(3))
    pi = floor_prior(labeled_shares(y, 2))
    cal = OutputCalibration.fit(P, y, pi, (0.9, 0.1), anchored=True).averaged(P, y)
    assert OutputCalibration.from_dict(cal.to_dict()) == cal
    np.testing.assert_allclose(OutputCalibration.from_dict(cal.to_dict())(P), cal(P))


def test_the_answer_does_not_extrapolate_beyond_the_out_of_fold_span():
    """The labelled users' out-of-fold log-odds span ±2; users the answer's network scores at ±9 are
    held near the span's ends (compressed by e^-5, not clipped: their order is kept), users inside
    the span are calibrated as before, and the span survives to_dict/from_dict."""
    rng = np.random.default_rng(0)
    z = rng.uniform(-2, 2, 200)
    y = (rng.random(200) < 1 / (1 + np.exp(-z))).astype(int)
    P_oof = softmax(np.c_[np.zeros(200), z], axis=1)
    cal = OutputCalibration.fit_bias(P_oof, y, (0.5, 0.5), (0.5, 0.5)).averaged(P_oof, y)
    spanned = cal.with_span(P_oof)
    inside = softmax(np.c_[np.zeros(5), np.linspace(-1.5, 1.5, 5)], axis=1)
    np.testing.assert_array_equal(spanned(inside), cal(inside))
    np.testing.assert_array_equal(spanned(P_oof), cal(P_oof))
    edges = softmax(np.array([[0.0, z.min()], [0.0, z.max()]]), axis=1)
    outside = softmax(np.c_[np.zeros(4), [-9.0, -8.0, 8.0, 9.0]], axis=1)
    Q, E = spanned(outside)[:, 1], spanned(edges)[:, 1]
    assert np.all(np.diff(Q) > 0)
    np.testing.assert_allclose(Q, [E[0], E[0], E[1], E[1]], atol=0.02)
    assert cal(outside)[0, 1] < Q[0] - 0.02 and cal(outside)[3, 1] > Q[3] + 0.02
    assert OutputCalibration.from_dict(spanned.to_dict()) == spanned


def test_the_fitted_answer_is_calibrated_within_its_out_of_fold_span():
    P, y = _over_calling(20, np.random.default_rng(3))
    pi = floor_prior(labeled_shares(y, 2))
    cal, _ = fit_answer_calibration(P, y, pi, pi, few=True)
    L = np.log(np.clip(P, 1e-12, 1))
    np.testing.assert_allclose(cal.log_span, [L.min(axis=0), L.max(axis=0)])


def test_few_labels_is_some_segment_with_at_most_ten_labelled_users():
    assert few_labels(np.r_[np.zeros(90, int), np.ones(10, int)], 2)
    assert not few_labels(np.r_[np.zeros(90, int), np.ones(11, int)], 2)
    assert few_labels(np.r_[np.zeros(90, int), np.ones(50, int)], 3)  # a segment nobody labelled


@pytest.mark.parametrize("per_class, anchored", [(5, True), (40, False)])
def test_few_labels_anchor_and_shift_without_a_test_many_need_evidence(per_class, anchored):
    """Two well separated segments of 90/10, labelled `per_class` each: with 5 per segment (a
    fixed-number survey) the answer is anchored and shifted to the estimated prior whatever the
    tests say; with 40, whose out-of-fold counts match the labelled ones, it is neither anchored
    nor (the labelled shares being ½ against an estimate near 0.9, a clear shift) left at the
    labelled shares."""
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


def test_few_labels_drawn_at_random_keep_their_shares_without_evidence():
    """The same 90/10 users, 20 labelled at random (17 and 3): the answer is anchored, and its prior
    stays at the labelled shares unless the χ² test rejects them against the estimate."""
    rng = np.random.default_rng(0)
    y_true = (rng.random(4000) < 0.1).astype(int)
    X = rng.normal(0, 1, (4000, 4)) + 3 * y_true[:, None]
    y = np.full(4000, -1)
    for k, n in ((0, 17), (1, 3)):
        y[rng.choice(np.flatnonzero(y_true == k), n, replace=False)] = k
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    last = clf.history_[-1]
    assert last["calibration_rule"] == "few labels" and last["calibration_anchored"]
    expected = last["class_prior"] if last["label_shift"] else [0.85, 0.15]
    np.testing.assert_allclose(clf.model_.ensemble.calibration.prior, expected)
    assert not last["label_shift"]  # 0.85 against an estimate near 0.9: no evidence of a shift


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
    assert cal.anchored == last["calibration_anchored"] == few
    assert bool(cal.bias) == (not few and last["calibration_bias_p"] < EVIDENCE_ALPHA)
    assert list(cal.bias) == last["calibration_bias"]
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
    saved = document["ensemble"]["calibration"]
    assert document["format_version"] == 6 and {"anchored", "bias", "temperatures", "weights", "log_span"} <= set(saved)
    document["format_version"] = 2
    for key in ("anchored", "bias", "temperatures", "weights", "log_span"):
        del saved[key]
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
    assert document["format_version"] == 6 and document["ensemble"]["calibration"]["temperature"] > 0
    document["format_version"] = 1
    del document["ensemble"]["calibration"]
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps(document))
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.ensemble.calibration is None
    raw = DeepSegmentationClassifier(random_state=0, calibration="none", **SMALL).fit(X, y)
    np.testing.assert_allclose(loaded.ensemble(X), raw.predict_proba(X), rtol=1e-5, atol=1e-6)
