"""train_job logs to MLflow when it is installed: params, per-iteration metrics, the model folder.

Tracking goes to a local file store under tmp (``MLFLOW_TRACKING_URI=file:...``; mlflow 3 needs
``MLFLOW_ALLOW_FILE_STORE=true`` for it, mlflow-skinny has no SQLite store).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepseg.config import load_config
from deepseg.core.loop import DeepSegConfig

mlflow = pytest.importorskip("mlflow")

CONF = Path(__file__).resolve().parents[2] / "conf"
TRAINING = {"n_iter": 2, "supervised_epochs": 30, "unlabeled_epochs": 1, "labeled_epochs": 1,
            "tsvm_sample_size": 800, "hidden_size": 64}


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _runs(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments]) if experiments else []


@pytest.mark.spark
def test_train_job_logs_a_run(tmp_path, tracking):
    pytest.importorskip("delta")
    from pyspark.sql import SparkSession

    from deepseg.demo import generate_tables, load_demo_settings
    from deepseg.pipeline import features_job, survey_job, train_job
    from deepseg.spark.session import FAST_START_CONF, get_spark

    cfg = load_config(CONF / "local.yaml", {
        "data": {"root": str(tmp_path / "data")},
        "survey": {"invitations": 20, "n_segments": 5, "n_init": 1},
        "training": TRAINING,
    })
    before = SparkSession.getActiveSession()
    spark = get_spark(app_name="deepseg-mlflow", master="local[2]", conf=FAST_START_CONF)
    try:
        generate_tables(spark, cfg, load_demo_settings(CONF / "demo.yaml", {"generate": {
            "n_users": 1000, "chunk_size": 1000, "synthetic": {"survey_fraction": 0.1}}}))
        features_job(spark, cfg)
        survey_job(spark, cfg)
        trained = train_job(spark, cfg)
    finally:
        if before is None:
            spark.stop()

    [run] = _runs(tracking)
    assert run.info.status == "FINISHED" and run.info.run_name == trained.version
    assert run.data.tags["model_version"] == trained.version
    assert run.data.tags["run_id"] == trained.metadata["run_id"]
    params = run.data.params
    for key, value in TRAINING.items():  # as configured
        assert params[f"training.{key}"] == str(value), key
    # as resolved: every DeepSegConfig field, nested ones dotted
    assert params["deepseg.n_iter"] == "2" and params["deepseg.net.hidden_size"] == "64"
    assert params["deepseg.tsvm.C"] == str(DeepSegConfig().tsvm.C)  # not configured: the default
    assert params["deepseg.train.mixup_alpha"] == str(DeepSegConfig().train.mixup_alpha)
    assert params["deepseg.train.supervised_epochs"] == "30"
    assert params["n_classes"] == "5" and params["n_features"] == str(trained.metadata["n_features"])

    client = mlflow.MlflowClient(tracking)
    history = trained.model.history
    for key in ("agreement", "tsvm_objective", "mse", "kl"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == [row["iteration"] for row in history] == [1, 2], key
        assert [m.value for m in logged] == pytest.approx([float(row[key]) for row in history], nan_ok=True)
    assert "class_shares" not in run.data.metrics  # lists stay in metrics.json

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model", "model/feature_pipeline", "model/config.yaml", "model/profile.json"} <= artifacts
    saved = json.loads(Path(client.download_artifacts(run.info.run_id, "model/model/deepseg-model.json",
                                                      str(tmp_path / "dl"))).read_text())
    assert saved["metadata"]["model_version"] == trained.version
    # the run's report, logged to the same run (deepseg.pipeline.report.log_report_to_mlflow)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} == {"report/report.html"}


def _fake_model_dir(tmp_path: Path) -> Path:
    (tmp_path / "v1" / "model").mkdir(parents=True)
    (tmp_path / "v1" / "model" / "deepseg-model.json").write_text(json.dumps({"config": {"n_iter": 1}}))
    return tmp_path / "v1"


METADATA = {"run_id": "abc", "training": {"seed": 0, "tsvm_sample_size": None}, "n_classes": 3,
            "n_features": 4}


def test_nested_under_an_active_run(tmp_path, tracking):
    from deepseg.pipeline.train import _log_to_mlflow

    with mlflow.start_run(run_name="outer") as outer:
        run_id = _log_to_mlflow("v1", METADATA, [{"iteration": 1, "agreement": 0.5}], _fake_model_dir(tmp_path))
    inner = mlflow.MlflowClient(tracking).get_run(run_id)
    assert inner.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert inner.data.params["training.tsvm_sample_size"] == "None"
    assert inner.data.metrics == {"agreement": 0.5}


def test_tracking_failure_is_a_warning(tmp_path, monkeypatch, caplog):
    """The model is saved before logging: an unusable tracking store must not fail the job."""
    from deepseg.pipeline.train import _log_to_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    with caplog.at_level("WARNING", logger="deepseg"):
        assert _log_to_mlflow("v1", METADATA, [], _fake_model_dir(tmp_path)) is None
    assert "MLflow logging failed for model v1" in caplog.text
    assert mlflow.active_run() is None


def test_nothing_is_logged_without_a_destination(tmp_path, monkeypatch, caplog):
    """mlflow 3 would default to ./mlflow.db (which mlflow-skinny cannot open): without a tracking
    URI, an active run or Databricks, the jobs leave MLflow alone and say how to turn it on."""
    from deepseg.pipeline.report import log_report_to_mlflow
    from deepseg.pipeline.train import _log_to_mlflow

    for name in ("MLFLOW_TRACKING_URI", "DATABRICKS_RUNTIME_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert not mlflow.is_tracking_uri_set()
    (tmp_path / "report.html").write_text("<html></html>")
    with caplog.at_level("INFO", logger="deepseg"):
        assert _log_to_mlflow("v1", METADATA, [], _fake_model_dir(tmp_path)) is None
        assert log_report_to_mlflow(str(tmp_path / "report.html"), "v1") is None
    assert "train: MLflow is installed but no tracking URI is set (MLFLOW_TRACKING_URI)" in caplog.text
    assert "report: MLflow is installed but no tracking URI is set" in caplog.text
    assert "failed" not in caplog.text and not (tmp_path / "mlflow.db").exists() and mlflow.active_run() is None


def test_a_databricks_runtime_is_a_destination(monkeypatch):
    from deepseg.pipeline.tracking import configured_mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert configured_mlflow("train") is None
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert configured_mlflow("train") is mlflow
