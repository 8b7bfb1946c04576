"""deepseg.config: base + overlay merge, and errors that name the key (and the closest valid one)."""

from pathlib import Path

import pytest

from deepseg.config import ConfigError, load_config
from deepseg.core.loop import DeepSegConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("env", ["base", "local", "cluster", "databricks"])
def test_shipped_configurations_load(env):
    cfg = load_config(CONF / f"{env}.yaml")
    assert cfg.sources[0].endswith("base.yaml")
    assert cfg.data.table_path("user_segments").strip("`").endswith("user_segments")
    if env == "databricks":  # Unity Catalog tables
        assert cfg.data.table("user_segments").name == "`main`.`deepseg`.`user_segments`"


def test_overlay_overrides_only_what_it_names():
    base, local = load_config(CONF / "base.yaml"), load_config(CONF / "local.yaml")
    assert local.spark.master == "local[2]" and base.spark.master is None
    assert local.survey == base.survey  # local.yaml leaves the survey alone
    assert local.features.reference_date == "2025-01-01"


def test_training_defaults_come_from_the_core():
    cfg = load_config(CONF / "local.yaml", {"training": {"n_iter": 2, "C": 0.5, "l2": [1e-3, 1e-4, 0.0]}})
    dsc, default = cfg.training.deepseg_config, DeepSegConfig()
    assert (dsc.n_iter, dsc.tsvm.C, dsc.net.l2) == (2, 0.5, (1e-3, 1e-4, 0.0))
    assert dsc.train.supervised_epochs == default.train.supervised_epochs
    assert dsc.tsvm_sample_size == cfg.training.tsvm_sample_size == 20000


def test_yaml_exponent_floats_are_floats(tmp_path):
    (tmp_path / "base.yaml").write_text((CONF / "base.yaml").read_text())
    (tmp_path / "env.yaml").write_text("training:\n  learning_rate: 3e-4\n")
    assert load_config(tmp_path / "env.yaml").training.deepseg_config.train.learning_rate == 3e-4


