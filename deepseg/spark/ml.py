"""Deep Segmentation as a pyspark.ml Estimator / Model pair (Pipelines, persistence).

Parameters mirror :class:`deepseg.DeepSegmentationClassifier` in camelCase, with its defaults
(taken from :class:`~deepseg.core.loop.DeepSegConfig`) and its validation rules. Labels follow
Spark ML's convention: class indices 0..k-1 in `labelCol`; a null (or NaN) label marks an
unlabelled user.
"""

from __future__ import annotations

from pathlib import Path

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasFeaturesCol,
    HasLabelCol,
    HasPredictionCol,
    HasProbabilityCol,
    HasSeed,
)
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)
from sklearn.utils._param_validation import make_constraint

from deepseg.classifier import DeepSegmentationClassifier
from deepseg.core.embed import NetConfig
from deepseg.core.loop import DeepSegConfig, DeepSegResult
from deepseg.core.train import TrainConfig
from deepseg.spark.backend import DEFAULT_BATCH_ROWS, score_dataframe, train_on_spark
from deepseg.spark.persistence import load_model, save_model

__all__ = ["DeepSegmentation", "DeepSegmentationModel"]

_N, _T, _D = NetConfig(), TrainConfig(), DeepSegConfig()
_S = _D.tsvm

#: Spark param name -> DeepSegmentationClassifier parameter (for the validation rules).
_SKLEARN_NAME = {
    "hiddenSize": "hidden_size", "embeddingSize": "embedding_size", "dropout": "dropout",
    "l2": "l2", "labelSmoothing": "label_smoothing", "learningRate": "learning_rate",
    "batchSize": "batch_size", "supervisedEpochs": "supervised_epochs", "numIter": "n_iter",
    "retrainLrFactor": "retrain_lr_factor", "unlabeledEpochs": "unlabeled_epochs",
    "labeledEpochs": "labeled_epochs", "unlabeledBatchSize": "unlabeled_batch_size",
    "unlabeledRowsPerEpoch": "unlabeled_rows_per_epoch",
    "unlabeledWeight": "unlabeled_weight", "unlabeledLoss": "unlabeled_loss", "mixupAlpha": "mixup_alpha",
    "inputNoise": "input_noise",
    "pseudoLabels": "pseudo_labels", "C": "C", "CUnlabeled": "C_unlabeled",
    "rampS": "ramp_s", "tsvmMaxIter": "tsvm_max_iter", "tsvmSampleSize": "tsvm_sample_size",
    "tsvmCalibrationFolds": "tsvm_calibration_folds", "emaDecay": "ema_decay",
}
_CONSTRAINTS = DeepSegmentationClassifier._parameter_constraints


def _param(name: str, doc: str, converter) -> Param:
    return Param(Params._dummy(), name, doc, typeConverter=converter)


_int, _float = TypeConverters.toInt, TypeConverters.toFloat


def _float_or_auto(value):
    return value if value == "auto" else _float(value)


def _int_or_auto(value):
    return value if value == "auto" else _int(value)


