"""cpu convolution by direct accumulation, for stride-1 layers with few input channels.

With one input channel and a 3x3 kernel (a network's first layer), im2col's GEMM has an inner
dimension of ``C*FH*FW = 9``: BLAS runs such a product far below its speed, and the copies
around it (columns nine times the input, the ``(K, N, P)`` product moved to NCHW) cost more than
the arithmetic. Here nothing is unfolded: each image is copied once into zero-padded planes of
``Wp = Wout + FW - 1`` columns, and every output plane is accumulated, in the same rows of
``Wp`` values, from the runs of those planes shifted by each kernel offset:

    acc[k, p] = b[k] + sum_{c, fy, fx} w[k, c, fy, fx] * xpad[c, fy*Wp + fx + p],  p < Hout*Wp

one vectorised multiply-add over ``Hout*Wp`` contiguous values per ``(k, c, fy, fx)``; the last
``FW - 1`` columns of each row are computed and dropped when the plane is written out.
Backward uses the same runs: dout is laid out in rows of ``Wp`` with zeros in the dropped
columns, ``dw[k, c, fy, fx]`` is the dot product of that plane with the shifted run of
``xpad[c]`` (three taps per pass over dout), and dx is the forward form again with the kernel
flipped, run over dout's planes after ``(FH-1)*Wp + FW-1`` leading zeros, then cropped. Where x
or w holds inf or NaN the zeros of the dropped columns would meet them (``0 * inf``), so those
calls take the same sums row by row over the valid columns.

Which layers come here is :func:`.conv.algorithm`'s rule; the timings against im2col + GEMM
that set it are in ``benchmarks/results-2026-12-thresholds.md`` (shape A of
``python -m benchmarks.report`` runs this path).

Threads: the images are split across the threads in contiguous runs; every image writes its own
partial dW and db, which are added in image order afterwards, so the gradients are bitwise the
same for any thread count.
"""
import numpy as np
from numba import njit

from ..._shapes import conv_output_hw
from .._memory import empty
from .._workers import split
from . import _common
from ._common import _buffer, _zeroed_buffer


@njit(nogil=True, cache=True)
def _pad_image(x, n, top, left, wp, xpad):
    """xpad[c, (y + top)*Wp + xx + left] = x[n, c, y, xx] (the rest of xpad stays as it was:
    zero); returns a probe that is NaN once any value is not finite."""
    c_in, h, wd = x.shape[1], x.shape[2], x.shape[3]
    zero = xpad.dtype.type(0)
    probe = zero
    for c in range(c_in):
        for y in range(h):
            src = x[n, c, y]
            dst = xpad[c, (y + top) * wp + left:(y + top) * wp + left + wd]
            for xx in range(wd):  # rows as slices: 4-D indexing per value is much slower
                v = src[xx]
                dst[xx] = v
                probe += v * zero
    return probe


@njit(nogil=True, cache=True, fastmath={"contract"})
def _taps(acc, src, s, step, w, k, c, fy, fx, count, length):
    """``acc[p] += sum_i w[k, c, fy, fx + i] * src[s + i*step + p]`` for ``i < count <= 3``:
    up to three taps in one pass, so acc is loaded and stored once per three multiply-adds
    (one tap per pass runs at about half the speed:
    ``benchmarks/results-2026-12-thresholds.md``)."""
    a = src[s:s + length]
    w0 = w[k, c, fy, fx]
    if count == 1:
        for p in range(length):
            acc[p] += w0 * a[p]
        return
    b = src[s + step:s + step + length]
    w1 = w[k, c, fy, fx + 1]
    if count == 2:
        for p in range(length):
            acc[p] += w0 * a[p] + w1 * b[p]
        return
    d = src[s + 2 * step:s + 2 * step + length]
    w2 = w[k, c, fy, fx + 2]
    for p in range(length):
        acc[p] += w0 * a[p] + w1 * b[p] + w2 * d[p]


@njit(nogil=True, cache=True, fastmath={"contract"})
def _forward(x, w, b, top, left, out, xpad, acc):
    """x (n, C, H, W), w (K, C, FH, FW), b (K,) -> out (n, K, Hout, Wout), stride 1; xpad
    (C, plane) zero but where the kernel writes x, acc (Hout*Wp,) any."""
    n_img, c_in = x.shape[0], x.shape[1]
    k_out, _, fh, fw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    wp = wo + fw - 1
    length = ho * wp
    for n in range(n_img):
        _pad_image(x, n, top, left, wp, xpad)
        for k in range(k_out):
            bias = b[k]
            for p in range(length):
                acc[p] = bias
            for c in range(c_in):
                for fy in range(fh):
                    for fx in range(0, fw, 3):
                        _taps(acc, xpad[c], fy * wp + fx, 1, w, k, c, fy, fx, min(3, fw - fx),
                              length)
            plane = out[n, k]
            for oh in range(ho):
                row = plane[oh]
                src = acc[oh * wp:oh * wp + wo]
                for ow in range(wo):
                    row[ow] = src[ow]


