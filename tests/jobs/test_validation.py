"""Bad input at the job boundaries: each job fails before writing anything, with a message that
names the table, column, setting and offending value, and the CLI exits with status 2 without
a traceback. Small real Delta tables (600 synthetic users) under tmp_path."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepseg.config import TABLES, load_config, merge

CONF = Path(__file__).resolve().parents[2] / "conf"

pytestmark = pytest.mark.spark

#: Small and fast: 600 users, 3 survey segments, one short iteration.
DEMO = {"generate": {"n_users": 600, "chunk_size": 600,
                     "synthetic": {"survey_fraction": 0.15, "events_per_user": 5.0, "n_segments": 3}}}
SETTINGS = {
    "spark": {"master": "local[2]"},
    "survey": {"invitations": 50, "n_segments": 3, "n_init": 1},
    "training": {"supervised_epochs": 5, "n_iter": 1, "unlabeled_epochs": 1, "labeled_epochs": 1,
                 "tsvm_sample_size": 300, "min_labeled_per_segment": 2},
}


def _settings(root, **overrides) -> dict:
    return merge(merge(SETTINGS, {"data": {"root": str(root)}}), overrides)


@pytest.fixture(scope="module")
def base(spark, tmp_path_factory):
    """Every table and one model, written once by the real jobs; tests corrupt copies."""
    from deepseg.demo import generate_tables, load_demo_settings
    from deepseg.pipeline import features_job, score_job, survey_job, train_job

    cfg = load_config(CONF / "local.yaml", _settings(tmp_path_factory.mktemp("validation-base")))
    generate_tables(spark, cfg, load_demo_settings(CONF / "demo.yaml", DEMO))
    features_job(spark, cfg)
    survey_job(spark, cfg)
    score_job(spark, cfg, trained=train_job(spark, cfg))
    return cfg


@pytest.fixture
def copy(base, tmp_path):
    """A private copy of the base tables and model: ``copy(**overrides) -> Config``."""
    root = tmp_path / "data"
    shutil.copytree(base.data.root, root)

    def make(**overrides):
        return load_config(CONF / "local.yaml", _settings(root, **overrides))

    return make


def _state(spark, cfg) -> dict:
    """Every table's latest Delta version, the model versions and the feature pipeline's files."""
    from deepseg.pipeline.features import feature_pipeline_path
    from deepseg.pipeline.tables import last_commit, table_exists

    out = {name: last_commit(spark, cfg.data.table_path(name))["version"]
           for name in TABLES if table_exists(spark, cfg.data.table_path(name))}
    models = Path(cfg.data.models_path)
    out["models"] = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    pipeline = Path(feature_pipeline_path(cfg))
    out["pipeline"] = sorted((str(p), p.stat().st_mtime_ns) for p in pipeline.rglob("*") if p.is_file())
    return out


def _rewrite(spark, cfg, name, df) -> None:
    """Replace input table `name` by `df` in one Delta commit that keeps the last commit's job
    metadata (feature_names, survey), as an upstream writing bad data would. The rows are
    materialised first, since `df` usually reads the table it replaces."""
    from deepseg.pipeline.tables import last_commit, write_table

    path = cfg.data.table_path(name)
    meta = {k: v for k, v in last_commit(spark, path).items() if k not in ("version", "operation", "timestamp")}
    rows, schema = df.collect(), df.schema
    write_table(spark.createDataFrame(rows, schema), path, meta)


def _cli(cfg, stage, capsys, *extra) -> tuple[int, str]:
    """Run ``deepseg <stage> --conf <a file holding cfg>`` in-process: (exit code, stderr)."""
    from deepseg.cli import main

    conf_dir = Path(cfg.data.root).parent / "conf"
    conf_dir.mkdir(exist_ok=True)
    shutil.copy(CONF / "base.yaml", conf_dir / "base.yaml")
    (conf_dir / "env.yaml").write_text(yaml.safe_dump(cfg.as_dict()))
    capsys.readouterr()
    code = main([stage, "--conf", str(conf_dir / "env.yaml"), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _job(stage):
    from deepseg import pipeline

    return {"features": pipeline.features_job, "survey": pipeline.survey_job,
            "train": pipeline.train_job, "score": pipeline.score_job, "refresh": pipeline.refresh_job}[stage]


def _fails(spark, cfg, stage, *fragments, error=None):
    """Run job `stage`: it must raise `error` (InputError) naming every fragment and write nothing."""
    from deepseg.pipeline.validate import InputError

    before = _state(spark, cfg)
    with pytest.raises(error or InputError) as info:
        _job(stage)(spark, cfg)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert _state(spark, cfg) == before
    return str(info.value)


# ------------------------------------------------------------------ tables and columns
def test_missing_table_via_cli(spark, copy, capsys):
    cfg = copy()
    shutil.rmtree(cfg.data.table_path("events"))
    before = _state(spark, cfg)
    code, err = _cli(cfg, "features", capsys)
    assert code == 2
    assert "Delta table 'events'" in err and cfg.data.table_path("events") in err
    assert _state(spark, cfg) == before


@pytest.mark.parametrize("stage, table, drop, fragments", [
    ("features", "users", "plan", ["table 'users'", "missing column 'plan'", "features.categorical[1]"]),
    ("features", "events", "duration_s", ["table 'events'", "missing column 'duration_s'",
                                          "features.events.duration"]),
    ("survey", "survey_responses", "q3", None),  # survey.questions = null: every column is a question
    ("train", "survey_segments", "segment", ["table 'survey_segments'", "missing column 'segment'"]),
])
def test_missing_column(spark, copy, stage, table, drop, fragments):
    cfg = copy(survey={"questions": ["q1", "q2", "q3"]}) if fragments is None else copy()
    fragments = fragments or ["table 'survey_responses'", "missing column 'q3'", "survey.questions[2]"]
    from deepseg.pipeline.tables import read_table

    _rewrite(spark, cfg, table, read_table(spark, cfg, table).drop(drop))
    _fails(spark, cfg, stage, *fragments, cfg.data.table_path(table))


@pytest.mark.parametrize("stage, table, column, cast, fragments", [
    ("features", "users", "age", "string",
     ["table 'users'", "column 'age' (features.numeric[0]) must be numeric, got string"]),
    ("features", "events", "event_date", "array<int>",
     ["table 'events'", "column 'event_date' (features.events.date) must be a date"]),
    ("survey", "survey_responses", "q1", "string",
     ["table 'survey_responses'", "column 'q1'", "must be numeric, got string"]),
    ("train", "survey_segments", "segment", "double",
     ["table 'survey_segments'", "column 'segment' must be an integer type, got double"]),
])
def test_wrong_column_type_via_job_and_cli(spark, copy, capsys, stage, table, column, cast, fragments):
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    cfg = copy()
    df = read_table(spark, cfg, table)
    value = F.array(F.lit(1)) if cast.startswith("array") else F.col(column).cast(cast)
    _rewrite(spark, cfg, table, df.withColumn(column, value))
    _fails(spark, cfg, stage, *fragments)
    before = _state(spark, cfg)
    code, err = _cli(cfg, stage, capsys)
    assert code == 2 and all(f in err for f in fragments), err
    assert _state(spark, cfg) == before


def test_features_table_with_non_finite_values(spark, copy):
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    cfg = copy()
    features = read_table(spark, cfg, "features")
    first = features.agg(F.min("user_id")).first()[0]
    nan = F.concat(F.slice("features", 2, 10_000), F.array(F.lit(float("nan")).cast("float")))
    _rewrite(spark, cfg, "features", features.withColumn(
        "features", F.when(F.col("user_id") == first, nan).otherwise(F.col("features"))))
    _fails(spark, cfg, "train", "table 'features'", "column 'features' has 1 row(s) with null, NaN or ±inf",
           f"user_id [{first}]", "rerun the features job")


# ------------------------------------------------------------------ values
def _with_bad_values(spark, cfg):
    """users.age: 2 NaN; users.monthly_spend: +inf, -inf, null; events.duration_s: one +inf."""
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    users = read_table(spark, cfg, "users")
    ids = [r.user_id for r in users.orderBy("user_id").select("user_id").limit(5).collect()]
    age = F.when(F.col("user_id").isin(ids[:2]), F.lit(float("nan"))).otherwise(F.col("age").cast("double"))
    spend = (F.when(F.col("user_id") == ids[2], F.lit(float("inf")))
             .when(F.col("user_id") == ids[3], F.lit(float("-inf")))
             .when(F.col("user_id") == ids[4], F.lit(None))
             .otherwise(F.col("monthly_spend").cast("double")))
    _rewrite(spark, cfg, "users", users.withColumns({"age": age, "monthly_spend": spend}))
    events = read_table(spark, cfg, "events").withColumn("_n", F.monotonically_increasing_id())
    one = events.agg(F.min("_n")).first()[0]
    duration = F.when(F.col("_n") == one, F.lit(float("inf"))).otherwise(F.col("duration_s").cast("double"))
    _rewrite(spark, cfg, "events", events.withColumn("duration_s", duration).drop("_n"))
    return ids


def test_non_finite_inputs_rejected(spark, copy, capsys):
    cfg = copy(features={"non_finite": "reject"})
    ids = _with_bad_values(spark, cfg)
    message = _fails(spark, cfg, "features", "table 'users'", "column 'age' (features.numeric[0]) has 2 NaN",
                     f"user_id {ids[:2]}", "users.monthly_spend", "events.duration_s",
                     "features.non_finite is 'reject'")
    assert "+inf" not in message.split("so do")[0]  # the first column's own counts: NaN only
    # the score job checks today's inputs the same way before scoring
    _fails(spark, cfg, "score", "column 'age' (features.numeric[0]) has 2 NaN")
    _fails(spark, cfg, "refresh", "column 'age' (features.numeric[0]) has 2 NaN")
    code, err = _cli(cfg, "features", capsys)
    assert code == 2 and "features.non_finite is 'reject'" in err


def test_non_finite_inputs_imputed_with_counts(spark, copy, caplog):
    from pyspark.sql import functions as F

    from deepseg.pipeline import features_job
    from deepseg.pipeline.tables import read_table

    cfg = copy()
    assert cfg.features.non_finite == "impute"  # the default
    _with_bad_values(spark, cfg)
    with caplog.at_level(logging.INFO, logger="deepseg"):
        result = features_job(spark, cfg)
    expected = {"users.age": {"NaN": 2}, "users.monthly_spend": {"null": 1, "+inf": 1, "-inf": 1},
                "events.duration_s": {"+inf": 1}}
    assert result["imputed"] == expected
    assert str(expected) in caplog.text
    features = read_table(spark, cfg, "features")
    finite = F.forall("features", lambda x: ~F.isnan(x) & (F.abs(x) != F.lit(float("inf"))))
    assert features.filter(~finite).count() == 0 and features.count() == 600


# ------------------------------------------------------------------ users and labels
@pytest.mark.parametrize("stage, table", [("features", "users"), ("survey", "survey_responses"),
                                          ("train", "survey_segments")])
def test_duplicate_user_id(spark, copy, stage, table):
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    cfg = copy()
    df = read_table(spark, cfg, table)
    dup = df.agg(F.max("user_id")).first()[0]
    _rewrite(spark, cfg, table, df.unionByName(df.filter(F.col("user_id") == dup)))
    _fails(spark, cfg, stage, f"table {table!r}", "column 'user_id' has 1 duplicated value(s)",
           f"{dup!r} (2 rows)")


def test_surveyed_users_not_in_users_via_cli(spark, copy, capsys):
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    cfg = copy()
    responses = read_table(spark, cfg, "survey_responses")
    stranger = responses.limit(1).withColumn("user_id", F.lit(10**9).cast(responses.schema["user_id"].dataType))
    _rewrite(spark, cfg, "survey_responses", responses.unionByName(stranger))
    before = _state(spark, cfg)
    code, err = _cli(cfg, "survey", capsys)
    assert code == 2
    assert "survey_responses: column 'user_id' has 1 value(s) not in users (e.g. [1000000000])" in err
    assert _state(spark, cfg) == before


def test_labeled_users_not_in_features(spark, copy):
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    cfg = copy()
    labels = read_table(spark, cfg, "survey_segments")
    stranger = labels.limit(1).withColumn("user_id", F.lit(10**9).cast(labels.schema["user_id"].dataType))
    _rewrite(spark, cfg, "survey_segments", labels.unionByName(stranger))
    _fails(spark, cfg, "train", "table 'survey_segments'", "1 user_id value(s) are not in table 'features'",
           "[1000000000]")


def test_only_one_segment(spark, copy):
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    cfg = copy()
    labels = read_table(spark, cfg, "survey_segments")
    _rewrite(spark, cfg, "survey_segments", labels.withColumn("segment", F.lit(0)))
    _fails(spark, cfg, "train", "table 'survey_segments'", "only 1 segment(s) [0]", "at least 2")


def test_segment_below_the_configured_minimum(spark, copy, capsys):
    from deepseg.pipeline.tables import read_table

    sizes = {r.segment: r["count"] for r in
             read_table(spark, copy(), "survey_segments").groupBy("segment").count().collect()}
    smallest = min(sizes, key=sizes.get)
    cfg = copy(training={"min_labeled_per_segment": sizes[smallest] + 1})
    _fails(spark, cfg, "train", "table 'survey_segments'", f"{smallest}: {sizes[smallest]}",
           f"training.min_labeled_per_segment = {sizes[smallest] + 1}")
    code, err = _cli(cfg, "train", capsys)
    assert code == 2 and "training.min_labeled_per_segment" in err


def test_segment_names_for_another_number_of_segments_via_cli(spark, copy, capsys):
    cfg = copy(segments={"names": {0: "starters", 1: "teams"}})  # the survey has 3 segments
    _fails(spark, cfg, "train", "segments.names names segments [0, 1]", "3 segments (0..2)")
    code, err = _cli(cfg, "train", capsys)
    assert code == 2 and "segments.names" in err and len(err.strip().splitlines()) == 1


def test_zero_unlabeled_users(spark, copy):
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import read_table

    cfg = copy()
    everyone = read_table(spark, cfg, "features").select(
        "user_id", (F.col("user_id") % 3).cast("int").alias("segment"), F.lit("test").alias("run_id"))
    _rewrite(spark, cfg, "survey_segments", everyone)
    _fails(spark, cfg, "train", "table 'features'", "has no unlabelled user: all 600 user(s) are in "
           "table 'survey_segments'")


@pytest.mark.parametrize("stage, table", [("features", "users"), ("features", "events"),
                                          ("survey", "survey_responses"), ("train", "survey_segments")])
def test_empty_table(spark, copy, stage, table):
    from deepseg.pipeline.tables import read_table

    cfg = copy()
    _rewrite(spark, cfg, table, read_table(spark, cfg, table).limit(0))
    _fails(spark, cfg, stage, f"table {table!r} ({cfg.data.table_path(table)}) is empty (0 rows)")


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("text, fragment", [
    ("training:\n  min_labelled_per_segment: 3\n",
     "unknown key 'training.min_labelled_per_segment' (did you mean 'training.min_labeled_per_segment'?)"),
    ("features:\n  non_finite: drop\n", "'features.non_finite' parameter"),
    ("data:\n  tables:\n    users: 'users; DROP TABLE x'\n", "data.tables.users must be a location"),
])
def test_bad_configuration_via_cli(tmp_path, capsys, text, fragment):
    from deepseg.cli import main

    (tmp_path / "base.yaml").write_text((CONF / "base.yaml").read_text())
    (tmp_path / "env.yaml").write_text(text)
    code = main(["features", "--conf", str(tmp_path / "env.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err


# ------------------------------------------------------------------ models
def _model_dir(cfg) -> Path:
    from deepseg.pipeline import model_versions

    return Path(cfg.data.models_path) / model_versions(cfg)[-1]


def test_model_of_another_format_version_via_cli(spark, copy, capsys):
    from deepseg.spark.persistence import MODEL_FILE

    cfg = copy()
    path = _model_dir(cfg) / "model" / MODEL_FILE
    document = json.loads(path.read_text())
    document["format_version"] = 99
    path.write_text(json.dumps(document))
    _fails(spark, cfg, "score", f"model {_model_dir(cfg).name!r}", "format version 99")
    before = _state(spark, cfg)
    code, err = _cli(cfg, "score", capsys, "--all")
    assert code == 2 and "format version 99" in err and str(_model_dir(cfg)) in err
    assert _state(spark, cfg) == before


def test_model_with_another_feature_schema(spark, copy, capsys):
    cfg = copy(features={"numeric": ["age", "tenure_days", "monthly_spend", "logins_per_week", "team_size",
                                     "storage_gb", "api_calls_per_day"],
                         "log1p": ["tenure_days", "monthly_spend"]})
    # the model was trained with 'seats' (and log1p on team_size, which changes no column name)
    _fails(spark, cfg, "score", "different feature schema", "the model's feature columns ['seats'] are not "
           "in the configured features")
    code, err = _cli(cfg, "score", capsys)
    assert code == 2 and "different feature schema" in err


def test_tampered_model_weights_are_refused_without_running_them(spark, copy, tmp_path):
    """A pickle in place of networks.npz would run code when unpickled: it is refused unread."""
    import pickle

    from deepseg.spark.persistence import WEIGHTS_FILE

    cfg = copy()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (_model_dir(cfg) / "model" / WEIGHTS_FILE).write_bytes(pickle.dumps(Payload()))
    _fails(spark, cfg, "score", "cannot be loaded", "never unpickles")
    assert not marker.exists()


# ------------------------------------------------------------------ logs
def test_logs_hold_no_feature_values_or_secrets(spark, copy, caplog):
    from deepseg.pipeline import features_job, score_job
    from deepseg.pipeline.tables import read_table

    secret = "s3cr3t-Access-Key-9f8e7d"
    cfg = copy(spark={"conf": {"spark.hadoop.fs.s3a.secret.key": secret}})
    with caplog.at_level(logging.DEBUG, logger="deepseg"):
        features_job(spark, cfg)
        score_job(spark, cfg, only_changed=False)
    text = caplog.text
    assert "features: " in text and "score: 600 users scored" in text  # the jobs did log
    assert secret not in text
    rows = read_table(spark, cfg, "features").select("features").limit(50).collect()
    values = {float(v) for r in rows for v in r.features if abs(v) > 1e-3}
    shown = {s for v in values for s in (repr(v), str(np.float32(v)), f"{v:.6f}")}
    leaked = sorted(s for s in shown if s in text)
    assert not leaked, leaked[:5]
