"""cpu pooling: max pooling with switches, average pooling, adaptive pooling, max unpooling and
their gradients; each kernel runs over a range of images, split across the threads when the
input is large.

One generic kernel per reduction walks the window tables of :mod:`fastconv._shapes` (per output
row / column: the first tap inside the input and how many taps, ``dilation`` apart), so padding,
dilation, ceil mode and adaptive bins are all the same loop. Max pooling keeps unrolled 2x2 and
3x3 kernels for the common windows without padding or dilation, and the global (1, 1) adaptive
pools are a plain reduction over each plane.
"""
import numpy as np
from numba import njit

from ..._shapes import adaptive_avg_geometry, adaptive_output_hw, pool_output_hw
from ..._shapes import adaptive_tables as _adaptive_tables
from ..._shapes import avg_pool_geometry as _avg_geometry
from ..._shapes import pool_tables as _tables
from .._memory import empty
from ._common import _planes


def _planes_of(a):
    """A 4-D array (N, C, H, W) as (N * C, H * W) (also for N = 0): the kernels loop over planes."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2] * a.shape[3])


def _stack(a):
    """A 4-D array (N, C, H, W) as (N * C, H, W), a view where a is contiguous."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


def _each_plane(kernel, ins, outs, *args):
    """``kernel(*ins, *args, *outs)`` over the (N * C) planes of the 4-D ``ins`` and ``outs``
    (outs contiguous), split across the threads when the largest of them is large."""
    ins, outs = [_stack(a) for a in ins], [_stack(a) for a in outs]
    return _planes(lambda a, b: kernel(*[v[a:b] for v in ins], *args, *[v[a:b] for v in outs]),
                   max(ins + outs, key=lambda v: v.size))


@njit(inline="always")
def _window(rows, cols, oh, ow):
    """Window (oh, ow) of the tables: its first row, how many rows, first column, how many."""
    return rows[oh, 0], rows[oh, 1], cols[ow, 0], cols[ow, 1]


@njit(nogil=True, cache=True)
def _max_pool_kernel(x, rows, cols, dh, dw, out, switches):
    """Max and its flat in-plane index per window; the first maximum wins, and the first NaN.

    Window (oh, ow) takes ``rows[oh, 1]`` rows from ``rows[oh, 0]``, ``dh`` apart, times
    ``cols[ow, 1]`` columns from ``cols[ow, 0]``, ``dw`` apart. The hot loop tests only
    ``v > best`` and notes whether a NaN went by; the rare window that held one is scanned again
    by the NaN rule (a NaN test inside the hot loop cost 3x).
    """
    planes, h, wd = x.shape
    _, ho, wo = out.shape
    for p in range(planes):
        for oh in range(ho):
            for ow in range(wo):
                y0, nh, x0, nw = _window(rows, cols, oh, ow)
                best = x[p, y0, x0]
                arg = y0 * wd + x0
                nan = False
                for i in range(nh):
                    y = y0 + i * dh
                    for j in range(nw):
                        v = x[p, y, x0 + j * dw]
                        nan |= v != v
                        if v > best:
                            best = v
                            arg = y * wd + x0 + j * dw
                if nan:
                    for i in range(nh):
                        y = y0 + i * dh
                        for j in range(nw):
                            v = x[p, y, x0 + j * dw]
                            if v != v and best == best:
                                best = v
                                arg = y * wd + x0 + j * dw
                out[p, oh, ow] = best
                switches[p, oh, ow] = arg


@njit(inline="always")
def _first_max3(row, x0, base, best, arg, nan):
    """Fold row[x0:x0+3] (flat index ``base + x0 + j``) into (best, arg): strict >, first wins;
    ``nan`` is raised when one of the three is NaN."""
    a, b, d = row[x0], row[x0 + 1], row[x0 + 2]
    if a > best:
        best, arg = a, base + x0
    if b > best:
        best, arg = b, base + x0 + 1
    if d > best:
        best, arg = d, base + x0 + 2
    return best, arg, nan | (a != a) | (b != b) | (d != d)


