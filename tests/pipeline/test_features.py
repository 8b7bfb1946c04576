"""② Feature aggregation and the fitted feature pipeline, on a few hand-written users and events."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from deepseg.config import EventSpec, FeatureSpec

pytestmark = pytest.mark.spark

SPEC = FeatureSpec(reference_date="2025-01-11", numeric=("age", "spend"), log1p=("spend",),
                   categorical=("plan",), encoding="onehot", signup_date="signup", non_finite="impute",
                   events=EventSpec(date="day", product="product", action="action", duration="secs",
                                    products=("editor", "api"), actions=("view", "share")))


@pytest.fixture(scope="module")
def users(spark):
    return spark.createDataFrame([
        (1, 30.0, 10.0, "pro", date(2025, 1, 1)),
        (2, float("inf"), 0.0, "free", date(2024, 12, 1)),  # +inf age -> null (imputed later)
        (3, 50.0, 99.0, "pro", date(2025, 1, 6)),            # no events
    ], "user_id long, age double, spend double, plan string, signup date")


@pytest.fixture(scope="module")
def events(spark):
    return spark.createDataFrame([
        (1, date(2025, 1, 2), "editor", "view", 9.0),
        (1, date(2025, 1, 5), "api", "share", 99.0),
        (1, date(2025, 1, 5), "mobile", "view", 0.0),          # unlisted product: counted in n_events only
        (2, date(2025, 1, 10), "editor", "create", -3.0),      # negative duration counts as 0
    ], "user_id long, day date, product string, action string, secs double")


def test_aggregate_users_counts_durations_and_days(users, events):
    from deepseg.pipeline.features import aggregate_users

    rows = {r.user_id: r.asDict() for r in aggregate_users(users, events, SPEC).collect()}
    assert list(rows[1]) == ["user_id", "age", "spend", "plan", "n_events", "n_product_editor", "n_product_api",
                             "n_action_view", "n_action_share", "mean_log_duration", "recency_days",
                             "active_span_days", "account_age_days"]
    assert rows[1] | {"mean_log_duration": None} == {
        "user_id": 1, "age": 30.0, "spend": 10.0, "plan": "pro", "n_events": 3, "n_product_editor": 1,
        "n_product_api": 1, "n_action_view": 2, "n_action_share": 1, "mean_log_duration": None,
        "recency_days": 6.0, "active_span_days": 3.0, "account_age_days": 10.0}
    assert rows[1]["mean_log_duration"] == pytest.approx(math.log(10.0))  # mean of log1p(9), log1p(99), log1p(0)
    assert rows[2]["age"] is None and rows[2]["mean_log_duration"] == 0.0
    assert (rows[2]["n_events"], rows[2]["n_action_view"], rows[2]["recency_days"]) == (1, 0, 1.0)
    # no events: zero counts, no mean duration, recency = active span = account age
    assert rows[3] | {"age": None, "spend": None} == {
        "user_id": 3, "age": None, "spend": None, "plan": "pro", "n_events": 0, "n_product_editor": 0,
        "n_product_api": 0, "n_action_view": 0, "n_action_share": 0, "mean_log_duration": None,
        "recency_days": 5.0, "active_span_days": 5.0, "account_age_days": 5.0}


def test_non_finite_durations_are_left_out_of_the_mean(spark, users):
    from deepseg.pipeline.features import aggregate_users

    events = spark.createDataFrame(
        [(1, date(2025, 1, 2), "editor", "view", d) for d in (9.0, float("nan"), float("inf"), None)],
        "user_id long, day date, product string, action string, secs double")
    row = aggregate_users(users, events, SPEC).filter("user_id = 1").first()
    assert row.n_events == 4 and row.mean_log_duration == pytest.approx(math.log(10.0))


def test_recency_from_the_latest_event_without_a_reference_date(users, events):
    import dataclasses

    from deepseg.pipeline.features import aggregate_users

    rows = aggregate_users(users, events, dataclasses.replace(SPEC, reference_date=None)).collect()
    assert {r.user_id: r.recency_days for r in rows} == {1: 5.0, 2: 0.0, 3: 4.0}  # latest event: 2025-01-10


def test_feature_pipeline_names_and_standardised_columns(users, events):
    from deepseg.pipeline.features import (
        aggregate_users,
        feature_columns,
        feature_names,
        fit_feature_pipeline,
        transform_features,
        with_feature_hash,
    )

    rows = aggregate_users(users, events, SPEC)
    pipeline = fit_feature_pipeline(rows, SPEC)
    names = feature_names(pipeline)
    assert names == ["age", "spend", "log_n_events", "log_n_product_editor", "log_n_product_api",
                     "log_n_action_view", "log_n_action_share", "frac_product_editor", "frac_product_api",
                     "mean_log_duration", "log_recency_days", "log_active_span_days", "log_account_age_days",
                     "plan=free", "plan=pro", "plan=<other>"]
    assert list(dict.fromkeys(n.split("=")[0] for n in names)) == feature_columns(SPEC)
    out = with_feature_hash(transform_features(pipeline, rows))
    assert out.columns == ["user_id", "features", "feature_hash"]
    by_user = {r.user_id: r for r in out.collect()}
    X = np.array([by_user[u].features for u in (1, 2, 3)])
    assert X.shape == (3, len(names)) and np.isfinite(X).all()
    np.testing.assert_allclose(X[:, :-1].mean(axis=0), 0.0, atol=1e-6)  # standardised (<other> is all 0)
    # age 30, +inf -> imputed 40 (the mean), 50; centred and divided by the sample std (10)
    np.testing.assert_allclose(X[:, 0], [-1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(X[:, names.index("plan=pro")], [0.57735, -1.1547, 0.57735], rtol=1e-4)
    assert len({r.feature_hash for r in by_user.values()}) == 3
    again = with_feature_hash(transform_features(pipeline, rows)).collect()
    assert {r.user_id: r.feature_hash for r in again} == {u: r.feature_hash for u, r in by_user.items()}
