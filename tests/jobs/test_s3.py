"""Every table and artefact on ``s3a://``, on a real S3-compatible server on loopback (S3Proxy,
:mod:`tests.s3server`): the whole chain equals the local-folder run; killed jobs leave the
previous model and table versions; a resumed train equals an uninterrupted one; keys given as
Spark settings are masked; delta-rs reads every output table; a missing bucket or a refused key is
one line naming the bucket; models save and load on s3a:// URIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepseg.config import load_config
from tests import s3server
from tests.jobs.chain import OUTPUTS, assert_same_outputs, clean_env, cli, run_chain, write_conf
from tests.jobs.test_atomic import _kill_when, _start, tables_state

pytestmark = pytest.mark.spark
BUCKET = "deepseg-chain"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = s3server.start(tmp_path_factory.mktemp("s3proxy"))
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def conf(server, tmp_path_factory) -> Path:
    conf = {"spark.ui.enabled": "false", **server.spark_conf()}
    return write_conf(tmp_path_factory.mktemp("s3chain"), {
        "spark": {"master": "local[2]", "conf": conf},
        "data": {"root": f"s3a://{BUCKET}/deepseg"}})


@pytest.fixture(scope="module")
def env(server) -> dict:
    """The jobs' environment: the server's credentials, as on a cluster (never in a config file)."""
    return clean_env(**{k: v for k, v in server.env().items() if k.startswith("AWS_")})


@pytest.fixture(scope="module")
def chain(conf, env):
    return run_chain(conf, env)


@pytest.fixture(scope="module")
def s3spark(spark, server):
    """The module's Spark session, its S3A pointed at the server (keys set in code, not a file)."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in server.spark_conf().items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)
    hadoop.set("fs.s3a.access.key", server.access_key)
    hadoop.set("fs.s3a.secret.key", server.secret_key)
    return spark


