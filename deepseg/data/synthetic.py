"""Seeded synthetic users for tests, benchmarks and the Spark demo.

The generative story
--------------------
Every user has a latent **segment** ``k`` (``n_segments`` classes, unequal but
not extreme shares, see :func:`segment_shares`) and a latent **position** on a
non-linear manifold:

* two coordinates ``(x, y)`` on a ``c``-armed Archimedean spiral (a two-moons /
  two-spirals generalised to ``c`` classes). Arm ``k`` is segment ``k``; the
  arms are interleaved and separated by empty (low-density) gaps, so the
  cluster assumption holds, while no linear boundary separates them;
* ``n_nuisance`` (=1) extra coordinate ``h`` uniform in ``[-1, 1]`` that
  moves the observations but carries no segment information ("company size").

The observed data are derived from the latent position through a fixed random
non-linear map (``tanh`` of a random affine map, then random projections,
standardised) plus noise (``noise``, in units of the signal's standard
deviation) and realistic marginal transforms (rounding, log-normal scales,
categorical sampling, Poisson event counts):

``users``
    ``user_id`` (int64, unique, ``1..n_users``), ``n_profile_features``
    numeric profile columns (see :data:`PROFILE_FEATURES`: ``age``,
    ``tenure_days``, ``seats``, ...; integers as int64, the rest float64),
    ``n_categorical`` string columns (see :data:`CATEGORICAL_LEVELS`:
    ``country``, ``plan``, ``device``, ...) whose level probabilities depend on
    the latent position, and ``signup_date`` (``datetime64[us]``,
    :data:`REFERENCE_DATE` minus the user's tenure).
``events``
    product-interaction events ``user_id, event_date (datetime64[us], day
    resolution), product, action, duration_s`` -- Poisson many per user (mean
    ``events_per_user``); counts, product/action mix, durations and recency
    depend on the latent position. Rows are grouped by user (ascending
    ``user_id``), not sorted by date. Some users have no events.
``survey_responses``
    a random subset of users (each user independently with probability
    ``survey_fraction``): ``user_id`` and Likert answers ``q1..qK`` (int64 in
    ``1..5``) = rounded segment answer profile + ``survey_noise`` Gaussian
    noise; k-means on the answers recovers the segments.
``segments_truth``
    ``user_id, segment`` (int64) -- ground truth, never part of ``users``.

Reproducibility guarantees
--------------------------
Users are generated in fixed internal blocks of :data:`BLOCK_SIZE` users; block
``b`` uses the random streams ``SeedSequence(seed, spawn_key=(1, b, part))``
(one stream per part: latent, profile, categorical, events, survey) and the
fixed random map uses ``SeedSequence(seed, spawn_key=(0, part))``. Hence, for a
given :class:`SyntheticConfig`:

* the output is **identical for every** ``chunk_size`` (concatenating the
  chunks always gives the same tables);
* user ``i`` depends only on ``(config, i)``, not on ``n_users``: a larger
  ``n_users`` extends the data set, keeping the prefix;
* latent segments and positions depend only on ``(seed, n_segments)`` -- not on
  ``noise``, the column counts, ``events_per_user`` or the survey settings;
  the events and the survey depend on neither the number of profile nor of
  categorical columns; raising ``survey_fraction`` only adds respondents;
* results are bit-identical for the same numpy version; across numpy versions
  the :class:`numpy.random.Generator` streams are stable in practice but not
  promised by numpy.

:func:`make_dense` / :func:`iter_dense_chunks` give the same guarantees (block
size :data:`DENSE_BLOCK_SIZE`, their own streams).

Benchmark helpers
-----------------
:func:`make_user_matrix` builds the per-user feature matrix (profile numerics,
one-hot categoricals, event aggregates; standardised) with pandas, using the
**true segments of the surveyed users as labels** -- the Spark pipeline instead
clusters the survey answers. :func:`make_dense` is a very fast plain ``float32``
generator on the same kind of manifold for performance benchmarks.
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
    "country": ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "ES"),
    "plan": ("free", "starter", "pro", "business", "enterprise"),
    "device": ("desktop", "mobile", "tablet"),
    "industry": (
        "software",
        "finance",
        "retail",
        "healthcare",
        "education",
        "manufacturing",
        "media",
        "government",
    ),
    "acquisition_channel": ("organic", "paid_search", "referral", "social", "partner", "direct"),
    "os": ("windows", "macos", "linux", "ios", "android"),
}
_CATEGORICAL_NAMES = tuple(CATEGORICAL_LEVELS)

EVENT_PRODUCTS = (
    "editor",
    "analytics",
    "dashboard",
    "api",
    "mobile_app",
    "marketplace",
    "billing",
    "admin",
)
EVENT_ACTIONS = ("view", "click", "create", "edit", "share", "export", "purchase")

# ---------------------------------------------------------------- manifold
_R0, _R1 = 0.2, 1.0  # inner / outer spiral radius
_TURNS = 1.0  # windings of each arm
_WIDTH = 0.1  # arm half-width as a fraction of the radial gap between arms
_HIDDEN = 24  # width of the random tanh layer
_GAIN = 2.0  # scale of the random first layer (non-linearity)
_SHARE_RATIO = 2.5  # largest / smallest segment share
_CAT_SHARPNESS = 2.0  # categorical logit scale (higher = more informative)
_PRODUCT_SHARPNESS = 1.5  # product-mix logit scale
_ACTION_SHARPNESS = 0.8  # user part of the action logits
_NUISANCE = 1.0 / 1.5  # weight of the nuisance coordinate relative to the spiral ones

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
    events_per_user: float = 12.0
    survey_fraction: float = 0.01
    n_questions: int = 12
    noise: float = 0.1
    seed: int = 0
    survey_noise: float = 0.8

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
    """Segments and latent coordinates ``[n, 3]`` = (x, y, h), all in [-1, 1]."""
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
    """Fixed random non-linear map latent -> standardised scores."""

    def __init__(self, rng: np.random.Generator, n_out_groups: list[int], calib_rng, n_segments, dtype):
        self.A = (rng.normal(0.0, _GAIN, (3, _HIDDEN))).astype(dtype)
        self.A[2] *= _NUISANCE
        self.b = rng.uniform(-1.0, 1.0, _HIDDEN).astype(dtype)
        W = rng.normal(0.0, 1.0, (_HIDDEN, int(sum(n_out_groups)))).astype(dtype)
        _, zc = _sample_latent(calib_rng, 16384, n_segments, dtype)
        s = np.tanh(zc @ self.A + self.b) @ W
        mu, sd = s.mean(0), s.std(0)
        sd[sd == 0] = 1.0
        self.W = (W / sd).astype(dtype)
        self.c = (-mu / sd).astype(dtype)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        H = np.tanh(z @ self.A + self.b)
        return H @ self.W + self.c


# --------------------------------------------------------------- structure
class _Structure:
    """Everything fixed by the seed: the map, categorical / event / survey parameters."""

    def __init__(self, seed: int, n_segments: int, n_profile: int, n_categorical: int, n_questions: int):
        self.n_profile = n_profile
        self.cat_names = _CATEGORICAL_NAMES[:n_categorical]
        P, A = len(EVENT_PRODUCTS), len(EVENT_ACTIONS)
        # score layout: each group its own stream of map weights so that e.g. the
        # events do not change with n_profile_features.
        groups = {
            "tenure": 1,
            "events": 4 + P + A,  # activity, recency, spread, duration, products, actions
            "profile": n_profile,
        }
        for name in self.cat_names:
            groups["cat_" + name] = len(CATEGORICAL_LEVELS[name])
        self.maps = {}
        for gi, (name, k) in enumerate(groups.items()):
            key = gi if gi < 3 else 3 + _CATEGORICAL_NAMES.index(name[4:])
            self.maps[name] = _Map(
                _rng(seed, _S_STRUCT, _P_MAP, key, k),
                [k],
                _rng(seed, _S_STRUCT, _P_CALIB),
                n_segments,
                np.float64,
            )
        r = _rng(seed, _S_STRUCT, _P_EVENTS)
        self.product_base = r.normal(0.0, 0.5, P)
        self.product_duration = r.normal(0.0, 0.4, P)
        self.product_action = r.normal(0.0, 1.0, (P, A))
        self.action_base = np.array([1.5, 1.0, 0.0, 0.2, -0.5, -0.8, -1.5])[:A]
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
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    c = np.cumsum(p, axis=1)
    c /= c[:, -1:]
    return c


def _sample_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise inverse-CDF sampling: category index per row."""
    k = (u[:, None] >= cdf[:, :-1]).sum(axis=1)
    return k.astype(np.int64)


