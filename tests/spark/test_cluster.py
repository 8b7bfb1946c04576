"""Executor loss on a real Spark standalone cluster (master + 2 one-core workers on loopback).

The input tables are made first (generate, features, survey) on the local test session; then one
driver (tests/spark/cluster.py, run as a script) runs the pipeline jobs on the cluster: train
twice (``train-ref`` undisturbed, ``train-kill``), then score the reference model twice
(``score-ref`` undisturbed, ``score-kill``). The test kills a
worker and its executor in the middle of ``train-kill`` (while the TSVM tasks run on both
executors, the victim holding cached blocks of the unlabelled users) and again in the middle of
``score-kill`` (after a replacement worker joined), and checks that both jobs finish with exactly
the undisturbed results: the same network weights and TSVMs, the same segments and propensities.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.spark.cluster import PHASES, REPO, StandaloneCluster, free_port, get_json, prepare

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("java") is None, reason="needs java for the Spark cluster"),
]

DRIVER_TIMEOUT_S = 420


@pytest.fixture
def cluster(tmp_path, spark):
    """The cluster, its data root holding the input tables (made on the local session, whose JVM
    the other Spark tests have warmed: cheaper than on the cluster's fresh driver)."""
    cluster = StandaloneCluster(tmp_path / "cluster")
    prepare(spark, str(cluster.root / "data"))
    try:
        yield cluster.start(n_workers=2)
    finally:
        left = cluster.stop()  # also on failure: master, workers, executors, the driver, by PID
    assert left == [], f"processes left running: {left}"


class Driver:
    """The driver program as a subprocess, with the phases it reported so far."""

    def __init__(self, cluster: StandaloneCluster):
        self.out = cluster.root / "out"
        self.ui_port = free_port()
        folder = cluster.root / "driver"  # under root: cluster.stop() finds the driver too
        folder.mkdir()
        self.log = cluster.root / "logs" / "driver.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "spark" / "cluster.py"), "--master", cluster.url,
                 "--root", str(cluster.root / "data"), "--out", str(self.out),
                 "--ui-port", str(self.ui_port)],
                cwd=folder, env=cluster.env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        cluster.procs.append(self.proc)

    def phases(self) -> dict[tuple[str, str], dict]:
        path = self.out / "phases.jsonl"
        if not path.is_file():
            return {}
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        return {(r["phase"], r["event"]): r for r in lines}

    def failed(self) -> str:
        tail = self.log.read_text(errors="replace").splitlines()[-40:]
        return f"driver exited with {self.proc.returncode}:\n" + "\n".join(tail)

    def wait_for(self, phase: str, event: str, timeout: float = DRIVER_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while (phase, event) not in self.phases():
            if self.proc.poll() is not None:
                pytest.fail(f"waiting for {phase} {event}: " + self.failed())
            if time.monotonic() > deadline:
                pytest.fail(f"no {phase} {event} after {timeout:.0f}s")
            time.sleep(0.05)
        return self.phases()[(phase, event)]

    def api(self, app_id: str, what: str):
        return get_json(f"http://127.0.0.1:{self.ui_port}/api/v1/applications/{app_id}/{what}", timeout=10)


def kill_mid_job(cluster: StandaloneCluster, driver: Driver, phase: str, description: str = "",
                 wait_busy_s: float = 2.0) -> dict:
    """Once a job of `phase` (a job group; description containing `description`) runs, SIGKILL
    the worker whose executor holds cached blocks, and that executor: at once if both executors
    run tasks, else after `wait_busy_s` of waiting for that. Returns what the driver showed then."""
    app_id = driver.wait_for(phase, "start")["app_id"]
    seen_blocks_at = None
    while (phase, "end") not in driver.phases():
        if driver.proc.poll() is not None:
            pytest.fail(driver.failed())
        try:
            jobs = [j for j in driver.api(app_id, "jobs?status=running")
                    if j.get("jobGroup") == phase and description in (j.get("description") or "")]
            executors = {e["id"]: e for e in driver.api(app_id, "executors") if e["id"] != "driver"}
        except OSError:
            continue
        holders = [e for e in executors.values() if e["rddBlocks"] > 0]
        if jobs and holders:
            seen_blocks_at = seen_blocks_at or time.monotonic()
            busy = all(e["activeTasks"] > 0 for e in executors.values()) and len(executors) == 2
            if busy or time.monotonic() - seen_blocks_at > wait_busy_s:
                victim = max(holders, key=lambda e: (e["activeTasks"], e["rddBlocks"]))
                worker = next(w for w in cluster.alive_workers() if victim["id"] in w.executor_pids())
                killed = cluster.kill_worker(worker)
                return {"executor": victim["id"], "worker": worker.name, "pids": killed,
                        "active_tasks": {i: e["activeTasks"] for i, e in executors.items()},
                        "rdd_blocks": {i: e["rddBlocks"] for i, e in executors.items()},
                        "jobs": [j["description"] or j["name"] for j in jobs]}
        time.sleep(0.1)
    pytest.fail(f"{phase} ended before a job ran with cached blocks on an executor: nothing was killed")


def _networks(model_path: str) -> dict[str, np.ndarray]:
    with np.load(Path(model_path) / "model" / "networks.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _tsvm(model_path: str) -> dict:
    return json.loads((Path(model_path) / "model" / "deepseg-model.json").read_text())["tsvm"]


def test_jobs_survive_the_loss_of_a_worker_and_its_executor(cluster):
    import pyarrow.parquet as pq

    driver = Driver(cluster)
    train_kill = kill_mid_job(cluster, driver, "train-kill", description="TSVM fits", wait_busy_s=float("inf"))
    assert train_kill["active_tasks"][train_kill["executor"]] > 0, train_kill  # a task was lost
    cluster.add_worker()  # a replacement: score-ref and score-kill run on two executors again
    score_kill = kill_mid_job(cluster, driver, "score-kill")
    assert driver.proc.wait(timeout=DRIVER_TIMEOUT_S) == 0, driver.failed()
    phases = driver.phases()
    assert all((p, "end") in phases for p in PHASES), phases

    # Training: the disturbed run saved exactly the undisturbed model.
    ref, disturbed = phases[("train-ref", "end")], phases[("train-kill", "end")]
    assert ref["model_version"] != disturbed["model_version"]
    a, b = _networks(ref["model_path"]), _networks(disturbed["model_path"])
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert _tsvm(ref["model_path"]) == _tsvm(disturbed["model_path"])

    # Scoring: the same segments and propensities for every user, after a MERGE of everyone.
    before = pq.read_table(driver.out / "score-ref.parquet").sort_by("user_id").to_pydict()
    after = pq.read_table(driver.out / "score-kill.parquet").sort_by("user_id").to_pydict()
    assert phases[("score-kill", "end")]["scored"] == len(after["user_id"]) == len(set(after["user_id"]))
    assert set(after["run_id"]) == {phases[("score-kill", "end")]["run_id"]}  # all rows rewritten
    for column in ("user_id", "segment", "propensities", "feature_hash", "model_version"):
        assert after[column] == before[column], column

    # Spark did lose work: the victims' executors were removed while their phase ran.
    for phase, kill in (("train-kill", train_kill), ("score-kill", score_kill)):
        lost = phases[(phase, "end")]["lost_executors"]
        assert kill["executor"] in lost, (phase, kill, lost)
    assert phases[("train-kill", "end")]["failed_tasks"] > 0, train_kill

    # Nothing it started is left: no master, worker, executor, driver or Python worker.
    assert cluster.stop() == []
