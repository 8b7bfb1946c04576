"""Shared fixtures: fixed seeds, small semi-supervised problems, the wheel of this checkout."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons


@pytest.fixture(autouse=True)
def seeds_fixed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def moons():
    """Two moons, 400 points, 4 labelled per class; y == -1 marks unlabelled."""
    X, y_true = make_moons(400, noise=0.08, random_state=0)
    X = X.astype(np.float32)
    y = np.full_like(y_true, -1)
    for k in (0, 1):
        y[np.flatnonzero(y_true == k)[:4]] = k
    return X, y, y_true



@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """deepseg's wheel, built from this checkout (``python -m build --wheel``)."""
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist),
                           str(Path(__file__).resolve().parents[1])], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (path,) = dist.glob("deepseg-*.whl")
    return path