def _block(cfg: SyntheticConfig, b: int) -> dict[str, np.ndarray]:
    """Generate block ``b`` (users ``b*BLOCK_SIZE ..``) as plain numpy arrays."""
    st = _structure(cfg.seed, cfg.n_segments, cfg.n_profile_features, cfg.n_categorical, cfg.n_questions)
    n, noise = BLOCK_SIZE, cfg.noise
    seg, z = _sample_latent(_rng(cfg.seed, _S_BLOCK, b, _P_LATENT), n, cfg.n_segments)
    out: dict[str, np.ndarray] = {
        "user_id": np.arange(b * n + 1, (b + 1) * n + 1, dtype=np.int64),
        "segment": seg,
        "latent": z,
    }

    # ---- profile numerics (+ tenure, always needed for signup_date)
    rp = _rng(cfg.seed, _S_BLOCK, b, _P_PROFILE)
    s = st.maps["profile"](z) + noise * rp.standard_normal((n, cfg.n_profile_features))
    t = st.maps["tenure"](z)[:, 0] + noise * rp.standard_normal(n)
    tenure = np.clip(np.rint(np.exp(5.6 + 0.9 * t)), 1, 3650).astype(np.int64)
    for j, name in enumerate(_profile_names(cfg.n_profile_features)):
        v = s[:, j]
        if name == "age":
            col = np.clip(np.rint(38.0 + 10.0 * v), 18, 80)
        elif name == "tenure_days":
            col = tenure
        elif name == "seats":
            col = np.maximum(1.0, np.rint(np.exp(1.6 + 0.9 * v)))
        elif name == "monthly_spend":
            col = np.round(np.exp(4.0 + 0.8 * v), 2)
        elif name == "logins_per_week":
            col = np.round(np.maximum(0.0, 6.0 + 3.0 * v), 2)
        elif name == "team_size":
            col = np.maximum(1.0, np.rint(np.exp(2.0 + 0.8 * v)))
        elif name == "storage_gb":
            col = np.round(np.exp(2.5 + 1.0 * v), 3)
        elif name == "api_calls_per_day":
            col = np.round(np.exp(3.0 + 1.2 * v), 1)
        elif name == "support_tickets_90d":
            col = np.clip(np.rint(4.0 + 2.5 * v), 0, None)
        elif name == "integrations":
            col = np.clip(np.rint(6.0 + 3.0 * v), 0, None)
        else:
            col = v
        out["p_" + name] = col.astype(np.int64 if name in _INT_PROFILE else np.float64)
    out["tenure"] = tenure

    # ---- categoricals
    rc = _rng(cfg.seed, _S_BLOCK, b, _P_CATEG)
    for name in st.cat_names:
        g = st.maps["cat_" + name](z)
        logits = _CAT_SHARPNESS * (g + noise * rc.standard_normal(g.shape)) + st.cat_base[name]
        out["c_" + name] = _sample_cdf(_softmax_cdf(logits), rc.random(n))

    # ---- events
    re = _rng(cfg.seed, _S_BLOCK, b, _P_EVENTS)
    P = len(EVENT_PRODUCTS)
    e = st.maps["events"](z)
    e += noise * re.standard_normal(e.shape)
    act, rec, spread, dur = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    rate = cfg.events_per_user * np.exp(0.6 * act - 0.18)  # E[exp(0.6 N(0,1))] = e^0.18
    counts = re.poisson(rate)
    uidx = np.repeat(np.arange(n), counts)
    m = uidx.size
    pcdf = _softmax_cdf(_PRODUCT_SHARPNESS * e[:, 4 : 4 + P] + st.product_base)
    prod = _sample_cdf(pcdf[uidx], re.random(m))
    alog = (_ACTION_SHARPNESS * e[:, 4 + P :])[uidx] + st.product_action[prod] + st.action_base
    action = _sample_cdf(_softmax_cdf(alog), re.random(m))
    last_gap = np.exp(1.8 + 0.9 * rec)  # days since last activity
    mean_gap = np.exp(3.0 + 0.7 * spread)  # spread of activity into the past
    age_days = np.floor(last_gap[uidx] + mean_gap[uidx] * re.exponential(1.0, m))
    age_days = np.minimum(age_days, tenure[uidx]).astype(np.int64)
    duration = np.exp(3.5 + 0.6 * dur[uidx] + st.product_duration[prod] + 0.7 * re.standard_normal(m))
    out["e_user"] = uidx
    out["e_age_days"] = age_days
    out["e_product"] = prod
    out["e_action"] = action
    out["e_duration"] = np.round(duration, 1)

    # ---- survey (answers drawn for everyone so they do not depend on the fraction)
    rs = _rng(cfg.seed, _S_BLOCK, b, _P_SURVEY)
    surveyed = rs.random(n) < cfg.survey_fraction
    ans = st.answer_profiles[seg] + cfg.survey_noise * rs.standard_normal((n, cfg.n_questions))
    out["s_mask"] = surveyed
    out["s_answers"] = np.clip(np.rint(ans), 1, 5).astype(np.int64)
    return out


