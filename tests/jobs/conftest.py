"""Fixtures shared by the job tests: one local Spark session per module, small --conf files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark(request):
    """A small local[2] SparkSession with Delta, stopped after the module unless one was open."""
    pytest.importorskip("pyspark")
    pytest.importorskip("delta")
    from pyspark.sql import SparkSession

    from deepseg.spark.session import FAST_START_CONF, get_spark

    before = SparkSession.getActiveSession()
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    session = get_spark(app_name=f"deepseg-{name}", master="local[2]", conf=FAST_START_CONF)
    yield session
    if before is None:  # leave a session that other tests opened alone
        session.stop()


@pytest.fixture(scope="module")
def make_conf(tmp_path_factory):
    """make_conf(name, settings) -> a --conf file (next to a copy of base.yaml): conf/local.yaml
    with local[2], the fast-start Spark settings, data under a temporary root and `settings`."""
    from deepseg.config import merge
    from deepseg.spark.session import FAST_START_CONF

    def make(name: str, settings: dict) -> Path:
        folder = tmp_path_factory.mktemp(name)
        (folder / "conf").mkdir()
        (folder / "conf" / "base.yaml").write_text((REPO / "conf" / "base.yaml").read_text())
        overlay = merge(yaml.safe_load((REPO / "conf" / "local.yaml").read_text()), {
            "spark": {"master": "local[2]", "conf": dict(FAST_START_CONF)},
            "data": {"root": str(folder / "data")},
            **settings,
        })
        path = folder / "conf" / "test.yaml"
        path.write_text(yaml.safe_dump(overlay))
        return path

    return make


@pytest.fixture(scope="session")
def local_chain(tmp_path_factory):
    """The whole chain on local folders (tests/jobs/chain.py): the reference that the catalog and
    S3 runs must equal."""
    from tests.jobs.chain import clean_env, run_chain, write_conf

    conf = write_conf(tmp_path_factory.mktemp("localchain"), {
        "spark": {"master": "local[2]", "conf": {"spark.ui.enabled": "false"}},
        "data": {"root": str(tmp_path_factory.getbasetemp() / "localchain-data")}})
    return run_chain(conf, clean_env())
