"""Seeded synthetic users for tests, benchmarks and the Spark demo.

The generative story
--------------------
Every user has a latent **segment** ``k`` (``n_segments`` classes, unequal but
not extreme shares, see :func:`segment_shares`) and a latent **position** on a
non-linear manifold:

* two coordinates ``(x, y)`` on a ``c``-armed Archimedean spiral (two-moons /
  two-spirals generalised to ``c`` classes; each arm winds half a turn). Arm
  ``k`` is segment ``k``; arms are interleaved and separated by empty
  (low-density) gaps -- their thickness is bounded -- so the cluster
  assumption holds, while no linear boundary separates them;
* one nuisance coordinate ``h`` uniform in ``[-1, 1]`` ("company size") that
  moves every observation but carries no segment information.

The observed data are derived from the latent position through a fixed random
non-linear map (``tanh`` of a random affine map, random read-outs, standardised
scores) plus Gaussian ``noise`` (in units of the score's standard deviation)
and realistic marginal transforms (rounding, log-normal scales, categorical
sampling, Poisson event counts):

``users``
    ``user_id`` (int64, unique, ``1..n_users``), ``n_profile_features``
    numeric profile columns (:data:`PROFILE_FEATURES`: ``age``,
    ``tenure_days``, ``seats``, ...; integer ones int64, others float64; more
    than 10 are called ``profile_<j>``), ``n_categorical`` string columns
    (:data:`CATEGORICAL_LEVELS`: ``country``, ``plan``, ``device``,
    ``industry``, ...) whose level probabilities depend on the latent position,
    and ``signup_date`` (``datetime64[us]``, :data:`REFERENCE_DATE` minus the
    tenure).
``events``
    ``user_id, event_date (datetime64[us], midnight), product, action,
    duration_s`` -- Poisson many per user (mean ``events_per_user``, some users
    have none); the counts, the product / action mix, the durations, the
    recency and the activity span depend on the latent position. Rows are
    grouped by user in ``user_id`` order, not sorted by date.
``survey_responses``
    a random subset of users (each independently with probability
    ``survey_fraction``): ``user_id`` and Likert answers ``q1..qK`` (int64 in
    ``1..5``) = the segment's answer profile + ``survey_noise`` Gaussian noise,
    rounded and clipped. k-means on the answers recovers the segments (purity
    ~0.98-1.0 at the defaults, 5 segments).
``segments_truth``
    ``user_id, segment`` (int64) -- ground truth, never part of ``users``.

String columns use pandas' default string representation (object arrays before
pandas 3, the ``str`` dtype from pandas 3 on).

Reproducibility guarantees
--------------------------
Users are generated in fixed internal blocks of :data:`BLOCK_SIZE` users; block
``b`` draws from ``SeedSequence(seed, spawn_key=(1, b, part, ...))`` with one
stream per part (latent, profile, each categorical column, events, survey); the
fixed map and the other population parameters come from
``SeedSequence(seed, spawn_key=(0, ...))``. Hence, for a given
:class:`SyntheticConfig`:

* the output does **not depend on** ``chunk_size``: concatenating the chunks
  always gives the same tables, bit for bit;
* user ``i`` depends only on ``(config, i)``, not on ``n_users``: a larger
  ``n_users`` extends the data set and keeps the prefix;
* latent segments and positions depend only on ``(seed, n_segments)`` -- not on
  ``noise``, the column counts, ``events_per_user`` or the survey settings; the
  events and the survey do not depend on ``n_profile_features`` /
  ``n_categorical``; raising ``survey_fraction`` only adds respondents;
* bit-identical results are promised for the same numpy version and platform
  (numpy does not promise its random streams / SIMD math across versions).

:func:`make_dense` / :func:`iter_dense_chunks` give the same guarantees (blocks
of :data:`DENSE_BLOCK_SIZE` rows, their own streams).

Benchmark helpers and difficulty
--------------------------------
:func:`make_user_matrix` builds the per-user feature matrix (profile numerics,
one-hot categoricals, event aggregates; standardised) with pandas and uses the
**true segments of the surveyed users as labels** -- the Spark pipeline instead
labels respondents by clustering their survey answers. At the defaults (20 000
users, 1 % surveyed, 5 segments; mean over seeds 0-2, accuracy on the
unsurveyed users): logistic regression on the ~200 labelled rows 0.72,
``LabelSpreading(kernel="knn")`` 0.76 (defaults) / 0.81 (``n_neighbors=10,
alpha=0.9``), MLP on the labelled rows 0.82, MLP trained on 80 % of all true
labels 0.998 -- room for semi-supervised learning. :func:`make_dense` is a very
fast plain ``float32`` generator on the same manifold for performance
benchmarks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "BLOCK_SIZE",
    "CATEGORICAL_LEVELS",
    "DENSE_BLOCK_SIZE",
    "EVENT_ACTIONS",
    "EVENT_PRODUCTS",
    "PROFILE_FEATURES",
    "REFERENCE_DATE",
    "SyntheticConfig",
    "build_user_features",
    "iter_dense_chunks",
    "iter_user_chunks",
    "make_dense",
    "make_user_matrix",
    "make_user_tables",
    "segment_shares",
]

#: Users per internal generation block (chunks are assembled from blocks).
BLOCK_SIZE = 8192
#: Rows per internal block of :func:`iter_dense_chunks`.
DENSE_BLOCK_SIZE = 65536
#: "Today" of the synthetic company: signup and event dates lie before it.
REFERENCE_DATE = np.datetime64("2025-01-01", "D")

#: Numeric profile columns in order; ``n_profile_features`` takes a prefix,
#: extra ones are called ``profile_<j>`` (float64). Integer ones are int64.
PROFILE_FEATURES = (
    "age",
    "tenure_days",
    "seats",
    "monthly_spend",
    "logins_per_week",
    "team_size",
    "storage_gb",
    "api_calls_per_day",
    "support_tickets_90d",
    "integrations",
)
_INT_PROFILE = frozenset(
    {"age", "tenure_days", "seats", "team_size", "support_tickets_90d", "integrations"}
)
#: Heavy-tailed non-negative columns that :func:`build_user_features` log1p's.
_LOG_PROFILE = frozenset(
    {"tenure_days", "seats", "monthly_spend", "team_size", "storage_gb", "api_calls_per_day"}
)

#: Categorical columns in order (``n_categorical`` takes a prefix) and levels.
CATEGORICAL_LEVELS: dict[str, tuple[str, ...]] = {
    "country": ("US", "GB", "DE", "FR", "IN", "BR"),
    "plan": ("free", "pro", "business", "enterprise"),
    "device": ("desktop", "mobile", "tablet"),
    "industry": ("software", "finance", "retail", "healthcare", "education", "manufacturing"),
    "acquisition_channel": ("organic", "paid", "referral", "partner"),
    "os": ("windows", "macos", "linux", "ios", "android"),
}
_CATEGORICAL_NAMES = tuple(CATEGORICAL_LEVELS)

EVENT_PRODUCTS = ("editor", "analytics", "dashboard", "api", "mobile_app", "marketplace")
EVENT_ACTIONS = ("view", "create", "share", "export", "purchase")
_ACTION_BASE = {"view": 1.5, "click": 1.0, "create": 0.5, "edit": 0.2, "share": -0.3, "export": -0.6, "purchase": -1.2}

# ---------------------------------------------------------------- manifold
_R0, _R1 = 0.3, 1.0  # inner / outer spiral radius
_TURNS = 0.5  # windings of each arm
_WIDTH = 0.1  # arm half-width as a fraction of the radial gap between arms
_HIDDEN = 24  # width of the random tanh layer
_GAIN = 1.0  # scale of the random first layer (non-linearity)
_SHARE_RATIO = 2.5  # largest / smallest segment share
_CAT_SHARPNESS = 20.0  # categorical logit scale (higher = more informative)
_PRODUCT_SHARPNESS = 6.0  # product-mix logit scale
_ACTION_SHARPNESS = 6.0  # user part of the action logits
_NUISANCE = 0.5  # weight of the nuisance coordinate relative to the spiral ones
_ACTIVITY_SCALE = 0.6  # sd of log event rate
_WINDOW_LOG = 4.0  # log of the typical activity window (days)

_MAX_SEGMENTS = 64
_MAX_PROFILE = 64
_MAX_QUESTIONS = 100

# stream part ids
_S_STRUCT, _S_BLOCK, _S_DENSE_STRUCT, _S_DENSE_BLOCK = 0, 1, 2, 3
_P_LATENT, _P_PROFILE, _P_CATEG, _P_EVENTS, _P_SURVEY = 0, 1, 2, 3, 4
_P_MAP, _P_CALIB, _P_ANSWERS = 10, 11, 12


# ------------------------------------------------------------------ config
def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value!r}")
    return value


def _check_float(name: str, value, lo: float, hi: float, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    bad = (
        not math.isfinite(value)
        or (value <= lo if lo_open else value < lo)
        or (value >= hi if hi_open else value > hi)
    )
    if bad:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic user population (validated on creation).

    ``noise`` is the observation noise added to every latent-driven score, in
    units of the score's standard deviation (0 = noiseless map; the defaults
    are tuned so that the segments are learnable but not linearly easy).
    ``survey_noise`` is the standard deviation of the Likert answer noise.
    """

    n_users: int = 100_000
    n_segments: int = 5
    n_profile_features: int = 8
    n_categorical: int = 4
    events_per_user: float = 20.0
    survey_fraction: float = 0.01
    n_questions: int = 12
    noise: float = 0.05
    seed: int = 0
    survey_noise: float = 1.0

    def __post_init__(self) -> None:
        _check_int("n_users", self.n_users, 1)
        _check_int("n_segments", self.n_segments, 2, _MAX_SEGMENTS)
        _check_int("n_profile_features", self.n_profile_features, 1, _MAX_PROFILE)
        _check_int("n_categorical", self.n_categorical, 0, len(_CATEGORICAL_NAMES))
        _check_float("events_per_user", self.events_per_user, 0.0, 10_000.0)
        _check_float("survey_fraction", self.survey_fraction, 0.0, 1.0)
        _check_int("n_questions", self.n_questions, 1, _MAX_QUESTIONS)
        _check_float("noise", self.noise, 0.0, 100.0)
        _check_int("seed", self.seed, 0)
        _check_float("survey_noise", self.survey_noise, 0.0, 100.0)

    @property
    def segment_shares(self) -> np.ndarray:
        """Expected share of each segment (see :func:`segment_shares`)."""
        return segment_shares(self.n_segments)

    @property
    def profile_columns(self) -> tuple[str, ...]:
        return _profile_names(self.n_profile_features)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return _CATEGORICAL_NAMES[: self.n_categorical]

    @property
    def question_columns(self) -> tuple[str, ...]:
        return tuple(f"q{j + 1}" for j in range(self.n_questions))


