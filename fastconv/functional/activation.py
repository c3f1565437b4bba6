"""Elementwise activations and their gradients (each gradient takes the forward's output)."""
from .._backend import kernels, resolve
from ._common import _array, _same_shape

__all__ = ["relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward"]


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
