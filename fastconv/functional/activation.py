"""Activations and their gradients, with PyTorch's names, arguments and defaults.

relu, sigmoid and tanh, softmax and log_softmax take the forward's *output* in their gradient;
leaky_relu, elu, selu, gelu, silu, softplus, hardtanh and prelu take its *input* (as PyTorch's
backward formulas do). Every function accepts any shape (prelu: a channel axis 1 when it has one
slope per channel), float32 or float64, and ``backend=None`` as the rest of the functional API.
"""
import warnings

import numpy as np

from .._backend import kernels, resolve
from .._checks import integer, number
from ._common import _array, _same_shape

__all__ = ["relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
           "leaky_relu", "leaky_relu_backward", "elu", "elu_backward", "selu", "selu_backward",
           "gelu", "gelu_backward", "silu", "silu_backward", "softplus", "softplus_backward",
           "hardtanh", "hardtanh_backward", "prelu", "prelu_backward", "softmax", "softmax_backward",
           "log_softmax", "log_softmax_backward"]

#: SELU's constants (Klambauer et al. 2017), as PyTorch's.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _from_output(op, dout, out, backend):
    """Call the tier's ``op(dout, out)``: an activation's gradient given its forward output."""
    out = _array(out, "out")
    dout = _array(dout, "dout", out.dtype)
    _same_shape(dout, out.shape, "dout")
    return getattr(kernels(resolve(backend, dout, out)), op)(dout, out)


def relu(x, backend=None):
    """max(x, 0), any shape."""
    return kernels(resolve(backend, x)).relu(_array(x, "x"))


def relu_backward(dout, out, backend=None):
    """Gradient of :func:`relu` given its output ``out``."""
    return _from_output("relu_backward", dout, out, backend)


def sigmoid(x, backend=None):
    """1 / (1 + exp(-x)), any shape, without overflow."""
    return kernels(resolve(backend, x)).sigmoid(_array(x, "x"))


def sigmoid_backward(dout, out, backend=None):
    """Gradient of :func:`sigmoid` given its output ``out``."""
    return _from_output("sigmoid_backward", dout, out, backend)


def tanh(x, backend=None):
    """Hyperbolic tangent, any shape."""
    return kernels(resolve(backend, x)).tanh(_array(x, "x"))


def tanh_backward(dout, out, backend=None):
    """Gradient of :func:`tanh` given its output ``out``."""
    return _from_output("tanh_backward", dout, out, backend)


# --- parameterised activations (the gradient takes the forward's input) --------------------------

def _forward(op, x, a, b, backend):
    return kernels(resolve(backend, x)).activate(_array(x, "x"), op, a, b)


def _backward(op, dout, x, a, b, backend):
    name = resolve(backend, dout, x)
    x = _array(x, "x")
    dout = _array(dout, "dout", x.dtype)
    _same_shape(dout, x.shape, "dout")
    return kernels(name).activate_backward(dout, x, op, a, b)


def leaky_relu(x, negative_slope=0.01, backend=None):
    """x where x > 0, else ``negative_slope * x``; any shape."""
    return _forward("leaky_relu", x, number(negative_slope, "negative_slope"), 0.0, backend)


def leaky_relu_backward(dout, x, negative_slope=0.01, backend=None):
    """Gradient of :func:`leaky_relu` given its input ``x``: dout, or ``negative_slope * dout``
    where x <= 0."""
    return _backward("leaky_relu", dout, x, number(negative_slope, "negative_slope"), 0.0, backend)


def elu(x, alpha=1.0, backend=None):
    """x where x > 0, else ``alpha * (exp(x) - 1)``; any shape."""
    return _forward("elu", x, number(alpha, "alpha"), 1.0, backend)


def elu_backward(dout, x, alpha=1.0, backend=None):
    """Gradient of :func:`elu` given its input ``x``."""
    return _backward("elu", dout, x, number(alpha, "alpha"), 1.0, backend)


def selu(x, backend=None):
    """``SELU_SCALE * elu(x, SELU_ALPHA)``; any shape."""
    return _forward("elu", x, SELU_ALPHA, SELU_SCALE, backend)


def selu_backward(dout, x, backend=None):
    """Gradient of :func:`selu` given its input ``x``."""
    return _backward("elu", dout, x, SELU_ALPHA, SELU_SCALE, backend)


