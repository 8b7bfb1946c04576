"""Input checks at the job boundaries: fail before anything is written, naming what is wrong.

Each job calls these on what it read before it writes a table or a model directory. A failed
check raises :class:`InputError` (a ``ValueError``) whose message names the table (logical
name and location), the column, the configuration key behind it and the offending values; the
CLI prints it on one line and exits with status 2. Missing tables raise ``FileNotFoundError``
from :func:`deepseg.pipeline.tables.read_table` (also status 2).

Non-finite numeric inputs (null, NaN, ±inf) follow ``features.non_finite``: ``reject`` fails
the job, ``impute`` lets the feature pipeline replace them by the column mean and returns
their counts per column (logged, and in the features job's result).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

    from deepseg.config import Config

__all__ = [
    "InputError",
    "check_feature_inputs",
    "check_features_table",
    "check_labels",
    "check_respondents",
    "check_storage",
    "check_survey_inputs",
    "require_columns",
    "require_rows",
    "require_unique",
]

log = logging.getLogger("deepseg")

_INF = float("inf")
_EXAMPLES = 5


class InputError(ValueError):
    """Bad input data or model: the message names the table, column, setting and values."""


def check_storage(cfg: "Config") -> None:
    """Refuse, before anything is read or written, a configuration whose object-store locations
    (``data.root``, ``data.models``, located tables) name a missing bucket or whose credentials
    are refused: one line naming the key and the bucket (:func:`deepseg.storage.check_access`)."""
    import deepseg.storage as storage

    locations = {"data.root": cfg.data.root, "data.models": cfg.data.models_path}
    locations.update({f"data.tables.{name}": cfg.data.table(name).path for name in cfg.data.tables})
    seen = set()
    for key, location in locations.items():
        if location and storage.is_remote(location):
            bucket = location.split("://", 1)[1].split("/", 1)[0]
            if bucket not in seen:
                seen.add(bucket)
                try:
                    storage.check_access(location, what=key)
                except storage.StorageError as e:
                    raise InputError(str(e)) from None


def describe(cfg: "Config", name: str) -> str:
    """``table 'users' (/data/users)``: how messages name logical table `name`."""
    return f"table {name!r} ({cfg.data.table_path(name)})"


# ------------------------------------------------------------------ schema
def _kind_ok(kind: str, dtype) -> bool:
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    if kind == "numeric":
        return isinstance(dtype, T.NumericType)
    if kind == "integer":
        return isinstance(dtype, T.IntegralType)
    if kind == "id":
        return isinstance(dtype, (T.IntegralType, T.StringType))
    if kind == "date":
        return isinstance(dtype, (T.DateType, T.TimestampType, T.TimestampNTZType, T.StringType))
    if kind == "atomic":
        return isinstance(dtype, T.AtomicType)
    if kind == "array<float>":
        return ((isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, (T.FloatType, T.DoubleType)))
                or isinstance(dtype, VectorUDT))
    raise ValueError(f"unknown column kind {kind!r}")


_KIND_TEXT = {"numeric": "numeric", "integer": "an integer type", "id": "an integer or string type",
              "date": "a date, timestamp or 'YYYY-MM-DD' string", "atomic": "a plain (non-nested) type",
              "array<float>": "array<float>, array<double> or a pyspark.ml Vector"}


def require_columns(df: "DataFrame", where: str, columns: Mapping[str, tuple[str | None, str]]) -> None:
    """Every ``column: (config key or None, kind)`` of `columns` exists in `df` with that kind."""
    schema = {f.name: f.dataType for f in df.schema.fields}
    for column, (key, kind) in columns.items():
        via = f" ({key})" if key else ""
        if column not in schema:
            raise InputError(f"{where}: missing column {column!r}{via}; its columns are {sorted(schema)}")
        if not _kind_ok(kind, schema[column]):
            raise InputError(f"{where}: column {column!r}{via} must be {_KIND_TEXT[kind]}, "
                             f"got {schema[column].simpleString()}")


def require_rows(df: "DataFrame", where: str) -> None:
    """`df` has at least one row."""
    if df.isEmpty():
        raise InputError(f"{where} is empty (0 rows)")


def require_unique(df: "DataFrame", where: str, key: str = "user_id") -> None:
    """Each value of `key` occurs once in `df` (and none is null)."""
    from pyspark.sql import functions as F

    nulls = df.filter(F.col(key).isNull()).limit(1).count()
    if nulls:
        raise InputError(f"{where}: column {key!r} has null values; every row needs a {key}")
    dup = df.groupBy(key).count().filter(F.col("count") > 1)
    examples = dup.orderBy(F.desc("count"), key).limit(_EXAMPLES).collect()
    if examples:
        n = dup.count()
        shown = ", ".join(f"{r[key]!r} ({r['count']} rows)" for r in examples)
        raise InputError(f"{where}: column {key!r} has {n} duplicated value(s), e.g. {shown}; "
                         f"each {key} must occur once")


# ------------------------------------------------------------------ values
def non_finite_counts(df: "DataFrame", columns: list[str]) -> dict[str, dict[str, int]]:
    """``{column: {"null": n, "NaN": n, "+inf": n, "-inf": n}}`` of numeric `columns`, one pass;
    only non-zero counts and columns with any are kept."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not columns:
        return {}
    aggs, names = [], []
    for c in columns:
        col, floating = F.col(c), isinstance(df.schema[c].dataType, (T.FloatType, T.DoubleType))
        tests = {"null": col.isNull()}
        if floating:
            tests |= {"NaN": F.isnan(col), "+inf": col == F.lit(_INF), "-inf": col == F.lit(-_INF)}
        for label, test in tests.items():
            aggs.append(F.count(F.when(test, 1)))
            names.append((c, label))
    row = df.agg(*aggs).first()
    out: dict[str, dict[str, int]] = {}
    for (c, label), n in zip(names, row):
        if n:
            out.setdefault(c, {})[label] = int(n)
    return out


