"""Inverted dropout (elementwise, and of whole channels) and its gradient."""
import numbers

from .._backend import kernels, resolve
from .._checks import positive_int
from ._common import _array, _ndim4, _same_shape

__all__ = ["dropout", "dropout_backward", "dropout2d", "dropout2d_backward"]


def dropout(x, p, seed, backend=None):
    """Inverted dropout with drop probability ``p`` in [0, 1): returns ``(out, mask)``.

    ``seed`` (an int) makes the mask repeatable; mask holds 0 or 1/(1-p).
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
        raise ValueError(f"dropout probability p must be a number in [0, 1), got {p!r}")
    _check_seed(seed)
    return kernels(resolve(backend, x)).dropout(_array(x, "x"), float(p), int(seed))


def _check_seed(seed):
    return positive_int(seed, "dropout seed", minimum=0)


def dropout_backward(dout, mask, backend=None):
    """Gradient of :func:`dropout`: dout * mask."""
    mask = _array(mask, "mask")
    dout = _array(dout, "dout", mask.dtype)
    _same_shape(dout, mask.shape, "dout")
    return kernels(resolve(backend, dout, mask)).dropout_backward(dout, mask)


def dropout2d(x, p, seed, backend=None):
    """Channel dropout (``torch.nn.functional.dropout2d`` in training): each channel ``x[n, c]``
    of x (N, C, H, W) is zeroed as a whole with probability ``p`` in [0, 1] and the others are
    scaled by 1/(1-p).

    Returns ``(out (N, C, H, W), mask (N, C))``; the mask holds 0 or 1/(1-p) (all 0 for p = 1)
    and is repeatable from ``seed`` (an int).
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout2d probability p must be a number in [0, 1], got {p!r}")
    _check_seed(seed)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W) for dropout2d")
    return kernels(resolve(backend, x)).dropout2d(x, float(p), int(seed))


def dropout2d_backward(dout, mask, backend=None):
    """Gradient of :func:`dropout2d`: dout (N, C, H, W) times the channel mask (N, C)."""
    mask = _array(mask, "mask")
    dout = _array(dout, "dout", mask.dtype)
    _ndim4(dout, "dout", "(N, C, H, W)")
    _same_shape(mask, tuple(dout.shape[:2]), "mask")
    return kernels(resolve(backend, dout, mask)).dropout2d_backward(dout, mask)
