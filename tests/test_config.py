"""deepseg.config: base + overlay merge, and errors that name the key (and the closest valid one)."""

from pathlib import Path

import pytest

from deepseg.config import ConfigError, config_to_dict, load_config
from deepseg.core.loop import DeepSegConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("env", ["base", "local", "cluster", "databricks"])
def test_shipped_configurations_load(env):
    cfg = load_config(CONF / f"{env}.yaml")
    assert cfg.sources[0].endswith("base.yaml")
    assert cfg.data.table_path("user_segments").endswith("user_segments")


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
    ({"generate": {"synthetic": {"n_segment": 4}}},
     "unknown key 'generate.synthetic.n_segment' (did you mean 'generate.synthetic.n_segments'?)"),
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


@pytest.mark.parametrize("name", ["user-segments", "1users", "users; DROP TABLE x", "", "a.b"])
def test_bad_table_identifier(name):
    with pytest.raises(ConfigError, match=r"data\.tables\.user_segments must be an identifier"):
        load_config(CONF / "local.yaml", {"data": {"tables": {"user_segments": name}}})


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
    ({"generate": {"synthetic": {"noise": -1.0}}}, "generate.synthetic: noise"),
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
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    again = load_config(tmp_path / "base.yaml")
    assert dataclasses.replace(again, sources=cfg.sources) == cfg
