"""cpu activations: ReLU as fused ``nogil`` kernels over element ranges; sigmoid and tanh are the
naive tier's NumPy ufuncs (already vectorised)."""
from numba import njit

from .._memory import empty
from ..naive.activation import sigmoid, sigmoid_backward, tanh, tanh_backward
from ._common import _elements

__all__ = ["relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward"]


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

