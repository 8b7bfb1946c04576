"""A fast plain ``float32`` generator on the same manifold, for performance benchmarks."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from deepseg.data._blocks import S_DENSE_BLOCK, S_DENSE_STRUCT, iter_ranges, make_rng
from deepseg.data._config import DENSE_BLOCK_SIZE, MAX_SEGMENTS, check_float, check_int
from deepseg.data._structure import RandomMap, sample_latent


@functools.lru_cache(maxsize=16)
def _dense_map(seed, n_features, n_segments) -> RandomMap:
    return RandomMap(seed, S_DENSE_STRUCT, n_segments, {"x": (0, n_features)}, np.float32)


def _dense_fill(seed, n_features, n_segments, noise, b, X_out, seg_out, buf) -> None:
    """Write the first ``len(X_out)`` rows of dense block ``b`` into ``X_out`` / ``seg_out``.

    The latent sample is always drawn for the whole block; the noise only for
    the rows written -- numpy's Gaussian sampler fills sequentially, so a prefix
    of the draws equals the draws for a prefix (the chunking tests check this).
    """
    rng = make_rng(seed, S_DENSE_BLOCK, b)
    seg, z = sample_latent(rng, DENSE_BLOCK_SIZE, n_segments, np.float32)
    k = len(X_out)
    m = _dense_map(seed, n_features, n_segments)
    np.matmul(np.tanh(z[:k] @ m.A + m.b), m.W, out=X_out)
    X_out += m.c
    if noise:
        nb = buf[:k]
        rng.standard_normal(out=nb, dtype=np.float32)
        nb *= np.float32(noise)
        X_out += nb
    seg_out[:] = seg[:k]


def _dense_block(seed: int, n_features: int, n_segments: int, noise: float, b: int) -> dict[str, np.ndarray]:
    X = np.empty((DENSE_BLOCK_SIZE, n_features), dtype=np.float32)
    seg = np.empty(DENSE_BLOCK_SIZE, dtype=np.int64)
    _dense_fill(seed, n_features, n_segments, noise, b, X, seg, np.empty_like(X))
    return {"X": X, "segment": seg}


def _check_dense(n_users, chunk_size, n_features, n_segments, noise, seed):
    check_int("n_users", n_users, 1)
    check_int("chunk_size", chunk_size, 1)
    check_int("n_features", n_features, 1, 4096)
    check_int("n_segments", n_segments, 2, MAX_SEGMENTS)
    check_float("noise", noise, 0.0, 100.0)
    check_int("seed", seed, 0)


def iter_dense_chunks(n_users: int, chunk_size: int = 1_000_000, n_features: int = 64, n_segments: int = 5,
                      seed: int = 0, noise: float = 0.1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(X float32 [m, n_features], segment int64 [m])`` chunks.

    Same spiral manifold as the user tables; the features are directly a fixed
    random tanh map of the latent position (standardised) plus Gaussian
    ``noise``. Independent of ``chunk_size`` (see :mod:`deepseg.data.synthetic`).
    """
    _check_dense(n_users, chunk_size, n_features, n_segments, noise, seed)
    mk = functools.partial(_dense_block, seed, n_features, n_segments, noise)
    for a in iter_ranges(n_users, chunk_size, DENSE_BLOCK_SIZE, mk):
        yield a["X"], a["segment"]


def make_dense(n_users: int, n_features: int = 64, n_segments: int = 5, seed: int = 0,
               noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Plain ``(X float32 [n_users, n_features], segment int64)`` for performance benchmarks."""
    _check_dense(n_users, 1, n_features, n_segments, noise, seed)
    X = np.empty((n_users, n_features), dtype=np.float32)
    seg = np.empty(n_users, dtype=np.int64)
    buf = np.empty((min(n_users, DENSE_BLOCK_SIZE), n_features), dtype=np.float32)
    for lo in range(0, n_users, DENSE_BLOCK_SIZE):
        hi = min(n_users, lo + DENSE_BLOCK_SIZE)
        _dense_fill(seed, n_features, n_segments, noise, lo // DENSE_BLOCK_SIZE, X[lo:hi], seg[lo:hi], buf)
    return X, seg
