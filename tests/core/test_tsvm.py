import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from deepseg import TransductiveSVC
from deepseg.core.ovr import fit_ovr_tsvm
from deepseg.core.tsvm import TSVMConfig, fit_binary_tsvm, objective4


@pytest.fixture(scope="module")
def gap_problem():
    """Two tall clouds at x0 = ±2 with a low-density gap at x0 = 0; the two labelled points sit
    so that their own max-margin boundary is tilted and cuts both clouds."""
    rng = np.random.default_rng(0)
    n = 1000
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    X = np.column_stack([2 * y + 0.6 * rng.normal(size=n), 2.0 * rng.normal(size=n)])
    X_l, y_l = np.array([[1.5, 2.5], [-1.5, -2.5]]), np.array([1.0, -1.0])
    return X_l, y_l, X, y


def test_unlabeled_data_moves_the_boundary_into_the_gap(gap_problem):
    X_l, y_l, X_u, y_u = gap_problem
    supervised = fit_binary_tsvm(X_l, y_l, X_u, TSVMConfig(C_unlabeled=0.0))
    transductive = fit_binary_tsvm(X_l, y_l, X_u, TSVMConfig(C=1.0, C_unlabeled=1.0))
    acc_sup = np.mean(np.sign(supervised.decision_function(X_u)) == y_u)
    acc_tsvm = np.mean(np.sign(transductive.decision_function(X_u)) == y_u)
    assert acc_sup < 0.75
    assert acc_tsvm > 0.99
    # the boundary is (nearly) the vertical gap: w points along x0
    w = transductive.coef / np.linalg.norm(transductive.coef)
    assert abs(w[0]) > 0.95


def test_ramp_objective_never_increases_over_cccp_rounds(gap_problem):
    X_l, y_l, X_u, _ = gap_problem
    model = fit_binary_tsvm(X_l, y_l, X_u, TSVMConfig(C=1.0, C_unlabeled=2.0, tol=0.0, max_iter=15))
    history = np.array(model.history)
    assert len(history) >= 3
    assert np.all(np.diff(history) <= 1e-10)
    assert history[-1] < history[0]


def test_ramp_with_s_zero_is_objective_4(gap_problem):
    """R_0(t) + R_0(-t) = 1 + H(|t|): with no smoothing to speak of, the ramp objective CCCP
    minimises equals objective (4) up to the constant C*."""
    X_l, y_l, X_u, _ = gap_problem
    cfg = TSVMConfig(C=1.0, C_unlabeled=1.0, smoothing=1e-6)
    model = fit_binary_tsvm(X_l, y_l, X_u, cfg)
    assert model.history[-1] == pytest.approx(model.objective + cfg.C_unlabeled, rel=1e-4)
    assert model.objective == pytest.approx(
        objective4(model.coef, model.intercept, X_l, y_l, X_u, 1.0, 1.0)
    )


def test_balance_constraint_fixes_the_mean_unlabeled_output(gap_problem):
    X_l, y_l, X_u, _ = gap_problem
    for r in (-0.5, 0.0, 0.3):
        model = fit_binary_tsvm(X_l, y_l, X_u, balance=r)
        assert np.mean(model.decision_function(X_u)) == pytest.approx(r, abs=1e-9)
    # by default r is the labelled mean label
    model = fit_binary_tsvm(np.vstack([X_l, [[2.0, 0.0]]]), np.array([1.0, -1.0, 1.0]), X_u)
    assert np.mean(model.decision_function(X_u)) == pytest.approx(1 / 3, abs=1e-9)


def test_balance_constraint_moves_the_share_of_positives(gap_problem):
    X_l, y_l, X_u, _ = gap_problem
    shares = [np.mean(fit_binary_tsvm(X_l, y_l, X_u, balance=r).decision_function(X_u) > 0) for r in (-0.6, 0.6)]
    assert shares[0] < 0.45 < 0.55 < shares[1]


def test_ovr_probabilities_are_valid_vectors():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 4], [4, 0], [-4, -4]])
    y = rng.integers(0, 3, 600)
    Z = centres[y] + rng.normal(size=(600, 2))
    lab = np.zeros(600, bool)
    lab[:15] = True
    model = fit_ovr_tsvm(Z[lab], y[lab], Z[~lab], 3)
    P = model.predict_proba(Z)
    assert P.shape == (600, 3)
    assert np.all(P >= 0) and np.all(P <= 1)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert np.mean(P.argmax(axis=1) == y) > 0.95
    assert np.array_equal(P.argmax(axis=1), model.decision_function(Z).argmax(axis=1))


def test_estimator_transduction_and_errors():
    X = np.array([[-2.0], [-1.5], [-1.0], [1.0], [1.5], [2.0]])
    clf = TransductiveSVC().fit(X, np.array([0, -1, -1, -1, -1, 1]))
    assert clf.transduction_.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="at least 2 classes"):
        TransductiveSVC().fit(X, np.array([0, -1, -1, -1, -1, 0]))
    with pytest.raises(ValueError, match="C_unlabeled"):
        TransductiveSVC(C_unlabeled=-1).fit(X, np.array([0, -1, -1, -1, -1, 1]))


def test_convergence_warning_names_max_iter(gap_problem):
    X_l, y_l, X_u, _ = gap_problem
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        fit_binary_tsvm(X_l, y_l, X_u, TSVMConfig(max_iter=1, tol=0.0))
