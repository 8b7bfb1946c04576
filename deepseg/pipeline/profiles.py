"""What each segment is: its size, the survey answers that define it, the user attributes that
distinguish it, and how sure the model is about its members (issue 21, segment profiles).

:func:`segment_profiles` computes one profile per segment from the scored users
(``user_segments``), the raw ``users`` attributes and the survey (``survey_segments`` and
``survey_responses``). Attributes are compared over all scored users, each user weighted by its
propensity for the segment, so that a segment's profile reflects its likely members rather than
only the users whose largest propensity it is:

* a numeric attribute by its standardised mean difference, (weighted segment mean − mean) / sd;
* a categorical value by its lift, (weighted share in the segment) / (share among all users).

Effects are ranked by |SMD| and |log lift| together (a lift of 2 or ½ weighs as an SMD of 0.69).

Survey questions are compared the same way on the respondents of each survey segment
(unweighted: a respondent's segment is known). Everything is aggregated in Spark; only a few
numbers per segment reach the driver. :func:`profiles_job` writes them to the
``segment_profiles`` table, one row per model version and segment.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from deepseg.pipeline.model_store import load_trained
from deepseg.pipeline.runs import commit_metadata, new_run_id
from deepseg.pipeline.tables import (
    load_table,
    merge_segments,
    read_table,
    retry_on_conflict,
    same_rows,
    table_exists,
)
from deepseg.pipeline.validate import InputError, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config

__all__ = ["PROFILE_SCHEMA", "profiles_job", "segment_profiles", "write_profiles"]

log = logging.getLogger("deepseg")

_EFFECT = ("struct<attribute: string, value: string, kind: string, segment_stat: double, "
           "overall_stat: double, effect: double>")
#: Schema of the ``segment_profiles`` table.
PROFILE_SCHEMA = (
    "model_version string, segment int, name string, n_users long, share_users double, n_respondents long, "
    "propensity_mean double, propensity_p10 double, propensity_p50 double, propensity_p90 double, "
    f"answers array<{_EFFECT}>, attributes array<{_EFFECT}>, run_id string")


def profiles_job(spark: "SparkSession", cfg: "Config") -> dict:
    """Profile the segments of the configured model version (``scoring.model_version``, default
    the latest) from the users it scored in ``user_segments``: see :func:`write_profiles`."""
    version = load_trained(cfg, cfg.scoring.model_version).version
    scored = read_table(spark, cfg, "user_segments")
    scored = scored.filter(scored.model_version == version)
    if scored.first() is None:
        raise InputError(f"{describe(cfg, 'user_segments')} has no user scored by model {version!r}: "
                         f"run `deepseg score` first")
    return write_profiles(spark, cfg, version, scored)


def write_profiles(spark: "SparkSession", cfg: "Config", version: str, scored: "DataFrame") -> dict:
    """MERGE the profiles of model `version`'s segments (`scored`: ``user_id, segment,
    propensities`` of the users it scored) into ``segment_profiles`` on (model_version, segment).

    One commit; profiles equal to the table's rows of that version (``run_id`` aside) are not
    rewritten, so a rerun on unchanged data commits nothing. Figures are kept to 12 significant
    digits: a recomputation that only reorders a floating-point sum changes nothing.
    """
    from pyspark.sql import functions as F

    run_id, path = new_run_id(), cfg.data.table("segment_profiles")
    try:
        profiles = segment_profiles(
            scored, read_table(spark, cfg, "users"), numeric=cfg.features.numeric,
            categorical=cfg.features.categorical, survey_segments=read_table(spark, cfg, "survey_segments"),
            responses=(read_table(spark, cfg, "survey_responses")
                       if table_exists(spark, cfg.data.table("survey_responses")) else None),
            questions=cfg.survey.questions,
            names=cfg.segments.names, top_k=cfg.segments.top_k)
    except ValueError as e:  # e.g. segments.names for another number of segments
        raise InputError(f"segment profiles of model {version!r}: {e}") from None
    rows = [_rounded((version, p["segment"], p["name"], p["n_users"], p["share_users"], p["n_respondents"],
                      *(p["propensity"][k] for k in ("mean", "p10", "p50", "p90")),
                      p["answers"], p["attributes"], run_id)) for p in profiles]
    df = spark.createDataFrame(rows, PROFILE_SCHEMA)
    meta = commit_metadata("profiles", run_id, model_version=version)

    def attempt(i: int) -> bool:
        if table_exists(spark, path):
            current = load_table(spark, path)
            if same_rows(df, current.filter(F.col("model_version") == version), ignore=("run_id",)):
                return False
        merge_segments(spark, df, path, keys=("model_version", "segment"), metadata=meta)
        return True

    changed = retry_on_conflict(attempt, f"profiles into {path}")
    log.info("profiles: %d segments of model %s -> %s (%s)", len(profiles), version, path,
             "written" if changed else "unchanged")
    return {"run_id": run_id, "model_version": version, "table": path, "segments": len(profiles),
            "changed": changed, "names": dict(cfg.segments.names) if cfg.segments.names else None,
            "profiles": profiles}


def _rounded(value):
    """`value` with every float (also inside lists and dicts) to 12 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, (list, tuple)):
        return type(value)(_rounded(v) for v in value)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def segment_profiles(scored: "DataFrame", users: "DataFrame", *, numeric: Sequence[str],
                     categorical: Sequence[str], survey_segments: "DataFrame | None" = None,
                     responses: "DataFrame | None" = None, questions: Sequence[str] | None = None,
                     names: Mapping[int, str] | None = None, top_k: int = 5) -> list[dict]:
    """One profile (a dict) per segment of `scored`, largest effect first within each list.

    `scored` has ``user_id``, ``segment`` and ``propensities`` (``user_segments``); `users` the
    attributes named in `numeric` and `categorical`. `survey_segments` (``user_id, segment``) and
    `responses` (``user_id`` + answer columns `questions`, default all but ``user_id``) add the
    respondents' sizes and the defining answers (none without `responses`). `names` maps
    segment numbers to readable names.
    """
    from pyspark.sql import functions as F

    if top_k < 1:
        raise ValueError(f"top_k must be >= 1; got {top_k}")
    first = scored.select("propensities").first()
    if first is None:
        raise ValueError("no scored users: score the users before profiling the segments")
    n_segments = len(first[0])
    if names is not None and sorted(names) != list(range(n_segments)):
        raise ValueError(f"names must name segments 0..{n_segments - 1}; got {sorted(names)}")
    # every attribute aggregation reads the users once more: keep their weighted join
    weighted = (scored.select("user_id", F.posexplode("propensities").alias("segment", "weight"))
                .join(users.select("user_id", *numeric, *categorical), "user_id")).persist()
    try:
        sizes = {r.segment: r["count"] for r in scored.groupBy("segment").count().collect()}
        confidence = _member_propensities(scored, n_segments)
        attributes = _numeric_effects(weighted, users, numeric) + _categorical_effects(weighted, users, categorical)
    finally:
        weighted.unpersist()
    answers = (_answer_effects(survey_segments, responses, questions)
               if survey_segments is not None and responses is not None else [])
    respondents = ({r.segment: r["count"] for r in survey_segments.groupBy("segment").count().collect()}
                   if survey_segments is not None else {})
    n_scored = sum(sizes.values())
    return [{
        "segment": s,
        "name": (names or {}).get(s),
        "n_users": sizes.get(s, 0),
        "share_users": sizes.get(s, 0) / n_scored if n_scored else 0.0,
        "n_respondents": respondents.get(s, 0),
        "propensity": confidence.get(s, {"mean": None, "p10": None, "p50": None, "p90": None}),
        "answers": _top([a for a in answers if a["segment"] == s], len(answers)),
        "attributes": _top([a for a in attributes if a["segment"] == s], top_k),
    } for s in range(n_segments)]


