"""Kernel tiers: ``naive`` (the oracle), ``cpu`` (Numba), ``cuda`` (numba.cuda); one contract."""
