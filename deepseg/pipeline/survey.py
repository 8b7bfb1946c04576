"""The survey stage: whom to invite next, and survey answers -> segments (the few labelled users).

:func:`survey_job` reads ``users`` and ``survey_responses`` and

* segments the respondents: into the segments of the latest saved survey model
  (:mod:`.survey_segments`; numbers stay those earlier respondents got), or, with
  ``survey.redefine`` or no saved model yet, by clustering the answers anew and saving the
  clustering as a new survey model version;
* invites the next wave (:mod:`.survey_waves`): ``survey.sampling`` uniform, stratified, or
  ``active`` (the current model's most uncertain users, spread over its embedding), appended to
  ``survey_invitations`` -- only when ``survey_responses`` changed since the last wave, so a
  rerun appends nothing;
* overwrites ``survey_segments`` (the training labels), its commit recording the segmentation and
  the survey model version.

The DataFrame functions are those modules' (:func:`select_invitations`, :func:`segment_answers`,
...), re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from deepseg.pipeline.runs import commit_metadata, new_run_id
from deepseg.pipeline.survey_segments import (
    SurveySegmentation,
    assign_segments,
    check_reusable,
    fit_segments,
    load_survey_model,
    resolve_questions,
    save_survey_model,
    segment_answers,
)
from deepseg.pipeline.survey_waves import active_invitations, invite_wave, select_invitations
from deepseg.pipeline.tables import last_commit, read_table, write_table
from deepseg.pipeline.validate import InputError, check_survey_inputs, describe

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from deepseg.config import Config

__all__ = ["SurveyRun", "SurveySegmentation", "active_invitations", "segment_answers", "select_invitations",
           "survey_job"]

log = logging.getLogger("deepseg")


@dataclass
class SurveyRun(SurveySegmentation):
    """A survey run: how the respondents were segmented, and the wave it invited or reran."""

    wave: int = 0
    wave_appended: bool = False  # False: survey_responses unchanged since the wave, a rerun
    invited: int = 0
    wave_reason: str = ""
    model_version: str | None = None  # the model that chose an active wave


def _segments(cfg: "Config", responses: "DataFrame"):
    """(``user_id, segment``, how, the fitted model to save or None): the saved survey model's
    segments unless ``survey.redefine`` (or none is saved)."""
    s = cfg.survey
    saved = None if s.redefine else load_survey_model(cfg)
    if saved is not None:
        check_reusable(saved, cfg, resolve_questions(responses, s.questions))
        segments, sizes = assign_segments(responses, saved)
        log.info("survey: respondents assigned to the segments of survey model %s", saved.version)
        return segments, dataclasses.replace(saved.info, sizes=sizes), None
    segments, fitted = fit_segments(responses, s.method, s.n_segments, s.k_range, s.seed, s.max_iter,
                                    s.questions, s.n_init)
    return segments, fitted.info, fitted


def survey_job(spark: "SparkSession", cfg: "Config") -> SurveyRun:
    """Segment the answers received (with the saved segment definitions, unless
    ``survey.redefine``) and invite the next survey wave."""
    from pyspark.sql import functions as F

    run_id = new_run_id()
    users, responses = read_table(spark, cfg, "users"), read_table(spark, cfg, "survey_responses")
    check_survey_inputs(users, responses, cfg)
    # Segment first: a survey that cannot be segmented leaves every output unchanged.
    segments, info, fitted = _segments(cfg, responses)
    if info.n_segments < 2:
        raise InputError(f"{describe(cfg, 'survey_responses')}: the answers form "
                         f"{info.n_segments} segment(s), sizes {info.sizes}; need at least 2")
    responses_version = last_commit(spark, cfg.data.table("survey_responses"))["version"]
    wave = invite_wave(spark, cfg, users, responses, run_id)  # a rerun of it appends nothing
    if fitted is not None:
        fitted = save_survey_model(cfg, fitted, run_id, survey_responses_version=responses_version)
        info = fitted.info
    write_table(segments.withColumn("run_id", F.lit(run_id)), cfg.data.table("survey_segments"),
                commit_metadata("survey", run_id, survey=asdict(info), survey_model_version=info.survey_model_version,
                                survey_responses_version=responses_version, wave=wave.wave))
    log.info("survey: %s %d segments (%s %s), sizes %s, survey model %s%s", info.method, info.n_segments,
             info.criterion, {k: round(v, 4) for k, v in info.scores.items()}, info.sizes,
             info.survey_model_version, " (reused)" if info.reused else " (new)")
    return SurveyRun(**asdict(info), wave=wave.wave, wave_appended=wave.appended, invited=wave.invited,
                     wave_reason=wave.reason, model_version=wave.model_version)
