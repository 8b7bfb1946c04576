"""DeepSegmentationClassifier: Algorithm 1 behind scikit-learn's semi-supervised API."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from deepseg.core._local import LocalBackend
from deepseg.core.embed import NetConfig
from deepseg.core.loop import DeepSegConfig, fit_deep_segmentation
from deepseg.core.ovr import split_semi_supervised
from deepseg.core.train import TrainConfig
from deepseg.core.tsvm import TSVMConfig

_N, _T, _D = NetConfig(), TrainConfig(), DeepSegConfig()
_S = _D.tsvm

#: The patent's values ([0104]-[0108]) of the settings whose deepseg defaults differ (those were
#: chosen by the labelled-only validation of benchmarks/tune.py, see the README), plus
#: unlabeled_weight and C_unlabeled, which are the same in both.
PATENT_PARAMS = {
    "retrain_lr_factor": 0.1,
    "unlabeled_loss": "mse",
    "pseudo_labels": "tsvm",
    "unlabeled_weight": 1.0,
    "mixup_alpha": 0.0,
    "input_noise": 0.0,
    "unlabeled_epochs": 10,
    "C": 1.0,
    "C_unlabeled": 1.0,
    "ema_decay": 0.8,
}


def _positive(kind):
    return [Interval(kind, 0, None, closed="neither")]


def _non_negative(kind):
    return [Interval(kind, 0, None, closed="left")]


class DeepSegmentationClassifier(TransformerMixin, ClassifierMixin, BaseEstimator):
    """Deep Segmentation (deep low-density separation) for semi-supervised classification.

    An embedding network f and a softmax head g are trained on the labelled points; then, for
    `n_iter` iterations, every point is embedded with f, one-vs-rest linear transductive SVMs
    label the unlabelled points with probability vectors, and g∘f is retrained on them, then on
    the labelled points (KL). The prediction is the exponential moving average of g∘f over the
    iterations. The patent retrains at a tenth of the learning rate with MSE to the TSVM
    probabilities (``DeepSegmentationClassifier(**PATENT_PARAMS)``); deepseg's defaults keep the
    rate, multiply the TSVM probabilities by g∘f's and use a certainty-weighted cross-entropy to
    the resulting hard label, add noise to the unlabelled batches and mix them up (mixup) for 20
    epochs instead of 10, weigh the TSVMs' labelled hinge loss more (C = 10) and average the
    iterations with ρ = 0.5 instead of 0.8, which validated better on labelled points.

    Follows scikit-learn's semi-supervised convention: ``y == -1`` marks unlabelled points.

    Parameters
    ----------
    hidden_size, embedding_size : int, default=128, 32
        Widths of f's two tanh layers.
    dropout : float, default=0.5
        Dropout rate after f's batch-normalisation.
    l2 : tuple of 3 floats, default=(1e-3, 1e-4, 1e-5)
        Tikhonov penalties of f's two layers and of g (decreasing through the network).
    label_smoothing : float, default=1e-3
        ε of the smoothed one-hot targets h(y).
    learning_rate : float, default=1e-3
        Adam's rate for the supervised start; iterations use `learning_rate * retrain_lr_factor`.
    batch_size : int, default=32
        Labelled mini-batch size.
    supervised_epochs : int, default=200
        Epochs of the supervised start.
    n_iter : int, default=6
        Iterations T of Algorithm 1 (0 gives the supervised network alone).
    retrain_lr_factor : float, default=1.0
        The patent uses 0.1.
    unlabeled_epochs : int or "auto", default="auto"
        Epochs of the step on unlabelled points (the patent: 10). "auto": 20 with up to 10
        labelled points per class, 30 above (pseudo-labels improve as labels grow; validated on
        labelled points, README).
    labeled_epochs : int, default=10
        Epochs of the KL step on labelled points.
    unlabeled_batch_size : int, default=256
    unlabeled_rows_per_epoch : int or None, default=None
        Train each unlabelled epoch on a fresh seeded random subset of about this many unlabelled points
        (None: all of them, as in the method): bounds retraining time on millions of users.
    unlabeled_weight : float, default=1.0
        Weight of the loss on unlabelled points.
    unlabeled_loss : {"weighted_ce", "mse"}, default="weighted_ce"
        "mse": mean squared error to the pseudo-label probability vectors (the patent).
        "weighted_ce": cross-entropy to the pseudo-label's argmax, each point weighted by its
        certainty 1 − H(p̂)/log c and its class by the inverse of the class's share of argmaxes
        (Iscen et al. 2019), so uncertain points and over-predicted classes count less.
    mixup_alpha : float, default=2.0
        > 0 trains on mixup of the unlabelled batches (Zhang et al. 2018): each batch is replaced
        by λ·batch + (1-λ)·shuffled batch, inputs and pseudo-labels alike, λ ~ Beta(α, α) folded
        onto [½, 1]. 0 turns it off (the patent).
    input_noise : float or "auto", default="auto"
        > 0 adds Gaussian noise of this standard deviation to the unlabelled points' features in
        every retraining batch, before mixup (a simple augmentation: the network learns to give
        nearby points the same segment). In the units of X: meant for standardised features, as
        deepseg's feature pipeline produces. 0 turns it off (the patent). "auto": 0.2 with up to
        10 labelled points per class, 0.2·√(10/m) with m > 10 per class (noise is a penalty that
        should weigh less as labels grow; validated on labelled points, README).
    pseudo_labels : {"tsvm_and_net", "tsvm"}, default="tsvm_and_net"
        "tsvm": the TSVM probabilities (the patent). "tsvm_and_net": their product with this
        iteration's g∘f probabilities, renormalised (a point is confidently labelled only where
        the TSVMs and the network agree).
    C, C_unlabeled : float, default=10.0, 1.0
        TSVM weights of the mean labelled and unlabelled hinge losses (C and C* of (4)); the
        patent's settings use C = 1.
    ramp_s : float, default=0.0
        Ramp point of the CCCP decomposition (0 is objective (4) exactly).
    tsvm_max_iter : int, default=30
        CCCP rounds per TSVM.
    tsvm_sample_size : int or None, default=None
        Fit the TSVMs on a seeded sample of at most this many unlabelled points (None: all).
    tsvm_calibration_folds : int, default=3
        Folds of labelled points for the out-of-fold fit of the TSVM probability temperature;
        0 or 1 fits it in-sample, which gives sharper pseudo-labels.
    ema_decay : float, default=0.5
        ρ of the exponential moving average over iterations (the patent: 0.8).
    random_state : int, RandomState or None, default=None
        Seeds weight initialisation, dropout, batch order and sampling.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    transduction_ : ndarray of shape (n_samples,)
        Label of each training point (labelled points keep theirs).
    history_ : list of dict
        Per-iteration diagnostics: TSVM objective, g∘f/TSVM agreement, class shares, seconds.
    n_iter_ : int
    n_features_in_ : int

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
    """

    _parameter_constraints: dict = {
        "hidden_size": _positive(Integral),
        "embedding_size": _positive(Integral),
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "l2": [tuple, list],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": _positive(Real),
        "batch_size": _positive(Integral),
        "supervised_epochs": _non_negative(Integral),
        "n_iter": _non_negative(Integral),
        "retrain_lr_factor": _positive(Real),
        "unlabeled_epochs": [*_non_negative(Integral), StrOptions({"auto"})],
        "labeled_epochs": _non_negative(Integral),
        "unlabeled_batch_size": _positive(Integral),
        "unlabeled_rows_per_epoch": [Interval(Integral, 1, None, closed="left"), None],
        "unlabeled_weight": _non_negative(Real),
        "unlabeled_loss": [StrOptions({"mse", "weighted_ce"})],
        "mixup_alpha": _non_negative(Real),
        "input_noise": [*_non_negative(Real), StrOptions({"auto"})],
        "pseudo_labels": [StrOptions({"tsvm", "tsvm_and_net"})],
        "C": _positive(Real),
        "C_unlabeled": _non_negative(Real),
        "ramp_s": [Interval(Real, None, 1, closed="neither")],
        "tsvm_max_iter": _positive(Integral),
        "tsvm_sample_size": [Interval(Integral, 1, None, closed="left"), None],
        "tsvm_calibration_folds": _non_negative(Integral),
        "ema_decay": [Interval(Real, 0, 1, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        hidden_size=_N.hidden_size,
        embedding_size=_N.embedding_size,
        dropout=_N.dropout,
        l2=_N.l2,
        label_smoothing=_D.label_smoothing,
        learning_rate=_T.learning_rate,
        batch_size=_T.batch_size,
        supervised_epochs=_T.supervised_epochs,
        n_iter=_D.n_iter,
        retrain_lr_factor=_T.retrain_lr_factor,
        unlabeled_epochs=_T.unlabeled_epochs,
        labeled_epochs=_T.labeled_epochs,
        unlabeled_batch_size=_T.unlabeled_batch_size,
        unlabeled_rows_per_epoch=_T.unlabeled_rows_per_epoch,
        unlabeled_weight=_T.unlabeled_weight,
        unlabeled_loss=_T.unlabeled_loss,
        mixup_alpha=_T.mixup_alpha,
        input_noise=_T.input_noise,
        pseudo_labels=_D.pseudo_labels,
        C=_S.C,
        C_unlabeled=_S.C_unlabeled,
        ramp_s=_S.ramp_s,
        tsvm_max_iter=_S.max_iter,
        tsvm_sample_size=_D.tsvm_sample_size,
        tsvm_calibration_folds=_D.tsvm_calibration_folds,
        ema_decay=_D.ema_decay,
        random_state=None,
    ):
        self.hidden_size = hidden_size
        self.embedding_size = embedding_size
        self.dropout = dropout
        self.l2 = l2
        self.label_smoothing = label_smoothing
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.supervised_epochs = supervised_epochs
        self.n_iter = n_iter
        self.retrain_lr_factor = retrain_lr_factor
        self.unlabeled_epochs = unlabeled_epochs
        self.labeled_epochs = labeled_epochs
        self.unlabeled_batch_size = unlabeled_batch_size
        self.unlabeled_rows_per_epoch = unlabeled_rows_per_epoch
        self.unlabeled_weight = unlabeled_weight
        self.unlabeled_loss = unlabeled_loss
        self.mixup_alpha = mixup_alpha
        self.input_noise = input_noise
        self.pseudo_labels = pseudo_labels
        self.C = C
        self.C_unlabeled = C_unlabeled
        self.ramp_s = ramp_s
        self.tsvm_max_iter = tsvm_max_iter
        self.tsvm_sample_size = tsvm_sample_size
        self.tsvm_calibration_folds = tsvm_calibration_folds
        self.ema_decay = ema_decay
        self.random_state = random_state

    def to_config(self) -> DeepSegConfig:
        """The estimator's parameters as the core's configuration."""
        if len(self.l2) != 3:
            raise ValueError(f"The 'l2' parameter of {type(self).__name__} must have 3 values; got {self.l2!r}.")
        return DeepSegConfig(
            net=NetConfig(self.hidden_size, self.embedding_size, self.dropout, tuple(float(v) for v in self.l2)),
            train=TrainConfig(
                learning_rate=self.learning_rate, batch_size=self.batch_size,
                supervised_epochs=self.supervised_epochs, retrain_lr_factor=self.retrain_lr_factor,
                unlabeled_epochs=self.unlabeled_epochs, labeled_epochs=self.labeled_epochs,
                unlabeled_batch_size=self.unlabeled_batch_size, unlabeled_weight=self.unlabeled_weight,
                unlabeled_rows_per_epoch=self.unlabeled_rows_per_epoch, unlabeled_loss=self.unlabeled_loss,
                mixup_alpha=self.mixup_alpha, input_noise=self.input_noise,
            ),
            tsvm=TSVMConfig(C=self.C, C_unlabeled=self.C_unlabeled, ramp_s=self.ramp_s, max_iter=self.tsvm_max_iter),
            n_iter=self.n_iter,
            label_smoothing=self.label_smoothing,
            ema_decay=self.ema_decay,
            tsvm_sample_size=self.tsvm_sample_size,
            tsvm_calibration_folds=self.tsvm_calibration_folds,
            pseudo_labels=self.pseudo_labels,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit on X with labels y, where y == -1 marks unlabelled points.

        Raises ValueError for NaN or ±inf in X or y and for labelled points of fewer than two
        classes. Without any unlabelled point it warns (UserWarning) and fits anyway: the
        supervised start, retrained on the labelled points (scikit-learn's API, and its
        common checks, expect a classifier to fit fully labelled data).
        """
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_min_samples=2)
        labelled, self.classes_, y_idx = split_semi_supervised(y)
        if labelled.all():
            warnings.warn(f"{type(self).__name__}: y has no unlabelled point (y == -1), so nothing is "
                          f"learnt from unlabelled data: the supervised network, retrained on the "
                          f"{len(y)} labelled points", UserWarning, stacklevel=3)
        config = self.to_config()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.model_ = fit_deep_segmentation(
            X[labelled], y_idx, LocalBackend(X[~labelled]), len(self.classes_), config, seed
        )
        self.history_ = self.model_.history
        self.n_iter_ = len(self.history_)
        self.transduction_ = self.classes_[np.argmax(self.model_.ensemble(X), axis=1)]
        self.transduction_[labelled] = y[labelled]
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # f computes in float32
        return tags

    def predict_proba(self, X):
        """EMA over iterations of softmax(g(f(X)))."""
        check_is_fitted(self)
        return self.model_.ensemble(validate_data(self, X, reset=False, dtype=np.float32))

    def staged_predict_proba(self, X):
        """The EMA prediction after each iteration 1..n_iter_ (after the supervised start if 0)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        for n in range(1, len(self.model_.ensemble.nets) + 1):
            yield self.model_.ensemble(X, n)

    def predict(self, X):
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def transform(self, X):
        """The embedding f(X) of the last iteration (n_samples, embedding_size)."""
        check_is_fitted(self)
        return self.model_.ensemble.embed(validate_data(self, X, reset=False, dtype=np.float32))
