"""The linear teacher: the start also learns a logistic regression's view of the unlabelled users.

With ten or twenty labelled users the 128 → 32 network fits them exactly, along whichever directions
its initialisation favoured; an L2-regularised logistic regression on the same users generalises
better (on the real-data suite's few-label cells the supervised start was 2-20 points behind it),
and the TSVMs, which separate f's space, cannot repair a poor f. So before the first TSVMs the start
is trained for ``linear_teacher_epochs`` on a seeded sample of at most :data:`TEACHER_ROWS`
unlabelled users towards the logistic regression's probabilities (KL, the labelled loss), then for
``labeled_epochs`` on the labelled users again. The iterations then refine a network that already
agrees with the linear view where the labels say little.

Fitted on labelled users only (scikit-learn's ``LogisticRegression``, C = 1); the unlabelled users
only receive its probabilities. Validated on labelled points only (docs/tuning-log.md).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from deepseg.core.embed import SegmentationNet, kl_loss
from deepseg.core.sparse import n_rows
from deepseg.core.train import shuffled_batches, train_epochs, train_labeled

#: The teacher's unlabelled users: a seeded sample of at most this many (its cost does not grow with the users).
TEACHER_ROWS = 5000
TEACHER_BATCH_SIZE = 256
_FLOOR = 1e-3  # no target probability below this: the student is never asked for certainty


def teacher_targets(X_l, y_l: np.ndarray, X_u, n_classes: int) -> np.ndarray | None:
    """The logistic regression's probabilities of `X_u` (floored, rows summing to 1), fitted on the
    labelled users; None when they hold fewer than two classes."""
    if len(np.unique(y_l)) < 2:
        return None
    model = LogisticRegression(max_iter=1000).fit(X_l, y_l)
    T = np.full((n_rows(X_u), n_classes), _FLOOR, dtype=np.float32)
    T[:, model.classes_] = model.predict_proba(X_u)
    return T / T.sum(axis=1, keepdims=True)


def teacher_sample(unlabeled, seed: int):
    """The seeded sample of at most :data:`TEACHER_ROWS` unlabelled users the teacher speaks on."""
    n = n_rows(unlabeled)
    if n <= TEACHER_ROWS:
        return unlabeled
    return unlabeled[np.sort(np.random.default_rng(seed + 6151).choice(n, TEACHER_ROWS, replace=False))]


def teach(net: SegmentationNet, optimizer: torch.optim.Optimizer, X_l, y_l: np.ndarray, H: np.ndarray, X_u,
          epochs: int, labeled_epochs: int, batch_size: int, seed: int) -> bool:
    """Train `net` (after its labelled epochs) towards the teacher on `X_u` (see the module doc), then
    on the labelled users again; False where there was nothing to teach (no unlabelled users, one class)."""
    if epochs == 0 or n_rows(X_u) == 0:
        return False
    T = teacher_targets(X_l, y_l, X_u, H.shape[1])
    if T is None:
        return False
    train_epochs(net, optimizer, lambda e: shuffled_batches(X_u, T, TEACHER_BATCH_SIZE, seed + 50 + e), kl_loss,
                 epochs)
    train_labeled(net, optimizer, X_l, H, labeled_epochs, batch_size, seed + 99)
    return True
