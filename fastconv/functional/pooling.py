"""Pooling: max pooling with switches, average pooling, adaptive pooling, max unpooling, and
their gradients (PyTorch's arguments, defaults and window rules).

Max pooling returns ``(out, switches)``: ``switches`` (int64, out's shape) holds the flat index
``h * W + w`` of each maximum inside its (n, c) plane of the unpadded input, as PyTorch's
``return_indices``; ties go to the first maximum in row-major window order, and a NaN wins over
numbers (the first NaN). Padding is -inf for max pooling and zeros for average pooling.
"""
import numpy as np

from .._backend import is_device_array, kernels, resolve
from .._shapes import (adaptive_output_hw, pool_divisor, pool_output_hw, pool_params,
                       unpool_output_hw, unpool_params)
from ._common import _array, _ndim4, _same_shape, _shape4

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
           "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
           "adaptive_max_pool2d_backward", "max_unpool2d", "max_unpool2d_backward"]


def _input(x, backend):
    name = resolve(backend, x)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    return name, x


def _indices(indices, name, shape=None, other=None):
    """Integer ``indices`` as C-contiguous int64 (device arrays pass), of ``other``'s ``shape``
    when one is given."""
    if not is_device_array(indices):
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integers, got dtype {indices.dtype}")
        indices = np.ascontiguousarray(indices, dtype=np.int64)
    if shape is not None and tuple(indices.shape) != tuple(shape):
        raise ValueError(f"{name} have shape {tuple(indices.shape)} but {other} has {tuple(shape)}")
    return indices


