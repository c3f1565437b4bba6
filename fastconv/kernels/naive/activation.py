"""Naive activations; the cpu tier shares sigmoid and tanh (NumPy's ufuncs are already SIMD
loops)."""
import math

import numpy as np


def relu(x):
    """max(x, 0), NaN propagating."""
    return np.where(x < 0, x.dtype.type(0), x)


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    return np.where(out > 0, dout, dout.dtype.type(0))


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dout, out):
    return dout * out * (1 - out)


def tanh(x):
    return np.tanh(x)


def tanh_backward(dout, out):
    return dout * (1 - out * out)


# --- the parameterised activations: one forward and one backward, chosen by name -------------------

#: The activations of :func:`activate` and :func:`activate_backward`, with what ``a`` and ``b``
#: mean for each: leaky_relu (a = negative_slope), elu (a = alpha, b = scale: SELU is elu with its
#: two constants), gelu and gelu_tanh (none), silu (none), softplus (a = beta, b = threshold),
#: hardtanh (a = min_val, b = max_val). Every tier numbers them in this order.
OPS = ("leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus", "hardtanh")

#: 1/sqrt(2), 1/sqrt(2*pi), sqrt(2/pi) and GELU's tanh-approximation coefficient.
SQRT1_2 = 0.70710678118654752440
INV_SQRT_2PI = 0.39894228040143267794
SQRT_2_PI = 0.79788456080286535588
KAPPA = 0.044715

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _constants(dtype, a, b):
    """``a, b, 1/2, 1, 1/sqrt(2), 1/sqrt(2 pi), sqrt(2/pi), kappa``, all in ``dtype``."""
    t = np.dtype(dtype).type
    return t(a), t(b), t(0.5), t(1), t(SQRT1_2), t(INV_SQRT_2PI), t(SQRT_2_PI), t(KAPPA)


def activate(x, op, a, b):
    """Elementwise activation ``op`` (a name in :data:`OPS`) of x, any shape, in x's dtype.

    ``a`` and ``b`` are the op's two parameters (see :data:`OPS`; ignored where it has none).
    """
    a, b, half, one, r2, _, k0, k1 = _constants(x.dtype, a, b)
    if op == "leaky_relu":
        out = np.where(x > 0, x, x * a)
    elif op == "elu":
        out = np.where(x <= 0, np.expm1(np.minimum(x, 0)) * (a * b), x * b)
    elif op == "gelu":
        out = half * x * (one + _erf(x * r2).astype(x.dtype))
    elif op == "gelu_tanh":
        out = half * x * (one + np.tanh(k0 * (x + k1 * x * x * x)))
    elif op == "silu":
        out = x * _sigmoid(x).astype(x.dtype)
    elif op == "softplus":
        out = np.where(x * a > b, x, np.log1p(np.exp(np.minimum(x * a, b))) / a)
    elif op == "hardtanh":
        out = np.where(x < a, a, np.where(x > b, b, x))
    else:
        raise ValueError(f"unknown activation {op!r}; one of {', '.join(OPS)}")
    return np.asarray(out, dtype=x.dtype)


def activate_backward(dout, x, op, a, b):
    """Gradient of :func:`activate` with respect to its input ``x`` (the forward's input)."""
    t = x.dtype.type
    a, b, half, one, r2, inv, k0, k1 = _constants(x.dtype, a, b)
    if op == "leaky_relu":
        dx = np.where(x > 0, dout, dout * a)
    elif op == "elu":
        dx = np.where(x <= 0, dout * (a * b) * np.exp(np.minimum(x, 0)), dout * b)
    elif op == "gelu":
        cdf = half * (one + _erf(x * r2).astype(x.dtype))
        dx = dout * (cdf + x * inv * np.exp(-half * x * x))
    elif op == "gelu_tanh":
        th = np.tanh(k0 * (x + k1 * x * x * x))
        dx = dout * (half * (one + th) + half * x * (one - th * th) * k0 * (one + t(3) * k1 * x * x))
    elif op == "silu":
        s = _sigmoid(x).astype(x.dtype)
        dx = dout * s * (one + x * (one - s))
    elif op == "softplus":
        z = np.exp(np.minimum(x * a, b))
        dx = np.where(x * a > b, dout, dout * z / (z + one))
    elif op == "hardtanh":
        dx = np.where((x <= a) | (x >= b), t(0), dout)
    else:
        raise ValueError(f"unknown activation {op!r}; one of {', '.join(OPS)}")
    return np.asarray(dx, dtype=x.dtype)


def prelu(x, weight):
    """PReLU of x (A, C, L) with one slope per channel: x where x > 0, else weight[c] * x.

    ``weight`` is (C,); a single shared slope is the view (A, 1, L) with weight (1,).
    """
    w = weight[None, :, None]
    return np.where(x > 0, x, x * w)


def prelu_backward(dout, x, weight, need_dx=True):
    """dout, x (A, C, L) -> (dx or None, dweight (C,)): dweight sums ``x * dout`` where x <= 0."""
    neg = x <= 0
    dweight = np.where(neg, x * dout, x.dtype.type(0)).sum(axis=(0, 2))
    dx = np.where(neg, dout * weight[None, :, None], dout) if need_dx else None
    return dx, dweight.astype(x.dtype)


def softmax(x, log):
    """Softmax (``log`` False) or log-softmax over axis 1 of x (outer, dim, inner)."""
    if x.size == 0:
        return x.copy()
    with np.errstate(invalid="ignore"):  # a row of -inf (or with NaN) gives NaN, as PyTorch's
        shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    return shifted - np.log(total) if log else e / total


def softmax_backward(dout, out, log):
    """Gradient of :func:`softmax` given its output ``out`` (outer, dim, inner)."""
    if log:
        return dout - np.exp(out) * dout.sum(axis=1, keepdims=True)
    return out * (dout - (dout * out).sum(axis=1, keepdims=True))
