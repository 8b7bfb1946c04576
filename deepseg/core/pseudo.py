"""⑤ From TSVM scores to pseudo-labels, and from per-iteration predictions to the EMA answer.

Both objects here are plain picklable callables `X -> probabilities`, so a backend can ship
them to wherever the users are (a Spark backend broadcasts them to executors).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from deepseg.core.embed import SegmentationNet
from deepseg.core.ovr import OvRTSVM
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
    """x ↦ p̂(x): embed with this iteration's f, then the one-vs-rest TSVM probabilities."""

    net: SegmentationNet
    tsvm: OvRTSVM

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.tsvm.predict_proba(embed(self.net, X)).astype(np.float32)


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
    training users and new ones alike.
    """

    nets: list[SegmentationNet]
    decay: float

    def weights(self, n_iterations: int | None = None) -> np.ndarray:
        return ema_weights(n_iterations or len(self.nets), self.decay)

    def __call__(self, X: np.ndarray, n_iterations: int | None = None) -> np.ndarray:
        """EMA after the first `n_iterations` iterations (all by default)."""
        n = n_iterations or len(self.nets)
        weights = self.weights(n)
        out = weights[0] * predict_proba(self.nets[0], X)
        for w, net in zip(weights[1:], self.nets[1:n]):
            out += w * predict_proba(net, X)
        return out

    def embed(self, X: np.ndarray) -> np.ndarray:
        """The embedding f of the last iteration."""
        return embed(self.nets[-1], X)


def pseudo_labels(P: np.ndarray) -> np.ndarray:
    """Hard labels (argmax) of probability vectors."""
    return np.argmax(P, axis=1)
