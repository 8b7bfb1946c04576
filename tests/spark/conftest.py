"""Session-scoped local Spark + Delta fixture for tests marked ``spark``."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    """One small ``local[2]`` SparkSession with Delta for the whole test session."""
    pytest.importorskip("pyspark")
    pytest.importorskip("delta")
    from deepseg.spark.session import FAST_START_CONF, get_spark

    session = get_spark(app_name="deepseg-tests", master="local[2]", conf=FAST_START_CONF)
    yield session
    session.stop()
