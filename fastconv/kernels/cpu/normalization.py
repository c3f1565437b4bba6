"""cpu normalisation: batch normalisation (one ``nogil`` kernel per pass over a range of
channels) and group / layer normalisation (rows of an (N, G, M) view: a forward and an
input-gradient kernel over a range of rows, a parameter-gradient kernel over a range of channels).
"""
import numpy as np
from numba import njit

from .._memory import empty
from .._workers import split
from . import _common
from ._common import _planes


@njit(cache=True)
def _normalized(v, mu, scale, shift):
    """``(v - mean) * scale + bias``, compiled without fastmath: the forward's store and the
    backward's ReLU mask (recomputed from x, so the backward need not read the output) agree bit
    for bit. Not ``v * scale + (bias - mean * scale)``: no cancellation when |mean| >> std, and
    an inf weight gives inf as the oracle's, not inf - inf."""
    return (v - mu) * scale + shift


# "reassoc" lets LLVM vectorise the per-plane sums of the batch-norm kernels (each a fixed order
# per build, split by channel, so the bits do not depend on the thread count)
@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _bn_forward_kernel(x, weight, bias, mean, var, inv_std, training, eps, one, inv_count, relu,
                       out, c0, c1):
    """x (N, C, L): per channel, batch statistics (two passes) when training, then the affine map
    (then max(., 0) when ``relu``: one pass fewer over memory than a separate ReLU).

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
        mu, scale, shift = mean[c], weight[c] * inv_std[c], bias[c]
        for n in range(n_img):
            for i in range(length):
                v = _normalized(x[n, c, i], mu, scale, shift)
                out[n, c, i] = zero if relu and v < 0 else v  # NaN kept, as the ReLU kernel


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _bn_backward_kernel(dout, x, weight, bias, mean, inv_std, training, need_dx, inv_count, relu,
                        dweight, dbias, dx, c0, c1):
    """Per channel: the two gradient sums, then dx. ``relu``: the forward was fused with a ReLU,
    so dout counts only where the forward's value was positive (the ReLU's gradient, from x and
    the forward's affine map, as :func:`_normalized` computed it)."""
    n_img, c_in, length = x.shape
    for c in range(c0, c1):
        mu = mean[c]
        s = inv_std[c]
        scale, shift = weight[c] * s, bias[c]
        zero = dout.dtype.type(0)  # a typed zero: ``v - v`` of an inf is NaN
        sum_g = sum_gx = zero
        for n in range(n_img):
            pg = pgx = zero
            for i in range(length):
                g = dout[n, c, i]
                if relu and not _normalized(x[n, c, i], mu, scale, shift) > 0:
                    g = zero
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
                        g = dout[n, c, i]
                        if relu and not _normalized(x[n, c, i], mu, scale, shift) > 0:
                            g = zero
                        dx[n, c, i] = k * (g - a - (x[n, c, i] - mu) * b)
            else:
                for n in range(n_img):
                    for i in range(length):
                        g = dout[n, c, i]
                        if relu and not _normalized(x[n, c, i], mu, scale, shift) > 0:
                            g = zero
                        dx[n, c, i] = k * g


def _inv_count(x):
    """1 / (N*L) in x's dtype; NaN when there are no values (their mean is NaN, as NumPy's)."""
    count = x.shape[0] * x.shape[2]
    return x.dtype.type(1.0 / count if count else np.nan)


def batch_norm(x, weight, bias, mean, var, training, eps, relu=False):
    """Batch normalisation of x (N, C, L), then a ReLU when ``relu``; see
    :func:`fastconv.kernels.naive.batch_norm`."""
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
                                            one, inv_count, bool(relu), out, a, b), x, axis=1)
    saved = (mean, inv_std, bias)  # the bias for the ReLU mask of a fused backward
    return out, (mean if training else None), (var if training else None), saved


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True, out=None):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,)); zero gradients for no values.
    ``out``: given (not read) when the forward applied a ReLU, whose mask comes from x."""
    mean, inv_std, bias = saved
    c = x.shape[1]
    if x.size == 0:  # sums over nothing (the kernel would scale them by a NaN inv_std)
        dx = np.zeros(x.shape, x.dtype) if need_dx else None
        return dx, np.zeros(c, x.dtype), np.zeros(c, x.dtype)
    dweight = np.empty(c, dtype=x.dtype)
    dbias = np.empty(c, dtype=x.dtype)
    dx = empty(x.shape, x.dtype) if need_dx else empty((1, 1, 1), dtype=x.dtype)
    inv_count = _inv_count(x)
    relu = out is not None
    _planes(lambda a, b: _bn_backward_kernel(dout, x, weight, bias, mean, inv_std, training,
                                             need_dx, inv_count, relu, dweight, dbias, dx, a, b),
            x, axis=1)
    return (dx if need_dx else None), dweight, dbias


@njit(nogil=True, cache=True)
def _gn_forward_kernel(x, weight, bias, inner, eps, inv_m, one, zero, out, mean, rstd, r0, r1):
    """Rows [r0, r1) of x (N, G, M), row r = (r // G, r % G): mean and biased variance (two
    passes), then ``x * scale + shift`` per channel (``M // inner`` channels of ``inner`` values
    each in a row). ``eps``, ``inv_m`` (1 / M), ``one`` and ``zero`` are in x's dtype."""
    _, groups, m = x.shape
    cpg = m // inner
    for r in range(r0, r1):
        n = r // groups
        g = r % groups
        acc = zero
        for j in range(m):
            acc += x[n, g, j]
        mu = acc * inv_m
        acc = zero
        for j in range(m):
            d = x[n, g, j] - mu
            acc += d * d
        rs = one / np.sqrt(acc * inv_m + eps)
        mean[n, g] = mu
        rstd[n, g] = rs
        for k in range(cpg):
            c = g * cpg + k
            scale = weight[c] * rs
            shift = bias[c] - mu * scale
            for i in range(k * inner, (k + 1) * inner):
                out[n, g, i] = x[n, g, i] * scale + shift


