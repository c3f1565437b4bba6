"""Dense products: :func:`linear` and its gradients."""
from collections import namedtuple

from .._backend import check_host, kernels, resolve
from ._common import _array, _same_shape

__all__ = ["linear", "linear_backward", "LinearCache"]

LinearCache = namedtuple("LinearCache", "x w has_bias backend")



def linear(x, w, b=None, backend=None):
    """x (N, in) @ w.T + b with w (out, in), b (out,) -> (out (N, out), cache)."""
    name = resolve(backend, x, w, b)
    x = _array(x, "x")
    w = _array(w, "w", x.dtype)
    if len(x.shape) != 2 or len(w.shape) != 2 or x.shape[1] != w.shape[1]:
        hint = "; flatten x first (fastconv.Flatten())" if len(x.shape) > 2 else ""
        raise ValueError(f"linear: x {tuple(x.shape)} does not match w {tuple(w.shape)} "
                         f"(expected x (N, in) and w (out, in)){hint}")
    if b is not None:
        b = _array(b, "b", x.dtype)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"bias has shape {tuple(b.shape)}, expected ({w.shape[0]},) for w {tuple(w.shape)}")
    return kernels(name).linear(x, w, b), LinearCache(x, w, b is not None, name)


def linear_backward(dout, cache, need_dx=True):
    """Gradients of :func:`linear`: dout (N, out) -> (dx (N, in) or None, dw, db or None)."""
    check_host(cache.backend, dout)
    dout = _array(dout, "dout", cache.x.dtype)
    _same_shape(dout, (cache.x.shape[0], cache.w.shape[0]), "dout")
    return kernels(cache.backend).linear_backward(dout, cache.x, cache.w, cache.has_bias, need_dx)
