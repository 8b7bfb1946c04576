"""Data helpers: the seeded synthetic user generator (:mod:`deepseg.data.synthetic`)."""

from deepseg.data import synthetic
from deepseg.data.synthetic import *  # noqa: F401,F403 - the public names are synthetic.__all__

__all__ = list(synthetic.__all__)
