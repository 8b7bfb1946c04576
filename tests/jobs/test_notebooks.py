"""The notebooks in notebooks/ run as local scripts on small demo data under a tmp folder.

Each runs with runpy, as ``python notebooks/<name>.py --conf <tmp conf> --root <tmp>`` would, from
the notebooks folder (Databricks' working directory for a notebook); the module's globals are
then checked. One Spark session (active before the notebooks start) serves both.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import pytest
import yaml

from deepseg.config import merge

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
N_USERS = 1500

#: Small, fast settings (the notebooks read them through their --conf parameter; quickstart reads
#: the demo's from demo.yaml beside it).
DEMO = {"generate": {"chunk_size": N_USERS, "synthetic": {"survey_fraction": 0.1}}}
SMALL = {
    "survey": {"invitations": 50, "n_segments": 5, "n_init": 1},
    "training": {"n_iter": 1, "supervised_epochs": 30, "unlabeled_epochs": 1, "labeled_epochs": 1,
                 "tsvm_sample_size": 1000},
    "audiences": {"top_k": 20},
}

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    pytest.importorskip("delta")
    from pyspark.sql import SparkSession

    from deepseg.spark.session import FAST_START_CONF, get_spark

    before = SparkSession.getActiveSession()
    session = get_spark(app_name="deepseg-notebooks", master="local[2]", conf=FAST_START_CONF)
    yield session
    if before is None:  # leave a session that other tests opened alone
        session.stop()


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    """``base.yaml`` + a small ``local.yaml`` and ``demo.yaml`` in a tmp folder (load_config reads
    the first two, load_demo_settings the third)."""
    folder = tmp_path_factory.mktemp("notebook-conf")
    shutil.copy(REPO / "conf" / "base.yaml", folder / "base.yaml")
    for name, overrides in (("local.yaml", SMALL), ("demo.yaml", DEMO)):
        data = merge(yaml.safe_load((REPO / "conf" / name).read_text()), overrides)
        (folder / name).write_text(yaml.safe_dump(data))
    return folder / "local.yaml"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-data")


def run_notebook(name: str, *args: str) -> dict:
    """Run notebooks/<name>.py as a script with `args`; return its globals."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(NOTEBOOKS)
        mp.setattr("sys.argv", [str(NOTEBOOKS / name), *args])
        for var in ("DEEPSEG_USERS", "DEEPSEG_CONF", "DEEPSEG_ROOT", "DEEPSEG_STAGES"):
            mp.delenv(var, raising=False)
        return runpy.run_path(str(NOTEBOOKS / name), run_name="__main__")


def _rows(spark, path: Path) -> int:
    return spark.read.format("delta").load(str(path)).count()


@pytest.fixture(scope="module")
def quickstart(spark, conf, root):
    return run_notebook("quickstart.py", "--users", str(N_USERS), "--conf", str(conf), "--root", str(root))


def test_notebooks_are_databricks_source():
    for path in sorted(NOTEBOOKS.glob("*.py")):
        text = path.read_text()
        assert text.startswith("# Databricks notebook source\n"), path
        assert "# COMMAND ----------" in text, path


def test_quickstart(spark, root, quickstart):
    """Generates the demo tables, runs every job and evaluates against the ground truth."""
    g = quickstart
    assert g["cfg"].data.root == str(root) and g["users"] == N_USERS
    assert set(g["tables"]) >= {"users", "events", "survey_responses", "segments_truth"}
    assert _rows(spark, root / "users") == N_USERS
    assert _rows(spark, root / "user_segments") == N_USERS
    assert _rows(spark, root / "audiences") > 0
    assert (Path(g["trained"].path) / "metrics.json").is_file()
    assert Path(g["trained"].path).parent == root / "models"
    for key in ("survey_accuracy", "deepseg_accuracy", "supervised_accuracy"):
        assert 0.0 <= g["metrics"][key] <= 1.0, key
    # tiny data and one iteration, yet far above chance (1 / n_segments <= 0.25)
    assert g["metrics"]["deepseg_accuracy"] > 0.5


def test_train_and_score_on_the_demo_tables(spark, conf, root, quickstart):
    """Stages train,score on the tables quickstart left: a new model version rescores every user.

    (features, survey and audiences are the same job functions quickstart just ran.)
    """
    g = run_notebook("train_and_score.py", "--conf", str(conf), "--root", str(root), "--stages", "train,score")
    results = g["results"]
    assert set(results) == {"train", "score"}
    assert results["train"].version != quickstart["trained"].version
    assert results["score"]["model_version"] == results["train"].version
    assert results["score"]["scored"] == N_USERS == _rows(spark, root / "user_segments")


def test_train_and_score_rejects_unknown_stages(conf, root):
    with pytest.raises(ValueError, match="unknown stage"):
        run_notebook("train_and_score.py", "--conf", str(conf), "--root", str(root),
                     "--stages", "features,sore")
