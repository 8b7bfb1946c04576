"""The synthetic demo: generate users into Delta, run every stage, check against the truth.

:func:`generate_tables` writes ``users``, ``events``, ``survey_responses`` and
``segments_truth`` from :mod:`deepseg.data.synthetic`, chunk by chunk (each chunk goes to a
Parquet staging file; each table is then written to Delta in one commit). :func:`evaluate`
scores the segments against the generator's ground truth: survey clusters are matched to the
true segments with the Hungarian method (on the respondents), and that matching maps every
predicted segment to a true one. :func:`run_demo` chains it all and writes ``report.html``.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepseg.config import Config, load_config
from deepseg.pipeline import (
    TrainedModel,
    audiences_job,
    features_job,
    new_run_id,
    score_job,
    survey_job,
    timed,
    train_job,
)
from deepseg.tables import read_table, write_table

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["evaluate", "generate_tables", "run_demo"]

log = logging.getLogger("deepseg")

GENERATED = ("users", "events", "survey_responses", "segments_truth")


def generate_tables(spark: "SparkSession", cfg: Config, n_users: int | None = None) -> dict[str, str]:
    """Write the synthetic input tables (one Delta commit each); returns their locations."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deepseg.data.synthetic import iter_user_chunks

    run_id = new_run_id()
    syn = cfg.generate.synthetic_config(n_users)
    staging = Path(cfg.data.root) / f"_staging_{run_id}"
    try:
        for i, chunk in enumerate(iter_user_chunks(chunk_size=cfg.generate.chunk_size, config=syn)):
            for name in GENERATED:
                table = pa.Table.from_pandas(chunk[name], preserve_index=False)
                for j, f in enumerate(table.schema):  # day-resolution timestamps -> DATE
                    if pa.types.is_timestamp(f.type):
                        table = table.set_column(j, f.name, table.column(j).cast(pa.date32()))
                (staging / name).mkdir(parents=True, exist_ok=True)
                pq.write_table(table, staging / name / f"part-{i:05d}.parquet")
            log.info("generate: chunk %d (%d users)", i, len(chunk["users"]))
        paths = {}
        for name in GENERATED:
            paths[name] = cfg.data.table_path(name)
            write_table(spark.read.parquet(str(staging / name)), paths[name],
                        {"job": "generate", "run_id": run_id, "n_users": syn.n_users, "seed": syn.seed})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


# ------------------------------------------------------------------ evaluation
def _confusion(df: "DataFrame", pred: str, true: str, split: str | None = None) -> np.ndarray:
    """Counts [pred, true] in one pass; with boolean column `split`, [split, pred, true]."""
    rows = df.groupBy(pred, true, *([split] if split else [])).count().collect()
    k = 1 + max(max(r[pred], r[true]) for r in rows)
    m = np.zeros((2, k, k), dtype=np.int64)
    for r in rows:
        m[int(r[split]) if split else 0, r[pred], r[true]] = r["count"]
    return m if split else m[0]


def matching(confusion: np.ndarray) -> dict[int, int]:
    """Cluster -> true segment maximising agreement (Hungarian method)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-confusion)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def _accuracy(confusion: np.ndarray, mapping: dict[int, int]) -> float:
    hits = sum(confusion[p, t] for p, t in mapping.items() if p < len(confusion) and t < confusion.shape[1])
    return float(hits / max(confusion.sum(), 1))


def evaluate(spark: "SparkSession", cfg: Config, trained: TrainedModel) -> dict:
    """Accuracy of the survey clusters, of deepseg and of its supervised start vs the truth."""
    from pyspark.sql import functions as F

    from deepseg.core.pseudo import EMAEnsemble
    from deepseg.spark.backend import score_dataframe

    truth = read_table(spark, cfg, "segments_truth").select("user_id", F.col("segment").alias("true"))
    survey = read_table(spark, cfg, "survey_segments").select("user_id", F.col("segment").alias("survey"))
    survey_conf = _confusion(survey.join(truth, "user_id"), "survey", "true")
    mapping = matching(survey_conf)

    features = read_table(spark, cfg, "features").select("user_id", "features")
    predictions = {
        "deepseg": read_table(spark, cfg, "user_segments").select("user_id", "segment"),
        "supervised": score_dataframe(features, EMAEnsemble([trained.model.supervised], 0.0),
                                      prediction_col="segment").select("user_id", "segment"),
    }
    out = {"mapping": mapping, "survey_accuracy": _accuracy(survey_conf, mapping)}
    for name, pred in predictions.items():
        labelled = F.col("survey").isNotNull().alias("labelled")
        conf = _confusion(pred.join(truth, "user_id").join(survey, "user_id", "left")
                          .select("segment", "true", labelled), "segment", "true", split="labelled")
        out[f"{name}_accuracy"] = _accuracy(conf.sum(axis=0), mapping)
        out[f"{name}_accuracy_unlabelled"] = _accuracy(conf[0], mapping)
    return out


# ------------------------------------------------------------------ report data
def _report_data(spark: "SparkSession", cfg: Config, trained: TrainedModel, mapping: dict[int, int],
                 sample_size: int = 2000) -> dict:
    """Small, driver-side data for the report's plots (aggregates and a sample)."""
    from pyspark.sql import functions as F

    from deepseg.spark.backend import score_dataframe

    truth = read_table(spark, cfg, "segments_truth").select("user_id", F.col("segment").alias("true"))
    segments = read_table(spark, cfg, "user_segments")
    survey = read_table(spark, cfg, "survey_segments").select("user_id", F.col("segment").alias("survey"))
    n_users = segments.count()
    sample = (read_table(spark, cfg, "features").select("user_id", "features")
              .sample(fraction=min(1.0, 1.5 * sample_size / max(n_users, 1)), seed=0).limit(sample_size))
    embedded = (score_dataframe(sample, trained.model, embedding_col="embedding")
                .join(truth, "user_id").select("embedding", "segment", "true").toPandas())

    def sizes(df, col):
        return {r[col]: r["count"] for r in df.groupBy(col).count().collect()}

    confidence = F.array_max("propensities")
    bins = F.least(F.floor(confidence * 10), F.lit(9)).alias("bin")
    calib = {}
    for name, df, label in (("survey labels", segments.join(survey, "user_id"), "survey"),
                            ("ground truth", segments.join(truth, "user_id"), "true")):
        if label == "true":  # predicted segment in the truth's numbering
            df = df.withColumn("segment", F.create_map(
                *[F.lit(x) for p, t in mapping.items() for x in (p, t)])[F.col("segment")])
        rows = (df.groupBy(bins).agg(F.avg(confidence).alias("confidence"),
                                     F.avg((F.col("segment") == F.col(label)).cast("double")).alias("accuracy"),
                                     F.count(F.lit(1)).alias("n"))
                .orderBy("bin").collect())
        calib[name] = [(r.confidence, r.accuracy, r.n) for r in rows]
    return {
        "history": trained.model.history,
        "embedding": np.stack(embedded["embedding"].to_numpy()) if len(embedded) else np.zeros((0, 2)),
        "embedding_segment": embedded["segment"].to_numpy(),
        "embedding_true": embedded["true"].to_numpy(),
        "sizes": {"predicted": sizes(segments, "segment"), "survey": sizes(survey, "survey"),
                  "truth": sizes(truth, "true")},
        "calibration": calib,
        "mapping": mapping,
    }


