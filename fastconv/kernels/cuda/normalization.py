"""cuda normalisation. Batch normalisation: a per-channel reduction (statistics, or the two
gradient sums) and an elementwise kernel over all of x for each pass. Group / layer normalisation
over the rows of an (N, G, M) view: a per-row reduction (statistics, or the input gradient's two
sums) and an elementwise kernel each way, and a per-channel reduction for the affine gradients."""
import math

import numpy as np
from numba import cuda, float32

from . import activation
from ._launch import (REDUCE_THREADS, _A1, _A2, _A3, _block_sum, _dev, _empty, _launch,
                      _reduce_launch, _scalar, _sigs, _unravel3)


@cuda.jit(cache=True)
def _bn_stats_kernel(x, training, eps, one, inv_count, mean, var, inv_std):
    """x (N, C, L), one block per channel. Training: mean and biased var of the batch (two passes);
    always inv_std = 1 / sqrt(var + eps). ``eps``, ``one``, ``inv_count`` are in x's dtype."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    n_img, c_in, length = x.shape
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, c_in, cuda.gridDim.x):
        if training:
            acc = float32(0)
            for t in range(tid, n_img * length, cuda.blockDim.x):
                acc += x[t // length, c, t % length]
            mu = _block_sum(part, acc) * inv_count
            acc = float32(0)
            for t in range(tid, n_img * length, cuda.blockDim.x):
                d = x[t // length, c, t % length] - mu
                acc += d * d
            v = _block_sum(part, acc) * inv_count
            if tid == 0:
                mean[c] = mu
                var[c] = v
        if tid == 0:
            inv_std[c] = one / math.sqrt(var[c] + eps)


@cuda.jit(cache=True)
def _bn_affine_kernel(x, weight, bias, mean, inv_std, out):
    """out = (x - mean) * (inv_std * weight) + bias per channel of x (N, C, L) (the cpu tier's form:
    no cancellation when |mean| >> std, and an inf weight gives inf, not inf - inf)."""
    n_img, c_in, length = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i = t % length
        r = t // length
        c = r % c_in
        scale = weight[c] * inv_std[c]
        out[r // c_in, c, i] = (x[r // c_in, c, i] - mean[c]) * scale + bias[c]


@cuda.jit(cache=True)
def _bn_grad_sums_kernel(dout, x, mean, inv_std, dweight, dbias):
    """Per channel of (N, C, L), one block each: dbias = sum(dout), dweight = sum(dout * xhat)."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    n_img, c_in, length = x.shape
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, c_in, cuda.gridDim.x):
        mu = mean[c]
        acc_g = float32(0)
        acc_gx = float32(0)
        for t in range(tid, n_img * length, cuda.blockDim.x):
            g = dout[t // length, c, t % length]
            acc_g += g
            acc_gx += g * (x[t // length, c, t % length] - mu)
        sum_g = _block_sum(part, acc_g)
        sum_gx = _block_sum(part, acc_gx)
        if tid == 0:
            dbias[c] = sum_g
            dweight[c] = sum_gx * inv_std[c]


@cuda.jit(cache=True)
def _bn_dx_kernel(dout, x, weight, mean, inv_std, dweight, dbias, training, inv_count, dx):
    """dx of batch norm on (N, C, L) from the per-channel sums of :func:`_bn_grad_sums_kernel`."""
    n_img, c_in, length = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i = t % length
        r = t // length
        c = r % c_in
        n = r // c_in
        s = inv_std[c]
        k = weight[c] * s
        if training:
            a = dbias[c] * inv_count
            b = dweight[c] * s * inv_count
            dx[n, c, i] = k * (dout[n, c, i] - a - (x[n, c, i] - mean[c]) * b)
        else:
            dx[n, c, i] = k * dout[n, c, i]


def _inv_count(dtype, count):
    """1 / count in ``dtype``; NaN for no values (their mean is NaN, as NumPy's)."""
    return _scalar(dtype, 1.0 / count if count else np.nan)


def batch_norm(x, weight, bias, mean, var, training, eps, relu=False):
    """Batch normalisation per channel of x (N, C, L) -> (out, batch_mean, batch_var, saved), then
    the ReLU kernel when ``relu``.

    As :func:`fastconv.kernels.naive.batch_norm`; everything, ``saved = (mean, inv_std)`` too,
    stays on the device.
    """
    x = _dev(x)
    dt = x.dtype
    n_img, c, length = x.shape
    weight, bias = _dev(weight, dt), _dev(bias, dt)
    if training:
        mean, var = _empty(c, dt), _empty(c, dt)
    else:
        mean, var = _dev(mean, dt), _dev(var, dt)
    inv_std = _empty(c, dt)
    _bn_stats_kernel[_reduce_launch(c, n_img * length if training else 1)](
        x, bool(training), _scalar(dt, eps), _scalar(dt, 1), _inv_count(dt, n_img * length),
        mean, var, inv_std)
    out = _empty(x.shape, dt)
    _bn_affine_kernel[_launch(x.size)](x, weight, bias, mean, inv_std, out)
    if relu:
        out = activation.relu(out)
    return out, (mean if training else None), (var if training else None), (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True, out=None):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,)), all on the device; zero
    gradients when there are no values. ``out``: the output of a forward with ``relu``."""
    dout = _dev(dout)
    if out is not None:
        dout = activation.relu_backward(dout, _dev(out, dout.dtype))
    dt = dout.dtype
    x, weight = _dev(x, dt), _dev(weight, dt)
    mean, inv_std = (_dev(a, dt) for a in saved)
    n_img, c, length = x.shape
    if x.size == 0:  # sums over nothing (the kernel would scale them by a NaN inv_std)
        dx = _empty(x.shape, dt) if need_dx else None
        return dx, _dev(np.zeros(c, dt)), _dev(np.zeros(c, dt))
    dweight, dbias = _empty(c, dt), _empty(c, dt)
    _bn_grad_sums_kernel[_reduce_launch(c, n_img * length)](dout, x, mean, inv_std, dweight, dbias)
    dx = None
    if need_dx:
        dx = _empty(x.shape, dt)
        _bn_dx_kernel[_launch(x.size)](dout, x, weight, mean, inv_std, dweight, dbias,
                                       bool(training), _inv_count(dt, n_img * length), dx)
    return dx, dweight, dbias


@cuda.jit(cache=True)
def _gn_stats_kernel(x, eps, inv_m, one, mean, rstd):
    """x (N, G, M), one block per row (n, g): mean, then the biased variance about it (two
    passes), rstd = 1 / sqrt(var + eps). ``eps``, ``inv_m`` (1 / M) and ``one`` in x's dtype."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    _, groups, m = x.shape
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, mean.size, cuda.gridDim.x):
        n = r // groups
        g = r % groups
        acc = float32(0)
        for j in range(tid, m, cuda.blockDim.x):
            acc += x[n, g, j]
        mu = _block_sum(part, acc) * inv_m
        acc = float32(0)
        for j in range(tid, m, cuda.blockDim.x):
            d = x[n, g, j] - mu
            acc += d * d
        v = _block_sum(part, acc) * inv_m
        if tid == 0:
            mean[n, g] = mu
            rstd[n, g] = one / math.sqrt(v + eps)


