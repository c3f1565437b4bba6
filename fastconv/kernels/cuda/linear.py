"""cuda fully connected layer: the tiled GEMM with a per-column bias; db is summed while dout
is transposed."""
from ._gemm import _channel_sum, _gemm
from ._launch import _dev


def linear(x, w, b):
    """x (N, in) @ w.T, w (out, in), plus b (out,) -> (N, out)."""
    x = _dev(x)
    w = _dev(w, x.dtype)
    return _gemm(x, w, trans_b=True, bias=None if b is None else _dev(b, x.dtype),
                 bias_mode=0 if b is None else 2)


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None)."""
    dout = _dev(dout)
    x = _dev(x, dout.dtype)
    w = _dev(w, dout.dtype)
    n, k = dout.shape
    dout_t, db = _channel_sum(dout.reshape(n, k, 1))
    dw = _gemm(dout_t.reshape(k, n), x)
    dx = _gemm(dout, w) if need_dx else None
    return dx, dw, (db if has_bias else None)
