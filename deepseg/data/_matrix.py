"""The per-user feature matrix of the in-memory benchmark: the user tables aggregated with pandas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepseg.data._config import (
    CATEGORICAL_LEVELS,
    EVENT_ACTIONS,
    EVENT_PRODUCTS,
    LOG_PROFILE,
    PROFILE_FEATURES,
    REFERENCE_DATE,
    SyntheticConfig,
)
from deepseg.data._tables import make_user_tables


def build_user_features(
    users: pd.DataFrame,
    events: pd.DataFrame,
    reference_date=REFERENCE_DATE,
) -> pd.DataFrame:
    """Per-user feature frame (index ``user_id``, same order as ``users``), unscaled.

    Columns: the numeric profile columns (heavy-tailed ones as ``log1p``),
    ``account_age_days`` if ``tenure_days`` is absent, one-hot categoricals
    ``<col>=<level>`` over the fixed :data:`CATEGORICAL_LEVELS`, and event
    aggregates: ``log_n_events``, ``log_n_product=<p>``, ``log_n_action=<a>``
    (log1p counts per :data:`EVENT_PRODUCTS` / :data:`EVENT_ACTIONS`),
    ``log_mean_duration`` (mean of ``log1p(duration_s)``), ``log_recency_days``
    (days from the last event to ``reference_date``) and
    ``log_active_span_days`` (last minus first event day). Users without
    events get 0 counts, the population mean duration, and recency = span =
    their account age. Vectorised (bincount / lexsort), no per-user Python.
    """
    n = len(users)
    uid = users["user_id"].to_numpy(np.int64)
    order = np.argsort(uid, kind="stable")
    ref = np.datetime64(reference_date, "D")
    cols: dict[str, np.ndarray] = {}
    num_names = [c for c in users.columns if c in PROFILE_FEATURES or c.startswith("profile_")]
    for c in num_names:
        v = users[c].to_numpy(np.float64)
        cols[c] = np.log1p(np.maximum(v, 0.0)) if c in LOG_PROFILE else v
    signup = users["signup_date"].to_numpy().astype("datetime64[D]")
    account_age = (ref - signup).astype(np.float64)
    if "tenure_days" not in users.columns:
        cols["account_age_days"] = np.log1p(np.maximum(account_age, 0.0))
    for c, levels in CATEGORICAL_LEVELS.items():
        if c in users.columns:
            codes = pd.Categorical(users[c], categories=list(levels)).codes
            for i, lev in enumerate(levels):
                cols[f"{c}={lev}"] = (codes == i).astype(np.float64)

    # events -> row index of users
    ev_uid = events["user_id"].to_numpy(np.int64)
    pos = np.searchsorted(uid, ev_uid, sorter=order)
    pos = np.minimum(pos, n - 1)
    row = order[pos]
    known = uid[row] == ev_uid
    row = row[known]
    P, A = len(EVENT_PRODUCTS), len(EVENT_ACTIONS)
    pc = pd.Categorical(events["product"].to_numpy()[known], categories=list(EVENT_PRODUCTS)).codes
    ac = pd.Categorical(events["action"].to_numpy()[known], categories=list(EVENT_ACTIONS)).codes
    n_ev = np.bincount(row, minlength=n).astype(np.float64)
    ok = pc >= 0
    cnt_p = np.bincount(row[ok] * P + pc[ok], minlength=n * P).reshape(n, P).astype(np.float64)
    ok = ac >= 0
    cnt_a = np.bincount(row[ok] * A + ac[ok], minlength=n * A).reshape(n, A).astype(np.float64)
    dur = events["duration_s"].to_numpy(np.float64)[known]
    sum_logd = np.bincount(row, weights=np.log1p(dur), minlength=n)
    has = n_ev > 0
    mean_logd = np.full(n, sum_logd.sum() / max(n_ev.sum(), 1.0))
    mean_logd[has] = sum_logd[has] / n_ev[has]
    ev_days = (ref - events["event_date"].to_numpy()[known].astype("datetime64[D]")).astype(np.int64)
    rec = _group_min(row, ev_days, n)
    oldest = -_group_min(row, -ev_days, n)
    recency = np.where(has, rec, account_age)
    span = np.where(has, oldest - rec, account_age)

    cols["log_n_events"] = np.log1p(n_ev)
    for i, p in enumerate(EVENT_PRODUCTS):
        cols[f"log_n_product={p}"] = np.log1p(cnt_p[:, i])
    for i, a in enumerate(EVENT_ACTIONS):
        cols[f"log_n_action={a}"] = np.log1p(cnt_a[:, i])
    cols["log_mean_duration"] = mean_logd
    cols["log_recency_days"] = np.log1p(np.maximum(recency, 0.0))
    cols["log_active_span_days"] = np.log1p(np.maximum(span, 0.0))
    return pd.DataFrame(cols, index=pd.Index(uid, name="user_id"))


def _group_min(row: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=v.dtype)
    if row.size == 0:
        return out
    o = np.lexsort((v, row))
    r, vs = row[o], v[o]
    first = np.r_[True, r[1:] != r[:-1]]
    out[r[first]] = vs[first]
    return out


def make_user_matrix(
    n_users: int = 20_000,
    n_segments: int = 5,
    survey_fraction: float = 0.01,
    noise: float = SyntheticConfig.noise,
    seed: int = 0,
    n_features: int = SyntheticConfig.n_profile_features,
    *,
    n_categorical: int = SyntheticConfig.n_categorical,
    events_per_user: float = SyntheticConfig.events_per_user,
    onehot_zscore: bool = False,
    return_frame: bool = False,
):
    """Standardised per-user feature matrix for the in-memory core benchmark.

    Generates the tables with :func:`make_user_tables` and aggregates them with
    :func:`build_user_features` (pandas). ``n_features`` is the number of
    numeric profile columns (``n_profile_features``); the final width ``d`` also
    counts the one-hot categoricals and the event aggregates (``d = 42`` at the
    defaults: 8 profile + 19 one-hot + 15 event columns).

    Scaling: every column is centred over all users; numeric and event columns
    are divided by their standard deviation (z-scores); one-hot indicators are
    divided by ``sqrt(2)`` so that switching a category moves a user by unit
    distance, like one standard deviation of a numeric column (z-scoring rare
    indicators would blow them up and fragment any distance-based graph). Pass
    ``onehot_zscore=True`` to z-score them as well.

    Returns ``(X, segment, surveyed)``: ``X`` float32 ``[n_users, d]``,
    ``segment`` int64 true segments (users in ``user_id`` order), ``surveyed``
    bool mask of survey respondents. For the benchmark
    the labels are **the true segments of the surveyed users**
    (``segment[surveyed]``); the Spark pipeline instead labels respondents by
    clustering their survey answers. With ``return_frame=True`` the unscaled
    feature DataFrame (index ``user_id``) is appended to the tuple.
    """
    cfg = SyntheticConfig(
        n_users=n_users,
        n_segments=n_segments,
        survey_fraction=survey_fraction,
        noise=noise,
        seed=seed,
        n_profile_features=n_features,
        n_categorical=n_categorical,
        events_per_user=events_per_user,
    )
    t = make_user_tables(cfg)
    feats = build_user_features(t["users"], t["events"])
    X = feats.to_numpy(np.float64, copy=True)
    X -= X.mean(0)
    onehot = np.array([c.split("=")[0] in CATEGORICAL_LEVELS for c in feats.columns])
    sd = X.std(0)
    sd[sd == 0] = 1.0
    if not onehot_zscore:
        sd[onehot] = math.sqrt(2.0)  # a category switch = unit distance
    X = (X / sd).astype(np.float32)
    segment = t["segments_truth"]["segment"].to_numpy(np.int64)
    surveyed = np.isin(t["users"]["user_id"].to_numpy(), t["survey_responses"]["user_id"].to_numpy())
    if return_frame:
        return X, segment, surveyed, feats
    return X, segment, surveyed
