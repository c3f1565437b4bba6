"""cpu grouped convolution: the dense path per group, and direct depthwise kernels.

``1 < groups < C``: each group is a dense convolution (im2col + GEMM, :mod:`.conv`) of a
contiguous copy of its channel slice; the outputs and gradients are copied into their slices.

Depthwise (``groups == C``, K = m*C output channels, output channel k reads input channel
``k // m``): the convolution has only FH*FW multiply-adds per output, too few for a GEMM, so it
runs as direct Numba kernels over whole (n, c) planes, split across the threads of
:mod:`fastconv.kernels._workers` by plane. The innermost loop runs along an output row (for one
kernel tap, ``out[oh, ow] += w * x[y, ow*sw + off]``), contiguous for stride 1 so that LLVM
vectorises it; padding is handled by clipping each tap's range of output columns, never by a
padded copy. Backward gives each plane its own partial dW and db, summed over the images in a
fixed order afterwards: results do not depend on the thread count.
"""
import numpy as np
from numba import njit

from ..._shapes import conv_output_hw
from .._memory import empty
from .._workers import split
from . import _common
from .conv import _valid_range, conv2d, conv2d_backward


def _slices(c, k, groups):
    cg, kg = c // groups, k // groups
    return [(slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)) for g in range(groups)]


def grouped_conv2d(x, w, b, stride, pads, dilation, groups):
    """x (N, C, H, W), w (K, C/groups, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` lists each group's state from :func:`.conv.conv2d`.
    """
    ho, wo = conv_output_hw(x.shape[2:], w.shape[2:], stride, pads, dilation)
    out = empty((x.shape[0], w.shape[0], ho, wo), dtype=x.dtype)
    saved = []
    for cs, ks in _slices(x.shape[1], w.shape[0], groups):
        og, sg = conv2d(np.ascontiguousarray(x[:, cs]), w[ks], None if b is None else b[ks],
                        stride, pads, dilation)
        out[:, ks] = og
        saved.append(sg)
    return out, saved


def grouped_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, groups, saved, need_dx):
    """Gradients of :func:`grouped_conv2d`: dout (N, K, Hout, Wout) -> (dx or None, dw, db or None)."""
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    dw = np.empty_like(w)
    db = np.empty(w.shape[0], dtype=w.dtype) if has_bias else None
    for g, (cs, ks) in enumerate(_slices(x.shape[1], w.shape[0], groups)):
        dxg, dw[ks], dbg = conv2d_backward(np.ascontiguousarray(dout[:, ks]),
                                           np.ascontiguousarray(x[:, cs]), w[ks], has_bias,
                                           stride, pads, saved[g], need_dx, dilation)
        if need_dx:
            dx[:, cs] = dxg
        if has_bias:
            db[ks] = dbg
    return dx, dw, db


@njit(inline="always")
def _row_axpy(dst, src, wv, lo, hi, stride, off):
    """``dst[ow] += wv * src[ow*stride + off]`` for ow in [lo, hi). Unit stride runs over views
    from index 0, which LLVM vectorises (indexing with ``ow + off`` keeps Numba's negative-index
    wraparound in the loop, and the loop scalar)."""
    if stride == 1:
        d, s = dst[lo:hi], src[lo + off:hi + off]
        for i in range(d.shape[0]):
            d[i] += wv * s[i]
    else:
        for ow in range(lo, hi):
            dst[ow] += wv * src[ow * stride + off]


@njit(inline="always")
def _row_scatter(dst, src, wv, lo, hi, stride, off):
    """``dst[ow*stride + off] += wv * src[ow]`` for ow in [lo, hi)."""
    if stride == 1:
        d, s = dst[lo + off:hi + off], src[lo:hi]
        for i in range(d.shape[0]):
            d[i] += wv * s[i]
    else:
        for ow in range(lo, hi):
            dst[ow * stride + off] += wv * src[ow]


@njit(inline="always")
def _row_dot(a, b, lo, hi, stride, off, acc):
    """``acc + sum(a[ow] * b[ow*stride + off])`` over ow in [lo, hi)."""
    if stride == 1:
        u, v = a[lo:hi], b[lo + off:hi + off]
        for i in range(u.shape[0]):
            acc += u[i] * v[i]
    else:
        for ow in range(lo, hi):
            acc += a[ow] * b[ow * stride + off]
    return acc


