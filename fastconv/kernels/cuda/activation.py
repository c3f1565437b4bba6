"""cuda activations: ReLU, sigmoid and tanh through the elementwise kernels; the parameterised
activations of :data:`fastconv.kernels.naive.activation.OPS` as one forward and one backward kernel
picked by an op code (as the cpu tier's); PReLU (elementwise, plus a per-channel reduction for the
slope gradient) and softmax / log-softmax (one thread per reduced row).

Constants reach the kernels in the data's dtype (a cached six-element device array, and the op's
parameters as scalars of that dtype), so float32 kernels hold no float64 instruction.
"""
import math

import numpy as np
from numba import cuda, float32

from .._activation_ops import CODES as _CODES, activation, activation_grad
from ..naive.activation import INV_SQRT_2PI, KAPPA, SQRT1_2, SQRT_2_PI
from ._launch import (REDUCE_THREADS, _A1, _A3, _block_sum, _cache, _dev, _empty, _flat, _launch,
                      _reduce_launch, _scalar, _sigs)
from .elementwise import (_RELU, _RELU_BACK, _SIGMOID, _SIGMOID_BACK, _TANH, _TANH_BACK, _binary,
                          _unary)



def relu(x):
    """max(x, 0), NaN propagating."""
    return _unary(x, _RELU)


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    return _binary(dout, out, _RELU_BACK)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    return _unary(x, _SIGMOID)


def sigmoid_backward(dout, out):
    return _binary(dout, out, _SIGMOID_BACK)


def tanh(x):
    return _unary(x, _TANH)


def tanh_backward(dout, out):
    return _binary(dout, out, _TANH_BACK)


_activation = cuda.jit(device=True, inline="always", cache=True)(activation)
_activation_grad = cuda.jit(device=True, inline="always", cache=True)(activation_grad)


@cuda.jit(cache=True)
def _act_kernel(x, op, a, b, k, out):
    """out = op(x) over flat arrays (parameters as :mod:`fastconv.kernels._activation_ops`)."""
    half = k[4]
    one = k[5]
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _activation(x[i], op, a, b, k, half, one)


@cuda.jit(cache=True)
def _act_backward_kernel(dout, x, op, a, b, k, dx):
    """dx = dout * op'(x) over flat arrays (parameters as :func:`_act_kernel`)."""
    half = k[4]
    one = k[5]
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = _activation_grad(dout[i], x[i], op, a, b, k, half, one)


def _constants(dtype):
    key = ("activation", np.dtype(dtype))
    if key not in _cache:
        _cache[key] = cuda.to_device(np.array([SQRT1_2, INV_SQRT_2PI, SQRT_2_PI, KAPPA, 0.5, 1.0],
                                              dtype=dtype))
    return _cache[key]


def activate(x, op, a, b):
    """Elementwise activation ``op`` of x; see :func:`fastconv.kernels.naive.activate`."""
    x = _dev(x)
    dt = x.dtype
    out = _empty(x.shape, dt)
    _act_kernel[_launch(x.size)](_flat(x), _CODES[op], _scalar(dt, a), _scalar(dt, b),
                                 _constants(dt), _flat(out))
    return out


def activate_backward(dout, x, op, a, b):
    """Gradient of :func:`activate` with respect to its input ``x``."""
    x = _dev(x)
    dt = x.dtype
    dout = _dev(dout, dt)
    dx = _empty(x.shape, dt)
    _act_backward_kernel[_launch(x.size)](_flat(dout), _flat(x), _CODES[op], _scalar(dt, a),
                                          _scalar(dt, b), _constants(dt), _flat(dx))
    return dx


@cuda.jit(cache=True)
def _prelu_kernel(dout, x, weight, backward, out):
    """x (A, C, L): out = PReLU(x) (``backward`` False) or its input gradient from dout."""
    _, c_in, length = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i = t % length
        r = t // length
        c = r % c_in
        a = r // c_in
        v = x[a, c, i]
        g = v
        if backward:
            g = dout[a, c, i]
        if v > 0:
            out[a, c, i] = g
        else:
            out[a, c, i] = g * weight[c]


