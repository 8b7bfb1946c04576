"""The synthetic demo: generate users into Delta, run every stage, check against the truth.

The demo's own settings live in ``conf/demo.yaml`` (next to the environment overlay, read by
:func:`load_demo_settings` into :class:`GenerateSettings`), not in the deployment's configuration
(:class:`~deepseg.config.Config`, ``conf/base.yaml``): a production deployment never sees them.

:func:`generate_tables` writes ``users``, ``events`` and ``survey_responses`` (the tables of
``data.tables``) and the generator's ground truth (``generate.truth_table``, under ``data.root``)
from :mod:`deepseg.data.synthetic`, chunk by chunk (each chunk goes to a Parquet staging file;
each table is then written to Delta in one commit). :func:`evaluate` scores the segments against
the ground truth: survey clusters are matched to the true segments with the Hungarian method (on
the respondents), and that matching maps every predicted segment to a true one.
:func:`run_demo` chains it all and writes ``report.html``: the run report of the model version
(:mod:`deepseg.report`) plus a ground-truth section.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

import deepseg.storage as storage
from deepseg.config import (
    Config,
    ConfigError,
    _POSITIVE_INT,
    _build,
    _check_identifier,
    _check_keys,
    _read_yaml,
    load_config,
    merge,
)
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
from deepseg.locations import join
from deepseg.pipeline.tables import read_table, table_exists, write_table

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["GenerateSettings", "demo_settings_path", "evaluate", "generate_tables", "load_demo_settings",
           "run_demo"]

log = logging.getLogger("deepseg")

#: The generator's tables: the pipeline's inputs (``data.tables``) and the ground truth.
INPUTS = ("users", "events", "survey_responses")
TRUTH = "segments_truth"


# ------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True)
class GenerateSettings:
    """The ``generate`` section of ``conf/demo.yaml`` (every key documented there)."""

    n_users: int
    chunk_size: int  # users generated (and held in memory) at a time
    synthetic: Mapping[str, Any]  # SyntheticConfig fields other than n_users
    truth_table: str  # Delta table folder of the ground truth (user_id, segment) under data.root

    _constraints: ClassVar[dict] = {"n_users": _POSITIVE_INT, "chunk_size": _POSITIVE_INT,
                                    "synthetic": [dict], "truth_table": [str]}

    def __post_init__(self):
        _check_identifier(self.truth_table, "generate.truth_table")
        self.synthetic_config()  # validate now

    def synthetic_config(self, n_users: int | None = None):
        """The :class:`~deepseg.data.synthetic.SyntheticConfig` of `n_users` (default ``n_users``)."""
        from deepseg.data.synthetic import SyntheticConfig

        fields = [f.name for f in dataclasses.fields(SyntheticConfig) if f.name != "n_users"]
        _check_keys(self.synthetic, fields, "generate.synthetic")
        try:
            return SyntheticConfig(n_users=n_users or self.n_users, **self.synthetic)
        except ValueError as e:
            raise ConfigError(f"generate.synthetic: {e}") from None

    def truth_path(self, cfg: Config) -> str:
        """Location of the ground-truth table, beside the pipeline's tables."""
        return join(cfg.data.root, self.truth_table)


def demo_settings_path(conf: str | Path) -> Path:
    """``demo.yaml`` in the folder of the environment overlay `conf` (``conf/local.yaml`` ->
    ``conf/demo.yaml``)."""
    return Path(conf).parent / "demo.yaml"


def load_demo_settings(path: str | Path = "conf/demo.yaml", overrides: Mapping | None = None
                       ) -> GenerateSettings:
    """The demo's :class:`GenerateSettings` from `path` (``generate:``) + nested `overrides`.

    A typo or an out-of-range value is a :class:`~deepseg.config.ConfigError` naming the dotted
    key, as for :func:`~deepseg.config.load_config`.
    """
    data = merge(_read_yaml(Path(path)), overrides or {})
    _check_keys(data, ["generate"], "")
    if "generate" not in data:
        raise ConfigError(f"missing key 'generate' ({path} must define it)")
    return _build(GenerateSettings, data["generate"], "generate.")


