"""The class prior of the unlabelled users, the safeguard, and proof that the labels of unlabelled
users are never read (issue 19)."""

import numpy as np
import pytest
import torch

from deepseg import DeepSegmentationClassifier
from deepseg.core.ovr import fit_ovr_tsvm
from deepseg.core.prior import (MIN_PRIOR, SHIFT_ALPHA, answer_prior, auto_class_prior, calibrated, check_class_prior, em_prior,
                                fixed_per_segment,
                                estimate_class_prior, label_shift_pvalue, labeled_shares, resolve_class_prior)
from deepseg.core.pseudo import balancing_weights
from deepseg.core.safeguard import DEEPSEG, START, cv_possible, decide, stratified_folds
from deepseg.core.train import predict_proba

SMALL = dict(supervised_epochs=30, n_iter=2, unlabeled_epochs=2, labeled_epochs=2)


# --- the prior ------------------------------------------------------------------------------------


def gaussian_posteriors(n, prior, train_prior, seed=0):
    """Exact posteriors, under `train_prior`, of points drawn from N(±1, 1) with class shares `prior`."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior[1]).astype(int)
    x = rng.normal(np.where(y == 1, 1.0, -1.0), 1.0)
    like = np.stack([np.exp(-(x + 1) ** 2 / 2), np.exp(-(x - 1) ** 2 / 2)], axis=1) * train_prior
    return like / like.sum(axis=1, keepdims=True), y


def test_em_recovers_a_shifted_prior_from_calibrated_posteriors():
    P, _ = gaussian_posteriors(20000, np.array([0.8, 0.2]), np.array([0.5, 0.5]))
    pi = em_prior(P, np.array([0.5, 0.5]))
    assert pi[0] == pytest.approx(0.8, abs=0.02)
    # one step is the mean of the posteriors (classify-and-count), between the two
    one = em_prior(P, np.array([0.5, 0.5]), max_iter=1)
    np.testing.assert_allclose(one, P.mean(axis=0))
    assert 0.5 < one[0] < pi[0]


def test_a_network_no_better_than_chance_leaves_the_prior_at_the_labelled_shares():
    rng = np.random.default_rng(0)
    y_l = np.array([0] * 18 + [1] * 2)
    P_oof = rng.dirichlet([1, 1], size=20)  # confident and unrelated to y_l
    P_u = rng.dirichlet([1, 1], size=2000)
    Q, tau = calibrated(P_u, P_oof, y_l, np.array([0.9, 0.1]))
    assert tau < 0.2
    pi, _ = estimate_class_prior(P_u, P_oof, y_l, 2)
    assert pi[0] == pytest.approx(0.9, abs=0.03)  # plain temperature scaling would pull it to 0.5
    assert calibrated(P_u, None, y_l, np.array([0.9, 0.1]))[1] == 1.0


def test_a_calibrated_start_moves_the_prior_towards_the_unlabelled_shares():
    P_u, _ = gaussian_posteriors(5000, np.array([0.8, 0.2]), np.array([0.5, 0.5]), seed=1)
    P_oof, y_l = gaussian_posteriors(400, np.array([0.5, 0.5]), np.array([0.5, 0.5]), seed=2)
    pi, tau = estimate_class_prior(P_u, P_oof, y_l, 2)
    assert tau == pytest.approx(1.0, abs=0.3)
    assert 0.6 < pi[0] < 0.8


def test_a_fixed_count_per_class_of_an_imbalanced_population_shifts_the_answer():
    """10 + 10 labelled users of an 80/20 population: the labelled shares fail the test against the
    estimate, and the answer is shifted to the estimate."""
    P_u, _ = gaussian_posteriors(5000, np.array([0.8, 0.2]), np.array([0.5, 0.5]), seed=1)
    y_l = np.array([0] * 10 + [1] * 10)
    P_oof = np.where(np.eye(2)[y_l] == 1, 0.8, 0.2)  # a start right on every held-out user
    pi, record = auto_class_prior(P_u, P_oof, y_l, 2)
    assert record["label_shift"] and record["label_shift_p"] < SHIFT_ALPHA and pi[0] > 0.65
    np.testing.assert_allclose(answer_prior("auto", pi, record, y_l, 2), pi)


def test_labelled_users_drawn_in_proportion_keep_their_shares_in_the_answer():
    """Labelled users drawn at random from the same 80/20 population: their shares pass the test
    and are the answer's prior, although the estimate is off by several points; an explicit
    prior is the answer's prior whatever the test says."""
    P_u, _ = gaussian_posteriors(5000, np.array([0.8, 0.2]), np.array([0.8, 0.2]), seed=1)
    P_oof, y_l = gaussian_posteriors(200, np.array([0.8, 0.2]), np.array([0.8, 0.2]), seed=2)
    pi, record = auto_class_prior(P_u, P_oof, y_l, 2)
    assert abs(pi[0] - labeled_shares(y_l, 2)[0]) > 0.01
    assert not record["label_shift"] and record["label_shift_p"] >= SHIFT_ALPHA
    np.testing.assert_allclose(answer_prior("auto", pi, record, y_l, 2), labeled_shares(y_l, 2))
    np.testing.assert_allclose(answer_prior([0.6, 0.4], np.array([0.6, 0.4]), {}, y_l, 2), [0.6, 0.4])


