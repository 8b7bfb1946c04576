"""⑤ From TSVM scores to pseudo-labels, and from per-iteration predictions to the EMA answer.

Both objects here are plain picklable callables (`X -> retraining targets`, `X ->
probabilities`), so a backend can ship them to wherever the users are (a Spark backend
broadcasts them to executors).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import entr

from deepseg.core.calibration import OutputCalibration
from deepseg.core.embed import SegmentationNet
from deepseg.core.ovr import OvRTSVM
from deepseg.core.sparse import issparse, n_rows, sparse_rows_times
from deepseg.core.train import embed, predict_proba


def frozen_copy(net: SegmentationNet) -> SegmentationNet:
    """A detached evaluation-mode copy: later training of `net` does not change it."""
    clone = copy.deepcopy(net)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@dataclass
class PseudoLabeler:
    """x ↦ the retraining target of an unlabelled user.

    p̂(x): embed with this iteration's f, then the one-vs-rest TSVM probabilities (the patent's
    target). With `with_net`, p̂ is multiplied by g's own probabilities and renormalised, so a
    user's pseudo-label is the class both the TSVMs and g∘f find likely. With `class_weights`,
    the target is the hard label argmax p̂ weighted as in :func:`weighted_hard_targets`.
    """

    net: SegmentationNet
    tsvm: OvRTSVM
    with_net: bool = False
    class_weights: np.ndarray | None = None

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        Z = embed(self.net, X)
        P = self.tsvm.predict_proba(Z)
        if self.with_net:
            with torch.no_grad():
                P = P * torch.softmax(self.net.g(torch.as_tensor(Z)), dim=1).double().numpy()
            P /= P.sum(axis=1, keepdims=True)
        return P

    def __call__(self, X: np.ndarray) -> np.ndarray:
        P = self.probabilities(X)
        if self.class_weights is not None:
            P = weighted_hard_targets(P, self.class_weights)
        return P.astype(np.float32)


def balancing_weights(P: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """ζ_k = π_k / share of the users whose argmax is k: class k weighs π_k in total.

    π is the class prior (None: uniform, each class weighs the same); with the estimated prior of
    the unlabelled users, a class the pseudo-labels over-represent is weighed down to its share.
    """
    n, c = P.shape
    counts = np.bincount(P.argmax(axis=1), minlength=c)
    if prior is None:
        return n / c / np.maximum(counts, 1)
    return n * np.asarray(prior, dtype=np.float64) / np.maximum(counts, 1)


def weighted_hard_targets(P: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """One-hot of argmax p̂ scaled by certainty × class weight (Iscen et al., CVPR 2019).

    Certainty is ω = 1 − H(p̂)/log c (1 for a one-hot p̂, 0 for a uniform one); with
    :func:`~deepseg.core.embed.weighted_cross_entropy` a row's loss is scaled by ω·ζ_k.
    """
    n, c = P.shape
    labels = P.argmax(axis=1)
    certainty = 1.0 - entr(P).sum(axis=1) / np.log(c) if c > 1 else np.ones(n)
    T = np.zeros_like(P)
    T[np.arange(n), labels] = np.clip(certainty, 0.0, 1.0) * class_weights[labels]
    return T


def ema_weights(n_iterations: int, decay: float) -> np.ndarray:
    """Weights w_t with Σ_t w_t p_t = e_T for e_1 = p_1, e_t = ρ·e_{t-1} + (1-ρ)·p_t."""
    t = np.arange(1, n_iterations + 1)
    w = (1.0 - decay) * decay ** (n_iterations - t)
    w[0] = decay ** (n_iterations - 1)
    return w


@dataclass
class EMAEnsemble:
    """The answer of Algorithm 1: the exponential moving average of g_t(f_t(x)) over iterations t.

    Keeping each iteration's (small) network makes the EMA computable for any user, the
    training users and new ones alike. Scoring runs the T networks as one: their first layers
    as one matrix product, the rest as batched products (:class:`StackedNets`). With a
    `calibration` (:mod:`deepseg.core.calibration`) the average is calibrated before it is returned.
    """

    nets: list[SegmentationNet]
    decay: float
    calibration: OutputCalibration | None = None
    _stacked: "StackedNets | None" = field(default=None, init=False, repr=False, compare=False)

    def weights(self, n_iterations: int | None = None) -> np.ndarray:
        return ema_weights(n_iterations or len(self.nets), self.decay)

    def stacked(self) -> "StackedNets":
        if self._stacked is None:
            self._stacked = StackedNets(self.nets)
        return self._stacked

    def __call__(self, X: np.ndarray, n_iterations: int | None = None) -> np.ndarray:
        """EMA after the first `n_iterations` iterations (all by default)."""
        n = n_iterations or len(self.nets)
        if n == len(self.nets):
            return self._calibrated(self.stacked().ema(X, self.weights(n))[0])
        weights = self.weights(n)
        out = weights[0] * predict_proba(self.nets[0], X)
        for w, net in zip(weights[1:], self.nets[1:n]):
            out += w * predict_proba(net, X)
        return self._calibrated(out)

    def predict_with_embedding(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(EMA propensities, last iteration's embedding f(X)) in one pass."""
        P, Z = self.stacked().ema(X, self.weights(), embed_last=True)
        return self._calibrated(P), Z

    def _calibrated(self, P: np.ndarray) -> np.ndarray:
        return P if self.calibration is None or len(P) == 0 else self.calibration(P)

    def embed(self, X: np.ndarray) -> np.ndarray:
        """The embedding f of the last iteration."""
        return embed(self.nets[-1], X)


