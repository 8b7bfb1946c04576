"""One-vs-rest linear TSVMs: c binary separators → one probability vector per point.

Probabilities: the c decision values s(x) are turned into p(x) = softmax(τ·s(x)) with one
temperature τ fitted by minimising the log-loss of out-of-fold decision values of the labelled
points (temperature scaling, Guo et al. 2017, with cross-fitting). One scalar cannot reorder classes, so argmax p = argmax s; it only sets how
sharp the vectors are. Calibration is measured (ECE) in the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from numbers import Integral, Real
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from deepseg.core.params import keyword_init
from deepseg.core.tsvm import BinaryTSVM, TSVMConfig, fit_binary_tsvm

Mapper = Callable[[Callable, Sequence], list]


@dataclass(frozen=True)
class OvRTSVM:
    """c fitted binary TSVMs plus the temperature that turns their scores into probabilities."""

    separators: tuple[BinaryTSVM, ...]
    temperature: float

    @property
    def coef(self) -> np.ndarray:
        return np.stack([s.coef for s in self.separators])

    @property
    def intercept(self) -> np.ndarray:
        return np.array([s.intercept for s in self.separators])

    def decision_function(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self.coef.T + self.intercept

    def predict_proba(self, Z: np.ndarray) -> np.ndarray:
        return softmax(self.temperature * self.decision_function(Z), axis=1)


def _fit_task(task, Z_l, y_l, Z_u, Z_cal, folds, config: TSVMConfig, balance=None) -> BinaryTSVM:
    """One binary TSVM: class k on all labelled points (fold None), or without fold `fold`;
    `balance[k]` is its class-balance target (None: the labelled mean)."""
    fold, k = task
    y_pm = np.where(y_l == k, 1.0, -1.0)
    r = None if balance is None else float(balance[k])
    if fold is None:
        return fit_binary_tsvm(Z_l, y_pm, Z_u, config, balance=r)
    keep = folds != fold
    return fit_binary_tsvm(Z_l[keep], y_pm[keep], Z_cal, config, balance=r)


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """τ minimising the mean log-loss of softmax(τ·scores) on labelled points."""

    def loss(log_tau):
        logp = log_softmax(np.exp(log_tau) * scores, axis=1)
        return -logp[np.arange(len(y)), y].mean()

    res = minimize_scalar(loss, bounds=(-4.0, 4.0), method="bounded")
    return float(np.exp(res.x))


def calibration_folds(y_l: np.ndarray, n_folds: int, seed: int) -> np.ndarray | None:
    """Stratified fold index per labelled point, or None when a class has too few points."""
    if n_folds < 2 or np.bincount(y_l).min() < n_folds:
        return None
    folds = np.empty(len(y_l), dtype=int)
    rng = np.random.default_rng(seed)
    for k in np.unique(y_l):
        idx = rng.permutation(np.flatnonzero(y_l == k))
        folds[idx] = np.arange(len(idx)) % n_folds
    return folds


def fit_ovr_tsvm(
    Z_l: np.ndarray,
    y_l: np.ndarray,
    Z_u: np.ndarray,
    n_classes: int,
    config: TSVMConfig = TSVMConfig(),
    mapper: Mapper | None = None,
    n_folds: int = 3,
    calibration_size: int = 20000,
    seed: int = 0,
    class_prior: np.ndarray | None = None,
) -> OvRTSVM:
    """Fit one TSVM per class; `mapper(fn, items)` runs them (a Spark backend runs them as tasks).

    The softmax temperature is fitted on out-of-fold decision values: labelled points are
    separable by the TSVMs trained on them, so in-sample scores would make it run to its bound.
    The fold fits use a seeded sample of at most `calibration_size` unlabelled points.
    `class_prior` π sets each TSVM's balance target r_k = 2π_k - 1 (mean decision value on the
    unlabelled points); None: the labelled share of class k, as in Collobert et al.
    """
    mapper = mapper or (lambda fn, items: [fn(i) for i in items])
    folds = calibration_folds(y_l, n_folds, seed)
    Z_cal = Z_u
    if len(Z_u) > calibration_size:
        Z_cal = Z_u[np.random.default_rng(seed).choice(len(Z_u), calibration_size, replace=False)]
    tasks = [(None, k) for k in range(n_classes)]
    if folds is not None:
        tasks += [(f, k) for f in range(n_folds) for k in range(n_classes)]
    balance = None if class_prior is None else 2.0 * np.asarray(class_prior, dtype=np.float64) - 1.0
    fit = partial(_fit_task, Z_l=Z_l, y_l=y_l, Z_u=Z_u, Z_cal=Z_cal, folds=folds, config=config, balance=balance)
    fitted = dict(zip(tasks, mapper(fit, tasks)))
    model = OvRTSVM(tuple(fitted[(None, k)] for k in range(n_classes)), 1.0)
    if folds is None:
        scores = model.decision_function(Z_l)
    else:
        scores = np.empty((len(Z_l), n_classes))
        for f in range(n_folds):
            held = folds == f
            fold_model = OvRTSVM(tuple(fitted[(f, k)] for k in range(n_classes)), 1.0)
            scores[held] = fold_model.decision_function(Z_l[held])
    return OvRTSVM(model.separators, fit_temperature(scores, y_l))


class TransductiveSVC(ClassifierMixin, BaseEstimator):
    """One-vs-rest linear transductive SVM (CCCP, class-balance constraint).

    Semi-supervised convention of scikit-learn: points with ``y == -1`` are unlabelled.
    Each class gets a binary TSVM minimising objective (4) of the Deep Segmentation patent
    (sums normalised by their sizes); see :mod:`deepseg.core.tsvm`.

    Parameters
    ----------
    C : float, default=1.0
        Weight of the mean hinge loss on labelled points.
    C_unlabeled : float, default=1.0
        Weight C* of the mean symmetric hinge loss on unlabelled points.
    ramp_s : float, default=0.0
        Ramp point s of the CCCP decomposition; 0 is objective (4) exactly.
    smoothing : float, default=0.1
        Width of the Huber-smoothed hinge (makes the convex steps Newton problems).
    max_iter : int, default=30
        Maximum CCCP rounds per class.
    tol : float, default=1e-5
        Relative decrease of the ramp objective under which CCCP stops.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (n_classes, n_features)
    intercept_ : ndarray of shape (n_classes,)
    temperature_ : float
        Softmax temperature for `predict_proba`, fitted on out-of-fold labelled decision values.
    transduction_ : ndarray of shape (n_samples,)
        Labels given to the training points (labelled points keep their label).
    objective_ : ndarray of shape (n_classes,)
        Objective (4) of each binary TSVM at its solution.
    n_iter_ : int
        Convex problems solved (the supervised start plus the CCCP rounds), maximum over classes.

    Examples
    --------
    >>> import numpy as np
    >>> from deepseg import TransductiveSVC
    >>> X = np.array([[-2.0], [-1.5], [-1.0], [1.0], [1.5], [2.0]])
    >>> y = np.array([0, -1, -1, -1, -1, 1])
    >>> TransductiveSVC().fit(X, y).transduction_.tolist()
    [0, 0, 0, 1, 1, 1]
    """

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "C_unlabeled": [Interval(Real, 0, None, closed="left")],
        "ramp_s": [Interval(Real, None, 1, closed="neither")],
        "smoothing": [Interval(Real, 0, 1, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }

    __init__ = keyword_init(dict(C=1.0, C_unlabeled=1.0, ramp_s=0.0, smoothing=0.1, max_iter=30, tol=1e-5))

    def _config(self) -> TSVMConfig:
        return TSVMConfig(
            C=self.C, C_unlabeled=self.C_unlabeled, ramp_s=self.ramp_s,
            smoothing=self.smoothing, max_iter=self.max_iter, tol=self.tol,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        labeled, self.classes_, y_idx = split_semi_supervised(y)
        model = fit_ovr_tsvm(X[labeled], y_idx, X[~labeled], len(self.classes_), self._config())
        self.model_ = model
        self.coef_, self.intercept_, self.temperature_ = model.coef, model.intercept, model.temperature
        self.objective_ = np.array([s.objective for s in model.separators])
        self.n_iter_ = max(s.n_iter for s in model.separators)
        self.transduction_ = self.classes_[np.argmax(model.decision_function(X), axis=1)]
        self.transduction_[labeled] = y[labeled]
        return self

    def decision_function(self, X):
        """One-vs-rest decision values (n_samples, n_classes); for two classes, s_1 - s_0."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def _scores(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.model_.decision_function(X)

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.model_.predict_proba(X)

    def predict(self, X):
        check_is_fitted(self)
        return self.classes_[np.argmax(self._scores(X), axis=1)]


def split_semi_supervised(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (labelled mask, classes, class indices of the labelled points) for y with -1 = unlabelled.

    Raises a ValueError naming the problem when fewer than two classes are labelled.
    """
    y = np.asarray(y)
    check_classification_targets(y)
    labeled = y != -1
    classes = np.unique(y[labeled])
    if len(classes) < 2:
        raise ValueError(
            f"y has labelled points (y != -1) of only one class {classes.tolist()}; "
            "need at least 2 classes"
        )
    return labeled, classes, np.searchsorted(classes, y[labeled])