def test_a_fixed_number_per_segment_is_equal_labelled_counts():
    assert fixed_per_segment(np.array([0] * 10 + [1] * 10), 2)
    assert fixed_per_segment(np.array([0, 1, 2, 2, 1, 0]), 3)
    assert not fixed_per_segment(np.array([0] * 17 + [1] * 3), 2)
    assert not fixed_per_segment(np.array([0, 1, 0, 1]), 3)  # a segment nobody labelled


def test_few_labels_shift_without_a_test_only_after_a_fixed_number_per_segment():
    """With a few labelled users in some segment, the answer takes the estimate whatever the test
    says after a fixed-number survey (equal counts), and keeps the labelled shares of a random
    draw (unequal counts) unless the χ² test rejects them."""
    estimate, kept = np.array([0.66, 0.34]), {"label_shift": False}
    random_draw, quota = np.array([0] * 17 + [1] * 3), np.array([0] * 10 + [1] * 10)
    np.testing.assert_allclose(answer_prior("auto", estimate, kept, quota, 2, few=True), estimate)
    np.testing.assert_allclose(answer_prior("auto", estimate, kept, random_draw, 2, few=True), [0.85, 0.15])
    np.testing.assert_allclose(answer_prior("auto", estimate, {"label_shift": True}, random_draw, 2, few=True),
                               estimate)
    np.testing.assert_allclose(answer_prior("auto", estimate, kept, quota, 2, few=False), [0.5, 0.5])
    np.testing.assert_allclose(answer_prior("uniform", np.array([0.5, 0.5]), kept, random_draw, 2, few=True),
                               [0.5, 0.5])


def test_the_label_shift_test_is_the_chi_squared_goodness_of_fit():
    from scipy.stats import chisquare

    y_l = np.array([0] * 10 + [1] * 10)
    assert label_shift_pvalue(y_l, np.array([0.8, 0.2])) == pytest.approx(chisquare([10, 10], [16, 4]).pvalue)
    assert label_shift_pvalue(y_l, np.array([0.8, 0.2])) < 0.001
    assert label_shift_pvalue(y_l, np.array([0.5, 0.5])) == pytest.approx(1.0)
    assert label_shift_pvalue(np.array([], dtype=int), np.array([0.5, 0.5])) == 1.0


@pytest.mark.parametrize("bad", ["labelled", "em", [0.5, 0.5, 0.0], [-0.1, 1.1], [np.nan, 1.0], [0.0, 0.0],
                                 [[0.5, 0.5]], ["a", "b"]])
def test_bad_class_priors_are_refused_naming_the_parameter(bad):
    with pytest.raises(ValueError, match="class_prior"):
        check_class_prior(bad, 2)


