"""Drift between the population a model was trained on and today's: population stability index.

A *profile* of an array column (``features`` or ``propensities``) holds, for each position,
the inner bin edges and the share of users in each bin. Edges of features are quantiles of the
training population; edges of propensities are fixed (equal-width on [0, 1]). Binning and
counting run in Spark (one aggregation, d x bins rows come back); the index is computed here:

    PSI = sum over bins (a - e) * ln(a / e)    (e: reference share, a: current share)

0.1 is usually read as a moderate shift, 0.25 as a major one.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = [
    "binned_shares",
    "population_stability_index",
    "profile",
    "quantile_edges",
    "retrain_reasons",
    "uniform_edges",
]

_EPS = 1e-4  # floor of a bin share: empty bins would give infinite PSI


def quantile_edges(df: "DataFrame", column: str, bins: int) -> list[list[float]]:
    """Inner edges (bins - 1 approximate quantiles) of each position of array `column`."""
    from pyspark.sql import functions as F

    probs = [i / bins for i in range(1, bins)]
    rows = (df.select(F.posexplode(column).alias("pos", "value"))
            .groupBy("pos").agg(F.percentile_approx("value", probs).alias("edges"))
            .collect())
    edges = dict((r.pos, [float(e) for e in r.edges]) for r in rows)
    return [edges[p] for p in range(len(edges))]


def uniform_edges(n_positions: int, bins: int) -> list[list[float]]:
    """Equal-width inner edges on [0, 1] for each position (probabilities)."""
    return [[i / bins for i in range(1, bins)]] * n_positions


def binned_shares(df: "DataFrame", column: str, edges: list[list[float]]) -> np.ndarray:
    """(positions, bins) shares of the rows of `df` in each bin of each position of `column`.

    A value's bin is the number of edges below it, so tied edges (a dummy variable's quantiles)
    just leave some bins empty.
    """
    from pyspark.sql import functions as F

    n_bins = len(edges[0]) + 1
    lit_edges = F.array(*[F.array(*[F.lit(float(e)) for e in pos]) for pos in edges])
    exploded = df.select(F.posexplode(column).alias("pos", "value"))
    binned = exploded.select(
        "pos", F.size(F.filter(F.element_at(lit_edges, F.col("pos") + 1),
                               lambda e: e < F.col("value"))).alias("bin"))
    counts = np.zeros((len(edges), n_bins))
    for r in binned.groupBy("pos", "bin").count().collect():
        counts[r.pos, r.bin] = r["count"]
    totals = counts.sum(axis=1, keepdims=True)
    return counts / np.maximum(totals, 1)


def profile(df: "DataFrame", column: str, edges: list[list[float]]) -> dict:
    """A JSON-able profile of `column`: its edges and the shares of `df` in each bin."""
    return {"edges": edges, "shares": binned_shares(df, column, edges).tolist()}


def population_stability_index(expected, actual) -> np.ndarray:
    """PSI of each row (position) of two (positions, bins) share arrays."""
    e = np.maximum(np.asarray(expected, dtype=float), _EPS)
    a = np.maximum(np.asarray(actual, dtype=float), _EPS)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def retrain_reasons(feature_psi: np.ndarray, propensity_psi: np.ndarray | None, threshold: float,
                    trained_at: datetime, now: datetime, every_days: int | None,
                    feature_names: list[str] | None = None) -> list[str]:
    """Why to retrain now (empty: no need): drifted features/propensities, or the schedule."""
    reasons = []
    if len(feature_psi) and feature_psi.max() > threshold:
        worst = int(np.argmax(feature_psi))
        name = feature_names[worst] if feature_names else f"#{worst}"
        reasons.append(f"feature drift: PSI {feature_psi.max():.3f} > {threshold} ({name})")
    if propensity_psi is not None and len(propensity_psi) and propensity_psi.max() > threshold:
        reasons.append(f"propensity drift: PSI {propensity_psi.max():.3f} > {threshold} "
                       f"(segment {int(np.argmax(propensity_psi))})")
    if every_days is not None and (now - trained_at).total_seconds() >= every_days * 86400:
        reasons.append(f"schedule: model trained {(now - trained_at).days} days ago "
                       f"(retrain every {every_days})")
    return reasons
