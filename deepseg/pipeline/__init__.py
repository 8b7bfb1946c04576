"""The pipeline's jobs: read Delta tables, call the stage functions, write one table each.

Every entry point -- ``deepseg <stage>``, ``jobs/<stage>.py`` under spark-submit, the
notebooks -- is one call of a function here, taking a SparkSession and a :class:`Config`:

==================  ==========================================  ===============================
job                 reads                                       writes
==================  ==========================================  ===============================
features_job        users, events                               features (+ its fitted pipeline)
survey_job          users, survey_responses (+ model: active)   survey_invitations (append), survey_segments
train_job           features, survey_segments                   models/<version>/, segment_profiles
score_job           users, events, model                        user_segments (MERGE)
profiles_job        user_segments, users, survey tables         segment_profiles (MERGE)
audiences_job       user_segments                               audiences (+ CSV export)
refresh_job         users, events, user_segments, model         user_segments, segment_profiles,
                                                                audiences, report (+ retrain)
==================  ==========================================  ===============================

A module per stage, in the order data flows: :mod:`.features`, :mod:`.survey` (with
:mod:`.survey_waves`, whom to invite, and :mod:`.survey_segments`, answers -> saved segments),
:mod:`.train`, :mod:`.score`, :mod:`.profiles`, :mod:`.audiences`, :mod:`.refresh`; each holds its
stage's DataFrame functions and its job. Shared by them: :mod:`.tables` (the only Delta I/O),
:mod:`.validate` (input checks), :mod:`.runs` (run ids, timings), :mod:`.model_store` (model
version directories), :mod:`.drift` (the population profiles that train stores and refresh
compares) and :mod:`.report` (the run report of a model version).
"""

from deepseg.pipeline.audiences import audiences_job
from deepseg.pipeline.features import current_features, features_job
from deepseg.pipeline.model_store import TrainedModel, load_trained, model_versions
from deepseg.pipeline.profiles import profiles_job
from deepseg.pipeline.refresh import refresh_job
from deepseg.pipeline.runs import new_run_id, timed
from deepseg.pipeline.score import score_job
from deepseg.pipeline.survey import survey_job
from deepseg.pipeline.train import train_job

__all__ = [
    "TrainedModel",
    "audiences_job",
    "current_features",
    "features_job",
    "load_trained",
    "model_versions",
    "new_run_id",
    "profiles_job",
    "refresh_job",
    "score_job",
    "survey_job",
    "timed",
    "train_job",
]
