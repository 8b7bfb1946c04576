"""A real Spark standalone cluster on loopback, for tests: master + workers from the pyspark install.

:class:`StandaloneCluster` starts ``bin/spark-class org.apache.spark.deploy.master.Master`` and
``...worker.Worker`` JVMs (``SPARK_HOME`` = the pyspark package folder), each worker with one core
and little memory, on free ports of 127.0.0.1, with every log and work folder under one root
folder. It can add workers, kill one (its executors too), and :meth:`~StandaloneCluster.stop`
ends everything it started by PID. Every process it starts (and every process those start:
executors, their Python workers, the driver of :func:`run_driver`) runs in a folder under the
root, which is how :meth:`~StandaloneCluster.leftovers` finds stragglers.

Run as a script, this module is the driver program of tests/spark/test_cluster.py: it runs the
deepseg train and score jobs on the cluster (on tables :func:`prepare` made), one phase at a time
(:data:`PHASES`, each a Spark job group), and reports each phase's start and end (application id,
seconds, failed tasks, executors lost, ...) as JSON lines in ``<out>/phases.jsonl``::

    python tests/spark/cluster.py --master spark://127.0.0.1:PORT --root DATA --out OUT --ui-port P
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


# --------------------------------------------------------------------------- processes via /proc
def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children first found, then theirs)."""
    children: dict[int, list[int]] = {}
    for p in _pids():
        pp = _ppid(p)
        if pp is not None:
            children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill(pids, sig=signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids, timeout: float = 20.0) -> list[int]:
    """Wait until `pids` have exited (reaped or zombie); returns those still alive."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        if left:
            time.sleep(0.05)
    return left


# --------------------------------------------------------------------------- the cluster
@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    port: int
    webui_port: int
    folder: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"spark://Worker@127.0.0.1:{self.port}"

    def executor_pids(self) -> dict[str, int]:
        """Executor id -> PID of the executor JVMs this worker launched (and still runs)."""
        out = {}
        for pid in _pids():
            cmd = _cmdline(pid)
            if "CoarseGrainedExecutorBackend" in cmd and f"--worker-url {self.url}" in cmd:
                args = cmd.split()
                out[args[args.index("--executor-id") + 1]] = pid
        return out


@dataclass
class StandaloneCluster:
    """Master + workers (1 core each) on 127.0.0.1; logs and work folders under `root`."""

    root: Path
    worker_memory: str = "1g"
    daemon_memory: str = "256m"
    procs: list[subprocess.Popen] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    port: int = 0
    webui_port: int = 0

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def master_json(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}/json/"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_CONF_DIR"):
            env.pop(key, None)
        env.update(SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_HOSTNAME="127.0.0.1",
                   SPARK_DAEMON_MEMORY=self.daemon_memory, OMP_NUM_THREADS="1",
                   SPARK_DAEMON_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
                   SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false",  # no fixed port 6066
                   PYSPARK_PYTHON=sys.executable, SPARK_LOG_DIR=str(self.root / "logs"),
                   SPARK_PID_DIR=str(self.root / "pids"))
        return env

    def _spawn(self, name: str, args: list[str], cwd: Path) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "logs" / f"{name}.log", "ab")
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        proc = subprocess.Popen(cmd, cwd=cwd, env=self.env(), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self, n_workers: int = 2, timeout: float = 90.0) -> "StandaloneCluster":
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.port, self.webui_port = free_port(), free_port()
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(self.port), "--webui-port", str(self.webui_port)],
                    self.root / "master")
        self._wait(lambda: get_json(self.master_json)["status"] == "ALIVE", timeout, "master")
        for _ in range(n_workers):
            self.add_worker(wait=False)
        self.wait_workers(n_workers, timeout)
        return self

    def add_worker(self, wait: bool = True, timeout: float = 90.0) -> Worker:
        name = f"worker{len(self.workers) + 1}"
        folder = self.root / name
        port, webui = free_port(), free_port()
        proc = self._spawn(name, ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                  "--port", str(port), "--webui-port", str(webui), "--cores", "1",
                                  "--memory", self.worker_memory, "--work-dir", str(folder / "work"),
                                  self.url], folder)
        worker = Worker(name, proc, port, webui, folder)
        self.workers.append(worker)
        if wait:
            self.wait_workers(len(self.alive_workers()), timeout)
        return worker

    def alive_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def wait_workers(self, n: int, timeout: float = 90.0) -> None:
        """Until the master lists `n` ALIVE workers."""
        def ready():
            workers = get_json(self.master_json)["workers"]
            return sum(w["state"] == "ALIVE" for w in workers) >= n
        self._wait(ready, timeout, f"{n} workers")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None and p.returncode not in (-9, 0)]
            if dead:
                raise RuntimeError(f"{dead[0].args[1]} exited with {dead[0].returncode} while waiting "
                                   f"for {what}; logs in {self.root / 'logs'}")
            try:
                if ready():
                    return
            except (OSError, ValueError):  # not listening yet, or an empty page while starting
                pass
            time.sleep(0.2)
        raise TimeoutError(f"no {what} after {timeout:.0f}s; logs in {self.root / 'logs'}")

    def kill_worker(self, worker: Worker) -> list[int]:
        """SIGKILL `worker` and the executor JVMs (with their Python workers) it launched; returns
        the executor PIDs. The worker goes first, so that it cannot relaunch a killed executor."""
        below = descendants(worker.pid)
        executors = set(worker.executor_pids().values()) | set(below)
        kill([worker.pid])
        kill(executors)
        worker.proc.wait(timeout=20)
        left = wait_gone(executors)
        if left:
            raise RuntimeError(f"processes {left} of {worker.name} survived SIGKILL")
        return sorted(set(worker.executor_pids().values()) | executors)

    def leftovers(self) -> list[str]:
        """'pid cmdline' of every live process running in, or naming, a folder under root."""
        root = str(self.root)
        out = []
        for pid in _pids():
            if pid == os.getpid() or not alive(pid):
                continue
            cwd, cmd = _cwd(pid), _cmdline(pid)
            if cwd == root or cwd.startswith(root + os.sep) or root in cmd:
                out.append(f"{pid} {cmd[:200]}")
        return out

    def stop(self) -> list[str]:
        """Kill everything this cluster started (and their children) by PID; returns leftovers."""
        pids = []
        for p in self.procs:
            pids += descendants(p.pid) + [p.pid]
        pids += [int(line.split()[0]) for line in self.leftovers()]
        kill(sorted(set(pids)))
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        wait_gone(pids)
        return self.leftovers()


# --------------------------------------------------------------------------- the driver program
PHASES = ("train-ref", "train-kill", "score-ref", "score-kill")


def driver_conf(ui_port: int) -> dict[str, str]:
    """Spark settings of the test driver: small, loopback, UI (REST API) on `ui_port`."""
    return {
        "spark.ui.enabled": "true",
        "spark.ui.port": str(ui_port),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": "1g",
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "spark.executor.memory": "640m",
        "spark.executor.cores": "1",
        "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "spark.executorEnv.OMP_NUM_THREADS": "1",
        # planning must not depend on how many executors are up at the time
        "spark.default.parallelism": "2",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
    }


def driver_overrides(master: str, root: str, ui_port: int) -> dict:
    """Config overrides of the test pipeline: the cluster's master, and tiny data and training."""
    return {
        "spark": {"app_name": "deepseg-cluster-test", "master": master, "conf": driver_conf(ui_port)},
        "data": {"root": root},
        "survey": {"invitations": 50, "n_segments": 3, "n_init": 1},
        # one iteration: 12 TSVM tasks (3 classes x 4 calibration fits) keep both executors busy
        "training": {"n_iter": 1, "supervised_epochs": 30, "unlabeled_epochs": 1, "labeled_epochs": 1,
                     "tsvm_sample_size": 500},
    }


