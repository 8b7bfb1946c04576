"""The nightly refresh on real Delta tables: users deleted from `users` leave `user_segments` and
the audiences in the scoring commit; a second run for the same day changes nothing; two
concurrent runs leave each user exactly once (the loser retries, or fails cleanly)."""

from __future__ import annotations

import csv
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from deepseg.config import load_config

CONF = Path(__file__).resolve().parents[2] / "conf"

spark_test = pytest.mark.spark


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load_config(CONF / "local.yaml", {
        "data": {"root": str(tmp_path_factory.mktemp("deepseg-refresh"))},
        "survey": {"invitations": 50, "n_segments": 5},
        "training": {"n_iter": 1, "supervised_epochs": 30, "unlabeled_epochs": 1, "labeled_epochs": 1,
                     "tsvm_sample_size": 500},
        "audiences": {"top_k": 50},
        "segments": {"names": {0: "savers", 1: "families", 2: "gamers", 3: "travellers", 4: "pros"}},
    })


@pytest.fixture(scope="module")
def trained(spark, cfg):
    """Tables, a model, everyone scored, audiences: the state before a night's refresh."""
    from deepseg.demo import generate_tables, load_demo_settings
    from deepseg.pipeline import audiences_job, features_job, score_job, survey_job, train_job

    generate_tables(spark, cfg, load_demo_settings(CONF / "demo.yaml", {"generate": {
        "n_users": 1500, "chunk_size": 1500, "synthetic": {"survey_fraction": 0.1}}}))
    features_job(spark, cfg)
    survey_job(spark, cfg)
    model = train_job(spark, cfg)
    score_job(spark, cfg, trained=model)
    audiences_job(spark, cfg)
    return model


def _table(spark, cfg, name):
    from deepseg.pipeline.tables import read_table

    return read_table(spark, cfg, name)


def _history(spark, cfg, name) -> list:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, cfg.data.table_path(name)).history().orderBy("version").collect()


def _ids(spark, cfg, name) -> list[int]:
    return sorted(r.user_id for r in _table(spark, cfg, name).select("user_id").collect())


def _rows(spark, cfg, name) -> list[tuple]:
    """Every row, every column (run_id, scored_at and created_at included), sorted."""
    return sorted(tuple(r) for r in _table(spark, cfg, name).collect())


def change_users(spark, cfg, *, add: int = 0, change: int = 0, delete=(), new_ids_from: int) -> list[int]:
    """Today's `users` and `events`: `add` copies of existing users under new ids (from
    `new_ids_from`), `change` users with another monthly spend, the users `delete` gone.
    Returns the new ids."""
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import write_table

    users, events = _table(spark, cfg, "users"), _table(spark, cfg, "events")
    kept = [i for i in _ids(spark, cfg, "users") if i not in set(delete)]
    copied, changed = kept[:add], kept[add:add + change]
    offset = new_ids_from - min(copied) if copied else 0
    new_ids = [i + offset for i in copied]

    def renamed(df):
        return df.filter(F.col("user_id").isin(copied)).withColumn("user_id", F.col("user_id") + offset)

    spend = F.when(F.col("user_id").isin(changed), F.col("monthly_spend") * 2 + 1).otherwise(F.col("monthly_spend"))
    users = users.filter(~F.col("user_id").isin(list(delete)))
    users = users.withColumn("monthly_spend", spend.cast(users.schema["monthly_spend"].dataType))
    events = events.filter(~F.col("user_id").isin(list(delete)))
    today_users = users.unionByName(renamed(users)).localCheckpoint()  # cut the lineage to the
    today_events = events.unionByName(renamed(events)).localCheckpoint()  # tables overwritten below
    write_table(today_users, cfg.data.table_path("users"), {"job": "test", "run_id": "change_users"})
    write_table(today_events, cfg.data.table_path("events"), {"job": "test", "run_id": "change_users"})
    return new_ids


def _check_one_row_per_user(spark, cfg):
    segments = _ids(spark, cfg, "user_segments")
    assert len(segments) == len(set(segments)), "duplicate user_id rows in user_segments"
    assert segments == _ids(spark, cfg, "users")


