"""Wide sparse input (``scipy.sparse``): f's first layer is the only place that sees it.

A sparse matrix is never densified. Training batches and scoring chunks are rows of a CSR matrix;
f's first layer multiplies them with its weights as a sparse product (:func:`sparse_linear`),
at a cost proportional to the non-zeros instead of rows × columns, and everything after it is
the same dense 128-wide network as for dense input.

Two training steps act on the input and are rewritten for sparse rows (:class:`SparseRows`):

* **mixup** λ·x + (1 − λ)·x[π] is applied after the first product, to W₁x + b: the product is
  linear, so this is the same function and gradient (up to float summation order) without
  doubling the non-zeros;
* **input noise** is added to the stored (non-zero) entries only. Noise on every one of d
  columns would make each batch dense, i.e. cost what a dense d-wide input costs; the absent
  entries of a sparse matrix (a word not in a text, a product not bought) stay exactly zero.
  This is the one place where sparse and dense input of the same matrix train differently.

For speed, a network trained on sparse input keeps its first weight matrix transposed in memory
(:class:`TransposedLinear`: d × 128 rows, one per input column), so that the forward product
gathers contiguous rows (torch.embedding_bag), the gradient is a contiguous d × 128 matrix
(scipy's CSR product with Xᵀ) and Adam updates it in one fused kernel, L2 penalty included
(:func:`deepseg.core.train.make_optimizer`). What remains is Adam's dense update of all d × 128
weights at every step (the L2 penalty and the moments touch every weight): on 10,000 columns at
batch 256 a step cost 2.7× a step on 64 dense columns (benchmarks/sparse_fit.py measures a fit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F


def issparse(X: Any) -> bool:
    return sp.issparse(X)


def n_rows(X: Any) -> int:
    """Number of rows of a dense array or a sparse matrix (``len`` refuses the latter)."""
    return X.shape[0] if sp.issparse(X) else len(X)


def as_float32(X: Any):
    """A float32 numpy array, or a float32 CSR matrix for sparse input (never densified)."""
    if sp.issparse(X):
        X = X.tocsr()
        return X if X.dtype == np.float32 else X.astype(np.float32)
    return np.asarray(X, dtype=np.float32)


def vstack(parts: list) -> Any:
    """Rows of `parts` stacked: CSR if any part is sparse, else a numpy array."""
    if any(sp.issparse(p) for p in parts):
        return sp.vstack([sp.csr_matrix(p) for p in parts], format="csr", dtype=np.float32)
    return np.concatenate(parts)


class SparseRows:
    """A mini-batch of CSR rows on its way into f's first layer (see the module doc).

    (`indptr`, `indices`, `data`) are the CSR arrays of the rows (`data` with noise added to the
    stored values when there is any); `mix` is mixup's (λ, π), applied after the first product.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int],
                 mix: tuple[float, torch.Tensor] | None = None):
        self.indptr, self.indices, self.data, self.shape, self.mix = indptr, indices, data, shape, mix

    @classmethod
    def of(cls, X) -> "SparseRows":
        X = X.tocsr()  # duplicate entries are summed by the products, as the dense matrix sums them
        return cls(X.indptr.astype(np.int64, copy=False), X.indices.astype(np.int64, copy=False),
                   np.ascontiguousarray(X.data, dtype=np.float32), X.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def with_noise(self, std: float, rng: np.random.Generator) -> "SparseRows":
        """N(0, std²) noise on the stored entries (the absent ones stay 0)."""
        noise = rng.standard_normal(len(self.data), dtype=np.float32)
        return SparseRows(self.indptr, self.indices, self.data + np.float32(std) * noise, self.shape, self.mix)

    def mixed(self, lam: float, perm: torch.Tensor) -> "SparseRows":
        return SparseRows(self.indptr, self.indices, self.data, self.shape, (lam, perm))

    def times(self, Wt: torch.Tensor) -> torch.Tensor:
        """These rows (n × d) times Wt (d × k, contiguous rows), without autograd: Σ_j x_ij Wt[j]."""
        if len(self.data) == 0:
            return torch.zeros(self.shape[0], Wt.shape[1], dtype=Wt.dtype)
        return F.embedding_bag(torch.from_numpy(self.indices), Wt, torch.from_numpy(self.indptr[:-1]),
                               per_sample_weights=torch.from_numpy(self.data), mode="sum")

    def transposed_times(self, G: np.ndarray) -> np.ndarray:
        """Xᵀ @ G (d × k) for these rows X (the CSR arrays of X are the CSC arrays of Xᵀ; Xᵀ as CSR
        multiplies about twice as fast as CSC, conversion included)."""
        Xt = sp.csc_matrix((self.data, self.indices, self.indptr), shape=self.shape[::-1]).tocsr()
        return np.asarray(Xt @ G)


def sparse_rows_times(csr, Wt: torch.Tensor) -> torch.Tensor:
    """CSR rows (n × d) times Wt (d × k, contiguous rows), without autograd."""
    return SparseRows.of(csr).times(Wt)


class _SparseProduct(torch.autograd.Function):
    """X @ Wt for sparse rows X; the gradient of Wt is Xᵀ @ G, a contiguous d × k matrix."""

    @staticmethod
    def forward(ctx, Wt: torch.Tensor, rows: SparseRows) -> torch.Tensor:
        ctx.rows = rows
        return rows.times(Wt.detach())

    @staticmethod
    def backward(ctx, G: torch.Tensor):
        grad = ctx.rows.transposed_times(G.detach().numpy())
        return torch.from_numpy(np.ascontiguousarray(grad, dtype=np.float32)), None


class TransposedLinear(nn.Module):
    """nn.Linear whose weight is stored transposed (`weight_t`, in_features × out_features).

    `weight` is the usual out × in view of it; state dicts read and write ``weight`` as
    nn.Linear does, so saved models and checkpoints do not depend on the layout.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> "TransposedLinear":
        out = cls(layer.in_features, layer.out_features)
        with torch.no_grad():
            out.weight_t.copy_(layer.weight.t())
            out.bias.copy_(layer.bias)
        return out

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_t.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        weight = self.weight if keep_vars else self.weight.detach().contiguous()
        destination[prefix + "weight"] = weight
        destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        if prefix + "weight" in state_dict:
            state_dict = dict(state_dict)
            state_dict[prefix + "weight_t"] = state_dict.pop(prefix + "weight").t()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, stored transposed"


def sparse_linear(layer: nn.Module, x: SparseRows) -> torch.Tensor:
    """`layer`(x) for sparse rows (an nn.Linear or a TransposedLinear), mixup applied after it."""
    if isinstance(layer, TransposedLinear):
        Wt = layer.weight_t
    else:  # a network trained on dense input, scoring sparse rows: one transposed copy
        Wt = layer.weight.t().contiguous()
    if torch.is_grad_enabled() and Wt.requires_grad:
        a = _SparseProduct.apply(Wt, x)
    else:
        a = x.times(Wt)
    a = a + layer.bias
    if x.mix is not None:
        lam, perm = x.mix
        a = lam * a + (1.0 - lam) * a[perm]
    return a
