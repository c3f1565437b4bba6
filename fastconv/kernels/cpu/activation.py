"""cpu activations: ReLU, the parameterised activations (one forward and one backward kernel for
every op of :data:`fastconv.kernels.naive.activation.OPS`, picked by an op code, so the whole
family compiles two kernels per dtype), PReLU and softmax, each a ``nogil`` kernel over a range of
elements, images or rows; sigmoid and tanh are the naive tier's NumPy ufuncs (already vectorised).

The parameterised kernels compute in the data's dtype: their constants come in an array of that
dtype, never as Python floats (which Numba would type float64).
"""
import math

import numpy as np
from numba import njit

from .._memory import empty
from .._activation_ops import CODES as _CODES, activation, activation_grad
from ..naive.activation import (INV_SQRT_2PI, KAPPA, SQRT1_2, SQRT_2_PI, sigmoid, sigmoid_backward,
                                tanh, tanh_backward)
from ._common import _elements, _planes

__all__ = ["relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
           "activate", "activate_backward", "prelu", "prelu_backward", "softmax",
           "softmax_backward"]

_consts = {}


@njit(nogil=True, cache=True)
def _relu_kernel(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = 0 if v < 0 else v


@njit(nogil=True, cache=True)
def _relu_backward_kernel(dout, y, dx):
    for i in range(dout.size):
        dx[i] = dout[i] if y[i] > 0 else 0


def relu(x):
    """max(x, 0), NaN propagating; one fused pass."""
    out = empty(x.shape, x.dtype)
    xf, of = x.reshape(-1), out.reshape(-1)
    _elements(lambda a, b: _relu_kernel(xf[a:b], of[a:b]), xf.size)
    return out


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    dx = empty(dout.shape, dout.dtype)
    df, yf, xf = dout.reshape(-1), out.reshape(-1), dx.reshape(-1)
    _elements(lambda a, b: _relu_backward_kernel(df[a:b], yf[a:b], xf[a:b]), df.size)
    return dx


_activation = njit(inline="always")(activation)
_activation_grad = njit(inline="always")(activation_grad)


@njit(nogil=True, cache=True)
def _act_kernel(x, op, a, b, k, out):
    """out = op(x) over flat arrays (parameters as :mod:`fastconv.kernels._activation_ops`)."""
    half = k[4]
    one = k[5]
    for i in range(x.size):
        out[i] = _activation(x[i], op, a, b, k, half, one)


@njit(nogil=True, cache=True)
def _act_backward_kernel(dout, x, op, a, b, k, dx):
    """dx = dout * op'(x) over flat arrays (parameters as :func:`_act_kernel`)."""
    half = k[4]
    one = k[5]
    for i in range(x.size):
        dx[i] = _activation_grad(dout[i], x[i], op, a, b, k, half, one)


def _constants(dtype):
    dt = np.dtype(dtype)
    if dt not in _consts:
        _consts[dt] = np.array([SQRT1_2, INV_SQRT_2PI, SQRT_2_PI, KAPPA, 0.5, 1.0], dtype=dt)
    return _consts[dt]


def activate(x, op, a, b):
    """Elementwise activation ``op`` of x; see :func:`fastconv.kernels.naive.activate`."""
    out = empty(x.shape, x.dtype)
    xf, of = x.reshape(-1), out.reshape(-1)
    code, k, t = _CODES[op], _constants(x.dtype), x.dtype.type
    a, b = t(a), t(b)
    _elements(lambda lo, hi: _act_kernel(xf[lo:hi], code, a, b, k, of[lo:hi]), xf.size)
    return out


def activate_backward(dout, x, op, a, b):
    """Gradient of :func:`activate` with respect to its input ``x``."""
    dx = empty(x.shape, x.dtype)
    df, xf, gf = dout.reshape(-1), x.reshape(-1), dx.reshape(-1)
    code, k, t = _CODES[op], _constants(x.dtype), x.dtype.type
    a, b = t(a), t(b)
    _elements(lambda lo, hi: _act_backward_kernel(df[lo:hi], xf[lo:hi], code, a, b, k, gf[lo:hi]),
              xf.size)
    return dx


@njit(nogil=True, cache=True)
def _prelu_kernel(x, weight, out, a0, a1):
    """PReLU of x (A, C, L) for a in [a0, a1)."""
    _, c_in, length = x.shape
    for a in range(a0, a1):
        for c in range(c_in):
            w = weight[c]
            for i in range(length):
                v = x[a, c, i]
                out[a, c, i] = v if v > 0 else v * w


@njit(nogil=True, cache=True)
def _prelu_backward_kernel(dout, x, weight, need_dx, zero, dweight, dx, c0, c1):
    """Channels [c0, c1) of x (A, C, L): dweight[c] = sum of x * dout where x <= 0, and dx;
    ``zero`` is 0 in x's dtype."""
    n_a, _, length = x.shape
    for c in range(c0, c1):
        w = weight[c]
        acc = zero
        for a in range(n_a):
            for i in range(length):
                v = x[a, c, i]
                g = dout[a, c, i]
                if v <= 0:
                    acc += v * g
                    g = g * w
                if need_dx:
                    dx[a, c, i] = g
        dweight[c] = acc


def prelu(x, weight):
    """PReLU of x (A, C, L) with weight (C,)."""
    out = empty(x.shape, x.dtype)
    _planes(lambda lo, hi: _prelu_kernel(x, weight, out, lo, hi), x, axis=0)
    return out


def prelu_backward(dout, x, weight, need_dx=True):
    """dout, x (A, C, L) -> (dx or None, dweight (C,))."""
    dweight = np.empty(x.shape[1], dtype=x.dtype)
    dx = empty(x.shape, x.dtype) if need_dx else empty((1, 1, 1), x.dtype)
    zero = x.dtype.type(0)
    _planes(lambda lo, hi: _prelu_backward_kernel(dout, x, weight, need_dx, zero, dweight, dx, lo, hi),
            x, axis=1)
    return (dx if need_dx else None), dweight


@njit(nogil=True, cache=True)
def _softmax_kernel(x, log, out, o0, o1):
    """Softmax or log-softmax over axis 1 of x (outer, dim, inner) for outer rows [o0, o1): per
    row the maximum (NaN wins), the exponentials' sum, then the normalised values, each pass
    reading along the contiguous inner axis."""
    _, dim, inner = x.shape
    m = np.empty(inner, dtype=x.dtype)
    s = np.empty(inner, dtype=x.dtype)
    for o in range(o0, o1):
        for i in range(inner):
            m[i] = x[o, 0, i]
            s[i] = 0
        for j in range(1, dim):
            for i in range(inner):
                v = x[o, j, i]
                if v > m[i] or v != v:
                    m[i] = v
        for j in range(dim):
            for i in range(inner):
                e = math.exp(x[o, j, i] - m[i])
                s[i] += e
                if not log:
                    out[o, j, i] = e
        if log:
            for i in range(inner):
                s[i] = math.log(s[i])
        for j in range(dim):
            for i in range(inner):
                if log:
                    out[o, j, i] = (x[o, j, i] - m[i]) - s[i]
                else:
                    out[o, j, i] = out[o, j, i] / s[i]


@njit(nogil=True, cache=True)
def _softmax_backward_kernel(dout, out, log, dx, o0, o1):
    """Gradient of :func:`_softmax_kernel` from its output, outer rows [o0, o1)."""
    _, dim, inner = out.shape
    s = np.empty(inner, dtype=out.dtype)
    for o in range(o0, o1):
        for i in range(inner):
            s[i] = 0
        for j in range(dim):
            for i in range(inner):
                s[i] += dout[o, j, i] if log else dout[o, j, i] * out[o, j, i]
        for j in range(dim):
            for i in range(inner):
                if log:
                    dx[o, j, i] = dout[o, j, i] - math.exp(out[o, j, i]) * s[i]
                else:
                    dx[o, j, i] = out[o, j, i] * (dout[o, j, i] - s[i])


def softmax(x, log):
    """Softmax (``log`` False) or log-softmax over axis 1 of x (outer, dim, inner)."""
    out = empty(x.shape, x.dtype)
    if x.size == 0:
        return out
    _planes(lambda lo, hi: _softmax_kernel(x, bool(log), out, lo, hi), x, axis=0)
    return out


def softmax_backward(dout, out, log):
    """Gradient of :func:`softmax` given its output (outer, dim, inner)."""
    dx = empty(out.shape, out.dtype)
    if out.size == 0:
        return dx
    _planes(lambda lo, hi: _softmax_backward_kernel(dout, out, bool(log), dx, lo, hi), out, axis=0)
    return dx
