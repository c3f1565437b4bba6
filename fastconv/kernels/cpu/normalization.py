"""cpu batch normalisation: one ``nogil`` kernel per pass over a range of channels."""
import numpy as np
from numba import njit

from .._memory import empty
from ._common import _planes


@njit(nogil=True, cache=True)
def _bn_forward_kernel(x, weight, bias, mean, var, inv_std, training, eps, one, inv_count, out,
                       c0, c1):
    """x (N, C, L): per channel, batch statistics (two passes) when training, then the affine map.

    ``one`` (1), ``eps`` and ``inv_count`` (1 / (N*L), NaN for no values) are in x's dtype, so
    the arithmetic stays in it; the sums start from a typed zero (``v - v`` of an inf is NaN).
    """
    n_img, c_in, length = x.shape
    zero = x.dtype.type(0)
    for c in range(c0, c1):
        if training:
            acc = zero
            for n in range(n_img):
                part = zero  # a partial sum per plane keeps float32 rounding small
                for i in range(length):
                    part += x[n, c, i]
                acc += part
            mu = acc * inv_count
            acc = zero
            for n in range(n_img):
                part = zero
                for i in range(length):
                    d = x[n, c, i] - mu
                    part += d * d
                acc += part
            mean[c] = mu
            var[c] = acc * inv_count
            inv_std[c] = one / np.sqrt(var[c] + eps)
        # (x - mean) * scale + bias, not x * scale + (bias - mean * scale): no cancellation when
        # |mean| >> std, and an inf weight gives inf as the oracle's, not inf - inf
        mu, scale, shift = mean[c], weight[c] * inv_std[c], bias[c]
        for n in range(n_img):
            for i in range(length):
                out[n, c, i] = (x[n, c, i] - mu) * scale + shift


@njit(nogil=True, cache=True)
def _bn_backward_kernel(dout, x, weight, mean, inv_std, training, need_dx, inv_count, dweight, dbias,
                        dx, c0, c1):
    n_img, c_in, length = x.shape
    for c in range(c0, c1):
        mu = mean[c]
        s = inv_std[c]
        zero = dout.dtype.type(0)  # a typed zero: ``v - v`` of an inf is NaN
        sum_g = sum_gx = zero
        for n in range(n_img):
            pg = pgx = zero
            for i in range(length):
                g = dout[n, c, i]
                pg += g
                pgx += g * (x[n, c, i] - mu)
            sum_g += pg
            sum_gx += pgx
        dbias[c] = sum_g
        dweight[c] = sum_gx * s
        if need_dx:
            k = weight[c] * s
            if training:
                a = sum_g * inv_count
                b = sum_gx * s * s * inv_count
                for n in range(n_img):
                    for i in range(length):
                        dx[n, c, i] = k * (dout[n, c, i] - a - (x[n, c, i] - mu) * b)
            else:
                for n in range(n_img):
                    for i in range(length):
                        dx[n, c, i] = k * dout[n, c, i]


def _inv_count(x):
    """1 / (N*L) in x's dtype; NaN when there are no values (their mean is NaN, as NumPy's)."""
    count = x.shape[0] * x.shape[2]
    return x.dtype.type(1.0 / count if count else np.nan)


def batch_norm(x, weight, bias, mean, var, training, eps):
    """Batch normalisation of x (N, C, L); see :func:`fastconv.kernels.naive.batch_norm`."""
    c = x.shape[1]
    out = empty(x.shape, x.dtype)
    eps = x.dtype.type(eps)
    if training:
        mean, var = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
        inv_std = np.empty(c, dtype=x.dtype)
    else:
        inv_std = 1 / np.sqrt(var + eps)
    one = x.dtype.type(1)
    inv_count = _inv_count(x)
    _planes(lambda a, b: _bn_forward_kernel(x, weight, bias, mean, var, inv_std, training, eps,
                                            one, inv_count, out, a, b), x, axis=1)
    if not training:
        return out, None, None, (mean, inv_std)
    return out, mean, var, (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,)); zero gradients for no values."""
    mean, inv_std = saved
    c = x.shape[1]
    if x.size == 0:  # sums over nothing (the kernel would scale them by a NaN inv_std)
        dx = np.zeros(x.shape, x.dtype) if need_dx else None
        return dx, np.zeros(c, x.dtype), np.zeros(c, x.dtype)
    dweight = np.empty(c, dtype=x.dtype)
    dbias = np.empty(c, dtype=x.dtype)
    dx = empty(x.shape, x.dtype) if need_dx else empty((1, 1, 1), dtype=x.dtype)
    inv_count = _inv_count(x)
    _planes(lambda a, b: _bn_backward_kernel(dout, x, weight, mean, inv_std, training, need_dx,
                                             inv_count, dweight, dbias, dx, a, b), x, axis=1)
    return (dx if need_dx else None), dweight, dbias