def segment_shares(n_segments: int) -> np.ndarray:
    """Expected segment shares: geometric, largest/smallest = 2.5, decreasing.

    For 5 segments: ``[0.30, 0.24, 0.19, 0.15, 0.12]``.
    """
    n_segments = _check_int("n_segments", n_segments, 2, _MAX_SEGMENTS)
    w = _SHARE_RATIO ** (-np.arange(n_segments) / (n_segments - 1))
    return w / w.sum()


def _profile_names(n: int) -> tuple[str, ...]:
    return tuple(PROFILE_FEATURES[j] if j < len(PROFILE_FEATURES) else f"profile_{j}" for j in range(n))


# ------------------------------------------------------------------ latent
def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _sample_latent(rng: np.random.Generator, n: int, n_segments: int, dtype=np.float64):
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


class _Map:
    """Fixed random non-linear map latent -> standardised scores.

    One shared hidden layer ``tanh(z A + b)``; each named output group has its
    own random read-out drawn from its own stream (column ``j`` of a group does
    not depend on the group's width), standardised to zero mean / unit variance
    over a calibration sample of the latent distribution.
    """

    def __init__(self, seed: int, stream: int, n_segments: int, groups: dict[str, tuple[int, int]], dtype):
        r = _rng(seed, stream, _P_MAP)
        A = r.normal(0.0, _GAIN, (3, _HIDDEN))
        A[2] *= _NUISANCE
        b = r.uniform(-1.0, 1.0, _HIDDEN)
        Ws, self.slices, start = [], {}, 0
        for name, (key, k) in groups.items():
            Ws.append(_rng(seed, stream, _P_MAP, key).normal(0.0, 1.0, (k, _HIDDEN)).T)
            self.slices[name] = slice(start, start + k)
            start += k
        W = np.concatenate(Ws, axis=1)
        _, zc = _sample_latent(_rng(seed, stream, _P_CALIB), 16384, n_segments)
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
class _Structure:
    """Everything fixed by the seed: the map, categorical / event / survey parameters."""

    def __init__(self, seed: int, n_segments: int, n_profile: int, n_categorical: int, n_questions: int):
        self.n_profile = n_profile
        self.cat_names = _CATEGORICAL_NAMES[:n_categorical]
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
        self.map = _Map(seed, _S_STRUCT, n_segments, groups, np.float64)
        r = _rng(seed, _S_STRUCT, _P_EVENTS)
        self.product_base = r.normal(0.0, 0.5, P)
        self.product_duration = r.normal(0.0, 0.4, P)
        self.product_action = r.normal(0.0, 1.0, (P, A))
        self.action_base = np.array([_ACTION_BASE.get(a, 0.0) for a in EVENT_ACTIONS])
        self.action_weight = np.exp(self.product_action + self.action_base)  # [P, A]
        r = _rng(seed, _S_STRUCT, _P_CATEG)
        self.cat_base = {n: r.normal(0.0, 0.7, len(CATEGORICAL_LEVELS[n])) for n in _CATEGORICAL_NAMES}
        self.answer_profiles = _answer_profiles(_rng(seed, _S_STRUCT, _P_ANSWERS), n_segments, n_questions)


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
def _structure(seed, n_segments, n_profile, n_categorical, n_questions) -> _Structure:
    return _Structure(seed, n_segments, n_profile, n_categorical, n_questions)


