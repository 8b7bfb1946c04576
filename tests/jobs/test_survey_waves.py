"""Survey waves on real Delta tables (1500 users, a tiny model): each wave is one append to
survey_invitations, earlier waves are never rewritten, nobody is invited twice, a rerun appends
nothing; an active wave records why and which model chose it; the saved survey model keeps the
segments' numbers across waves, and survey.redefine makes a new version."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepseg.config import load_config

CONF = Path(__file__).resolve().parents[2] / "conf"
INVITATIONS = 40

spark_test = pytest.mark.spark


def _settings(root, **survey) -> dict:
    return {
        "data": {"root": str(root)},
        "survey": {"invitations": INVITATIONS, "n_segments": 5, "sampling": "active", **survey},
        "training": {"n_iter": 1, "supervised_epochs": 30, "unlabeled_epochs": 1, "labeled_epochs": 1,
                     "tsvm_sample_size": 500},
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("deepseg-waves")


@pytest.fixture(scope="module")
def cfg(root):
    return load_config(CONF / "local.yaml", _settings(root))


def _table(spark, cfg, name):
    from deepseg.pipeline.tables import read_table

    return read_table(spark, cfg, name)


def _history(spark, cfg, name) -> list:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, cfg.data.table_path(name)).history().orderBy("version").collect()


def _rows(spark, cfg, name, *columns) -> list[tuple]:
    return sorted(tuple(r) for r in _table(spark, cfg, name).select(*columns).collect())


@pytest.fixture(scope="module")
def waves(spark, cfg):
    """Wave 1 (no model yet), its rerun; a model scores everyone; some invitees answer (copies of
    earlier respondents' answers); wave 2 (active) and its rerun."""
    from types import SimpleNamespace

    from pyspark.sql import functions as F

    from deepseg.demo import generate_tables, load_demo_settings
    from deepseg.pipeline import features_job, score_job, survey_job, train_job
    from deepseg.pipeline.tables import append_table

    generate_tables(spark, cfg, load_demo_settings(CONF / "demo.yaml", {"generate": {
        "n_users": 1500, "chunk_size": 1500, "synthetic": {"survey_fraction": 0.1}}}))
    features_job(spark, cfg)
    out = SimpleNamespace(first=survey_job(spark, cfg))
    out.invitations1 = _rows(spark, cfg, "survey_invitations", "*")
    out.segments1 = _rows(spark, cfg, "survey_segments", "user_id", "segment")
    out.first_rerun = survey_job(spark, cfg)
    out.commits1 = len(_history(spark, cfg, "survey_invitations"))
    out.model = train_job(spark, cfg)
    score_job(spark, cfg, trained=out.model)

    # 20 wave-1 invitees answer exactly as 20 earlier respondents did
    invitees = sorted(r.user_id for r in _table(spark, cfg, "survey_invitations").select("user_id").collect())[:20]
    templates = [u for u, _ in out.segments1[:20]]
    out.templates = dict(zip(invitees, templates))
    copies = (_table(spark, cfg, "survey_responses")
              .join(spark.createDataFrame(list(out.templates.items()), "new_id long, user_id long"), "user_id")
              .withColumn("user_id", F.col("new_id")).drop("new_id")).localCheckpoint()
    append_table(copies, cfg.data.table_path("survey_responses"), {"job": "test", "run_id": "answers"})
    out.second = survey_job(spark, cfg)
    out.commits2 = len(_history(spark, cfg, "survey_invitations"))
    out.second_rerun = survey_job(spark, cfg)
    return out


@spark_test
def test_one_append_per_wave_and_earlier_waves_unchanged(spark, cfg, waves):
    history = _history(spark, cfg, "survey_invitations")
    assert waves.commits1 == 1 and waves.commits2 == len(history) == 2  # reruns appended nothing
    assert [(h.operation, h.operationParameters["mode"]) for h in history] == [("WRITE", "Append")] * 2
    assert ['"wave": 1' in history[0].userMetadata, '"wave": 2' in history[1].userMetadata] == [True, True]
    table = _table(spark, cfg, "survey_invitations")
    assert sorted(tuple(r) for r in table.filter("wave = 1").collect()) == waves.invitations1
    ids = [r.user_id for r in table.select("user_id").collect()]
    assert len(ids) == len(set(ids)) == 2 * INVITATIONS  # nobody invited twice
    respondents_before = {u for u, _ in waves.segments1}
    wave2 = {r.user_id for r in table.filter("wave = 2").collect()}
    assert not wave2 & (respondents_before | set(waves.templates))  # no respondent, no earlier invitee
    assert (waves.first.wave, waves.first.wave_appended, waves.first.invited) == (1, True, INVITATIONS)
    assert (waves.first_rerun.wave, waves.first_rerun.wave_appended, waves.first_rerun.invited) == (1, False, 0)
    assert (waves.second.wave, waves.second.wave_appended) == (2, True)
    assert (waves.second_rerun.wave, waves.second_rerun.wave_appended) == (2, False)


@spark_test
def test_waves_record_their_reason_and_model(spark, cfg, waves):
    table = _table(spark, cfg, "survey_invitations")
    reasons = {(r.wave, r.reason, r.model_version) for r in table.select("wave", "reason", "model_version").collect()}
    assert reasons == {(1, "stratified by plan (no model yet)", None),
                       (2, "active: margin over f-space (k-means++)", waves.model.version)}
    assert waves.second.model_version == waves.model.version
    assert {r.stratum for r in table.collect()} <= {"free", "pro", "business", "enterprise"}


@spark_test
def test_new_respondents_join_the_saved_segments(spark, cfg, waves):
    from deepseg.pipeline.survey_segments import survey_model_versions

    assert survey_model_versions(cfg) == [waves.first.survey_model_version]
    assert not waves.first.reused and waves.first_rerun.reused and waves.second.reused
    assert waves.second.survey_model_version == waves.first.survey_model_version
    segments = dict(_rows(spark, cfg, "survey_segments", "user_id", "segment"))
    before = dict(waves.segments1)
    assert {u: segments[u] for u in before} == before  # same numbers for earlier respondents
    assert {u: segments[u] for u in waves.templates} == {u: before[t] for u, t in waves.templates.items()}
    assert sum(waves.second.sizes) == len(segments) == len(before) + len(waves.templates)
    meta = _history(spark, cfg, "survey_segments")[-1].userMetadata
    assert f'"survey_model_version": "{waves.first.survey_model_version}"' in meta and '"n_segments": 5' in meta


@spark_test
def test_redefine_makes_a_new_survey_model_version(spark, cfg, root, waves):
    from deepseg.pipeline import survey_job
    from deepseg.pipeline.survey_segments import survey_model_versions

    redefined = survey_job(spark, load_config(CONF / "local.yaml", _settings(root, redefine=True)))
    versions = survey_model_versions(cfg)
    assert len(versions) == 2 and versions[-1] == redefined.survey_model_version != waves.first.survey_model_version
    assert not redefined.reused and not redefined.wave_appended  # the answers did not change: no wave
    again = survey_job(spark, cfg)  # redefine off again: the new definitions are the saved ones
    assert again.reused and again.survey_model_version == versions[-1]


@spark_test
def test_a_wave_is_committed_once_even_if_appended_again(spark, cfg, waves):
    """Delta's idempotent writes guard the wave number too: a second append of wave 2 is skipped."""
    from deepseg.pipeline.survey_waves import _TXN_APP_ID
    from deepseg.pipeline.tables import append_table

    path = cfg.data.table_path("survey_invitations")
    before = len(_history(spark, cfg, "survey_invitations"))
    wave2 = _table(spark, cfg, "survey_invitations").filter("wave = 2").localCheckpoint()
    append_table(wave2, path, {"job": "survey", "run_id": "again", "wave": 2}, txn=(_TXN_APP_ID, 2))
    assert len(_history(spark, cfg, "survey_invitations")) == before
    assert _table(spark, cfg, "survey_invitations").count() == 2 * INVITATIONS


@spark_test
def test_an_old_invitations_table_is_refused_with_a_migration(spark, root, waves):
    from pyspark.sql import functions as F

    from deepseg.pipeline import survey_job
    from deepseg.pipeline.tables import write_table
    from deepseg.pipeline.validate import InputError

    old = load_config(CONF / "local.yaml", _settings(root) | {"data": {
        "root": str(root), "tables": {"survey_invitations": "old_invitations"}}})
    write_table(spark.createDataFrame([(1, "pro", "r0")], "user_id long, stratum string, run_id string")
                .withColumn("invited_at", F.current_timestamp()), old.data.table_path("survey_invitations"))
    before = len(_history(spark, old, "survey_segments"))
    with pytest.raises(InputError, match=r"lacks column\(s\) \['wave', 'reason', 'model_version'\].*ALTER TABLE"):
        survey_job(spark, old)
    assert len(_history(spark, old, "survey_segments")) == before  # nothing written