@njit(nogil=True, cache=True)
def _depthwise_kernel(x, w, b, sh, sw, dil_h, dil_w, top, left, out, p0, p1):
    """Planes ``p0 <= n*C + c < p1``: out[n, c*m:(c+1)*m] from x[n, c].

    x (N, C, H, W), w (m*C, FH, FW), b (m*C,), out (N, m*C, Hout, Wout).
    """
    c_in, h, wd = x.shape[1], x.shape[2], x.shape[3]
    k_out, fh, fw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    m = k_out // c_in
    for p in range(p0, p1):
        n = p // c_in
        c = p - n * c_in
        src = x[n, c]
        for k in range(c * m, c * m + m):
            dst = out[n, k]
            for oh in range(ho):
                row = dst[oh]
                row[:] = b[k]
                for fy in range(fh):
                    y = oh * sh + fy * dil_h - top
                    if y < 0 or y >= h:
                        continue
                    srow = src[y]
                    for fx in range(fw):
                        lo, hi = _valid_range(fx * dil_w, left, sw, wd, wo)
                        off = fx * dil_w - left
                        _row_axpy(row, srow, w[k, fy, fx], lo, hi, sw, off)


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _depthwise_backward_kernel(dout, x, w, sh, sw, dil_h, dil_w, top, left, need_dx, dx, dwp, dbp,
                               p0, p1):
    """Planes ``p0 <= n*C + c < p1``: dx[n, c] (when ``need_dx``) and the plane's partial
    gradients dwp[n, k] (FH, FW) and dbp[n, k] for its m output channels k.

    dout (N, m*C, Hout, Wout), x and dx (N, C, H, W), w (m*C, FH, FW), dwp (N, m*C, FH, FW),
    dbp (N, m*C). "reassoc" lets LLVM vectorise the sums along a row (a fixed order per build).
    """
    c_in, h, wd = x.shape[1], x.shape[2], x.shape[3]
    k_out, fh, fw = w.shape
    ho, wo = dout.shape[2], dout.shape[3]
    m = k_out // c_in
    zero = dwp.dtype.type(0)
    for p in range(p0, p1):
        n = p // c_in
        c = p - n * c_in
        src = x[n, c]
        if need_dx:
            dx[n, c] = 0
        for k in range(c * m, c * m + m):
            g = dout[n, k]
            taps = dwp[n, k]
            taps[:, :] = 0
            total = zero
            for oh in range(ho):
                grow = g[oh]
                part = zero
                for ow in range(wo):
                    part += grow[ow]
                total += part
                for fy in range(fh):
                    y = oh * sh + fy * dil_h - top
                    if y < 0 or y >= h:
                        continue
                    srow = src[y]
                    for fx in range(fw):
                        lo, hi = _valid_range(fx * dil_w, left, sw, wd, wo)
                        off = fx * dil_w - left
                        taps[fy, fx] += _row_dot(grow, srow, lo, hi, sw, off, zero)
                        if need_dx:
                            _row_scatter(dx[n, c, y], grow, w[k, fy, fx], lo, hi, sw, off)
            dbp[n, k] = total


def _parts(work):
    """Thread shares for ``work`` multiply-adds: all the threads when a split pays, else one."""
    return None if work >= _common.SPLIT_ELEMENTS else 1


def depthwise_conv2d(x, w, b, stride, pads, dilation):
    """x (N, C, H, W), w (m*C, 1, FH, FW), b (m*C,) or None -> (out (N, m*C, Hout, Wout), None)."""
    n_img, c = x.shape[:2]
    k, _, fh, fw = w.shape
    ho, wo = conv_output_hw(x.shape[2:], (fh, fw), stride, pads, dilation)
    out = empty((n_img, k, ho, wo), dtype=x.dtype)
    w3 = w.reshape(k, fh, fw)
    bias = b if b is not None else np.zeros(k, dtype=x.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    split(lambda p0, p1: _depthwise_kernel(x, w3, bias, sh, sw, dh, dw, pads[0], pads[2], out,
                                           p0, p1),
          n_img * c, _parts(out.size * fh * fw))
    return out, None


def depthwise_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, saved, need_dx):
    """Gradients of :func:`depthwise_conv2d`: dout (N, m*C, Hout, Wout) -> (dx, dw, db)."""
    n_img, c = x.shape[:2]
    k, _, fh, fw = w.shape
    w3 = w.reshape(k, fh, fw)
    dx = empty(x.shape, dtype=x.dtype) if need_dx else np.zeros((1, 1, 1, 1), dtype=x.dtype)
    dwp = empty((n_img, k, fh, fw), dtype=w.dtype)
    dbp = empty((n_img, k), dtype=w.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    split(lambda p0, p1: _depthwise_backward_kernel(dout, x, w3, sh, sw, dh, dw, pads[0], pads[2],
                                                    need_dx, dx, dwp, dbp, p0, p1),
          n_img * c, _parts(dout.size * fh * fw))
    # per-plane partials summed over the images in order: the same bits for any thread count
    db = dbp.sum(axis=0) if has_bias else None
    return (dx if need_dx else None), dwp.sum(axis=0).reshape(w.shape), db
