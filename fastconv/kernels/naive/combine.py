"""Naive combining of branch outputs: elementwise sum, concatenation and its inverse split (the
last two shared by the cpu tier: NumPy's copies are already the fast path)."""
import numpy as np


def add(a, b, relu=False):
    """a + b, both of one shape and dtype; then max(., 0) when ``relu`` (NaN kept)."""
    out = a + b
    if relu:
        out = np.where(out < 0, out.dtype.type(0), out)
    return out


def concat(parts):
    """Concatenate (A, B_i, C) arrays along axis 1 -> (A, sum B_i, C)."""
    return np.concatenate(parts, axis=1)


def split(a, sizes):
    """Split a (A, D, C) along axis 1 into C-contiguous (A, B_i, C) arrays, ``sum(sizes) == D``."""
    bounds = np.cumsum([0] + list(sizes))
    return [np.ascontiguousarray(a[:, lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
