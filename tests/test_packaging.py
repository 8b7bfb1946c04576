"""Installable where Spark already is: the wheel's dependencies leave a runtime's pyspark alone.

Databricks, EMR and Dataproc bring their own pyspark and Delta; pyspark and delta-spark are
deepseg's ``spark`` extra, not dependencies. The test builds the wheel from this checkout
(``python -m build``), makes a fresh virtual environment that already has pyspark (from pip's
cache), asks pip what installing the wheel would change (``--dry-run --report``: the whole
resolution, without downloading torch into the test), installs the wheel, and checks that
pyspark is the same distribution, untouched.
"""

from __future__ import annotations

import json
import subprocess
import venv
from importlib.metadata import version
from pathlib import Path

from deepseg import cli

REPO = Path(__file__).resolve().parents[1]


def _name(name: str) -> str:
    return name.lower().replace("_", "-")


def _run(*cmd, **kw) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_the_wheel_installs_beside_a_runtimes_pyspark_without_touching_it(tmp_path, wheel):
    env = tmp_path / "runtime"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    pyspark = version("pyspark")  # the runtime's: any version would do; this one is in pip's cache
    _run(python, "-m", "pip", "install", "-q", f"pyspark=={pyspark}")

    def installed() -> dict:
        out = _run(python, "-m", "pip", "list", "--format", "json")
        return {_name(d["name"]): d["version"] for d in json.loads(out)}

    before = installed()
    report = tmp_path / "report.json"
    _run(python, "-m", "pip", "install", "-q", "--dry-run", "--report", report, wheel)
    plan = {_name(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert "deepseg" in plan and {"torch", "numpy", "scikit-learn"} <= set(plan)
    assert "pyspark" not in plan and "delta-spark" not in plan, plan
    with_extra = tmp_path / "extra.json"
    _run(python, "-m", "pip", "install", "-q", "--dry-run", "--report", with_extra,
         f"deepseg[spark] @ {wheel.as_uri()}")
    assert "delta-spark" in {_name(i["metadata"]["name"]) for i in json.loads(with_extra.read_text())["install"]}

    _run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)  # the resolution is checked above
    after = installed()
    assert after.pop("deepseg") == "0.1.0" and after == before  # pyspark and all else as they were
    assert after["pyspark"] == pyspark
    files = _run(python, "-m", "pip", "show", "-f", "deepseg")
    assert "deepseg/report/page.py" in files and "deepseg/pipeline/train.py" in files


def test_spark_commands_without_pyspark_say_what_to_install(monkeypatch, capsys):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name, *a: None if name == "delta" else real(name, *a))
    assert cli.main(["score", "--conf", str(REPO / "conf" / "local.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepseg score: needs delta-spark, not installed here: pip install 'deepseg[spark]'")
    assert cli.main(["params"]) == 0  # needs no Spark