@njit(nogil=True, cache=True)
def _max_pool_3x3_kernel(x, sh, sw, out, switches):
    """3x3 windows inside the input, any stride, unrolled (faster than the general loop:
    ``python -m benchmarks.overheads``); same rules."""
    planes, h, wd = x.shape
    _, ho, wo = out.shape
    for p in range(planes):
        plane = x[p]
        for oh in range(ho):
            y0 = oh * sh
            r0, r1, r2 = plane[y0], plane[y0 + 1], plane[y0 + 2]
            b0, b1, b2 = y0 * wd, (y0 + 1) * wd, (y0 + 2) * wd
            for ow in range(wo):
                x0 = ow * sw
                best, arg = r0[x0], b0 + x0
                best, arg, nan = _first_max3(r0, x0, b0, best, arg, False)
                best, arg, nan = _first_max3(r1, x0, b1, best, arg, nan)
                best, arg, nan = _first_max3(r2, x0, b2, best, arg, nan)
                if nan:  # rare: the first NaN in row-major order wins
                    for i in range(3):
                        row = plane[y0 + i]
                        for j in range(3):
                            v = row[x0 + j]
                            if v != v:
                                best, arg = v, (y0 + i) * wd + x0 + j
                                break
                        if best != best:
                            break
                out[p, oh, ow] = best
                switches[p, oh, ow] = arg


@njit(nogil=True, cache=True)
def _max_pool_2x2_kernel(x, out, switches):
    """The common 2x2, stride-2 window, unrolled as :func:`_max_pool_3x3_kernel` is and for the
    same reason; the same rules."""
    planes, h, wd = x.shape
    _, ho, wo = out.shape
    for p in range(planes):
        plane = x[p]
        for oh in range(ho):
            top = plane[2 * oh]
            bottom = plane[2 * oh + 1]
            base = 2 * oh * wd
            for ow in range(wo):
                x0 = 2 * ow
                a, b, d, e = top[x0], top[x0 + 1], bottom[x0], bottom[x0 + 1]
                best, arg = a, base + x0
                if b > best:
                    best, arg = b, base + x0 + 1
                if d > best:
                    best, arg = d, base + wd + x0
                if e > best:
                    best, arg = e, base + wd + x0 + 1
                if a != a or b != b or d != d or e != e:  # rare: the first NaN wins
                    if a != a:
                        best, arg = a, base + x0
                    elif b != b:
                        best, arg = b, base + x0 + 1
                    elif d != d:
                        best, arg = d, base + wd + x0
                    else:
                        best, arg = e, base + wd + x0 + 1
                out[p, oh, ow] = best
                switches[p, oh, ow] = arg


@njit(nogil=True, cache=True)
def _max_values_2x2_kernel(x, out):
    """:func:`_max_pool_2x2_kernel`'s maxima without the switches (inference: a plan's pools):
    each row pair's columnwise maxima, then the maxima of neighbouring columns, two loops that
    LLVM vectorises. A NaN in a window gives NaN; among equal values the first is kept."""
    planes, h, wd = x.shape
    _, ho, wo = out.shape
    pair = np.empty(2 * wo, dtype=x.dtype)
    for p in range(planes):
        plane = x[p]
        for oh in range(ho):
            top, bottom, dst = plane[2 * oh], plane[2 * oh + 1], out[p, oh]
            for j in range(2 * wo):
                t, u = top[j], bottom[j]
                pair[j] = t if t >= u or t != t else u
            for ow in range(wo):
                a, b = pair[2 * ow], pair[2 * ow + 1]
                dst[ow] = a if a >= b or a != a else b