def _gelu_op(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return "gelu" if approximate == "none" else "gelu_tanh"


def gelu(x, approximate="none", backend=None):
    """``x * Phi(x)`` with Phi the standard normal CDF (``approximate="none"``, through erf), or
    PyTorch's tanh approximation ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    return _forward(_gelu_op(approximate), x, 0.0, 0.0, backend)


def gelu_backward(dout, x, approximate="none", backend=None):
    """Gradient of :func:`gelu` given its input ``x``."""
    return _backward(_gelu_op(approximate), dout, x, 0.0, 0.0, backend)


def silu(x, backend=None):
    """``x * sigmoid(x)`` (swish); any shape."""
    return _forward("silu", x, 0.0, 0.0, backend)


def silu_backward(dout, x, backend=None):
    """Gradient of :func:`silu` given its input ``x``."""
    return _backward("silu", dout, x, 0.0, 0.0, backend)


def softplus(x, beta=1.0, threshold=20.0, backend=None):
    """``log(1 + exp(beta * x)) / beta``, and x itself where ``beta * x > threshold``."""
    return _forward("softplus", x, number(beta, "beta"), number(threshold, "threshold"), backend)


def softplus_backward(dout, x, beta=1.0, threshold=20.0, backend=None):
    """Gradient of :func:`softplus` given its input ``x``."""
    return _backward("softplus", dout, x, number(beta, "beta"), number(threshold, "threshold"),
                     backend)


def _bounds(min_val, max_val):
    lo, hi = number(min_val, "min_val"), number(max_val, "max_val")
    if lo > hi:
        raise ValueError(f"hardtanh: min_val ({lo}) cannot be greater than max_val ({hi})")
    return lo, hi


def hardtanh(x, min_val=-1.0, max_val=1.0, backend=None):
    """x clamped to ``[min_val, max_val]`` (NaN stays NaN); any shape."""
    return _forward("hardtanh", x, *_bounds(min_val, max_val), backend)


def hardtanh_backward(dout, x, min_val=-1.0, max_val=1.0, backend=None):
    """Gradient of :func:`hardtanh` given its input ``x``: dout strictly inside the bounds, else 0
    (PyTorch's rule)."""
    return _backward("hardtanh", dout, x, *_bounds(min_val, max_val), backend)


# --- PReLU ------------------------------------------------------------------------------------

def _prelu_view(x, weight):
    """x as (A, C, L) for weight (C,): C = 1 (one shared slope) views x as (1, 1, size)."""
    if len(weight.shape) != 1:
        raise ValueError(f"prelu: weight must be 1-D (num_parameters,), got shape {tuple(weight.shape)}")
    c = weight.shape[0]
    if c == 1:
        return x.reshape(1, 1, x.size)
    channels = x.shape[1] if len(x.shape) >= 2 else 1
    if channels != c:
        raise ValueError(f"prelu: mismatch of parameter numbers and input channel size: weight has "
                         f"{c} slopes, input of shape {tuple(x.shape)} has {channels} channels "
                         "(axis 1)")
    return x.reshape(x.shape[0], c, int(np.prod(x.shape[2:], dtype=np.int64)))


def prelu(x, weight, backend=None):
    """x where x > 0, else ``weight[c] * x``: weight (1,) is one slope for all, weight (C,) one
    per channel of axis 1 (x of at least 2 dimensions, ``C = x.shape[1]``)."""
    name = resolve(backend, x, weight)
    x = _array(x, "x")
    weight = _array(weight, "weight", x.dtype)
    return kernels(name).prelu(_prelu_view(x, weight), weight).reshape(x.shape)


def prelu_backward(dout, x, weight, need_dx=True, backend=None):
    """Gradients of :func:`prelu` given its input: ``(dx or None, dweight)`` with dweight as weight."""
    name = resolve(backend, dout, x, weight)
    x = _array(x, "x")
    weight = _array(weight, "weight", x.dtype)
    dout = _array(dout, "dout", x.dtype)
    _same_shape(dout, x.shape, "dout")
    x3 = _prelu_view(x, weight)
    dx, dweight = kernels(name).prelu_backward(dout.reshape(x3.shape), x3, weight, bool(need_dx))
    return (dx.reshape(x.shape) if dx is not None else None), dweight


# --- softmax ----------------------------------------------------------------------------------

def _softmax_dim(dim, ndim, fn):
    """``dim`` as an index in ``[0, ndim)`` (a 0-D input counts as 1-D); None picks PyTorch's
    legacy implicit dimension (0 for 0-, 1- and 3-D input, else 1) with its deprecation warning."""
    if dim is None:
        dim = 0 if ndim in (0, 1, 3) else 1
        warnings.warn(f"Implicit dimension choice for {fn} has been deprecated. Change the call "
                      f"to include dim=X as an argument.", UserWarning, stacklevel=4)
    dim = integer(dim, f"{fn}: dim")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise ValueError(f"{fn}: dimension out of range (expected to be in range of "
                         f"[{-size}, {size - 1}], but got {dim})")
    return int(dim) % size


def _view3(a, dim):
    """a as (outer, a.shape[dim], inner)."""
    shape = tuple(a.shape) or (1,)
    outer = int(np.prod(shape[:dim], dtype=np.int64))
    inner = int(np.prod(shape[dim + 1:], dtype=np.int64))
    return a.reshape(outer, shape[dim], inner)


def _softmax(x, dim, log, backend, fn):
    name = resolve(backend, x)
    x = _array(x, "x")
    dim = _softmax_dim(dim, len(x.shape), fn)
    return kernels(name).softmax(_view3(x, dim), log).reshape(x.shape)


def _softmax_grad(dout, out, dim, log, backend, fn):
    name = resolve(backend, dout, out)
    out = _array(out, "out")
    dout = _array(dout, "dout", out.dtype)
    _same_shape(dout, out.shape, "dout")
    dim = _softmax_dim(dim, len(out.shape), fn)
    return kernels(name).softmax_backward(_view3(dout, dim), _view3(out, dim), log).reshape(out.shape)


def softmax(x, dim=None, backend=None):
    """``exp(x) / sum(exp(x))`` along ``dim`` (any axis, negative counts from the end), computed
    with the maximum subtracted. ``dim=None`` is PyTorch's deprecated implicit choice (0 for 0-,
    1- and 3-D input, else 1), with its warning."""
    return _softmax(x, dim, False, backend, "softmax")


def softmax_backward(dout, out, dim, backend=None):
    """Gradient of :func:`softmax` given its output: ``out * (dout - sum(dout * out, dim))``."""
    return _softmax_grad(dout, out, dim, False, backend, "softmax")


def log_softmax(x, dim=None, backend=None):
    """``x - max - log(sum(exp(x - max)))`` along ``dim`` (``dim`` as :func:`softmax`)."""
    return _softmax(x, dim, True, backend, "log_softmax")


def log_softmax_backward(dout, out, dim, backend=None):
    """Gradient of :func:`log_softmax` given its output: ``dout - exp(out) * sum(dout, dim)``."""
    return _softmax_grad(dout, out, dim, True, backend, "log_softmax")
