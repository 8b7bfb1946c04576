"""Atomic outputs for real: `deepseg train` and `deepseg score` processes are SIGKILLed (driver and
JVM) in the middle of writing, and every Delta table stays at its previous version with the same
contents; a half-written model directory is ignored. A reader running beside a score MERGE sees
the old segments or the new ones, never a mix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deepseg.config import TABLES, load_config

REPO = Path(__file__).resolve().parents[2]
#: Small and quick: the tests are about what a kill leaves behind, not about accuracy.
N_USERS = 1500
#: conf/demo.yaml's generate section, overridden.
GENERATE = {"n_users": N_USERS, "chunk_size": N_USERS, "synthetic": {"survey_fraction": 0.1}}
SETTINGS = {
    "survey": {"invitations": 50, "n_segments": 5},
    "training": {"n_iter": 1, "supervised_epochs": 30, "unlabeled_epochs": 1, "labeled_epochs": 1,
                 "tsvm_sample_size": 300},
    "audiences": {"top_k": 50},
}

spark_test = pytest.mark.spark


@pytest.fixture(scope="module")
def conf(make_conf):
    """A --conf file for small data under a temporary root."""
    return make_conf("deepseg-atomic", SETTINGS)


@pytest.fixture(scope="module")
def cfg(conf):
    return load_config(conf)


@pytest.fixture(scope="module")
def previous(spark, cfg):
    """Every table written once, in this process: the version a killed job must leave alone."""
    from deepseg.demo import generate_tables, load_demo_settings
    from deepseg.pipeline import audiences_job, features_job, score_job, survey_job, train_job

    generate_tables(spark, cfg, load_demo_settings(REPO / "conf" / "demo.yaml", {"generate": GENERATE}))
    features_job(spark, cfg)
    survey_job(spark, cfg)
    trained = train_job(spark, cfg)
    score_job(spark, cfg, trained=trained)
    audiences_job(spark, cfg)
    return trained


def tables_state(spark, cfg) -> dict:
    """Per table: its latest version, row count and a hash of all its rows (order-free); None for
    a table not written yet (a killed job must not create it either)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from deepseg.pipeline.tables import table_exists

    state = {}
    for name in TABLES:
        path = cfg.data.table_path(name)
        if not table_exists(spark, path):
            state[name] = None
            continue
        df = spark.read.format("delta").load(path)
        version = DeltaTable.forPath(spark, path).history(1).first().version
        row = df.agg(F.count("*").alias("n"),
                     F.sum(F.xxhash64(*df.columns).cast("decimal(38,0)")).alias("hash")).first()
        state[name] = (version, row.n, row.hash)
    return state


def _start(conf: Path, log: Path, *args: str) -> subprocess.Popen:
    """`deepseg <args> --conf conf` in its own process group (the driver and its JVM), logging to `log`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "MLFLOW_TRACKING_URI": (log.parent / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "deepseg.cli", *args, "--conf", str(conf)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill_when(process: subprocess.Popen, log: Path, ready, timeout: float = 400) -> bool:
    """Poll (every ms) until ``ready()`` is true, then freeze the process group (SIGSTOP) so that
    nothing moves while ``ready()`` is checked again, and SIGKILL it. Returns the second check:
    whether the kill hit the state `ready` describes (False: too late, or the process finished
    before `ready` was ever seen)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() == 0:
                return False
            if process.poll() is not None:
                pytest.fail(f"the process failed ({process.returncode}) before it was killed:\n"
                            f"{log.read_text()[-5000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {timeout}s:\n{log.read_text()[-5000:]}")
            time.sleep(0.001)
        os.killpg(process.pid, signal.SIGSTOP)
        hit = ready()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)
    assert process.returncode == -signal.SIGKILL, process.returncode
    return hit


def _data_files(path: str) -> set[str]:
    return {p.name for p in Path(path).glob("*.parquet")}


def _log_versions(path: str) -> set[str]:
    return {p.name for p in (Path(path) / "_delta_log").glob("*.json")}


