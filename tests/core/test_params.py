"""deepseg.core.params is the one list of parameters: every front door (the core config, the
scikit-learn estimator, the pyspark.ml estimator, the YAML ``training:`` section) has each one
with the same default and rejects the same bad value, naming it."""

import re

import numpy as np
import pytest
from sklearn.utils._param_validation import Interval, StrOptions, generate_invalid_param_val

from deepseg import PATENT_PARAMS, DeepSegmentationClassifier
from deepseg.config import ConfigError, TrainingSettings
from deepseg.core.loop import DeepSegConfig
from deepseg.core.params import _NOT_STATED, PARAMS, numpydoc, param

pytest.importorskip("pyspark")
from deepseg.spark.ml import DeepSegmentation  # noqa: E402

X = np.random.default_rng(0).normal(size=(20, 3))
Y = np.array([0, 1] * 5 + [-1] * 10)


def field_of(config: DeepSegConfig, p):
    value = config
    for part in p.field.split("."):
        value = getattr(value, part)
    return value


def invalid_value(p):
    if p.invalid is not _NOT_STATED:
        return p.invalid
    rule = next(c for c in p.constraints if isinstance(c, (Interval, StrOptions)))
    return generate_invalid_param_val(rule)


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: p.name)
def test_every_front_door_has_the_same_default(p):
    assert DeepSegmentationClassifier().get_params()[p.name] == p.default
    spark = DeepSegmentation().getOrDefault(p.spark_name)
    assert (tuple(spark) if isinstance(spark, list) else spark) == p.default
    configs = {
        "core": DeepSegConfig(),
        "scikit-learn": DeepSegmentationClassifier().to_config(),
        "pyspark.ml": DeepSegmentation().toConfig(),
        "yaml": TrainingSettings.from_mapping({}, "training").deepseg_config,
    }
    assert {door: field_of(c, p) for door, c in configs.items()} == dict.fromkeys(configs, p.default)


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: p.name)
def test_every_front_door_rejects_the_same_bad_value_naming_it(p):
    bad = invalid_value(p)
    with pytest.raises(ValueError, match=re.escape(p.name)):
        DeepSegmentationClassifier(**{p.name: bad}).fit(X, Y)
    with pytest.raises((ValueError, TypeError), match=re.escape(p.spark_name)):
        DeepSegmentation(**{p.spark_name: bad})
    with pytest.raises(ConfigError, match=rf"training\W.*{re.escape(p.name)}"):
        TrainingSettings.from_mapping({p.name: bad}, "training")


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: p.name)
def test_a_set_value_reaches_the_same_config_field_through_every_door(p):
    value = PATENT_PARAMS.get(p.name, p.default)
    if p.name == "n_iter":
        value = 3
    expected = field_of(DeepSegConfig.from_params({p.name: value}), p)
    spark_value = list(value) if isinstance(value, tuple) else value
    assert field_of(DeepSegmentationClassifier(**{p.name: value}).to_config(), p) == expected
    assert field_of(DeepSegmentation(**{p.spark_name: spark_value}).toConfig(), p) == expected
    assert field_of(TrainingSettings.from_mapping({p.name: spark_value}, "training").deepseg_config, p) == expected


def test_docs_come_from_the_spec():
    assert numpydoc() in DeepSegmentationClassifier.__doc__.replace("\n    ", "\n")
    for p in PARAMS:
        assert DeepSegmentation().getParam(p.spark_name).doc == p.doc


def test_patent_params_are_valid_values_and_differ_from_the_defaults_where_chosen():
    assert set(PATENT_PARAMS) <= {p.name for p in PARAMS}
    clf = DeepSegmentationClassifier(**PATENT_PARAMS)
    clf._validate_params()
    changed = {k for k, v in PATENT_PARAMS.items() if param(k).default != v}
    assert changed == {"calibration", "retrain_lr_factor", "unlabeled_epochs", "unlabeled_loss", "mixup_alpha", "input_noise",
                       "pseudo_labels", "C", "ema_decay", "class_prior", "safeguard", "linear_teacher_epochs"}


def test_unknown_names_are_refused_with_a_suggestion():
    with pytest.raises(TypeError, match="did you mean 'n_iter'"):
        DeepSegmentationClassifier(n_iters=3)
    with pytest.raises(TypeError, match="did you mean 'numIter'"):
        DeepSegmentation(numIters=3)
    with pytest.raises(ConfigError, match="did you mean 'training.n_iter'"):
        TrainingSettings.from_mapping({"n_iters": 3}, "training")
    with pytest.raises(KeyError, match="did you mean 'n_iter'"):
        param("n_iters")


@pytest.mark.parametrize("spark, value", [("inputNoise", "auto"), ("inputNoise", 0.1),
                                          ("unlabeledEpochs", "auto"), ("unlabeledEpochs", 30)])
def test_auto_or_a_number_reaches_the_core(spark, value):
    p = next(p for p in PARAMS if p.spark_name == spark)
    assert field_of(DeepSegmentation(**{spark: value}).toConfig(), p) == value


def test_deepseg_params_lists_every_parameter(capsys):
    from deepseg.cli import main

    assert main(["params"]) == 0
    out = capsys.readouterr().out
    for p in PARAMS:
        assert f"{p.name} ({p.spark_name}): {p.type_doc}, default {p.default!r}" in out
