"""Prototype variants of Algorithm 1 (issue 2, Build item 4) without editing deepseg/.

`VariantClassifier(opts=..., **deepseg_params)` runs a copy of deepseg.core.loop._fit with hooks:

prior        "labelled" (deepseg today: TSVM balance r_k = 2·mean(y_l == k) - 1)
             "em": unlabelled class prior estimated by EM prior adjustment (Saerens, Latinne &
             Decaestecker 2002) on the current g∘f probabilities of the unlabelled points, the
             labelled fractions as the training prior; r_k = 2·π̂_k - 1.
prior_every  re-estimate the prior each iteration (True) or once from the supervised net (False)
prior_out    also multiply the prediction by π̂/π_l (renormalised), i.e. prior-correct g∘f
target       "soft" (TSVM probabilities), "hard" (one-hot of the TSVM argmax), "sharpen" (p^(1/T))
loss         "mse" (deepseg), "ce" (cross-entropy to the targets)
teacher      "tsvm" (deepseg: the TSVM probabilities), "product" (TSVM × this iteration's frozen g∘f,
             renormalised: two different classifiers' agreement as the target)
weight       "none" (deepseg), "certainty": each unlabelled target row scaled by Iscen et al.'s
             ω_i = 1 - H(p_i)/log c (max 1) and the class weight ζ_j = (n/c)/#argmax j (only with
             loss "ce", where scaling the target scales the loss: deep label propagation's loss)
consistency  λ ≥ 0: during the unlabelled epochs also minimise λ·‖softmax(g(f(x + σε))) −
             softmax(g(f(x)))‖² over two dropout passes (Π-model, Laine & Aila 2017; the second
             pass detached), σ = `noise` on the standardised features
cstar_anneal list of factors of C* (e.g. [0.01, 0.1, 1]): CCCP is run to convergence with C* times
             each factor in turn, each warm-started from the previous solution (Joachims-style
             annealing); None = deepseg's single CCCP run. Implemented, not measured (no time).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data
from scipy.special import entr
from torch.nn import functional as F

from deepseg.classifier import DeepSegmentationClassifier
from deepseg.core import tsvm as tsvm_mod
from deepseg.core.embed import SegmentationNet, mse_loss, smooth_labels
from deepseg.core.loop import DeepSegResult
from deepseg.core.ovr import OvRTSVM, calibration_folds, fit_temperature, split_semi_supervised
from deepseg.core.pseudo import EMAEnsemble, frozen_copy
from deepseg.core.train import (
    embed, make_optimizer, optimizer_step, predict_proba, set_learning_rate, shuffled_batches, torch_threads,
    train_epochs, train_labeled,
)
from deepseg.core.tsvm import TSVMConfig, fit_binary_tsvm

DEFAULT_OPTS = {
    "prior": "labelled", "prior_every": True, "prior_out": False,
    "target": "soft", "sharpen_T": 0.5, "loss": "mse", "cstar_anneal": None,
    "teacher": "tsvm", "weight": "none", "consistency": 0.0, "noise": 0.1,
}


def em_prior(P: np.ndarray, train_prior: np.ndarray, n_iter: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Saerens et al. 2002: EM estimate of the class prior of points whose posteriors P were
    computed by a model trained under `train_prior`."""
    pi = train_prior.copy()
    for _ in range(n_iter):
        Q = P * (pi / train_prior)
        Q /= Q.sum(axis=1, keepdims=True)
        new = Q.mean(axis=0)
        if np.abs(new - pi).max() < tol:
            pi = new
            break
        pi = new
    return pi


def _fit_task(task, Z_l, y_l, Z_u, Z_cal, folds, config, balance, anneal):
    fold, k = task
    y_pm = np.where(y_l == k, 1.0, -1.0)
    r = None if balance is None else float(balance[k])
    if fold is not None:
        keep = folds != fold
        Z_l, y_pm, Z_u = Z_l[keep], y_pm[keep], Z_cal
    if not anneal:
        return fit_binary_tsvm(Z_l, y_pm, Z_u, config, balance=r)
    return fit_annealed(Z_l, y_pm, Z_u, config, r, anneal)


