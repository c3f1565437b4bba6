"""cuda elementwise kernels: the unary maps and binary gradients that the activations and dropout
use, ``scale_rows`` (channel dropout, the chain rule of the losses), the in-place ``axpby`` (running
statistics) and ``clamp`` (gradient clipping), and ``full`` and ``zeros_like`` (new state)."""
import math

import numpy as np
from numba import cuda, float32

from ._launch import _A1, _dev, _empty, _flat, _in_place, _launch, _scalar, _sigs


_RELU, _SIGMOID, _TANH = 0, 1, 2
_RELU_BACK, _SIGMOID_BACK, _TANH_BACK, _MUL = 0, 1, 2, 3


@cuda.jit(cache=True)
def _unary_kernel(x, op, one, out):
    """out = relu(x) (op 0), sigmoid(x) (op 1) or tanh(x) (op 2), flat arrays; ``one`` in x's dtype."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if op == _RELU:
            if v < 0:
                out[i] = 0
            else:
                out[i] = v
        elif op == _SIGMOID:
            e = math.exp(-abs(v))
            if v >= 0:
                out[i] = one / (one + e)
            else:
                out[i] = e / (one + e)
        else:
            out[i] = math.tanh(v)


@cuda.jit(cache=True)
def _binary_kernel(a, b, op, out):
    """Gradients from the forward output b: relu (op 0), sigmoid (1), tanh (2); op 3: a * b."""
    one = float32(1)
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        g = a[i]
        y = b[i]
        if op == _RELU_BACK:
            if y > 0:
                out[i] = g
            else:
                out[i] = 0
        elif op == _SIGMOID_BACK:
            out[i] = g * y * (one - y)
        elif op == _TANH_BACK:
            out[i] = g * (one - y * y)
        else:
            out[i] = g * y


@cuda.jit(cache=True)
def _axpby_kernel(y, x, a, b):
    """y = y * a + x * b in place, flat arrays, a and b in y's dtype."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = y[i] * a + x[i] * b


@cuda.jit(cache=True)
def _clamp_kernel(y, lo, hi):
    """y = min(max(y, lo), hi) in place (flat), NaN kept, as ``np.clip``."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        v = y[i]
        if v < lo:
            v = lo
        if v > hi:
            v = hi
        y[i] = v


@cuda.jit(cache=True)
def _scale_rows_kernel(a, s, length, out):
    """out[i] = a[i] * s[i // length] (flat arrays): row r of a (rows, length) times s[r]."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = a[i] * s[i // length]


def _unary(x, op):
    x = _dev(x)
    out = _empty(x.shape, x.dtype)
    _unary_kernel[_launch(x.size)](_flat(x), op, _scalar(x.dtype, 1), _flat(out))
    return out


def _binary(a, b, op):
    b = _dev(b)
    a = _dev(a, b.dtype)
    out = _empty(a.shape, a.dtype)
    _binary_kernel[_launch(a.size)](_flat(a), _flat(b), op, _flat(out))
    return out


def axpby(y, x, a, b):
    """``y = y * a + x * b`` in place on the device (``y`` a device array, ``x`` of its shape).

    For running averages such as BatchNorm's running statistics: ``axpby(running_mean,
    batch_mean, 1 - momentum, momentum)`` is NumPy's ``running_mean *= 1 - momentum;
    running_mean += momentum * batch_mean``, operation for operation.
    """
    y = _in_place(y, "y")
    x = _dev(x, y.dtype)
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"axpby: x has shape {tuple(x.shape)}, y has {tuple(y.shape)}")
    _axpby_kernel[_launch(y.size)](_flat(y), _flat(x), _scalar(y.dtype, a), _scalar(y.dtype, b))


def clamp(y, lo, hi):
    """``np.clip(y, lo, hi, out=y)`` in place on the device (``y`` a device array)."""
    y = _in_place(y, "y")
    _clamp_kernel[_launch(y.size)](_flat(y), _scalar(y.dtype, lo), _scalar(y.dtype, hi))


def scale_rows(a, s):
    """``a * s[:, None]`` as a new device array: ``a`` (rows, length), ``s`` (rows,) in a's dtype
    (host or device arrays)."""
    a = _dev(a)
    s = _dev(s, a.dtype)
    rows, length = a.shape
    if tuple(s.shape) != (rows,):
        raise ValueError(f"scale_rows: s has shape {tuple(s.shape)}, expected ({rows},)")
    out = _empty(a.shape, a.dtype)
    _scale_rows_kernel[_launch(a.size)](_flat(a), s, max(length, 1), _flat(out))
    return out


def full(shape, value, dtype):
    """A device array of ``shape`` and ``dtype`` filled with ``value`` (one host-to-device copy)."""
    return cuda.to_device(np.full(tuple(shape), value, dtype=dtype))


def zeros_like(a):
    """A zero-filled device array of ``a``'s shape and dtype (for optimizer state buffers)."""
    return cuda.to_device(np.zeros(tuple(a.shape), dtype=a.dtype))


KERNELS = {
    "_unary_kernel": (_unary_kernel, _sigs(f"void({_A1}, int64, {{f}}, {_A1})")),
    "_binary_kernel": (_binary_kernel, _sigs(f"void({_A1}, {_A1}, int64, {_A1})")),
    "_scale_rows_kernel": (_scale_rows_kernel, _sigs(f"void({_A1}, {_A1}, int64, {_A1})")),
    "_axpby_kernel": (_axpby_kernel, _sigs(f"void({_A1}, {_A1}, {{f}}, {{f}})")),
    "_clamp_kernel": (_clamp_kernel, _sigs(f"void({_A1}, {{f}}, {{f}})")),
}
