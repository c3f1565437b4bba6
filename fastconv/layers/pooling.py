"""Pooling layers: :class:`MaxPool2d`, :class:`AvgPool2d`."""
import math

from .. import functional as F
from .._shapes import pair, pool_output_hw
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d"]


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self._kernel = pair(kernel_size, "kernel_size")
        self._stride = pair(self.stride, "stride")
        if min(self._kernel) < 1 or min(self._stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size!r}, {stride!r}")

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(f"{self!r} expects 4-D input (N, C, H, W), got shape {shape}")
        try:
            hw = pool_output_hw(shape[2:], self._kernel, self._stride)
        except ValueError as exc:
            raise ValueError(f"{self!r} cannot take input of shape {shape}: {exc}") from None
        return shape[:2] + hw

    def _label(self):
        return f"{type(self).__name__}({self.kernel_size}, stride={self.stride})"


class MaxPool2d(_Pool2d):
    """Max pooling (floor mode), ``MaxPool2d(kernel_size, stride=None)``; stride defaults to the kernel.

    x (N, C, H, W) -> (N, C, Hout, Wout). Keeps the argmax switches (int64, out's shape) for backward;
    the first maximum in row-major window order receives the whole gradient.
    """

    def forward(self, x):
        x = self._input(x)
        self.output_shape(x.shape)
        out, switches = F.max_pool2d(x, self._kernel, self._stride)
        self._save((switches, tuple(x.shape)))
        return out

    def _backward(self, dy, need_dx):
        switches, shape = self._restore()
        return F.max_pool2d_backward(dy, switches, shape) if need_dx else None

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape)
        return n * itemsize, n * 8, 0

    def __repr__(self):
        return (f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding=0, "
                "dilation=1, ceil_mode=False)")


class AvgPool2d(_Pool2d):
    """Average pooling (floor mode, no padding), ``AvgPool2d(kernel_size, stride=None)``."""

    def forward(self, x):
        x = self._input(x)
        self.output_shape(x.shape)
        self._save(tuple(x.shape))
        return F.avg_pool2d(x, self._kernel, self._stride)

    def _backward(self, dy, need_dx):
        shape = self._restore()
        return F.avg_pool2d_backward(dy, shape, self._kernel, self._stride) if need_dx else None

    def __repr__(self):
        return f"AvgPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding=0)"