def test_class_prior_rules():
    y_l = np.array([0, 0, 0, 1])
    never = lambda: pytest.fail("estimated although not asked for")  # noqa: E731
    np.testing.assert_allclose(resolve_class_prior("labeled", y_l, 2, never), [0.75, 0.25])
    np.testing.assert_allclose(resolve_class_prior("uniform", y_l, 3, never), [1 / 3] * 3)
    np.testing.assert_allclose(resolve_class_prior((3, 1), y_l, 2, never), [0.75, 0.25])
    np.testing.assert_allclose(resolve_class_prior([1, 0], y_l, 2, never), np.array([1, MIN_PRIOR]) / (1 + MIN_PRIOR))
    assert resolve_class_prior("auto", y_l, 2, lambda: np.array([0.6, 0.4])).tolist() == [0.6, 0.4]


def test_unlabelled_class_weights_make_each_class_weigh_its_prior():
    Q = np.random.default_rng(0).dirichlet([5, 1, 1], size=1000)
    counts = np.bincount(Q.argmax(axis=1), minlength=3)
    prior = np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(counts * balancing_weights(Q, prior), 1000 * prior)


def test_the_tsvms_mean_decision_on_unlabelled_points_is_twice_the_prior_minus_one():
    rng = np.random.default_rng(0)
    Z_l, y_l = rng.normal(size=(30, 4)), np.arange(30) % 3
    Z_u = rng.normal(size=(300, 4))
    prior = np.array([0.6, 0.3, 0.1])
    tsvm = fit_ovr_tsvm(Z_l, y_l, Z_u, 3, class_prior=prior)
    np.testing.assert_allclose(tsvm.decision_function(Z_u).mean(axis=0), 2 * prior - 1, atol=1e-9)


def test_class_prior_reaches_the_config_and_is_recorded(moons):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, class_prior=[0.3, 0.7], safeguard="none", **SMALL).fit(X, y)
    assert clf.to_config().class_prior == (0.3, 0.7)
    np.testing.assert_allclose(clf.history_[-1]["class_prior"], [0.3, 0.7])
    auto = DeepSegmentationClassifier(random_state=0, safeguard="none", **SMALL).fit(X, y)
    last = auto.history_[-1]
    assert sum(last["class_prior"]) == pytest.approx(1.0) and last["prior_temperature"] > 0
    assert 0 <= last["label_shift_p"] <= 1
    shifted = last["label_shift"] or (last["calibration_rule"] == "few labels"
                                      and fixed_per_segment(y[y >= 0], 2))
    expected = last["class_prior"] if shifted else labeled_shares(y[y >= 0], 2)
    np.testing.assert_allclose(last["calibration_prior"], expected)
    np.testing.assert_allclose(auto.model_.ensemble.calibration.prior, expected)
    with pytest.raises(ValueError, match="class_prior"):
        DeepSegmentationClassifier(class_prior=[0.2, 0.3, 0.5], **SMALL).fit(X, y)


# --- the safeguard --------------------------------------------------------------------------------


