"""Convolution layers: :class:`Conv2d`."""
import math

import numpy as np

from .. import functional as F
from .._shapes import conv_output_hw, conv_padding, pair
from .module import Module, Parameter, _accumulate, _float_dtype, _generator, _positive, _uniform_init

__all__ = ["Conv2d"]


class Conv2d(Module):
    """2-D convolution, ``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)``.

    x (N, in, H, W) -> (N, out, Hout, Wout), ``Hout = (H + 2*ph - FH) // sh + 1``.
    ``padding`` is an int, an (h, w) pair, "valid" or "same" (stride 1). ``weight`` is
    (out, in, FH, FW) and ``bias`` (out,) (None with ``bias=False``), both drawn as PyTorch does:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in = in * FH * FW``.
    ``input_grad`` (default True): when False, backward computes only the parameter gradients
    and returns None (see the module docstring).
    """

    _param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32):
        super().__init__()
        self.in_channels = _positive(in_channels, "in_channels")
        self.out_channels = _positive(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size!r}, {stride!r}")
        conv_padding(padding, self.kernel_size, self.stride)  # validates
        self.padding = padding.lower() if isinstance(padding, str) else pair(padding, "padding")
        self.input_grad = True
        fh, fw = self.kernel_size
        shape = (self.out_channels, self.in_channels, fh, fw)
        fan_in, gen, dt = self.in_channels * fh * fw, _generator(rng), _float_dtype(dtype)
        self.weight = Parameter(_uniform_init(shape, fan_in, dt, gen))
        self.bias = Parameter(_uniform_init(self.out_channels, fan_in, dt, gen)) if bias else None

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{self!r} expects input (N, {self.in_channels}, H, W), got shape {shape}")
        pads = conv_padding(self.padding, self.kernel_size, self.stride)
        try:
            hw = conv_output_hw(shape[2:], self.kernel_size, self.stride, pads)
        except ValueError as exc:
            raise ValueError(f"{self!r} cannot take input of shape {shape}: {exc}") from None
        return (shape[0], self.out_channels) + hw

    def forward(self, x):
        x = self._input(x)
        self.output_shape(x.shape)
        b = None if self.bias is None else self.bias.data
        out, cache = F.conv2d(x, self.weight.data, b, self.stride, self.padding)
        self._save(cache)
        return out

    def _backward(self, dy, need_dx):
        cache = self._restore()
        if not (need_dx or self._trainable()):
            return None
        dx, dw, db = F.conv2d_backward(dy, cache, need_dx=need_dx)
        _accumulate(self.weight, dw)
        if self.bias is not None:
            _accumulate(self.bias, db)
        return dx

    def _memory(self, in_shape, out_shape, itemsize):
        fh, fw = self.kernel_size
        cols = in_shape[1] * fh * fw * out_shape[0] * out_shape[2] * out_shape[3] * itemsize
        return math.prod(out_shape) * itemsize, cols, cols

    def __repr__(self):
        s = (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + (", bias=False)" if self.bias is None else ")")