@spark_test
def test_deleted_users_leave_user_segments_and_audiences_in_one_commit(spark, cfg, trained):
    from deepseg.pipeline import audiences_job, score_job

    audiences = _table(spark, cfg, "audiences")
    top = [r.user_id for r in audiences.filter("rank = 1").collect()]  # one per segment
    others = sorted(set(_ids(spark, cfg, "users")) - set(_ids(spark, cfg, "audiences")))[:2]
    deleted = top + others
    change_users(spark, cfg, delete=deleted, new_ids_from=10_000_000)
    commits = len(_history(spark, cfg, "user_segments"))

    out = score_job(spark, cfg)
    assert out["scored"] == 0 and out["deleted"] == len(deleted)
    new = _history(spark, cfg, "user_segments")[commits:]
    assert [h.operation for h in new] == ["MERGE"]  # the deletes are the score run's one commit
    metrics = new[0].operationMetrics
    assert int(metrics["numTargetRowsDeleted"]) == len(deleted)
    assert int(metrics["numTargetRowsUpdated"]) == int(metrics["numTargetRowsInserted"]) == 0
    assert out["run_id"] in new[0].userMetadata
    _check_one_row_per_user(spark, cfg)
    assert not set(deleted) & set(_ids(spark, cfg, "user_segments"))

    result = audiences_job(spark, cfg)
    assert result["changed"]
    left = _ids(spark, cfg, "audiences")
    assert not set(deleted) & set(left)
    members = {r.segment: r["count"] for r in _table(spark, cfg, "user_segments").groupBy("segment").count().collect()}
    assert result["sizes"] == {s: min(n, cfg.audiences.top_k) for s, n in members.items()}  # refilled from below
    exported = {int(row["user_id"]) for f in Path(result["export_dir"]).glob("segment=*/*.csv")
                for row in csv.DictReader(f.read_text().splitlines())}
    assert exported == set(left)


@spark_test
def test_second_refresh_of_the_same_day_changes_nothing(spark, cfg, trained):
    from deepseg.pipeline import model_versions, refresh_job

    dropped = _ids(spark, cfg, "users")[-10:]
    new_ids = change_users(spark, cfg, add=30, change=20, delete=dropped, new_ids_from=20_000_000)
    now = trained.trained_at + timedelta(days=1)

    first = refresh_job(spark, cfg, now=now)
    assert first["retrain_reasons"] == [] and first["model_version"] == trained.version
    assert first["scored"] == 30 + 20 and first["deleted"] == 10
    assert set(new_ids) <= set(_ids(spark, cfg, "user_segments"))
    _check_one_row_per_user(spark, cfg)
    assert first["profiles_changed"]  # new and changed users move the segments' figures
    names = ("user_segments", "segment_profiles", "audiences")
    tables = {name: _rows(spark, cfg, name) for name in names}
    commits = {name: len(_history(spark, cfg, name)) for name in names}
    export = Path(cfg.data.root) / cfg.audiences.export_dir
    exported = sorted((str(p.relative_to(export)), p.read_bytes()) for p in export.rglob("*") if p.is_file())

    second = refresh_job(spark, cfg, now=now)
    assert second["scored"] == second["deleted"] == 0 and second["retrain_reasons"] == []
    assert second["audiences"] == first["audiences"] and not second["profiles_changed"]
    assert {name: _rows(spark, cfg, name) for name in names} == tables  # run_id, scored_at too
    assert {name: len(_history(spark, cfg, name)) for name in names} == commits  # no commit at all
    assert sorted((str(p.relative_to(export)), p.read_bytes()) for p in export.rglob("*") if p.is_file()) == exported
    assert model_versions(cfg) == [trained.version]


