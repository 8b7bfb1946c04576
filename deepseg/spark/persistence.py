"""Save and load fitted Deep Segmentation models without pickle.

A model is a directory::

    deepseg-model.json   format version, deepseg version, sizes, configuration, class labels,
                         per-iteration history, the last TSVMs, user metadata
    networks.npz         every network's state dict as plain numeric arrays

``networks.npz`` is read with ``numpy.load(allow_pickle=False)``: loading never unpickles
anything. The JSON is written last, so an interrupted save leaves no loadable model. The
directory is a local path or a URI (``s3a://``, ``abfss://``, ...): files go through
:mod:`deepseg.storage`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

import deepseg.storage as storage
from deepseg.core.calibration import OutputCalibration
from deepseg.core.embed import NetConfig, SegmentationNet
from deepseg.core.loop import DeepSegConfig, DeepSegResult
from deepseg.core.pseudo import EMAEnsemble, frozen_copy
from deepseg.core.train import TrainConfig
from deepseg.core.serialize import jsonable, tsvm_from_dict, tsvm_to_dict
from deepseg.core.tsvm import TSVMConfig
from deepseg.locations import join

FORMAT = "deepseg-model"
FORMAT_VERSION = 6  # 6: no extrapolation beyond the out-of-fold span; 5: τ averaged over its posterior; 4: the calibration with a per-class bias; 3: without the anchor at the labelled shares; 2: anchored; 1: none
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5, 6)
MODEL_FILE = "deepseg-model.json"
WEIGHTS_FILE = "networks.npz"


@dataclass
class SavedModel(DeepSegResult):
    """A loaded DeepSegResult plus what the directory records about it."""

    n_features: int = 0
    n_classes: int = 0
    class_labels: list = field(default_factory=list)
    config: DeepSegConfig | None = None
    format_version: int = FORMAT_VERSION
    deepseg_version: str = ""


def _deepseg_version() -> str:
    import deepseg

    return getattr(deepseg, "__version__", "unknown")


def config_to_dict(config: DeepSegConfig) -> dict:
    return jsonable(config)


def config_from_dict(data: dict) -> DeepSegConfig:
    """Inverse of `config_to_dict`; unknown keys are ignored."""

    def build(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})

    net = dict(data.get("net") or {})
    if "l2" in net:
        net["l2"] = tuple(float(v) for v in net["l2"])
    top = {k: v for k, v in data.items() if k not in ("net", "train", "tsvm")}
    return dataclasses.replace(
        build(DeepSegConfig, top),
        net=build(NetConfig, net), train=build(TrainConfig, data.get("train")),
        tsvm=build(TSVMConfig, data.get("tsvm")))


def save_model(model: DeepSegResult, path: str | os.PathLike, metadata: dict | None = None, *,
               config: DeepSegConfig | None = None, class_labels: list | None = None,
               overwrite: bool = False) -> str:
    """Write `model` to the directory `path` (created; an existing model there needs `overwrite`).

    `metadata` (JSON-serialisable) is stored as is; `config` records the training settings and
    `class_labels` what segment i means (default 0..k-1).
    """
    directory = os.fspath(path)
    if storage.exists(join(directory, MODEL_FILE)) and not overwrite:
        raise FileExistsError(f"{directory} already holds a deepseg model; pass overwrite=True")
    supervised = model.supervised
    n_features = supervised.f.dense1.in_features
    n_classes = supervised.g.dense.out_features
    class_labels = list(range(n_classes)) if class_labels is None else list(class_labels)
    if len(class_labels) != n_classes:
        raise ValueError(f"class_labels has {len(class_labels)} entries for {n_classes} classes")

    networks = {"supervised": supervised}
    names = []
    for i, net in enumerate(model.ensemble.nets):
        names.append(f"iteration_{i + 1}")
        networks[names[-1]] = net
    arrays = {f"{name}/{key}": tensor.detach().cpu().numpy()
              for name, net in networks.items() for key, tensor in net.state_dict().items()}

    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "deepseg_version": _deepseg_version(),
        "n_features": n_features,
        "n_classes": n_classes,
        "class_labels": jsonable(class_labels),
        "net_config": jsonable(supervised.config),
        "config": None if config is None else config_to_dict(config),
        "ensemble": {"decay": float(model.ensemble.decay), "networks": names,
                     "calibration": None if model.ensemble.calibration is None
                     else model.ensemble.calibration.to_dict()},
        "tsvm": tsvm_to_dict(model.tsvm),
        "history": jsonable(model.history),
        "metadata": jsonable(metadata or {}),
    }
    storage.remove_tree(join(directory, MODEL_FILE))
    write_arrays(join(directory, WEIGHTS_FILE), arrays)
    storage.write_text(join(directory, MODEL_FILE), json.dumps(document, indent=1, allow_nan=True))
    return directory


def write_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Numeric arrays as one ``.npz`` file at `path` (local or a URI)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.write_bytes(path, buffer.getvalue())


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (``networks.npz``): plain numeric arrays only, never unpickled.

    ``allow_pickle=False`` makes numpy refuse a pickle file and object arrays (whose loading
    would run code); anything else that is not a numeric array is refused too.
    """
    try:
        npz = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as e:
        raise ValueError(f"refusing {path}: {e} (model weights must be plain numeric arrays; "
                         f"deepseg never unpickles model files)") from None
    bad = [k for k, v in arrays.items() if v.dtype.kind not in "biuf"]
    if bad:
        raise ValueError(f"refusing {path}: arrays {bad} are not numeric")
    return arrays


def load_model(path: str | os.PathLike) -> tuple[SavedModel, dict]:
    """Read a directory written by `save_model`: (the model, its user metadata)."""
    directory = os.fspath(path)
    model_file = join(directory, MODEL_FILE)
    if not storage.exists(model_file):
        raise FileNotFoundError(f"no deepseg model at {directory} (missing {MODEL_FILE})")
    document = json.loads(storage.read_text(model_file))
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{model_file} is not a deepseg model file")
    version = document.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"deepseg model at {directory} has format version {version!r} (written by deepseg "
            f"{document.get('deepseg_version', '?')}); this deepseg {_deepseg_version()} reads "
            f"format versions {list(SUPPORTED_VERSIONS)}")

    n_features, n_classes = int(document["n_features"]), int(document["n_classes"])
    net_config = config_from_dict({"net": document["net_config"]}).net
    arrays = read_arrays(join(directory, WEIGHTS_FILE))

    def network(name: str) -> SegmentationNet:
        prefix = name + "/"
        state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                 if k.startswith(prefix)}
        with torch.random.fork_rng(devices=[]):  # initialisation must not move the global RNG
            net = SegmentationNet(n_features, n_classes, net_config)
        net.load_state_dict(state, strict=True)
        return frozen_copy(net)

    supervised = network("supervised")
    ensemble = EMAEnsemble([network(n) for n in document["ensemble"]["networks"]],
                           float(document["ensemble"]["decay"]),
                           OutputCalibration.from_dict(document["ensemble"].get("calibration")))
    config = document.get("config")
    model = SavedModel(
        ensemble=ensemble, supervised=supervised, tsvm=tsvm_from_dict(document.get("tsvm")),
        history=document.get("history") or [], n_features=n_features, n_classes=n_classes,
        class_labels=list(document.get("class_labels") or range(n_classes)),
        config=None if config is None else config_from_dict(config),
        format_version=version, deepseg_version=document.get("deepseg_version", ""))
    return model, document.get("metadata") or {}
