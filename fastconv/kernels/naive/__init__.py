"""The naive tier: Python loops over images and output positions, one small NumPy product per window.

This is how the tutorials write a conv net. It is slow and obviously right: it is the oracle the
other tiers are tested against and the baseline the benchmarks measure them against.

Every tier implements the functions of :mod:`fastconv.kernels.contract` with its signatures, one
file per op family with the same file names in every tier; the ``elementwise`` and ``optim``
families are the NumPy helpers and optimizer updates both host tiers share
(:mod:`fastconv.kernels._host`, :mod:`fastconv.kernels._host_optim`).
"""
from ..contract import NAMES, bind

# every contract function, from this tier's file of its family
bind(globals(), elementwise="_host", optim="_host_optim")

__all__ = list(NAMES)