def test_the_whole_chain_on_s3_equals_the_local_run(chain, local_chain, server, conf, s3spark):
    from deltalake import DeltaTable

    assert_same_outputs(chain["snapshot"], local_chain["snapshot"])
    assert chain["again"] == {n: 0 for n in OUTPUTS}, chain["again"]  # the refresh committed nothing
    assert {n: len(ops) for n, ops in chain["ops"].items()} == {n: 1 for n in OUTPUTS}, chain["ops"]
    assert not (conf.parent / "data").exists() and not (conf.parent / "deepseg").exists()

    from deepseg import storage
    from deepseg.pipeline import model_versions

    cfg = load_config(conf)

    (version,) = model_versions(cfg)
    folder = f"{cfg.data.models_path}/{version}"
    assert {"model", "feature_pipeline", "config.yaml", "profile.json", "metrics.json", "report.html"} <= set(
        storage.list_dir(folder))
    exported = json.loads(storage.read_text(f"{cfg.data.root}/{cfg.audiences.export_dir}/_deepseg_export.json"))
    assert storage.list_dir(f"{cfg.data.root}/{cfg.audiences.export_dir}/{exported['folder']}")

    options = {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": server.access_key,
               "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
               "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    for name in OUTPUTS:  # an independent reader: delta-rs, no Spark, no Hadoop
        table = DeltaTable(cfg.data.table_path(name).replace("s3a://", "s3://"), storage_options=options)
        assert table.to_pyarrow_table().num_rows == len(chain["snapshot"][name]), name


def test_killed_train_leaves_the_previous_model_and_resume_equals_it(chain, conf, env, server, s3spark,
                                                                      tmp_path, monkeypatch):
    from deepseg.pipeline import load_trained, model_versions
    from deepseg.pipeline.tables import read_table

    cfg = load_config(conf)
    before_versions, before_tables = model_versions(cfg), tables_state(s3spark, cfg)
    for key, value in env.items():  # _start passes os.environ on
        monkeypatch.setenv(key, value)
    log = tmp_path / "train.log"
    hit = _kill_when(_start(conf, log, "train"), log, lambda: "checkpoint: iteration 0 saved" in log.read_text())
    assert hit, log.read_text()[-3000:]
    assert model_versions(cfg) == before_versions and tables_state(s3spark, cfg) == before_tables

    # resumed with the keys as Spark settings of an uncommitted file instead of the environment:
    # they reach neither the job's output nor the model's config.yaml
    secret_conf = write_conf(tmp_path / "secret", {
        "spark": {"master": "local[2]", "conf": {**server.spark_conf(),
                                                 "spark.hadoop.fs.s3a.access.key": server.access_key,
                                                 "spark.hadoop.fs.s3a.secret.key": server.secret_key}},
        "data": {"root": f"s3a://{BUCKET}/deepseg"}})
    code, out = cli(secret_conf, "train", "--resume", env=clean_env())
    assert code == 0 and "resumed from the training checkpoint" in out, out[-3000:]
    assert server.secret_key not in out
    versions = model_versions(cfg)
    assert len(versions) == 2 and versions[0] == before_versions[0]
    models = cfg.data.models_path.removeprefix(f"s3a://{BUCKET}/")
    saved = (server.folder / "data" / BUCKET / models / versions[1] / "config.yaml").read_text()
    assert server.secret_key not in saved and server.access_key not in saved
    assert "spark.hadoop.fs.s3a.secret.key: <redacted>" in saved
    first, resumed = load_trained(cfg, versions[0]), load_trained(cfg, versions[1])
    X = np.array([r.features for r in read_table(s3spark, cfg, "features").orderBy("user_id").collect()],
                 dtype=np.float32)
    np.testing.assert_array_equal(first.model.ensemble(X), resumed.model.ensemble(X))


def test_killed_score_leaves_every_table_at_its_previous_version(chain, conf, env, server, s3spark, tmp_path,
                                                                monkeypatch):
    cfg = load_config(conf)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # the server keeps objects as files: a new parquet object is visible there the moment it is complete
    table = server.folder / "data" / BUCKET / "deepseg" / "user_segments"
    parquet = lambda: {p.name for p in table.glob("*.parquet")}  # noqa: E731
    commits = lambda: {p.name for p in (table / "_delta_log").glob("*.json")}  # noqa: E731
    before = tables_state(s3spark, cfg)
    for attempt in range(3):
        files, logs = parquet(), commits()
        log = tmp_path / f"score-{attempt}.log"
        if _kill_when(_start(conf, log, "score", "--all"), log, lambda: bool(parquet() - files) and commits() == logs):
            break
        before = tables_state(s3spark, cfg)
    else:
        pytest.fail("three score runs committed before the kill could hit their write")
    assert tables_state(s3spark, cfg) == before


def test_missing_bucket_and_refused_key_exit_2_naming_the_bucket(conf, env, server, tmp_path):
    missing = write_conf(tmp_path / "missing", {
        "spark": {"master": "local[1]", "conf": server.spark_conf()}, "data": {"root": "s3a://no-such-bucket/x"}})
    code, out = cli(missing, "features", env=env)
    assert code == 2 and "bucket 'no-such-bucket' does not exist" in out, out[-3000:]

    before = sorted(p.relative_to(server.folder) for p in (server.folder / "data").rglob("*"))
    code, out = cli(conf, "features", env={**env, "AWS_SECRET_ACCESS_KEY": "not-the-key-at-all"})
    assert code == 2 and f"access to bucket '{BUCKET}' was refused" in out, out[-3000:]
    assert "not-the-key-at-all" not in out and server.secret_key not in out
    assert sorted(p.relative_to(server.folder) for p in (server.folder / "data").rglob("*")) == before


def test_models_and_files_round_trip_on_s3(chain, conf, s3spark, tmp_path):
    """deepseg.storage, save_model/load_model and DeepSegmentationModel.save/load on s3a:// URIs."""
    from deepseg import storage
    from deepseg.pipeline import load_trained
    from deepseg.pipeline.tables import read_table
    from deepseg.spark.ml import DeepSegmentationModel
    from deepseg.spark.persistence import load_model, save_model

    base = f"s3a://{BUCKET}/roundtrip"
    assert storage.write_text(f"{base}/a/b.txt", "hello") == f"{base}/a/b.txt"
    assert storage.read_text(f"{base}/a/b.txt") == "hello" and storage.list_dir(base) == ["a"]
    (tmp_path / "up" / "x").mkdir(parents=True)
    (tmp_path / "up" / "x" / "y.bin").write_bytes(b"\0\1")
    storage.copy_tree(tmp_path / "up", f"{base}/up")
    with storage.local_copy(f"{base}/up") as local:
        assert (local / "x" / "y.bin").read_bytes() == b"\0\1"
    storage.remove_tree(base)
    assert not storage.exists(f"{base}/a/b.txt") and storage.list_dir(base) == []

    cfg = load_config(conf)
    trained = load_trained(cfg)
    X = np.array([r.features for r in read_table(s3spark, cfg, "features").limit(200).collect()], dtype=np.float32)
    save_model(trained.model, f"{base}/model", {"owner": "tests"})
    loaded, metadata = load_model(f"{base}/model")
    assert metadata == {"owner": "tests"}
    np.testing.assert_array_equal(loaded.ensemble(X), trained.model.ensemble(X))

    model = DeepSegmentationModel(trained.model, config=trained.model.config)
    model.write().overwrite().save(f"{base}/spark-model")
    again = DeepSegmentationModel.load(f"{base}/spark-model")
    np.testing.assert_array_equal(again.result.ensemble(X), trained.model.ensemble(X))
