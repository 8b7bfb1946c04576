"""Deep Segmentation as a pyspark.ml Estimator / Model pair (Pipelines, persistence).

Its Params are the parameters of :mod:`deepseg.core.params` in camelCase (``n_iter`` is
``numIter``), with the same defaults and validation rules, plus Spark's column Params, ``seed``
and ``batchRows``. Labels follow Spark ML's convention: class indices 0..k-1 in `labelCol`; a
null (or NaN) label marks an unlabelled user.
"""

from __future__ import annotations

import difflib
import inspect
from functools import partial

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

from deepseg.core.loop import DeepSegConfig, DeepSegResult
from deepseg.core.lsa import SparseReduction
from deepseg.core.params import PARAMS
from deepseg.core.params import Param as Spec
from deepseg.locations import join
from deepseg.spark.backend import DEFAULT_BATCH_ROWS, train_on_spark
from deepseg.spark.lsa import LSA_FEATURES, fit_reduction, reduction_arrays, reduction_from_arrays, with_reduction
from deepseg.spark.persistence import load_model, read_arrays, save_model, write_arrays
from deepseg.spark.scoring import score_dataframe

__all__ = ["DeepSegmentation", "DeepSegmentationModel"]

_SPEC = {p.spark_name: p for p in PARAMS}
_CONVERTERS = {"int": TypeConverters.toInt, "float": TypeConverters.toFloat,
               "str": TypeConverters.toString, "floats": TypeConverters.toListFloat}


def _auto_or(convert, value):
    return value if value == "auto" else convert(value)


def _spark_param(spec: Spec) -> Param:
    convert = _CONVERTERS[spec.kind]
    return Param(Params._dummy(), spec.spark_name, spec.doc,
                 typeConverter=partial(_auto_or, convert) if spec.accepts_auto else convert)


def _spark_value(value):
    return list(value) if isinstance(value, tuple) else value


class _DeepSegmentationParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol, HasSeed):
    """Params shared by DeepSegmentation and DeepSegmentationModel (those of PARAMS are added
    below the class)."""

    embeddingCol = Param(Params._dummy(), "embeddingCol", "output column for the embedding f(x) "
                         "(array<float>); not set: no embedding column", typeConverter=TypeConverters.toString)
    batchRows = Param(Params._dummy(), "batchRows", "users per bucket streamed to the driver while "
                      "retraining (bounds driver memory)", typeConverter=TypeConverters.toInt)
    sparseComponents = Param(Params._dummy(), "sparseComponents", "a Vector column wider than this, its "
                             "rows mostly stored sparse, is reduced to this many dimensions before f (truncated SVD "
                             "of a sample of rows, L2-normalised, centred, one scale: deepseg.spark.lsa); "
                             "0: the vectors are read as dense arrays", typeConverter=TypeConverters.toInt)

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(seed=0, batchRows=DEFAULT_BATCH_ROWS, sparseComponents=256,
                         **{p.spark_name: _spark_value(p.default) for p in PARAMS})

    def _set(self, **kwargs):
        super()._set(**kwargs)
        for name in kwargs:
            self._check(name, self._paramMap[getattr(self, name)])
        return self

    def _check(self, name: str, value) -> None:
        """Raise ValueError naming the param if `value` breaks its rule in PARAMS."""
        owner = type(self).__name__
        if name == "batchRows" and value is not None and value < 1:
            raise ValueError(f"Param 'batchRows' of {owner} must be >= 1; got {value!r}")
        if name == "sparseComponents" and value is not None and value < 0:
            raise ValueError(f"Param 'sparseComponents' of {owner} must be >= 0; got {value!r}")
        if name == "l2" and value is not None and len(value) != 3:
            raise ValueError(f"Param 'l2' of {owner} must have 3 values; got {value!r}")
        if name not in _SPEC:
            return
        constraints = [make_constraint(c) for c in _SPEC[name].constraints]
        if not any(c.is_satisfied_by(value) for c in constraints):
            allowed = " or ".join(str(c) for c in constraints)
            raise ValueError(f"Param '{name}' of {owner} must be {allowed}; got {value!r}")

    def _validate_params(self) -> None:
        """Check every param (Params.set and loaded metadata bypass `_set`)."""
        for name in _ALGORITHM_PARAMS:
            self._check(name, self.getOrDefault(getattr(self, name)))

    def toConfig(self) -> DeepSegConfig:
        """The params as the core's DeepSegConfig."""
        self._validate_params()
        return DeepSegConfig.from_params({p.name: self.getOrDefault(getattr(self, p.spark_name)) for p in PARAMS})

    def getEmbeddingCol(self) -> str:
        return self.getOrDefault(self.embeddingCol)


