"""cuda pooling: max pooling with switches (the cpu tier's rules) and average pooling; both
backwards are per-element gathers (no atomics)."""
import numpy as np
from numba import cuda, float32, int64

from ..._shapes import pool_output_hw
from ._launch import (REDUCE_THREADS, _A3, _A4, _dev, _empty, _launch, _reduce_launch, _scalar,
                      _sigs)


@cuda.jit(cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, out, switches):
    """x (N, C, H, W) -> out, switches (N, C, Ho, Wo); first maximum wins, a NaN beats numbers."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        ow = t % wo
        r = t // wo
        oh = r % ho
        r = r // ho
        c = r % c_in
        n = r // c_in
        y0 = oh * sh
        x0 = ow * sw
        best = x[n, c, y0, x0]
        arg = y0 * wd + x0
        for i in range(kh):
            for j in range(kw):
                v = x[n, c, y0 + i, x0 + j]
                if v > best or (v != v and best == best):
                    best = v
                    arg = (y0 + i) * wd + x0 + j
        out[n, c, oh, ow] = best
        switches[n, c, oh, ow] = arg


@cuda.jit(cache=True)
def _switch_bounds_kernel(switches, wd, hw, bounds, bad):
    """switches (NC, Ho, Wo). Block b < Ho: bounds[b] = (min, max) input row of output row b's
    in-range switches and bad[b] = its count of out-of-range ones; block Ho + j: input-column
    bounds of output column j. An empty range is (hw, -1)."""
    lo_s = cuda.shared.array(REDUCE_THREADS, dtype=int64)
    hi_s = cuda.shared.array(REDUCE_THREADS, dtype=int64)
    bad_s = cuda.shared.array(REDUCE_THREADS, dtype=int64)
    nc, ho, wo = switches.shape
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    for blk in range(cuda.blockIdx.x, ho + wo, cuda.gridDim.x):
        lo = hw
        hi = -1
        nbad = 0
        if blk < ho:
            for t in range(tid, nc * wo, nthr):
                pl = t // wo
                s = switches[pl, blk, t - pl * wo]
                if s < 0 or s >= hw:
                    nbad += 1
                else:
                    lo = min(lo, s // wd)
                    hi = max(hi, s // wd)
        else:
            j = blk - ho
            for t in range(tid, nc * ho, nthr):
                pl = t // ho
                s = switches[pl, t - pl * ho, j]
                if s >= 0 and s < hw:
                    lo = min(lo, s % wd)
                    hi = max(hi, s % wd)
        lo_s[tid] = lo
        hi_s[tid] = hi
        bad_s[tid] = nbad
        cuda.syncthreads()
        s = nthr // 2
        while s > 0:
            if tid < s:
                lo_s[tid] = min(lo_s[tid], lo_s[tid + s])
                hi_s[tid] = max(hi_s[tid], hi_s[tid + s])
                bad_s[tid] += bad_s[tid + s]
            cuda.syncthreads()
            s //= 2
        if tid == 0:
            bounds[blk, 0] = lo_s[0]
            bounds[blk, 1] = hi_s[0]
            if blk < ho:
                bad[blk] = bad_s[0]
        cuda.syncthreads()


@cuda.jit(cache=True)
def _max_pool_backward_kernel(dout, switches, bounds, dx):
    """dout, switches (NC, Ho, Wo) -> dx (NC, H, W): each input element sums the gradients whose
    switch points at it, in row-major output order (the cpu tier's order)."""
    nc, h, wd = dx.shape
    _, ho, wo = dout.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xx = t % wd
        r = t // wd
        y = r % h
        pl = r // h
        target = y * wd + xx
        acc = float32(0)
        for oh in range(ho):
            if bounds[oh, 0] <= y and y <= bounds[oh, 1]:
                for ow in range(wo):
                    if bounds[ho + ow, 0] <= xx and xx <= bounds[ho + ow, 1]:
                        if switches[pl, oh, ow] == target:
                            acc += dout[pl, oh, ow]
        dx[pl, y, xx] = acc


@cuda.jit(cache=True)
def _avg_pool_kernel(x, kh, kw, sh, sw, scale, out):
    """x (N, C, H, W) -> out (N, C, Ho, Wo), window sums times ``scale``."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        ow = t % wo
        r = t // wo
        oh = r % ho
        r = r // ho
        c = r % c_in
        n = r // c_in
        acc = x[n, c, oh * sh, ow * sw]
        for i in range(kh):
            for j in range(kw):
                if i > 0 or j > 0:
                    acc += x[n, c, oh * sh + i, ow * sw + j]
        out[n, c, oh, ow] = acc * scale


@cuda.jit(cache=True)
def _avg_pool_backward_kernel(dout, kh, kw, sh, sw, scale, dx):
    """dout (N, C, Ho, Wo) -> dx (N, C, H, W); each input element gathers its windows' shares."""
    n_img, c_in, h, wd = dx.shape
    _, _, ho, wo = dout.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xx = t % wd
        r = t // wd
        y = r % h
        r = r // h
        c = r % c_in
        n = r // c_in
        acc = float32(0)
        for oh in range(max(0, (y - kh + sh) // sh), min(ho - 1, y // sh) + 1):
            for ow in range(max(0, (xx - kw + sw) // sw), min(wo - 1, xx // sw) + 1):
                acc += dout[n, c, oh, ow] * scale
        dx[n, c, y, xx] = acc


def max_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (out, switches int64), both on the device; the cpu tier's switch rule."""
    x = _dev(x)
    n_img, c = x.shape[:2]
    ho, wo = pool_output_hw(x.shape[2:], kernel, stride)
    out = _empty((n_img, c, ho, wo), x.dtype)
    switches = _empty((n_img, c, ho, wo), np.int64)
    _max_pool_kernel[_launch(out.size)](x, kernel[0], kernel[1], stride[0], stride[1],
                                        out, switches)
    return out, switches


def max_pool2d_backward(dout, switches, input_shape):
    """Route dout (N, C, Hout, Wout) by switches into dx (input_shape) -> (dx, ok).

    ``ok`` (a host bool, the one value copied back) is False if a switch is outside the plane.
    """
    dout = _dev(dout)
    switches = _dev(switches, np.int64)
    n_img, c, h, wd = input_shape
    ho, wo = dout.shape[2:]
    sw3 = switches.reshape(n_img * c, ho, wo)
    bounds = _empty((ho + wo, 2), np.int64)
    bad = _empty(ho, np.int64)
    _switch_bounds_kernel[_reduce_launch(ho + wo, n_img * c * max(ho, wo))](sw3, wd, h * wd,
                                                                             bounds, bad)
    dx = _empty((n_img * c, h, wd), dout.dtype)
    _max_pool_backward_kernel[_launch(dx.size)](dout.reshape(n_img * c, ho, wo), sw3,
                                                bounds, dx)
    return dx.reshape(tuple(input_shape)), int(bad.copy_to_host().sum()) == 0


def avg_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (N, C, Hout, Wout), the mean of each window."""
    x = _dev(x)
    ho, wo = pool_output_hw(x.shape[2:], kernel, stride)
    out = _empty(tuple(x.shape[:2]) + (ho, wo), x.dtype)
    scale = _scalar(x.dtype, 1.0 / (kernel[0] * kernel[1]))
    _avg_pool_kernel[_launch(out.size)](x, kernel[0], kernel[1], stride[0], stride[1],
                                        scale, out)
    return out


def avg_pool2d_backward(dout, input_shape, kernel, stride):
    """dout (N, C, Hout, Wout) -> dx (input_shape), each gradient spread evenly over its window."""
    dout = _dev(dout)
    dx = _empty(tuple(input_shape), dout.dtype)
    scale = _scalar(dout.dtype, 1.0 / (kernel[0] * kernel[1]))
    _avg_pool_backward_kernel[_launch(dx.size)](dout, kernel[0], kernel[1], stride[0],
                                                stride[1], scale, dx)
    return dx


_POOL = f"void({_A4}, int64, int64, int64, int64, {{f}}, {_A4})"

KERNELS = {
    "_max_pool_kernel": (_max_pool_kernel,
                         _sigs(f"void({_A4}, int64, int64, int64, int64, {_A4}, int64[:, :, :, ::1])")),
    "_switch_bounds_kernel": (_switch_bounds_kernel,
                              ["void(int64[:, :, ::1], int64, int64, int64[:, ::1], int64[::1])"]),
    "_max_pool_backward_kernel": (_max_pool_backward_kernel,
                                  _sigs(f"void({_A3}, int64[:, :, ::1], int64[:, ::1], {_A3})")),
    "_avg_pool_kernel": (_avg_pool_kernel, _sigs(_POOL)),
    "_avg_pool_backward_kernel": (_avg_pool_backward_kernel, _sigs(_POOL)),
}
