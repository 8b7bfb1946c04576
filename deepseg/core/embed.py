"""③ The networks of Deep Segmentation: embedding f and softmax head g (patent [0104]).

f: R^d -> R^m is Dense(128, tanh) -> BatchNorm -> Dropout(0.5) -> Dense(32, tanh);
g: R^m -> P^c is one Dense(c) layer followed by softmax. Every weight gets Glorot-normal
initialisation and a Tikhonov (L2) penalty that decreases through the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepseg.core.params import default
from deepseg.core.sparse import SparseRows, TransposedLinear, sparse_linear


@dataclass(frozen=True)
class NetConfig:
    """Sizes and regularisation of f and g (defaults: :mod:`deepseg.core.params`, the patent's)."""

    hidden_size: int = default("hidden_size")
    embedding_size: int = default("embedding_size")
    dropout: float = default("dropout")
    # Tikhonov penalty per weight matrix: f's first layer, f's second layer, g.
    l2: tuple[float, float, float] = default("l2")


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask: the same distribution at a sixth of the cost on a CPU.

    torch's CPU ``bernoulli_`` spent a quarter of a training step on the mask. At rate ½ the
    mask is random bits, eight to a random byte; at other rates, one uniform float per element.
    Both come from torch's generator, so ``torch.manual_seed`` and checkpoints govern them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        if self.p == 0.5:
            n = math.prod(x.shape)
            bits = torch.randint(0, 256, ((n + 7) // 8,), dtype=torch.uint8).numpy()
            keep = torch.from_numpy(np.unpackbits(bits, count=n).reshape(x.shape))
        else:
            keep = torch.rand(x.shape) >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


class EmbeddingNet(nn.Module):
    """f: the user-feature embedding whose output the TSVMs separate linearly."""

    def __init__(self, n_features: int, config: NetConfig = NetConfig()):
        super().__init__()
        self.dense1 = nn.Linear(n_features, config.hidden_size)
        self.norm = nn.BatchNorm1d(config.hidden_size)
        self.dropout = Dropout(config.dropout)
        self.dense2 = nn.Linear(config.hidden_size, config.embedding_size)

    def forward(self, x: torch.Tensor | SparseRows) -> torch.Tensor:
        a = sparse_linear(self.dense1, x) if isinstance(x, SparseRows) else self.dense1(x)
        h = self.dropout(self.norm(torch.tanh(a)))
        return torch.tanh(self.dense2(h))


class SoftmaxHead(nn.Module):
    """g: embedding -> class logits; `softmax(g(z))` is the propensity vector."""

    def __init__(self, embedding_size: int, n_classes: int):
        super().__init__()
        self.dense = nn.Linear(embedding_size, n_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dense(z)


class SegmentationNet(nn.Module):
    """g∘f as one module, so optimisers, state dicts and snapshots handle both together.

    With `sparse_input`, f's first weight matrix is stored transposed (the same initial values:
    :class:`~deepseg.core.sparse.TransposedLinear`), for fast training on sparse rows.
    """

    def __init__(self, n_features: int, n_classes: int, config: NetConfig = NetConfig(),
                 sparse_input: bool = False):
        super().__init__()
        self.config = config
        self.f = EmbeddingNet(n_features, config)
        self.g = SoftmaxHead(config.embedding_size, n_classes)
        glorot_normal_(self)
        if sparse_input:
            self.f.dense1 = TransposedLinear.from_linear(self.f.dense1)

    def forward(self, x: torch.Tensor | SparseRows) -> torch.Tensor:
        return self.g(self.f(x))

    def penalized_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The weight matrices (leaf tensors) that `config.l2` penalises, in order through the network
        (f's first one transposed where it is stored so: the penalty is elementwise)."""
        first = getattr(self.f.dense1, "weight_t", None)
        return (self.f.dense1.weight if first is None else first), self.f.dense2.weight, self.g.dense.weight

    def penalty(self) -> torch.Tensor:
        """Tikhonov penalty Σ λ_k ||W_k||², decreasing through the network (training adds its
        gradient directly: :func:`deepseg.core.train.optimizer_step`)."""
        return sum(lam * w.pow(2).sum() for lam, w in zip(self.config.l2, self.penalized_weights()))


def glorot_normal_(module: nn.Module) -> None:
    """Glorot-normal weights and zero biases for every dense layer."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)


def smooth_labels(y: np.ndarray, n_classes: int, eps: float = 1e-3) -> np.ndarray:
    """h(y) of patent eq. (3): 1 - c·ε on the true class, ε elsewhere, rows renormalised to sum 1."""
    h = np.full((len(y), n_classes), eps, dtype=np.float32)
    h[np.arange(len(y)), y] = 1.0 - n_classes * eps
    return h / h.sum(axis=1, keepdims=True)


def kl_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(target ‖ softmax(logits))."""
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")


def mse_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between softmax(logits) and target probability vectors (patent [0106])."""
    return F.mse_loss(F.softmax(logits, dim=1), target)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -Σ_k t_k log softmax(logits)_k; a target row's sum is its weight."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