def _non_finite(c: str):
    from pyspark.sql import functions as F

    col = F.col(c)
    return col.isNull() | F.isnan(col) | (F.abs(col) == F.lit(_INF))


def _examples(df: "DataFrame", condition, key: str = "user_id") -> list:
    return [r[0] for r in df.filter(condition).select(key).limit(_EXAMPLES).collect()]


def _count_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {label}" for label, n in counts.items())


def check_feature_inputs(users: "DataFrame", events: "DataFrame", cfg: "Config") -> dict[str, dict[str, int]]:
    """Check the inputs of the features (and score) job: schema, rows, unique users, and
    non-finite numeric values under ``features.non_finite``.

    Returns the non-finite counts ``{"users.age": {"null": 3, "+inf": 1}, ...}`` that the feature
    pipeline imputes (empty when there are none); raises :class:`InputError` under ``reject``.
    """
    spec = cfg.features
    ev = spec.events
    users_at, events_at = describe(cfg, "users"), describe(cfg, "events")
    cols: dict[str, tuple[str | None, str]] = {"user_id": (None, "id")}
    cols |= {c: (f"features.numeric[{i}]", "numeric") for i, c in enumerate(spec.numeric)}
    cols |= {c: (f"features.categorical[{i}]", "atomic") for i, c in enumerate(spec.categorical)}
    if spec.signup_date:
        cols[spec.signup_date] = ("features.signup_date", "date")
    require_columns(users, users_at, cols)
    require_columns(events, events_at, {
        "user_id": (None, "id"), ev.date: ("features.events.date", "date"),
        ev.product: ("features.events.product", "atomic"), ev.action: ("features.events.action", "atomic"),
        ev.duration: ("features.events.duration", "numeric")})
    require_rows(users, users_at)
    require_rows(events, events_at)
    require_unique(users, users_at)

    found = {("users", c): n for c, n in non_finite_counts(users, list(spec.numeric)).items()}
    found |= {("events", c): n for c, n in non_finite_counts(events, [ev.duration]).items()}
    if not found:
        return {}
    keys = {c: f"features.numeric[{i}]" for i, c in enumerate(spec.numeric)}
    if spec.non_finite == "reject":
        (table, column), counts = next(iter(found.items()))
        df, key = (users, keys[column]) if table == "users" else (events, "features.events.duration")
        where = users_at if table == "users" else events_at
        others = [f"{t}.{c}" for t, c in list(found)[1:]]
        raise InputError(
            f"{where}: column {column!r} ({key}) has {_count_text(counts)} value(s) "
            f"(e.g. user_id {_examples(df, _non_finite(column))})"
            + (f"; so do {others}" if others else "")
            + "; features.non_finite is 'reject' (set it to 'impute' to replace them by the column mean)")
    counts = {f"{t}.{c}": n for (t, c), n in found.items()}
    log.warning("features: imputing non-finite inputs (features.non_finite=impute): %s", counts)
    return counts


def check_features_table(features: "DataFrame", cfg: "Config", n_features: int) -> None:
    """The ``features`` table as training reads it: ``user_id``, ``features`` array<float> of
    `n_features` finite values per row, one row per user, at least one row."""
    from pyspark.sql import functions as F

    where = describe(cfg, "features")
    require_columns(features, where, {"user_id": (None, "id"), "features": (None, "array<float>")})
    require_rows(features, where)
    require_unique(features, where)
    from pyspark.ml.linalg import VectorUDT

    arr = F.col("features")
    if isinstance(features.schema["features"].dataType, VectorUDT):
        from pyspark.ml.functions import vector_to_array

        arr = vector_to_array(arr)
    tests = {
        "a null features array": arr.isNull(),
        f"not {n_features} values (its commit's feature_names)": F.size(arr) != n_features,
        "null, NaN or ±inf values": F.exists(arr, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == F.lit(_INF))),
    }
    row = features.agg(*[F.count(F.when(t, 1)) for t in tests.values()]).first()
    for (what, test), n in zip(tests.items(), row):
        if n:
            raise InputError(f"{where}: column 'features' has {n} row(s) with {what} "
                             f"(e.g. user_id {_examples(features, test)}); rerun the features job")


