"""cpu fully connected layer: NumPy's BLAS, large products split by rows across the threads."""
from .._memory import empty
from ._common import _matmul, _product_blocks, _products


def linear(x, w, b):
    """x (N, in) @ w.T + b -> (N, out), through BLAS."""
    out = _matmul(x, w.T, empty((x.shape[0], w.shape[0]), dtype=x.dtype))
    if b is not None:
        out += b
    return out


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None).

    One split for both products: the blocks of ``dx = dout @ w`` and ``dw = dout.T @ x`` (cut by
    the shapes only, see :func:`~._common._product_blocks`) are shared by the threads. dw's
    blocks are rows or columns of dw, never parts of the batch, so no partial sums are added.
    """
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    dw = empty(w.shape, dtype=w.dtype)  # reused memory: no page faults each step
    products = _product_blocks(dout, w, dx) if need_dx else []
    _products(products + _product_blocks(dout.T, x, dw))
    return dx, dw, (dout.sum(axis=0) if has_bias else None)

