"""Convolution layers: :class:`Conv2d` (strided, padded, dilated, grouped, depthwise, with
PyTorch's padding modes) and :class:`ConvTranspose2d`."""
import math

import numpy as np

from .. import functional as F
from .._backend import resolve
from .._shapes import (check_output_padding, conv_output_hw, conv_padding,
                       conv_transpose_output_hw, pad_output_hw, pair)
from .._checks import generator, in_layer, positive_int
from .module import Module, Parameter, _accumulate, _float_dtype, _uniform_init

__all__ = ["Conv2d", "ConvTranspose2d"]

#: Conv2d's padding modes and the :func:`fastconv.functional.pad` mode each one uses.
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
             "circular": "circular"}


def _groups(groups, in_channels, out_channels):
    groups = positive_int(groups, "groups")
    if in_channels % groups:
        raise ValueError(f"in_channels must be divisible by groups, got in_channels={in_channels}, "
                         f"groups={groups}")
    if out_channels % groups:
        raise ValueError(f"out_channels must be divisible by groups, got out_channels="
                         f"{out_channels}, groups={groups}")
    return groups


class _ConvNd(Module):
    """What both convolutions share: sizes, weights, backward, repr."""

    _param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride, dilation, groups, bias,
                 transposed, rng, dtype):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"kernel_size, stride and dilation must be >= 1, got {kernel_size!r}, "
                             f"{stride!r}, {dilation!r}")
        self.groups = _groups(groups, self.in_channels, self.out_channels)
        self.input_grad = True
        # PyTorch's weight shapes; fan_in is its dimension 1 times the kernel size
        n_in, n_out = self.in_channels, self.out_channels
        shape = (n_in, n_out // self.groups) if transposed else (n_out, n_in // self.groups)
        shape += self.kernel_size
        fan_in = math.prod(shape[1:])
        gen, dt = generator(rng), _float_dtype(dtype)
        self.weight = Parameter(_uniform_init(shape, fan_in, dt, gen))
        self.bias = Parameter(_uniform_init(self.out_channels, fan_in, dt, gen)) if bias else None

    def _check_input(self, shape):
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{self!r} expects input (N, {self.in_channels}, H, W), got shape {shape}")
        return shape

    def _gradients(self, dw, db):
        _accumulate(self.weight, dw)
        if self.bias is not None:
            _accumulate(self.bias, db)

    def _repr(self, padding, output_padding=(0, 0), padding_mode="zeros"):
        s = (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size="
             f"{self.kernel_size}, stride={self.stride}")
        if padding != (0, 0):
            s += f", padding={padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if output_padding != (0, 0):
            s += f", output_padding={output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if padding_mode != "zeros":
            s += f", padding_mode={padding_mode}"
        return s + ")"


class Conv2d(_ConvNd):
    """2-D convolution, ``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True, padding_mode="zeros")``.

    x (N, in, H, W) -> (N, out, Hout, Wout), ``Hout = (H + 2*ph - dh*(FH - 1) - 1) // sh + 1``.
    ``padding`` is an int, an (h, w) pair, "valid" or "same" (stride 1; total padding
    ``dilation*(kernel - 1)``, the extra row/column at the bottom/right). ``padding_mode``
    "reflect", "replicate" or "circular" pads the input explicitly with :func:`F.pad` and then
    convolves without padding, as PyTorch does. ``groups`` divides both channel counts; ``groups
    == in_channels`` is a depthwise convolution (``out_channels`` a multiple of it). ``weight`` is
    (out, in/groups, FH, FW) and ``bias`` (out,) (None with ``bias=False``), both drawn as
    PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in = in/groups * FH * FW``.
    ``input_grad`` (default True): when False, backward computes only the parameter gradients
    and returns None (see the module docstring).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias,
                         False, rng, dtype)
        if not isinstance(padding_mode, str) or padding_mode not in PAD_MODES:
            raise ValueError(f"padding_mode must be one of {sorted(PAD_MODES)}, but got "
                             f"padding_mode={padding_mode!r}")
        self.padding_mode = padding_mode
        # (top, bottom, left, right); validates the padding against stride and dilation
        self._pads = conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.padding = padding.lower() if isinstance(padding, str) else pair(padding, "padding")

    def _explicit_pad(self):
        """F.pad's ``(left, right, top, bottom)`` when the padding mode pads explicitly, else None."""
        if self.padding_mode == "zeros":
            return None
        top, bottom, left, right = self._pads
        return left, right, top, bottom

    def output_shape(self, shape):
        shape = self._check_input(shape)
        with in_layer(self, shape):
            if self._explicit_pad() is not None:
                pad_output_hw(shape[2:], self._explicit_pad(), PAD_MODES[self.padding_mode])
            hw = conv_output_hw(shape[2:], self.kernel_size, self.stride, self._pads, self.dilation)
        return (shape[0], self.out_channels) + hw

    def forward(self, x):
        x = self._input(x)
        b = None if self.bias is None else self.bias.data
        pad = self._explicit_pad()
        with in_layer(self, x.shape):
            if pad is None:
                out, cache = F.conv2d(x, self.weight.data, b, self.stride, self.padding,
                                      self.dilation, self.groups)
            else:
                xp = F.pad(x, pad, PAD_MODES[self.padding_mode])
                out, cache = F.conv2d(xp, self.weight.data, b, self.stride, 0, self.dilation,
                                      self.groups)
        self._save((cache, tuple(x.shape)))
        return out

    def _backward(self, dy, need_dx):
        cache, shape = self._restore()
        if not (need_dx or self._trainable()):
            return None
        dx, dw, db = F.conv2d_backward(dy, cache, need_dx=need_dx)
        self._gradients(dw, db)
        pad = self._explicit_pad()
        if dx is not None and pad is not None:
            dx = F.pad_backward(dx, shape, pad, PAD_MODES[self.padding_mode])
        return dx

    def _memory(self, in_shape, out_shape, itemsize):
        """What the tier this layer runs on allocates (its ``conv2d_memory``): the columns it keeps
        for backward and its workspace; a depthwise layer unfolds nothing; each group of a
        grouped layer is a convolution of its own."""
        out = math.prod(out_shape) * itemsize
        n, c, h, wd = in_shape
        padding, kept = self.padding, 0
        if self._explicit_pad() is not None:  # the padded input, convolved without padding
            left, right, top, bottom = self._explicit_pad()
            h, wd, padding = h + top + bottom, wd + left + right, 0
            kept = n * c * h * wd * itemsize
        cols_kept, work = F.conv2d_memory((n, c, h, wd), self.weight.shape, self.stride, padding,
                                          self.dilation, self.groups, itemsize,
                                          backend=resolve(None, self.weight.data))
        return out, kept + cols_kept, work

    def __repr__(self):
        return self._repr(self.padding, padding_mode=self.padding_mode)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution, ``ConvTranspose2d(in_channels, out_channels, kernel_size,
    stride=1, padding=0, output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros")``.

    The input gradient of the Conv2d with the same arguments (it maps that convolution's output
    shape back to its input shape): x (N, in, H, W) -> (N, out, Hout, Wout), ``Hout = (H - 1)*sh
    - 2*ph + dh*(FH - 1) + oph + 1``. ``output_padding`` (each smaller than the stride or the
    dilation) adds rows/columns at the bottom/right. ``weight`` is (in, out/groups, FH, FW), as
    PyTorch's, drawn U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in = out/groups * FH * FW``
    (PyTorch's fan_in of that weight), and ``bias`` (out,) likewise. Only "zeros" padding.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias,
                         True, rng, dtype)
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for ConvTranspose2d, got '
                             f"padding_mode={padding_mode!r}")
        self.padding_mode = padding_mode
        self.padding = pair(padding, "padding")
        if min(self.padding) < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")
        self.output_padding = pair(output_padding, "output_padding")
        check_output_padding(self.output_padding, self.stride, self.dilation)

    def output_shape(self, shape):
        shape = self._check_input(shape)
        with in_layer(self, shape):
            hw = conv_transpose_output_hw(shape[2:], self.kernel_size, self.stride, self.padding,
                                          self.output_padding, self.dilation)
        return (shape[0], self.out_channels) + hw

    def forward(self, x):
        x = self._input(x)
        b = None if self.bias is None else self.bias.data
        with in_layer(self, x.shape):
            out, cache = F.conv_transpose2d(x, self.weight.data, b, self.stride, self.padding,
                                            self.output_padding, self.groups, self.dilation)
        self._save(cache)
        return out

    def _backward(self, dy, need_dx):
        return self._param_backward(dy, need_dx, F.conv_transpose2d_backward)

    def _memory(self, in_shape, out_shape, itemsize):
        fh, fw = self.kernel_size
        cols = out_shape[1] * fh * fw * in_shape[0] * in_shape[2] * in_shape[3] * itemsize
        return math.prod(out_shape) * itemsize, 0, cols

    def __repr__(self):
        return self._repr(self.padding, self.output_padding)