def fit_annealed(Z_l, y_pm, Z_u, config, r, factors):
    """C* annealing: CCCP from the previous solution with C* growing to its final value."""
    X_l = np.asarray(Z_l, np.float64)
    X_u = np.asarray(Z_u, np.float64)
    y = np.asarray(y_pm, np.float64)
    r = float(np.mean(y)) if r is None else r
    mu = X_u.mean(axis=0)
    d = X_l.shape[1]
    sup = tsvm_mod._Problem(X_l - mu, y, (X_u - mu)[:0], r, config)
    w = sup.minimise_convex(np.zeros(d), np.zeros(d), config.newton_max_iter)
    for f in factors:
        cfg = TSVMConfig(C=config.C, C_unlabeled=config.C_unlabeled * f, ramp_s=config.ramp_s,
                         smoothing=config.smoothing, max_iter=config.max_iter, tol=config.tol)
        prob = tsvm_mod._Problem(X_l - mu, y, X_u - mu, r, cfg)
        fl, fu = prob.margins(w)
        hist = [prob.ramp_value(w, fl, fu)]
        for _ in range(cfg.max_iter):
            v = prob.concave_slope(fu)
            w = prob.minimise_convex(w, v, cfg.newton_max_iter)
            fl, fu = prob.margins(w)
            hist.append(prob.ramp_value(w, fl, fu))
            if hist[-2] - hist[-1] <= cfg.tol * max(1.0, abs(hist[-1])):
                break
    intercept = r - float(w @ mu)
    return tsvm_mod.BinaryTSVM(coef=w, intercept=intercept, objective=float("nan"), n_iter=1)


def fit_ovr(Z_l, y_l, Z_u, n_classes, config, n_folds, seed, balance=None, anneal=None, calibration_size=20000):
    folds = calibration_folds(y_l, n_folds, seed)
    Z_cal = Z_u
    if len(Z_u) > calibration_size:
        Z_cal = Z_u[np.random.default_rng(seed).choice(len(Z_u), calibration_size, replace=False)]
    tasks = [(None, k) for k in range(n_classes)]
    if folds is not None:
        tasks += [(f, k) for f in range(n_folds) for k in range(n_classes)]
    fit = partial(_fit_task, Z_l=Z_l, y_l=y_l, Z_u=Z_u, Z_cal=Z_cal, folds=folds, config=config,
                  balance=balance, anneal=anneal)
    fitted = dict(zip(tasks, [fit(t) for t in tasks]))
    model = OvRTSVM(tuple(fitted[(None, k)] for k in range(n_classes)), 1.0)
    if folds is None:
        scores = model.decision_function(Z_l)
    else:
        scores = np.empty((len(Z_l), n_classes))
        for f in range(n_folds):
            held = folds == f
            fm = OvRTSVM(tuple(fitted[(f, k)] for k in range(n_classes)), 1.0)
            scores[held] = fm.decision_function(Z_l[held])
    return OvRTSVM(model.separators, fit_temperature(scores, y_l))


def ce_loss(logits, target):
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def train_consistent(net, optimizer, batches, loss, epochs, weight, lam, noise):
    """train_epochs plus the Π-model consistency term on each unlabelled batch."""
    net.train()
    for epoch in range(epochs):
        for xb, tb in batches(epoch):
            if len(xb) < 2:
                continue
            x = torch.as_tensor(xb, dtype=torch.float32)
            t = torch.as_tensor(tb, dtype=torch.float32)
            logits = net(x)
            with torch.no_grad():
                anchor = F.softmax(net(x + noise * torch.randn_like(x)), dim=1)
            value = weight * loss(logits, t) + lam * F.mse_loss(F.softmax(logits, dim=1), anchor)
            optimizer_step(net, optimizer, value)


