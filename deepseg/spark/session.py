"""Get a SparkSession with Delta Lake: the active one, or a small local one.

Local sessions load the Delta jars from ``.jars/`` (filled once by ``scripts/install_jars.py``)
through ``spark.jars``, so starting a session never resolves anything over the network.
pyspark is imported lazily, inside :func:`get_spark`.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Spark conf that turns on Delta Lake (SQL extension + catalog); reusable by tests/jobs.
DELTA_SPARK_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

#: Defaults for local masters: small and quick on a 2-core laptop.
LOCAL_SPARK_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.memory": "2g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # Delta rebuilds table state with 50 partitions by default: far too many for tiny tables.
    "spark.databricks.delta.snapshotPartitions": "2",
}

#: Opt-in for short runs/tests: C1-only JIT starts Spark and runs tiny Delta ops ~35% faster
#: on 2 busy cores, but lowers peak throughput of long JVM-heavy jobs.
FAST_START_CONF: dict[str, str] = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}

JARS_DIR_ENV = "DEEPSEG_JARS_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_SCALA = "2.13"
_CENTRAL = "https://repo1.maven.org/maven2"


def on_databricks() -> bool:
    """True inside a Databricks runtime, which ships Delta itself."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def find_jars_dir() -> Path | None:
    """The folder holding the Delta jars: ``$DEEPSEG_JARS_DIR``, else ``<repo>/.jars``."""
    candidates = [os.environ.get(JARS_DIR_ENV), _REPO_ROOT / ".jars"]
    for c in candidates:
        if c and Path(c).is_dir() and any(Path(c).glob("*.jar")):
            return Path(c)
    return None


def s3_jars(jars_dir: Path | None = None) -> list[str]:
    """Hadoop's S3A connector and its AWS SDK (``.jars/s3/``, from ``install_jars.py --s3``), if installed.

    They go on the driver's and executors' class path rather than ``spark.jars``, which would
    copy the 650 MB SDK bundle to every executor at every session start.
    """
    jars_dir = jars_dir or find_jars_dir()
    return [str(j) for j in sorted((jars_dir / "s3").glob("*.jar"))] if jars_dir else []


def local_jars(jars_dir: Path | None = None) -> list[str]:
    """Absolute paths of the jars to put on ``spark.jars`` (MANIFEST.json order if present)."""
    jars_dir = jars_dir or find_jars_dir()
    if jars_dir is None:
        return []
    manifest = jars_dir / "MANIFEST.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        _check_manifest(meta, jars_dir)
        jars = [jars_dir / j for j in meta.get("jars", [])]
        if jars and all(j.is_file() for j in jars):
            return [str(j) for j in jars]
        log.warning("%s lists missing jars; using every *.jar in %s", manifest, jars_dir)
    return [str(j) for j in sorted(jars_dir.glob("*.jar"))]


def _check_manifest(meta: dict, jars_dir: Path) -> None:
    try:
        from importlib.metadata import version

        installed = {"pyspark": version("pyspark"), "delta_spark": version("delta-spark")}
    except Exception:  # pragma: no cover - metadata missing
        return
    stale = {k: (meta.get(k), v) for k, v in installed.items() if meta.get(k) != v}
    if stale:
        log.warning("jars in %s were installed for %s; rerun scripts/install_jars.py",
                    jars_dir, ", ".join(f"{k} {a} (now {b})" for k, (a, b) in stale.items()))


def delta_maven_coordinate() -> str:
    """Delta coordinate for the ``spark.jars.packages`` fallback (naming as ``delta.pip_utils``).

    delta-spark's Python release can be ahead of the jars on Maven Central (Python 4.4.1 vs.
    jar 4.4.0): then the newest published jar of the same major.minor is used.
    ``$DEEPSEG_DELTA_PACKAGES`` overrides all of this.
    """
    if os.environ.get("DEEPSEG_DELTA_PACKAGES"):
        return os.environ["DEEPSEG_DELTA_PACKAGES"]
    import re
    import urllib.request
    from importlib.metadata import version

    delta_v = version("delta-spark")
    artifact = f"delta-spark_{'.'.join(version('pyspark').split('.')[:2])}_{_SCALA}"
    base = f"{_CENTRAL}/io/delta/{artifact}"
    try:
        with urllib.request.urlopen(f"{base}/maven-metadata.xml", timeout=10) as r:
            published = re.findall(r"<version>(\d+\.\d+\.\d+)</version>", r.read().decode())
    except OSError:
        published = []  # offline or blocked: let Ivy report it
    key = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    same_minor = [v for v in published
                  if v.split(".")[:2] == delta_v.split(".")[:2] and key(v) <= key(delta_v)]
    if same_minor and delta_v not in published:
        log.warning("io.delta:%s:%s is not on Maven Central; using %s",
                    artifact, delta_v, max(same_minor, key=key))
        delta_v = max(same_minor, key=key)
    return f"io.delta:{artifact}:{delta_v}"