class StackedNets:
    """T evaluation-mode networks g∘f as stacked matrices, batch-norm folded into f's second layer.

    In evaluation mode batch-norm is the affine map h ↦ a·h + b and dropout the identity, so
    f(x) = tanh(W₂ diag(a) tanh(W₁x + b₁) + W₂b + b₂). Stacking the T nets' W₁ makes their first
    layers one (T·128)-wide product; the rest are batched products: one pass instead of T.
    """

    def __init__(self, nets: list[SegmentationNet]):
        with torch.no_grad():
            parts = [self._folded(net) for net in nets]
            self.W1 = torch.cat([p[0] for p in parts]).T.contiguous()       # d × T·H
            self.b1 = torch.cat([p[1] for p in parts])                       # T·H
            self.W2 = torch.stack([p[2].T for p in parts]).contiguous()      # T × H × E
            self.b2 = torch.stack([p[3] for p in parts])[:, None, :]         # T × 1 × E
            self.W3 = torch.stack([p[4].T for p in parts]).contiguous()      # T × E × c
            self.b3 = torch.stack([p[5] for p in parts])[:, None, :]         # T × 1 × c
        self.n_nets, self.hidden = len(nets), nets[0].f.dense1.out_features

    @staticmethod
    def _folded(net: SegmentationNet):
        f, bn = net.f, net.f.norm
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b = bn.bias - bn.running_mean * a
        return (f.dense1.weight, f.dense1.bias, f.dense2.weight * a, f.dense2.bias + f.dense2.weight @ b,
                net.g.dense.weight, net.g.dense.bias)

    @torch.no_grad()
    def ema(self, X: np.ndarray, weights: np.ndarray, embed_last: bool = False, batch_size: int = 2048):
        """Σ_t w_t softmax(g_t(f_t(X))), and f_T(X) if `embed_last` (else None). Rows go in chunks
        of `batch_size`: the T·128 hidden units of 2048 rows stay in cache (16384: 15-25% slower)."""
        w = torch.as_tensor(np.asarray(weights, np.float32))[:, None, None]
        P, Z = [], []
        sparse = issparse(X)
        for i in range(0, max(n_rows(X), 1), batch_size):
            if sparse:  # sparse rows times the stacked first layers (deepseg.core.sparse)
                chunk = X[i:i + batch_size].tocsr().astype(np.float32, copy=False)
                h = torch.tanh(sparse_rows_times(chunk, self.W1) + self.b1)
            else:
                x = torch.as_tensor(np.asarray(X[i:i + batch_size], np.float32))
                h = torch.tanh(torch.addmm(self.b1, x, self.W1))
            h = h.view(len(h), self.n_nets, self.hidden).transpose(0, 1)           # T × B × H
            z = torch.tanh(torch.baddbmm(self.b2, h, self.W2))                      # T × B × E
            p = torch.softmax(torch.baddbmm(self.b3, z, self.W3), dim=2)            # T × B × c
            P.append((w * p).sum(0).numpy())
            if embed_last:
                Z.append(z[-1].numpy())
        return np.concatenate(P), (np.concatenate(Z) if embed_last else None)


def pseudo_labels(P: np.ndarray) -> np.ndarray:
    """Hard labels (argmax) of probability vectors."""
    return np.argmax(P, axis=1)