def _top(effects: list[dict], k: int) -> list[dict]:
    """The `k` largest effects (by distance from "no difference"), without the segment key."""
    def size(e):
        return abs(math.log(e["effect"])) if e["kind"] == "lift" else abs(e["effect"])

    ranked = sorted((e for e in effects if e["effect"] is not None), key=size, reverse=True)
    return [{k_: v for k_, v in e.items() if k_ != "segment"} for e in ranked[:k]]


def _member_propensities(scored: "DataFrame", n_segments: int) -> dict[int, dict]:
    """Mean and 10/50/90th percentiles of the members' propensity for their own segment."""
    from pyspark.sql import functions as F

    own = F.element_at("propensities", F.col("segment") + 1)
    rows = scored.groupBy("segment").agg(
        F.mean(own).alias("mean"), F.percentile(own, F.array(*(F.lit(q) for q in (0.1, 0.5, 0.9)))).alias("q")
    ).collect()
    return {r.segment: {"mean": r["mean"], "p10": r.q[0], "p50": r.q[1], "p90": r.q[2]} for r in rows}


def _numeric_effects(weighted: "DataFrame", users: "DataFrame", columns: Sequence[str]) -> list[dict]:
    """Standardised mean difference of each numeric column per segment (propensity-weighted)."""
    from pyspark.sql import functions as F

    if not columns:
        return []
    overall = users.agg(*(F.mean(c).alias(f"m_{i}") for i, c in enumerate(columns)),
                        *(F.stddev_pop(c).alias(f"s_{i}") for i, c in enumerate(columns))).first()
    rows = weighted.groupBy("segment").agg(*(
        (F.sum(F.col("weight") * F.col(c)) / F.sum(F.when(F.col(c).isNotNull(), F.col("weight")))).alias(f"m_{i}")
        for i, c in enumerate(columns))).collect()
    out = []
    for r in rows:
        for i, c in enumerate(columns):
            mean, sd, seg_mean = overall[f"m_{i}"], overall[f"s_{i}"], r[f"m_{i}"]
            effect = (seg_mean - mean) / sd if seg_mean is not None and sd else None
            out.append({"segment": r.segment, "attribute": c, "value": None, "kind": "smd",
                        "segment_stat": seg_mean, "overall_stat": mean, "effect": effect})
    return out