@njit(nogil=True, cache=True)
def _global_pool_kernel(x, want_max, count, out, switches):
    """x (P, L) -> out, switches (P,): per plane the max and its first index (the first NaN
    wins), or the mean: the sum (four interleaved partial sums) over ``count`` (in x's dtype)."""
    planes, length = x.shape
    for p in range(planes):
        if want_max:
            best = x[p, 0]
            arg = 0
            nan = False
            for i in range(length):  # as _max_pool_kernel: the NaN rule only if one went by
                v = x[p, i]
                nan |= v != v
                if v > best:
                    best = v
                    arg = i
            if nan:
                for i in range(length):
                    if x[p, i] != x[p, i]:
                        best = x[p, i]
                        arg = i
                        break
            out[p] = best
            switches[p] = arg
        elif length < 4:
            acc = x[p, 0]
            for i in range(1, length):
                acc += x[p, i]
            out[p] = acc / count
        else:
            s0, s1, s2, s3 = x[p, 0], x[p, 1], x[p, 2], x[p, 3]
            quads = length // 4
            for q in range(1, quads):
                i = 4 * q
                s0 += x[p, i]
                s1 += x[p, i + 1]
                s2 += x[p, i + 2]
                s3 += x[p, i + 3]
            for i in range(4 * quads, length):
                s0 += x[p, i]
            out[p] = ((s0 + s1) + (s2 + s3)) / count


@njit(nogil=True, cache=True)
def _route_kernel(values, indices, accumulate, out):
    """out (P, M) gets values (P, L) scattered to the flat positions ``indices`` (P, L) in
    row-major order, summed or the last kept; returns the count of out-of-range indices."""
    planes, m = out.shape
    length = values.shape[1]
    bad = 0
    for p in range(planes):
        for j in range(m):
            out[p, j] = 0
        for i in range(length):
            j = indices[p, i]
            if j < 0 or j >= m:
                bad += 1
            elif accumulate:
                out[p, j] += values[p, i]
            else:
                out[p, j] = values[p, i]
    return bad


@njit(nogil=True, cache=True)
def _gather_kernel(src, indices, out):
    """out (P, L) = src (P, M) at the flat positions ``indices`` (P, L) (0 where an index is
    out of range); returns the count of out-of-range indices."""
    planes, length = out.shape
    m = src.shape[1]
    bad = 0
    for p in range(planes):
        for i in range(length):
            j = indices[p, i]
            if j < 0 or j >= m:
                bad += 1
                out[p, i] = 0
            else:
                out[p, i] = src[p, j]
    return bad


@njit(nogil=True, cache=True)
def _avg_pool_kernel(x, rows, cols, div, out):
    """Each window's sum (row-major, from its first tap) over ``div[oh, ow]``; windows as in
    :func:`_max_pool_kernel` with dilation 1."""
    planes, ho, wo = out.shape
    for p in range(planes):
        for oh in range(ho):
            y0, nh = rows[oh, 0], rows[oh, 1]
            for ow in range(wo):
                x0, nw = cols[ow, 0], cols[ow, 1]
                acc = x[p, y0, x0]
                for i in range(nh):
                    for j in range(nw):
                        if i > 0 or j > 0:
                            acc += x[p, y0 + i, x0 + j]
                out[p, oh, ow] = acc / div[oh, ow]


@njit(nogil=True, cache=True)
def _avg_pool_backward_kernel(dout, rows, cols, div, dx):
    """dx (P, H, W) gets ``dout[oh, ow] / div[oh, ow]`` added over each window, windows in
    row-major order."""
    planes, h, wd = dx.shape
    _, ho, wo = dout.shape
    for p in range(planes):
        for y in range(h):
            for xx in range(wd):
                dx[p, y, xx] = 0
        for oh in range(ho):
            for ow in range(wo):
                y0, nh, x0, nw = _window(rows, cols, oh, ow)
                g = dout[p, oh, ow] / div[oh, ow]
                for i in range(nh):
                    for j in range(nw):
                        dx[p, y0 + i, x0 + j] += g


@njit(nogil=True, cache=True)
def _global_avg_backward_kernel(dout, count, dx):
    """dx (P, L): every value of plane p is ``dout[p] / count`` (the gradient of a mean over
    the plane), written once (the windowed kernel zeroes the plane and adds)."""
    for p in range(dx.shape[0]):
        g = dout[p] / count
        for i in range(dx.shape[1]):
            dx[p, i] = g


