"""Kernel tiers: ``naive`` (the oracle), ``cpu`` (Numba), ``cuda`` (numba.cuda), each implementing
the one contract of :mod:`fastconv.kernels.contract`."""
