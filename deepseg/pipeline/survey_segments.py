"""Survey answers -> segments, and the segment definitions that persist across survey waves.

* :func:`fit_segments` -- pyspark.ml KMeans or GaussianMixture on the answers; with no segment
  count given, the count is chosen by silhouette (kmeans) or BIC (gmm), and the scores of every
  candidate are kept. :func:`segment_answers` is the same, as ``user_id, segment`` rows.
* :func:`save_survey_model` / :func:`load_survey_model` -- a fitted clustering as a version
  folder ``<data.models>/survey/<version>/``: ``model/`` (the pyspark.ml model) and
  ``survey.json`` (questions, cluster -> segment map, method, count, sizes; written last: a
  folder without it is incomplete and ignored).
* :func:`assign_segments` -- respondents into a saved model's segments (new respondents of a
  later wave get the numbers the earlier ones got).

Segments are numbered by decreasing size when they are defined (0 is the largest), so their
numbers do not depend on the clustering's arbitrary cluster order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import deepseg.storage as storage
from deepseg.locations import join
from deepseg.pipeline.runs import utcnow
from deepseg.pipeline.validate import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

    from deepseg.config import Config

__all__ = ["SurveyModel", "SurveySegmentation", "assign_segments", "fit_segments", "load_survey_model",
           "save_survey_model", "segment_answers", "survey_model_versions"]

log = logging.getLogger("deepseg")

_ANSWERS = "_answers"
#: Folder of the survey model versions under ``data.models``.
SURVEY_MODELS = "survey"
#: Written last into a survey model version: marks it complete.
SURVEY_FILE = "survey.json"


@dataclass
class SurveySegmentation:
    """How the answers were segmented: the method, the count chosen and every candidate's score;
    which saved survey model defines the segments and whether this run reused it."""

    method: str
    n_segments: int
    criterion: str  # silhouette (higher is better) | bic (lower is better) | fixed
    scores: dict[int, float] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)  # respondents per segment, segment 0 first
    survey_model_version: str | None = None
    reused: bool = False  # True: respondents assigned to a saved model's segments, not refitted


@dataclass
class SurveyModel:
    """A fitted survey clustering: the pyspark.ml model, cluster -> segment, the questions."""

    model: Any  # KMeansModel | GaussianMixtureModel
    relabel: dict[int, int]
    questions: list[str]
    info: SurveySegmentation
    version: str | None = None  # None until saved
    path: str | None = None


def resolve_questions(responses: "DataFrame", questions) -> list[str]:
    """The answer columns: `questions`, or every column of `responses` but ``user_id``."""
    return list(questions or [c for c in responses.columns if c != "user_id"])


def _answers(responses: "DataFrame", questions: list[str]):
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import types as T

    missing = [q for q in questions if q not in responses.columns]
    if missing:
        raise ValueError(f"survey question column(s) {missing} not in survey_responses")
    bad = [q for q in questions if not isinstance(responses.schema[q].dataType, T.NumericType)]
    if bad:
        raise TypeError(f"survey answers must be numeric; {bad} are not")
    # Survey answers are few (thousands): one partition halves the tasks of every clustering job.
    return VectorAssembler(inputCols=questions, outputCol=_ANSWERS, handleInvalid="skip").transform(
        responses.select("user_id", *questions).coalesce(1))


def _fit(answers, method: str, k: int, seed: int, max_iter: int, n_init: int):
    """The best of `n_init` seeded fits: lowest within-cluster cost (kmeans) or highest
    likelihood (gmm). One k-means|| start often ends in a poor local optimum."""
    from pyspark.ml.clustering import GaussianMixture, KMeans

    params = dict(k=k, maxIter=max_iter, featuresCol=_ANSWERS, predictionCol="_cluster")
    if method == "kmeans":
        # On the demo's survey a single start often stopped in a poor optimum, which silhouette
        # then scored low: 5 k-means|| rounds (default 2) and n_init restarts make that rare.
        fits = [KMeans(seed=seed + i, initSteps=5, **params).fit(answers) for i in range(n_init)]
        return min(fits, key=lambda m: m.summary.trainingCost)
    fits = [GaussianMixture(seed=seed + i, **params).fit(answers) for i in range(n_init)]
    return max(fits, key=lambda m: m.summary.logLikelihood)


def _bic(model, n_rows: int, n_dims: int) -> float:
    """BIC of a full-covariance Gaussian mixture: -2 log L + #parameters · log n."""
    k = model.getK()
    n_params = k * (n_dims + n_dims * (n_dims + 1) / 2) + (k - 1)
    return -2.0 * model.summary.logLikelihood + n_params * math.log(n_rows)


