"""Padding layers: :class:`ZeroPad2d`, :class:`ConstantPad2d`, :class:`ReflectionPad2d`,
:class:`ReplicationPad2d`, :class:`CircularPad2d` (PyTorch's names and arguments).

``padding`` is an int (all four sides) or a 4-tuple ``(left, right, top, bottom)``; amounts may
be negative (rows/columns cut off), as in PyTorch. x (N, C, H, W) -> (N, C, H + top + bottom,
W + left + right); see :func:`fastconv.functional.pad` for each mode.
"""
import numbers

import numpy as np

from .. import functional as F
from .._shapes import pad_output_hw
from .._checks import in_layer
from .module import Module

__all__ = ["ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d", "CircularPad2d"]


def _four(padding):
    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
    if is_int(padding):
        return (int(padding),) * 4
    if isinstance(padding, (tuple, list)) and len(padding) == 4 and all(map(is_int, padding)):
        return tuple(int(v) for v in padding)
    raise TypeError(f"padding must be an int or a 4-tuple of ints (left, right, top, bottom), "
                    f"got {padding!r}")


class _Pad2d(Module):
    _mode = "constant"

    def __init__(self, padding):
        super().__init__()
        self.padding = _four(padding)
        self.value = 0.0

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(f"{self!r} expects 4-D input (N, C, H, W), got shape {shape}")
        with in_layer(self, shape):
            return shape[:2] + pad_output_hw(shape[2:], self.padding, self._mode)

    def forward(self, x):
        x = self._input(x)
        with in_layer(self, x.shape):
            out = F.pad(x, self.padding, self._mode, self.value)
        self._save(tuple(x.shape))
        return out

    def _backward(self, dy, need_dx):
        shape = self._restore()
        return F.pad_backward(dy, shape, self.padding, self._mode) if need_dx else None

    def __repr__(self):
        return f"{type(self).__name__}({self.padding})"


class ConstantPad2d(_Pad2d):
    """Pads with the constant ``value``: ``ConstantPad2d(padding, value)``."""

    def __init__(self, padding, value):
        super().__init__(padding)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"value must be a real number, got {value!r}")
        self.value = float(value)

    def __repr__(self):
        return f"{type(self).__name__}(padding={self.padding}, value={self.value})"


class ZeroPad2d(ConstantPad2d):
    """Pads with zeros: ``ZeroPad2d(padding)``."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def __repr__(self):
        return f"ZeroPad2d({self.padding})"


class ReflectionPad2d(_Pad2d):
    """Pads with the reflection of the input about its edge (the edge not repeated); each amount
    must be smaller than the input size of its dimension."""

    _mode = "reflect"


class ReplicationPad2d(_Pad2d):
    """Pads by repeating the edge rows and columns."""

    _mode = "replicate"


class CircularPad2d(_Pad2d):
    """Pads by wrapping around (the first rows after the last); each amount at most the input
    size of its dimension."""

    _mode = "circular"