@cuda.jit(cache=True)
def _gn_affine_kernel(x, weight, bias, mean, rstd, inner, out):
    """out = (x - mean) * rstd * weight[c] + bias[c] over x (N, G, M), channel
    ``c = g * (M // inner) + j // inner`` of element j of row (n, g)."""
    _, groups, m = x.shape
    cpg = m // inner
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, g, j = _unravel3(t, groups, m)
        c = g * cpg + j // inner
        scale = weight[c] * rstd[n, g]
        out[n, g, j] = x[n, g, j] * scale + (bias[c] - mean[n, g] * scale)


@cuda.jit(cache=True)
def _gn_row_sums_kernel(dout, x, weight, mean, inner, sg, sgx):
    """One block per row (n, g): sg = sum of gw, sgx = sum of gw * (x - mean), gw = dout * weight[c]."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    _, groups, m = x.shape
    cpg = m // inner
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, mean.size, cuda.gridDim.x):
        n = r // groups
        g = r % groups
        mu = mean[n, g]
        acc_g = float32(0)
        acc_gx = float32(0)
        for j in range(tid, m, cuda.blockDim.x):
            gw = dout[n, g, j] * weight[g * cpg + j // inner]
            acc_g += gw
            acc_gx += gw * (x[n, g, j] - mu)
        total_g = _block_sum(part, acc_g)
        total_gx = _block_sum(part, acc_gx)
        if tid == 0:
            sg[n, g] = total_g
            sgx[n, g] = total_gx


@cuda.jit(cache=True)
def _gn_dx_kernel(dout, x, weight, mean, rstd, sg, sgx, inner, inv_m, dx):
    """dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) from the row sums, over x (N, G, M)."""
    _, groups, m = x.shape
    cpg = m // inner
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, g, j = _unravel3(t, groups, m)
        rs = rstd[n, g]
        b = sgx[n, g] * rs * rs * inv_m
        gw = dout[n, g, j] * weight[g * cpg + j // inner]
        dx[n, g, j] = rs * (gw - sg[n, g] * inv_m - (x[n, g, j] - mean[n, g]) * b)


@cuda.jit(cache=True)
def _gn_param_kernel(dout, x, mean, rstd, inner, dweight, dbias):
    """One block per channel c: dweight = sum of dout * xhat, dbias = sum of dout, over the N
    images and the channel's ``inner`` values."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    n_img, _, m = x.shape
    cpg = m // inner
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, dweight.size, cuda.gridDim.x):
        g = c // cpg
        j0 = (c % cpg) * inner
        acc_w = float32(0)
        acc_b = float32(0)
        for t in range(tid, n_img * inner, cuda.blockDim.x):
            n = t // inner
            j = j0 + t % inner
            d = dout[n, g, j]
            acc_b += d
            acc_w += d * (x[n, g, j] - mean[n, g]) * rstd[n, g]
        total_w = _block_sum(part, acc_w)
        total_b = _block_sum(part, acc_b)
        if tid == 0:
            dweight[c] = total_w
            dbias[c] = total_b


