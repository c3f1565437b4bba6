"""Naive fully connected layer: NumPy's matrix product."""


def linear(x, w, b):
    """x (N, in) @ w.T, w (out, in), plus b (out,) -> (N, out)."""
    out = x @ w.T
    if b is not None:
        out += b
    return out


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None)."""
    dx = dout @ w if need_dx else None
    return dx, dout.T @ x, (dout.sum(axis=0) if has_bias else None)
