"""Seeded random streams, fixed-size blocks and their assembly into chunks, inverse-CDF sampling.

The reproducibility machinery of :mod:`deepseg.data.synthetic`: block ``b`` draws each of its
parts from its own stream ``SeedSequence(seed, spawn_key=(S_BLOCK, b, part, ...))``, and chunks
are cut from whole blocks, so the data do not depend on the chunk size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# stream ids (first spawn key) and part ids (third)
S_STRUCT, S_BLOCK, S_DENSE_STRUCT, S_DENSE_BLOCK = 0, 1, 2, 3
P_LATENT, P_PROFILE, P_CATEG, P_EVENTS, P_SURVEY = 0, 1, 2, 3, 4
P_MAP, P_CALIB, P_ANSWERS = 10, 11, 12


def make_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def softmax_cdf(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, returned as cumulative probabilities (last column 1)."""
    logits = logits - logits.max(axis=1, keepdims=True)
    c = np.cumsum(np.exp(logits), axis=1)
    c /= c[:, -1:]
    return c


def sample_rows(cdf: np.ndarray, rows: np.ndarray | None, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: category of ``u[i]`` under row ``rows[i]`` of ``cdf``."""
    k = np.zeros(u.shape[0], dtype=np.int64)
    cols = cdf[:, :-1].T.copy()
    for c in cols:
        k += u >= (c if rows is None else c[rows])
    return k


def iter_ranges(n: int, chunk_size: int, block: int, make_block) -> Iterator[dict[str, np.ndarray]]:
    """Assemble ``[start, start+chunk_size)`` ranges from cached fixed-size blocks."""
    cache: tuple[int, dict] | None = None
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        parts = []
        for b in range(start // block, (stop - 1) // block + 1):
            if cache is None or cache[0] != b:
                cache = (b, make_block(b))
            lo = max(start, b * block) - b * block
            hi = min(stop, (b + 1) * block) - b * block
            blk = cache[1]
            parts.append(blk if (lo == 0 and hi == block) else _slice_block(blk, lo, hi))
        yield _concat_parts(parts)


def _slice_block(blk: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Rows ``lo:hi`` (block-relative) of a block; ``e_*`` event arrays follow their users."""
    out = {}
    if "e_user" in blk:
        elo, ehi = np.searchsorted(blk["e_user"], [lo, hi])
    for k, v in blk.items():
        if k == "e_user":
            out[k] = v[elo:ehi] - lo
        elif k.startswith("e_"):
            out[k] = v[elo:ehi]
        else:
            out[k] = v[lo:hi]
    return out


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "e_user"}
    if "e_user" in parts[0]:
        offsets = np.cumsum([0] + [len(p["segment"]) for p in parts[:-1]])
        out["e_user"] = np.concatenate([p["e_user"] + o for p, o in zip(parts, offsets)])
    return out