def _central_ivy_settings() -> str:
    """An ivysettings.xml resolving from Maven Central only.

    Spark's default Ivy chain looks in ~/.m2 first and fails ("download failed: ...jar") where
    Maven left only a .pom for a dependency, which any earlier ``mvn`` run tends to do.
    """
    import tempfile

    path = Path(tempfile.gettempdir()) / "deepseg-ivysettings.xml"
    path.write_text(
        '<ivysettings><settings defaultResolver="central"/><resolvers>'
        f'<ibiblio name="central" m2compatible="true" root="{_CENTRAL}"/>'
        "</resolvers></ivysettings>\n")
    return str(path)


def _is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[") or master.startswith("local-cluster")


def get_spark(app_name: str = "deepseg", master: str | None = None,
              conf: dict | None = None) -> "SparkSession":
    """Return the active SparkSession, or build one with Delta Lake enabled.

    New sessions use ``master`` (default ``local[*]``, or spark-submit's), :data:`DELTA_SPARK_CONF`,
    :data:`LOCAL_SPARK_CONF` for local masters, and the jars from :func:`find_jars_dir` via
    ``spark.jars``. Without local jars (and not on Databricks) it falls back to
    ``spark.jars.packages``, which resolves from Maven at every start. ``conf`` overrides
    everything; its ``spark.jars`` is appended to ours.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active

    # Under spark-submit the JVM is already up: its --master/--jars/--conf stand, and spark.jars
    # set here could no longer reach the driver classpath. The venv's spark-submit gets the Delta
    # jars from $SPARK_HOME/conf/spark-defaults.conf (written by scripts/install_jars.py);
    # another Spark needs --jars .jars/*.jar or --packages.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if master is None and not submitted:
        master = "local[*]"
    settings: dict[str, str] = {}
    if not on_databricks():
        settings.update(DELTA_SPARK_CONF)
        if master is not None and _is_local(master):
            settings.update(LOCAL_SPARK_CONF)
            # Python workers must be this interpreter (the venv with pyarrow/torch), not PATH's.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        jars = local_jars() if not submitted else []
        if submitted:
            log.info("running under spark-submit: Delta jars come from its spark-defaults.conf "
                     "or --jars/--packages")
        elif jars:
            settings["spark.jars"] = ",".join(jars)
            log.info("Delta Lake from %d local jars in %s", len(jars), Path(jars[0]).parent)
            if s3 := s3_jars():
                for side in ("driver", "executor"):
                    settings[f"spark.{side}.extraClassPath"] = os.pathsep.join(s3)
        else:
            coord = delta_maven_coordinate()
            settings["spark.jars.packages"] = coord
            settings["spark.jars.ivySettings"] = _central_ivy_settings()
            log.warning("no Delta jars in $%s or %s: resolving %s from Maven at startup "
                        "(slow, needs network); run scripts/install_jars.py once to avoid it",
                        JARS_DIR_ENV, _REPO_ROOT / ".jars", coord)
    for key, value in (conf or {}).items():
        if key == "spark.jars" and settings.get("spark.jars"):
            settings[key] = settings[key] + "," + str(value)
        elif key.endswith(".extraClassPath") and settings.get(key):
            settings[key] = str(value) + os.pathsep + settings[key]
        else:
            settings[key] = str(value)

    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if not on_databricks() and "DeltaSparkSessionExtension" not in spark.conf.get(
            "spark.sql.extensions", ""):
        log.warning("reused a SparkSession without Delta extensions; Delta SQL may fail")
    return spark