class _DeepSegmentationParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol, HasSeed):
    """Params shared by DeepSegmentation and DeepSegmentationModel."""

    embeddingCol = _param("embeddingCol", "output column for the embedding f(x) (array<float>); "
                          "not set: no embedding column", TypeConverters.toString)
    hiddenSize = _param("hiddenSize", "width of f's first tanh layer", _int)
    embeddingSize = _param("embeddingSize", "width of the embedding f(x)", _int)
    dropout = _param("dropout", "dropout rate after f's batch normalisation", _float)
    l2 = _param("l2", "Tikhonov penalties of f's two layers and of g (3 values)", TypeConverters.toListFloat)
    labelSmoothing = _param("labelSmoothing", "epsilon of the smoothed one-hot targets", _float)
    learningRate = _param("learningRate", "Adam learning rate of the supervised start", _float)
    batchSize = _param("batchSize", "labelled mini-batch size", _int)
    supervisedEpochs = _param("supervisedEpochs", "epochs of the supervised start", _int)
    numIter = _param("numIter", "iterations of Algorithm 1 (0: the supervised network alone)", _int)
    retrainLrFactor = _param("retrainLrFactor", "learning-rate factor while iterating", _float)
    unlabeledEpochs = _param("unlabeledEpochs", "epochs of the step on unlabelled users; 'auto': 20 up to "
                             "10 labelled users per class, 30 above", _int_or_auto)
    labeledEpochs = _param("labeledEpochs", "epochs of the KL step on labelled users", _int)
    unlabeledBatchSize = _param("unlabeledBatchSize", "unlabelled mini-batch size", _int)
    unlabeledRowsPerEpoch = _param("unlabeledRowsPerEpoch", "train each unlabelled epoch on a fresh random "
                                   "subset of about this many unlabelled users (None: all)", _int)
    unlabeledWeight = _param("unlabeledWeight", "weight of the loss on unlabelled users", _float)
    unlabeledLoss = _param("unlabeledLoss", "loss on unlabelled users: 'weighted_ce' (certainty-weighted "
                           "cross-entropy to the hard pseudo-label) or 'mse' (the patent's)", TypeConverters.toString)
    mixupAlpha = _param("mixupAlpha", "mixup Beta(alpha, alpha) of the unlabelled batches (0: off)", _float)
    inputNoise = _param("inputNoise", "std of the Gaussian noise added to the unlabelled batches' "
                        "features (0: off), or 'auto' (0.2, less above 10 labelled users per class)",
                        _float_or_auto)
    pseudoLabels = _param("pseudoLabels", "pseudo-label probabilities: 'tsvm_and_net' (TSVM times g∘f, "
                          "renormalised) or 'tsvm' (the patent's)", TypeConverters.toString)
    C = _param("C", "TSVM weight of the mean labelled hinge loss", _float)
    CUnlabeled = _param("CUnlabeled", "TSVM weight C* of the mean unlabelled hinge loss", _float)
    rampS = _param("rampS", "ramp point s of the CCCP decomposition", _float)
    tsvmMaxIter = _param("tsvmMaxIter", "CCCP rounds per TSVM", _int)
    tsvmSampleSize = _param("tsvmSampleSize", "fit the TSVMs on a seeded sample of at most this many "
                            "unlabelled users (None: all)", _int)
    tsvmCalibrationFolds = _param("tsvmCalibrationFolds", "folds for the TSVM probability temperature "
                                  "(< 2: fitted in-sample)", _int)
    emaDecay = _param("emaDecay", "decay rho of the moving average over iterations", _float)
    batchRows = _param("batchRows", "users per bucket streamed to the driver while retraining "
                       "(bounds driver memory)", _int)

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(
            seed=0,
            hiddenSize=_N.hidden_size, embeddingSize=_N.embedding_size, dropout=_N.dropout, l2=list(_N.l2),
            labelSmoothing=_D.label_smoothing, learningRate=_T.learning_rate, batchSize=_T.batch_size,
            supervisedEpochs=_T.supervised_epochs, numIter=_D.n_iter, retrainLrFactor=_T.retrain_lr_factor,
            unlabeledEpochs=_T.unlabeled_epochs, labeledEpochs=_T.labeled_epochs,
            unlabeledBatchSize=_T.unlabeled_batch_size, unlabeledRowsPerEpoch=_T.unlabeled_rows_per_epoch,
            unlabeledWeight=_T.unlabeled_weight, unlabeledLoss=_T.unlabeled_loss, mixupAlpha=_T.mixup_alpha,
            inputNoise=_T.input_noise,
            pseudoLabels=_D.pseudo_labels,
            C=_S.C, CUnlabeled=_S.C_unlabeled, rampS=_S.ramp_s, tsvmMaxIter=_S.max_iter,
            tsvmSampleSize=_D.tsvm_sample_size, tsvmCalibrationFolds=_D.tsvm_calibration_folds,
            emaDecay=_D.ema_decay, batchRows=DEFAULT_BATCH_ROWS,
        )

    def _set(self, **kwargs):
        super()._set(**kwargs)
        for name in kwargs:
            self._check(name, self._paramMap[getattr(self, name)])
        return self

    def _check(self, name: str, value) -> None:
        """Raise ValueError naming the param if `value` breaks the classifier's rule for it."""
        owner = type(self).__name__
        if name == "batchRows" and value is not None and value < 1:
            raise ValueError(f"Param 'batchRows' of {owner} must be >= 1; got {value!r}")
        if name == "l2" and value is not None and len(value) != 3:
            raise ValueError(f"Param 'l2' of {owner} must have 3 values; got {value!r}")
        rules = _CONSTRAINTS.get(_SKLEARN_NAME.get(name, ""), None)
        if not rules:
            return
        constraints = [make_constraint(c) for c in rules]
        if not any(c.is_satisfied_by(value) for c in constraints):
            allowed = " or ".join(str(c) for c in constraints)
            raise ValueError(f"Param '{name}' of {owner} must be {allowed}; got {value!r}")

    def _validate_params(self) -> None:
        """Check every param (Params.set and loaded metadata bypass `_set`)."""
        for name in _ALGORITHM_PARAMS:
            self._check(name, self.getOrDefault(getattr(self, name)))

    def toConfig(self) -> DeepSegConfig:
        """The params as the core's DeepSegConfig (built by DeepSegmentationClassifier.to_config)."""
        self._validate_params()
        values = {sk: self.getOrDefault(getattr(self, name)) for name, sk in _SKLEARN_NAME.items()}
        values["l2"] = tuple(values["l2"])
        return DeepSegmentationClassifier(**values).to_config()

    def getEmbeddingCol(self) -> str:
        return self.getOrDefault(self.embeddingCol)


