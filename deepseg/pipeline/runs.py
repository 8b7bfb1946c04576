"""What every job run stamps on its output: a run id, the time, its stage timings.

Each job draws one :func:`new_run_id`; every table it writes carries it in its rows and in the
Delta commit's metadata (:func:`commit_metadata`), so ``DESCRIBE HISTORY`` tells which run wrote
what.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import datetime, timezone

__all__ = ["commit_metadata", "new_run_id", "timed", "utcnow"]

log = logging.getLogger("deepseg")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def utcnow() -> datetime:
    """Naive UTC now (Spark timestamps are stored as UTC instants)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@contextlib.contextmanager
def timed(stage: str, seconds: dict | None = None):
    """Log one line per stage with its wall-clock seconds (also stored in `seconds[stage]`)."""
    start = time.perf_counter()
    log.info("%s ...", stage)
    yield
    elapsed = time.perf_counter() - start
    if seconds is not None:
        seconds[stage] = elapsed
    log.info("%s: %.1fs", stage, elapsed)


def commit_metadata(job: str, run_id: str, **extra) -> dict:
    """The ``userMetadata`` of a job's Delta commit: job name, run id and `extra` (e.g. model_version)."""
    return {"job": job, "run_id": run_id, **extra}
