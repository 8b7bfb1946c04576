"""Shared set-up of the calibration experiments: one real-data split, and a spy that keeps the
safeguard's out-of-fold probabilities of the labelled users."""
import warnings

import numpy as np


def split_with_spy(ds: str, proto: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(X, y, labelled idx, unlabelled idx, capture): the benchmark's split (sparse sets reduced as
    the benchmark reduces them); `capture` fills with y, oof_start and oof_deep when a fit in this
    process reaches the safeguard's decision."""
    import scipy.sparse as sp

    import deepseg.core.loop as loop
    from benchmarks import realdata
    from benchmarks.accuracy_real import _limit_threads, reduced

    warnings.filterwarnings("ignore")
    _limit_threads()
    cap = {}
    orig = loop.decide

    def spy(y, Ps, Pd):
        cap.update(y=y, oof_start=Ps, oof_deep=Pd)
        return orig(y, Ps, Pd)

    loop.decide = spy
    X, y, lab, unl = realdata.split(ds, proto, seed)
    if sp.issparse(X):
        X = reduced(ds)
    return X, y, lab, unl, cap
