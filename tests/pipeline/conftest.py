"""The stage unit tests share tests/spark's session-scoped local Spark + Delta (a few literal rows each)."""

from tests.spark.conftest import spark  # noqa: F401 - the fixture, reused
