"""The one list of Deep Segmentation's parameters.

Every front door derives from :data:`PARAMS`: the core's :class:`~deepseg.core.loop.DeepSegConfig`
(its defaults and :meth:`~deepseg.core.loop.DeepSegConfig.from_params`), the scikit-learn
estimator (``__init__`` signature, ``_parameter_constraints``, the Parameters docs), the
``pyspark.ml`` estimator (Params, defaults, ``setParams``) and the YAML ``training:`` section.
Adding a parameter means adding one :class:`Param` here and using it in the core.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from sklearn.utils._param_validation import Interval, StrOptions

__all__ = ["PARAMS", "PATENT_PARAMS", "Param", "default", "keyword_init", "param", "section_defaults"]

_NOT_STATED = object()


@dataclass(frozen=True)
class Param:
    """One parameter: its name everywhere, default, validation rule and doc.

    `field` is its place in ``DeepSegConfig`` (``"train.learning_rate"``, ``"n_iter"``);
    `constraints` are scikit-learn ``_param_validation`` constraints (any one must hold);
    `patent` is the patent's value where deepseg's default differs or the patent states it.
    """

    name: str
    default: Any
    constraints: tuple
    doc: str
    field: str
    spark_name: str = ""
    patent: Any = _NOT_STATED
    invalid: Any = _NOT_STATED  # an example bad value, where the constraints cannot generate one

    def __post_init__(self):
        if not self.spark_name:
            head, *rest = self.name.split("_")
            object.__setattr__(self, "spark_name", head + "".join(w[:1].upper() + w[1:] for w in rest))

    @property
    def kind(self) -> str:
        """"int", "float", "str" or "floats": the type of a value that is not "auto" or None."""
        for c in self.constraints:
            if isinstance(c, Interval):
                return "int" if c.type is Integral else "float"
        return "floats" if tuple in self.constraints else "str"

    @property
    def accepts_auto(self) -> bool:
        return self.kind != "str" and any(isinstance(c, StrOptions) and "auto" in c.options
                                          for c in self.constraints)

    @property
    def optional(self) -> bool:
        return None in self.constraints

    @property
    def type_doc(self) -> str:
        """The numpydoc type: ``int or "auto"``, ``{"mse", "weighted_ce"}``, ..."""
        if self.kind == "str":
            options = next(c.options for c in self.constraints if isinstance(c, StrOptions))
            text = "{" + ", ".join(f'"{o}"' for o in sorted(options)) + "}"
        else:
            text = {"floats": "tuple of 3 floats"}.get(self.kind, self.kind)
        return (text + (' or "auto"' if self.accepts_auto else "") + (" or None" if self.optional else "")
                + (" or array-like of shape (n_classes,)" if "array-like" in self.constraints else ""))


def _positive(kind):
    return (Interval(kind, 0, None, closed="neither"),)


def _non_negative(kind):
    return (Interval(kind, 0, None, closed="left"),)


def _fraction():
    return (Interval(Real, 0, 1, closed="left"),)


_AUTO = StrOptions({"auto"})
_AT_LEAST_ONE_OR_NONE = (Interval(Integral, 1, None, closed="left"), None)

PARAMS: tuple[Param, ...] = (
    # f and g (patent [0104])
    Param("hidden_size", 128, _positive(Integral), "Width of f's first tanh layer.", "net.hidden_size"),
    Param("embedding_size", 32, _positive(Integral), "Width of the embedding f(x) that the TSVMs separate.",
          "net.embedding_size"),
    Param("dropout", 0.5, _fraction(), "Dropout rate after f's batch normalisation.", "net.dropout"),
    Param("l2", (1e-3, 1e-4, 1e-5), (tuple, list),
          "Tikhonov penalties of f's two layers and of g, decreasing through the network.", "net.l2",
          invalid=(1e-3, 1e-4)),
    Param("label_smoothing", 1e-3, _fraction(), "Epsilon of the smoothed one-hot targets h(y).",
          "label_smoothing"),
    # optimisation (patent [0104], [0106])
    Param("learning_rate", 1e-3, _positive(Real), "Adam's learning rate for the supervised start.",
          "train.learning_rate"),
    Param("batch_size", 32, _positive(Integral), "Labelled mini-batch size.", "train.batch_size"),
    Param("supervised_epochs", 200, _non_negative(Integral), "Epochs of the supervised start.",
          "train.supervised_epochs"),
    Param("n_iter", 6, _non_negative(Integral),
          "Iterations of embed, TSVM, retrain (0: the supervised network alone).", "n_iter",
          spark_name="numIter"),
    Param("retrain_lr_factor", 1.0, _positive(Real),
          "Factor on the learning rate while iterating (the patent retrains at a tenth).",
          "train.retrain_lr_factor", patent=0.1),
    Param("unlabeled_epochs", "auto", (*_non_negative(Integral), _AUTO),
          'Epochs of the step on unlabelled users; "auto": 20 up to 10 labelled users per class, 30 above.',
          "train.unlabeled_epochs", patent=10),
    Param("labeled_epochs", 10, _non_negative(Integral), "Epochs of the KL step on labelled users.",
          "train.labeled_epochs"),
    Param("linear_teacher_epochs", 10, _non_negative(Integral),
          "Epochs of the start on a seeded sample of at most 5,000 unlabelled users towards a logistic "
          "regression fitted on the labelled users (then labeled_epochs on them again; deepseg.core.teacher); "
          "0: none, the start learns from the labelled users alone (the patent).",
          "train.linear_teacher_epochs", patent=0),
    Param("unlabeled_batch_size", 256, _positive(Integral), "Unlabelled mini-batch size.",
          "train.unlabeled_batch_size"),
    Param("unlabeled_rows_per_epoch", None, _AT_LEAST_ONE_OR_NONE,
          "Train each unlabelled epoch on a fresh random subset of about this many unlabelled users "
          "(None: all of them); bounds retraining time on millions of users.",
          "train.unlabeled_rows_per_epoch"),
    Param("unlabeled_weight", 1.0, _non_negative(Real), "Weight of the loss on unlabelled users.",
          "train.unlabeled_weight", patent=1.0),
    Param("unlabeled_loss", "weighted_ce", (StrOptions({"mse", "weighted_ce"}),),
          'Loss on unlabelled users: "weighted_ce", cross-entropy to the hard pseudo-label weighted by '
          'its certainty and class share, or "mse" to the pseudo-label probabilities (the patent).',
          "train.unlabeled_loss", patent="mse"),
    Param("mixup_alpha", 2.0, _non_negative(Real),
          "Mixup of the unlabelled batches with weights ~ Beta(alpha, alpha) (0: off, the patent).",
          "train.mixup_alpha", patent=0.0),
    Param("input_noise", "auto", (*_non_negative(Real), _AUTO),
          "Std of Gaussian noise added to the unlabelled users' (standardised) features in every "
          'retraining batch (0: off, the patent); "auto": 0.2 up to 10 labelled users per class, less above. '
          "For scipy.sparse input, added to the stored (non-zero) entries only.",
          "train.input_noise", patent=0.0),
    # pseudo-labels and TSVMs (patent [0105], objective (4))
    Param("pseudo_labels", "tsvm_and_net", (StrOptions({"tsvm", "tsvm_and_net"}),),
          'Pseudo-label probabilities: "tsvm_and_net", the TSVMs\' times g(f(x))\'s, renormalised, or '
          '"tsvm", the TSVMs\' alone (the patent).', "pseudo_labels", patent="tsvm"),
    Param("C", 10.0, _positive(Real), "TSVM weight C of the mean labelled hinge loss.", "tsvm.C",
          spark_name="C", patent=1.0),
    Param("C_unlabeled", 1.0, _non_negative(Real), "TSVM weight C* of the mean unlabelled hinge loss.",
          "tsvm.C_unlabeled", spark_name="CUnlabeled", patent=1.0),
    Param("ramp_s", 0.0, (Interval(Real, None, 1, closed="neither"),),
          "Ramp point s of the CCCP decomposition (0 is objective (4) exactly).", "tsvm.ramp_s"),
    Param("tsvm_max_iter", 30, _positive(Integral), "CCCP rounds per TSVM.", "tsvm.max_iter"),
    Param("tsvm_sample_size", None, _AT_LEAST_ONE_OR_NONE,
          "Fit the TSVMs on a seeded sample of at most this many unlabelled users (None: all).",
          "tsvm_sample_size"),
    Param("tsvm_calibration_folds", 3, _non_negative(Integral),
          "Folds of labelled users for the TSVM probability temperature (< 2: fitted in-sample, sharper).",
          "tsvm_calibration_folds"),
    # class prior and safeguard (not in the patent; issue 19)
    Param("class_prior", "auto", (StrOptions({"auto", "labeled", "uniform"}), "array-like"),
          "Class prior of the unlabelled users: the TSVMs' balance target (mean decision value 2π_k - 1) "
          'and each class\'s total weight in the "weighted_ce" loss. "auto": estimated from the unlabelled '
          "users (EM prior adjustment of the supervised start's probabilities, calibrated out of fold); "
          '"labeled": the labelled shares; "uniform": 1/c; or one weight per class (scikit-learn and YAML).',
          "class_prior", patent="labeled"),
    Param("safeguard", "cv", (StrOptions({"cv", "none"}),),
          '"cv": keep the supervised start instead when labelled-only cross-validation scores it above '
          'Deep Segmentation (decision and scores in the last history entry); "none": always Deep Segmentation.',
          "safeguard", patent="none"),
    Param("safeguard_folds", 3, (Interval(Integral, 2, None, closed="left"),),
          "Folds of labelled users for the safeguard's cross-validation and the prior's calibration.",
          "safeguard_folds"),
    Param("safeguard_unlabeled_size", 1000, _positive(Integral),
          "Unlabelled users (a seeded sample) that each cross-validation fit iterates on; bounds its cost.",
          "safeguard_unlabeled_size"),
    Param("calibration", "cv", (StrOptions({"cv", "none"}),),
          '"cv": a temperature fitted on out-of-fold probabilities of the labelled users, averaged over its '
          "posterior, the network's log-probabilities compressed beyond their out-of-fold span; the answer anchored at "
          "the labelled shares where some segment has at most 10 labelled users, elsewhere a per-class bias where "
          "a likelihood-ratio test at 5% shows one; the answer shifted to the class prior where a chi-squared "
          "test at 5% rejects the labelled shares, or without a test where few labelled users hold as many of "
          "every segment (deepseg.core.calibration; the decisions in the last history entry); "
          '"none": the EMA as it is.', "calibration", patent="none"),
    # the answer (patent [0107])
    Param("ema_decay", 0.5, _fraction(), "Decay rho of the moving average of g(f(x)) over iterations.",
          "ema_decay", patent=0.8),
)

_BY_NAME = {p.name: p for p in PARAMS}

#: The patent's values ([0104]-[0108]) of the settings whose deepseg defaults differ (chosen by
#: labelled-only validation, docs/tuning-log.md), plus two it states that are the same in both:
#: ``DeepSegmentationClassifier(**PATENT_PARAMS)`` is the method as specified.
PATENT_PARAMS: dict[str, Any] = {p.name: p.patent for p in PARAMS if p.patent is not _NOT_STATED}


def param(name: str) -> Param:
    """The :class:`Param` called `name`; KeyError naming the closest parameter otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        close = difflib.get_close_matches(name, _BY_NAME, n=1)
        raise KeyError(f"no parameter {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")) from None