# ------------------------------------------------------------------ generation
def generate_tables(spark: "SparkSession", cfg: Config, settings: GenerateSettings,
                    n_users: int | None = None) -> dict[str, str]:
    """Write the synthetic input tables and the ground truth (one Delta commit each) for
    `n_users` users (default ``settings.n_users``); returns their locations."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deepseg.data.synthetic import iter_user_chunks

    run_id = new_run_id()
    syn = settings.synthetic_config(n_users)
    staging = join(cfg.data.root, f"_staging_{run_id}")  # on the tables' storage: executors read it
    fs, staged = storage.resolve(staging)
    paths = {**{name: cfg.data.table(name) for name in INPUTS}, TRUTH: settings.truth_path(cfg)}
    try:
        for i, chunk in enumerate(iter_user_chunks(chunk_size=settings.chunk_size, config=syn)):
            for name in paths:
                table = pa.Table.from_pandas(chunk[name], preserve_index=False)
                for j, f in enumerate(table.schema):  # day-resolution timestamps -> DATE
                    if pa.types.is_timestamp(f.type):
                        table = table.set_column(j, f.name, table.column(j).cast(pa.date32()))
                fs.create_dir(f"{staged}/{name}", recursive=True)
                pq.write_table(table, f"{staged}/{name}/part-{i:05d}.parquet", filesystem=fs)
            log.info("generate: chunk %d (%d users)", i, len(chunk["users"]))
        for name, path in paths.items():
            write_table(spark.read.parquet(join(staging, name)), path,
                        {"job": "generate", "run_id": run_id, "n_users": syn.n_users, "seed": syn.seed})
    finally:
        storage.remove_tree(staging)
    return {name: str(table) for name, table in paths.items()}


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


def _truth(spark: "SparkSession", cfg: Config, settings: GenerateSettings) -> "DataFrame":
    """``user_id, true``: the generator's ground truth."""
    from pyspark.sql import functions as F

    path = settings.truth_path(cfg)
    if not table_exists(spark, path):
        raise FileNotFoundError(f"ground truth table ({settings.truth_table}) not found at {path}: "
                                f"run `deepseg generate` first")
    return spark.read.format("delta").load(path).select("user_id", F.col("segment").alias("true"))


def evaluate(spark: "SparkSession", cfg: Config, trained: TrainedModel, settings: GenerateSettings) -> dict:
    """Accuracy of the survey clusters, of deepseg and of its supervised start vs the truth (and,
    for a calibrated answer, of the same answer uncalibrated: ``deepseg_uncalibrated_accuracy``)."""
    import dataclasses

    from pyspark.sql import functions as F

    from deepseg.core.pseudo import EMAEnsemble
    from deepseg.spark.scoring import score_dataframe

    truth = _truth(spark, cfg, settings)
    survey = read_table(spark, cfg, "survey_segments").select("user_id", F.col("segment").alias("survey"))
    survey_conf = _confusion(survey.join(truth, "user_id"), "survey", "true")
    mapping = matching(survey_conf)

    features = read_table(spark, cfg, "features").select("user_id", "features")
    predictions = {
        "deepseg": read_table(spark, cfg, "user_segments").select("user_id", "segment"),
        "supervised": score_dataframe(features, EMAEnsemble([trained.model.supervised], 0.0),
                                      prediction_col="segment").select("user_id", "segment"),
    }
    if trained.model.ensemble.calibration is not None:
        predictions["deepseg_uncalibrated"] = score_dataframe(
            features, dataclasses.replace(trained.model.ensemble, calibration=None),
            prediction_col="segment").select("user_id", "segment")
    out = {"mapping": mapping, "survey_accuracy": _accuracy(survey_conf, mapping)}
    for name, pred in predictions.items():
        labeled = F.col("survey").isNotNull().alias("labelled")
        conf = _confusion(pred.join(truth, "user_id").join(survey, "user_id", "left")
                          .select("segment", "true", labeled), "segment", "true", split="labelled")
        out[f"{name}_accuracy"] = _accuracy(conf.sum(axis=0), mapping)
        out[f"{name}_accuracy_unlabeled"] = _accuracy(conf[0], mapping)
    return out


