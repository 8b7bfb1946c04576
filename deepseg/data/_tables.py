"""The user tables: a block's arrays (latent, profiles, events, survey) -> DataFrames, by chunk."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from deepseg.data._blocks import P_LATENT, P_SURVEY, S_BLOCK, iter_ranges, make_rng
from deepseg.data._config import (
    BLOCK_SIZE,
    CATEGORICAL_LEVELS,
    CATEGORICAL_NAMES,
    EVENT_ACTIONS,
    EVENT_PRODUCTS,
    REFERENCE_DATE,
    SyntheticConfig,
    check_int,
    profile_names,
)
from deepseg.data._events import event_arrays
from deepseg.data._profiles import categorical_arrays, profile_arrays
from deepseg.data._structure import Structure, sample_latent, structure


def _block(cfg: SyntheticConfig, b: int) -> dict[str, np.ndarray]:
    """Generate block ``b`` (users ``b*BLOCK_SIZE ..``) as plain numpy arrays."""
    st = structure(cfg.seed, cfg.n_segments, cfg.n_profile_features, cfg.n_categorical, cfg.n_questions)
    n = BLOCK_SIZE
    seg, z = sample_latent(make_rng(cfg.seed, S_BLOCK, b, P_LATENT), n, cfg.n_segments)
    sc = st.map(z)
    out: dict[str, np.ndarray] = {
        "user_id": np.arange(b * n + 1, (b + 1) * n + 1, dtype=np.int64),
        "segment": seg,
        "latent": z,
    }
    out.update(profile_arrays(cfg, st, sc, b))
    out.update(categorical_arrays(cfg, st, sc, b))
    out.update(event_arrays(cfg, st, sc, out["tenure"], b))
    out.update(_survey_arrays(cfg, st, seg, b))
    return out


def _survey_arrays(cfg: SyntheticConfig, st: Structure, seg: np.ndarray, b: int) -> dict[str, np.ndarray]:
    """Respondent mask ``s_mask`` and Likert answers ``s_answers`` of block ``b`` (answers are
    drawn for everyone, so that they do not depend on ``survey_fraction``)."""
    rs = make_rng(cfg.seed, S_BLOCK, b, P_SURVEY)
    surveyed = rs.random(len(seg)) < cfg.survey_fraction
    ans = st.answer_profiles[seg] + cfg.survey_noise * rs.standard_normal((len(seg), cfg.n_questions))
    return {"s_mask": surveyed, "s_answers": np.clip(np.rint(ans), 1, 5).astype(np.int64)}


# pandas >= 3 stores strings as its ``str`` dtype; older pandas as object arrays
_PANDAS_STR = pd.Series(["a"]).dtype != object


def _str_col(codes: np.ndarray, levels: tuple[str, ...]):
    """String column from category codes (pandas' default string representation)."""
    if not _PANDAS_STR:  # object array sharing the level strings: fast, compact
        return np.asarray(levels, dtype=object)[codes]
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(levels)))
    return arr.cast(pa.string()).to_pandas()


def _frames(cfg: SyntheticConfig, a: dict[str, np.ndarray], with_latent: bool) -> dict[str, pd.DataFrame]:
    uid = a["user_id"]
    users = {"user_id": uid}
    for name in profile_names(cfg.n_profile_features):
        users[name] = a["p_" + name]
    for name in CATEGORICAL_NAMES[: cfg.n_categorical]:
        users[name] = _str_col(a["c_" + name], CATEGORICAL_LEVELS[name])
    users["signup_date"] = (REFERENCE_DATE - a["tenure"].astype("timedelta64[D]")).astype("datetime64[us]")
    users = pd.DataFrame(users)

    ev_date = (REFERENCE_DATE - a["e_age_days"].astype("timedelta64[D]")).astype("datetime64[us]")
    events = pd.DataFrame(
        {
            "user_id": uid[a["e_user"]],
            "event_date": ev_date,
            "product": _str_col(a["e_product"], EVENT_PRODUCTS),
            "action": _str_col(a["e_action"], EVENT_ACTIONS),
            "duration_s": a["e_duration"],
        }
    )
    m = a["s_mask"]
    survey = {"user_id": uid[m]}
    ans = a["s_answers"][m]
    for j, q in enumerate(cfg.question_columns):
        survey[q] = ans[:, j]
    survey = pd.DataFrame(survey)
    truth = pd.DataFrame({"user_id": uid, "segment": a["segment"]})
    out = {"users": users, "events": events, "survey_responses": survey, "segments_truth": truth}
    if with_latent:
        z = a["latent"]
        out["latent"] = pd.DataFrame({"user_id": uid, "x": z[:, 0], "y": z[:, 1], "h": z[:, 2]})
    return out


def _resolve_config(config: SyntheticConfig | None, overrides: dict) -> SyntheticConfig:
    bad = set(overrides) - {f.name for f in dataclasses.fields(SyntheticConfig)}
    if bad:
        raise ValueError(f"unknown SyntheticConfig parameter(s) {sorted(bad)}")
    if config is None:
        return SyntheticConfig(**overrides)
    if not isinstance(config, SyntheticConfig):
        raise ValueError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config


def iter_user_chunks(
    n_users: int | None = None,
    chunk_size: int = 100_000,
    seed: int | None = None,
    config: SyntheticConfig | None = None,
    *,
    with_latent: bool = False,
    **params,
) -> Iterator[dict[str, pd.DataFrame]]:
    """Yield the synthetic population chunk by chunk.

    Each item is a dict of DataFrames ``users``, ``events``,
    ``survey_responses``, ``segments_truth`` (and ``latent`` -- ``user_id, x,
    y, h`` -- if ``with_latent``) for ``chunk_size`` consecutive users (the last
    chunk may be smaller). Parameters come from ``config`` (default
    :class:`SyntheticConfig`), overridden by ``n_users``, ``seed`` and any other
    :class:`SyntheticConfig` field given as keyword. The result does not depend
    on ``chunk_size`` (see :mod:`deepseg.data.synthetic`).
    """
    overrides = dict(params)
    if n_users is not None:
        overrides["n_users"] = n_users
    if seed is not None:
        overrides["seed"] = seed
    cfg = _resolve_config(config, overrides)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    for arrays in iter_ranges(cfg.n_users, chunk_size, BLOCK_SIZE, lambda b: _block(cfg, b)):
        yield _frames(cfg, arrays, with_latent)


def make_user_tables(
    config: SyntheticConfig | None = None, *, with_latent: bool = False, **params
) -> dict[str, pd.DataFrame]:
    """The whole population in memory (one chunk); same keys as :func:`iter_user_chunks`."""
    cfg = _resolve_config(config, params)
    return next(iter_user_chunks(chunk_size=cfg.n_users, config=cfg, with_latent=with_latent))
