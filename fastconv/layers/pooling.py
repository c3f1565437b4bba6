"""Pooling layers: :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`AdaptiveAvgPool2d`,
:class:`AdaptiveMaxPool2d`, :class:`MaxUnpool2d` (PyTorch's arguments, defaults and repr)."""
import math

import numpy as np

from .. import functional as F
from .._shapes import (adaptive_output_hw, pool_divisor, pool_output_hw, pool_params,
                       unpool_output_hw, unpool_params)
from .._checks import in_layer
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "MaxUnpool2d"]


def _four_d(layer, shape):
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"{layer!r} expects 4-D input (N, C, H, W), got shape {shape}")
    return shape


def _check_dy(layer, dy, out_shape):
    if tuple(np.shape(dy)) != tuple(out_shape):
        raise ValueError(f"{layer._label()}: dy has shape {tuple(np.shape(dy))}, expected the output's "
                         f"{tuple(out_shape)}")


class _Pool2d(Module):
    """Shared by the windowed pools: PyTorch's attributes (``stride`` defaults to the kernel) and
    the output shape."""

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self._kernel, self._stride, self._padding, self._dilation = pool_params(
            kernel_size, self.stride, padding, dilation)

    def output_shape(self, shape):
        shape = _four_d(self, shape)
        with in_layer(self, shape):
            hw = pool_output_hw(shape[2:], self._kernel, self._stride, self._padding,
                                self._dilation, self.ceil_mode)
        return shape[:2] + hw

    def _label(self):
        return f"{type(self).__name__}({self.kernel_size}, stride={self.stride})"


class _MaxBackward:
    """Max pools keep ``(switches, input shape, relu)`` and route dy through the switches
    (``relu``: the output of a pool that applied the ReLU before it, whose gradient comes
    first)."""

    def _backward(self, dy, need_dx):
        switches, shape, relu = self._restore()
        if not need_dx:
            return None
        if relu is not None:
            dy = F.relu_backward(dy, relu)
        return F.max_pool2d_backward(dy, switches, shape)

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape)
        return n * itemsize, n * 8, 0


class MaxPool2d(_MaxBackward, _Pool2d):
    """Max pooling, ``MaxPool2d(kernel_size, stride=None, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)``; stride defaults to the kernel.

    x (N, C, H, W) -> (N, C, Hout, Wout), or ``(out, indices)`` with ``return_indices`` (int64, the
    flat index ``h * W + w`` of each maximum in its plane: :class:`MaxUnpool2d`'s input; backward
    still takes dy for ``out`` only). Padding (at most half the kernel) is -inf. The switches are
    kept for backward; the first maximum in row-major window order receives the whole gradient.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.dilation = dilation
        self.return_indices = return_indices

    def forward(self, x):
        return self._forward(x)

    def _forward(self, x, relu=False):
        """The forward; ``relu``: the ReLU before this pool, applied after it to the pooled
        values (for :class:`fastconv.layers.Sequential`). A max commutes with a ReLU, so the
        values and gradients are the same, for a fraction of the work (a quarter at 2x2)."""
        x = self._input(x)
        with in_layer(self, x.shape):
            out, switches = F.max_pool2d(x, self._kernel, self._stride, self._padding,
                                         self._dilation, self.ceil_mode)
        if relu:
            out = F.relu(out)
        self._save((switches, tuple(x.shape), out if relu else None))
        return (out, switches) if self.return_indices else out

    def __repr__(self):
        return (f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode})")


class AvgPool2d(_Pool2d):
    """Average pooling, ``AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)``: x (N, C, H, W) -> (N, C, Hout, Wout).

    Padding is zeros; each window's sum is divided by ``divisor_override`` if given, else by the
    window clipped to the input and its padding (``count_include_pad``) or to the input alone.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = count_include_pad
        self.divisor_override = pool_divisor(divisor_override)

    def _options(self):
        return (self._kernel, self._stride, self._padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)

    def forward(self, x):
        x = self._input(x)
        with in_layer(self, x.shape):
            out = F.avg_pool2d(x, *self._options())
        self._save(tuple(x.shape))
        return out

    def _backward(self, dy, need_dx):
        shape = self._restore()
        return F.avg_pool2d_backward(dy, shape, *self._options()) if need_dx else None

    def __repr__(self):
        return f"AvgPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding})"


class _AdaptivePool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        adaptive_output_hw((1, 1), output_size)  # the types and signs, checked now
        self.output_size = output_size

    def output_shape(self, shape):
        shape = _four_d(self, shape)
        return shape[:2] + adaptive_output_hw(shape[2:], self.output_size)

    def __repr__(self):
        return f"{type(self).__name__}(output_size={self.output_size})"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Adaptive average pooling, ``AdaptiveAvgPool2d(output_size)``: x (N, C, H, W) ->
    (N, C, Hout, Wout), PyTorch's bins (``floor(i * H / Hout)`` to ``ceil((i + 1) * H / Hout)``).

    ``output_size`` is an int or a pair whose entries may be None (keep the input's size);
    ``AdaptiveAvgPool2d(1)`` is global average pooling.
    """

    def forward(self, x):
        x = self._input(x)
        with in_layer(self, x.shape):
            out = F.adaptive_avg_pool2d(x, self.output_size)
        self._save((tuple(x.shape), tuple(out.shape)))
        return out

    def _backward(self, dy, need_dx):
        shape, out_shape = self._restore()
        _check_dy(self, dy, out_shape)
        return F.adaptive_avg_pool2d_backward(dy, shape) if need_dx else None


class AdaptiveMaxPool2d(_MaxBackward, _AdaptivePool2d):
    """Adaptive max pooling, ``AdaptiveMaxPool2d(output_size, return_indices=False)``: bins as
    :class:`AdaptiveAvgPool2d`, switches and ``return_indices`` as :class:`MaxPool2d`."""

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, x):
        x = self._input(x)
        with in_layer(self, x.shape):
            out, switches = F.adaptive_max_pool2d(x, self.output_size)
        self._save((switches, tuple(x.shape), None))
        return (out, switches) if self.return_indices else out


class MaxUnpool2d(Module):
    """Max unpooling, ``MaxUnpool2d(kernel_size, stride=None, padding=0)``, the partial inverse of
    :class:`MaxPool2d`: ``forward(x, indices, output_size=None)`` with x and the pool's indices
    (N, C, H, W) -> (N, C, Hout, Wout), zero except x at ``indices``.

    ``Hout = (H - 1) * stride - 2 * padding + kernel_size`` unless ``output_size`` ((Hout, Wout)
    or (N, C, Hout, Wout), within one stride of that) says otherwise. Backward reads dy at the
    indices.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = unpool_params(kernel_size, stride, padding)

    def __call__(self, x, indices, output_size=None):
        return self.forward(x, indices, output_size)

    def output_shape(self, shape):
        """The output shape for an input of ``shape`` without ``output_size``."""
        shape = _four_d(self, shape)
        with in_layer(self, shape):
            return shape[:2] + unpool_output_hw(shape[2:], self.kernel_size, self.stride,
                                                self.padding)

    def forward(self, x, indices, output_size=None):
        x = self._input(x)
        out = F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)
        self._save((indices, tuple(out.shape)))
        return out

    def _backward(self, dy, need_dx):
        indices, out_shape = self._restore()
        _check_dy(self, dy, out_shape)
        return F.max_unpool2d_backward(dy, indices) if need_dx else None

    def __repr__(self):
        return (f"MaxUnpool2d(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding})")
