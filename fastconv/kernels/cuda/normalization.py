"""cuda batch normalisation: a per-channel reduction (statistics, or the two gradient sums) and an
elementwise kernel over all of x for each pass."""
import math

import numpy as np
from numba import cuda, float32

from ._launch import (REDUCE_THREADS, _A1, _A3, _block_sum, _dev, _empty, _launch, _reduce_launch,
                      _scalar, _sigs)


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


def batch_norm(x, weight, bias, mean, var, training, eps):
    """Batch normalisation per channel of x (N, C, L) -> (out, batch_mean, batch_var, saved).

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
    return out, (mean if training else None), (var if training else None), (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,)), all on the device; zero
    gradients when there are no values."""
    dout = _dev(dout)
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


KERNELS = {
    "_bn_stats_kernel": (_bn_stats_kernel, _sigs(
        f"void({_A3}, boolean, {{f}}, {{f}}, {{f}}, {_A1}, {_A1}, {_A1})")),
    "_bn_affine_kernel": (_bn_affine_kernel, _sigs(f"void({_A3}, {_A1}, {_A1}, {_A1}, {_A1}, {_A3})")),
    "_bn_grad_sums_kernel": (_bn_grad_sums_kernel,
                             _sigs(f"void({_A3}, {_A3}, {_A1}, {_A1}, {_A1}, {_A1})")),
    "_bn_dx_kernel": (_bn_dx_kernel, _sigs(
        f"void({_A3}, {_A3}, {_A1}, {_A1}, {_A1}, {_A1}, {_A1}, boolean, {{f}}, {_A3})")),
}
