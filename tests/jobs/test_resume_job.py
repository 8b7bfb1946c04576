"""`deepseg train --resume` for real: a train process is SIGKILLed after its first iteration's
checkpoint, restarted with --resume, and its model equals an uninterrupted run's (same seed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from deepseg.config import load_config
from deepseg.core.checkpoint import Checkpoint, CheckpointMismatchError

REPO = Path(__file__).resolve().parents[2]
TRAINING = {"n_iter": 3, "supervised_epochs": 50, "unlabeled_epochs": 2, "labeled_epochs": 2,
            "tsvm_sample_size": 1500}
# history entries without timings (which differ run to run)
DETERMINISTIC = ("iteration", "tsvm_objective", "tsvm_cccp_rounds", "agreement", "class_shares", "mse", "kl")

spark_test = pytest.mark.spark


@pytest.fixture(scope="module")
def conf(make_conf):
    """A --conf file for small data under a temporary root."""
    return make_conf("deepseg-resume", {
        "survey": {"invitations": 100, "k_range": [4, 6]},
        "training": TRAINING,
    })


@pytest.fixture(scope="module")
def cfg(conf):
    return load_config(conf)


@pytest.fixture(scope="module")
def uninterrupted(spark, cfg):
    """Tables for training, then one uninterrupted train run in this process."""
    from deepseg.demo import generate_tables, load_demo_settings
    from deepseg.pipeline import features_job, survey_job, train_job

    generate_tables(spark, cfg, load_demo_settings(REPO / "conf" / "demo.yaml", {"generate": {
        "n_users": 3000, "chunk_size": 1000, "synthetic": {"survey_fraction": 0.05}}}))
    features_job(spark, cfg)
    survey_job(spark, cfg)
    return train_job(spark, cfg)


def _train(conf: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "deepseg.cli", "train", "--conf", str(conf), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: the driver and its JVM


def _kill_after(process: subprocess.Popen, marker: str, timeout: float = 300) -> str:
    """Read the process's log until `marker`, then SIGKILL its process group; returns the log."""
    lines: list[str] = []
    seen = threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line)
            if marker in line:
                os.killpg(process.pid, signal.SIGKILL)
                seen.set()
                return
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    finished = seen.wait(timeout)
    if not finished:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(60)
    reader.join(10)
    log = "".join(lines)
    assert finished and marker in log, f"no {marker!r} in the train log:\n{log[-5000:]}"
    return log


def _features(spark, cfg) -> np.ndarray:
    from deepseg.pipeline.tables import read_table

    rows = read_table(spark, cfg, "features").orderBy("user_id").select("features").collect()
    return np.array([r.features for r in rows], dtype=np.float32)


@spark_test
def test_killed_train_resumed_equals_uninterrupted_run(spark, cfg, conf, uninterrupted):
    from deepseg.pipeline import model_versions, train_job
    from deepseg.spark.persistence import load_model

    checkpoint = Checkpoint(Path(cfg.data.models_path) / "_train_checkpoint")
    assert not Path(checkpoint.directory).exists()  # a finished run removes its checkpoint

    # 1. killed (driver and JVM, SIGKILL) right after iteration 1's checkpoint
    log = _kill_after(_train(conf), "checkpoint: iteration 1 saved")
    assert "iteration 3/3: " not in log
    assert checkpoint.exists()
    assert model_versions(cfg) == [uninterrupted.version]  # the killed run saved no model
    saved = Path(checkpoint.path).read_bytes()

    # 2. a resume with other settings is refused, naming the difference, and changes nothing
    other = load_config(conf, {"training": {"learning_rate": 0.01}})
    with pytest.raises(CheckpointMismatchError, match=r"config\.train\.learning_rate: 0\.001 in the checkpoint, 0\.01 now"):
        train_job(spark, other, resume=True)
    assert Path(checkpoint.path).read_bytes() == saved and model_versions(cfg) == [uninterrupted.version]

    # 3. restarted with --resume: continues after iteration 1 (or 2, if the kill came late)
    resumed = _train(conf, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-5000:]
    assert "resumed from the training checkpoint" in err and "supervised start:" not in err, err[-5000:]
    assert "iteration 1/3: " not in err and "iteration 3/3: " in err
    assert not Path(checkpoint.directory).exists()
    versions = model_versions(cfg)
    assert len(versions) == 2 and uninterrupted.version in versions

    # the same model as the uninterrupted run
    a, _ = load_model(Path(uninterrupted.path) / "model")
    b, _ = load_model(Path(cfg.data.models_path) / [v for v in versions if v != uninterrupted.version][0] / "model")
    X = _features(spark, cfg)
    np.testing.assert_array_equal(a.ensemble(X), b.ensemble(X))
    np.testing.assert_array_equal(a.ensemble(X), uninterrupted.model.ensemble(X))
    np.testing.assert_array_equal(a.tsvm.coef, b.tsvm.coef)
    assert len(a.history) == len(b.history) == 3
    for ha, hb in zip(a.history, b.history):
        assert [ha[k] for k in DETERMINISTIC] == [hb[k] for k in DETERMINISTIC]


class _Crash(Exception):
    pass


class _CrashAfterFirstIteration(Checkpoint):
    """Saves like a Checkpoint, then dies right after iteration 1's checkpoint."""

    def save(self, *, iteration, **state):
        super().save(iteration=iteration, **state)
        if iteration == 1:
            raise _Crash


@spark_test
def test_resume_on_spark_with_several_pseudo_label_buckets(spark, moons, tmp_path):
    """With more unlabelled users than batch_rows the Spark backend buckets them with a hash seeded
    by the iteration number: a resumed run must use the same numbers as an uninterrupted one
    (without SparkBackend.resume_from the resumed model differs: max |Δp| 0.024 measured)."""
    from deepseg.core.loop import DeepSegConfig
    from deepseg.core.train import TrainConfig
    from deepseg.spark.backend import train_on_spark

    X, y, _ = moons
    df = spark.createDataFrame([(x.tolist(), None if t < 0 else int(t)) for x, t in zip(X, y)],
                               "features array<float>, label int")
    config = DeepSegConfig(n_iter=3, train=TrainConfig(supervised_epochs=20, unlabeled_epochs=2,
                                                       labeled_epochs=2, unlabeled_batch_size=32))
    fit = dict(n_classes=2, config=config, seed=0, batch_rows=100)  # 392 unlabelled users: 4 buckets
    expected = train_on_spark(df, **fit)
    with pytest.raises(_Crash):
        train_on_spark(df, **fit, checkpoint=_CrashAfterFirstIteration(tmp_path))
    resumed = train_on_spark(df, **fit, checkpoint=Checkpoint(tmp_path, resume=True))
    assert len(resumed.history) == 3
    np.testing.assert_array_equal(expected.ensemble(X), resumed.ensemble(X))
