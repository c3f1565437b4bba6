"""Activation layers, as ``torch.nn``'s: :class:`ReLU`, :class:`Sigmoid`, :class:`Tanh`,
:class:`LeakyReLU`, :class:`ELU`, :class:`SELU`, :class:`GELU`, :class:`SiLU`, :class:`Softplus`,
:class:`Hardtanh`, :class:`PReLU` (a learnable slope), :class:`Softmax`, :class:`LogSoftmax` and
:class:`Identity`. Every one takes any shape; PReLU with several slopes needs a channel axis 1.

ReLU, Sigmoid, Tanh, Softmax and LogSoftmax keep their output for backward, the others their
input (whichever their gradient formula reads; in :meth:`fastconv.Sequential.summary` neither
counts as extra memory: both are activations the step holds anyway).
"""

import numpy as np

from .. import functional as F
from .._checks import in_layer, integer, number, positive_int
from .module import Module, Parameter, _float_dtype

__all__ = ["ReLU", "Sigmoid", "Tanh", "LeakyReLU", "ELU", "SELU", "GELU", "SiLU", "Softplus",
           "Hardtanh", "PReLU", "Softmax", "LogSoftmax", "Identity"]


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

    def _applied(self):
        """The layer beside this ReLU ran it in its own pass and runs its gradient in its
        backward (a BatchNorm or a Residual before it, or a MaxPool2d after it: see
        :class:`fastconv.layers.Sequential`): this call's backward passes the gradient through."""
        self._save(_APPLIED)

    def _backward(self, dy, need_dx):
        out = self._restore()
        if out is _APPLIED:
            return dy if need_dx else None
        return F.relu_backward(dy, out) if need_dx else None


_APPLIED = object()


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), any shape."""

    _fn, _grad = F.sigmoid, F.sigmoid_backward


class Tanh(_Activation):
    """tanh(x), any shape."""

    _fn, _grad = F.tanh, F.tanh_backward


class _InputActivation(Module):
    """An elementwise function whose backward reads its input: ``F.<name>(x, *args)`` forward and
    ``F.<name>_backward(dy, x, *args)`` backward, ``args`` from :meth:`_args`."""

    _fn = _grad = None

    def _args(self):
        return ()

    def forward(self, x):
        x = self._input(x)
        out = type(self)._fn(x, *self._args())
        self._save(x)
        return out

    def _backward(self, dy, need_dx):
        x = self._restore()
        return type(self)._grad(dy, x, *self._args()) if need_dx else None


class LeakyReLU(_InputActivation):
    """x where x > 0, else ``negative_slope * x``, any shape."""

    _fn, _grad = F.leaky_relu, F.leaky_relu_backward

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = number(negative_slope, "negative_slope")

    def _args(self):
        return (self.negative_slope,)

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class ELU(_InputActivation):
    """x where x > 0, else ``alpha * (exp(x) - 1)``, any shape."""

    _fn, _grad = F.elu, F.elu_backward

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = number(alpha, "alpha")

    def _args(self):
        return (self.alpha,)

    def __repr__(self):
        return f"ELU(alpha={self.alpha})"


class SELU(_InputActivation):
    """``1.0507... * ELU(x, alpha=1.6733...)``, the self-normalising activation, any shape."""

    _fn, _grad = F.selu, F.selu_backward

    def __repr__(self):
        return "SELU()"


class GELU(_InputActivation):
    """``x * Phi(x)`` (``approximate="none"``, exact through erf) or its tanh approximation
    (``approximate="tanh"``), any shape."""

    _fn, _grad = F.gelu, F.gelu_backward

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _args(self):
        return (self.approximate,)

    def __repr__(self):
        return f"GELU(approximate={self.approximate!r})"


class SiLU(_InputActivation):
    """``x * sigmoid(x)`` (swish), any shape."""

    _fn, _grad = F.silu, F.silu_backward

    def __repr__(self):
        return "SiLU()"


class Softplus(_InputActivation):
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold``, any shape."""

    _fn, _grad = F.softplus, F.softplus_backward

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = number(beta, "beta"), number(threshold, "threshold")

    def _args(self):
        return self.beta, self.threshold

    def __repr__(self):
        return f"Softplus(beta={self.beta}, threshold={self.threshold})"


