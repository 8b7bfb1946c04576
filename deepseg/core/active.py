"""Active survey waves: whom to invite next, given the current model (numpy only).

A survey wave is worth most where the model is unsure of a user's segment, but the most
uncertain users tend to sit together in one confused corner of the embedding: a wave spent there
teaches the model one boundary many times. :func:`select_active` therefore draws the wave like
k-means++ seeding weighted by uncertainty: each next user with probability proportional to
``u · D²``, ``u`` the user's uncertainty (:func:`uncertainty_scores`) and ``D`` its distance in f's
space to the nearest user already drawn. Uncertain users are favoured, near duplicates of an
earlier pick are not.
"""

from __future__ import annotations

import numpy as np

__all__ = ["UNCERTAINTIES", "select_active", "uncertainty_scores"]

#: How :func:`uncertainty_scores` measures a user's doubt about its segment.
UNCERTAINTIES = ("margin", "entropy")


def uncertainty_scores(propensities, kind: str = "margin") -> np.ndarray:
    """Per row of `propensities` (n, c), a doubt in [0, 1]: 1 = no idea, 0 = certain.

    ``margin``: 1 − (p₁ − p₂), the gap between the two largest propensities (the two segments
    the user hesitates between). ``entropy``: −Σ p log p / log c, spread over all segments.
    """
    if kind not in UNCERTAINTIES:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, got {kind!r}")
    P = np.asarray(propensities, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 2:
        raise ValueError(f"propensities must be an (n, c) array with c >= 2, got shape {P.shape}")
    P = np.clip(P, 0.0, 1.0)
    if kind == "margin":
        top2 = -np.partition(-P, 1, axis=1)[:, :2]
        return np.clip(1.0 - (top2[:, 0] - top2[:, 1]), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(P > 0, P * np.log(P), 0.0)
    return np.clip(-plogp.sum(axis=1) / np.log(P.shape[1]), 0.0, 1.0)


def select_active(propensities, embedding, size: int, seed: int = 0, uncertainty: str = "margin",
                  diversity: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(row indices of the `size` users to invite, in the order drawn; their uncertainty).

    With `diversity` (the default) each next user is drawn with probability ∝ u · D² (u: its
    :func:`uncertainty_scores` of kind `uncertainty`; D: its distance in `embedding` to the
    nearest user drawn so far; the first ∝ u), so a wave spreads over the uncertain regions of
    f's space. Without it, the `size` most uncertain users (ties by row). Deterministic for a
    `seed`; `size` ≥ n returns every row, most uncertain first.
    """
    P = np.asarray(propensities)
    Z = np.asarray(embedding, dtype=np.float64)
    if len(Z) != len(P) or Z.ndim != 2:
        raise ValueError(f"embedding must be an (n, k) array with the propensities' n = {len(P)} rows, "
                         f"got shape {Z.shape}")
    if not isinstance(size, (int, np.integer)) or size < 0:
        raise ValueError(f"size must be a non-negative integer, got {size!r}")
    u = uncertainty_scores(P, uncertainty)
    n = len(u)
    if size >= n or not diversity:
        order = np.argsort(-u, kind="stable")[:min(size, n)]
        return order, u[order]
    rng = np.random.default_rng(seed)
    picked = np.empty(size, dtype=np.int64)
    free = np.ones(n, dtype=bool)
    d2 = np.full(n, np.inf)
    for i in range(size):
        weight = u * np.where(np.isinf(d2), 1.0, d2) * free
        if not weight.sum() > 0:  # every free user certain, or a duplicate of a pick: spread alone
            weight = np.where(np.isinf(d2), 1.0, d2) * free
            if not weight.sum() > 0:
                weight = free.astype(np.float64)
        j = int(rng.choice(n, p=weight / weight.sum()))
        picked[i], free[j] = j, False
        d2 = np.minimum(d2, ((Z - Z[j]) ** 2).sum(axis=1))
    return picked, u[picked]
