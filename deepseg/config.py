"""deepseg's configuration: frozen dataclasses read from ``conf/base.yaml`` plus an overlay.

``conf/base.yaml`` holds every key and its default, documented once; ``conf/local.yaml``,
``conf/cluster.yaml`` and ``conf/databricks.yaml`` hold overrides only. :func:`load_config`
deep-merges the overlay onto the base (mappings merge, everything else replaces) and builds
:class:`Config`, so a typo or an out-of-range value fails at load time, naming the dotted key:

>>> load_config("conf/local.yaml", {"survey": {"methd": "gmm"}})  # doctest: +SKIP
ConfigError: unknown key 'survey.methd' (did you mean 'survey.method'?)

The ``training:`` section takes the parameters of :data:`deepseg.core.params.PARAMS` (defaults,
rules and docs are kept there, never repeated here) and builds a ``DeepSegConfig`` from them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import date
from numbers import Integral, Real
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from sklearn.utils._param_validation import Interval, StrOptions

from deepseg.locations import Table, check_location, join, parse_table
from deepseg.yamlconf import (
    IDENTIFIER,
    MODEL_VERSION,
    ConfigError,
    merge,
)
from deepseg.yamlconf import build as _build
from deepseg.yamlconf import check_identifier as _check_identifier
from deepseg.yamlconf import check_keys as _check_keys
from deepseg.yamlconf import check_relative_path as _check_relative_path
from deepseg.yamlconf import read_yaml as _read_yaml
from deepseg.yamlconf import suggest as _suggest
from deepseg.yamlconf import validate as _validate

__all__ = ["Config", "ConfigError", "load_config", "IDENTIFIER", "MODEL_VERSION"]

_POSITIVE_INT = [Interval(Integral, 1, None, closed="left")]


@dataclasses.dataclass(frozen=True)
class SparkSettings:
    app_name: str
    master: str | None  # None: spark-submit's --master, or the cluster's
    conf: Mapping[str, str]

    _constraints: ClassVar[dict] = {"app_name": [str], "master": [str, None], "conf": [dict]}


#: Logical table names every deployment maps to a Delta table (a folder under ``data.root``).
TABLES = ("users", "events", "survey_responses", "features", "survey_invitations", "survey_segments",
          "user_segments", "segment_profiles", "audiences")

@dataclasses.dataclass(frozen=True)
class DataSettings:
    root: str  # folder or URI (local path, /Volumes/..., s3a://bucket/prefix, ...) of tables and models
    models: str  # model versions live in <root>/<models>/<version>/
    tables: Mapping[str, str]  # logical name -> folder under root, location, or catalog table name
    catalog: str | None = None  # with `schema`: the catalog of bare table names
    schema: str | None = None  # set: bare names in `tables` are catalog tables <catalog>.<schema>.<name>

    _constraints: ClassVar[dict] = {"root": [str], "models": [str], "tables": [dict],
                                    "catalog": [str, None], "schema": [str, None]}

    def __post_init__(self):
        _check_keys(self.tables, TABLES, "data.tables")
        try:
            check_location(self.root)
        except ValueError as e:
            raise ConfigError(f"data.root{e}") from None
        for key in ("catalog", "schema"):
            if getattr(self, key) is not None:
                _check_identifier(getattr(self, key), f"data.{key}")
        if self.catalog is not None and self.schema is None:
            raise ConfigError(f"data.catalog is {self.catalog!r} but data.schema is null: set the schema "
                              f"that bare table names live in")
        for name in self.tables:
            self.table(name)  # every entry parses
        _check_identifier(self.models, "data.models")

    def table(self, name: str) -> Table:
        """Where logical table `name` (a key of ``data.tables``) lives (see
        :func:`deepseg.locations.parse_table`)."""
        if name not in self.tables:
            raise ConfigError(f"no table {name!r} in data.tables (did you mean {_suggest(name, self.tables)!r}?)")
        try:
            return parse_table(self.tables[name], self.root, self.catalog, self.schema)
        except ValueError as e:
            raise ConfigError(f"data.tables.{name}{e}") from None

    def table_path(self, name: str) -> str:
        """Where logical table `name` lives, as text: its location or its quoted catalog name."""
        return str(self.table(name))

    def under_root(self, name: str) -> str:
        """`name` (a file or folder name) under ``data.root``."""
        return join(self.root, name)

    @property
    def models_path(self) -> str:
        return self.under_root(self.models)


@dataclasses.dataclass(frozen=True)
class EventSpec:
    date: str
    product: str
    action: str
    duration: str
    products: tuple[str, ...]  # one count and one share feature per listed product
    actions: tuple[str, ...]  # one count feature per listed action

    _constraints: ClassVar[dict] = {k: [str] for k in ("date", "product", "action", "duration")} | {
        "products": [list], "actions": [list]}

    def __post_init__(self):
        for k in ("date", "product", "action", "duration"):
            _check_identifier(getattr(self, k), f"features.events.{k}")
        for k in ("products", "actions"):
            values = getattr(self, k)
            if not values or not all(isinstance(v, str) and v for v in values):
                raise ConfigError(f"features.events.{k} must be a non-empty list of strings, got {values!r}")
            slugs = [re.sub(r"\W", "_", v) for v in values]  # feature columns are named by these
            if len(set(slugs)) != len(slugs):
                raise ConfigError(f"features.events.{k} values must differ in their letters, digits "
                                  f"and underscores (they name feature columns), got {list(values)!r}")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    reference_date: str | None  # "YYYY-MM-DD" for recency; None: the latest event date in the data
    numeric: tuple[str, ...]
    log1p: tuple[str, ...]  # numeric columns to log1p (heavy-tailed counts and amounts)
    categorical: tuple[str, ...]
    encoding: str  # onehot | index
    signup_date: str | None  # gives account_age_days (None: no such feature)
    non_finite: str  # null/NaN/±inf in a numeric input: impute (the mean; counts logged) | reject
    events: EventSpec

    _constraints: ClassVar[dict] = {
        "reference_date": [str, date, None], "numeric": [list], "log1p": [list],
        "categorical": [list], "encoding": [StrOptions({"onehot", "index"})],
        "signup_date": [str, None], "non_finite": [StrOptions({"impute", "reject"})],
    }

    def __post_init__(self):
        if isinstance(self.reference_date, date):  # YAML reads unquoted dates as dates
            object.__setattr__(self, "reference_date", self.reference_date.isoformat())
        if self.reference_date is not None:
            try:
                date.fromisoformat(self.reference_date)
            except ValueError:
                raise ConfigError(f"features.reference_date must be YYYY-MM-DD or null, "
                                  f"got {self.reference_date!r}") from None
        for k in ("numeric", "log1p", "categorical"):
            for i, col in enumerate(getattr(self, k)):
                _check_identifier(col, f"features.{k}[{i}]")
        if self.signup_date is not None:
            _check_identifier(self.signup_date, "features.signup_date")
        stray = sorted(set(self.log1p) - set(self.numeric))
        if stray:
            raise ConfigError(f"features.log1p lists {stray}, which features.numeric lacks")
        if not (self.numeric or self.categorical):
            raise ConfigError("features: numeric and categorical are both empty")


@dataclasses.dataclass(frozen=True)
class SurveySettings:
    invitations: int  # users to invite per survey wave
    sampling: str  # stratified | uniform | active (the current model's choice)
    strata: str | None  # users column for stratified sampling (and active's fallback)
    uncertainty: str  # active: margin | entropy of the user's propensities
    active_candidates: int  # active: this many x invitations most uncertain users are drawn from
    redefine: bool  # cluster the answers anew (new survey model version), not the saved segments
    questions: tuple[str, ...] | None  # answer columns; None: every column but user_id
    method: str  # kmeans | gmm
    n_segments: int | None  # None: choose c in k_range by silhouette (kmeans) / BIC (gmm)
    k_range: tuple[int, int]
    n_init: int  # clusterings per candidate count (different seeds); the best is kept
    max_iter: int
    seed: int

    _constraints: ClassVar[dict] = {
        "invitations": _POSITIVE_INT, "sampling": [StrOptions({"stratified", "uniform", "active"})],
        "strata": [str, None], "uncertainty": [StrOptions({"margin", "entropy"})],
        "active_candidates": _POSITIVE_INT, "redefine": ["boolean"],
        "questions": [list, None], "method": [StrOptions({"kmeans", "gmm"})],
        "n_segments": [Interval(Integral, 2, None, closed="left"), None], "k_range": [list],
        "n_init": _POSITIVE_INT, "max_iter": _POSITIVE_INT,
        "seed": [Interval(Integral, 0, None, closed="left")],
    }

    def __post_init__(self):
        if self.sampling == "stratified":
            if self.strata is None:
                raise ConfigError("survey.strata is null but survey.sampling is 'stratified'")
        if self.strata is not None:
            _check_identifier(self.strata, "survey.strata")
        for i, q in enumerate(self.questions or ()):
            _check_identifier(q, f"survey.questions[{i}]")
        lo_hi = self.k_range
        if (len(lo_hi) != 2 or not all(isinstance(v, Integral) for v in lo_hi)
                or not 2 <= lo_hi[0] <= lo_hi[1]):
            raise ConfigError(f"survey.k_range must be [lo, hi] with 2 <= lo <= hi, got {list(lo_hi)!r}")


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """``seed``, ``min_labeled_per_segment`` (the train job refuses a survey with a segment of
    fewer labelled users) plus any parameter of :data:`deepseg.core.params.PARAMS` (its default
    otherwise)."""

    seed: int
    params: Mapping[str, Any]
    min_labeled_per_segment: int = 5

    #: Keys that are job settings, not parameters of the method.
    JOB_KEYS: ClassVar[tuple[str, ...]] = ("seed", "min_labeled_per_segment")

    @classmethod
    def from_mapping(cls, data: Mapping, prefix: str) -> "TrainingSettings":
        from deepseg.core.params import PARAMS

        _check_keys(data, [*cls.JOB_KEYS, *(p.name for p in PARAMS)], prefix)
        params = {k: v for k, v in data.items() if k not in cls.JOB_KEYS}
        constraints = {f"{prefix}.{p.name}": list(p.constraints) for p in PARAMS if p.name in params}
        constraints[f"{prefix}.seed"] = [Interval(Integral, 0, None, closed="left")]
        constraints[f"{prefix}.min_labeled_per_segment"] = _POSITIVE_INT
        minimum = data.get("min_labeled_per_segment", cls.min_labeled_per_segment)
        _validate(constraints, {f"{prefix}.{k}": v for k, v in data.items()} | {
            f"{prefix}.seed": data.get("seed", 0), f"{prefix}.min_labeled_per_segment": minimum})
        if "l2" in params:
            params["l2"] = tuple(params["l2"])
        settings = cls(seed=int(data.get("seed", 0)), params=MappingProxyType(params),
                       min_labeled_per_segment=int(minimum))
        try:
            settings.deepseg_config  # noqa: B018 - checks what the constraints cannot (l2's length)
        except ValueError as e:
            raise ConfigError(f"{prefix}: {e}") from None
        return settings

    @property
    def deepseg_config(self):
        """The :class:`~deepseg.core.loop.DeepSegConfig` these settings describe."""
        from deepseg.core.loop import DeepSegConfig

        return DeepSegConfig.from_params(self.params)

    @property
    def tsvm_sample_size(self) -> int | None:
        return self.deepseg_config.tsvm_sample_size


@dataclasses.dataclass(frozen=True)
class ScoringSettings:
    only_changed: bool  # score only new users, changed features, or users of another model version
    model_version: str | None  # None: the latest model under data.models

    _constraints: ClassVar[dict] = {"only_changed": ["boolean"], "model_version": [str, None]}

    def __post_init__(self):
        if self.model_version is not None and not MODEL_VERSION.fullmatch(self.model_version):
            raise ConfigError(f"scoring.model_version must be a model version folder name matching "
                              f"{MODEL_VERSION.pattern}, got {self.model_version!r}")


@dataclasses.dataclass(frozen=True)
class AudienceSettings:
    top_k: int | None  # per segment: the k members with the highest propensity
    threshold: float | None  # per segment: members whose propensity is at least this
    content: Mapping[int, str]  # segment -> content id
    default_content: str | None  # content of segments missing from `content`
    export_dir: str  # CSV export folder, relative to data.root

    _constraints: ClassVar[dict] = {
        "top_k": [Interval(Integral, 1, None, closed="left"), None],
        "threshold": [Interval(Real, 0, 1, closed="both"), None],
        "content": [dict], "default_content": [str, None], "export_dir": [str],
    }

    def __post_init__(self):
        _check_relative_path(self.export_dir, "audiences.export_dir")
        if self.top_k is None and self.threshold is None:
            raise ConfigError("audiences: set top_k, threshold or both (both are null)")
        for seg, content in self.content.items():
            if not isinstance(seg, Integral) or seg < 0 or not isinstance(content, str):
                raise ConfigError(f"audiences.content maps segment numbers to content ids; "
                                  f"got {seg!r}: {content!r}")


@dataclasses.dataclass(frozen=True)
class SegmentSettings:
    names: Mapping[int, str] | None  # segment number -> readable name (every segment), or None
    top_k: int  # user attributes listed per segment profile

    _constraints: ClassVar[dict] = {"names": [dict, None], "top_k": _POSITIVE_INT}

    def __post_init__(self):
        for seg, name in (self.names or {}).items():
            if not isinstance(seg, Integral) or seg < 0 or not isinstance(name, str) or not name:
                raise ConfigError(f"segments.names maps segment numbers to names; got {seg!r}: {name!r}")


@dataclasses.dataclass(frozen=True)
class RefreshSettings:
    drift_threshold: float  # retrain when a population stability index exceeds this
    bins: int  # bins of the population stability index
    retrain_every_days: int | None  # retrain when the model is this old (None: only on drift)

    _constraints: ClassVar[dict] = {
        "drift_threshold": [Interval(Real, 0, None, closed="neither")],
        "bins": [Interval(Integral, 2, None, closed="left")],
        "retrain_every_days": _POSITIVE_INT + [None],
    }


@dataclasses.dataclass(frozen=True)
class Config:
    spark: SparkSettings
    data: DataSettings
    features: FeatureSpec
    survey: SurveySettings
    training: TrainingSettings
    scoring: ScoringSettings
    segments: SegmentSettings
    audiences: AudienceSettings
    refresh: RefreshSettings
    sources: tuple[str, ...] = ()  # the YAML files merged, base first

    def as_dict(self) -> dict:
        """Plain data (YAML-safe) of this resolved configuration, e.g. to save beside a model."""
        return _plain(self)


def _plain(v):
    if isinstance(v, TrainingSettings):
        return {"seed": v.seed, "min_labeled_per_segment": v.min_labeled_per_segment, **_plain(v.params)}
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.name != "sources"}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def load_config(path: str | Path = "conf/local.yaml", overrides: Mapping | None = None) -> Config:
    """Build the :class:`Config` of ``base.yaml`` (next to `path`) + `path` + `overrides`.

    `path` may be ``base.yaml`` itself; `overrides` is a nested mapping applied last (tests, CLI
    flags).
    """
    path = Path(path)
    base_path = path.parent / "base.yaml"
    sources = [base_path] if path.resolve() == base_path.resolve() else [base_path, path]
    data: dict = {}
    for src in sources:
        data = merge(data, _read_yaml(src))
    if overrides:
        data = merge(data, overrides)
    return _build(Config, data, "", sources=tuple(str(s) for s in sources))