@njit(nogil=True, cache=True, fastmath={"contract", "reassoc"})
def _dots(g, src, s, count, length, exact, ho, wp, wo):
    """``sum_p g[p] * src[s + i + p]`` for ``i < count <= 3`` (zeros past count), in one pass
    over g; ``exact``: over the valid columns only (``ow < Wo`` of each row of Wp). "reassoc"
    lets LLVM vectorise the sums (the flags are the callee's own: a called kernel does not
    inherit its caller's)."""
    zero = g.dtype.type(0)
    s0 = s1 = s2 = zero
    if exact:
        for oh in range(ho):
            for ow in range(wo):
                q = oh * wp + ow
                v = g[q]
                s0 += v * src[s + q]
                if count > 1:
                    s1 += v * src[s + 1 + q]
                if count > 2:
                    s2 += v * src[s + 2 + q]
        return s0, s1, s2
    a = src[s:s + length]
    if count == 1:
        for p in range(length):
            s0 += g[p] * a[p]
        return s0, s1, s2
    b = src[s + 1:s + 1 + length]
    if count == 2:
        for p in range(length):
            s0 += g[p] * a[p]
            s1 += g[p] * b[p]
        return s0, s1, s2
    d = src[s + 2:s + 2 + length]
    for p in range(length):
        s0 += g[p] * a[p]
        s1 += g[p] * b[p]
        s2 += g[p] * d[p]
    return s0, s1, s2


@njit(nogil=True, cache=True, fastmath={"contract", "reassoc"})
def _backward(dout, x, w, top, left, need_dx, dw_parts, db_parts, dx, xpad, gpad, dpad):
    """dout (n, K, Hout, Wout), x (n, C, H, W) -> dw_parts[i] (K, C, FH, FW) and db_parts[i]
    (K,) of image i, and dx (n, C, H, W) when ``need_dx``. Scratch: xpad (C, plane) and gpad
    (K, lead + plane + FW) zero but where the kernel writes, dpad (plane,) any.

    dx is the forward form again on the dout planes: ``dpad[c, q] = sum w[k, c, fy, fx] *
    gpad[k, q + (FH-1-fy)*Wp + FW-1-fx]`` over the padded plane's positions q, where gpad holds
    dout's rows of Wp after ``(FH-1)*Wp + FW-1`` zeros; then dpad is cropped to dx.
    """
    n_img, c_in = x.shape[0], x.shape[1]
    k_out, _, fh, fw = w.shape
    ho, wo = dout.shape[2], dout.shape[3]
    wp = wo + fw - 1
    length = ho * wp
    plane = (ho + fh - 1) * wp + fw
    lead = (fh - 1) * wp + fw - 1
    zero = x.dtype.type(0)
    w_probe = zero
    for k in range(k_out):
        for c in range(c_in):
            for fy in range(fh):
                for fx in range(fw):
                    w_probe += w[k, c, fy, fx] * zero
    for n in range(n_img):
        exact = _pad_image(x, n, top, left, wp, xpad) != 0
        for k in range(k_out):
            part = zero
            for oh in range(ho):
                src = dout[n, k, oh]
                dst = gpad[k, lead + oh * wp:lead + oh * wp + wo]
                for ow in range(wo):
                    v = src[ow]
                    dst[ow] = v
                    part += v
            db_parts[n, k] = part
        for k in range(k_out):
            g = gpad[k, lead:lead + length]
            for c in range(c_in):
                for fy in range(fh):
                    for fx in range(0, fw, 3):
                        count = min(3, fw - fx)
                        s0, s1, s2 = _dots(g, xpad[c], fy * wp + fx, count, length, exact, ho,
                                           wp, wo)
                        dw_parts[n, k, c, fy, fx] = s0
                        if count > 1:
                            dw_parts[n, k, c, fy, fx + 1] = s1
                        if count > 2:
                            dw_parts[n, k, c, fy, fx + 2] = s2
        if not need_dx:
            continue
        for c in range(c_in):
            for q in range(plane):
                dpad[q] = 0
            for k in range(k_out):
                for fy in range(fh):
                    for fx in range(0, fw, 3):
                        s = (fh - 1 - fy) * wp + fw - 1 - fx
                        if w_probe != 0:  # inf or NaN in w: only the valid positions of dout
                            for oh in range(ho):
                                for ow in range(wo):
                                    q = oh * wp + ow
                                    for i in range(min(3, fw - fx)):
                                        dpad[q + (fy * wp + fx + i)] += w[k, c, fy, fx + i] * \
                                            gpad[k, lead + q]
                        else:
                            _taps(dpad, gpad[k], s, -1, w, k, c, fy, fx, min(3, fw - fx), plane)
            for y in range(dx.shape[2]):
                row = dx[n, c, y]
                src = dpad[(y + top) * wp + left:(y + top) * wp + left + dx.shape[3]]
                for xx in range(dx.shape[3]):
                    row[xx] = src[xx]


