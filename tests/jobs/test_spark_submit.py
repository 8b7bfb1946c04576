"""The bare ``.venv/bin/spark-submit jobs/<stage>.py --conf <yaml>`` works after ``make setup``.

No --jars, --driver-memory or PYSPARK_PYTHON: ``scripts/install_jars.py`` wrote the venv's
Spark conf (``$SPARK_HOME/conf/spark-defaults.conf``, ``spark-env.sh``) and the
``spark-distribution`` link that lets the venv's spark-submit find that SPARK_HOME with any
``python3``. Every command runs in a clean environment whose PATH does not hold the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepseg.config import merge

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's own bin/
SPARK_SUBMIT = VENV_BIN / "spark-submit"
N_USERS = 1500

#: Tiny data and training: only the mechanics of each job are under test here.
DEMO = {"generate": {"n_users": N_USERS, "chunk_size": N_USERS, "synthetic": {"survey_fraction": 0.1}}}
SMALL = {
    "survey": {"invitations": 50, "n_segments": 5, "n_init": 1},
    "training": {"n_iter": 1, "supervised_epochs": 30, "unlabeled_epochs": 1, "labeled_epochs": 1,
                 "tsvm_sample_size": 1000},
    "audiences": {"top_k": 20},
}

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(not SPARK_SUBMIT.is_file(), reason=f"no {SPARK_SUBMIT} (pyspark's launcher)"),
]


def clean_env() -> dict[str, str]:
    """What a fresh shell has: no PYSPARK_*, SPARK_*, PYTHONPATH or venv on the PATH."""
    path = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if p and Path(p).resolve() != VENV_BIN.resolve()]
    env = {"PATH": os.pathsep.join(path), "HOME": os.environ.get("HOME", "/tmp"), "OMP_NUM_THREADS": "1"}
    for keep in ("JAVA_HOME", "LANG", "TMPDIR"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    return env


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> dict:
    """Run `cmd`; on success return the JSON result the deepseg CLI prints on stdout."""
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, (f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                                 f"--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-6000:]}")
    # spark-submit merges the Python driver's stderr (its log lines) into stdout: the result is
    # the JSON document that starts on the last line reading "{"
    lines = res.stdout.splitlines()
    start = max((i for i, line in enumerate(lines) if line == "{"), default=None)
    assert start is not None, f"no JSON result on stdout:\n{res.stdout[-3000:]}"
    return json.loads("\n".join(lines[start:]))


def delta_rows(table: Path) -> int:
    """Rows of a Delta table written once, from its first commit's file statistics."""
    commit = table / "_delta_log" / f"{0:020d}.json"
    assert commit.is_file(), f"no Delta commit in {table}"
    actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
    return sum(json.loads(a["add"]["stats"])["numRecords"] for a in actions if "add" in a)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with ``conf/{base,local,demo}.yaml`` (small settings) and generated input tables."""
    work = tmp_path_factory.mktemp("spark-submit")
    (work / "conf").mkdir()
    shutil.copy(REPO / "conf" / "base.yaml", work / "conf" / "base.yaml")
    local = merge(yaml.safe_load((REPO / "conf" / "local.yaml").read_text()),
                  {**SMALL, "data": {"root": str(work / "data")}})
    (work / "conf" / "local.yaml").write_text(yaml.safe_dump(local))
    demo = merge(yaml.safe_load((REPO / "conf" / "demo.yaml").read_text()), DEMO)
    (work / "conf" / "demo.yaml").write_text(yaml.safe_dump(demo))  # `deepseg generate` reads it
    tables = run([VENV_BIN / "deepseg", "generate", "--conf", work / "conf" / "local.yaml"], cwd=work)
    assert delta_rows(Path(tables["users"])) == N_USERS
    return work


def submit(workdir: Path, job: str) -> dict:
    """The README command, exactly: spark-submit jobs/<job>.py --conf <yaml>, from the checkout."""
    return run([SPARK_SUBMIT, REPO / "jobs" / f"{job}.py", "--conf", workdir / "conf" / "local.yaml"],
               cwd=workdir)


def test_install_step_wrote_the_venv_spark_conf():
    spark_home = VENV_BIN / "spark-distribution"
    assert (spark_home / "bin" / "spark-submit").is_file(), "rerun scripts/install_jars.py (make setup)"
    defaults = dict(line.split(" ", 1) for line in
                    (spark_home / "conf" / "spark-defaults.conf").read_text().splitlines()
                    if line and not line.startswith("#"))
    jars = defaults["spark.jars"].split(",")
    assert any(Path(j).name.startswith("delta-spark") for j in jars)
    assert all(Path(j).is_absolute() and Path(j).is_file() for j in jars), jars
    assert defaults["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert str(VENV_BIN / "python") in (spark_home / "conf" / "spark-env.sh").read_text()


def test_features_job(workdir):
    result = submit(workdir, "features")
    assert Path(result["table"]) == workdir / "data" / "user_features"
    assert delta_rows(Path(result["table"])) == N_USERS
    assert result["n_features"] > 0 and Path(result["pipeline"]).is_dir()


@pytest.mark.slow
def test_every_job(workdir):
    """features -> survey -> train -> score -> audiences -> nightly_refresh, each by spark-submit."""
    submit(workdir, "features")
    survey = submit(workdir, "survey")
    assert survey["n_segments"] == 5
    trained = submit(workdir, "train")
    assert (Path(trained["path"]) / "metrics.json").is_file()
    scored = submit(workdir, "score")
    assert scored["scored"] == N_USERS == delta_rows(workdir / "data" / "user_segments")
    assert scored["model_version"] == trained["model_version"]
    assert sum(submit(workdir, "audiences")["sizes"].values()) > 0
    refreshed = submit(workdir, "nightly_refresh")  # same data: no drift, nothing changed
    assert refreshed["retrain_reasons"] == [] and refreshed["scored"] == 0, refreshed
    assert refreshed["model_version"] == trained["model_version"]
