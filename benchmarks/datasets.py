"""Benchmark datasets: (X standardised, y, labelled points per class) and the seeded label draw."""

from __future__ import annotations

from functools import cache

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.preprocessing import StandardScaler


def _scaled(loader):
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


@cache
def _synthetic():
    from deepseg.data.synthetic import make_user_matrix

    X, segment, surveyed = make_user_matrix(n_users=20000, n_segments=5, survey_fraction=0.01, seed=0)
    return X, segment


@cache
def _users():
    from deepseg.data.synthetic import make_user_matrix

    X, segment, _ = make_user_matrix(n_users=20000, n_segments=5, seed=0, onehot_zscore=True)
    return X, segment


DATASETS = {
    "digits10": lambda: (*_scaled(load_digits), 10),
    "digits5": lambda: (*_scaled(load_digits), 5),
    "wine": lambda: (*_scaled(load_wine), 3),
    "cancer": lambda: (*_scaled(load_breast_cancer), 5),
    # 1% of 20k users surveyed: 40 per segment on average, drawn per class like the others.
    "synthetic": lambda: (*_synthetic(), 40),
    # Like the demo's Spark-built features (every column z-scored, one-hot ones too) and its survey
    # (1000 respondents drawn in proportion to the segments, not a fixed count per segment).
    "users": lambda: (*_users(), 0.05),
}


def labeled_mask(y: np.ndarray, per_class: int | float, seed: int) -> np.ndarray:
    """Stratified draw of `per_class` labelled points per class; a float in (0, 1) is a fraction of
    each class instead (proportional stratification, as a uniform survey gives on average)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(len(y), bool)
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        n = max(1, round(per_class * len(members))) if isinstance(per_class, float) else per_class
        lab[rng.choice(members, n, replace=False)] = True
    return lab