def test_folds_are_stratified_and_spread_small_classes():
    y = np.array([0] * 9 + [1] * 6 + [2] * 1 + [3] * 1 + [4] * 1)
    folds = stratified_folds(y, 3, seed=0)
    for k in (0, 1):
        assert sorted(np.bincount(folds[y == k], minlength=3)) == [len(y[y == k]) // 3] * 3
    assert len(set(folds[y >= 2])) == 3  # three singletons, three folds
    np.testing.assert_array_equal(folds, stratified_folds(y, 3, seed=0))
    assert cv_possible(6, 3) and not cv_possible(5, 3)


def test_decision_keeps_the_start_only_when_it_scores_strictly_higher():
    y = np.array([0, 1, 0, 1])
    right, wrong = np.eye(2)[y], np.eye(2)[1 - y]
    half = np.eye(2)[[0, 0, 0, 0]]
    assert decide(y, right, half) == {"safeguard": START, "cv_accuracy_start": 1.0, "cv_accuracy_deepseg": 0.5}
    assert decide(y, half, right)["safeguard"] == DEEPSEG
    assert decide(y, half, half)["safeguard"] == DEEPSEG  # a tie keeps Deep Segmentation
    assert decide(y, wrong, half)["safeguard"] == DEEPSEG


def test_the_safeguard_returns_the_start_when_the_iterations_are_misled(moons):
    """A wrong prior (99.9% of class 0 on balanced moons) makes the iterations label nearly everyone 0;
    the labelled-only cross-validation sees it and the fit answers with its supervised start (without
    the linear teacher, whose straight boundary on the moons would blunt both the start and the misleading)."""
    X, y, _ = moons
    params = dict(random_state=0, class_prior=[0.999, 0.001], calibration="none", linear_teacher_epochs=0,
                  **{**SMALL, "unlabeled_epochs": 20, "labeled_epochs": 0})
    guarded = DeepSegmentationClassifier(**params).fit(X, y)
    unguarded = DeepSegmentationClassifier(**params, safeguard="none").fit(X, y)
    last = guarded.history_[-1]
    assert last["safeguard"] == START and last["cv_accuracy_start"] > last["cv_accuracy_deepseg"]
    assert last["safeguard_s"] > 0 and "safeguard" not in unguarded.history_[-1]
    np.testing.assert_allclose(guarded.predict_proba(X), predict_proba(guarded.model_.supervised, X), atol=1e-6)
    # the main fit is the same with or without the cross-validation (its own random state)
    np.testing.assert_array_equal(guarded.model_.iterated(X), unguarded.predict_proba(X))
    assert guarded.n_iter_ == 2


def test_the_safeguard_keeps_deep_segmentation_when_it_validates(moons):
    X, y, _ = moons
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    last = clf.history_[-1]
    assert last["safeguard"] == DEEPSEG and last["cv_accuracy_deepseg"] >= last["cv_accuracy_start"]
    assert len(clf.model_.ensemble.nets) == 2 and clf.model_.iterated is None


def test_too_few_labelled_users_skip_the_safeguard():
    X = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
    y = np.full(60, -1)
    y[:4] = [0, 1, 0, 1]
    clf = DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)
    assert clf.history_[-1]["safeguard"].startswith("skipped")
    assert clf.history_[-1]["prior_temperature"] == 1.0


# --- labels of unlabelled users are never read -------------------------------------------------------


def weights(result):
    nets = [result.supervised, *result.ensemble.nets] + ([*result.iterated.nets] if result.iterated else [])
    return [t.detach().numpy().copy() for net in nets for t in net.state_dict().values()] + [result.tsvm.coef]


def test_permuting_or_replacing_the_hidden_labels_changes_no_fitted_weight(moons):
    """The fit's input is built from the true labels as a user's pipeline would (hidden ones set to
    -1); with the hidden labels permuted, or replaced by random ones, every weight of every network,
    the TSVMs, the prior and the safeguard's scores are bit-identical. Changing one *labelled* label
    does change them, so the comparison can fail."""
    X, y_semi, y_true = moons
    lab = y_semi != -1
    rng = np.random.default_rng(1)

    def fit(truth):
        y = np.where(lab, truth, -1)
        torch.manual_seed(123)  # the global state must not matter either
        return DeepSegmentationClassifier(random_state=0, **SMALL).fit(X, y)

    permuted = y_true.copy()
    permuted[~lab] = rng.permutation(y_true[~lab])
    replaced = np.where(lab, y_true, rng.integers(0, 2, len(y_true)))
    reference = fit(y_true)
    for other in (fit(permuted), fit(replaced)):
        for a, b in zip(weights(reference.model_), weights(other.model_), strict=True):
            np.testing.assert_array_equal(a, b)
        assert _without_times(other.history_) == _without_times(reference.history_)
        assert other.model_.ensemble.calibration == reference.model_.ensemble.calibration is not None
    flipped = y_true.copy()
    flipped[np.flatnonzero(lab)[0]] = 1 - flipped[np.flatnonzero(lab)[0]]
    changed = fit(flipped)
    assert not all(np.array_equal(a, b) for a, b in zip(weights(reference.model_), weights(changed.model_)))


def _without_times(history):
    return [{k: v for k, v in h.items() if not k.endswith("_s")} for h in history]