@spark_test
def test_killed_score_leaves_every_table_at_its_previous_version(spark, cfg, conf, previous, tmp_path):
    """Killed while its MERGE writes data files, before the commit: nothing changes."""
    from deepseg.pipeline import score_job

    path = cfg.data.table_path("user_segments")
    before = tables_state(spark, cfg)
    for attempt in range(3):  # a kill that comes after the commit proves nothing: try again
        files, commits = _data_files(path), _log_versions(path)

        def writing():
            """New data files of the MERGE are in the table folder; its commit is not."""
            return bool(_data_files(path) - files) and _log_versions(path) == commits

        log = tmp_path / f"score-{attempt}.log"
        if _kill_when(_start(conf, log, "score", "--all"), log, writing):
            break
        before = tables_state(spark, cfg)  # it committed: that is the new previous version
    else:
        pytest.fail("three score runs committed before the kill could hit their write")
    assert "score: merging 1500 scored users" in log.read_text()
    assert _data_files(path) - files, "the kill left no uncommitted data file: it was not mid-write"
    assert tables_state(spark, cfg) == before
    again = score_job(spark, cfg)  # the orphan files are harmless: nothing is left to score
    assert again["scored"] == again["deleted"] == 0
    assert tables_state(spark, cfg) == before


@spark_test
def test_killed_train_changes_no_table_and_its_half_written_model_is_ignored(spark, cfg, conf, previous,
                                                                             tmp_path):
    """Killed while saving its model directory (after training, before metrics.json)."""
    from deepseg.pipeline import load_trained, model_versions, score_job

    models = Path(cfg.data.models_path)
    before, versions = tables_state(spark, cfg), model_versions(cfg)
    assert versions == [previous.version]
    known = {p.name for p in models.iterdir()}

    def saving():
        """A new version folder exists and its metrics.json (written last) does not."""
        new = [p for p in models.iterdir() if p.name not in known and not p.name.startswith("_")]
        return bool(new) and not any((p / "metrics.json").exists() for p in new)

    log = tmp_path / "train.log"
    assert _kill_when(_start(conf, log, "train"), log, saving), "the kill came after metrics.json"
    assert "iteration 1/1" in log.read_text()  # trained: killed while saving
    half = [p for p in models.iterdir() if p.name not in known and not p.name.startswith("_")]
    assert len(half) == 1 and not (half[0] / "metrics.json").exists()

    assert tables_state(spark, cfg) == before
    assert model_versions(cfg) == versions  # the half-written version is not a version
    assert load_trained(cfg).version == previous.version
    with pytest.raises(FileNotFoundError, match="not under"):
        load_trained(cfg, half[0].name)
    again = score_job(spark, cfg)  # scoring goes on with the previous model
    assert again["model_version"] == previous.version and again["scored"] == 0
    assert tables_state(spark, cfg) == before


@spark_test
def test_readers_see_the_old_or_the_new_segments_never_a_mix(spark, cfg, previous):
    """While a MERGE rescores everyone (a new run_id on every row), a reader in another session
    polls the table; then every committed version is read back by number."""
    from delta.tables import DeltaTable

    from deepseg.pipeline import score_job

    path, n = cfg.data.table_path("user_segments"), N_USERS
    reader, seen, done, errors = spark.newSession(), [], threading.Event(), []

    def snapshot(**options):
        df = reader.read.format("delta").options(**options).load(path)
        return tuple(sorted((r.run_id, r.model_version, r["count"])
                            for r in df.groupBy("run_id", "model_version").count().collect()))

    def poll():
        try:
            while not done.is_set():
                seen.append(snapshot())
        except Exception as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    old = snapshot()
    thread = threading.Thread(target=poll)
    thread.start()
    try:
        out = score_job(spark, cfg, only_changed=False)
    finally:
        done.set()
        thread.join(120)
    assert not errors, errors
    new = snapshot()
    assert out["scored"] == n and new == ((out["run_id"], previous.version, n),)
    assert len(old) == 1 and old[0][2] == n and old != new
    assert len(seen) >= 2 and set(seen) <= {old, new}, set(seen) - {old, new}

    # every commit of this module scored everyone: each version is one run's segments for all
    for h in DeltaTable.forPath(spark, path).history().collect():
        assert h.operation in ("WRITE", "MERGE") and '"job": "score"' in h.userMetadata, h
        state = snapshot(versionAsOf=h.version)
        assert len(state) == 1 and state[0][2] == n, (h.version, state)
