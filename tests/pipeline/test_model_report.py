"""The model report's gatherer: segment_profiles rows (two model versions) -> report.html in the
model version folder; a version without profiles or a wrong segments.names is refused before
anything is written; MLflow gets the report when it is installed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from deepseg.config import load_config
from deepseg.pipeline.model_store import TrainedModel
from deepseg.pipeline.validate import InputError

CONF = Path(__file__).resolve().parents[2] / "conf"
OLD, NEW = "20250101T000000-aaaaaa", "20250201T000000-bbbbbb"
EFFECT = ("attribute", "value", "kind", "segment_stat", "overall_stat", "effect")


def _rows():
    """Two segments of NEW (the second without scored users or answers) and one of OLD."""
    age = dict(zip(EFFECT, ("age", None, "smd", 44.0, 35.0, 0.8)))
    plan = dict(zip(EFFECT, ("plan", "pro", "lift", 0.4, 0.2, 2.0)))
    q1 = dict(zip(EFFECT, ("q1", None, "smd", 4.0, 3.0, 1.1)))
    return [
        (NEW, 0, "teams", 90, 1.0, 12, 0.8, 0.6, 0.82, 0.95, [q1], [plan, age], "run-p"),
        (NEW, 1, "solo", 0, 0.0, 0, None, None, None, None, [], [age], "run-p"),
        (OLD, 0, "teams", 70, 0.7, 10, 0.7, 0.5, 0.7, 0.9, [q1], [plan], "run-o"),
        (OLD, 1, "solo", 30, 0.3, 5, 0.6, 0.5, 0.6, 0.8, [], [], "run-o"),
    ]


@pytest.fixture
def setup(spark, tmp_path):
    from deepseg.pipeline.profiles import PROFILE_SCHEMA
    from deepseg.pipeline.tables import write_table

    def make(names=None, rows=True):
        cfg = load_config(CONF / "local.yaml", {"data": {"root": str(tmp_path / "data")},
                                                "segments": {"names": names}})
        if rows:
            write_table(spark.createDataFrame(_rows(), PROFILE_SCHEMA), cfg.data.table_path("segment_profiles"))
        folder = Path(cfg.data.models_path) / NEW
        folder.mkdir(parents=True, exist_ok=True)
        history = [{"iteration": 1, "agreement": 0.9, "tsvm_objective": 0.3, "mse": 0.01, "kl": 0.02,
                    "class_shares": [80, 20]}]
        trained = TrainedModel(NEW, str(folder), SimpleNamespace(history=history),
                               {"trained_at": "2025-02-01T00:00:00", "run_id": "run-t", "n_features": 7,
                                "survey": {"method": "kmeans", "n_segments": 2, "scores": {"2": 0.5}}}, {})
        return cfg, trained

    return make


@pytest.mark.spark
def test_report_in_the_model_folder(spark, setup):
    from deepseg.pipeline.report import report_data, write_model_report

    cfg, trained = setup()
    data = report_data(spark, cfg, trained, drift={"max_feature_psi": 0.05, "max_propensity_psi": 0.01,
                                                    "retrain_reasons": []})
    assert [p["segment"] for p in data["segments"]] == [0, 1]
    assert data["segments"][0] == {
        "segment": 0, "name": "teams", "n_users": 90, "share_users": 1.0, "n_respondents": 12,
        "propensity": {"mean": 0.8, "p10": 0.6, "p50": 0.82, "p90": 0.95},
        "answers": [dict(zip(EFFECT, ("q1", None, "smd", 4.0, 3.0, 1.1)))],
        "attributes": [dict(zip(EFFECT, ("plan", "pro", "lift", 0.4, 0.2, 2.0))),
                       dict(zip(EFFECT, ("age", None, "smd", 44.0, 35.0, 0.8)))]}
    assert data["sizes_by_version"] == {NEW: {0: 90, 1: 0}, OLD: {0: 70, 1: 30}}
    assert data["summary"]["scored users"] == 90 and data["summary"]["survey"] == {"method": "kmeans", "n_segments": 2}
    assert data["history"] == trained.model.history and data["names"] is None

    path = write_model_report(spark, cfg, trained)
    assert path == str(Path(trained.path) / "report.html")
    page = Path(path).read_text()
    assert "Segment 0: teams" in page and "Segment 1: solo" in page and OLD in page
    assert "No scored users in this segment" in page and "No survey answers for this segment" in page


@pytest.mark.spark
def test_configured_names_and_bad_inputs(spark, setup, tmp_path):
    from deepseg.pipeline.report import write_model_report

    cfg, trained = setup(names={0: "crews", 1: "loners"})
    assert "Segment 1: loners" in Path(write_model_report(spark, cfg, trained)).read_text()
    Path(trained.path, "report.html").unlink()

    cfg, trained = setup(names={0: "crews"})
    with pytest.raises(InputError, match=r"segments.names names segments \[0\] but model .* has segments 0..1"):
        write_model_report(spark, cfg, trained)
    cfg, other = setup()
    other.version = "20250301T000000-cccccc"
    with pytest.raises(InputError, match=r"table 'segment_profiles' .* has no rows for model "
                                         r"'20250301T000000-cccccc': run `deepseg profiles` first"):
        write_model_report(spark, cfg, other)
    assert list(Path(trained.path).iterdir()) == []


@pytest.mark.spark
def test_missing_table(spark, setup):
    from deepseg.pipeline.report import write_model_report

    cfg, trained = setup(rows=False)
    with pytest.raises(InputError, match=r"table 'segment_profiles' .* does not exist: run `deepseg profiles`"):
        write_model_report(spark, cfg, trained)


def test_report_logged_to_the_model_versions_mlflow_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from deepseg.pipeline.report import log_report_to_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    report = tmp_path / "report.html"
    report.write_text("<!doctype html>")
    with mlflow.start_run(run_name=NEW) as run:
        mlflow.set_tags({"model_version": NEW})
    assert log_report_to_mlflow(str(report), NEW) == run.info.run_id
    other = log_report_to_mlflow(str(report), OLD)  # no run of that version: a run of its own
    assert other not in (None, run.info.run_id)
    client = mlflow.MlflowClient()
    for run_id in (run.info.run_id, other):
        assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/report.html"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # no server: a warning, no error
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    assert log_report_to_mlflow(str(report), NEW) is None