# ------------------------------------------------------------------ demo
def run_demo(n_users: int | None = None, out: str | None = None, conf: str = "conf/local.yaml",
             overrides: dict | None = None, report: bool = True) -> dict:
    """Generate `n_users` synthetic users under `out`, run every stage, evaluate, report."""
    from deepseg.config import merge
    from deepseg.report import write_report
    from deepseg.spark.session import get_spark

    extra = {}
    if out is not None:
        extra["data"] = {"root": str(out)}
    if n_users is not None:
        extra["generate"] = {"n_users": int(n_users)}
    cfg = load_config(conf, merge(extra, overrides or {}))
    if report and importlib.util.find_spec("matplotlib") is None:
        log.warning("demo: no report.html: matplotlib is not installed (pip install 'deepseg[report]')")
        report = False
    seconds: dict[str, float] = {}
    with timed("demo", seconds):
        with timed("spark session", seconds):
            spark = get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))
        with timed("generate", seconds):
            tables = generate_tables(spark, cfg)
        with timed("features", seconds):
            features_job(spark, cfg)
        with timed("survey", seconds):
            survey = survey_job(spark, cfg)
        with timed("train", seconds):
            trained = train_job(spark, cfg)
        with timed("score", seconds):
            scored = score_job(spark, cfg, trained=trained)
        with timed("audiences", seconds):
            audiences = audiences_job(spark, cfg)
        with timed("evaluate", seconds):
            metrics = evaluate(spark, cfg, trained)
        report_path = None
        if report:
            with timed("report", seconds):
                data = _report_data(spark, cfg, trained, metrics["mapping"])
                report_path = str(Path(cfg.data.root) / "report.html")
    summary = {
        "root": str(Path(cfg.data.root).resolve()),
        "tables": {**tables, **{n: cfg.data.table_path(n) for n in
                                ("features", "survey_invitations", "survey_segments", "user_segments",
                                 "audiences")}},
        "model_version": trained.version,
        "model_dir": trained.path,
        "n_users": cfg.generate.n_users,
        "survey": {"method": survey.method, "n_segments": survey.n_segments, "criterion": survey.criterion,
                   "scores": survey.scores, "sizes": survey.sizes},
        "scored": scored["scored"],
        "audiences": audiences["sizes"],
        "export_dir": audiences["export_dir"],
        **{k: v for k, v in metrics.items() if k != "mapping"},
        "seconds": seconds,
        "report": report_path,
    }
    if report:
        write_report(report_path, summary, data)
    return summary


def format_summary(summary: dict) -> str:
    """The demo summary as plain text lines for the terminal."""
    s = summary
    lines = [
        f"deepseg demo: {s['n_users']} users under {s['root']}",
        "tables:",
        *[f"  {name:<20} {path}" for name, path in s["tables"].items()],
        f"model {s['model_version']} in {s['model_dir']}",
        f"survey: {s['survey']['method']} -> {s['survey']['n_segments']} segments "
        f"({s['survey']['criterion']}: " + ", ".join(
            f"c={k}: {v:.3f}" for k, v in sorted(s["survey"]["scores"].items())) + ")",
        f"survey segment sizes (respondents): {s['survey']['sizes']}",
        f"scored users: {s['scored']}; audience sizes: {s['audiences']} (CSV: {s['export_dir']})",
        f"accuracy vs ground truth (clusters matched to true segments, Hungarian):",
        f"  survey clusters (respondents)  {s['survey_accuracy']:.3f}",
        f"  deepseg, all users             {s['deepseg_accuracy']:.3f}  "
        f"(unlabelled users {s['deepseg_accuracy_unlabelled']:.3f})",
        f"  supervised-only baseline       {s['supervised_accuracy']:.3f}  "
        f"(unlabelled users {s['supervised_accuracy_unlabelled']:.3f})",
        "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()),
    ]
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    return "\n".join(lines)
