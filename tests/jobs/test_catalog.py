"""Tables by catalog name, in a persistent metastore: the whole chain with every table named, and
the same outputs as on local folders.

Spark's own session catalog backed by a Derby metastore in a temp folder (Hive support; pyspark
ships the Hive and Derby jars), as on a cluster with a metastore. ``data.schema`` makes every bare
name in ``data.tables`` a table of schema ``deepseg_test``; outputs become managed Delta tables in
the warehouse. Each step runs in its own Python process (its own Spark session), so every table
read was written by an earlier session and survived it, as between the jobs of a nightly run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.jobs.chain import OUTPUTS, REPO, assert_same_outputs, clean_env, cli, run_chain, write_conf

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    return write_conf(root, {
        "spark": {"master": "local[2]", "conf": {
            "spark.sql.catalogImplementation": "hive",
            "spark.sql.warehouse.dir": str(root / "warehouse"),
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
            "spark.ui.enabled": "false"}},
        "data": {"root": str(root / "files"), "schema": "deepseg_test"}})


def test_the_whole_chain_on_catalog_tables_across_sessions_equals_the_local_run(conf, local_chain):
    code, err = cli(conf, "features")  # before the schema exists: refused, nothing written
    assert code == 2 and "`deepseg_test`.`users`" in err and "not found in the catalog" in err, err
    out = run_chain(conf, clean_env(), setup='spark.sql("CREATE SCHEMA deepseg_test")\n', inspect=f"""
        names = {list(OUTPUTS)!r}
        out["tables"] = sorted(r.tableName for r in spark.sql("SHOW TABLES IN deepseg_test").collect())
        out["detail"] = {{n: spark.sql(f"DESCRIBE DETAIL {{cfg.data.table(n).name}}").first().asDict()
                          for n in names}}
    """)
    named = {n: n if n != "features" else "user_features" for n in (*OUTPUTS, "users", "events", "survey_responses")}
    assert set(named.values()) <= set(out["tables"])  # conf/base.yaml's data.tables names
    warehouse = conf.parent.parent / "warehouse"
    for name in OUTPUTS:  # managed Delta tables in the metastore's warehouse, not folders under data.root
        detail = out["detail"][name]
        assert detail["format"] == "delta" and str(warehouse) in detail["location"], (name, detail)
    assert len(out["snapshot"]["user_segments"]) == 600 and len(out["snapshot"]["segment_profiles"]) == 3
    assert len(out["snapshot"]["survey_invitations"]) == 50
    assert out["again"] == {n: 0 for n in OUTPUTS}, out["again"]
    assert {n: len(ops) for n, ops in out["ops"].items()} == {n: 1 for n in OUTPUTS}, out["ops"]  # one write each
    assert not (conf.parent.parent / "files" / "user_segments").exists()
    assert_same_outputs(out["snapshot"], local_chain["snapshot"])


@pytest.mark.parametrize("entry, message", [
    ("a..b", "data.tables.users must be a location"),
    ("a.b.c.d", "data.tables.users must be a location"),
    ("x`; DROP TABLE y; --", "data.tables.users must be a location"),
    ("http://host/users", "data.tables.users: unsupported URI scheme 'http'"),
    ("nocatalog.noschema.users", "`nocatalog`.`noschema`.`users`) not found in the catalog"),
    ("noschema.users", "`noschema`.`users`) not found in the catalog"),
    ("default.no_such_users", "`default`.`no_such_users`) not found in the catalog"),
])
def test_malformed_names_exit_2_naming_them(tmp_path, entry, message):
    (tmp_path / "base.yaml").write_text((REPO / "conf" / "base.yaml").read_text())
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "d"), "tables": {"users": entry}}}))
    code, err = cli(conf, "features")
    errors = [line for line in err.splitlines() if line.startswith("deepseg features:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "d").exists()
