"""The nightly refresh: score what changed, retrain when the population drifted or the model is due.

The last stage, and the only one that runs others: it reads ``users``, ``events``,
``user_segments`` and the model, and writes ``user_segments``, ``segment_profiles`` and
``audiences`` through :mod:`~deepseg.pipeline.score`, :mod:`~deepseg.pipeline.profiles` and
:mod:`~deepseg.pipeline.audiences` (plus ``features`` and a
new model version through :mod:`~deepseg.pipeline.features` and :mod:`~deepseg.pipeline.train`
when it retrains). Nothing imports it back.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from deepseg.pipeline import drift
from deepseg.pipeline.audiences import audiences_job
from deepseg.pipeline.features import current_features, features_job
from deepseg.pipeline.model_store import load_trained
from deepseg.pipeline.profiles import write_profiles
from deepseg.pipeline.report import write_model_report
from deepseg.pipeline.runs import utcnow
from deepseg.pipeline.score import score_and_merge, score_job
from deepseg.pipeline.tables import read_table
from deepseg.pipeline.train import train_job
from deepseg.pipeline.validate import check_feature_inputs

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from deepseg.config import Config

__all__ = ["refresh_job"]

log = logging.getLogger("deepseg")


def refresh_job(spark: "SparkSession", cfg: "Config", now: datetime | None = None) -> dict:
    """Nightly: score new and changed users; retrain (features -> train -> score all) when the
    features or the propensities drifted past ``refresh.drift_threshold`` (population stability
    index against the model's training population) or the model is due; then the segment
    profiles, audiences, and the model's report with this run's drift figures.

    Rows of users deleted from ``users`` leave ``user_segments`` in the scoring commit. A rerun
    for the same day commits nothing (nothing new to score, audiences unchanged); a run that
    loses a commit to a concurrent one redoes it on the winner's version (see
    :func:`~deepseg.pipeline.score.score_and_merge`).
    """
    now, r = now or utcnow(), cfg.refresh
    check_feature_inputs(read_table(spark, cfg, "users"), read_table(spark, cfg, "events"), cfg)
    trained = load_trained(cfg, cfg.scoring.model_version)
    ref = trained.profile
    features = current_features(spark, cfg, trained.pipeline).persist()
    try:
        feature_psi = drift.population_stability_index(
            ref["features"]["shares"], drift.binned_shares(features, "features", ref["features"]["edges"]))
        reasons = [drift.drift_reason("feature", feature_psi, r.drift_threshold,
                                      trained.metadata.get("feature_names")),
                   drift.schedule_reason(trained.trained_at, now, r.retrain_every_days)]
        propensity_psi = None
        if not any(reasons):
            scored = score_and_merge(spark, cfg, trained, features, only_changed=True)
            segments = read_table(spark, cfg, "user_segments")
            propensity_psi = drift.population_stability_index(
                ref["propensities"]["shares"],
                drift.binned_shares(segments.filter(segments.model_version == trained.version),
                                    "propensities", ref["propensities"]["edges"]))
            reasons.append(drift.drift_reason("propensity", propensity_psi, r.drift_threshold,
                                              [f"segment {i}" for i in range(len(propensity_psi))]))
    finally:
        features.unpersist()
    reasons = [reason for reason in reasons if reason]
    out = {"model_version": trained.version, "max_feature_psi": float(feature_psi.max()),
           "max_propensity_psi": None if propensity_psi is None else float(propensity_psi.max()),
           "retrain_reasons": reasons}
    if reasons:
        log.info("refresh: retraining (%s)", "; ".join(reasons))
        features_job(spark, cfg)
        current = train_job(spark, cfg)
        scored = score_job(spark, cfg, only_changed=False, trained=current)
        out["model_version"] = current.version
    else:  # the train job profiled a new model; here the changed users may move the profiles
        current = trained
        segments = read_table(spark, cfg, "user_segments")
        out["profiles_changed"] = write_profiles(
            spark, cfg, trained.version, segments.filter(segments.model_version == trained.version))["changed"]
    out.update(scored=scored["scored"], deleted=scored["deleted"], retries=scored["retries"])
    out["audiences"] = audiences_job(spark, cfg)["sizes"]
    figures = drift.drift_figures(feature_psi, propensity_psi, threshold=r.drift_threshold,
                                  feature_names=trained.metadata.get("feature_names"))
    out["report"] = write_model_report(spark, cfg, current, drift={**out, **figures})
    log.info("refresh: %s", out)
    return out
