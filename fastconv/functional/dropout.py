"""Inverted dropout and its gradient."""
import numbers

import numpy as np

from .._backend import kernels, resolve
from ._common import _array, _same_shape

__all__ = ["dropout", "dropout_backward"]


def dropout(x, p, seed, backend=None):
    """Inverted dropout with drop probability ``p`` in [0, 1): returns ``(out, mask)``.

    ``seed`` (an int) makes the mask repeatable; mask holds 0 or 1/(1-p).
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
        raise ValueError(f"dropout probability p must be a number in [0, 1), got {p!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"dropout seed must be a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"dropout seed must be a non-negative int, got {seed!r}")
    return kernels(resolve(backend, x)).dropout(_array(x, "x"), float(p), int(seed))


def dropout_backward(dout, mask, backend=None):
    """Gradient of :func:`dropout`: dout * mask."""
    mask = _array(mask, "mask")
    dout = _array(dout, "dout", mask.dtype)
    _same_shape(dout, mask.shape, "dout")
    return kernels(resolve(backend, dout, mask)).dropout_backward(dout, mask)