@pytest.mark.parametrize("overrides, message", [
    ({"survey": {"methd": "gmm"}}, "unknown key 'survey.methd' (did you mean 'survey.method'?)"),
    ({"training": {"n_iters": 3}}, "unknown key 'training.n_iters' (did you mean 'training.n_iter'?)"),
    ({"audience": {}}, "unknown key 'audience' (did you mean 'audiences'?)"),
    ({"data": {"tables": {"user": "u"}}}, "unknown key 'data.tables.user' (did you mean 'data.tables.users'?)"),
])
def test_unknown_key_suggests_the_closest(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(CONF / "local.yaml", overrides)
    assert str(e.value) == message


def test_unknown_key_in_an_overlay_file(tmp_path):
    (tmp_path / "base.yaml").write_text((CONF / "base.yaml").read_text())
    (tmp_path / "env.yaml").write_text("scoring:\n  only_chnged: false\n")
    with pytest.raises(ConfigError, match=r"'scoring.only_chnged' \(did you mean 'scoring.only_changed'\?\)"):
        load_config(tmp_path / "env.yaml")


_MALICIOUS = ["users; DROP TABLE x", "`users`", "a`b", "x` ; DROP TABLE y; --", "users --", "a b",
              "../users", "users\n"]


@pytest.mark.parametrize("name", ["user-segments", "1users", "", "a..b", "a.b.c.d", "x`; DROP TABLE y; --`",
                                  "`a``b`", "`a`.`b`c`", "dir/users",
                                  *(m for m in _MALICIOUS if m != "`users`")])  # `users` is a quoted name
def test_bad_table_name(name):
    """Table names reach SQL (MERGE, saveAsTable, DESCRIBE): none can inject SQL or leave data.root."""
    with pytest.raises(ConfigError, match=r"data\.tables\.user_segments must be a"):
        load_config(CONF / "local.yaml", {"data": {"tables": {"user_segments": name}}})


@pytest.mark.parametrize("entry, schema, table", [
    ("user_segments", None, {"path": str(Path("/d") / "user_segments")}),  # a folder under data.root
    ("user_segments", "deepseg", {"name": "`deepseg`.`user_segments`"}),
    ("seg", ("main", "deepseg"), {"name": "`main`.`deepseg`.`seg`"}),
    ("marketing.user_segments", "deepseg", {"name": "`marketing`.`user_segments`"}),
    ("main.`my-schema`.`user segments`", None, {"name": "`main`.`my-schema`.`user segments`"}),
    ("s3a://bucket/deepseg/user_segments", "deepseg", {"path": "s3a://bucket/deepseg/user_segments"}),
    ("abfss://c@acct.dfs.core.windows.net/t", None, {"path": "abfss://c@acct.dfs.core.windows.net/t"}),
    ("/Volumes/main/deepseg/data/t", None, {"path": "/Volumes/main/deepseg/data/t"}),
    ("dbfs:/deepseg/t", None, {"path": "dbfs:/deepseg/t"}),
])
def test_tables_by_name_or_by_location(entry, schema, table):
    from deepseg.locations import Table

    catalog, schema = schema if isinstance(schema, tuple) else (None, schema)
    cfg = load_config(CONF / "local.yaml", {"data": {"root": "/d", "catalog": catalog, "schema": schema,
                                                     "tables": {"user_segments": entry}}})
    assert cfg.data.table("user_segments") == Table(**table)


def test_uris_are_joined_as_uris_and_bad_schemes_refused():
    cfg = load_config(CONF / "local.yaml", {"data": {"root": "s3a://bucket/deepseg/"}})
    assert cfg.data.table("users").path == "s3a://bucket/deepseg/users"
    assert cfg.data.models_path == "s3a://bucket/deepseg/models"
    with pytest.raises(ConfigError, match=r"data\.tables\.users: unsupported URI scheme 'http'"):
        load_config(CONF / "local.yaml", {"data": {"tables": {"users": "http://host/users"}}})
    with pytest.raises(ConfigError, match=r"data\.root: unsupported URI scheme 'ftp'"):
        load_config(CONF / "local.yaml", {"data": {"root": "ftp://host/d"}})
    with pytest.raises(ConfigError, match=r"data\.catalog is 'main' but data\.schema is null"):
        load_config(CONF / "local.yaml", {"data": {"catalog": "main"}})


@pytest.mark.parametrize("overrides, key, value", [
    ({"survey": {"invitations": 0}}, "survey.invitations", "0"),
    ({"survey": {"method": "dbscan"}}, "survey.method", "'dbscan'"),
    ({"training": {"C": -1.0}}, "training.C", "-1.0"),
    ({"training": {"tsvm_sample_size": 0}}, "training.tsvm_sample_size", "0"),
    ({"audiences": {"threshold": 1.5}}, "audiences.threshold", "1.5"),
    ({"refresh": {"drift_threshold": 0}}, "refresh.drift_threshold", "0"),
])
def test_out_of_range_names_key_and_value(overrides, key, value):
    with pytest.raises(ConfigError) as e:
        load_config(CONF / "local.yaml", overrides)
    assert f"'{key}'" in str(e.value) and f"Got {value} instead" in str(e.value)


@pytest.mark.parametrize("overrides, match", [
    ({"features": {"numeric": ["age"], "log1p": ["seats"]}}, r"features.log1p lists \['seats'\]"),
    ({"features": {"reference_date": "2025-13-01"}}, "features.reference_date must be YYYY-MM-DD"),
    ({"survey": {"k_range": [5, 3]}}, "survey.k_range"),
    ({"survey": {"strata": None}}, "survey.strata is null"),
    ({"audiences": {"top_k": None, "threshold": None}}, "audiences: set top_k, threshold or both"),
])
def test_cross_field_checks(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONF / "local.yaml", overrides)


def test_missing_key_in_base(tmp_path):
    text = (CONF / "base.yaml").read_text().replace("  bins: 10 ", "  # bins removed ")
    (tmp_path / "base.yaml").write_text(text)
    with pytest.raises(ConfigError, match="missing key 'refresh.bins'"):
        load_config(tmp_path / "base.yaml")


def test_config_is_frozen_and_round_trips(tmp_path):
    import dataclasses

    import yaml

    cfg = load_config(CONF / "local.yaml", {"training": {"n_iter": 3}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.survey.method = "gmm"
    with pytest.raises(TypeError):
        cfg.data.tables["users"] = "x"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg.as_dict()))
    again = load_config(tmp_path / "base.yaml")
    assert dataclasses.replace(again, sources=cfg.sources) == cfg


# ------------------------------------------------------------------ validation and security keys
def test_validation_keys_defaults_and_round_trip():
    cfg = load_config(CONF / "local.yaml")
    assert cfg.features.non_finite == "impute"
    assert cfg.training.min_labeled_per_segment == 5
    again = load_config(CONF / "local.yaml", {"features": {"non_finite": "reject"},
                                              "training": {"min_labeled_per_segment": 20}})
    assert (again.features.non_finite, again.training.min_labeled_per_segment) == ("reject", 20)
    assert again.as_dict()["training"]["min_labeled_per_segment"] == 20
    assert "min_labeled_per_segment" not in again.training.params  # not a classifier parameter


@pytest.mark.parametrize("overrides, key, value", [
    ({"features": {"non_finite": "drop"}}, "features.non_finite", "'drop'"),
    ({"training": {"min_labeled_per_segment": 0}}, "training.min_labeled_per_segment", "0"),
    ({"training": {"min_labeled_per_segment": 2.5}}, "training.min_labeled_per_segment", "2.5"),
])
def test_validation_keys_out_of_range(overrides, key, value):
    with pytest.raises(ConfigError) as e:
        load_config(CONF / "local.yaml", overrides)
    assert f"'{key}'" in str(e.value) and f"Got {value} instead" in str(e.value)


def test_unknown_validation_key_suggests_the_closest():
    # the British spelling of earlier versions is pointed at the new one
    with pytest.raises(ConfigError, match=r"unknown key 'training.min_labelled_per_segment' "
                                          r"\(did you mean 'training.min_labeled_per_segment'\?\)"):
        load_config(CONF / "local.yaml", {"training": {"min_labelled_per_segment": 3}})


@pytest.mark.parametrize("name", _MALICIOUS)
@pytest.mark.parametrize("overrides, key", [
    (lambda v: {"data": {"models": v}}, "data.models"),
    (lambda v: {"features": {"numeric": ["age", v], "log1p": []}}, r"features.numeric\[1\]"),
    (lambda v: {"features": {"categorical": [v]}}, r"features.categorical\[0\]"),
    (lambda v: {"features": {"signup_date": v}}, "features.signup_date"),
    (lambda v: {"features": {"events": {"duration": v}}}, "features.events.duration"),
    (lambda v: {"survey": {"strata": v}}, "survey.strata"),
    (lambda v: {"survey": {"questions": ["q1", v]}}, r"survey.questions\[1\]"),
])
def test_names_spliced_into_sql_or_paths_must_be_identifiers(overrides, key, name):
    """Table and column names reach SQL (SQLTransformer statements, MERGE conditions) and paths:
    only plain identifiers are accepted, so none can inject SQL or leave data.root."""
    with pytest.raises(ConfigError, match=key + " must be an identifier"):
        load_config(CONF / "local.yaml", overrides(name))


@pytest.mark.parametrize("overrides, match", [
    ({"audiences": {"export_dir": "../../etc"}}, "audiences.export_dir must be a relative path"),
    ({"audiences": {"export_dir": "/tmp/x"}}, "audiences.export_dir must be a relative path"),
    ({"audiences": {"export_dir": "a/../../b"}}, "audiences.export_dir must be a relative path"),
    ({"scoring": {"model_version": "../other"}}, "scoring.model_version must be a model version"),
    ({"scoring": {"model_version": "v1/../../x"}}, "scoring.model_version must be a model version"),
    ({"features": {"events": {"products": ["a-b", "a_b"]}}}, "features.events.products values must differ"),
])
def test_paths_from_the_configuration_stay_inside_data_root(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONF / "local.yaml", overrides)


def test_event_values_reach_sql_only_as_slugs():
    """Event product/action values are data, not identifiers: they are compared as literals and
    name columns only through a slug of word characters, so quotes cannot reach SQL."""
    from deepseg.pipeline.features import _numeric_sql

    cfg = load_config(CONF / "local.yaml", {"features": {"events": {"products": ["a`b; DROP TABLE x", "ok"]}}})
    sql = " ".join(expr for _, expr in _numeric_sql(cfg.features))
    assert "DROP TABLE x" not in sql and "`a_b__DROP_TABLE_x`" not in sql
    assert "n_product_a_b__DROP_TABLE_x" in sql
    assert sql.count("`") % 2 == 0


def test_model_directory_config_masks_secret_spark_settings():
    from deepseg.pipeline.model_store import redacted

    cfg = load_config(CONF / "local.yaml", {"spark": {"conf": {"spark.hadoop.fs.azure.account.key.acct": "s3cr3t",
                                                   "spark.sql.shuffle.partitions": "4"}}})
    conf = redacted(cfg.as_dict())["spark"]["conf"]
    assert conf == {"spark.hadoop.fs.azure.account.key.acct": "<redacted>", "spark.sql.shuffle.partitions": "4"}
