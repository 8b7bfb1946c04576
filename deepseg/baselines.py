"""Semi-supervised baselines built from deepseg's own network and training loops.

Same scikit-learn interface as :class:`~deepseg.DeepSegmentationClassifier` (``y == -1`` marks
unlabelled points; ``predict``, ``predict_proba``, ``transduction_``) and the same g∘f, supervised
start and retraining schedule, so that a comparison isolates where the pseudo-labels come from:

* :func:`SupervisedNet` -- none (g∘f on the labelled points only);
* :class:`SelfTrainingNet` -- the network's own confident predictions;
* :class:`DeepLabelPropagation` -- label propagation on a kNN graph of the embedding f.

Raw-feature baselines need no code: :class:`~deepseg.TransductiveSVC`,
``sklearn.semi_supervised.LabelSpreading`` / ``LabelPropagation`` and ``LogisticRegression``.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import cg
from scipy.special import entr
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from deepseg.classifier import DeepSegmentationClassifier
from deepseg.core.embed import NetConfig, SegmentationNet, smooth_labels, weighted_cross_entropy
from deepseg.core.loop import DeepSegConfig
from deepseg.core.ovr import split_semi_supervised
from deepseg.core.params import keyword_init
from deepseg.core.pseudo import frozen_copy
from deepseg.core.train import (
    TrainConfig, embed, make_optimizer, predict_proba, set_learning_rate, shuffled_batches,
    torch_threads, train_epochs, train_labeled,
)


def SupervisedNet(**params) -> DeepSegmentationClassifier:
    """g∘f trained on the labelled points only: ``DeepSegmentationClassifier(n_iter=0, **params)``."""
    return DeepSegmentationClassifier(n_iter=0, **params)


class _PseudoLabelNet(ClassifierMixin, BaseEstimator):
    """deepseg's supervised start, then `n_rounds` of: pseudo-targets → `epochs` of weighted
    cross-entropy on them → `epochs` of KL on the labelled points (deepseg's schedule and retraining rate).
    Subclasses only say how a round's targets are made (`_targets`)."""

    _parameter_constraints: dict = {
        "n_rounds": [Interval(Integral, 0, None, closed="left")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "supervised_epochs": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_min_samples=2)
        labeled, self.classes_, y_idx = split_semi_supervised(y)
        c, tc = len(self.classes_), TrainConfig()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        X_l, H = X[labeled], smooth_labels(y_idx, c, DeepSegConfig().label_smoothing)
        self.history_ = []
        with torch_threads(tc.num_threads):
            torch.manual_seed(seed)
            net = SegmentationNet(X.shape[1], c, NetConfig())
            optimizer = make_optimizer(net, tc.learning_rate)
            train_labeled(net, optimizer, X_l, H, self.supervised_epochs, tc.batch_size, seed)
            set_learning_rate(optimizer, tc.learning_rate * tc.retrain_lr_factor)
            for r in range(1, self.n_rounds + 1):
                X_t, T_t, info = self._targets(net, X, labeled, y_idx, c)
                batches = lambda e, r=r: shuffled_batches(X_t, T_t, tc.unlabeled_batch_size, seed + 1000 * r + e)
                train_epochs(net, optimizer, batches, weighted_cross_entropy, self.epochs if len(X_t) else 0)
                train_labeled(net, optimizer, X_l, H, self.epochs, tc.batch_size, seed + 1000 * r)
                self.history_.append({"round": r, **info})
        self.net_, self.n_iter_ = frozen_copy(net), len(self.history_)
        self.transduction_ = self.classes_[np.argmax(predict_proba(self.net_, X), axis=1)]
        self.transduction_[labeled] = y[labeled]
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        return predict_proba(self.net_, validate_data(self, X, reset=False, dtype=np.float32))

    def predict(self, X):
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class SelfTrainingNet(_PseudoLabelNet):
    """Self-training (pseudo-labelling, Lee 2013) with deepseg's g∘f.

    Rule: after the supervised start, each round labels every unlabelled point whose largest
    softmax probability under the current network is at least `threshold` with its argmax
    (hard label; recomputed from scratch each round, so a point can enter, leave or change
    class), and retrains on those points, then on the labelled ones. Unconfident points are unused.

    Parameters: threshold=0.95, n_rounds=5, epochs=10 (per round and step), supervised_epochs=200,
    random_state=None. Attributes: classes_, transduction_, net_, n_iter_ (rounds), history_
    (confident count per round).
    """

    _parameter_constraints = {**_PseudoLabelNet._parameter_constraints,
                              "threshold": [Interval(Real, 0, 1, closed="both")]}

    __init__ = keyword_init(dict(threshold=0.95, n_rounds=5, epochs=10, supervised_epochs=200, random_state=None))

    def _targets(self, net, X, labeled, y_idx, c):
        X_u = X[~labeled]
        P = predict_proba(net, X_u)
        keep = P.max(axis=1) >= self.threshold
        T = np.eye(c, dtype=np.float32)[P[keep].argmax(axis=1)]
        return X_u[keep], T, {"n_confident": int(keep.sum())}


def knn_affinity(V: np.ndarray, n_neighbors: int = 50, gamma: float = 3.0) -> sp.csr_matrix:
    """W = A + Aᵀ (zero diagonal), a_ij = [v̂_iᵀv̂_j]_+^γ for j among the k nearest neighbours of i."""
    V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    n, k = len(V), min(n_neighbors, len(V) - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(V).kneighbors(V)
    sims = np.clip(1.0 - dist**2 / 2.0, 0.0, None) ** gamma  # unit vectors: vᵀw = 1 - ‖v - w‖²/2
    A = sp.csr_matrix((sims.ravel(), (np.repeat(np.arange(n), k + 1), idx.ravel())), shape=(n, n))
    W = (A + A.T).tocsr()
    W.setdiag(0.0)
    W.eliminate_zeros()
    return W


def diffuse(W, labeled_idx, y_idx, n_classes: int, alpha: float = 0.99, max_iter: int = 20) -> np.ndarray:
    """Z[:, j] solving (I - α D^-½ W D^-½) z = y_j by conjugate gradient (Zhou et al. 2004 as
    used by Iscen et al.), y_j = indicator of class j's labelled points / their count. Z ≥ 0."""
    d = np.asarray(W.sum(axis=1)).ravel()
    d_inv_sqrt = sp.diags(1.0 / np.sqrt(np.where(d > 0, d, 1.0)))
    A = sp.eye(W.shape[0]) - alpha * (d_inv_sqrt @ W @ d_inv_sqrt)
    Z = np.zeros((W.shape[0], n_classes))
    for j in range(n_classes):
        y = np.zeros(W.shape[0])
        members = np.asarray(labeled_idx)[np.asarray(y_idx) == j]
        y[members] = 1.0 / max(len(members), 1)
        Z[:, j] = cg(A, y, rtol=1e-6, maxiter=max_iter)[0]
    return np.clip(Z, 0.0, None)


class DeepLabelPropagation(_PseudoLabelNet):
    """Label propagation for deep semi-supervised learning (Iscen, Tolias, Avrithis, Chum, CVPR 2019).

    Each round embeds every point with f, builds a kNN graph on the normalised embedding
    (:func:`knn_affinity`), diffuses the labels by conjugate gradient (:func:`diffuse`), and
    trains g∘f with cross-entropy on the hard pseudo-labels of all points, weighted per point by
    ω_i = 1 - H(ẑ_i)/log c (normalised to max 1; labelled points: 1 and their own label) and per
    class by ζ_j = (n/c) / #points labelled j. Then deepseg's labelled KL step follows.

    Parameters: n_neighbors=50, gamma=3.0, alpha=0.99, max_iter=20 (CG), n_rounds=5, epochs=10,
    supervised_epochs=200, random_state=None. Attributes: classes_, transduction_, net_, n_iter_
    (rounds), history_ (mean weight of the unlabelled points and class counts per round).
    """

    _parameter_constraints = {
        **_PseudoLabelNet._parameter_constraints,
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    __init__ = keyword_init(dict(n_neighbors=50, gamma=3.0, alpha=0.99, max_iter=20, n_rounds=5, epochs=10,
                                 supervised_epochs=200, random_state=None))

    def _targets(self, net, X, labeled, y_idx, c):
        W = knn_affinity(embed(net, X), self.n_neighbors, self.gamma)
        Z = diffuse(W, np.flatnonzero(labeled), y_idx, c, self.alpha, self.max_iter)
        s = Z.sum(axis=1, keepdims=True)
        P = np.where(s > 0, Z / np.where(s > 0, s, 1.0), 1.0 / c)  # unreached points: uniform, weight 0
        w = 1.0 - entr(P).sum(axis=1) / np.log(c)
        w = w / max(w.max(), 1e-12)
        labels = P.argmax(axis=1)
        labels[labeled], w[labeled] = y_idx, 1.0
        counts = np.bincount(labels, minlength=c)
        zeta = len(X) / c / np.maximum(counts, 1)
        T = np.eye(c, dtype=np.float32)[labels] * (w * zeta[labels])[:, None].astype(np.float32)
        mean_weight = float(w[~labeled].mean()) if (~labeled).any() else float("nan")
        return X, T, {"mean_weight": mean_weight, "class_counts": counts.tolist()}