def fit_segments(responses: "DataFrame", method: str = "kmeans", n_segments: int | None = None,
                 k_range: tuple[int, int] = (2, 8), seed: int = 0, max_iter: int = 100,
                 questions=None, n_init: int = 1) -> tuple["DataFrame", SurveyModel]:
    """Cluster the survey answers: (``user_id, segment`` per respondent, the fitted model).

    With `n_segments` None every count in `k_range` is fitted and the best is kept: highest
    silhouette for ``kmeans``, lowest BIC for ``gmm``. Each count is fitted from `n_init` seeds
    (``seed``, ``seed + 1``, ...), keeping the best. Rows with a null answer are skipped.
    """
    from pyspark.ml.evaluation import ClusteringEvaluator

    if method not in ("kmeans", "gmm"):
        raise ValueError(f"method must be 'kmeans' or 'gmm', got {method!r}")
    questions = resolve_questions(responses, questions)
    answers = _answers(responses, questions).persist()
    try:
        n_rows = answers.count()
        wanted = [n_segments] if n_segments else list(range(k_range[0], k_range[1] + 1))
        candidates = [k for k in wanted if k < n_rows]
        if not candidates:
            raise ValueError(f"{n_rows} complete survey answer(s): too few for {wanted[0]} segments")
        n_dims = len(answers.first()[_ANSWERS])
        evaluator = ClusteringEvaluator(featuresCol=_ANSWERS, predictionCol="_cluster")
        scores, models = {}, {}
        for k in candidates:
            models[k] = _fit(answers, method, k, seed, max_iter, n_init)
            if len(candidates) > 1:
                scores[k] = (evaluator.evaluate(models[k].transform(answers)) if method == "kmeans"
                             else _bic(models[k], n_rows, n_dims))
        if len(candidates) == 1:
            best, criterion = candidates[0], "fixed"
        elif method == "kmeans":
            best, criterion = max(scores, key=scores.get), "silhouette"
        else:
            best, criterion = min(scores, key=scores.get), "bic"
        clustered = models[best].transform(answers).select("user_id", "_cluster")
        counts = {r["_cluster"]: r["count"] for r in clustered.groupBy("_cluster").count().collect()}
    finally:
        answers.unpersist()
    # Largest cluster -> segment 0; empty clusters get no number, so segments are 0..n-1.
    order = sorted(counts, key=lambda c: (-counts[c], c))
    relabel = {int(c): s for s, c in enumerate(order)}
    info = SurveySegmentation(method, len(order), criterion, scores, [counts[c] for c in order])
    fitted = SurveyModel(models[best], relabel, questions, info)
    return _relabelled(clustered, relabel), fitted


def segment_answers(responses: "DataFrame", method: str = "kmeans", n_segments: int | None = None,
                    k_range: tuple[int, int] = (2, 8), seed: int = 0, max_iter: int = 100,
                    questions=None, n_init: int = 1) -> tuple["DataFrame", SurveySegmentation]:
    """:func:`fit_segments`, returning how it was done instead of the model."""
    segments, fitted = fit_segments(responses, method, n_segments, k_range, seed, max_iter, questions, n_init)
    return segments, fitted.info


def _relabelled(clustered: "DataFrame", relabel: dict[int, int]) -> "DataFrame":
    from pyspark.sql import functions as F

    mapping = F.create_map(*[F.lit(x) for c, s in relabel.items() for x in (c, s)])
    return clustered.select("user_id", mapping[F.col("_cluster")].cast("int").alias("segment"))


def assign_segments(responses: "DataFrame", saved: SurveyModel) -> tuple["DataFrame", list[int]]:
    """(``user_id, segment`` of each respondent in `saved`'s segments, respondents per segment).

    A respondent whose answers fall in a cluster that was empty when the segments were defined
    gets no segment (left out, logged): there is no number for it without redefining them.
    Rows with a null answer are skipped.
    """
    from pyspark.sql import functions as F

    clustered = saved.model.transform(_answers(responses, saved.questions)).select("user_id", "_cluster")
    segments = _relabelled(clustered, saved.relabel).persist()
    counts = {r["segment"]: r["count"] for r in segments.groupBy("segment").count().collect()}
    if counts.get(None):
        log.warning("survey: %d respondent(s) fall in a cluster that had no respondents when survey "
                    "model %s defined the segments; left out (survey.redefine: true defines them anew)",
                    counts[None], saved.version)
    sizes = [int(counts.get(s, 0)) for s in range(saved.info.n_segments)]
    return segments.filter(F.col("segment").isNotNull()), sizes


