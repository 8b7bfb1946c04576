#!/usr/bin/env python3
"""Resolve the Delta Lake jars for the installed delta-spark/pyspark into ``.jars/``.

Run once at install time (stdlib only; ``make setup`` does)::

    .venv/bin/python scripts/install_jars.py            # idempotent
    .venv/bin/python scripts/install_jars.py --force    # re-resolve
    .venv/bin/python scripts/install_jars.py --s3       # also Hadoop's S3A connector -> .jars/s3/

``deepseg.spark.session.get_spark`` then puts these jars on ``spark.jars`` so no
Ivy/Maven resolution happens at run time. Jars that pyspark already ships
(scala-library, jackson, slf4j, RoaringBitmap, ...) are not copied, so Spark's
own versions stay the only ones on the classpath.

It also configures the venv's own Spark (the pyspark package is its ``SPARK_HOME``) so that
a bare ``.venv/bin/spark-submit jobs/train.py --conf conf/local.yaml`` works:

* ``$SPARK_HOME/conf/spark-defaults.conf``: ``spark.jars`` (these jars, absolute paths), the
  Delta SQL extension and catalog, ``spark.driver.memory``;
* ``$SPARK_HOME/conf/spark-env.sh``: ``PYSPARK_PYTHON`` = the venv's python, unless set;
* ``<venv>/bin/spark-distribution`` -> ``$SPARK_HOME``: the venv's ``spark-submit`` looks for
  its SPARK_HOME with whatever ``python3`` is on the PATH, which need not have pyspark;
  pyspark's ``find_spark_home.py`` checks this folder next to itself first.

All three only touch the venv; ``--no-spark-conf`` skips them.

``--s3`` also resolves ``org.apache.hadoop:hadoop-aws`` of pyspark's own Hadoop version with its
AWS SDK bundle (about 650 MB) into ``.jars/s3/``, for ``s3a://`` tables and artefacts; they go
on ``spark.driver/executor.extraClassPath`` (``make test`` installs them: the suite runs an S3 server).

Why not just ``spark.jars.packages``: it resolves over the network at every
session start, and delta-spark's Python release can be ahead of the jars on
Maven Central (e.g. Python 4.4.1 vs. jar 4.4.0); here we then pick the newest
published jar of the same major.minor and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / ".jars"
MANIFEST = "MANIFEST.json"
CENTRAL = "https://repo1.maven.org/maven2"

_PROBE = r"""
import importlib.metadata as m, json, os, sys
out = {"venv": sys.prefix != sys.base_prefix}
for dist in ("delta-spark", "pyspark"):
    try:
        out[dist] = m.version(dist)
    except m.PackageNotFoundError:
        out[dist] = None
try:
    import pyspark
    out["spark_home"] = os.path.dirname(pyspark.__file__)
    out["pyspark_jars"] = os.path.join(out["spark_home"], "jars")
except Exception:
    out["spark_home"] = out["pyspark_jars"] = None
print(json.dumps(out))
"""


def log(msg: str) -> None:
    print(f"[install_jars] {msg}", flush=True)


def probe_env(python: str) -> dict:
    """Versions of delta-spark/pyspark and pyspark's jars dir, as seen by ``python``."""
    res = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def find_python(explicit: str | None) -> str:
    """The interpreter that has delta-spark installed (this one, else the repo .venv)."""
    candidates = [explicit] if explicit else [sys.executable, str(REPO_ROOT / ".venv/bin/python")]
    for py in candidates:
        if py and Path(py).exists():
            try:
                env = probe_env(py)
            except (subprocess.CalledProcessError, json.JSONDecodeError):
                continue
            if env.get("delta-spark") and env.get("pyspark"):
                return py
    sys.exit("[install_jars] no interpreter with delta-spark and pyspark found; use --python")


def scala_binary_version(pyspark_jars: str) -> str:
    """Scala binary version (e.g. '2.13') from pyspark's bundled scala-library jar."""
    for name in os.listdir(pyspark_jars):
        m = re.fullmatch(r"scala-library-(\d+)\.(\d+)\.\d+\.jar", name)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return "2.13"


def _http_ok(url: str) -> bool:
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def _published_versions(artifact: str) -> list[str]:
    url = f"{CENTRAL}/io/delta/{artifact}/maven-metadata.xml"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return re.findall(r"<version>([^<]+)</version>", r.read().decode())
    except urllib.error.HTTPError:
        return []


