"""Executors get deepseg from the wheel: a stage on the loopback standalone cluster, submitted with
``spark-submit --py-files deepseg.zip`` (the wheel under a .zip name: Spark puts .zip and .egg
files on the executors' Python path, not .whl), its executors on another Python environment.

The executors' environment is a separate virtual environment that has deepseg's dependencies
(numpy, torch, pyarrow, ...: a ``.pth`` line borrows the test venv's site-packages, whose own
``.pth`` files, among them deepseg's editable install, Python does not process from there) but
not deepseg: the test checks that it cannot import it. The driver (this venv) scores every user
on the cluster; each executor reports its interpreter and where it imported deepseg from.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

from tests.spark.cluster import REPO, StandaloneCluster, driver_conf, driver_overrides, free_port, prepare

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("java") is None, reason="needs java for the Spark cluster"),
]

DRIVER = textwrap.dedent('''
    import json, sys
    from deepseg.config import load_config
    from deepseg.pipeline import score_job
    from deepseg.spark.session import get_spark

    cfg = load_config(sys.argv[1], json.loads(sys.argv[2]))
    spark = get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))
    result = score_job(spark, cfg, only_changed=False)

    def where(_):
        import sys, deepseg, pyspark
        yield sys.executable, deepseg.__file__, pyspark.__file__

    seen = sorted(set(spark.sparkContext.parallelize(range(4), 4).mapPartitions(where).collect()))
    print("RESULT " + json.dumps({"scored": result["scored"], "executors": seen}))
''')


def _without_checkout(env: dict) -> dict:
    """`env` without PYTHONPATH: nothing may reach this checkout but the driver's own install."""
    env.pop("PYTHONPATH", None)
    return env


def executor_env(folder: Path) -> Path:
    """A virtual environment with deepseg's dependencies but not deepseg; returns its python."""
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_a_stage_runs_with_executors_on_another_environment(tmp_path, spark, wheel):
    from deepseg.config import load_config
    from deepseg.pipeline import train_job

    python = executor_env(tmp_path / "executor-env")
    probe = subprocess.run([python, "-c", "import torch, pyarrow, numpy; import deepseg"], capture_output=True,
                           text=True, cwd=tmp_path, env=_without_checkout(dict(os.environ)))
    assert probe.returncode != 0 and "No module named 'deepseg'" in probe.stderr, probe.stderr

    cluster = StandaloneCluster(tmp_path / "cluster")
    cluster.env = lambda: _without_checkout(StandaloneCluster.env(cluster))  # workers pass theirs on
    root = str(cluster.root / "data")
    prepare(spark, root)  # input tables and a model, on the local session
    train_job(spark, load_config(REPO / "conf" / "local.yaml", driver_overrides("local[2]", root, 0)))
    try:
        cluster.start(n_workers=2)
        ui = free_port()
        overrides = driver_overrides(cluster.url, root, ui)
        (cluster.root / "driver").mkdir()
        (cluster.root / "driver" / "driver.py").write_text(DRIVER)
        shipped = shutil.copy(wheel, cluster.root / "deepseg.zip")
        submit = [str(Path(sys.executable).parent / "spark-submit"), "--master", cluster.url,
                  "--py-files", str(shipped), "--conf", f"spark.pyspark.python={python}",
                  "--conf", f"spark.pyspark.driver.python={sys.executable}",
                  *[x for k, v in driver_conf(ui).items() for x in ("--conf", f"{k}={v}")],
                  "driver.py", str(REPO / "conf" / "local.yaml"), json.dumps(overrides)]
        done = subprocess.run(submit, cwd=cluster.root / "driver", env=cluster.env(),
                              capture_output=True, text=True, timeout=600)
    finally:
        left = cluster.stop()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert left == [], f"processes left running: {left}"
    result = json.loads([x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
    assert result["scored"] == 1000
    for executable, deepseg_file, _ in result["executors"]:
        assert executable == str(python)
        assert "deepseg.zip" in deepseg_file, deepseg_file  # from the shipped wheel
        assert not deepseg_file.startswith(str(REPO)), deepseg_file