def max_pool2d(x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False,
               backend=None):
    """Max pooling that records where each maximum came from.

    x : (N, C, H, W). ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the kernel)
    is -inf; ``dilation`` spaces the taps; ``ceil_mode`` rounds the output size up (the last
    window must start inside the input or its left padding). Returns ``(out, switches)``, both
    (N, C, Hout, Wout); ``switches`` (int64) holds the flat index ``h * W + w`` of each maximum
    inside its (n, c) plane, as PyTorch's ``return_indices``. Ties: the first maximum in
    row-major window order. NaN propagates.
    """
    name, x = _input(x, backend)
    kernel, stride, padding, dilation = pool_params(kernel_size, stride, padding, dilation)
    pool_output_hw(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    return kernels(name).max_pool2d(x, kernel, stride, padding, dilation, bool(ceil_mode))


def _route_check(dout, switches, input_shape, backend):
    name = resolve(backend, dout, switches)
    shape = _shape4(input_shape)
    dout = _array(dout, "dout")
    _ndim4(dout, "dout", "(N, C, Hout, Wout)")
    switches = _indices(switches, "switches", dout.shape, "dout")
    if tuple(dout.shape[:2]) != shape[:2]:
        raise ValueError(f"dout {tuple(dout.shape)} cannot come from pooling an input of shape {shape}")
    return name, dout, switches, shape


def max_pool2d_backward(dout, switches, input_shape, backend=None):
    """Route dout (N, C, Hout, Wout) to the switches; returns dx of ``input_shape``.

    Works for the switches of any max pooling (padded, dilated, ceil mode, adaptive). Overlapping
    windows accumulate deterministically. ``switches`` is only read.
    """
    name, dout, switches, shape = _route_check(dout, switches, input_shape, backend)
    dx, ok = kernels(name).max_pool2d_backward(dout, switches, shape)
    if not ok:
        raise ValueError(f"switches hold indices outside [0, {shape[2] * shape[3]}) for input {shape}")
    return dx


def _avg_params(kernel_size, stride, padding, divisor_override):
    kernel, stride, padding, _ = pool_params(kernel_size, stride, padding)
    return kernel, stride, padding, pool_divisor(divisor_override)


def avg_pool2d(x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, backend=None):
    """Average pooling: x (N, C, H, W) -> (N, C, Hout, Wout).

    ``padding`` (zeros, at most half the kernel) and ``ceil_mode`` as in :func:`max_pool2d`. Each
    window's sum is divided by ``divisor_override`` if given, else by the window's size clipped to
    the input and its padding (``count_include_pad=True``) or to the input alone (PyTorch's rule;
    a ceil-mode window that runs past the padding counts only what lies inside it).
    """
    name, x = _input(x, backend)
    kernel, stride, padding, divisor = _avg_params(kernel_size, stride, padding, divisor_override)
    pool_output_hw(x.shape[2:], kernel, stride, padding, (1, 1), ceil_mode)
    return kernels(name).avg_pool2d(x, kernel, stride, padding, bool(ceil_mode),
                                    bool(count_include_pad), divisor)


def avg_pool2d_backward(dout, input_shape, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, backend=None):
    """Gradient of :func:`avg_pool2d` (same arguments): dout (N, C, Hout, Wout) -> dx of
    ``input_shape``."""
    name = resolve(backend, dout)
    shape = _shape4(input_shape)
    dout = _array(dout, "dout")
    kernel, stride, padding, divisor = _avg_params(kernel_size, stride, padding, divisor_override)
    hw = pool_output_hw(shape[2:], kernel, stride, padding, (1, 1), ceil_mode)
    _same_shape(dout, shape[:2] + hw, "dout")
    return kernels(name).avg_pool2d_backward(dout, shape, kernel, stride, padding, bool(ceil_mode),
                                             bool(count_include_pad), divisor)


def adaptive_avg_pool2d(x, output_size, backend=None):
    """Adaptive average pooling: x (N, C, H, W) -> (N, C, Hout, Wout).

    ``output_size`` is an int or an (Hout, Wout) pair whose entries may be None (keep the input's
    size). Bin ``i`` of an axis of size H spans ``floor(i * H / Hout)`` to ``ceil((i + 1) * H /
    Hout)``, as PyTorch's; ``output_size=1`` is global average pooling (one reduction per plane).
    """
    name, x = _input(x, backend)
    return kernels(name).adaptive_avg_pool2d(x, adaptive_output_hw(x.shape[2:], output_size))


def adaptive_avg_pool2d_backward(dout, input_shape, backend=None):
    """Gradient of :func:`adaptive_avg_pool2d`: dout (N, C, Hout, Wout) -> dx of ``input_shape``
    (the bins follow from the two shapes)."""
    name = resolve(backend, dout)
    shape = _shape4(input_shape)
    dout = _array(dout, "dout")
    _ndim4(dout, "dout", "(N, C, Hout, Wout)")
    if tuple(dout.shape[:2]) != shape[:2]:
        raise ValueError(f"dout {tuple(dout.shape)} cannot come from pooling an input of shape {shape}")
    return kernels(name).adaptive_avg_pool2d_backward(dout, shape)


def adaptive_max_pool2d(x, output_size, backend=None):
    """Adaptive max pooling: x (N, C, H, W) -> ``(out, switches)``, both (N, C, Hout, Wout).

    Bins as in :func:`adaptive_avg_pool2d`; switches, ties and NaN as in :func:`max_pool2d`.
    """
    name, x = _input(x, backend)
    return kernels(name).adaptive_max_pool2d(x, adaptive_output_hw(x.shape[2:], output_size))


def adaptive_max_pool2d_backward(dout, switches, input_shape, backend=None):
    """Gradient of :func:`adaptive_max_pool2d`: the switch routing of :func:`max_pool2d_backward`."""
    return max_pool2d_backward(dout, switches, input_shape, backend=backend)


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None, backend=None):
    """Max unpooling, the partial inverse of :func:`max_pool2d`: x (N, C, H, W) and its switches
    ``indices`` (same shape) -> (N, C, Hout, Wout), zero except ``x`` at ``indices``.

    ``Hout = (H - 1) * stride - 2 * padding + kernel_size`` unless ``output_size`` ((Hout, Wout)
    or (N, C, Hout, Wout), within one stride of that) says otherwise. An index written twice keeps
    the last value in row-major order (the overlapping windows of a max pooling give the same
    value). Indices outside the output plane are a ValueError.
    """
    name = resolve(backend, x, indices)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    kernel, stride, padding = unpool_params(kernel_size, stride, padding)
    out_hw = unpool_output_hw(x.shape[2:], kernel, stride, padding, output_size)
    indices = _indices(indices, "indices", x.shape, "x")
    out, ok = kernels(name).max_unpool2d(x, indices, out_hw)
    if not ok:
        raise ValueError(f"indices hold values outside [0, {out_hw[0] * out_hw[1]}): an output "
                         f"plane of max_unpool2d is {out_hw[0]}x{out_hw[1]} (padding {padding})")
    return out


def max_unpool2d_backward(dout, indices, backend=None):
    """Gradient of :func:`max_unpool2d`: dout (N, C, Hout, Wout) read at ``indices`` (N, C, H, W)
    -> dx (N, C, H, W)."""
    name = resolve(backend, dout, indices)
    dout = _array(dout, "dout")
    _ndim4(dout, "dout", "(N, C, Hout, Wout)")
    indices = _indices(indices, "indices")
    shape = tuple(indices.shape)
    if len(shape) != 4 or shape[:2] != tuple(dout.shape[:2]):
        raise ValueError(f"indices of shape {shape} do not match dout {tuple(dout.shape)}: both "
                         "are (N, C, ...)")
    dx, ok = kernels(name).max_unpool2d_backward(dout, indices)
    if not ok:
        raise ValueError(f"indices hold values outside [0, {dout.shape[2] * dout.shape[3]}) for "
                         f"dout {tuple(dout.shape)}")
    return dx