def _fit(X_l, y_l, X_u, n_classes, config, seed, opts):
    torch.manual_seed(seed)
    tc = config.train
    X_l = np.asarray(X_l, dtype=np.float32)
    H = smooth_labels(y_l, n_classes, config.label_smoothing)
    net = SegmentationNet(X_l.shape[1], n_classes, config.net)
    optimizer = make_optimizer(net, tc.learning_rate)
    train_labeled(net, optimizer, X_l, H, tc.supervised_epochs, tc.batch_size, seed)
    supervised = frozen_copy(net)
    sample = np.asarray(X_u, dtype=np.float32)
    train_prior = np.bincount(y_l, minlength=n_classes) / len(y_l)
    set_learning_rate(optimizer, tc.learning_rate * tc.retrain_lr_factor)
    loss = {"mse": mse_loss, "ce": ce_loss}[opts["loss"]]
    snapshots, history, prior = [], [], None
    for it in range(1, config.n_iter + 1):
        Z_l, Z_u = embed(net, X_l), embed(net, sample)
        balance = None
        if opts["prior"] == "em":
            if prior is None or opts["prior_every"]:
                prior = em_prior(predict_proba(net, sample).astype(np.float64), train_prior)
            balance = 2.0 * prior - 1.0
        tsvm = fit_ovr(Z_l, y_l, Z_u, n_classes, config.tsvm, config.tsvm_calibration_folds, seed + it,
                       balance=balance, anneal=opts["cstar_anneal"])
        P = tsvm.predict_proba(Z_u)
        if opts["teacher"] == "product":
            P = P * predict_proba(net, sample)
            P /= P.sum(axis=1, keepdims=True)
        w = None
        if opts["weight"] == "certainty":
            assert opts["loss"] == "ce", "certainty weights scale the targets: cross-entropy only"
            w = 1.0 - entr(P).sum(axis=1) / np.log(n_classes)
            w /= max(w.max(), 1e-12)
            counts = np.bincount(P.argmax(axis=1), minlength=n_classes)
            w *= (len(P) / n_classes / np.maximum(counts, 1))[P.argmax(axis=1)]
        if opts["target"] == "hard":
            P = np.eye(n_classes)[P.argmax(axis=1)]
        elif opts["target"] == "sharpen":
            P = P ** (1.0 / opts["sharpen_T"])
            P /= P.sum(axis=1, keepdims=True)
        if w is not None:
            P = P * w[:, None]
        P = P.astype(np.float32)
        batches = lambda e, it=it: shuffled_batches(sample, P, tc.unlabeled_batch_size, seed + 1000 * it + e,
                                                   tc.unlabeled_rows_per_epoch)
        if opts["consistency"] > 0:
            train_consistent(net, optimizer, batches, loss, tc.unlabeled_epochs, tc.unlabeled_weight,
                             opts["consistency"], opts["noise"])
        else:
            train_epochs(net, optimizer, batches, loss, tc.unlabeled_epochs, tc.unlabeled_weight)
        train_labeled(net, optimizer, X_l, H, tc.labeled_epochs, tc.batch_size, seed + 1000 * it)
        snapshots.append(frozen_copy(net))
        history.append({"iteration": it, "prior": None if prior is None else prior.tolist(),
                        "tsvm_shares": np.bincount(P.argmax(1), minlength=n_classes).tolist()})
    if not snapshots:
        snapshots.append(supervised)
    res = DeepSegResult(EMAEnsemble(snapshots, config.ema_decay), supervised, None, history)
    res.prior_ratio = None if prior is None else prior / train_prior
    return res


class VariantClassifier(DeepSegmentationClassifier):
    """DeepSegmentationClassifier whose fit runs the prototype loop above with `opts`."""

    def __init__(self, *, opts=None, **params):
        super().__init__(**params)
        self.opts = opts

    @classmethod
    def _get_param_names(cls):
        return sorted(DeepSegmentationClassifier._get_param_names() + ["opts"])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        opts = {**DEFAULT_OPTS, **(self.opts or {})}
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_min_samples=2)
        labeled, self.classes_, y_idx = split_semi_supervised(y)
        config = self.to_config()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with torch_threads(config.train.num_threads):
            self.model_ = _fit(X[labeled], y_idx, X[~labeled], len(self.classes_), config, seed, opts)
        self.history_ = self.model_.history
        self.n_iter_ = len(self.history_)
        self.transduction_ = self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        self.transduction_[labeled] = y[labeled]
        return self

    def predict_proba(self, X):
        P = super().predict_proba(X)
        ratio = getattr(self.model_, "prior_ratio", None)
        if ratio is not None and {**DEFAULT_OPTS, **(self.opts or {})}["prior_out"]:
            P = P * ratio
            P /= P.sum(axis=1, keepdims=True)
        return P
