"""What the notebooks in ``notebooks/`` share: their parameters, configuration, Spark session.

A notebook parameter is read from its Databricks widget when the notebook runs on Databricks (the
widget is created with the default, so a job's or a user's value shows), else from ``--name
VALUE`` on the command line (``python notebooks/<notebook>.py --name VALUE``), else from
``$DEEPSEG_<NAME>``, else it is the default. Every notebook has ``conf`` (the environment overlay,
relative to the checkout: ``conf/databricks.yaml`` on Databricks, ``conf/local.yaml`` elsewhere)
and ``root`` (replaces ``data.root`` when set)::

    params = notebook_params({"users": "20000"}, dbutils=globals().get("dbutils"))
    cfg, spark = notebook_session(params)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from deepseg.config import Config

__all__ = ["default_conf", "notebook_params", "notebook_session", "repo_root"]


def repo_root(start: str | Path | None = None) -> Path:
    """The checkout holding ``conf/base.yaml``: `start` (default: the working directory, a
    notebook's own folder on Databricks) or its nearest parent that holds it; else `start`."""
    here = Path.cwd() if start is None else Path(start)
    return next((p for p in (here, *here.parents) if (p / "conf" / "base.yaml").is_file()), here)


def default_conf(environ: Mapping[str, str] | None = None) -> str:
    """``conf/databricks.yaml`` on a Databricks runtime, ``conf/local.yaml`` elsewhere."""
    environ = os.environ if environ is None else environ
    return "conf/databricks.yaml" if "DATABRICKS_RUNTIME_VERSION" in environ else "conf/local.yaml"


def notebook_params(defaults: Mapping[str, str], *, dbutils: Any = None, argv: Sequence[str] | None = None,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each parameter of ``{"conf": default_conf(), "root": "", **defaults}`` (name -> default, as
    strings): its widget if `dbutils` is given, else ``--name`` in `argv` (default:
    ``sys.argv[1:]``; other arguments are ignored), else ``$DEEPSEG_<NAME>``, else its default."""
    environ = os.environ if environ is None else environ
    defaults = {"conf": default_conf(environ), "root": "", **defaults}
    if dbutils is not None:  # Databricks: widgets show each parameter and take job parameters
        for name, default in defaults.items():
            dbutils.widgets.text(name, default)
        return {name: dbutils.widgets.get(name) for name in defaults}
    parser = argparse.ArgumentParser(add_help=False)
    for name in defaults:
        parser.add_argument(f"--{name}")
    given = vars(parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))[0])
    return {name: given[name] or environ.get(f"DEEPSEG_{name.upper()}", default)
            for name, default in defaults.items()}


def notebook_session(params: Mapping[str, str]) -> tuple["Config", "SparkSession"]:
    """Log to stderr, load the configuration ``params["conf"]`` (relative to :func:`repo_root`;
    ``data.root`` replaced by ``params["root"]`` when set) and start its Spark session."""
    from deepseg.config import load_config
    from deepseg.spark.session import get_spark

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    root = params.get("root")
    cfg = load_config(repo_root() / params["conf"], {"data": {"root": root}} if root else None)
    return cfg, get_spark(cfg.spark.app_name, cfg.spark.master, dict(cfg.spark.conf))