def default(name: str) -> Any:
    return param(name).default


def section_defaults(section: str) -> dict[str, Any]:
    """Defaults of the parameters in one ``DeepSegConfig`` section ("net", "train", "tsvm"),
    keyed by their field name there."""
    prefix = section + "."
    return {p.field[len(prefix):]: p.default for p in PARAMS if p.field.startswith(prefix)}


def numpydoc(width: int = 96) -> str:
    """The Parameters entries of every parameter, in numpydoc form."""
    import textwrap

    return "\n".join(f"{p.name} : {p.type_doc}, default={p.default!r}\n"
                     + textwrap.fill(p.doc, width, initial_indent="    ", subsequent_indent="    ")
                     for p in PARAMS)


def keyword_init(defaults: Mapping[str, Any]):
    """A scikit-learn ``__init__``: keyword-only parameters `defaults`, stored unchanged.

    scikit-learn reads an estimator's parameters from its ``__init__`` signature and needs them
    stored as they came; this writes that signature once instead of a line per parameter. An
    unknown name is a TypeError naming the closest parameter.
    """
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in defaults.items()])

    def __init__(self, **params):
        unknown = [name for name in params if name not in defaults]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(defaults), n=1)
            raise TypeError(f"{type(self).__name__} got an unexpected parameter {unknown[0]!r}"
                            + (f" (did you mean {close[0]!r}?)" if close else ""))
        for name, value in {**defaults, **params}.items():
            setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__
