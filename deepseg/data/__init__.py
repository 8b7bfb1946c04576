"""Data helpers: the seeded synthetic user generator (:mod:`deepseg.data.synthetic`)."""

from deepseg.data.synthetic import (
    BLOCK_SIZE,
    CATEGORICAL_LEVELS,
    DENSE_BLOCK_SIZE,
    EVENT_ACTIONS,
    EVENT_PRODUCTS,
    PROFILE_FEATURES,
    REFERENCE_DATE,
    SyntheticConfig,
    build_user_features,
    iter_dense_chunks,
    iter_user_chunks,
    make_dense,
    make_user_matrix,
    make_user_tables,
    segment_shares,
)

__all__ = [
    "BLOCK_SIZE",
    "CATEGORICAL_LEVELS",
    "DENSE_BLOCK_SIZE",
    "EVENT_ACTIONS",
    "EVENT_PRODUCTS",
    "PROFILE_FEATURES",
    "REFERENCE_DATE",
    "SyntheticConfig",
    "build_user_features",
    "iter_dense_chunks",
    "iter_user_chunks",
    "make_dense",
    "make_user_matrix",
    "make_user_tables",
    "segment_shares",
]