def _vkey(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def pick_coordinate(delta_version: str, spark_version: str, scala: str) -> str:
    """Maven coordinate of delta-spark matching the installed Python packages.

    Same artifact naming as ``delta.pip_utils`` (``delta-spark_<spark major.minor>_<scala>``),
    falling back to ``delta-spark_<scala>``; if the exact version is not on Central,
    use the newest stable release with the same major.minor (warns).
    """
    spark_mm = ".".join(spark_version.split(".")[:2])
    mm = delta_version.split(".")[:2]
    for artifact in (f"delta-spark_{spark_mm}_{scala}", f"delta-spark_{scala}"):
        pom = f"{CENTRAL}/io/delta/{artifact}/{delta_version}/{artifact}-{delta_version}.pom"
        if _http_ok(pom):
            return f"io.delta:{artifact}:{delta_version}"
        same_minor = [
            v for v in _published_versions(artifact)
            if re.fullmatch(r"\d+\.\d+\.\d+", v) and v.split(".")[:2] == mm
            and _vkey(v) <= _vkey(delta_version)
        ]
        if same_minor:
            best = max(same_minor, key=_vkey)
            log(f"WARNING: io.delta:{artifact}:{delta_version} is not on Maven Central; "
                f"using {best} (newest published {'.'.join(mm)}.x) for delta-spark {delta_version}")
            return f"io.delta:{artifact}:{best}"
    sys.exit(f"[install_jars] no delta-spark jar found on Maven Central for {delta_version}")


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>deepseg</groupId><artifactId>deepseg-jars</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>
  </dependencies>
</project>
"""


def resolve_mvn(coordinate: str, workdir: Path) -> list[Path]:
    """Runtime closure of ``coordinate`` via ``mvn dependency:copy-dependencies``."""
    g, a, v = coordinate.split(":")
    (workdir / "pom.xml").write_text(_POM.format(g=g, a=a, v=v))
    out = workdir / "jars"
    cmd = ["mvn", "-B", "-q", "-Dstyle.color=never", "-f", str(workdir / "pom.xml"),
           "dependency:copy-dependencies", "-DincludeScope=runtime",
           f"-DoutputDirectory={out}"]
    log("running: " + " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)  # mvn -q still emits ANSI noise
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        sys.exit(f"[install_jars] mvn failed (exit {res.returncode}); try --method ivy")
    return sorted(out.glob("*.jar"))


_IVY_SETTINGS = """<ivysettings>
  <settings defaultResolver="central"/>
  <caches defaultCacheDir="{cache}"/>
  <resolvers><ibiblio name="central" m2compatible="true" root="{root}"/></resolvers>
</ivysettings>
"""


def resolve_ivy(coordinate: str, workdir: Path, python: str) -> list[Path]:
    """Runtime closure via Spark's own Ivy (``spark.jars.packages``) into a private ivy dir.

    Uses its own ivysettings (Maven Central only): Spark's default chain tries ~/.m2 first and
    fails on artifacts for which Maven left only a .pom there ("download failed: ...jar").
    """
    ivy = workdir / "ivy"
    settings = workdir / "ivysettings.xml"
    settings.write_text(_IVY_SETTINGS.format(cache=ivy / "cache", root=CENTRAL))
    code = (
        "from pyspark.sql import SparkSession\n"
        "s = (SparkSession.builder.master('local[1]').config('spark.ui.enabled', 'false')"
        f".config('spark.jars.packages', {coordinate!r}).config('spark.jars.ivy', {str(ivy)!r})"
        f".config('spark.jars.ivySettings', {str(settings)!r}).getOrCreate())\n"
        "s.stop()\n"
    )
    log(f"resolving with Spark Ivy (spark.jars.ivy={ivy})")
    res = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write((res.stdout + res.stderr)[-6000:])
        sys.exit(f"[install_jars] Ivy resolution failed (exit {res.returncode})")
    # Ivy names jars <org>_<artifact>-<version>.jar; strip the org for consistency with mvn.
    out = workdir / "jars"
    out.mkdir(exist_ok=True)
    jars = []
    for j in sorted((ivy / "jars").glob("*.jar")):
        target = out / (j.name.split("_", 1)[1] if "_" in j.name else j.name)
        shutil.copy2(j, target)
        jars.append(target)
    return jars


# Covered by a differently named jar in pyspark/jars (same classes, or only needed by a
# jar pyspark already ships in a newer version).
_ALSO_PROVIDED = {"commons-logging": "jcl-over-slf4j", "shims": "RoaringBitmap"}


def _artifact_name(jar: str) -> str:
    """'jackson-core-2.13.5.jar' -> 'jackson-core' (strip version and extension)."""
    return re.sub(r"-\d[^-]*(-[A-Za-z0-9.]+)?\.jar$", "", jar)


#: Written into the venv's Spark conf; the same settings as deepseg.spark.session's
#: DELTA_SPARK_CONF and LOCAL_SPARK_CONF["spark.driver.memory"] (stdlib only here: no import).
SPARK_DEFAULTS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.driver.memory": "2g",
}
_GENERATED = "# Written by deepseg's scripts/install_jars.py (make setup); rerun it to update.\n"


def hadoop_version(pyspark_jars: str) -> str:
    """Hadoop version of pyspark's bundled client (``hadoop-client-api-<v>.jar``)."""
    for name in os.listdir(pyspark_jars):
        m = re.fullmatch(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar", name)
        if m:
            return m.group(1)
    sys.exit(f"[install_jars] no hadoop-client-api jar in {pyspark_jars}: cannot match hadoop-aws to it")


def install_s3(dest: Path, pyspark_jars: str, force: bool) -> list[Path]:
    """hadoop-aws matching pyspark's Hadoop, and its runtime closure, into ``dest`` (idempotent)."""
    coordinate = f"org.apache.hadoop:hadoop-aws:{hadoop_version(pyspark_jars)}"
    manifest_path = dest / MANIFEST
    if manifest_path.exists() and not force:
        old = json.loads(manifest_path.read_text())
        if old.get("coordinate") == coordinate and all((dest / j).is_file() for j in old.get("jars", [])):
            log(f"s3: up to date: {coordinate} ({len(old['jars'])} jars)")
            return [dest / j for j in old["jars"]]
    provided = {_artifact_name(j) for j in os.listdir(pyspark_jars) if j.endswith(".jar")}
    with tempfile.TemporaryDirectory(prefix="deepseg-jars-") as tmp:
        jars = [j for j in resolve_mvn(coordinate, Path(tmp)) if _artifact_name(j.name) not in provided]
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob("*.jar"):
            stale.unlink()
        for j in jars:
            shutil.copy2(j, dest / j.name)
            log(f"s3: installed {j.name} ({j.stat().st_size // 1024} KiB)")
    manifest_path.write_text(json.dumps({"coordinate": coordinate, "jars": [j.name for j in jars]}, indent=2) + "\n")
    return [dest / j.name for j in jars]


def write_spark_conf(spark_home: Path, jars: list[Path], python: str, venv: bool = True,
                     classpath: list[Path] = ()) -> list[Path]:
    """Make the venv's ``spark-submit`` run deepseg's jobs with no flags (see the module doc).

    Only in a virtualenv (a system-wide pyspark is left alone), and never over conf files it
    did not write (a user's own Spark set-up).
    """
    if not venv:
        log(f"{python} is not a virtualenv: its Spark conf is left alone (spark-submit needs --jars)")
        return []
    python = os.path.abspath(python)  # the venv's own path: resolving it would leave the venv
    conf_dir = spark_home / "conf"
    conf_dir.mkdir(exist_ok=True)
    defaults = {"spark.jars": ",".join(str(j.resolve()) for j in jars), **SPARK_DEFAULTS}
    if classpath:  # the S3A jars: on the class path, not copied to executors like spark.jars
        for side in ("driver", "executor"):
            defaults[f"spark.{side}.extraClassPath"] = os.pathsep.join(str(j.resolve()) for j in classpath)
    files = {
        conf_dir / "spark-defaults.conf": _GENERATED + "".join(f"{k} {v}\n" for k, v in defaults.items()),
        # sourced by bin/load-spark-env.sh (set -a): the driver and the workers use the venv
        conf_dir / "spark-env.sh": _GENERATED + f'PYSPARK_PYTHON="${{PYSPARK_PYTHON:-{python}}}"\n',
    }
    for path, text in files.items():
        if path.exists() and not path.read_text().startswith(_GENERATED):
            sys.exit(f"[install_jars] {path} exists and was not written by this script; "
                     "move it away or pass --no-spark-conf")
        path.write_text(text)
        log(f"wrote {path}")
    link = Path(python).parent / "spark-distribution"
    if (Path(python).parent / "find_spark_home.py").is_file():
        if link.is_symlink() or not link.exists():
            if link.is_symlink():
                link.unlink()
            link.symlink_to(spark_home, target_is_directory=True)
            log(f"linked {link} -> {spark_home}")
        else:
            log(f"WARNING: {link} exists and is not a link; left as is")
    return list(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=Path(os.environ.get("DEEPSEG_JARS_DIR", DEFAULT_DEST)))
    ap.add_argument("--python", help="interpreter with delta-spark/pyspark (default: this one, else .venv)")
    ap.add_argument("--method", choices=("auto", "mvn", "ivy"), default="auto")
    ap.add_argument("--coordinate", help="override, e.g. io.delta:delta-spark_4.2_2.13:4.4.0")
    ap.add_argument("--force", action="store_true", help="re-resolve even if up to date")
    ap.add_argument("--no-spark-conf", dest="spark_conf", action="store_false",
                    help="leave the venv's Spark conf (spark-defaults.conf, spark-env.sh) alone")
    ap.add_argument("--s3", action="store_true",
                    help="also install hadoop-aws + AWS SDK (s3a:// support) into <dest>/s3")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    python = find_python(args.python)
    env = probe_env(python)
    delta_v, spark_v, pyspark_jars = env["delta-spark"], env["pyspark"], env["pyspark_jars"]
    dest: Path = args.dest
    manifest_path = dest / MANIFEST
    log(f"delta-spark {delta_v}, pyspark {spark_v} ({python}); dest {dest}")
    s3 = install_s3(dest / "s3", pyspark_jars, args.force) if args.s3 else sorted((dest / "s3").glob("*.jar"))

    if manifest_path.exists() and not args.force:
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            old = {}
        up_to_date = (
            old.get("delta_spark") == delta_v and old.get("pyspark") == spark_v
            and (args.coordinate is None or old.get("coordinate") == args.coordinate)
            and old.get("jars") and all((dest / j).is_file() for j in old["jars"])
        )
        if up_to_date:
            log(f"up to date: {old['coordinate']} ({len(old['jars'])} jars)")
            if args.spark_conf:
                write_spark_conf(Path(env["spark_home"]), [dest / j for j in old["jars"]], python,
                                 env["venv"], s3)
            return 0

    scala = scala_binary_version(pyspark_jars)
    coordinate = args.coordinate or pick_coordinate(delta_v, spark_v, scala)
    log(f"coordinate: {coordinate}")
    method = args.method
    if method == "auto":
        method = "mvn" if shutil.which("mvn") else "ivy"

    provided = {_artifact_name(j) for j in os.listdir(pyspark_jars) if j.endswith(".jar")}
    provided |= {alias for alias, real in _ALSO_PROVIDED.items() if real in provided}
    with tempfile.TemporaryDirectory(prefix="deepseg-jars-") as tmp:
        work = Path(tmp)
        jars = resolve_mvn(coordinate, work) if method == "mvn" else resolve_ivy(coordinate, work, python)
        keep = [j for j in jars if _artifact_name(j.name) not in provided]
        skipped = sorted(j.name for j in jars if _artifact_name(j.name) in provided)
        if not any(j.name.startswith("delta-spark") for j in keep):
            sys.exit(f"[install_jars] resolution produced no delta-spark jar: {[j.name for j in jars]}")
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob("*.jar"):
            if stale.name not in {j.name for j in keep}:
                stale.unlink()
                log(f"removed stale {stale.name}")
        for j in keep:
            shutil.copy2(j, dest / j.name)
            log(f"installed {j.name} ({j.stat().st_size // 1024} KiB)")
    if skipped:
        log("skipped (already shipped by pyspark): " + ", ".join(skipped))
    manifest = {
        "coordinate": coordinate, "delta_spark": delta_v, "pyspark": spark_v,
        "scala": scala, "method": method, "jars": [j.name for j in keep],
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {manifest_path} ({len(keep)} jars) in {time.monotonic() - t0:.1f}s")
    if args.spark_conf:
        write_spark_conf(Path(env["spark_home"]), [dest / j.name for j in keep], python, env["venv"], s3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