# ------------------------------------------------------------------ report data
def _report_data(spark: "SparkSession", cfg: Config, trained: TrainedModel, settings: GenerateSettings,
                 mapping: dict[int, int], sample_size: int = 2000) -> dict:
    """The report's ground-truth section: small, driver-side data (aggregates and a sample)."""
    from pyspark.sql import functions as F

    from deepseg.spark.scoring import score_dataframe

    truth = _truth(spark, cfg, settings)
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
    """Generate `n_users` synthetic users under `out`, run every stage, evaluate, report.

    `conf` is the environment overlay (with `overrides` on top); the demo's settings come from
    ``demo.yaml`` in its folder.
    """
    from deepseg.spark.session import get_spark

    cfg = load_config(conf, merge({"data": {"root": str(out)}} if out is not None else {}, overrides or {}))
    settings = load_demo_settings(demo_settings_path(conf),
                                  {"generate": {"n_users": int(n_users)}} if n_users is not None else None)
    seconds: dict[str, float] = {}
    with timed("demo", seconds):
        with timed("spark session", seconds):
            spark = get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))
        with timed("generate", seconds):
            tables = generate_tables(spark, cfg, settings)
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
            metrics = evaluate(spark, cfg, trained, settings)
    summary = {
        "root": cfg.data.root if storage.is_remote(cfg.data.root) else str(Path(cfg.data.root).resolve()),
        "tables": {**tables, **{n: cfg.data.table_path(n) for n in
                                ("features", "survey_invitations", "survey_segments", "user_segments",
                                 "segment_profiles", "audiences")}},
        "model_version": trained.version,
        "model_dir": trained.path,
        "n_users": settings.n_users,
        "survey": {"method": survey.method, "n_segments": survey.n_segments, "criterion": survey.criterion,
                   "scores": survey.scores, "sizes": survey.sizes},
        "scored": scored["scored"],
        "audiences": audiences["sizes"],
        "export_dir": audiences["export_dir"],
        **{k: v for k, v in metrics.items() if k != "mapping"},
        "seconds": seconds,
        "report": None,
    }
    if report:
        with timed("report", seconds):
            summary["report"] = write_demo_report(spark, cfg, trained, settings, metrics, {
                "users generated": summary["n_users"], "data root": summary["root"],
                "audience sizes": summary["audiences"], "seconds": seconds})
    return summary


def write_demo_report(spark: "SparkSession", cfg: Config, trained: TrainedModel, settings: GenerateSettings,
                      metrics: dict, summary: dict) -> str:
    """``<root>/report.html``: the run report of model `trained` (as train writes it into the
    model folder) plus the ground-truth section (`metrics` from :func:`evaluate`)."""
    from deepseg.pipeline.report import report_data
    from deepseg.report import write_report

    data = report_data(spark, cfg, trained)
    truth = _report_data(spark, cfg, trained, settings, metrics["mapping"])
    accuracy = {label: metrics[key] for key, label in (
        ("survey_accuracy", "accuracy of the survey clusters (respondents)"),
        ("deepseg_accuracy", "accuracy of deepseg, all users"),
        ("deepseg_accuracy_unlabeled", "accuracy of deepseg, unlabelled users"),
        ("supervised_accuracy", "accuracy of the supervised-only baseline, all users"),
        ("supervised_accuracy_unlabeled", "accuracy of the supervised-only baseline, unlabelled users"))}
    return write_report(join(cfg.data.root, "report.html"), {
        **data, "title": "deepseg demo report", "summary": {**summary, **data["summary"]},
        "ground_truth": {**truth, "metrics": accuracy}})


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
        "accuracy vs ground truth (clusters matched to true segments, Hungarian):",
        f"  survey clusters (respondents)  {s['survey_accuracy']:.3f}",
        f"  deepseg, all users             {s['deepseg_accuracy']:.3f}  "
        f"(unlabelled users {s['deepseg_accuracy_unlabeled']:.3f})",
        f"  supervised-only baseline       {s['supervised_accuracy']:.3f}  "
        f"(unlabelled users {s['supervised_accuracy_unlabeled']:.3f})",
        "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()),
    ]
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    return "\n".join(lines)
