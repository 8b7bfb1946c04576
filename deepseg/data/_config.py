"""The synthetic population's parameters and fixed vocabularies (see :mod:`deepseg.data.synthetic`)."""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

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
INT_PROFILE = frozenset(
    {"age", "tenure_days", "seats", "team_size", "support_tickets_90d", "integrations"}
)
#: Heavy-tailed non-negative columns that :func:`build_user_features` log1p's.
LOG_PROFILE = frozenset(
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
CATEGORICAL_NAMES = tuple(CATEGORICAL_LEVELS)

EVENT_PRODUCTS = ("editor", "analytics", "dashboard", "api", "mobile_app", "marketplace")
EVENT_ACTIONS = ("view", "create", "share", "export", "purchase")

MAX_SEGMENTS = 64
_MAX_PROFILE = 64
_MAX_QUESTIONS = 100
_SHARE_RATIO = 2.5  # largest / smallest segment share


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value!r}")
    return value


def check_float(name: str, value, lo: float, hi: float, lo_open=False, hi_open=False) -> float:
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
        check_int("n_users", self.n_users, 1)
        check_int("n_segments", self.n_segments, 2, MAX_SEGMENTS)
        check_int("n_profile_features", self.n_profile_features, 1, _MAX_PROFILE)
        check_int("n_categorical", self.n_categorical, 0, len(CATEGORICAL_NAMES))
        check_float("events_per_user", self.events_per_user, 0.0, 10_000.0)
        check_float("survey_fraction", self.survey_fraction, 0.0, 1.0)
        check_int("n_questions", self.n_questions, 1, _MAX_QUESTIONS)
        check_float("noise", self.noise, 0.0, 100.0)
        check_int("seed", self.seed, 0)
        check_float("survey_noise", self.survey_noise, 0.0, 100.0)

    @property
    def segment_shares(self) -> np.ndarray:
        """Expected share of each segment (see :func:`segment_shares`)."""
        return segment_shares(self.n_segments)

    @property
    def profile_columns(self) -> tuple[str, ...]:
        return profile_names(self.n_profile_features)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return CATEGORICAL_NAMES[: self.n_categorical]

    @property
    def question_columns(self) -> tuple[str, ...]:
        return tuple(f"q{j + 1}" for j in range(self.n_questions))


def segment_shares(n_segments: int) -> np.ndarray:
    """Expected segment shares: geometric, largest/smallest = 2.5, decreasing.

    For 5 segments: ``[0.30, 0.24, 0.19, 0.15, 0.12]``.
    """
    n_segments = check_int("n_segments", n_segments, 2, MAX_SEGMENTS)
    w = _SHARE_RATIO ** (-np.arange(n_segments) / (n_segments - 1))
    return w / w.sum()


def profile_names(n: int) -> tuple[str, ...]:
    return tuple(PROFILE_FEATURES[j] if j < len(PROFILE_FEATURES) else f"profile_{j}" for j in range(n))