@njit(nogil=True, cache=True)
def _sum_in_order(parts):
    """parts (n, m) -> (m,): the rows added in row order (the same bits for any thread count)."""
    total = np.zeros(parts.shape[1], dtype=parts.dtype)
    for i in range(parts.shape[0]):
        for j in range(parts.shape[1]):
            total[j] += parts[i, j]
    return total


def _parts(x_shape, w_shape, ho, wo):
    """Thread shares of the images (see :func:`._common.conv_parts`)."""
    n, c = x_shape[0], x_shape[1]
    k, _, fh, fw = w_shape
    return _common.conv_parts(n * k * c * fh * fw * ho * (wo + fw - 1), n, n)


def _sizes(c, k, fh, fw, ho, wo):
    """``(Wp, plane, lead)``: the padded width, the padded plane with its tail, and the zeros
    before dout's rows in gpad (see :func:`_backward`)."""
    wp = wo + fw - 1
    return wp, (ho + fh - 1) * wp + fw, (fh - 1) * wp + fw - 1


def _scratch(x_shape, pads, k, fh, fw, ho, wo, dtype, backward):
    """This thread's scratch: ``(xpad, acc)`` for forward, ``(xpad, gpad, dpad)`` for backward.
    The zeroed ones stay zero wherever the kernels never write (padding, dropped columns)."""
    c, h, wd = x_shape[1:]
    top, left = pads[0], pads[2]
    wp, plane, lead = _sizes(c, k, fh, fw, ho, wo)
    # the zeroed buffers are told apart by what the kernels write into them, not by shape only:
    # another layer's x could sit elsewhere in planes of the same size
    xpad = _zeroed_buffer(("direct_xpad", h, wd, top, left, wp), (c, plane), dtype)
    if not backward:
        return xpad, _buffer("direct_acc", (ho * wp,), dtype)
    return xpad, _zeroed_buffer(("direct_gpad", ho, wo, wp, lead), (k, lead + plane + fw),
                                dtype), _buffer("direct_dpad", (plane,), dtype)


def memory(x_shape, w_shape, pads, itemsize):
    """Bytes ``(kept for backward, workspace)``: nothing kept; per thread share the scratch of
    :func:`_scratch` (backward's, the larger), plus every image's partial dW and db."""
    n, c, h, wd = x_shape
    k, _, fh, fw = w_shape
    ho, wo = conv_output_hw((h, wd), (fh, fw), (1, 1), pads)
    wp, plane, lead = _sizes(c, k, fh, fw, ho, wo)
    per_share = (c * plane + k * (lead + plane + fw) + plane) * itemsize
    return 0, _parts(x_shape, w_shape, ho, wo) * per_share + n * (k * c * fh * fw + k) * itemsize


def conv2d(x, w, b, pads):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None, stride 1 -> (out, None)."""
    n, _, h, wd = x.shape
    k, _, fh, fw = w.shape
    ho, wo = conv_output_hw((h, wd), (fh, fw), (1, 1), pads)
    out = empty((n, k, ho, wo), dtype=x.dtype)
    bias = b if b is not None else np.zeros(k, dtype=x.dtype)
    top, left = pads[0], pads[2]
    split(lambda a, z: _forward(x[a:z], w, bias, top, left, out[a:z],
                                *_scratch(x.shape, pads, k, fh, fw, ho, wo, x.dtype, False)),
          n, _parts(x.shape, w.shape, ho, wo))
    return out, None


def conv2d_backward(dout, x, w, has_bias, pads, need_dx=True):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); the images' partial dW and db
    are added in image order."""
    n = x.shape[0]
    k, c, fh, fw = w.shape
    ho, wo = dout.shape[2], dout.shape[3]
    top, left = pads[0], pads[2]
    dx = empty(x.shape, dtype=x.dtype) if need_dx else np.empty((n, c, 0, 0), dtype=x.dtype)
    dw_parts = empty((n, k, c, fh, fw), dtype=w.dtype)
    db_parts = empty((n, k), dtype=w.dtype)
    split(lambda a, z: _backward(dout[a:z], x[a:z], w, top, left, need_dx, dw_parts[a:z],
                                 db_parts[a:z], dx[a:z],
                                 *_scratch(x.shape, pads, k, fh, fw, ho, wo, x.dtype,
                                           True)),
          n, _parts(x.shape, w.shape, ho, wo))
    dw = _sum_in_order(dw_parts.reshape(n, k * c * fh * fw)).reshape(w.shape)
    db = _sum_in_order(db_parts)
    return (dx if need_dx else None), dw, (db if has_bias else None)