def group_norm(x, weight, bias, inner, eps):
    """Normalisation of the rows of x (N, G, M), then the per-channel affine map; see
    :func:`fastconv.kernels.naive.group_norm`. Everything stays on the device."""
    x = _dev(x)
    dt = x.dtype
    n, g, m = x.shape
    weight, bias = _dev(weight, dt), _dev(bias, dt)
    mean, rstd = _empty((n, g), dt), _empty((n, g), dt)
    out = _empty(x.shape, dt)
    if x.size == 0:
        return out, mean, rstd
    _gn_stats_kernel[_reduce_launch(n * g, m)](x, _scalar(dt, eps), _scalar(dt, 1.0 / m),
                                               _scalar(dt, 1), mean, rstd)
    _gn_affine_kernel[_launch(x.size)](x, weight, bias, mean, rstd, inner, out)
    return out, mean, rstd


def group_norm_backward(dout, x, weight, mean, rstd, inner, need_dx=True):
    """dout (N, G, M) -> (dx or None, dweight (C,), dbias (C,)), on the device."""
    dout = _dev(dout)
    dt = dout.dtype
    x, weight, mean, rstd = _dev(x, dt), _dev(weight, dt), _dev(mean, dt), _dev(rstd, dt)
    n, g, m = x.shape
    c = weight.shape[0]
    dweight, dbias = _empty(c, dt), _empty(c, dt)
    _gn_param_kernel[_reduce_launch(c, n * inner)](dout, x, mean, rstd, inner, dweight, dbias)
    if not need_dx:
        return None, dweight, dbias
    dx = _empty(x.shape, dt)
    if x.size:
        sg, sgx = _empty((n, g), dt), _empty((n, g), dt)
        _gn_row_sums_kernel[_reduce_launch(n * g, m)](dout, x, weight, mean, inner, sg, sgx)
        _gn_dx_kernel[_launch(x.size)](dout, x, weight, mean, rstd, sg, sgx, inner,
                                       _scalar(dt, 1.0 / m), dx)
    return dx, dweight, dbias


KERNELS = {
    "_bn_stats_kernel": (_bn_stats_kernel, _sigs(
        f"void({_A3}, boolean, {{f}}, {{f}}, {{f}}, {_A1}, {_A1}, {_A1})")),
    "_bn_affine_kernel": (_bn_affine_kernel, _sigs(f"void({_A3}, {_A1}, {_A1}, {_A1}, {_A1}, {_A3})")),
    "_bn_grad_sums_kernel": (_bn_grad_sums_kernel,
                             _sigs(f"void({_A3}, {_A3}, {_A1}, {_A1}, {_A1}, {_A1})")),
    "_bn_dx_kernel": (_bn_dx_kernel, _sigs(
        f"void({_A3}, {_A3}, {_A1}, {_A1}, {_A1}, {_A1}, {_A1}, boolean, {{f}}, {_A3})")),
    "_gn_stats_kernel": (_gn_stats_kernel, _sigs(f"void({_A3}, {{f}}, {{f}}, {{f}}, {_A2}, {_A2})")),
    "_gn_affine_kernel": (_gn_affine_kernel,
                          _sigs(f"void({_A3}, {_A1}, {_A1}, {_A2}, {_A2}, int64, {_A3})")),
    "_gn_row_sums_kernel": (_gn_row_sums_kernel,
                            _sigs(f"void({_A3}, {_A3}, {_A1}, {_A2}, int64, {_A2}, {_A2})")),
    "_gn_dx_kernel": (_gn_dx_kernel, _sigs(
        f"void({_A3}, {_A3}, {_A1}, {_A2}, {_A2}, {_A2}, {_A2}, int64, {{f}}, {_A3})")),
    "_gn_param_kernel": (_gn_param_kernel,
                         _sigs(f"void({_A3}, {_A3}, {_A2}, {_A2}, int64, {_A1}, {_A1})")),
}
