"""Everything fixed by the seed: the latent spiral, the random non-linear map and the population's
categorical, event and survey parameters (see :mod:`deepseg.data.synthetic`)."""

from __future__ import annotations

import functools

import numpy as np

from deepseg.data._blocks import P_ANSWERS, P_CALIB, P_CATEG, P_EVENTS, P_MAP, S_STRUCT, make_rng
from deepseg.data._config import (
    CATEGORICAL_LEVELS,
    CATEGORICAL_NAMES,
    EVENT_ACTIONS,
    EVENT_PRODUCTS,
    segment_shares,
)

_R0, _R1 = 0.3, 1.0  # inner / outer spiral radius
_TURNS = 0.5  # windings of each arm
_WIDTH = 0.1  # arm half-width as a fraction of the radial gap between arms
_HIDDEN = 24  # width of the random tanh layer
_GAIN = 1.0  # scale of the random first layer (non-linearity)
_NUISANCE = 0.5  # weight of the nuisance coordinate relative to the spiral ones
_ACTION_BASE = {"view": 1.5, "click": 1.0, "create": 0.5, "edit": 0.2, "share": -0.3, "export": -0.6, "purchase": -1.2}


def sample_latent(rng: np.random.Generator, n: int, n_segments: int, dtype=np.float64):
    """Segments and latent coordinates ``[n, 3]`` = (x, y, h), all about in [-1, 1]."""
    u = rng.random((n, 4), dtype=dtype)
    cum = np.cumsum(segment_shares(n_segments))
    cum[-1] = 1.0
    seg = np.searchsorted(cum, u[:, 0], side="right").astype(np.int64)
    seg = np.minimum(seg, n_segments - 1)
    # uniform density along an arm (arc length ~ r dr): r^2 uniform
    r = np.sqrt(_R0**2 + u[:, 1] * (_R1**2 - _R0**2))
    gap = (_R1 - _R0) / (_TURNS * n_segments)  # radial gap between adjacent arms
    # arm thickness: triangular(-1, 1) ~ bounded, so the gaps stay empty
    r = r + (_WIDTH * gap) * (u[:, 2] + rng.random(n, dtype=dtype) - 1.0) * 2.0
    phi = (2 * np.pi / n_segments) * seg + (2 * np.pi * _TURNS / (_R1 - _R0)) * (r - _R0)
    z = np.empty((n, 3), dtype=dtype)
    z[:, 0] = r * np.cos(phi)
    z[:, 1] = r * np.sin(phi)
    z[:, 2] = 2.0 * u[:, 3] - 1.0
    return seg, z


class RandomMap:
    """Fixed random non-linear map latent -> standardised scores.

    One shared hidden layer ``tanh(z A + b)``; each named output group has its
    own random read-out drawn from its own stream (column ``j`` of a group does
    not depend on the group's width), standardised to zero mean / unit variance
    over a calibration sample of the latent distribution.
    """

    def __init__(self, seed: int, stream: int, n_segments: int, groups: dict[str, tuple[int, int]], dtype):
        r = make_rng(seed, stream, P_MAP)
        A = r.normal(0.0, _GAIN, (3, _HIDDEN))
        A[2] *= _NUISANCE
        b = r.uniform(-1.0, 1.0, _HIDDEN)
        Ws, self.slices, start = [], {}, 0
        for name, (key, k) in groups.items():
            Ws.append(make_rng(seed, stream, P_MAP, key).normal(0.0, 1.0, (k, _HIDDEN)).T)
            self.slices[name] = slice(start, start + k)
            start += k
        W = np.concatenate(Ws, axis=1)
        _, zc = sample_latent(make_rng(seed, stream, P_CALIB), 16384, n_segments)
        sc = np.tanh(zc @ A + b) @ W
        mu, sd = sc.mean(0), sc.std(0)
        sd[sd == 0] = 1.0
        self.A, self.b = A.astype(dtype), b.astype(dtype)
        self.W, self.c = (W / sd).astype(dtype), (-mu / sd).astype(dtype)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        H = np.tanh(z @ self.A + self.b)
        # einsum: no BLAS threads for this small product (faster on busy machines)
        return np.einsum("ij,jk->ik", H, self.W) + self.c


# --------------------------------------------------------------- structure
class Structure:
    """Everything fixed by the seed: the map, categorical / event / survey parameters."""

    def __init__(self, seed: int, n_segments: int, n_profile: int, n_categorical: int, n_questions: int):
        self.n_profile = n_profile
        self.cat_names = CATEGORICAL_NAMES[:n_categorical]
        P, A = len(EVENT_PRODUCTS), len(EVENT_ACTIONS)
        # score layout: each group has its own stream of read-out weights, so
        # that e.g. the events do not change with n_profile_features.
        groups = {
            "tenure": (0, 1),
            "events": (1, 4 + P + A),  # activity, recency, spread, duration, products, actions
            "profile": (2, n_profile),
        }
        for i, name in enumerate(self.cat_names):
            groups["cat_" + name] = (3 + i, len(CATEGORICAL_LEVELS[name]))
        self.map = RandomMap(seed, S_STRUCT, n_segments, groups, np.float64)
        r = make_rng(seed, S_STRUCT, P_EVENTS)
        self.product_base = r.normal(0.0, 0.5, P)
        self.product_duration = r.normal(0.0, 0.4, P)
        self.product_action = r.normal(0.0, 1.0, (P, A))
        self.action_base = np.array([_ACTION_BASE.get(a, 0.0) for a in EVENT_ACTIONS])
        self.action_weight = np.exp(self.product_action + self.action_base)  # [P, A]
        r = make_rng(seed, S_STRUCT, P_CATEG)
        self.cat_base = {n: r.normal(0.0, 0.7, len(CATEGORICAL_LEVELS[n])) for n in CATEGORICAL_NAMES}
        self.answer_profiles = _answer_profiles(make_rng(seed, S_STRUCT, P_ANSWERS), n_segments, n_questions)


def _answer_profiles(rng: np.random.Generator, n_segments: int, n_questions: int) -> np.ndarray:
    """Per-segment mean answers in [1.3, 4.7], chosen well apart (best of 64 draws)."""
    best, best_d = None, -1.0
    for _ in range(64):
        mu = rng.choice(np.array([1.3, 2.2, 3.0, 3.8, 4.7]), size=(n_segments, n_questions))
        mu = mu + rng.uniform(-0.15, 0.15, mu.shape)
        d = np.sqrt(((mu[:, None, :] - mu[None, :, :]) ** 2).sum(-1))
        d = d[np.triu_indices(n_segments, 1)].min()
        if d > best_d:
            best, best_d = mu, d
    return best


@functools.lru_cache(maxsize=16)
def structure(seed, n_segments, n_profile, n_categorical, n_questions) -> Structure:
    return Structure(seed, n_segments, n_profile, n_categorical, n_questions)
