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

Where the code lives
--------------------
``_config`` (:class:`SyntheticConfig`, the column vocabularies), ``_blocks`` (seeded streams,
blocks, chunk assembly), ``_structure`` (latent spiral, random map, what the seed fixes),
``_profiles`` / ``_events`` / ``_tables`` (one block's users, events and survey; DataFrames),
``_matrix`` (the benchmark feature matrix), ``_dense`` (the plain generator). Import the public
names from here or from :mod:`deepseg.data`.
"""

from deepseg.data._config import (
    BLOCK_SIZE,
    CATEGORICAL_LEVELS,
    DENSE_BLOCK_SIZE,
    EVENT_ACTIONS,
    EVENT_PRODUCTS,
    PROFILE_FEATURES,
    REFERENCE_DATE,
    SyntheticConfig,
    segment_shares,
)
from deepseg.data._dense import iter_dense_chunks, make_dense
from deepseg.data._matrix import build_user_features, make_user_matrix
from deepseg.data._tables import iter_user_chunks, make_user_tables

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
