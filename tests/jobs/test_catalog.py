"""Tables by catalog name, in a persistent metastore: the whole chain with every table named.

Spark's own session catalog backed by a Derby metastore in a temp folder (Hive support; pyspark
ships the Hive and Derby jars), as on a cluster with a metastore. ``data.schema`` makes every bare
name in ``data.tables`` a table of schema ``deepseg_test``; outputs become managed Delta tables in
the warehouse. Each step runs in its own Python process (its own Spark session), so every table
read was written by an earlier session and survived it, as between the jobs of a nightly run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.spark

OUTPUTS = ("features", "survey_invitations", "survey_segments", "user_segments", "segment_profiles", "audiences")


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    settings = {
        "spark": {"master": "local[2]", "conf": {
            "spark.sql.catalogImplementation": "hive",
            "spark.sql.warehouse.dir": str(root / "warehouse"),
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
            "spark.ui.enabled": "false"}},
        "data": {"root": str(root / "files"), "schema": "deepseg_test"},
        "survey": {"invitations": 50, "n_segments": 3, "n_init": 1},
        "training": {"supervised_epochs": 5, "n_iter": 1, "unlabeled_epochs": 1, "labeled_epochs": 1,
                     "tsvm_sample_size": 300, "min_labeled_per_segment": 2},
    }
    (root / "conf").mkdir()
    for name in ("base.yaml", "demo.yaml"):
        (root / "conf" / name).write_text((REPO / "conf" / name).read_text())
    path = root / "conf" / "catalog.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _session(conf: Path, body: str, timeout: int = 600) -> dict:
    """Run `body` in a fresh Python process with a Spark session of `conf` (``spark``, ``cfg``);
    it leaves its result in ``out`` (printed as JSON)."""
    script = textwrap.dedent('''
        import json, sys
        from deepseg.config import load_config
        from deepseg.spark.session import get_spark
        cfg = load_config(sys.argv[1])
        spark = get_spark("catalog-test", cfg.spark.master, dict(cfg.spark.conf))
        out = {}
    ''') + textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(out, default=str))\n"
    done = subprocess.run([sys.executable, "-c", script, str(conf)], capture_output=True, text=True,
                          timeout=timeout, cwd=conf.parent)
    assert done.returncode == 0, done.stderr[-5000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _cli(conf: Path, *args) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "deepseg.cli", *args, "--conf", str(conf)],
                          capture_output=True, text=True, timeout=600, cwd=conf.parent)
    return done.returncode, done.stderr


def test_the_whole_chain_on_catalog_tables_across_sessions(conf):
    code, err = _cli(conf, "features")  # before the schema exists: refused, nothing written
    assert code == 2 and "`deepseg_test`.`users`" in err and "not found in the catalog" in err, err
    _session(conf, """
        spark.sql("CREATE SCHEMA deepseg_test")
        from deepseg.demo import generate_tables, load_demo_settings
        from deepseg.pipeline import features_job, survey_job
        generate_tables(spark, cfg, load_demo_settings("demo.yaml", {"generate": {
            "n_users": 600, "chunk_size": 600,
            "synthetic": {"survey_fraction": 0.15, "events_per_user": 5.0, "n_segments": 3}}}))
        features_job(spark, cfg)
        survey_job(spark, cfg)
    """)
    code, err = _cli(conf, "train")  # a new session reads what the first one wrote, by name
    assert code == 0, err[-3000:]
    _session(conf, """
        from deepseg.pipeline import audiences_job, score_job
        score_job(spark, cfg)
        audiences_job(spark, cfg)
    """)
    out = _session(conf, f"""
        from deepseg.pipeline import refresh_job
        from deepseg.pipeline.tables import history
        names = {list(OUTPUTS)!r}
        out["tables"] = sorted(r.tableName for r in spark.sql("SHOW TABLES IN deepseg_test").collect())
        out["detail"] = {{n: spark.sql(f"DESCRIBE DETAIL {{cfg.data.table(n).name}}").first().asDict()
                          for n in names}}
        out["counts"] = {{n: spark.table(cfg.data.table(n).name).count() for n in names}}
        before = {{n: len(history(spark, cfg.data.table(n))) for n in names}}
        refresh_job(spark, cfg)  # nothing changed since scoring: commits nothing
        out["again"] = {{n: len(history(spark, cfg.data.table(n))) - before[n] for n in names}}
        out["ops"] = {{n: [h.operation for h in history(spark, cfg.data.table(n))] for n in names}}
    """)
    named = {n: n if n != "features" else "user_features" for n in (*OUTPUTS, "users", "events", "survey_responses")}
    assert set(named.values()) <= set(out["tables"])  # conf/base.yaml's data.tables names
    warehouse = conf.parent.parent / "warehouse"
    for name in OUTPUTS:  # managed Delta tables in the metastore's warehouse, not folders under data.root
        detail = out["detail"][name]
        assert detail["format"] == "delta" and str(warehouse) in detail["location"], (name, detail)
    assert out["counts"]["user_segments"] == 600 and out["counts"]["segment_profiles"] == 3
    assert out["counts"]["survey_invitations"] == 50
    assert out["again"] == {n: 0 for n in OUTPUTS}, out["again"]
    assert {n: len(ops) for n, ops in out["ops"].items()} == {n: 1 for n in OUTPUTS}, out["ops"]  # one write each
    assert not (conf.parent.parent / "files" / "user_segments").exists()


@pytest.mark.parametrize("entry, message", [
    ("a..b", "data.tables.users must be a location"),
    ("a.b.c.d", "data.tables.users must be a location"),
    ("x`; DROP TABLE y; --", "data.tables.users must be a location"),
    ("http://host/users", "data.tables.users: unsupported URI scheme 'http'"),
])
def test_malformed_names_exit_2_naming_them(tmp_path, entry, message):
    (tmp_path / "base.yaml").write_text((REPO / "conf" / "base.yaml").read_text())
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "d"), "tables": {"users": entry}}}))
    code, err = _cli(conf, "features")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()