def _max_over(x, rows, cols, dilation):
    """The generic max-pool kernel over the windows ``rows x cols`` -> (out, switches)."""
    n_img, c = x.shape[:2]
    out = empty((n_img, c, len(rows), len(cols)), dtype=x.dtype)
    switches = empty(out.shape, dtype=np.int64)
    _each_plane(_max_pool_kernel, [x], [out, switches], rows, cols, *dilation)
    return out, switches


def _global(x, want_max):
    """Global pooling, one reduction per plane -> (out, switches or None) of (N, C, 1, 1)."""
    n_img, c, h, wd = x.shape
    x2 = x.reshape(n_img * c, h * wd)
    out = empty((n_img * c,), dtype=x.dtype)
    switches = empty((n_img * c,), dtype=np.int64)
    count = x.dtype.type(h * wd)
    _planes(lambda a, b: _global_pool_kernel(x2[a:b], want_max, count, out[a:b], switches[a:b]), x2)
    return out.reshape(n_img, c, 1, 1), switches.reshape(n_img, c, 1, 1)


def _global_mean_backward(dout, input_shape):
    """The gradient of :func:`_global`'s mean: dout (N, C, 1, 1) over H*W, every pixel."""
    n_img, c, h, wd = input_shape
    dx = empty((n_img * c, h * wd), dtype=dout.dtype)
    d1 = dout.reshape(n_img * c)
    count = dout.dtype.type(h * wd)
    _planes(lambda a, b: _global_avg_backward_kernel(d1[a:b], count, dx[a:b]), dx)
    return dx.reshape(tuple(input_shape))


def _unrolled(hw, out_hw, kernel, stride, padding, dilation):
    """Which unrolled max-pool kernel takes these windows: 2 (2x2, stride 2), 3 (3x3) or None.
    Only windows that lie inside the input do (no padding, no dilation, every window whole)."""
    (h, wd), (ho, wo), (kh, kw), (sh, sw) = hw, out_hw, kernel, stride
    inside = (tuple(padding) == (0, 0) and tuple(dilation) == (1, 1)
              and (ho - 1) * sh + kh <= h and (wo - 1) * sw + kw <= wd)
    if inside and (kh, kw, sh, sw) == (2, 2, 2, 2):
        return 2
    return 3 if inside and (kh, kw) == (3, 3) else None


