"""Drift: the population stability index and the reasons to retrain (no Spark)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from deepseg.pipeline.drift import drift_figures, drift_reason, population_stability_index, schedule_reason


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


def test_drift_figures_for_the_report():
    figures = drift_figures(np.array([0.3, 0.01]), np.array([0.05, 0.2, 0.0]), threshold=0.2,
                            feature_names=["age", "plan=pro"])
    assert figures == {"threshold": 0.2, "feature_psi": {"age": 0.3, "plan=pro": 0.01},
                       "propensity_psi": [0.05, 0.2, 0.0]}
    assert json.loads(json.dumps(figures)) == figures
    assert drift_figures([0.1])["feature_psi"] == {"#0": 0.1} and drift_figures([0.1])["propensity_psi"] is None
    with pytest.raises(ValueError, match="feature_names has 1 names for 2 feature PSI values"):
        drift_figures([0.1, 0.2], feature_names=["age"])
