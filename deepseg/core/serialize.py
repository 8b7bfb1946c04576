"""Plain JSON data of the core's objects, for model files and training checkpoints."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from deepseg.core.ovr import OvRTSVM
from deepseg.core.tsvm import BinaryTSVM


def jsonable(value: Any) -> Any:
    """`value` as JSON-ready data: tuples -> lists, numpy and dataclasses -> plain Python.

    Raises TypeError for anything else, so that nothing is stored that cannot be read back.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def tsvm_to_dict(tsvm: OvRTSVM | None) -> dict | None:
    """The fitted one-vs-rest TSVMs as plain data (None stays None)."""
    if tsvm is None:
        return None
    return {"temperature": float(tsvm.temperature), "separators": [{
        "coef": np.asarray(s.coef, dtype=np.float64).tolist(), "intercept": float(s.intercept),
        "objective": float(s.objective), "history": [float(h) for h in s.history],
        "n_iter": int(s.n_iter), "converged": bool(s.converged),
    } for s in tsvm.separators]}


def tsvm_from_dict(data: dict | None) -> OvRTSVM | None:
    """Inverse of :func:`tsvm_to_dict`."""
    if data is None:
        return None
    return OvRTSVM(tuple(
        BinaryTSVM(coef=np.asarray(s["coef"], dtype=np.float64), intercept=float(s["intercept"]),
                   objective=float(s["objective"]), history=tuple(float(h) for h in s["history"]),
                   n_iter=int(s["n_iter"]), converged=bool(s["converged"]))
        for s in data["separators"]), float(data["temperature"]))