# ------------------------------------------------------------ block engine
def _softmax_cdf(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, returned as cumulative probabilities (last column 1)."""
    logits = logits - logits.max(axis=1, keepdims=True)
    c = np.cumsum(np.exp(logits), axis=1)
    c /= c[:, -1:]
    return c


def _sample_rows(cdf: np.ndarray, rows: np.ndarray | None, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: category of ``u[i]`` under row ``rows[i]`` of ``cdf``."""
    k = np.zeros(u.shape[0], dtype=np.int64)
    cols = cdf[:, :-1].T.copy()
    for c in cols:
        k += u >= (c if rows is None else c[rows])
    return k


_PROFILE_MAKERS = {
    "age": lambda v: np.clip(np.rint(38.0 + 10.0 * v), 18, 80),
    "seats": lambda v: np.maximum(1.0, np.rint(np.exp(1.6 + 0.9 * v))),
    "monthly_spend": lambda v: np.round(np.exp(4.0 + 0.8 * v), 2),
    "logins_per_week": lambda v: np.round(np.maximum(0.0, 6.0 + 3.0 * v), 2),
    "team_size": lambda v: np.maximum(1.0, np.rint(np.exp(2.0 + 0.8 * v))),
    "storage_gb": lambda v: np.round(np.exp(2.5 + 1.0 * v), 3),
    "api_calls_per_day": lambda v: np.round(np.exp(3.0 + 1.2 * v), 1),
    "support_tickets_90d": lambda v: np.clip(np.rint(4.0 + 2.5 * v), 0, None),
    "integrations": lambda v: np.clip(np.rint(6.0 + 3.0 * v), 0, None),
}


def _block(cfg: SyntheticConfig, b: int) -> dict[str, np.ndarray]:
    """Generate block ``b`` (users ``b*BLOCK_SIZE ..``) as plain numpy arrays."""
    st = _structure(cfg.seed, cfg.n_segments, cfg.n_profile_features, cfg.n_categorical, cfg.n_questions)
    n, noise = BLOCK_SIZE, cfg.noise
    seg, z = _sample_latent(_rng(cfg.seed, _S_BLOCK, b, _P_LATENT), n, cfg.n_segments)
    sc = st.map(z)
    sl = st.map.slices
    out: dict[str, np.ndarray] = {
        "user_id": np.arange(b * n + 1, (b + 1) * n + 1, dtype=np.int64),
        "segment": seg,
        "latent": z,
    }

    # ---- profile numerics (+ tenure, always needed for signup_date); noise is
    # drawn column-major so column j does not depend on n_profile_features.
    rp = _rng(cfg.seed, _S_BLOCK, b, _P_PROFILE)
    eps = rp.standard_normal((cfg.n_profile_features + 1, n))
    t = sc[:, sl["tenure"]][:, 0] + noise * eps[0]
    tenure = np.clip(np.rint(np.exp(5.6 + 0.9 * t)), 1, 3650).astype(np.int64)
    prof = sc[:, sl["profile"]]
    for j, name in enumerate(_profile_names(cfg.n_profile_features)):
        if name == "tenure_days":
            col = tenure
        else:
            v = prof[:, j] + noise * eps[j + 1]
            col = _PROFILE_MAKERS[name](v) if name in _PROFILE_MAKERS else v
        out["p_" + name] = col.astype(np.int64 if name in _INT_PROFILE else np.float64)
    out["tenure"] = tenure

    # ---- categoricals (one stream per column)
    for i, name in enumerate(st.cat_names):
        rc = _rng(cfg.seed, _S_BLOCK, b, _P_CATEG, i)
        g = sc[:, sl["cat_" + name]]
        logits = _CAT_SHARPNESS * (g + noise * rc.standard_normal(g.shape)) + st.cat_base[name]
        out["c_" + name] = _sample_rows(_softmax_cdf(logits), None, rc.random(n))

    # ---- events
    re = _rng(cfg.seed, _S_BLOCK, b, _P_EVENTS)
    P, A = len(EVENT_PRODUCTS), len(EVENT_ACTIONS)
    e = sc[:, sl["events"]] + noise * re.standard_normal((n, 4 + P + A))
    act, rec, spread, dur = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    rate = cfg.events_per_user * np.exp(_ACTIVITY_SCALE * act - 0.5 * _ACTIVITY_SCALE**2)
    counts = re.poisson(rate)
    uidx = np.repeat(np.arange(n), counts)
    m = uidx.size
    u = re.random((2, m))
    prod = _sample_rows(_softmax_cdf(_PRODUCT_SHARPNESS * e[:, 4 : 4 + P] + st.product_base), uidx, u[0])
    # action probabilities per (user, product) ~ exp(user taste + product-specific mix)
    w_user = np.exp(np.clip(_ACTION_SHARPNESS * e[:, 4 + P :], -60.0, 60.0))
    acdf = np.cumsum(w_user[:, None, :] * st.action_weight, axis=2).reshape(n * P, A)
    acdf /= acdf[:, -1:]
    action = _sample_rows(acdf, uidx * P + prod, u[1])
    last_gap = np.exp(1.8 + 0.9 * rec)  # days since the last activity
    window = np.exp(_WINDOW_LOG + 0.7 * spread)  # activity spreads uniformly over this many days before
    age_days = np.floor(last_gap[uidx] + window[uidx] * re.random(m))
    age_days = np.minimum(age_days, tenure[uidx]).astype(np.int64)
    log_dur = (3.5 + 0.6 * dur)[uidx] + st.product_duration[prod] + 0.7 * re.standard_normal(m)
    out["e_user"] = uidx
    out["e_age_days"] = age_days
    out["e_product"] = prod
    out["e_action"] = action
    out["e_duration"] = np.round(np.exp(log_dur), 1)

    # ---- survey (answers drawn for everyone so they do not depend on the fraction)
    rs = _rng(cfg.seed, _S_BLOCK, b, _P_SURVEY)
    surveyed = rs.random(n) < cfg.survey_fraction
    ans = st.answer_profiles[seg] + cfg.survey_noise * rs.standard_normal((n, cfg.n_questions))
    out["s_mask"] = surveyed
    out["s_answers"] = np.clip(np.rint(ans), 1, 5).astype(np.int64)
    return out


def _slice_block(blk: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Rows ``lo:hi`` (block-relative) of a block; ``e_*`` event arrays follow their users."""
    out = {}
    if "e_user" in blk:
        elo, ehi = np.searchsorted(blk["e_user"], [lo, hi])
    for k, v in blk.items():
        if k == "e_user":
            out[k] = v[elo:ehi] - lo
        elif k.startswith("e_"):
            out[k] = v[elo:ehi]
        else:
            out[k] = v[lo:hi]
    return out


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "e_user"}
    if "e_user" in parts[0]:
        offsets = np.cumsum([0] + [len(p["segment"]) for p in parts[:-1]])
        out["e_user"] = np.concatenate([p["e_user"] + o for p, o in zip(parts, offsets)])
    return out


# pandas >= 3 stores strings as its ``str`` dtype; older pandas as object arrays
_PANDAS_STR = pd.Series(["a"]).dtype != object


def _str_col(codes: np.ndarray, levels: tuple[str, ...]):
    """String column from category codes (pandas' default string representation)."""
    if not _PANDAS_STR:  # object array sharing the level strings: fast, compact
        return np.asarray(levels, dtype=object)[codes]
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(levels)))
    return arr.cast(pa.string()).to_pandas()


def _frames(cfg: SyntheticConfig, a: dict[str, np.ndarray], with_latent: bool) -> dict[str, pd.DataFrame]:
    uid = a["user_id"]
    users = {"user_id": uid}
    for name in _profile_names(cfg.n_profile_features):
        users[name] = a["p_" + name]
    for name in _CATEGORICAL_NAMES[: cfg.n_categorical]:
        users[name] = _str_col(a["c_" + name], CATEGORICAL_LEVELS[name])
    users["signup_date"] = (REFERENCE_DATE - a["tenure"].astype("timedelta64[D]")).astype("datetime64[us]")
    users = pd.DataFrame(users)

    ev_date = (REFERENCE_DATE - a["e_age_days"].astype("timedelta64[D]")).astype("datetime64[us]")
    events = pd.DataFrame(
        {
            "user_id": uid[a["e_user"]],
            "event_date": ev_date,
            "product": _str_col(a["e_product"], EVENT_PRODUCTS),
            "action": _str_col(a["e_action"], EVENT_ACTIONS),
            "duration_s": a["e_duration"],
        }
    )
    m = a["s_mask"]
    survey = {"user_id": uid[m]}
    ans = a["s_answers"][m]
    for j, q in enumerate(cfg.question_columns):
        survey[q] = ans[:, j]
    survey = pd.DataFrame(survey)
    truth = pd.DataFrame({"user_id": uid, "segment": a["segment"]})
    out = {"users": users, "events": events, "survey_responses": survey, "segments_truth": truth}
    if with_latent:
        z = a["latent"]
        out["latent"] = pd.DataFrame({"user_id": uid, "x": z[:, 0], "y": z[:, 1], "h": z[:, 2]})
    return out


def _iter_ranges(n: int, chunk_size: int, block: int, make_block) -> Iterator[dict[str, np.ndarray]]:
    """Assemble ``[start, start+chunk_size)`` ranges from cached fixed-size blocks."""
    cache: tuple[int, dict] | None = None
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        parts = []
        for b in range(start // block, (stop - 1) // block + 1):
            if cache is None or cache[0] != b:
                cache = (b, make_block(b))
            lo = max(start, b * block) - b * block
            hi = min(stop, (b + 1) * block) - b * block
            blk = cache[1]
            parts.append(blk if (lo == 0 and hi == block) else _slice_block(blk, lo, hi))
        yield _concat_parts(parts)


def _resolve_config(config: SyntheticConfig | None, overrides: dict) -> SyntheticConfig:
    bad = set(overrides) - {f.name for f in dataclasses.fields(SyntheticConfig)}
    if bad:
        raise ValueError(f"unknown SyntheticConfig parameter(s) {sorted(bad)}")
    if config is None:
        return SyntheticConfig(**overrides)
    if not isinstance(config, SyntheticConfig):
        raise ValueError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config


def iter_user_chunks(
    n_users: int | None = None,
    chunk_size: int = 100_000,
    seed: int | None = None,
    config: SyntheticConfig | None = None,
    *,
    with_latent: bool = False,
    **params,
) -> Iterator[dict[str, pd.DataFrame]]:
    """Yield the synthetic population chunk by chunk.

    Each item is a dict of DataFrames ``users``, ``events``,
    ``survey_responses``, ``segments_truth`` (and ``latent`` -- ``user_id, x,
    y, h`` -- if ``with_latent``) for ``chunk_size`` consecutive users (the last
    chunk may be smaller). Parameters come from ``config`` (default
    :class:`SyntheticConfig`), overridden by ``n_users``, ``seed`` and any other
    :class:`SyntheticConfig` field given as keyword. The result does not depend
    on ``chunk_size`` (see the module docstring).
    """
    overrides = dict(params)
    if n_users is not None:
        overrides["n_users"] = n_users
    if seed is not None:
        overrides["seed"] = seed
    cfg = _resolve_config(config, overrides)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    for arrays in _iter_ranges(cfg.n_users, chunk_size, BLOCK_SIZE, lambda b: _block(cfg, b)):
        yield _frames(cfg, arrays, with_latent)


def make_user_tables(
    config: SyntheticConfig | None = None, *, with_latent: bool = False, **params
) -> dict[str, pd.DataFrame]:
    """The whole population in memory (one chunk); same keys as :func:`iter_user_chunks`."""
    cfg = _resolve_config(config, params)
    return next(iter_user_chunks(chunk_size=cfg.n_users, config=cfg, with_latent=with_latent))


# --------------------------------------------------------- feature matrix
def build_user_features(
    users: pd.DataFrame,
    events: pd.DataFrame,
    reference_date=REFERENCE_DATE,
) -> pd.DataFrame:
    """Per-user feature frame (index ``user_id``, same order as ``users``), unscaled.

    Columns: the numeric profile columns (heavy-tailed ones as ``log1p``),
    ``account_age_days`` if ``tenure_days`` is absent, one-hot categoricals
    ``<col>=<level>`` over the fixed :data:`CATEGORICAL_LEVELS`, and event
    aggregates: ``log_n_events``, ``log_n_product=<p>``, ``log_n_action=<a>``
    (log1p counts per :data:`EVENT_PRODUCTS` / :data:`EVENT_ACTIONS`),
    ``log_mean_duration`` (mean of ``log1p(duration_s)``), ``log_recency_days``
    (days from the last event to ``reference_date``) and
    ``log_active_span_days`` (last minus first event day). Users without
    events get 0 counts, the population mean duration, and recency = span =
    their account age. Vectorised (bincount / lexsort), no per-user Python.
    """
    n = len(users)
    uid = users["user_id"].to_numpy(np.int64)
    order = np.argsort(uid, kind="stable")
    ref = np.datetime64(reference_date, "D")
    cols: dict[str, np.ndarray] = {}
    num_names = [c for c in users.columns if c in PROFILE_FEATURES or c.startswith("profile_")]
    for c in num_names:
        v = users[c].to_numpy(np.float64)
        cols[c] = np.log1p(np.maximum(v, 0.0)) if c in _LOG_PROFILE else v
    signup = users["signup_date"].to_numpy().astype("datetime64[D]")
    account_age = (ref - signup).astype(np.float64)
    if "tenure_days" not in users.columns:
        cols["account_age_days"] = np.log1p(np.maximum(account_age, 0.0))
    for c, levels in CATEGORICAL_LEVELS.items():
        if c in users.columns:
            codes = pd.Categorical(users[c], categories=list(levels)).codes
            for i, lev in enumerate(levels):
                cols[f"{c}={lev}"] = (codes == i).astype(np.float64)

    # events -> row index of users
    ev_uid = events["user_id"].to_numpy(np.int64)
    pos = np.searchsorted(uid, ev_uid, sorter=order)
    pos = np.minimum(pos, n - 1)
    row = order[pos]
    known = uid[row] == ev_uid
    row = row[known]
    P, A = len(EVENT_PRODUCTS), len(EVENT_ACTIONS)
    pc = pd.Categorical(events["product"].to_numpy()[known], categories=list(EVENT_PRODUCTS)).codes
    ac = pd.Categorical(events["action"].to_numpy()[known], categories=list(EVENT_ACTIONS)).codes
    n_ev = np.bincount(row, minlength=n).astype(np.float64)
    ok = pc >= 0
    cnt_p = np.bincount(row[ok] * P + pc[ok], minlength=n * P).reshape(n, P).astype(np.float64)
    ok = ac >= 0
    cnt_a = np.bincount(row[ok] * A + ac[ok], minlength=n * A).reshape(n, A).astype(np.float64)
    dur = events["duration_s"].to_numpy(np.float64)[known]
    sum_logd = np.bincount(row, weights=np.log1p(dur), minlength=n)
    has = n_ev > 0
    mean_logd = np.full(n, sum_logd.sum() / max(n_ev.sum(), 1.0))
    mean_logd[has] = sum_logd[has] / n_ev[has]
    ev_days = (ref - events["event_date"].to_numpy()[known].astype("datetime64[D]")).astype(np.int64)
    rec = _group_min(row, ev_days, n)
    oldest = -_group_min(row, -ev_days, n)
    recency = np.where(has, rec, account_age)
    span = np.where(has, oldest - rec, account_age)

    cols["log_n_events"] = np.log1p(n_ev)
    for i, p in enumerate(EVENT_PRODUCTS):
        cols[f"log_n_product={p}"] = np.log1p(cnt_p[:, i])
    for i, a in enumerate(EVENT_ACTIONS):
        cols[f"log_n_action={a}"] = np.log1p(cnt_a[:, i])
    cols["log_mean_duration"] = mean_logd
    cols["log_recency_days"] = np.log1p(np.maximum(recency, 0.0))
    cols["log_active_span_days"] = np.log1p(np.maximum(span, 0.0))
    return pd.DataFrame(cols, index=pd.Index(uid, name="user_id"))


def _group_min(row: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=v.dtype)
    if row.size == 0:
        return out
    o = np.lexsort((v, row))
    r, vs = row[o], v[o]
    first = np.r_[True, r[1:] != r[:-1]]
    out[r[first]] = vs[first]
    return out


def make_user_matrix(
    n_users: int = 20_000,
    n_segments: int = 5,
    survey_fraction: float = 0.01,
    noise: float = SyntheticConfig.noise,
    seed: int = 0,
    n_features: int = SyntheticConfig.n_profile_features,
    *,
    n_categorical: int = SyntheticConfig.n_categorical,
    events_per_user: float = SyntheticConfig.events_per_user,
    onehot_zscore: bool = False,
    return_frame: bool = False,
):
    """Standardised per-user feature matrix for the in-memory core benchmark.

    Generates the tables with :func:`make_user_tables` and aggregates them with
    :func:`build_user_features` (pandas). ``n_features`` is the number of
    numeric profile columns (``n_profile_features``); the final width ``d`` also
    counts the one-hot categoricals and the event aggregates (``d = 42`` at the
    defaults: 8 profile + 19 one-hot + 15 event columns).

    Scaling: every column is centred over all users; numeric and event columns
    are divided by their standard deviation (z-scores); one-hot indicators are
    divided by ``sqrt(2)`` so that switching a category moves a user by unit
    distance, like one standard deviation of a numeric column (z-scoring rare
    indicators would blow them up and fragment any distance-based graph). Pass
    ``onehot_zscore=True`` to z-score them as well.

    Returns ``(X, segment, surveyed)``: ``X`` float32 ``[n_users, d]``,
    ``segment`` int64 true segments (users in ``user_id`` order), ``surveyed``
    bool mask of survey respondents. For the benchmark
    the labels are **the true segments of the surveyed users**
    (``segment[surveyed]``); the Spark pipeline instead labels respondents by
    clustering their survey answers. With ``return_frame=True`` the unscaled
    feature DataFrame (index ``user_id``) is appended to the tuple.
    """
    cfg = SyntheticConfig(
        n_users=n_users,
        n_segments=n_segments,
        survey_fraction=survey_fraction,
        noise=noise,
        seed=seed,
        n_profile_features=n_features,
        n_categorical=n_categorical,
        events_per_user=events_per_user,
    )
    t = make_user_tables(cfg)
    feats = build_user_features(t["users"], t["events"])
    X = feats.to_numpy(np.float64, copy=True)
    X -= X.mean(0)
    onehot = np.array([c.split("=")[0] in CATEGORICAL_LEVELS for c in feats.columns])
    sd = X.std(0)
    sd[sd == 0] = 1.0
    if not onehot_zscore:
        sd[onehot] = math.sqrt(2.0)  # a category switch = unit distance
    X = (X / sd).astype(np.float32)
    segment = t["segments_truth"]["segment"].to_numpy(np.int64)
    surveyed = np.isin(t["users"]["user_id"].to_numpy(), t["survey_responses"]["user_id"].to_numpy())
    if return_frame:
        return X, segment, surveyed, feats
    return X, segment, surveyed


# ------------------------------------------------------------------ dense
@functools.lru_cache(maxsize=16)
def _dense_map(seed, n_features, n_segments) -> _Map:
    return _Map(seed, _S_DENSE_STRUCT, n_segments, {"x": (0, n_features)}, np.float32)


def _dense_fill(seed, n_features, n_segments, noise, b, X_out, seg_out, buf) -> None:
    """Write the first ``len(X_out)`` rows of dense block ``b`` into ``X_out`` / ``seg_out``.

    The latent sample is always drawn for the whole block; the noise only for
    the rows written -- numpy's Gaussian sampler fills sequentially, so a prefix
    of the draws equals the draws for a prefix (the chunking tests check this).
    """
    rng = _rng(seed, _S_DENSE_BLOCK, b)
    seg, z = _sample_latent(rng, DENSE_BLOCK_SIZE, n_segments, np.float32)
    k = len(X_out)
    m = _dense_map(seed, n_features, n_segments)
    np.matmul(np.tanh(z[:k] @ m.A + m.b), m.W, out=X_out)
    X_out += m.c
    if noise:
        nb = buf[:k]
        rng.standard_normal(out=nb, dtype=np.float32)
        nb *= np.float32(noise)
        X_out += nb
    seg_out[:] = seg[:k]


def _dense_block(seed: int, n_features: int, n_segments: int, noise: float, b: int) -> dict[str, np.ndarray]:
    X = np.empty((DENSE_BLOCK_SIZE, n_features), dtype=np.float32)
    seg = np.empty(DENSE_BLOCK_SIZE, dtype=np.int64)
    _dense_fill(seed, n_features, n_segments, noise, b, X, seg, np.empty_like(X))
    return {"X": X, "segment": seg}


def _check_dense(n_users, chunk_size, n_features, n_segments, noise, seed):
    _check_int("n_users", n_users, 1)
    _check_int("chunk_size", chunk_size, 1)
    _check_int("n_features", n_features, 1, 4096)
    _check_int("n_segments", n_segments, 2, _MAX_SEGMENTS)
    _check_float("noise", noise, 0.0, 100.0)
    _check_int("seed", seed, 0)


def iter_dense_chunks(
    n_users: int,
    chunk_size: int = 1_000_000,
    n_features: int = 64,
    n_segments: int = 5,
    seed: int = 0,
    noise: float = 0.1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(X float32 [m, n_features], segment int64 [m])`` chunks.

    Same spiral manifold as the user tables; the features are directly a fixed
    random tanh map of the latent position (standardised) plus Gaussian
    ``noise``. Independent of ``chunk_size`` (see the module docstring).
    """
    _check_dense(n_users, chunk_size, n_features, n_segments, noise, seed)
    mk = functools.partial(_dense_block, seed, n_features, n_segments, noise)
    for a in _iter_ranges(n_users, chunk_size, DENSE_BLOCK_SIZE, mk):
        yield a["X"], a["segment"]


def make_dense(
    n_users: int,
    n_features: int = 64,
    n_segments: int = 5,
    seed: int = 0,
    noise: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain ``(X float32 [n_users, n_features], segment int64)`` for performance benchmarks."""
    _check_dense(n_users, 1, n_features, n_segments, noise, seed)
    X = np.empty((n_users, n_features), dtype=np.float32)
    seg = np.empty(n_users, dtype=np.int64)
    buf = np.empty((min(n_users, DENSE_BLOCK_SIZE), n_features), dtype=np.float32)
    for lo in range(0, n_users, DENSE_BLOCK_SIZE):
        hi = min(n_users, lo + DENSE_BLOCK_SIZE)
        _dense_fill(seed, n_features, n_segments, noise, lo // DENSE_BLOCK_SIZE, X[lo:hi], seg[lo:hi], buf)
    return X, seg
