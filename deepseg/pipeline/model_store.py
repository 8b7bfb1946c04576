"""The model store: one directory per trained model version under ``data.models``.

A version directory ``models/<version>/`` holds ``model/`` (:mod:`deepseg.spark.persistence`),
``feature_pipeline/`` (the Spark ML pipeline that made its training features, reapplied at
scoring), ``config.yaml`` (the resolved configuration, secrets masked), ``profile.json``
(reference distributions for drift) and ``metrics.json`` (written last: a version without it is
incomplete and ignored: on an object store, which cannot rename a folder into place, that marker
is what publishes a version). The train job writes one with :func:`save_trained`; scoring and
refresh read one with :func:`load_trained`, which refuses a model whose features the
configuration cannot reproduce. ``data.models`` is a local path or a URI (:mod:`deepseg.storage`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

import deepseg.storage as storage
from deepseg.locations import join
from deepseg.pipeline.features import feature_columns, feature_pipeline_path
from deepseg.pipeline.validate import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel

    from deepseg.config import Config, FeatureSpec

__all__ = ["TrainedModel", "check_model_features", "load_trained", "model_versions", "redacted", "save_trained"]


@dataclasses.dataclass
class TrainedModel:
    """One model version: the fitted model, its metadata and drift profile, its feature pipeline."""

    version: str
    path: str
    model: Any  # deepseg.core.loop.DeepSegResult
    metadata: dict
    profile: dict

    @functools.cached_property
    def pipeline(self) -> "PipelineModel":
        """The feature pipeline the model was trained behind (loaded on first use)."""
        from pyspark.ml import PipelineModel

        return PipelineModel.load(join(self.path, "feature_pipeline"))

    @property
    def trained_at(self) -> datetime:
        return datetime.fromisoformat(self.metadata["trained_at"])


def save_trained(cfg: "Config", version: str, model, metadata: dict, profile: dict, config) -> TrainedModel:
    """Write model `version` (a new directory) with the features job's current pipeline;
    `config` is the DeepSegConfig it was fitted with. ``metrics.json`` (metadata + the model's
    per-iteration history) comes last and marks the version complete."""
    from deepseg.spark.persistence import save_model

    model_dir = join(cfg.data.models_path, version)
    if storage.exists(model_dir):
        raise FileExistsError(f"model version {version!r} already exists at {model_dir}")
    save_model(model, join(model_dir, "model"), metadata, config=config)
    storage.copy_tree(feature_pipeline_path(cfg), join(model_dir, "feature_pipeline"))
    storage.write_text(join(model_dir, "config.yaml"), yaml.safe_dump(redacted(cfg.as_dict()), sort_keys=False))
    storage.write_text(join(model_dir, "profile.json"), json.dumps(profile))
    metrics = {**metadata, "history": model.history}
    storage.write_text(join(model_dir, "metrics.json"), json.dumps(metrics, indent=1, default=_json_default))
    return TrainedModel(version, model_dir, model, metadata, profile)


def model_versions(cfg: "Config") -> list[str]:
    """Complete model versions under ``data.models``, oldest first."""
    root = cfg.data.models_path
    return [name for name in storage.list_dir(root) if storage.exists(join(root, name, "metrics.json"))]


def load_trained(cfg: "Config", version: str | None = None) -> TrainedModel:
    """Model `version` (default: the latest) with its pipeline, metadata and drift profile."""
    from deepseg.spark.persistence import load_model

    versions = model_versions(cfg)
    if not versions:
        raise FileNotFoundError(f"no trained model under {cfg.data.models_path}: run the train job first")
    version = version or versions[-1]
    if version not in versions:
        raise FileNotFoundError(f"model version {version!r} not under {cfg.data.models_path}; "
                                f"versions: {versions}")
    model_dir = join(cfg.data.models_path, version)
    where = f"model {version!r} ({model_dir})"
    missing = [p for p in ("model", "feature_pipeline", "profile.json") if not storage.exists(join(model_dir, p))]
    if missing:
        raise InputError(f"{where} is incomplete: {missing} missing; retrain")
    try:  # another format version, a foreign or tampered file (never unpickled)
        model, metadata = load_model(join(model_dir, "model"))
    except (ValueError, KeyError) as e:
        raise InputError(f"{where} cannot be loaded: {e}") from None
    check_model_features(metadata, cfg.features, model.n_features, where)
    profile = json.loads(storage.read_text(join(model_dir, "profile.json")))
    return TrainedModel(version, model_dir, model, metadata, profile)


def check_model_features(metadata: Mapping[str, Any], spec: "FeatureSpec", n_features: int, where: str) -> None:
    """A model's feature schema against the configured features: refuse a model whose
    ``feature_names`` come from other columns than the configuration's (naming them), or whose
    names and network disagree in width.

    Categorical levels are not compared: the model's own feature pipeline encodes them (a level
    it never saw goes to ``<other>``)."""
    names = metadata.get("feature_names")
    if not isinstance(names, list) or not names:
        raise InputError(f"{where}: its metadata has no feature_names; retrain the model")
    if len(names) != n_features:
        raise InputError(f"{where}: {len(names)} feature_names but the network takes {n_features} features")
    model_cols = list(dict.fromkeys(str(n).split("=", 1)[0] for n in names))
    config_cols = feature_columns(spec)
    if model_cols != config_cols:
        missing = [c for c in model_cols if c not in config_cols]
        extra = [c for c in config_cols if c not in model_cols]
        detail = "; ".join(x for x in (
            f"the model's feature columns {missing} are not in the configured features" if missing else "",
            f"configured feature columns {extra} are not in the model's" if extra else "",
            "the same columns in another order" if not (missing or extra) else "") if x)
        raise InputError(f"{where} was trained on a different feature schema: {detail} "
                         f"(features.numeric / categorical / events); retrain it or score with the "
                         f"configuration it was trained with")


_SECRET = re.compile(r"secret|password|passwd|token|credential|key", re.IGNORECASE)


def redacted(config: dict) -> dict:
    """`config` with the values of secret-looking Spark settings (account keys, tokens) masked:
    the model directory and MLflow keep the configuration, never credentials."""
    spark = dict(config.get("spark") or {})
    spark["conf"] = {k: "<redacted>" if _SECRET.search(k) else v for k, v in (spark.get("conf") or {}).items()}
    return {**config, "spark": spark}


def _json_default(value):
    """JSON for what ``metrics.json`` holds beyond plain types: numpy scalars and arrays, else str."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
