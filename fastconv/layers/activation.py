"""Elementwise activation layers: :class:`ReLU`, :class:`Sigmoid`, :class:`Tanh`."""
from .. import functional as F
from .module import Module

__all__ = ["ReLU", "Sigmoid", "Tanh"]


class _Activation(Module):
    """An elementwise function whose backward needs only its output (kept; counted as the output)."""

    _fn = _grad = None

    def forward(self, x):
        x = self._input(x)
        out = type(self)._fn(x)
        self._save(out)
        return out

    def _backward(self, dy, need_dx):
        out = self._restore()
        return type(self)._grad(dy, out) if need_dx else None


class ReLU(_Activation):
    """max(x, 0), any shape."""

    _fn, _grad = F.relu, F.relu_backward


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), any shape."""

    _fn, _grad = F.sigmoid, F.sigmoid_backward


class Tanh(_Activation):
    """tanh(x), any shape."""

    _fn, _grad = F.tanh, F.tanh_backward
