"""Spark's Python worker daemon with deepseg's imports done once, before it forks the workers.

Spark forks every Python worker from one daemon process and kills workers idle for a minute, so
each pseudo-labelling pass and each TSVM job after a long retraining epoch starts new workers,
which import torch, scipy and scikit-learn again: seconds per pass on a small machine. Forked
from this daemon, workers start with those modules already loaded (and share their pages).

Use it with ``spark.python.daemon.module=deepseg.spark.daemon`` (a Spark setting read when the
session starts); deepseg must be importable by the executors' Python.
"""

import numpy  # noqa: F401
import pyarrow  # noqa: F401
import torch  # noqa: F401  (imported before any fork: no threads are started by the import)

import deepseg.core.ovr  # noqa: F401  scipy, scikit-learn
import deepseg.core.pseudo  # noqa: F401
import deepseg.spark.scoring  # noqa: F401  what scoring tasks run
import deepseg.spark.shuffle  # noqa: F401  what pseudo-labelling tasks run

if __name__ == "__main__":
    from pyspark.daemon import manager

    manager()
