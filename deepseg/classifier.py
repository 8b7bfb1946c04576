"""DeepSegmentationClassifier: Algorithm 1 behind scikit-learn's semi-supervised API."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from deepseg.core._local import LocalBackend
from deepseg.core.loop import DeepSegConfig, fit_deep_segmentation
from deepseg.core.lsa import SparseReduction
from deepseg.core.ovr import split_semi_supervised
from deepseg.core.params import PARAMS, PATENT_PARAMS, keyword_init, numpydoc

__all__ = ["DeepSegmentationClassifier", "PATENT_PARAMS"]

class DeepSegmentationClassifier(TransformerMixin, ClassifierMixin, BaseEstimator):
    __doc__ = """Deep Segmentation (deep low-density separation) for semi-supervised classification.

    An embedding network f and a softmax head g are trained on the labelled points; then, for
    `n_iter` iterations, every point is embedded with f, one-vs-rest linear transductive SVMs
    label the unlabelled points with probability vectors, and g∘f is retrained on them, then on
    the labelled points (KL). The prediction is the exponential moving average of g∘f over the
    iterations, unless the safeguard's labelled-only cross-validation scores the supervised start
    higher (then the start is the answer). ``DeepSegmentationClassifier(**PATENT_PARAMS)`` is the
    method as the patent specifies it; where deepseg's defaults differ, and why: docs/method.md.

    Follows scikit-learn's semi-supervised convention: ``y == -1`` marks unlabelled points.

    Parameters
    ----------
{parameters}
    sparse_components : int or None, default=256
        ``scipy.sparse`` X with more columns (and rows) than this is reduced to this many dimensions
        before f: a truncated SVD of all rows (no label read), rows L2-normalised, centred, one common
        scale (latent semantic analysis, :mod:`deepseg.core.lsa`). None: f's first layer takes the
        sparse columns (:mod:`deepseg.core.sparse`; slower, and its directions see only labelled rows).
    random_state : int, RandomState or None, default=None
        Seeds weight initialisation, dropout, batch order and sampling.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    transduction_ : ndarray of shape (n_samples,)
        Label of each training point (labelled points keep theirs).
    history_ : list of dict
        Per-iteration diagnostics: TSVM objective, g∘f/TSVM agreement, class shares, seconds. The
        last entry also holds the class prior used (``class_prior``, and ``prior_temperature`` for
        "auto") and the safeguard's decision (``safeguard``: "deep segmentation" or "supervised
        start") with the out-of-fold accuracies it compared (``cv_accuracy_start``,
        ``cv_accuracy_deepseg``) and its seconds (``safeguard_s``).
    n_iter_ : int
    n_features_in_ : int
    reduction_ : SparseReduction or None
        The reduction of sparse input (``sparse_components``), None where X was not reduced.

    See Also
    --------
    TransductiveSVC : the one-vs-rest linear TSVM used inside, on its own.
    sklearn.semi_supervised.LabelSpreading : the graph-based alternative.

    References
    ----------
    US patent application 2021/0142152 A1, "User classification with semi-supervised machine
    learning" (Deep Segmentation). Collobert et al., "Large Scale Transductive SVMs", JMLR 2006.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from deepseg import DeepSegmentationClassifier
    >>> X, y_true = make_moons(300, noise=0.1, random_state=0)
    >>> y = np.full_like(y_true, -1); y[:10] = y_true[:10]
    >>> clf = DeepSegmentationClassifier(n_iter=2, random_state=0).fit(X, y)
    >>> clf.predict_proba(X).shape
    (300, 2)
    """.format(parameters=numpydoc().replace("\n", "\n    ").join(["    ", ""]))

    _parameter_constraints: dict = {p.name: list(p.constraints) for p in PARAMS} | {
        "sparse_components": [Interval(Integral, 1, None, closed="left"), None], "random_state": ["random_state"]}

    __init__ = keyword_init({**{p.name: p.default for p in PARAMS}, "sparse_components": 256, "random_state": None})

    def to_config(self) -> DeepSegConfig:
        """The estimator's parameters as the core's configuration."""
        try:
            return DeepSegConfig.from_params({p.name: getattr(self, p.name) for p in PARAMS})
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit on X with labels y, where y == -1 marks unlabelled points.

        X may be a ``scipy.sparse`` matrix (any format; taken as CSR, never densified): reduced by
        ``sparse_components``, or else its mini-batches go through f's first layer as sparse products
        (:mod:`deepseg.core.sparse`). Raises
        ValueError for NaN or ±inf in X (dense or the stored entries of sparse X) or y and for labelled
        points of fewer than two classes. Without any unlabelled point it warns (UserWarning) and fits anyway: the
        supervised start, retrained on the labelled points (scikit-learn's API, and its
        common checks, expect a classifier to fit fully labelled data).
        """
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_min_samples=2, accept_sparse="csr")
        labeled, self.classes_, y_idx = split_semi_supervised(y)
        if labeled.all():
            warnings.warn(f"{type(self).__name__}: y has no unlabelled point (y == -1), so nothing is "
                          f"learnt from unlabelled data: the supervised network, retrained on the "
                          f"{len(y)} labelled points", UserWarning, stacklevel=3)
        config = self.to_config()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.reduction_ = None
        if sp.issparse(X) and self.sparse_components is not None and min(X.shape) > self.sparse_components:
            self.reduction_ = SparseReduction.fit(X, self.sparse_components, seed)
            X = self.reduction_.transform(X)
        self.model_ = fit_deep_segmentation(
            X[labeled], y_idx, LocalBackend(X[~labeled]), len(self.classes_), config, seed
        )
        self.history_ = self.model_.history
        self.n_iter_ = len(self.history_)
        self.transduction_ = self.classes_[np.argmax(self.model_.ensemble(X), axis=1)]
        self.transduction_[labeled] = y[labeled]
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # f computes in float32
        tags.input_tags.sparse = True
        return tags

    def predict_proba(self, X):
        """EMA over iterations of softmax(g(f(X)))."""
        check_is_fitted(self)
        return self.model_.ensemble(self._features(X))

    def staged_predict_proba(self, X):
        """The EMA prediction after each iteration 1..n_iter_ (after the supervised start if 0)."""
        check_is_fitted(self)
        X = self._features(X)
        for n in range(1, len(self.model_.ensemble.nets) + 1):
            yield self.model_.ensemble(X, n)

    def predict(self, X):
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def transform(self, X):
        """The embedding f(X) of the last iteration (n_samples, embedding_size)."""
        check_is_fitted(self)
        return self.model_.ensemble.embed(self._features(X))

    def _features(self, X):
        """X validated against the fit, and reduced as the fit's X was."""
        X = validate_data(self, X, reset=False, dtype=np.float32, accept_sparse="csr")
        reduction = getattr(self, "reduction_", None)  # absent from estimators pickled before it existed
        return X if reduction is None else reduction.transform(X)