def _slice_block(blk: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Users ``lo:hi`` (block-relative) of a block, events re-indexed."""
    out = {}
    eu = blk["e_user"]
    elo, ehi = np.searchsorted(eu, [lo, hi])
    for k, v in blk.items():
        if k.startswith("e_"):
            out[k] = v[elo:ehi] - lo if k == "e_user" else v[elo:ehi]
        else:
            out[k] = v[lo:hi]
    return out


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    out = {}
    offset, shifted = 0, []
    for p in parts:
        shifted.append(p["e_user"] + offset)
        offset += p["user_id"].size
    for k in parts[0]:
        out[k] = np.concatenate(shifted) if k == "e_user" else np.concatenate([p[k] for p in parts])
    return out


def _str_col(codes: np.ndarray, levels: tuple[str, ...]) -> pd.Series:
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(levels)))
    s = arr.cast(pa.string()).to_pandas()
    return s.astype(object) if s.dtype == object else s


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
    bad = set(overrides) - {f.name for f in dataclasses.fields(SyntheticConfig)}
    if bad:
        raise ValueError(f"unknown parameter(s) {sorted(bad)} for iter_user_chunks")
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
    (log1p counts), ``frac_product=<p>`` (share of the user's events),
    ``log_mean_duration`` and ``log_recency_days`` (days from the last event to
    ``reference_date``), ``log_active_span_days``. Users without events get 0
    counts/shares, the population mean duration, and recency = span = their
    account age.
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
    safe = np.maximum(n_ev, 1.0)
    for i, p in enumerate(EVENT_PRODUCTS):
        cols[f"frac_product={p}"] = cnt_p[:, i] / safe
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
    return_frame: bool = False,
):
    """Standardised per-user feature matrix for the in-memory core benchmark.

    Generates the tables with :func:`make_user_tables` and aggregates them with
    :func:`build_user_features` (pandas). ``n_features`` is the number of
    numeric profile columns (``n_profile_features``); the final width ``d`` also
    counts the one-hot categoricals and event aggregates (``d = 57`` at the
    defaults).

    Returns ``(X, segment, surveyed)``: ``X`` float32 ``[n_users, d]`` (each
    column zero mean / unit variance over all users), ``segment`` int64 true
    segments, ``surveyed`` bool mask of survey respondents. For the benchmark
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
    X = feats.to_numpy(np.float64)
    sd = X.std(0)
    sd[sd == 0] = 1.0
    X = ((X - X.mean(0)) / sd).astype(np.float32)
    segment = t["segments_truth"]["segment"].to_numpy(np.int64)
    surveyed = np.isin(t["users"]["user_id"].to_numpy(), t["survey_responses"]["user_id"].to_numpy())
    if return_frame:
        return X, segment, surveyed, feats
    return X, segment, surveyed


# ------------------------------------------------------------------ dense
class _DenseStructure:
    def __init__(self, seed: int, n_features: int, n_segments: int):
        r = _rng(seed, _S_DENSE_STRUCT, _P_MAP)
        self.map = _Map(r, [n_features], _rng(seed, _S_DENSE_STRUCT, _P_CALIB), n_segments, np.float32)


@functools.lru_cache(maxsize=16)
def _dense_structure(seed, n_features, n_segments) -> _DenseStructure:
    return _DenseStructure(seed, n_features, n_segments)


def _dense_block(seed, n_features, n_segments, noise, b):
    st = _dense_structure(seed, n_features, n_segments)
    rng = _rng(seed, _S_DENSE_BLOCK, b)
    seg, z = _sample_latent(rng, DENSE_BLOCK_SIZE, n_segments, np.float32)
    X = st.map(z)
    if noise:
        X += np.float32(noise) * rng.standard_normal(X.shape, dtype=np.float32)
    return {"X": X, "segment": seg, "e_user": np.zeros(0, np.int64)}


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

    def mk(b):
        blk = _dense_block(seed, n_features, n_segments, noise, b)
        blk["user_id"] = blk["segment"]  # only used for sizes in _concat_parts
        return blk

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
    start = 0
    for Xc, sc in iter_dense_chunks(n_users, DENSE_BLOCK_SIZE * 4, n_features, n_segments, seed, noise):
        X[start : start + len(sc)] = Xc
        seg[start : start + len(sc)] = sc
        start += len(sc)
    return X, seg
