"""cpu fully connected layer: NumPy's BLAS, large products split by rows across the threads."""
import numpy as np

from .. import _workers
from .._memory import empty
from .._workers import split
from . import _common
from ._common import _matmul


def linear(x, w, b):
    """x (N, in) @ w.T + b -> (N, out), through BLAS."""
    out = _matmul(x, w.T, empty((x.shape[0], w.shape[0]), dtype=x.dtype))
    if b is not None:
        out += b
    return out


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None).

    One split for both products: thread i computes its share of dx's rows and of dw's rows.
    """
    (n, k_in), k_out = x.shape, w.shape[0]
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    dw = np.empty(w.shape, dtype=w.dtype)
    dout_t = dout.T
    if n * k_in * k_out < _common.SPLIT_GEMM or min(n, k_out) < 2:
        if need_dx:
            _matmul(dout, w, dx)
        _matmul(dout_t, x, dw)
    else:
        parts = _workers.threads()

        def share(i, _):
            lo, hi = n * i // parts, n * (i + 1) // parts
            if need_dx and hi > lo:
                np.matmul(dout[lo:hi], w, out=dx[lo:hi])
            lo, hi = k_out * i // parts, k_out * (i + 1) // parts
            if hi > lo:
                np.matmul(dout_t[lo:hi], x, out=dw[lo:hi])
        split(share, parts)
    return dx, dw, (dout.sum(axis=0) if has_bias else None)

