"""The run report of a model version, gathered from its tables (issue 21; the page itself is
:mod:`deepseg.report`).

:func:`report_data` reads the version's rows of ``segment_profiles`` (what each segment is),
every version's segment sizes (the same table), and the model's training history and metadata;
:func:`write_model_report` writes them as ``report.html`` into the model version folder and logs
it to MLflow when mlflow is installed. Train and refresh call it once the version's segments are
profiled; refresh passes its drift figures.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from deepseg.locations import join
from deepseg.pipeline.model_store import TrainedModel
from deepseg.pipeline.runs import utcnow
from deepseg.pipeline.tables import read_table, table_exists
from deepseg.pipeline.tracking import configured_mlflow
from deepseg.pipeline.validate import InputError, describe
from deepseg.report import write_report

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Row, SparkSession

    from deepseg.config import Config

__all__ = ["REPORT_FILE", "log_report_to_mlflow", "report_data", "write_model_report"]

log = logging.getLogger("deepseg")

#: The report's file name in a model version folder.
REPORT_FILE = "report.html"


def write_model_report(spark: "SparkSession", cfg: "Config", trained: TrainedModel, drift: dict | None = None
                       ) -> str:
    """Write ``<model version folder>/report.html`` (atomically) from :func:`report_data`, log it
    to MLflow when mlflow is installed, and return its path."""
    data = report_data(spark, cfg, trained, drift)
    try:
        path = write_report(join(trained.path, REPORT_FILE), data)
    except ValueError as e:  # data the page cannot show: nothing was written
        raise InputError(f"report of model {trained.version!r}: {e}") from None
    log_report_to_mlflow(path, trained.version)
    log.info("report: model %s -> %s", trained.version, path)
    return path


def report_data(spark: "SparkSession", cfg: "Config", trained: TrainedModel, drift: dict | None = None) -> dict:
    """The report's data (see :mod:`deepseg.report`) of model version `trained`: its segments
    from ``segment_profiles``, sizes over every profiled version, history, and `drift` (the
    refresh's figures) when given. Names come from ``segments.names`` when configured, else
    from the profiles.

    Raises :class:`~deepseg.pipeline.validate.InputError` when the version has no profiles, or
    when ``segments.names`` does not name exactly its segments.
    """
    from pyspark.sql import functions as F

    version, where = trained.version, describe(cfg, "segment_profiles")
    if not table_exists(spark, cfg.data.table("segment_profiles")):
        raise InputError(f"{where} does not exist: run `deepseg profiles` for model {version!r} first")
    table = read_table(spark, cfg, "segment_profiles")
    rows = table.filter(F.col("model_version") == version).orderBy("segment").collect()
    if not rows:
        raise InputError(f"{where} has no rows for model {version!r}: run `deepseg profiles` first")
    segments = [_profile(r) for r in rows]
    names = dict(cfg.segments.names) if cfg.segments.names else None
    if names is not None and sorted(names) != list(range(len(segments))):
        raise InputError(f"segments.names names segments {sorted(names)} but model {version!r} has "
                         f"segments 0..{len(segments) - 1}: name each of them once")
    sizes: dict[str, dict[int, int]] = {}
    for r in table.select("model_version", "segment", "n_users").collect():
        sizes.setdefault(r.model_version, {})[r.segment] = r.n_users
    meta = trained.metadata
    survey = {k: v for k, v in (meta.get("survey") or {}).items() if k in ("method", "n_segments", "criterion")}
    summary = {
        "segments": len(segments),
        "scored users": sum(p["n_users"] or 0 for p in segments),
        "survey respondents": sum(p["n_respondents"] or 0 for p in segments),
        "features": meta.get("n_features"),
        "survey": survey or None,
        "training run": meta.get("run_id"),
        "profiles run": rows[0]["run_id"],
        "model folder": trained.path,
    }
    return {
        "title": "deepseg report",
        "model_version": version,
        "trained_at": meta.get("trained_at"),
        "generated_at": utcnow().isoformat(timespec="seconds") + "Z",
        "summary": {k: v for k, v in summary.items() if v is not None},
        "segments": segments,
        "names": names,
        "sizes_by_version": sizes,
        "drift": drift,
        "history": list(getattr(trained.model, "history", None) or []),
    }


def _profile(row: "Row") -> dict:
    """A ``segment_profiles`` row as :func:`~deepseg.pipeline.profiles.segment_profiles` returns it."""
    d = row.asDict(recursive=True)
    return {"segment": d["segment"], "name": d["name"], "n_users": d["n_users"], "share_users": d["share_users"],
            "n_respondents": d["n_respondents"],
            "propensity": {k: d[f"propensity_{k}"] for k in ("mean", "p10", "p50", "p90")},
            "answers": d["answers"] or [], "attributes": d["attributes"] or []}


def log_report_to_mlflow(path: str, version: str) -> str | None:
    """Log the report to the MLflow run of model `version` (tagged ``model_version`` by the train
    job), or to a new run when there is none, if mlflow is installed and configured
    (:mod:`deepseg.pipeline.tracking`).

    As for the train job's logging, a tracking failure is a warning: the report is written.
    Returns the MLflow run id, or None when nothing was logged.
    """
    mlflow = configured_mlflow("report")
    if mlflow is None:
        return None

    try:
        runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.model_version = '{version}'",
                                  order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
        if runs:
            run_id = runs[0].info.run_id
            mlflow.MlflowClient().log_artifact(run_id, path, artifact_path="report")
        else:
            with mlflow.start_run(run_name=f"{version} report", nested=mlflow.active_run() is not None) as run:
                mlflow.set_tags({"model_version": version})
                mlflow.log_artifact(path, artifact_path="report")
            run_id = run.info.run_id
    except Exception as e:  # noqa: BLE001 - any tracking failure; the report itself is written
        log.warning("report: MLflow logging failed for model %s (%s: %.300s); the report is %s",
                    version, type(e).__name__, e, path)
        return None
    log.info("report: logged to MLflow run %s (tracking %s)", run_id, mlflow.get_tracking_uri())
    return run_id