def _race(spark, monkeypatch, jobs):
    """Run `jobs` (callables taking a SparkSession) in threads, each with its own session; their
    first MERGE into user_segments starts together (a barrier), so both commits race."""
    import deepseg.pipeline.score

    barrier, local = threading.Barrier(len(jobs), timeout=300), threading.local()
    merge = deepseg.pipeline.score.merge_segments

    def racing_merge(*args, **kwargs):
        if not getattr(local, "raced", False):
            local.raced = True
            barrier.wait()
        return merge(*args, **kwargs)

    monkeypatch.setattr(deepseg.pipeline.score, "merge_segments", racing_merge)
    results: list = [None] * len(jobs)

    def run(i, job, session):
        try:
            results[i] = job(session)
        except Exception as e:  # noqa: BLE001 - returned to the test
            results[i] = e
            barrier.abort()  # a job that fails before its merge must not leave the other waiting

    threads = [threading.Thread(target=run, args=(i, job, spark.newSession())) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return results


@spark_test
def test_concurrent_refreshes_one_commits_the_other_retries(spark, cfg, trained, monkeypatch):
    from deepseg.pipeline import refresh_job

    new_ids = change_users(spark, cfg, add=40, new_ids_from=30_000_000)
    commits = len(_history(spark, cfg, "user_segments"))
    audience_commits = len(_history(spark, cfg, "audiences"))
    now = trained.trained_at + timedelta(days=1)

    results = _race(spark, monkeypatch, [lambda s: refresh_job(s, cfg, now=now)] * 2)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted((r["scored"], r["retries"]) for r in results) == [(0, 1), (40, 0)]  # the loser retried
    new = _history(spark, cfg, "user_segments")[commits:]
    assert [h.operation for h in new] == ["MERGE"] and int(new[0].operationMetrics["numTargetRowsInserted"]) == 40
    _check_one_row_per_user(spark, cfg)
    assert set(new_ids) <= set(_ids(spark, cfg, "user_segments"))
    # audiences: each run may commit them (the same rows, run_id/created_at aside), never doubled
    from deepseg.pipeline.audiences import build_audiences
    from deepseg.pipeline.tables import same_rows

    a = cfg.audiences
    audiences = _table(spark, cfg, "audiences")
    keys = [(r.segment, r.user_id) for r in audiences.select("segment", "user_id").collect()]
    assert len(keys) == len(set(keys))
    assert same_rows(audiences, build_audiences(_table(spark, cfg, "user_segments"), top_k=a.top_k,
                                                threshold=a.threshold, content=a.content,
                                                default_content=a.default_content, names=cfg.segments.names),
                     ignore=("run_id", "created_at"))
    assert len(_history(spark, cfg, "audiences")) - audience_commits <= 2
    assert results[0]["audiences"] == results[1]["audiences"]


@spark_test
def test_concurrent_scores_without_retries_the_loser_fails_cleanly(spark, cfg, trained, monkeypatch):
    import deepseg.pipeline.tables
    from deepseg.pipeline import score_job
    from deepseg.pipeline.tables import ConcurrentWriteError

    monkeypatch.setattr(deepseg.pipeline.tables, "CONFLICT_RETRIES", 0)
    new_ids = change_users(spark, cfg, add=25, new_ids_from=40_000_000)
    before = _rows(spark, cfg, "user_segments")
    commits = len(_history(spark, cfg, "user_segments"))

    results = _race(spark, monkeypatch, [lambda s: score_job(s, cfg)] * 2)
    failed = [r for r in results if isinstance(r, BaseException)]
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(failed) == len(won) == 1, results
    assert isinstance(failed[0], ConcurrentWriteError), repr(failed[0])
    message = str(failed[0])
    assert cfg.data.table_path("user_segments") in message and "concurrent commit" in message
    assert "not applied" in message and "gave up after 1 attempt:" in message
    assert won[0]["scored"] == 25
    new = _history(spark, cfg, "user_segments")[commits:]
    assert len(new) == 1 and won[0]["run_id"] in new[0].userMetadata  # only the winner's commit
    _check_one_row_per_user(spark, cfg)
    after = _rows(spark, cfg, "user_segments")
    assert [r for r in after if r[0] not in set(new_ids)] == before  # nobody else rewritten
    assert {r[0] for r in after if r[4] == won[0]["run_id"]} == set(new_ids)


@spark_test
def test_segment_names_reach_profiles_audiences_and_their_export(spark, cfg, trained):
    """`segments.names` is carried by the jobs into segment_profiles, audiences and its CSV export."""
    from deepseg.pipeline import audiences_job

    names = dict(cfg.segments.names)
    out = audiences_job(spark, cfg)
    profiles = {(r.segment, r.name) for r in _table(spark, cfg, "segment_profiles").collect()}
    assert {s for s, _ in profiles} == set(names) and all(names[s] == n for s, n in profiles)
    pairs = {(r.segment, r.segment_name) for r in _table(spark, cfg, "audiences").collect()}
    assert pairs and all(names[s] == n for s, n in pairs)
    csvs = sorted(Path(out["export_dir"]).glob("segment=*/*.csv"))
    assert len(csvs) == len(pairs)
    for path in csvs:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and {r["segment_name"] for r in rows} == {names[int(path.parent.name.split("=")[1])]}
