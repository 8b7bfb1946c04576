"""The survey: whom to invite, and survey answers -> segments (the few labelled users).

Plain DataFrame functions, no table names:

* :func:`select_invitations` -- a uniform or stratified (proportional allocation) sample of users;
* :func:`segment_answers` -- pyspark.ml KMeans or GaussianMixture on the answers; with no
  segment count given, the count is chosen by silhouette (kmeans) or BIC (gmm), and the scores
  of every candidate are returned.

Segments are numbered by decreasing size (0 is the largest) so their numbers do not depend on
the clustering's arbitrary cluster order. :func:`survey_job` reads ``users`` and
``survey_responses`` and writes ``survey_invitations`` and ``survey_segments`` (the training labels).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from deepseg.pipeline.runs import commit_metadata, new_run_id
from deepseg.pipeline.tables import read_table, write_table
from deepseg.pipeline.validate import InputError, check_survey_inputs, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config

__all__ = ["SurveySegmentation", "segment_answers", "select_invitations", "survey_job"]

log = logging.getLogger("deepseg")

_ANSWERS = "_answers"


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
    pool = users.select("user_id", (F.col(strata).cast("string") if strata else F.lit(None).cast("string"))
                        .alias("stratum"))
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


@dataclass
class SurveySegmentation:
    """How the answers were segmented: the method, the count chosen and every candidate's score."""

    method: str
    n_segments: int
    criterion: str  # silhouette (higher is better) | bic (lower is better) | fixed
    scores: dict[int, float] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)  # respondents per segment, largest first


def _answers(responses: "DataFrame", questions):
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import types as T

    questions = list(questions or [c for c in responses.columns if c != "user_id"])
    missing = [q for q in questions if q not in responses.columns]
    if missing:
        raise ValueError(f"survey question column(s) {missing} not in survey_responses")
    bad = [q for q in questions if not isinstance(responses.schema[q].dataType, T.NumericType)]
    if bad:
        raise TypeError(f"survey answers must be numeric; {bad} are not")
    # Survey answers are few (thousands): one partition halves the tasks of every clustering job.
    return VectorAssembler(inputCols=questions, outputCol=_ANSWERS, handleInvalid="skip").transform(
        responses.select("user_id", *questions).coalesce(1))


def _fit(answers, method: str, k: int, seed: int, max_iter: int, n_init: int):
    """The best of `n_init` seeded fits: lowest within-cluster cost (kmeans) or highest
    likelihood (gmm). One k-means|| start often ends in a poor local optimum."""
    from pyspark.ml.clustering import GaussianMixture, KMeans

    params = dict(k=k, maxIter=max_iter, featuresCol=_ANSWERS, predictionCol="_cluster")
    if method == "kmeans":
        # On the demo's survey a single start often stopped in a poor optimum, which silhouette
        # then scored low: 5 k-means|| rounds (default 2) and n_init restarts make that rare.
        fits = [KMeans(seed=seed + i, initSteps=5, **params).fit(answers) for i in range(n_init)]
        return min(fits, key=lambda m: m.summary.trainingCost)
    fits = [GaussianMixture(seed=seed + i, **params).fit(answers) for i in range(n_init)]
    return max(fits, key=lambda m: m.summary.logLikelihood)


def _bic(model, n_rows: int, n_dims: int) -> float:
    """BIC of a full-covariance Gaussian mixture: -2 log L + #parameters · log n."""
    k = model.getK()
    n_params = k * (n_dims + n_dims * (n_dims + 1) / 2) + (k - 1)
    return -2.0 * model.summary.logLikelihood + n_params * math.log(n_rows)


