"""A block's events: Poisson counts per user, product / action mix, dates and durations."""

from __future__ import annotations

import numpy as np

from deepseg.data._blocks import P_EVENTS, S_BLOCK, make_rng, sample_rows, softmax_cdf
from deepseg.data._config import EVENT_ACTIONS, EVENT_PRODUCTS, SyntheticConfig
from deepseg.data._structure import Structure

_PRODUCT_SHARPNESS = 6.0  # product-mix logit scale
_ACTION_SHARPNESS = 6.0  # user part of the action logits
_ACTIVITY_SCALE = 0.6  # sd of log event rate
_WINDOW_LOG = 4.0  # log of the typical activity window (days)


def event_arrays(cfg: SyntheticConfig, st: Structure, sc: np.ndarray, tenure: np.ndarray,
                 b: int) -> dict[str, np.ndarray]:
    """Events of block ``b``, grouped by user: ``e_user`` (row in the block), ``e_age_days``
    (days before the reference date, at most the user's ``tenure``), ``e_product``, ``e_action``
    (codes) and ``e_duration`` (seconds)."""
    re = make_rng(cfg.seed, S_BLOCK, b, P_EVENTS)
    n = len(sc)
    P, A = len(EVENT_PRODUCTS), len(EVENT_ACTIONS)
    e = sc[:, st.map.slices["events"]] + cfg.noise * re.standard_normal((n, 4 + P + A))
    act, rec, spread, dur = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    rate = cfg.events_per_user * np.exp(_ACTIVITY_SCALE * act - 0.5 * _ACTIVITY_SCALE**2)
    counts = re.poisson(rate)
    uidx = np.repeat(np.arange(n), counts)
    m = uidx.size
    u = re.random((2, m))
    prod = sample_rows(softmax_cdf(_PRODUCT_SHARPNESS * e[:, 4 : 4 + P] + st.product_base), uidx, u[0])
    # action probabilities per (user, product) ~ exp(user taste + product-specific mix)
    w_user = np.exp(np.clip(_ACTION_SHARPNESS * e[:, 4 + P :], -60.0, 60.0))
    acdf = np.cumsum(w_user[:, None, :] * st.action_weight, axis=2).reshape(n * P, A)
    acdf /= acdf[:, -1:]
    action = sample_rows(acdf, uidx * P + prod, u[1])
    last_gap = np.exp(1.8 + 0.9 * rec)  # days since the last activity
    window = np.exp(_WINDOW_LOG + 0.7 * spread)  # activity spreads uniformly over this many days before
    age_days = np.floor(last_gap[uidx] + window[uidx] * re.random(m))
    age_days = np.minimum(age_days, tenure[uidx]).astype(np.int64)
    log_dur = (3.5 + 0.6 * dur)[uidx] + st.product_duration[prod] + 0.7 * re.standard_normal(m)
    return {
        "e_user": uidx,
        "e_age_days": age_days,
        "e_product": prod,
        "e_action": action,
        "e_duration": np.round(np.exp(log_dur), 1),
    }