def max_pool2d(x, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """x (N, C, H, W) -> (out, switches int64) of (N, C, Hout, Wout); switches are flat
    ``h * W + w`` indices per plane, padding is -inf. Windows of 2x2 / stride 2 and 3x3 that lie
    inside the input take unrolled kernels (:func:`_unrolled`)."""
    n_img, c, h, wd = x.shape
    ho, wo = pool_output_hw((h, wd), kernel, stride, padding, dilation, ceil_mode)
    unrolled = _unrolled((h, wd), (ho, wo), kernel, stride, padding, dilation)
    if unrolled is not None:
        out = empty((n_img, c, ho, wo), dtype=x.dtype)
        switches = empty((n_img, c, ho, wo), dtype=np.int64)
        if unrolled == 2:
            _each_plane(_max_pool_2x2_kernel, [x], [out, switches])
        else:
            _each_plane(_max_pool_3x3_kernel, [x], [out, switches], *stride)
        return out, switches
    return _max_over(x, *_tables((h, wd), kernel, stride, padding, dilation, ceil_mode), dilation)


def max_pool2d_values(x, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """:func:`max_pool2d`'s output alone (no switches: nothing will go backward), for
    :func:`fastconv.compile`'s plans; the unrolled 2x2 stride-2 windows skip the indices."""
    n_img, c, h, wd = x.shape
    ho, wo = pool_output_hw((h, wd), kernel, stride, padding, dilation, ceil_mode)
    if _unrolled((h, wd), (ho, wo), kernel, stride, padding, dilation) == 2:
        out = empty((n_img, c, ho, wo), dtype=x.dtype)
        _each_plane(_max_values_2x2_kernel, [x], [out])
        return out
    return max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)[0]


def adaptive_max_pool2d(x, output_hw):
    """x (N, C, H, W) -> (out, switches int64) of (N, C, Hout, Wout) over adaptive bins; (1, 1)
    is a reduction per plane."""
    out_hw = adaptive_output_hw(x.shape[2:], output_hw)
    if out_hw == (1, 1):
        return _global(x, True)
    return _max_over(x, *_adaptive_tables(x.shape[2:], out_hw), (1, 1))


def _route(values, indices, plane_shape, accumulate):
    n_img, c = values.shape[:2]
    out = empty((n_img * c, plane_shape[0] * plane_shape[1]), dtype=values.dtype)
    v2, i2 = _planes_of(values), _planes_of(indices)
    bad = _planes(lambda a, b: _route_kernel(v2[a:b], i2[a:b], accumulate, out[a:b]), out)
    return out.reshape((n_img, c) + tuple(plane_shape)), sum(bad) == 0


def max_pool2d_backward(dout, switches, input_shape):
    """Route dout (N, C, Hout, Wout) by switches into dx (input_shape), overlaps summed ->
    (dx, ok); ``ok`` is False if a switch is outside the plane."""
    return _route(dout, switches, input_shape[2:], True)


def max_unpool2d(x, indices, output_hw):
    """x (N, C, H, W) -> (out (N, C, Hout, Wout), ok): zeros but for x at ``indices`` (the last
    write winning a repeat); ``ok`` is False if an index is outside the output plane."""
    return _route(x, indices, output_hw, False)


def max_unpool2d_backward(dout, indices):
    """dout (N, C, Hout, Wout) -> (dx of indices' shape, ok): dout read at ``indices``."""
    dx = empty(tuple(indices.shape), dtype=dout.dtype)
    d2, i2, x2 = _planes_of(dout), _planes_of(indices), _planes_of(dx)
    bad = _planes(lambda a, b: _gather_kernel(d2[a:b], i2[a:b], x2[a:b]), x2)
    return dx, sum(bad) == 0


def _avg(x, rows, cols, div):
    out = empty(x.shape[:2] + (len(rows), len(cols)), dtype=x.dtype)
    _each_plane(_avg_pool_kernel, [x], [out], rows, cols, div)
    return out


def _avg_backward(dout, input_shape, rows, cols, div):
    dx = empty(tuple(input_shape), dtype=dout.dtype)
    _each_plane(_avg_pool_backward_kernel, [dout], [dx], rows, cols, div)
    return dx


def avg_pool2d(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """x (N, C, H, W) -> (N, C, Hout, Wout): each window's sum over PyTorch's divisor."""
    return _avg(x, *_avg_geometry(x.shape[2:], kernel, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override, x.dtype))


def avg_pool2d_backward(dout, input_shape, kernel, stride, padding=(0, 0), ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """dout (N, C, Hout, Wout) -> dx (input_shape): each gradient over its divisor, spread over
    the window's taps inside the input."""
    return _avg_backward(dout, input_shape, *_avg_geometry(input_shape[2:], kernel, stride, padding,
                                                           ceil_mode, count_include_pad,
                                                           divisor_override, dout.dtype))


def adaptive_avg_pool2d(x, output_hw):
    """x (N, C, H, W) -> (N, C, Hout, Wout), the mean of each adaptive bin; (1, 1) is a
    reduction per plane."""
    out_hw = adaptive_output_hw(x.shape[2:], output_hw)
    if out_hw == (1, 1):
        return _global(x, False)[0]
    return _avg(x, *adaptive_avg_geometry(x.shape[2:], out_hw, x.dtype))


def adaptive_avg_pool2d_backward(dout, input_shape):
    """dout (N, C, Hout, Wout) -> dx (input_shape): each bin's gradient over its size, spread
    over the bin; (1, 1) is one write of each plane."""
    if tuple(dout.shape[2:]) == (1, 1):
        return _global_mean_backward(dout, input_shape)
    return _avg_backward(dout, input_shape,
                         *adaptive_avg_geometry(input_shape[2:], dout.shape[2:], dout.dtype))
