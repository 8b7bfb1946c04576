"""Survey waves: whom to invite next, and the ``survey_invitations`` table that keeps every wave.

* :func:`select_invitations` -- a uniform or stratified (proportional allocation) sample;
* :func:`active_invitations` -- the current model's choice: the users whose segment is most
  uncertain, spread over its embedding f (:func:`deepseg.core.active.select_active`). Spark
  pre-filters the candidates to the ``survey.active_candidates`` × wave size most uncertain;
  only those are embedded and collected to the driver;
* :func:`invite_wave` -- the survey job's step: a new wave when ``survey_responses`` changed
  since the last one was invited, appended to ``survey_invitations`` in one Delta commit;
  otherwise a rerun of the last wave, which appends nothing. Nobody is invited twice, and no
  respondent is invited.

``survey_invitations`` is append-only: columns ``user_id, stratum, wave, reason, model_version,
invited_at, run_id``; each wave's commit records the wave, why its users were chosen and the
``survey_responses`` version (and respondent count) it was chosen after, which tells a rerun.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deepseg.pipeline.runs import commit_metadata
from deepseg.pipeline.tables import append_table, history, last_commit, read_table, table_exists
from deepseg.pipeline.validate import InputError, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

    from deepseg.config import Config
    from deepseg.locations import Table

__all__ = ["INVITATION_COLUMNS", "SurveyWave", "active_invitations", "invite_wave", "select_invitations",
           "uncertainty_column"]

log = logging.getLogger("deepseg")

#: Columns of the ``survey_invitations`` table, in order.
INVITATION_COLUMNS = ("user_id", "stratum", "wave", "reason", "model_version", "invited_at", "run_id")
#: Delta's idempotent-write application id: a wave number is committed at most once.
_TXN_APP_ID = "deepseg-survey-invitations"


def select_invitations(users: "DataFrame", size: int, sampling: str = "uniform",
                       strata: str | None = None, seed: int = 0,
                       exclude: "DataFrame | None" = None) -> "DataFrame":
    """``user_id, stratum``: `size` users to invite (all of them if fewer).

    ``uniform`` draws a simple random sample. ``stratified`` allocates the invitations to the
    values of column `strata` in proportion to their user counts: users are ranked at random
    within their stratum and taken in order of ``(rank - 1/2) / stratum size``, which hands each
    stratum its proportional share (±1). Users in `exclude` (``user_id``, e.g. earlier
    respondents) are never invited.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if sampling not in ("uniform", "stratified"):
        raise ValueError(f"sampling must be 'uniform' or 'stratified', got {sampling!r}")
    if sampling == "stratified" and strata is None:
        raise ValueError("stratified sampling needs a strata column")
    if strata is not None and strata not in users.columns:
        raise ValueError(f"strata column {strata!r} not in users columns {users.columns}")
    pool = users.select("user_id", _stratum(strata))
    if exclude is not None:
        pool = pool.join(exclude.select("user_id"), "user_id", "left_anti")
    pool = pool.withColumn("_u", F.rand(seed))
    if sampling == "uniform":
        chosen = pool.orderBy("_u", "user_id").limit(size)
    else:
        by_stratum = Window.partitionBy("stratum")
        ranked = pool.withColumn(
            "_pos", (F.row_number().over(by_stratum.orderBy("_u", "user_id")) - 0.5)
            / F.count(F.lit(1)).over(by_stratum))
        chosen = ranked.orderBy("_pos", "_u", "user_id").limit(size)
    return chosen.select("user_id", "stratum")


def _stratum(strata: str | None) -> "Column":
    from pyspark.sql import functions as F

    return (F.col(strata).cast("string") if strata else F.lit(None).cast("string")).alias("stratum")


