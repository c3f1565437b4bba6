"""Naive activations; the cpu tier shares sigmoid and tanh (NumPy's ufuncs are already SIMD
loops)."""
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
