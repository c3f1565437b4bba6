"""cuda pooling: max pooling with switches (the cpu tier's rules), average pooling, adaptive
pooling and max unpooling with their gradients. Backwards are per-element gathers (no atomics
in their sums).

As in the cpu tier, one kernel per reduction walks the window tables of :mod:`fastconv._shapes`
(padding, dilation, ceil mode and adaptive bins alike); the tables, the average divisors and the
inverse tables of the average gradient (for each input row / column, the output rows / columns
whose windows hold it) are copied to the device once per geometry. The global (1, 1) adaptive
pools run one block per plane (a tree reduction) instead of one thread per plane.
"""
import numpy as np
from numba import cuda, float32, int64

from ..._shapes import adaptive_avg_geometry, adaptive_output_hw
from ..._shapes import adaptive_tables as _adaptive_tables
from ..._shapes import avg_pool_geometry as _avg_geometry
from ..._shapes import pool_tables as _pool_tables
from ._launch import (REDUCE_THREADS, _A2, _A3, _A4, _block_sum, _dev, _empty, _launch,
                      _reduce_launch, _scalar, _sigs, _unravel)


@cuda.jit(cache=True)
def _max_pool_kernel(x, rows, cols, dh, dw, out, switches):
    """x (N, C, H, W) -> out, switches (N, C, Ho, Wo); first maximum wins, a NaN beats numbers.

    Window (oh, ow) takes ``rows[oh, 1]`` rows from ``rows[oh, 0]``, ``dh`` apart, times
    ``cols[ow, 1]`` columns from ``cols[ow, 0]``, ``dw`` apart."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, c, oh, ow = _unravel(t, c_in, ho, wo)
        y0 = rows[oh, 0]
        x0 = cols[ow, 0]
        best = x[n, c, y0, x0]
        arg = y0 * wd + x0
        for i in range(rows[oh, 1]):
            y = y0 + i * dh
            for j in range(cols[ow, 1]):
                xx = x0 + j * dw
                v = x[n, c, y, xx]
                if v > best or (v != v and best == best):
                    best = v
                    arg = y * wd + xx
        out[n, c, oh, ow] = best
        switches[n, c, oh, ow] = arg


@cuda.jit(device=True, cache=True)
def _beats(v, i, w, j):
    """Whether candidate (value v, index i) beats (w, j) as a plane's max: an index < 0 is no
    candidate; a NaN beats numbers; then the larger value; then the smaller index."""
    if i < 0:
        return False
    if j < 0:
        return True
    if v != v:
        return w == w or i < j
    if w != w:
        return False
    return v > w or (v == w and i < j)


@cuda.jit(cache=True)
def _global_pool_kernel(x, want_max, count, out, switches):
    """x (P, L) -> out, switches (P,), one block per plane: the max and its first index (the first
    NaN wins), or the mean (a tree sum over ``count``, in x's dtype)."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    where = cuda.shared.array(REDUCE_THREADS, dtype=int64)
    planes, length = x.shape
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    for p in range(cuda.blockIdx.x, planes, cuda.gridDim.x):
        if want_max:
            best = x[p, 0]
            arg = -1
            for i in range(tid, length, nthr):  # each thread: the first max of its elements
                v = x[p, i]
                if arg < 0 or v > best or (v != v and best == best):
                    best = v
                    arg = i
            part[tid] = best
            where[tid] = arg
            cuda.syncthreads()
            s = nthr // 2
            while s > 0:
                if tid < s and _beats(part[tid + s], where[tid + s], part[tid], where[tid]):
                    part[tid] = part[tid + s]
                    where[tid] = where[tid + s]
                cuda.syncthreads()
                s //= 2
            if tid == 0:
                out[p] = part[0]
                switches[p] = where[0]
            cuda.syncthreads()
        else:
            acc = float32(0)
            for i in range(tid, length, nthr):
                acc += x[p, i]
            total = _block_sum(part, acc)
            if tid == 0:
                out[p] = total / count


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
def _route_kernel(values, switches, bounds, accumulate, dx):
    """values, switches (NC, Ho, Wo) -> dx (NC, H, W): each element of dx takes the values whose
    switch points at it, in row-major order (the cpu tier's order): their sum, or the last one."""
    nc, h, wd = dx.shape
    _, ho, wo = values.shape
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
                            if accumulate:
                                acc += values[pl, oh, ow]
                            else:
                                acc = values[pl, oh, ow]
        dx[pl, y, xx] = acc


@cuda.jit(cache=True)
def _gather_kernel(src, indices, out, bad):
    """out (P, L) = src (P, M) at the flat positions ``indices`` (P, L); an out-of-range index
    gives 0 and is counted in ``bad[0]``."""
    planes, length = out.shape
    m = src.shape[1]
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        pl = t // length
        i = t - pl * length
        j = indices[pl, i]
        if j >= 0 and j < m:
            out[pl, i] = src[pl, j]
        else:
            out[pl, i] = float32(0)
            cuda.atomic.add(bad, 0, 1)


@cuda.jit(cache=True)
def _avg_pool_kernel(x, rows, cols, div, out):
    """x (N, C, H, W) -> out (N, C, Ho, Wo): each window's sum (row-major, from its first tap)
    over ``div[oh, ow]``; windows as in :func:`_max_pool_kernel` with dilation 1."""
    c_in = x.shape[1]
    _, _, ho, wo = out.shape
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, c, oh, ow = _unravel(t, c_in, ho, wo)
        y0, x0 = rows[oh, 0], cols[ow, 0]
        acc = x[n, c, y0, x0]
        for i in range(rows[oh, 1]):
            for j in range(cols[ow, 1]):
                if i > 0 or j > 0:
                    acc += x[n, c, y0 + i, x0 + j]
        out[n, c, oh, ow] = acc / div[oh, ow]


@cuda.jit(cache=True)
def _avg_pool_backward_kernel(dout, inv_rows, inv_cols, div, dx):
    """dout (N, C, Ho, Wo) -> dx (N, C, H, W): each input element gathers ``dout / div`` of the
    windows holding it, output rows ``inv_rows[y, 0] <= oh < inv_rows[y, 1]`` times columns
    ``inv_cols[x, 0] <= ow < inv_cols[x, 1]``, in row-major order (the cpu tier's order)."""
    n_img, c_in, h, wd = dx.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, y, xx = _unravel(t, c_in, h, wd)
        acc = float32(0)
        for oh in range(inv_rows[y, 0], inv_rows[y, 1]):
            for ow in range(inv_cols[xx, 0], inv_cols[xx, 1]):
                acc += dout[n, c, oh, ow] / div[oh, ow]
        dx[n, c, y, xx] = acc


# -- device copies of the geometry ----------------------------------------------------------------
# Keyed by the id of the host table, which the entry keeps alive (so the id is never reused while
# the entry exists); the tables themselves are cached by geometry in fastconv._shapes.
_ON_DEVICE = {}


def _on_device(table, kind="table", size=0):
    key = (kind, id(table), size)
    hit = _ON_DEVICE.get(key)
    if hit is None:
        if len(_ON_DEVICE) >= 512:
            _ON_DEVICE.clear()
        host = table
        if kind == "inverse":  # window bounds -> for each of `size` inputs, its [lo, hi) windows
            first, end = table[:, 0], table[:, 0] + table[:, 1]
            pos = np.arange(size)
            host = np.stack([np.searchsorted(end, pos, side="right"),
                             np.searchsorted(first, pos, side="right")], axis=1).astype(np.int64)
        hit = _ON_DEVICE[key] = (table, cuda.to_device(np.ascontiguousarray(host)))
    return hit[1]


def _max_over(x, rows, cols, dilation):
    out = _empty(tuple(x.shape[:2]) + (len(rows), len(cols)), x.dtype)
    switches = _empty(tuple(out.shape), np.int64)
    _max_pool_kernel[_launch(out.size)](x, _on_device(rows), _on_device(cols), dilation[0],
                                        dilation[1], out, switches)
    return out, switches


def _global(x, want_max):
    n_img, c, h, wd = x.shape
    out = _empty(n_img * c, x.dtype)
    switches = _empty(n_img * c, np.int64)
    _global_pool_kernel[_reduce_launch(n_img * c, h * wd)](x.reshape(n_img * c, h * wd), want_max,
                                                           _scalar(x.dtype, h * wd), out, switches)
    return out.reshape(n_img, c, 1, 1), switches.reshape(n_img, c, 1, 1)


def max_pool2d(x, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """x (N, C, H, W) -> (out, switches int64), both on the device; the cpu tier's switch rule."""
    x = _dev(x)
    return _max_over(x, *_pool_tables(x.shape[2:], kernel, stride, padding, dilation, ceil_mode),
                     dilation)


def adaptive_max_pool2d(x, output_hw):
    """x (N, C, H, W) -> (out, switches int64) over adaptive bins; (1, 1) is a block reduction."""
    x = _dev(x)
    out_hw = adaptive_output_hw(x.shape[2:], output_hw)
    if out_hw == (1, 1):
        return _global(x, True)
    return _max_over(x, *_adaptive_tables(x.shape[2:], out_hw), (1, 1))


def _route(values, indices, plane_shape, accumulate):
    """values, indices (N, C, h, w) -> ((N, C) + plane_shape, ok): the gather of :func:`_route_kernel`.

    ``ok`` (a host bool, the one value copied back) is False if an index is outside the plane.
    """
    values = _dev(values)
    indices = _dev(indices, np.int64)
    n_img, c = values.shape[:2]
    hi, wi = values.shape[2:]
    h, wd = plane_shape
    i3 = indices.reshape(n_img * c, hi, wi)
    bounds = _empty((hi + wi, 2), np.int64)
    bad = _empty(hi, np.int64)
    _switch_bounds_kernel[_reduce_launch(hi + wi, n_img * c * max(hi, wi))](i3, wd, h * wd,
                                                                             bounds, bad)
    out = _empty((n_img * c, h, wd), values.dtype)
    _route_kernel[_launch(out.size)](values.reshape(n_img * c, hi, wi), i3, bounds, accumulate, out)
    return out.reshape((n_img, c, h, wd)), int(bad.copy_to_host().sum()) == 0


def max_pool2d_backward(dout, switches, input_shape):
    """Route dout (N, C, Hout, Wout) by switches into dx (input_shape), overlaps summed ->
    (dx, ok); ``ok`` is False if a switch is outside the plane."""
    return _route(dout, switches, tuple(input_shape[2:]), True)


def max_unpool2d(x, indices, output_hw):
    """x (N, C, H, W) -> (out (N, C, Hout, Wout), ok): zeros but for x at ``indices`` (the last
    in row-major order winning a repeat, as on the cpu tier)."""
    return _route(x, indices, tuple(output_hw), False)


def max_unpool2d_backward(dout, indices):
    """dout (N, C, Hout, Wout) -> (dx of indices' shape, ok): dout read at ``indices``."""
    dout = _dev(dout)
    indices = _dev(indices, np.int64)
    n_img, c = dout.shape[:2]
    length = indices.size // max(1, n_img * c)
    dx = _empty((n_img * c, length), dout.dtype)
    bad = cuda.to_device(np.zeros(1, np.int64))
    _gather_kernel[_launch(dx.size)](dout.reshape(n_img * c, dout.size // max(1, n_img * c)),
                                     indices.reshape(n_img * c, length), dx, bad)
    return dx.reshape(tuple(indices.shape)), int(bad.copy_to_host()[0]) == 0


def _avg(x, rows, cols, div):
    out = _empty(tuple(x.shape[:2]) + (len(rows), len(cols)), x.dtype)
    _avg_pool_kernel[_launch(out.size)](x, _on_device(rows), _on_device(cols), _on_device(div), out)
    return out


def _avg_backward(dout, input_shape, rows, cols, div):
    dx = _empty(tuple(input_shape), dout.dtype)
    _avg_pool_backward_kernel[_launch(dx.size)](dout, _on_device(rows, "inverse", input_shape[2]),
                                                _on_device(cols, "inverse", input_shape[3]),
                                                _on_device(div), dx)
    return dx


def avg_pool2d(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """x (N, C, H, W) -> (N, C, Hout, Wout): each window's sum over PyTorch's divisor."""
    x = _dev(x)
    return _avg(x, *_avg_geometry(x.shape[2:], kernel, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override, x.dtype))


def avg_pool2d_backward(dout, input_shape, kernel, stride, padding=(0, 0), ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """dout (N, C, Hout, Wout) -> dx (input_shape): each gradient over its divisor, spread over
    the window's taps inside the input."""
    dout = _dev(dout)
    return _avg_backward(dout, input_shape, *_avg_geometry(input_shape[2:], kernel, stride, padding,
                                                           ceil_mode, count_include_pad,
                                                           divisor_override, dout.dtype))


def adaptive_avg_pool2d(x, output_hw):
    """The cpu tier's adaptive average pooling on device arrays; (1, 1) is a block reduction per
    plane."""
    x = _dev(x)
    out_hw = adaptive_output_hw(x.shape[2:], output_hw)
    if out_hw == (1, 1):
        return _global(x, False)[0]
    return _avg(x, *adaptive_avg_geometry(x.shape[2:], out_hw, x.dtype))


def adaptive_avg_pool2d_backward(dout, input_shape):
    """The gradient of :func:`adaptive_avg_pool2d` on device arrays."""
    dout = _dev(dout)
    return _avg_backward(dout, input_shape,
                         *adaptive_avg_geometry(input_shape[2:], dout.shape[2:], dout.dtype))


_I2, _I3, _I4 = "int64[:, ::1]", "int64[:, :, ::1]", "int64[:, :, :, ::1]"

KERNELS = {
    "_max_pool_kernel": (_max_pool_kernel,
                         _sigs(f"void({_A4}, {_I2}, {_I2}, int64, int64, {_A4}, {_I4})")),
    "_global_pool_kernel": (_global_pool_kernel,
                            _sigs("void({f}[:, ::1], boolean, {f}, {f}[::1], int64[::1])")),
    "_switch_bounds_kernel": (_switch_bounds_kernel,
                              [f"void({_I3}, int64, int64, {_I2}, int64[::1])"]),
    "_route_kernel": (_route_kernel, _sigs(f"void({_A3}, {_I3}, {_I2}, boolean, {_A3})")),
    "_gather_kernel": (_gather_kernel, _sigs(f"void({_A2}, {_I2}, {_A2}, int64[::1])")),
    "_avg_pool_kernel": (_avg_pool_kernel, _sigs(f"void({_A4}, {_I2}, {_I2}, {_A2}, {_A4})")),
    "_avg_pool_backward_kernel": (_avg_pool_backward_kernel,
                                  _sigs(f"void({_A4}, {_I2}, {_I2}, {_A2}, {_A4})")),
}