def check_labels(features: "DataFrame", labels: "DataFrame", cfg: "Config",
                 n_segments: int | None) -> tuple[int, dict[int, int]]:
    """The labels as training joins them to ``features``: returns the number of segments (the
    survey's `n_segments`, or the largest segment + 1 if None) and labelled users per segment.

    Refuses (``InputError``): a bad ``survey_segments`` schema, no rows, a user twice, a segment
    outside 0..`n_segments`-1, labelled users missing from ``features``, fewer than two
    segments, a segment with fewer than ``training.min_labeled_per_segment`` labelled users,
    and no unlabelled user (nothing to segment: the method learns from the unlabelled users).
    """
    from pyspark.sql import functions as F

    where, feat_at = describe(cfg, "survey_segments"), describe(cfg, "features")
    require_columns(labels, where, {"user_id": (None, "id"), "segment": (None, "integer")})
    require_rows(labels, where)
    require_unique(labels, where)
    if n_segments is None:
        n_segments = int(labels.agg(F.max("segment")).first()[0] or 0) + 1
    bad = F.col("segment").isNull() | (F.col("segment") < 0) | (F.col("segment") >= n_segments)
    wrong = labels.filter(bad).select("segment").distinct().limit(_EXAMPLES).collect()
    if wrong:
        raise InputError(f"{where}: column 'segment' holds {[r[0] for r in wrong]}; segments must be "
                         f"0..{n_segments - 1} (the survey's n_segments = {n_segments})")
    unknown = labels.join(features.select("user_id"), "user_id", "left_anti")
    examples = [r[0] for r in unknown.select("user_id").limit(_EXAMPLES).collect()]
    if examples:
        raise InputError(f"{where}: {unknown.count()} user_id value(s) are not in {feat_at} "
                         f"(e.g. {examples}); rerun the features job after the users table changed")
    sizes = {r["segment"]: r["count"] for r in labels.groupBy("segment").count().collect()}
    sizes = {s: int(sizes.get(s, 0)) for s in range(n_segments)}
    present = [s for s, n in sizes.items() if n]
    if len(present) < 2:
        raise InputError(f"{where}: column 'segment' has only {len(present)} segment(s) {present} "
                         f"(n_segments = {n_segments}); training needs at least 2")
    minimum = cfg.training.min_labeled_per_segment
    small = {s: n for s, n in sizes.items() if n < minimum}
    if small:
        raise InputError(f"{where}: segment(s) {small} (segment: labelled users) have fewer than "
                         f"training.min_labeled_per_segment = {minimum} labelled users")
    n_labeled, n_users = sum(sizes.values()), features.count()
    if n_users - n_labeled <= 0:
        raise InputError(f"{feat_at} has no unlabelled user: all {n_users} user(s) are in {where}; "
                         f"the method learns the segments of unlabelled users, so there is nothing to do")
    return n_segments, sizes


def check_survey_inputs(users: "DataFrame", responses: "DataFrame", cfg: "Config") -> None:
    """The survey job's inputs: schema, rows, unique users, finite answers, known respondents."""
    s = cfg.survey
    users_at, resp_at = describe(cfg, "users"), describe(cfg, "survey_responses")
    cols = {"user_id": (None, "id")}
    if s.strata:
        cols[s.strata] = ("survey.strata", "atomic")
    require_columns(users, users_at, cols)
    if s.questions:
        questions = {q: (f"survey.questions[{i}]", "numeric") for i, q in enumerate(s.questions)}
    else:
        questions = {c: ("survey.questions = null: every column but user_id", "numeric")
                     for c in responses.columns if c != "user_id"}
    if not questions:
        raise InputError(f"{resp_at} has no answer column besides 'user_id'")
    require_columns(responses, resp_at, {"user_id": (None, "id"), **questions})
    require_rows(users, users_at)
    require_rows(responses, resp_at)
    require_unique(users, users_at)
    require_unique(responses, resp_at)
    counts = non_finite_counts(responses, list(questions))
    infinite = {c: {k: v for k, v in n.items() if "inf" in k} for c, n in counts.items()}
    infinite = {c: n for c, n in infinite.items() if n}
    if infinite:
        column, n = next(iter(infinite.items()))
        raise InputError(f"{resp_at}: column {column!r} ({questions[column][0]}) has {_count_text(n)} "
                         f"value(s) (e.g. user_id {_examples(responses, _non_finite(column))}); answers "
                         f"must be finite (rows with a null or NaN answer are skipped)")
    check_respondents(responses, users)


def check_respondents(responses: "DataFrame", users: "DataFrame") -> None:
    """Raise :class:`InputError` if a respondent's ``user_id`` is not in `users`, giving how many
    are unknown and up to 5 of them (smallest first)."""
    unknown = responses.select("user_id").join(users.select("user_id"), "user_id", "left_anti")
    examples = [r.user_id for r in unknown.orderBy("user_id").limit(5).collect()]
    if examples:
        n = unknown.count()
        raise InputError(f"survey_responses: column 'user_id' has {n} value(s) not in users "
                         f"(e.g. {examples}); survey_responses must only hold known users")