def _add_accessors(cls, names):
    """getX / setX for each param (setters validate and return self)."""
    for name in names:
        cap = name[0].upper() + name[1:]

        def getter(self, _name=name):
            return self.getOrDefault(getattr(self, _name))

        def setter(self, value, _name=name):
            return self._set(**{_name: value})

        getter.__name__, setter.__name__ = f"get{cap}", f"set{cap}"
        getter.__doc__ = f"The value of {name}."
        setter.__doc__ = f"Set {name}; returns self."
        if not hasattr(cls, getter.__name__):
            setattr(cls, getter.__name__, getter)
        setattr(cls, setter.__name__, setter)


_ALGORITHM_PARAMS = list(_SKLEARN_NAME) + ["batchRows"]
_COLUMN_PARAMS = ["featuresCol", "labelCol", "predictionCol", "probabilityCol", "embeddingCol", "seed"]
_add_accessors(_DeepSegmentationParams, _ALGORITHM_PARAMS + _COLUMN_PARAMS)


class DeepSegmentation(Estimator, _DeepSegmentationParams, DefaultParamsReadable, DefaultParamsWritable):
    """Deep Segmentation (semi-supervised user segmentation) as a Spark ML Estimator.

    Rows with a class index in `labelCol` are the labelled users (collected to the driver);
    rows with a null label are the unlabelled users, which stay distributed. `featuresCol` is
    array<float>, array<double> or a Vector.

    >>> from pyspark.ml import Pipeline, PipelineModel
    >>> from pyspark.ml.feature import VectorAssembler
    >>> pipeline = Pipeline(stages=[
    ...     VectorAssembler(inputCols=["x0", "x1"], outputCol="features"),
    ...     DeepSegmentation(numIter=2, seed=0)])
    >>> model = pipeline.fit(df)                       # doctest: +SKIP
    >>> model.write().overwrite().save("/tmp/segments")  # doctest: +SKIP
    >>> same = PipelineModel.load("/tmp/segments")       # doctest: +SKIP
    >>> same.transform(df).select("probability", "prediction")  # == model.transform(df)  # doctest: +SKIP
    """

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction",
                 probabilityCol="probability", embeddingCol=None, seed=None, hiddenSize=None,
                 embeddingSize=None, dropout=None, l2=None, labelSmoothing=None, learningRate=None,
                 batchSize=None, supervisedEpochs=None, numIter=None, retrainLrFactor=None,
                 unlabeledEpochs=None, labeledEpochs=None, unlabeledBatchSize=None,
                 unlabeledRowsPerEpoch=None, unlabeledWeight=None, unlabeledLoss=None, mixupAlpha=None,
                 inputNoise=None, pseudoLabels=None, C=None, CUnlabeled=None, rampS=None, tsvmMaxIter=None,
                 tsvmSampleSize=None, tsvmCalibrationFolds=None, emaDecay=None, batchRows=None):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol="features", labelCol="label", predictionCol="prediction",
                  probabilityCol="probability", embeddingCol=None, seed=None, hiddenSize=None,
                  embeddingSize=None, dropout=None, l2=None, labelSmoothing=None, learningRate=None,
                  batchSize=None, supervisedEpochs=None, numIter=None, retrainLrFactor=None,
                  unlabeledEpochs=None, labeledEpochs=None, unlabeledBatchSize=None,
                  unlabeledRowsPerEpoch=None, unlabeledWeight=None, unlabeledLoss=None, mixupAlpha=None,
                  inputNoise=None, pseudoLabels=None, C=None, CUnlabeled=None, rampS=None, tsvmMaxIter=None,
                  tsvmSampleSize=None, tsvmCalibrationFolds=None, emaDecay=None, batchRows=None):
        """Set params by keyword; None leaves a param at its default. Returns self."""
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)

    def _fit(self, dataset) -> "DeepSegmentationModel":
        config = self.toConfig()
        _check_dataset(dataset, self.getFeaturesCol(), self.getLabelCol(), type(self).__name__)
        result = train_on_spark(
            dataset, features_col=self.getFeaturesCol(), label_col=self.getLabelCol(), config=config,
            seed=int(self.getSeed()) % 2**32, batch_rows=self.getOrDefault(self.batchRows))
        return self._copyValues(DeepSegmentationModel(result, config=config))