def uncertainty_column(propensities: str = "propensities", kind: str = "margin") -> "Column":
    """Spark's :func:`deepseg.core.active.uncertainty_scores` of an array column: ``margin``
    1 − (p₁ − p₂), ``entropy`` −Σ p log p / log c."""
    from pyspark.sql import functions as F

    p = F.col(propensities)
    if kind == "margin":
        ordered = F.sort_array(p, asc=False)
        return F.lit(1.0) - (ordered[0] - ordered[1]).cast("double")
    if kind == "entropy":
        plogp = F.aggregate(p, F.lit(0.0).cast("double"),
                            lambda acc, x: acc + F.when(x > 0, x * F.log(x)).otherwise(F.lit(0.0)))
        return -plogp / F.log(F.size(p).cast("double"))
    raise ValueError(f"uncertainty must be 'margin' or 'entropy', got {kind!r}")


def active_invitations(pool: "DataFrame", model, size: int, seed: int = 0, uncertainty: str = "margin",
                       candidates_per_invitation: int = 20) -> "DataFrame | None":
    """``user_id, stratum``: `size` users of `pool` chosen by `model` (None if `pool` is empty).

    `pool` (``user_id, stratum, propensities, features``) holds the users that may be invited,
    with the model's propensities and the features it scored. Spark keeps the
    ``candidates_per_invitation × size`` most uncertain (ties: smallest ``user_id``), embeds them
    with the model's f (:func:`deepseg.spark.scoring.embed_dataframe`) and collects only those;
    :func:`deepseg.core.active.select_active` draws the wave from them on the driver.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from deepseg.core.active import select_active
    from deepseg.spark.scoring import embed_dataframe

    top = (pool.withColumn("_u", uncertainty_column("propensities", uncertainty))
           .orderBy(F.desc("_u"), "user_id").limit(candidates_per_invitation * size))
    rows = embed_dataframe(top, model, features_col="features", embedding_col="_embedding",
                           keep_columns=["user_id", "stratum", "propensities", "_u"]).collect()
    if not rows:
        return None
    rows.sort(key=lambda r: (-r["_u"], r["user_id"]))  # collect's order is the partitions'
    P = np.array([r["propensities"] for r in rows], dtype=np.float64)
    Z = np.array([r["_embedding"] for r in rows], dtype=np.float64)
    picked, scores = select_active(P, Z, size, seed=seed, uncertainty=uncertainty)
    log.info("survey: active wave of %d from the %d most uncertain users (%s %.3f-%.3f); chosen: "
             "mean %s %.3f", len(picked), len(rows), uncertainty, rows[-1]["_u"], rows[0]["_u"],
             uncertainty, float(np.mean(scores)) if len(scores) else float("nan"))
    schema = T.StructType([pool.schema["user_id"], T.StructField("stratum", T.StringType())])
    return pool.sparkSession.createDataFrame([(rows[i]["user_id"], rows[i]["stratum"]) for i in picked], schema)


# ------------------------------------------------------------------ the waves
@dataclass
class SurveyWave:
    """The wave a survey run invited, or the earlier one it reran."""

    wave: int
    appended: bool  # False: a rerun (survey_responses unchanged since the wave): nothing written
    invited: int  # users invited by this wave
    reason: str
    model_version: str | None  # the model that chose the wave (active), else None


def _last_wave(spark: "SparkSession", table: "Table") -> dict | None:
    """The metadata of the latest commit of ``survey_invitations`` that invited a wave."""
    for row in history(spark, table):
        meta = json.loads(row.userMetadata) if row.userMetadata else {}
        if meta.get("job") == "survey" and "wave" in meta:
            return meta
    return None


def _check_invitations(invited: "DataFrame", cfg: "Config") -> None:
    missing = [c for c in INVITATION_COLUMNS if c not in invited.columns]
    if missing:
        path = cfg.data.table("survey_invitations")
        path = path.name or f"delta.`{path.path}`"
        raise InputError(
            f"{describe(cfg, 'survey_invitations')} lacks column(s) {missing}: it was written before "
            f"survey waves were kept. Keep its users as wave 1 (Spark SQL: ALTER TABLE {path} "
            f"ADD COLUMNS (wave INT, reason STRING, model_version STRING); UPDATE {path} SET "
            f"wave = 1, reason = 'before waves'), or move the table aside to start over")


def _choose(spark: "SparkSession", cfg: "Config", users: "DataFrame", exclude: "DataFrame",
            seed: int) -> tuple["DataFrame", str, str | None]:
    """(``user_id, stratum`` of the next wave, why them, the model that chose them or None)."""
    from pyspark.sql import functions as F

    from deepseg.pipeline.model_store import load_trained

    s, why = cfg.survey, ""
    if s.sampling == "active":
        try:
            trained = load_trained(cfg, cfg.scoring.model_version)
        except FileNotFoundError:
            trained, why = None, "no model yet"
        if trained is not None and not table_exists(spark, cfg.data.table("user_segments")):
            why = "no user scored yet"
        elif trained is not None:
            scored = (read_table(spark, cfg, "user_segments").filter(F.col("model_version") == trained.version)
                      .select("user_id", "propensities", "feature_hash"))
            features = read_table(spark, cfg, "features").select("user_id", "features", "feature_hash")
            pool = (scored.join(features, ["user_id", "feature_hash"])  # the features it scored
                    .join(exclude, "user_id", "left_anti")
                    .join(users.select("user_id", _stratum(s.strata)), "user_id"))
            chosen = active_invitations(pool, trained.model, s.invitations, seed, s.uncertainty,
                                        s.active_candidates)
            if chosen is not None:
                return chosen, f"active: {s.uncertainty} over f-space (k-means++)", trained.version
            why = f"no uninvited user scored by model {trained.version}"
        log.log(logging.INFO if why == "no model yet" else logging.WARNING,
                "survey: survey.sampling is 'active' but there is %s: sampling %s instead", why,
                f"stratified by {s.strata}" if s.strata else "uniformly")
    sampling = s.sampling if s.sampling != "active" else ("stratified" if s.strata else "uniform")
    reason = f"stratified by {s.strata}" if sampling == "stratified" else "uniform"
    chosen = select_invitations(users, s.invitations, sampling, s.strata, seed, exclude=exclude)
    return chosen, reason + (f" ({why})" if why else ""), None


def invite_wave(spark: "SparkSession", cfg: "Config", users: "DataFrame", responses: "DataFrame",
                run_id: str) -> SurveyWave:
    """Invite the next wave into ``survey_invitations`` (one Delta append), unless
    ``survey_responses`` is unchanged since the last wave was invited: then this run reruns that
    wave and writes nothing."""
    from pyspark.sql import functions as F

    path = cfg.data.table("survey_invitations")
    answered = {"survey_responses_version": last_commit(spark, cfg.data.table("survey_responses"))["version"],
                "n_respondents": responses.count()}
    exclude, number = responses.select("user_id"), 1
    if table_exists(spark, path):
        invited = read_table(spark, cfg, "survey_invitations")
        _check_invitations(invited, cfg)
        last = _last_wave(spark, path)
        if last and all(last.get(k) == v for k, v in answered.items()):
            log.info("survey: survey_responses unchanged since wave %d was invited (version %d, %d "
                     "respondents): a rerun of wave %d, nothing appended", last["wave"],
                     answered["survey_responses_version"], answered["n_respondents"], last["wave"])
            return SurveyWave(int(last["wave"]), False, 0, last.get("reason", ""), last.get("model_version"))
        number = int(invited.agg(F.max("wave")).first()[0] or 0) + 1
        exclude = exclude.unionByName(invited.select("user_id")).distinct()
    chosen, reason, model_version = _choose(spark, cfg, users, exclude, cfg.survey.seed + number - 1)
    rows = chosen.select(
        "user_id", "stratum", F.lit(number).cast("int").alias("wave"), F.lit(reason).alias("reason"),
        F.lit(model_version).cast("string").alias("model_version"),
        F.current_timestamp().alias("invited_at"), F.lit(run_id).alias("run_id")).persist()
    try:
        n = rows.count()
        meta = commit_metadata("survey", run_id, wave=number, reason=reason, model_version=model_version,
                               invited=n, **answered)
        append_table(rows, path, meta, txn=(_TXN_APP_ID, number))
    finally:
        rows.unpersist()
    log.info("survey: wave %d invites %d users (%s) -> %s", number, n, reason, path)
    return SurveyWave(number, True, n, reason, model_version)