def _categorical_effects(weighted: "DataFrame", users: "DataFrame", columns: Sequence[str]) -> list[dict]:
    """Lift of each value of each categorical column per segment (propensity-weighted shares)."""
    from pyspark.sql import functions as F

    out = []
    if not columns:
        return out
    n_users = users.count()
    totals = {r.segment: r.w for r in weighted.groupBy("segment").agg(F.sum("weight").alias("w")).collect()}
    for c in columns:
        value = F.col(c).cast("string")
        overall = {r.v: r["count"] / n_users for r in users.groupBy(value.alias("v")).count().collect()}
        for r in weighted.groupBy("segment", value.alias("v")).agg(F.sum("weight").alias("w")).collect():
            share = r.w / totals[r.segment] if totals[r.segment] else None
            effect = share / overall[r.v] if share else None
            out.append({"segment": r.segment, "attribute": c, "value": r.v, "kind": "lift",
                        "segment_stat": share, "overall_stat": overall[r.v], "effect": effect})
    return out


def _answer_effects(survey_segments: "DataFrame", responses: "DataFrame", questions: Sequence[str] | None
                    ) -> list[dict]:
    """Per survey segment and question: the respondents' mean answer against all respondents'
    (standardised difference)."""
    from pyspark.sql import functions as F

    questions = list(questions) if questions is not None else [c for c in responses.columns if c != "user_id"]
    missing = [q for q in questions if q not in responses.columns]
    if missing:
        raise ValueError(f"questions {missing} are not columns of the responses {responses.columns}")
    answered = responses.select("user_id", *questions).join(survey_segments.select("user_id", "segment"), "user_id")
    overall = answered.agg(*(F.mean(q).alias(f"m_{i}") for i, q in enumerate(questions)),
                           *(F.stddev_pop(q).alias(f"s_{i}") for i, q in enumerate(questions))).first()
    rows = answered.groupBy("segment").agg(*(F.mean(q).alias(f"m_{i}") for i, q in enumerate(questions))).collect()
    out = []
    for r in rows:
        for i, q in enumerate(questions):
            mean, sd, seg_mean = overall[f"m_{i}"], overall[f"s_{i}"], r[f"m_{i}"]
            out.append({"segment": r.segment, "attribute": q, "value": None, "kind": "smd",
                        "segment_stat": seg_mean, "overall_stat": mean,
                        "effect": (seg_mean - mean) / sd if seg_mean is not None and sd else None})
    return out
