"""A block's user profiles: numeric columns (with the tenure behind ``signup_date``) and categoricals."""

from __future__ import annotations

import numpy as np

from deepseg.data._blocks import P_CATEG, P_PROFILE, S_BLOCK, make_rng, sample_rows, softmax_cdf
from deepseg.data._config import INT_PROFILE, SyntheticConfig, profile_names
from deepseg.data._structure import Structure

_CAT_SHARPNESS = 20.0  # categorical logit scale (higher = more informative)

_PROFILE_MAKERS = {
    "age": lambda v: np.clip(np.rint(38.0 + 10.0 * v), 18, 80),
    "seats": lambda v: np.maximum(1.0, np.rint(np.exp(1.6 + 0.9 * v))),
    "monthly_spend": lambda v: np.round(np.exp(4.0 + 0.8 * v), 2),
    "logins_per_week": lambda v: np.round(np.maximum(0.0, 6.0 + 3.0 * v), 2),
    "team_size": lambda v: np.maximum(1.0, np.rint(np.exp(2.0 + 0.8 * v))),
    "storage_gb": lambda v: np.round(np.exp(2.5 + 1.0 * v), 3),
    "api_calls_per_day": lambda v: np.round(np.exp(3.0 + 1.2 * v), 1),
    "support_tickets_90d": lambda v: np.clip(np.rint(4.0 + 2.5 * v), 0, None),
    "integrations": lambda v: np.clip(np.rint(6.0 + 3.0 * v), 0, None),
}


def profile_arrays(cfg: SyntheticConfig, st: Structure, sc: np.ndarray, b: int) -> dict[str, np.ndarray]:
    """Numeric profile columns ``p_<name>`` of block ``b``, and ``tenure`` (days; always needed
    for ``signup_date``).

    ``sc`` holds the block's scores (``st.map`` of its latent positions). The noise is drawn
    column-major so that column ``j`` does not depend on ``n_profile_features``.
    """
    n, noise = len(sc), cfg.noise
    eps = make_rng(cfg.seed, S_BLOCK, b, P_PROFILE).standard_normal((cfg.n_profile_features + 1, n))
    t = sc[:, st.map.slices["tenure"]][:, 0] + noise * eps[0]
    tenure = np.clip(np.rint(np.exp(5.6 + 0.9 * t)), 1, 3650).astype(np.int64)
    prof = sc[:, st.map.slices["profile"]]
    out = {}
    for j, name in enumerate(profile_names(cfg.n_profile_features)):
        if name == "tenure_days":
            col = tenure
        else:
            v = prof[:, j] + noise * eps[j + 1]
            col = _PROFILE_MAKERS[name](v) if name in _PROFILE_MAKERS else v
        out["p_" + name] = col.astype(np.int64 if name in INT_PROFILE else np.float64)
    out["tenure"] = tenure
    return out


def categorical_arrays(cfg: SyntheticConfig, st: Structure, sc: np.ndarray, b: int) -> dict[str, np.ndarray]:
    """Level codes ``c_<name>`` of block ``b``'s categorical columns (one stream per column)."""
    out = {}
    for i, name in enumerate(st.cat_names):
        rc = make_rng(cfg.seed, S_BLOCK, b, P_CATEG, i)
        g = sc[:, st.map.slices["cat_" + name]]
        logits = _CAT_SHARPNESS * (g + cfg.noise * rc.standard_normal(g.shape)) + st.cat_base[name]
        out["c_" + name] = sample_rows(softmax_cdf(logits), None, rc.random(len(sc)))
    return out