def segment_answers(responses: "DataFrame", method: str = "kmeans", n_segments: int | None = None,
                    k_range: tuple[int, int] = (2, 8), seed: int = 0, max_iter: int = 100,
                    questions=None, n_init: int = 1) -> tuple["DataFrame", SurveySegmentation]:
    """Cluster the survey answers: (``user_id, segment`` per respondent, how it was done).

    With `n_segments` None every count in `k_range` is fitted and the best is kept: highest
    silhouette for ``kmeans``, lowest BIC for ``gmm``. Each count is fitted from `n_init` seeds
    (``seed``, ``seed + 1``, ...), keeping the best. Rows with a null answer are skipped.
    """
    from pyspark.ml.evaluation import ClusteringEvaluator
    from pyspark.sql import functions as F

    if method not in ("kmeans", "gmm"):
        raise ValueError(f"method must be 'kmeans' or 'gmm', got {method!r}")
    answers = _answers(responses, questions).persist()
    try:
        n_rows = answers.count()
        wanted = [n_segments] if n_segments else list(range(k_range[0], k_range[1] + 1))
        candidates = [k for k in wanted if k < n_rows]
        if not candidates:
            raise ValueError(f"{n_rows} complete survey answer(s): too few for {wanted[0]} segments")
        n_dims = len(answers.first()[_ANSWERS])
        evaluator = ClusteringEvaluator(featuresCol=_ANSWERS, predictionCol="_cluster")
        scores, models = {}, {}
        for k in candidates:
            models[k] = _fit(answers, method, k, seed, max_iter, n_init)
            if len(candidates) > 1:
                scores[k] = (evaluator.evaluate(models[k].transform(answers)) if method == "kmeans"
                             else _bic(models[k], n_rows, n_dims))
        if len(candidates) == 1:
            best, criterion = candidates[0], "fixed"
        elif method == "kmeans":
            best, criterion = max(scores, key=scores.get), "silhouette"
        else:
            best, criterion = min(scores, key=scores.get), "bic"
        clustered = models[best].transform(answers).select("user_id", "_cluster")
        counts = {r["_cluster"]: r["count"] for r in clustered.groupBy("_cluster").count().collect()}
    finally:
        answers.unpersist()
    # Largest cluster -> segment 0; empty clusters get no number, so segments are 0..n-1.
    order = sorted(counts, key=lambda c: (-counts[c], c))
    relabel = F.create_map(*[F.lit(x) for s, c in enumerate(order) for x in (c, s)])
    segments = clustered.select("user_id", relabel[F.col("_cluster")].cast("int").alias("segment"))
    return segments, SurveySegmentation(method, len(order), criterion, scores, [counts[c] for c in order])


# ------------------------------------------------------------------ the job
def survey_job(spark: "SparkSession", cfg: "Config") -> SurveySegmentation:
    """Invite the next survey wave and segment the answers received."""
    from pyspark.sql import functions as F

    run_id, s = new_run_id(), cfg.survey
    users, responses = read_table(spark, cfg, "users"), read_table(spark, cfg, "survey_responses")
    check_survey_inputs(users, responses, cfg)
    # Segment first: a survey that cannot be segmented leaves both output tables unchanged.
    segments, info = segment_answers(responses, s.method, s.n_segments, s.k_range, s.seed, s.max_iter,
                                     s.questions, s.n_init)
    if info.n_segments < 2:
        raise InputError(f"{describe(cfg, 'survey_responses')}: the answers form "
                         f"{info.n_segments} segment(s), sizes {info.sizes}; need at least 2")
    invitations = select_invitations(users, s.invitations, s.sampling, s.strata, s.seed, exclude=responses)
    write_table(invitations.withColumns({"invited_at": F.current_timestamp(), "run_id": F.lit(run_id)}),
                cfg.data.table_path("survey_invitations"), commit_metadata("survey", run_id))
    write_table(segments.withColumn("run_id", F.lit(run_id)), cfg.data.table_path("survey_segments"),
                commit_metadata("survey", run_id, survey=asdict(info)))
    log.info("survey: %s chose %d segments (%s %s), sizes %s", info.method, info.n_segments,
             info.criterion, {k: round(v, 4) for k, v in info.scores.items()}, info.sizes)
    return info
