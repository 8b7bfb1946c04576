"""The in-memory backend: unlabelled users as one numpy array (or one CSR matrix, never densified)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np

from deepseg.core.sparse import as_float32, n_rows
from deepseg.core.train import shuffled_batches


class LocalPseudoLabeled:
    """Unlabelled features with their probabilities, both in memory."""

    def __init__(self, X: np.ndarray, P: np.ndarray):
        self.X, self.P = X, P

    def batches(self, batch_size: int, seed: int, max_rows: int | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return shuffled_batches(self.X, self.P, batch_size, seed, max_rows)


class LocalBackend:
    """Backend over an in-memory array of unlabelled users (the scikit-learn estimator's)."""

    def __init__(self, X_unlabeled: np.ndarray, chunk_size: int = 65536):
        self.X = as_float32(X_unlabeled)
        self.chunk_size = chunk_size

    def sample_unlabeled(self, max_rows: int | None, seed: int) -> np.ndarray:
        if max_rows is None or n_rows(self.X) <= max_rows:
            return self.X
        idx = np.sort(np.random.default_rng(seed).choice(n_rows(self.X), max_rows, replace=False))
        return self.X[idx]

    def map(self, fn: Callable, items: Sequence) -> list:
        return [fn(item) for item in items]

    @contextlib.contextmanager
    def pseudo_label(self, labeler: Callable[[np.ndarray], np.ndarray]):
        P = np.concatenate(
            [labeler(self.X[i:i + self.chunk_size]) for i in range(0, max(n_rows(self.X), 1), self.chunk_size)]
        )
        yield LocalPseudoLabeled(self.X, P)
