"""Drift: the population stability index and the reasons to retrain (no Spark)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from deepseg.pipeline.drift import drift_reason, population_stability_index, schedule_reason


def test_population_stability_index_and_retrain_reasons():
    same = np.full((3, 4), 0.25)
    np.testing.assert_allclose(population_stability_index(same, same), 0.0)
    shifted = np.array([[0.1, 0.2, 0.3, 0.4]])
    expected = np.sum((shifted - 0.25) * np.log(shifted / 0.25))
    np.testing.assert_allclose(population_stability_index(same[:1], shifted), [expected])
    assert drift_reason("feature", np.array([0.01, 0.05]), 0.2) is None
    assert drift_reason("feature", np.array([0.01, 0.5]), 0.2, ["a", "b"]) == "feature drift: PSI 0.500 > 0.2 (b)"
    t0 = datetime(2025, 1, 1)
    assert schedule_reason(t0, t0 + timedelta(days=3), 30) is None
    assert schedule_reason(t0, t0 + timedelta(days=300), None) is None
    assert schedule_reason(t0, t0 + timedelta(days=31), 30).startswith("schedule: model trained 31 days ago")
