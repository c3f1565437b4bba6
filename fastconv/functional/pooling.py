"""Pooling: max pooling with switches, average pooling, and their gradients."""
import numpy as np

from .._backend import is_device_array, kernels, resolve
from .._shapes import pair, pool_output_hw
from ._common import _array, _ndim4, _same_shape, _shape4

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]


def _pool_geometry(x_shape, kernel_size, stride):
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    return kernel, stride, pool_output_hw(x_shape[2:], kernel, stride)


def max_pool2d(x, kernel_size=2, stride=None, backend=None):
    """Max pooling (floor mode) that records where each maximum came from.

    x : (N, C, H, W). Returns ``(out, switches)``, both (N, C, Hout, Wout); ``switches`` (int64)
    holds the flat index ``h * W + w`` of each maximum inside its (n, c) plane, as PyTorch's
    ``return_indices``. Ties: the first maximum in row-major window order. NaN propagates.
    """
    name = resolve(backend, x)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    kernel, stride, _ = _pool_geometry(x.shape, kernel_size, stride)
    return kernels(name).max_pool2d(x, kernel, stride)


def max_pool2d_backward(dout, switches, input_shape, backend=None):
    """Route dout (N, C, Hout, Wout) to the switches; returns dx of ``input_shape``.

    Overlapping windows accumulate deterministically. ``switches`` is only read.
    """
    name = resolve(backend, dout, switches)
    shape = _shape4(input_shape)
    dout = _array(dout, "dout")
    _ndim4(dout, "dout", "(N, C, Hout, Wout)")
    if not is_device_array(switches):
        switches = np.asarray(switches)
        if switches.dtype.kind not in "iu":
            raise TypeError(f"switches must be integers, got dtype {switches.dtype}")
        switches = np.ascontiguousarray(switches, dtype=np.int64)
    if tuple(switches.shape) != tuple(dout.shape):
        raise ValueError(f"switches have shape {tuple(switches.shape)} but dout has {tuple(dout.shape)}")
    if tuple(dout.shape[:2]) != shape[:2] or dout.shape[2] > shape[2] or dout.shape[3] > shape[3]:
        raise ValueError(f"dout {tuple(dout.shape)} cannot come from pooling an input of shape {shape}")
    dx, ok = kernels(name).max_pool2d_backward(dout, switches, shape)
    if not ok:
        raise ValueError(f"switches hold indices outside [0, {shape[2] * shape[3]}) for input {shape}")
    return dx


def avg_pool2d(x, kernel_size=2, stride=None, backend=None):
    """Average pooling (floor mode, no padding): x (N, C, H, W) -> (N, C, Hout, Wout)."""
    name = resolve(backend, x)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    kernel, stride, _ = _pool_geometry(x.shape, kernel_size, stride)
    return kernels(name).avg_pool2d(x, kernel, stride)


def avg_pool2d_backward(dout, input_shape, kernel_size=2, stride=None, backend=None):
    """Gradient of :func:`avg_pool2d`: dout (N, C, Hout, Wout) -> dx of ``input_shape``."""
    name = resolve(backend, dout)
    shape = _shape4(input_shape)
    dout = _array(dout, "dout")
    kernel, stride, hw = _pool_geometry(shape, kernel_size, stride)
    _same_shape(dout, shape[:2] + hw, "dout")
    return kernels(name).avg_pool2d_backward(dout, shape, kernel, stride)
