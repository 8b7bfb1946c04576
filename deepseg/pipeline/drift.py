"""Drift between the population a model was trained on and today's: population stability index.

A *profile* of an array column (``features`` or ``propensities``) holds, for each position,
the inner bin edges and the share of users in each bin. Edges of features are quantiles of the
training population; edges of propensities are fixed (equal-width on [0, 1]). Binning and
counting run in Spark (one aggregation, d x bins rows come back); the index is computed here:

    PSI = sum over bins (a - e) * ln(a / e)    (e: reference share, a: current share)

0.1 is usually read as a moderate shift, 0.25 as a major one.

The train job stores the profiles of its population with the model (``profile.json``); the
refresh job bins today's population on the same edges and retrains past a threshold. Its own
module so that both import it and neither imports the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = [
    "binned_shares",
    "drift_figures",
    "population_stability_index",
    "profile",
    "quantile_edges",
    "drift_reason",
    "schedule_reason",
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


def drift_reason(kind: str, psi: np.ndarray, threshold: float, names: list[str] | None = None) -> str | None:
    """Why to retrain when the largest of `psi` (one per feature/segment) exceeds `threshold`."""
    if not len(psi) or psi.max() <= threshold:
        return None
    worst = int(np.argmax(psi))
    return f"{kind} drift: PSI {psi.max():.3f} > {threshold} ({names[worst] if names else f'#{worst}'})"


def schedule_reason(trained_at: datetime, now: datetime, every_days: int | None) -> str | None:
    """Why to retrain when the model is `every_days` old (never when None)."""
    if every_days is None or (now - trained_at).total_seconds() < every_days * 86400:
        return None
    return f"schedule: model trained {(now - trained_at).days} days ago (retrain every {every_days})"


def drift_figures(feature_psi, propensity_psi=None, *, threshold: float | None = None,
                  feature_names: list[str] | None = None) -> dict:
    """The per-feature and per-segment PSI as JSON-able figures for the run report:
    ``feature_psi`` {feature name: PSI}, ``propensity_psi`` [PSI of segment 0, 1, ...] (None when
    not computed) and the retraining ``threshold``."""
    feature_psi = np.asarray(feature_psi, dtype=float)
    names = feature_names or [f"#{i}" for i in range(len(feature_psi))]
    if len(names) != len(feature_psi):
        raise ValueError(f"feature_names has {len(names)} names for {len(feature_psi)} feature PSI values")
    return {"threshold": threshold,
            "feature_psi": {str(n): float(v) for n, v in zip(names, feature_psi)},
            "propensity_psi": None if propensity_psi is None else [float(v) for v in propensity_psi]}