@cuda.jit(cache=True)
def _prelu_grad_kernel(dout, x, dweight):
    """One block per channel of x (A, C, L): dweight[c] = sum of x * dout where x <= 0."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    n_a, c_in, length = x.shape
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, c_in, cuda.gridDim.x):
        acc = float32(0)
        for t in range(tid, n_a * length, cuda.blockDim.x):
            v = x[t // length, c, t % length]
            if v <= 0:
                acc += v * dout[t // length, c, t % length]
        total = _block_sum(part, acc)
        if tid == 0:
            dweight[c] = total


def prelu(x, weight):
    """PReLU of x (A, C, L) with weight (C,)."""
    x = _dev(x)
    weight = _dev(weight, x.dtype)
    out = _empty(x.shape, x.dtype)
    _prelu_kernel[_launch(x.size)](x, x, weight, False, out)
    return out


def prelu_backward(dout, x, weight, need_dx=True):
    """dout, x (A, C, L) -> (dx or None, dweight (C,)), on the device."""
    x = _dev(x)
    dt = x.dtype
    dout, weight = _dev(dout, dt), _dev(weight, dt)
    n_a, c, length = x.shape
    dweight = _empty(c, dt)
    _prelu_grad_kernel[_reduce_launch(c, n_a * length)](dout, x, dweight)
    dx = None
    if need_dx:
        dx = _empty(x.shape, dt)
        _prelu_kernel[_launch(x.size)](dout, x, weight, True, dx)
    return dx, dweight


@cuda.jit(cache=True)
def _softmax_kernel(x, log, out):
    """Softmax or log-softmax over axis 1 of x (outer, dim, inner), one thread per (outer, inner)
    row; neighbouring threads read neighbouring inner positions."""
    outer, dim, inner = x.shape
    for r in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = r // inner
        i = r % inner
        m = x[o, 0, i]
        for j in range(1, dim):
            v = x[o, j, i]
            if v > m or v != v:
                m = v
        s = math.exp(x[o, 0, i] - m)
        for j in range(1, dim):
            s += math.exp(x[o, j, i] - m)
        if log:
            lse = math.log(s)
            for j in range(dim):
                out[o, j, i] = (x[o, j, i] - m) - lse
        else:
            for j in range(dim):
                out[o, j, i] = math.exp(x[o, j, i] - m) / s


@cuda.jit(cache=True)
def _softmax_backward_kernel(dout, out, log, dx):
    """Gradient of :func:`_softmax_kernel` from its output, one thread per row."""
    outer, dim, inner = out.shape
    for r in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = r // inner
        i = r % inner
        if log:
            s = dout[o, 0, i]
            for j in range(1, dim):
                s += dout[o, j, i]
            for j in range(dim):
                dx[o, j, i] = dout[o, j, i] - math.exp(out[o, j, i]) * s
        else:
            s = dout[o, 0, i] * out[o, 0, i]
            for j in range(1, dim):
                s += dout[o, j, i] * out[o, j, i]
            for j in range(dim):
                dx[o, j, i] = out[o, j, i] * (dout[o, j, i] - s)


def softmax(x, log):
    """Softmax (``log`` False) or log-softmax over axis 1 of x (outer, dim, inner)."""
    x = _dev(x)
    out = _empty(x.shape, x.dtype)
    if x.size == 0:
        return out
    _softmax_kernel[_launch(x.shape[0] * x.shape[2])](x, bool(log), out)
    return out


def softmax_backward(dout, out, log):
    """Gradient of :func:`softmax` given its output (outer, dim, inner)."""
    out = _dev(out)
    dout = _dev(dout, out.dtype)
    dx = _empty(out.shape, out.dtype)
    if out.size == 0:
        return dx
    _softmax_backward_kernel[_launch(out.shape[0] * out.shape[2])](dout, out, bool(log), dx)
    return dx


KERNELS = {
    "_act_kernel": (_act_kernel, _sigs(f"void({_A1}, int64, {{f}}, {{f}}, {_A1}, {_A1})")),
    "_act_backward_kernel": (_act_backward_kernel,
                             _sigs(f"void({_A1}, {_A1}, int64, {{f}}, {{f}}, {_A1}, {_A1})")),
    "_prelu_kernel": (_prelu_kernel, _sigs(f"void({_A3}, {_A3}, {_A1}, boolean, {_A3})")),
    "_prelu_grad_kernel": (_prelu_grad_kernel, _sigs(f"void({_A3}, {_A3}, {_A1})")),
    "_softmax_kernel": (_softmax_kernel, _sigs(f"void({_A3}, boolean, {_A3})")),
    "_softmax_backward_kernel": (_softmax_backward_kernel, _sigs(f"void({_A3}, {_A3}, boolean, {_A3})")),
}