def _check_dataset(dataset, features_col: str, label_col: str, owner: str) -> None:
    """One pass over the training rows before fitting: refuse null, NaN or ±inf features (the
    networks and TSVMs would silently turn them into NaN propensities); warn when no row is
    unlabelled (the fit still runs: the supervised network, retrained on the labelled rows, as
    DeepSegmentationClassifier does). The labels themselves (numeric, >= 2 classes) are checked
    when the labelled rows are collected."""
    import warnings

    from pyspark.sql import functions as F

    from deepseg.spark.backend import _is_labelled, float_array_column

    if label_col not in dataset.columns:
        raise ValueError(f"Param 'labelCol' of {owner}: column {label_col!r} not in the DataFrame's "
                         f"columns {dataset.columns}")
    arr = float_array_column(dataset, features_col)
    bad = F.exists(arr, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == F.lit(float("inf"))))
    unlabelled = ~F.coalesce(_is_labelled(label_col, dataset.schema[label_col].dataType), F.lit(False))
    n_null, n_bad, n_unlabelled = dataset.agg(
        F.count(F.when(arr.isNull(), 1)), F.count(F.when(bad, 1)), F.count(F.when(unlabelled, 1))).first()
    if n_null or n_bad:
        what = f"{n_null} null row(s)" if n_null else f"{n_bad} row(s) with null, NaN or ±inf values"
        raise ValueError(f"Param 'featuresCol' of {owner}: column {features_col!r} has {what}; features "
                         f"must be finite (impute them first, e.g. with pyspark.ml.feature.Imputer)")
    if n_unlabelled == 0:
        warnings.warn(f"{owner}: no unlabelled row (column {label_col!r} is set on every row), so "
                      f"nothing is learnt from unlabelled data: the supervised network, retrained on "
                      f"the labelled rows", UserWarning, stacklevel=3)


class DeepSegmentationModel(Model, _DeepSegmentationParams, MLReadable, MLWritable):
    """A fitted Deep Segmentation model: `transform` appends `probabilityCol` (array<float>, the
    EMA propensities), `predictionCol` (int, the segment) and, if set, `embeddingCol`."""

    def __init__(self, result: DeepSegResult | None = None, config: DeepSegConfig | None = None):
        super().__init__()
        self._result, self._config = result, config

    @property
    def result(self) -> DeepSegResult:
        """The core's fitted model (EMA ensemble, supervised net, last TSVMs, history)."""
        if self._result is None:
            raise ValueError("DeepSegmentationModel has no fitted model")
        return self._result

    @property
    def numClasses(self) -> int:
        return self.result.supervised.g.dense.out_features

    @property
    def numFeatures(self) -> int:
        return self.result.supervised.f.dense1.in_features

    @property
    def history(self) -> list[dict]:
        return self.result.history

    def _transform(self, dataset):
        self._validate_params()
        embedding = self.getEmbeddingCol() if self.isDefined(self.embeddingCol) else None
        return score_dataframe(dataset, self.result, self.getFeaturesCol(),
                               probability_col=self.getProbabilityCol(),
                               prediction_col=self.getPredictionCol(), embedding_col=embedding or None)

    def write(self) -> MLWriter:
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ModelReader(cls)


# ---------------------------------------------------------------------------------------------
# Persistence: params as Spark ML metadata, the networks and TSVMs under <path>/model


_ARTEFACTS = "model"


def _local_dir(sc, path: str) -> Path:
    """`path` qualified by Hadoop (relative paths, default filesystem) as a local directory."""
    jpath = sc._jvm.org.apache.hadoop.fs.Path(path)
    qualified = jpath.getFileSystem(sc._jsc.hadoopConfiguration()).makeQualified(jpath).toUri()
    if qualified.getScheme() not in (None, "file"):
        raise ValueError(f"DeepSegmentationModel saves to local paths only for now; got {qualified.toString()}")
    return Path(qualified.getPath())


class _ModelWriter(MLWriter):
    def __init__(self, instance: DeepSegmentationModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc)
        save_model(self.instance.result, _local_dir(self.sc, path) / _ARTEFACTS,
                   metadata={"uid": self.instance.uid}, config=self.instance._config,
                   overwrite=self.shouldOverwrite)


class _ModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> DeepSegmentationModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        result, _ = load_model(_local_dir(self.sc, path) / _ARTEFACTS)
        model = self.cls(result, config=result.config)
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model