def prepare(spark, root: str) -> None:
    """The tables train and score read (users, events, survey answers -> features, survey
    segments) under `root`, with any SparkSession: tests make them on their local one."""
    from deepseg.config import load_config
    from deepseg.demo import generate_tables, load_demo_settings
    from deepseg.pipeline import features_job, survey_job

    cfg = load_config(REPO / "conf" / "local.yaml", driver_overrides("local[2]", root, 0))
    generate_tables(spark, cfg, load_demo_settings(REPO / "conf" / "demo.yaml", {"generate": {
        "n_users": 1000, "chunk_size": 1000, "synthetic": {"survey_fraction": 0.08, "n_segments": 3}}}))
    features_job(spark, cfg)
    survey_job(spark, cfg)


def _executors(sc) -> int:
    return sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", required=True)
    parser.add_argument("--root", required=True, help="data.root of the pipeline")
    parser.add_argument("--out", required=True, help="phases.jsonl and the score snapshots go here")
    parser.add_argument("--ui-port", type=int, required=True)
    parser.add_argument("--executors", type=int, default=2, help="wait for this many before each phase")
    args = parser.parse_args(argv)

    import logging
    from collections import Counter

    import pyarrow.parquet as pq

    from deepseg.config import load_config
    from deepseg.pipeline import load_trained, score_job, train_job
    from deepseg.spark.session import get_spark
    from deepseg.pipeline.tables import read_table

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(REPO / "conf" / "local.yaml", driver_overrides(args.master, args.root, args.ui_port))
    spark = get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))
    sc = spark.sparkContext

    def _api(what):  # this application in the driver's REST API
        return get_json(f"http://127.0.0.1:{args.ui_port}/api/v1/applications/{sc.applicationId}/{what}",
                        timeout=120)  # the first call starts the REST service: slow on busy cores

    def _removed_executors() -> set[str]:
        return {e["id"] for e in _api("allexecutors") if not e["isActive"]}

    def report(**fields):
        with open(out / "phases.jsonl", "a") as fh:
            fh.write(json.dumps({"t": time.time(), "app_id": sc.applicationId, **fields}) + "\n")

    def phase(name, fn):
        deadline = time.monotonic() + 120
        while _executors(sc) < args.executors:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: fewer than {args.executors} executors after 120s")
            time.sleep(0.1)
        sc.setJobGroup(name, name)
        removed = _removed_executors()
        report(phase=name, event="start", executors=_executors(sc))
        start = time.perf_counter()
        value = fn()
        seconds = round(time.perf_counter() - start, 2)
        jobs = [j for j in _api("jobs") if j.get("jobGroup") == name]
        report(phase=name, event="end", seconds=seconds, jobs=len(jobs),
               failed_jobs=sum(j["status"] != "SUCCEEDED" for j in jobs),
               failed_tasks=sum(j["numFailedTasks"] for j in jobs),
               failed_stages=sum(j["numFailedStages"] for j in jobs),
               lost_executors=sorted(_removed_executors() - removed),
               job_names=Counter((j.get("description") or j["name"])[:50] for j in jobs).most_common(8),
               **value)
        return value

    def train():
        trained = train_job(spark, cfg)
        return {"model_version": trained.version, "model_path": trained.path}

    def score(name, version):
        def run():
            trained = load_trained(cfg, version)
            result = score_job(spark, cfg, only_changed=False, trained=trained)
            rows = read_table(spark, cfg, "user_segments").select(
                "user_id", "segment", "propensities", "feature_hash", "model_version", "run_id")
            pq.write_table(rows.toArrow(), out / f"{name}.parquet")
            return {"scored": result["scored"], "run_id": result["run_id"]}
        return run

    report(phase="session", event="end", ui_port=args.ui_port)
    reference = phase("train-ref", train)["model_version"]
    phase("train-kill", train)
    for name in ("score-ref", "score-kill"):  # both score the reference model
        phase(name, score(name, reference))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