@njit(nogil=True, cache=True)
def _gn_dx_kernel(dout, x, weight, mean, rstd, inner, inv_m, zero, dx, r0, r1):
    """Input gradient of rows [r0, r1): ``rstd * (gw - mean(gw) - xhat * mean(gw * xhat))`` with
    ``gw = dout * weight[c]``."""
    _, groups, m = x.shape
    cpg = m // inner
    for r in range(r0, r1):
        n = r // groups
        g = r % groups
        mu = mean[n, g]
        rs = rstd[n, g]
        sg = zero
        sgx = zero
        for k in range(cpg):
            w = weight[g * cpg + k]
            for i in range(k * inner, (k + 1) * inner):
                gw = dout[n, g, i] * w
                sg += gw
                sgx += gw * (x[n, g, i] - mu)
        a = sg * inv_m
        b = sgx * rs * rs * inv_m
        for k in range(cpg):
            w = weight[g * cpg + k]
            for i in range(k * inner, (k + 1) * inner):
                dx[n, g, i] = rs * (dout[n, g, i] * w - a - (x[n, g, i] - mu) * b)


@njit(nogil=True, cache=True)
def _gn_param_kernel(dout, x, mean, rstd, inner, zero, dweight, dbias, c0, c1):
    """Channels [c0, c1): dweight = sum of dout * xhat, dbias = sum of dout (over N and the
    channel's ``inner`` values)."""
    n_img, _, m = x.shape
    cpg = m // inner
    for c in range(c0, c1):
        g = c // cpg
        k = c % cpg
        sw = zero
        sb = zero
        for n in range(n_img):
            mu = mean[n, g]
            pw = zero
            pb = zero
            for i in range(k * inner, (k + 1) * inner):
                d = dout[n, g, i]
                pb += d
                pw += d * (x[n, g, i] - mu)
            sw += pw * rstd[n, g]
            sb += pb
        dweight[c] = sw
        dbias[c] = sb


def _parts(x):
    return None if x.size >= _common.SPLIT_PLANE_ELEMENTS else 1


def group_norm(x, weight, bias, inner, eps):
    """Normalisation of the rows of x (N, G, M), then the per-channel affine map; see
    :func:`fastconv.kernels.naive.group_norm`."""
    n, g, m = x.shape
    t = x.dtype.type
    out = empty(x.shape, x.dtype)
    mean, rstd = np.empty((n, g), dtype=x.dtype), np.empty((n, g), dtype=x.dtype)
    args = (t(eps), t(1.0 / m), t(1), t(0))
    split(lambda lo, hi: _gn_forward_kernel(x, weight, bias, inner, *args, out, mean, rstd, lo, hi),
          n * g, _parts(x))
    return out, mean, rstd


def group_norm_backward(dout, x, weight, mean, rstd, inner, need_dx=True):
    """dout (N, G, M) -> (dx or None, dweight (C,), dbias (C,))."""
    n, g, m = x.shape
    c = weight.shape[0]
    t = x.dtype.type
    dweight, dbias = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
    split(lambda lo, hi: _gn_param_kernel(dout, x, mean, rstd, inner, t(0), dweight, dbias, lo, hi),
          c, _parts(x))
    if not need_dx:
        return None, dweight, dbias
    dx = empty(x.shape, x.dtype)
    split(lambda lo, hi: _gn_dx_kernel(dout, x, weight, mean, rstd, inner, t(1.0 / m), t(0), dx, lo, hi),
          n * g, _parts(x))
    return dx, dweight, dbias
