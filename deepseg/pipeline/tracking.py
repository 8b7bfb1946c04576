"""MLflow tracking for the jobs: used when mlflow is installed *and* told where to log.

mlflow 3 defaults to ``sqlite:///mlflow.db`` in the working directory, which mlflow-skinny cannot
open and which a batch job should not create unasked. So the jobs log only to a configured
destination: ``MLFLOW_TRACKING_URI`` (or ``mlflow.set_tracking_uri``), an active run, or a
Databricks runtime (its workspace). Otherwise one info line says how to turn it on.
"""

from __future__ import annotations

import importlib.util
import logging
from types import ModuleType

from deepseg.spark.session import on_databricks

log = logging.getLogger("deepseg")


def configured_mlflow(stage: str) -> ModuleType | None:
    """The mlflow module if it is installed and has a destination (module doc); else None."""
    if importlib.util.find_spec("mlflow") is None:
        return None
    import mlflow

    if mlflow.is_tracking_uri_set() or mlflow.active_run() is not None or on_databricks():
        return mlflow
    log.info("%s: MLflow is installed but no tracking URI is set (MLFLOW_TRACKING_URI); nothing logged to it",
             stage)
    return None