class Hardtanh(_InputActivation):
    """x clamped to ``[min_val, max_val]``, any shape."""

    _fn, _grad = F.hardtanh, F.hardtanh_backward

    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        self.min_val, self.max_val = number(min_val, "min_val"), number(max_val, "max_val")
        if self.max_val <= self.min_val:  # PyTorch's layer asks for this (F.hardtanh allows equal)
            raise ValueError(f"Hardtanh: max_val ({self.max_val}) must be greater than min_val "
                             f"({self.min_val})")

    def _args(self):
        return self.min_val, self.max_val

    def __repr__(self):
        return f"Hardtanh(min_val={self.min_val}, max_val={self.max_val})"


class PReLU(Module):
    """x where x > 0, else ``weight * x`` with a learnable ``weight`` (state-dict key ``"weight"``,
    as PyTorch's): one slope shared by every element (``num_parameters=1``) or one per channel of
    axis 1 (``num_parameters = C``; input (N, C, ...)). ``weight`` starts at ``init``.
    """

    _param_names = ("weight",)

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float32):
        super().__init__()
        self.num_parameters = positive_int(num_parameters, "num_parameters")
        self.init = number(init, "init")
        self.weight = Parameter(np.full(self.num_parameters, self.init, dtype=_float_dtype(dtype)))

    def output_shape(self, shape):
        shape = tuple(shape)
        if self.num_parameters > 1:
            channels = shape[1] if len(shape) >= 2 else 1
            if channels != self.num_parameters:
                raise ValueError(f"{self!r}: mismatch of parameter numbers and input channel size: "
                                 f"{self.num_parameters} slopes, input of shape {shape} has "
                                 f"{channels} channels (axis 1)")
        return shape

    def forward(self, x):
        x = self._input(x)
        with in_layer(self, x.shape):
            out = F.prelu(x, self.weight.data)
        self._save(x)
        return out

    def _backward(self, dy, need_dx):
        return self._param_backward(dy, need_dx, F.prelu_backward, self.weight.data)

    def __repr__(self):
        return f"PReLU(num_parameters={self.num_parameters})"


class _Softmax(Module):
    _log = False

    def __init__(self, dim=None):
        super().__init__()
        self.dim = None if dim is None else integer(dim, f"{type(self).__name__}: dim", "an int or None")

    def _fns(self):
        return (F.log_softmax, F.log_softmax_backward) if self._log else (F.softmax, F.softmax_backward)

    def forward(self, x):
        x = self._input(x)
        fn, _ = self._fns()
        dim = self.dim
        if dim is None:  # PyTorch's legacy implicit dimension, with its warning (from F)
            dim = 0 if len(x.shape) in (0, 1, 3) else 1
            out = fn(x, None)
        else:
            out = fn(x, dim)
        self._save((out, dim))
        return out

    def _backward(self, dy, need_dx):
        out, dim = self._restore()
        return self._fns()[1](dy, out, dim) if need_dx else None

    def output_shape(self, shape):
        shape = tuple(shape)
        size = max(len(shape), 1)
        if self.dim is not None and not -size <= self.dim < size:
            raise ValueError(f"{self!r}: dim {self.dim} is out of range for input of shape {shape}")
        return shape

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim})"


class Softmax(_Softmax):
    """``exp(x) / sum(exp(x))`` along ``dim`` (any axis; None is PyTorch's deprecated implicit
    choice, with its warning)."""


class LogSoftmax(_Softmax):
    """``log(softmax(x))`` along ``dim``, computed directly (no log of a rounded softmax)."""

    _log = True


class Identity(Module):
    """The input unchanged (any arguments are accepted and ignored, as PyTorch's)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        x = self._input(x)
        self._save(None)
        return x

    def _backward(self, dy, need_dx):
        self._restore()
        return dy if need_dx else None

    def _memory(self, in_shape, out_shape, itemsize):
        return 0, 0, 0
