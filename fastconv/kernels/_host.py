"""The host tiers' (naive and cpu) elementwise helpers: the NumPy side of the cuda tier's
``elementwise`` helpers, so that callers reach either through the tier and never branch on the
device.

Each takes host arrays; an operand that is a device array (a host tier updating host state from
a cuda result, e.g. BatchNorm's running statistics) is copied to the host first, as the cuda tier
copies host operands to the device.
"""
import numpy as np

from .._backend import to_numpy

__all__ = ["axpby", "clamp", "full", "scale_rows", "zeros_like"]


def axpby(y, x, a, b):
    """``y = y * a + x * b`` in place; y (any shape), x of y's shape; a, b Python numbers.

    NumPy's ``y *= a; y += x * b``, operation for operation; a factor ``a == 1`` or a term with
    ``b == 0`` is skipped (so ``axpby(g, g, c, 0)`` is exactly ``g *= c``, also for non-finite
    values, where the cuda kernel, which always computes both terms, gives NaN for ``inf * 0``).
    """
    x = to_numpy(x)
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"axpby: x has shape {tuple(x.shape)}, y has {tuple(y.shape)}")
    if a != 1:
        y *= a
    if b != 0:
        y += x if b == 1 else x * b


def clamp(y, lo, hi):
    """``np.clip(y, lo, hi, out=y)``: y (any shape) clamped in place."""
    np.clip(y, lo, hi, out=y)


def full(shape, value, dtype):
    """An array of ``shape`` and ``dtype`` filled with ``value``."""
    return np.full(tuple(shape), value, dtype=dtype)


def scale_rows(a, s):
    """``a * s[:, None]`` as a new array: a (rows, length), s (rows,) cast to a's dtype."""
    s = np.asarray(to_numpy(s), dtype=a.dtype)
    if tuple(s.shape) != (a.shape[0],):
        raise ValueError(f"scale_rows: s has shape {tuple(s.shape)}, expected ({a.shape[0]},)")
    return a * s.reshape(-1, 1)


def zeros_like(a):
    """A zero-filled array of a's shape and dtype (optimizer state buffers)."""
    return np.zeros(tuple(a.shape), dtype=a.dtype)