for _spec in PARAMS:
    setattr(_DeepSegmentationParams, _spec.spark_name, _spark_param(_spec))


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


_ALGORITHM_PARAMS = [p.spark_name for p in PARAMS] + ["batchRows", "sparseComponents"]
_COLUMN_PARAMS = ["featuresCol", "labelCol", "predictionCol", "probabilityCol", "embeddingCol", "seed"]
_add_accessors(_DeepSegmentationParams, _ALGORITHM_PARAMS + _COLUMN_PARAMS)

#: The keyword arguments of DeepSegmentation and its setParams (None: leave at the default).
_SIGNATURE = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in (
        ("featuresCol", "features"), ("labelCol", "label"), ("predictionCol", "prediction"),
        ("probabilityCol", "probability"))]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
       for name in ["embeddingCol", "seed", *_ALGORITHM_PARAMS]])


class DeepSegmentation(Estimator, _DeepSegmentationParams, DefaultParamsReadable, DefaultParamsWritable):
    """Deep Segmentation (semi-supervised user segmentation) as a Spark ML Estimator.

    Rows with a class index in `labelCol` are the labelled users (collected to the driver);
    rows with a null label are the unlabelled users, which stay distributed. `featuresCol` is
    array<float>, array<double> or a Vector; sparse Vectors wider than `sparseComponents` are
    reduced first (:mod:`deepseg.spark.lsa`), as the scikit-learn estimator reduces scipy.sparse.

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
    def __init__(self, **kwargs):
        super().__init__()
        self.setParams(**self._input_kwargs)

    __init__.__signature__ = _SIGNATURE

    @keyword_only
    def setParams(self, **kwargs):
        """Set params by keyword; None leaves a param at its default. Returns self."""
        for name in kwargs:
            if name not in _SIGNATURE.parameters or name == "self":
                close = difflib.get_close_matches(name, list(_SIGNATURE.parameters)[1:], n=1)
                raise TypeError(f"{type(self).__name__} has no param {name!r}"
                                + (f" (did you mean {close[0]!r}?)" if close else ""))
        return self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})

    setParams.__signature__ = _SIGNATURE

    def _fit(self, dataset) -> "DeepSegmentationModel":
        config = self.toConfig()
        features, seed = self.getFeaturesCol(), int(self.getSeed()) % 2**32
        _check_dataset(dataset, features, self.getLabelCol(), type(self).__name__)
        k = self.getOrDefault(self.sparseComponents)
        reduction = fit_reduction(dataset, features, k, seed) if k else None
        if reduction is not None:
            dataset, features = with_reduction(dataset, features, reduction), LSA_FEATURES
        result = train_on_spark(dataset, features_col=features, label_col=self.getLabelCol(), config=config,
                                seed=seed, batch_rows=self.getOrDefault(self.batchRows))
        return self._copyValues(DeepSegmentationModel(result, config=config, reduction=reduction))


def _check_dataset(dataset, features_col: str, label_col: str, owner: str) -> None:
    """One pass over the training rows before fitting: refuse null, NaN or ±inf features (the
    networks and TSVMs would silently turn them into NaN propensities); warn when no row is
    unlabelled (the fit still runs: the supervised network, retrained on the labelled rows, as
    DeepSegmentationClassifier does). The labels themselves (numeric, >= 2 classes) are checked
    when the labelled rows are collected."""
    import warnings

    from pyspark.sql import functions as F

    from pyspark.ml.linalg import VectorUDT

    from deepseg.spark.arrow import float_array_column, is_labeled, vector_check_counts

    if label_col not in dataset.columns:
        raise ValueError(f"Param 'labelCol' of {owner}: column {label_col!r} not in the DataFrame's "
                         f"columns {dataset.columns}")
    unlabeled = ~F.coalesce(is_labeled(label_col, dataset.schema[label_col].dataType), F.lit(False))
    if isinstance(dataset.schema[features_col].dataType, VectorUDT):
        n_null, n_bad, n_unlabeled = vector_check_counts(dataset, features_col, unlabeled)
    else:
        arr = float_array_column(dataset, features_col)
        bad = F.exists(arr, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == F.lit(float("inf"))))
        n_null, n_bad, n_unlabeled = dataset.agg(
            F.count(F.when(arr.isNull(), 1)), F.count(F.when(bad, 1)), F.count(F.when(unlabeled, 1))).first()
    if n_null or n_bad:
        what = f"{n_null} null row(s)" if n_null else f"{n_bad} row(s) with null, NaN or ±inf values"
        raise ValueError(f"Param 'featuresCol' of {owner}: column {features_col!r} has {what}; features "
                         f"must be finite (impute them first, e.g. with pyspark.ml.feature.Imputer)")
    if n_unlabeled == 0:
        warnings.warn(f"{owner}: no unlabelled row (column {label_col!r} is set on every row), so "
                      f"nothing is learnt from unlabelled data: the supervised network, retrained on "
                      f"the labelled rows", UserWarning, stacklevel=3)


class DeepSegmentationModel(Model, _DeepSegmentationParams, MLReadable, MLWritable):
    """A fitted Deep Segmentation model: `transform` appends `probabilityCol` (array<float>, the
    EMA propensities), `predictionCol` (int, the segment) and, if set, `embeddingCol`."""

    def __init__(self, result: DeepSegResult | None = None, config: DeepSegConfig | None = None,
                 reduction: SparseReduction | None = None):
        super().__init__()
        self._result, self._config, self.reduction = result, config, reduction

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
        """The width of the features the model reads (a sparse Vector's size, before its reduction)."""
        if self.reduction is not None:
            return self.reduction.components.shape[1]
        return self.result.supervised.f.dense1.in_features

    @property
    def history(self) -> list[dict]:
        return self.result.history

    def _transform(self, dataset):
        self._validate_params()
        embedding = self.getEmbeddingCol() if self.isDefined(self.embeddingCol) else None
        features = self.getFeaturesCol()
        if self.reduction is not None:
            dataset, features = with_reduction(dataset, features, self.reduction), LSA_FEATURES
        scored = score_dataframe(dataset, self.result, features, probability_col=self.getProbabilityCol(),
                                 prediction_col=self.getPredictionCol(), embedding_col=embedding or None)
        return scored.drop(LSA_FEATURES)

    def write(self) -> MLWriter:
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ModelReader(cls)


# ---------------------------------------------------------------------------------------------
# Persistence: params as Spark ML metadata, the networks and TSVMs under <path>/model


_ARTEFACTS = "model"
_LSA_FILE = "lsa.npz"


def _artefacts(sc, path: str) -> str:
    """``<path>/model``, `path` qualified by Hadoop (relative paths, the default file system) as
    a local path or a URI that :mod:`deepseg.storage` opens."""
    jpath = sc._jvm.org.apache.hadoop.fs.Path(path)
    qualified = jpath.getFileSystem(sc._jsc.hadoopConfiguration()).makeQualified(jpath).toUri()
    location = qualified.getPath() if qualified.getScheme() in (None, "file") else qualified.toString()
    return join(location, _ARTEFACTS)


class _ModelWriter(MLWriter):
    def __init__(self, instance: DeepSegmentationModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc)
        artefacts, metadata = _artefacts(self.sc, path), {"uid": self.instance.uid}
        if self.instance.reduction is not None:  # before save_model, which writes its JSON last
            write_arrays(join(artefacts, _LSA_FILE), reduction_arrays(self.instance.reduction))
            metadata["lsa"] = _LSA_FILE
        save_model(self.instance.result, artefacts, metadata=metadata, config=self.instance._config,
                   overwrite=self.shouldOverwrite)


class _ModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> DeepSegmentationModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        artefacts = _artefacts(self.sc, path)
        result, saved = load_model(artefacts)
        reduction = (reduction_from_arrays(read_arrays(join(artefacts, saved["lsa"]))) if saved.get("lsa")
                     else None)
        model = self.cls(result, config=result.config, reduction=reduction)
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model