# ------------------------------------------------------------------ versions on disk
def _root(cfg: "Config") -> str:
    return join(cfg.data.models_path, SURVEY_MODELS)


def survey_model_versions(cfg: "Config") -> list[str]:
    """Complete survey model versions, oldest first (by creation time)."""
    root, found = _root(cfg), []
    for name in storage.list_dir(root):
        if storage.exists(meta := join(root, name, SURVEY_FILE)):
            found.append((json.loads(storage.read_text(meta)).get("created_at", ""), name))
    return [name for _, name in sorted(found)]


def save_survey_model(cfg: "Config", fitted: SurveyModel, run_id: str, **extra) -> SurveyModel:
    """Write `fitted` as a new survey model version (``survey.json`` last); `extra` goes into
    ``survey.json`` too (e.g. the survey_responses version it was fitted on)."""
    created = utcnow()
    version = f"{created:%Y%m%dT%H%M%S}-{run_id[:6]}"
    folder = join(_root(cfg), version)
    if storage.exists(folder):
        raise FileExistsError(f"survey model version {version!r} already exists at {folder}")
    fitted.model.write().overwrite().save(join(folder, "model"))
    info = dataclasses.replace(fitted.info, survey_model_version=version)
    meta = {
        "version": version, "created_at": created.isoformat(), "run_id": run_id,
        "questions": fitted.questions, "relabel": {str(c): s for c, s in fitted.relabel.items()},
        "method": info.method, "n_segments": info.n_segments, "criterion": info.criterion,
        "scores": {str(k): v for k, v in info.scores.items()}, "sizes": info.sizes, **extra,
    }
    storage.write_text(join(folder, SURVEY_FILE), json.dumps(meta, indent=1, default=str))
    log.info("survey: segment definitions saved as survey model %s (%s)", version, folder)
    return dataclasses.replace(fitted, info=info, version=version, path=str(folder))


def load_survey_model(cfg: "Config", version: str | None = None) -> SurveyModel | None:
    """Survey model `version` (default: the latest), or None when there is none."""
    from pyspark.ml.clustering import GaussianMixtureModel, KMeansModel

    versions = survey_model_versions(cfg)
    if not versions:
        return None
    version = version or versions[-1]
    folder = join(_root(cfg), version)
    where = f"survey model {version!r} ({folder})"
    try:
        meta = json.loads(storage.read_text(join(folder, SURVEY_FILE)))
        loader = {"kmeans": KMeansModel, "gmm": GaussianMixtureModel}[meta["method"]]
        model = loader.load(join(folder, "model"))
        relabel = {int(c): int(s) for c, s in meta["relabel"].items()}
        info = SurveySegmentation(meta["method"], int(meta["n_segments"]), meta["criterion"],
                                  {int(k): v for k, v in meta["scores"].items()}, list(meta["sizes"]),
                                  survey_model_version=version, reused=True)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise InputError(f"{where} cannot be loaded ({type(e).__name__}: {e}); "
                         f"set survey.redefine: true to define the segments anew") from None
    return SurveyModel(model, relabel, list(meta["questions"]), info, version, folder)


def check_reusable(saved: SurveyModel, cfg: "Config", questions: list[str]) -> None:
    """Refuse to assign respondents to `saved`'s segments when the configuration asks for other
    ones: other questions, another method or another fixed segment count."""
    s = cfg.survey
    where = f"the saved survey model {saved.version!r} ({saved.path})"
    fix = "; set survey.redefine: true to define the segments anew"
    if questions != saved.questions:
        missing = [q for q in saved.questions if q not in questions]
        extra = [q for q in questions if q not in saved.questions]
        detail = ", ".join(x for x in (f"without {missing}" if missing else "", f"with {extra}" if extra else "")
                           if x) or "in another order"
        raise InputError(f"survey questions {questions} (survey.questions) differ from those of {where}, "
                         f"{saved.questions}: {detail}{fix}")
    if s.method != saved.info.method:
        raise InputError(f"survey.method is {s.method!r} but {where} was fitted with "
                         f"{saved.info.method!r}{fix}")
    if s.n_segments is not None and s.n_segments != saved.info.n_segments:
        raise InputError(f"survey.n_segments is {s.n_segments} but {where} has "
                         f"{saved.info.n_segments} segments{fix}")
