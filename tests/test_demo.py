"""The demo's own settings (conf/demo.yaml): validated like conf/base.yaml, unknown to the production
configuration (the Spark work itself is tested in tests/jobs)."""

from pathlib import Path

import pytest

from deepseg.config import Config, ConfigError, load_config
from deepseg.data.synthetic import SyntheticConfig
from deepseg.demo import GenerateSettings, demo_settings_path, load_demo_settings

CONF = Path(__file__).resolve().parents[1] / "conf"
DEMO = CONF / "demo.yaml"


def test_shipped_demo_settings_load():
    s = load_demo_settings(DEMO)
    assert (s.n_users, s.chunk_size, dict(s.synthetic), s.truth_table) == (100_000, 50_000, {}, "segments_truth")
    assert s.synthetic_config() == SyntheticConfig(n_users=100_000)
    assert s.synthetic_config(3000) == SyntheticConfig(n_users=3000)  # `--users 3000`
    assert s.truth_path(load_config(CONF / "local.yaml", {"data": {"root": "/d"}})) == "/d/segments_truth"
    assert demo_settings_path(CONF / "local.yaml") == DEMO


def test_overrides_apply():
    s = load_demo_settings(DEMO, {"generate": {"n_users": 1500, "synthetic": {"survey_fraction": 0.1}}})
    assert s.synthetic_config() == SyntheticConfig(n_users=1500, survey_fraction=0.1)
    assert s.chunk_size == 50_000


def test_production_configuration_knows_nothing_of_the_demo():
    assert "generate" not in {f.name for f in Config.__dataclass_fields__.values()}
    cfg = load_config(CONF / "local.yaml")
    assert "segments_truth" not in cfg.data.tables and "generate" not in cfg.as_dict()
    with pytest.raises(ConfigError, match="unknown key 'generate'"):
        load_config(CONF / "local.yaml", {"generate": {"n_users": 10}})


@pytest.mark.parametrize("overrides, message", [
    ({"generate": {"synthetic": {"n_segment": 4}}},
     "unknown key 'generate.synthetic.n_segment' (did you mean 'generate.synthetic.n_segments'?)"),
    ({"generate": {"chunk_sise": 10}}, "unknown key 'generate.chunk_sise' (did you mean 'generate.chunk_size'?)"),
    ({"genrate": {}}, "unknown key 'genrate' (did you mean 'generate'?)"),
])
def test_unknown_key_suggests_the_closest(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_demo_settings(DEMO, overrides)
    assert str(e.value) == message


@pytest.mark.parametrize("overrides, match", [
    ({"generate": {"synthetic": {"noise": -1.0}}}, "generate.synthetic: noise"),
    ({"generate": {"n_users": 0}}, r"'generate.n_users' .* Got 0 instead"),
    ({"generate": {"truth_table": "user-truth"}}, "generate.truth_table must be an identifier"),
])
def test_bad_values_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_demo_settings(DEMO, overrides)


def test_missing_file_or_section(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_demo_settings(tmp_path / "demo.yaml")
    (tmp_path / "demo.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="missing key 'generate'"):
        load_demo_settings(tmp_path / "demo.yaml")


def test_settings_are_frozen():
    import dataclasses

    s = load_demo_settings(DEMO)
    assert isinstance(s, GenerateSettings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_users = 5
    with pytest.raises(TypeError):
        s.synthetic["seed"] = 1


def test_cli_generate_reads_the_demo_settings_beside_conf(monkeypatch, capsys, tmp_path):
    import deepseg.demo
    from deepseg import cli

    seen = {}

    def generate_tables(spark, cfg, settings, n_users=None):
        seen.update(settings=settings, n_users=n_users)
        return {}

    monkeypatch.setattr(cli, "_spark", lambda cfg: None)
    monkeypatch.setattr(deepseg.demo, "generate_tables", generate_tables)
    for name in ("base.yaml", "local.yaml"):
        (tmp_path / name).write_text((CONF / name).read_text())
    conf = str(tmp_path / "local.yaml")
    assert cli.main(["generate", "--conf", conf]) == 2  # no demo.yaml beside it
    assert "demo.yaml not found" in capsys.readouterr().err
    (tmp_path / "demo.yaml").write_text(DEMO.read_text().replace("n_users: 100000", "n_users: 7"))
    assert cli.main(["generate", "--conf", conf, "--users", "5"]) == 0
    assert seen["settings"].n_users == 7 and seen["n_users"] == 5
