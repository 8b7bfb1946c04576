"""survey.* settings of the waves: active sampling, its uncertainty and candidates, redefine."""

from pathlib import Path

import pytest

from deepseg.config import ConfigError, load_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_wave_settings_and_their_defaults():
    s = load_config(CONF / "local.yaml").survey
    assert (s.sampling, s.uncertainty, s.active_candidates, s.redefine) == ("stratified", "margin", 20, False)
    active = load_config(CONF / "local.yaml", {"survey": {
        "sampling": "active", "strata": None, "uncertainty": "entropy", "active_candidates": 5, "redefine": True}}).survey
    assert (active.sampling, active.strata, active.uncertainty, active.active_candidates, active.redefine) == (
        "active", None, "entropy", 5, True)


@pytest.mark.parametrize("key, value, fragment", [
    ("sampling", "activ", "'survey.sampling' parameter"),
    ("uncertainty", "gap", "'survey.uncertainty' parameter"),
    ("active_candidates", 0, "'survey.active_candidates' parameter"),
    ("redefine", "yes", "'survey.redefine' parameter"),
])
def test_bad_wave_settings_name_key_and_value(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(CONF / "local.yaml", {"survey": {key: value}})
    assert fragment in str(info.value) and repr(value) in str(info.value)


def test_stratified_sampling_needs_strata_active_does_not():
    with pytest.raises(ConfigError, match="survey.strata is null but survey.sampling is 'stratified'"):
        load_config(CONF / "local.yaml", {"survey": {"strata": None}})
    assert load_config(CONF / "local.yaml", {"survey": {"sampling": "active", "strata": None}}).survey.strata is None
