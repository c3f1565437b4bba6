"""The cpu tier: Numba kernels for the data movement, NumPy's BLAS for the products.

Convolution is im2col + one GEMM over the whole batch. The column layout is
``cols[(c, fy, fx), n, oh, ow]``, so every inner run is an output row (contiguous in cols, and
contiguous in x when the stride is 1), and ``w.reshape(K, -1) @ cols`` yields ``(K, N, Hout, Wout)``;
one fused kernel then moves that to NCHW and adds the bias. Backward moves ``dout`` to
``(K, N, P)`` while summing ``db`` in the same pass, then ``dw = dout_t @ cols.T`` and
``dcols = w.T @ dout_t``; col2im gathers into each ``(n, c)`` plane from its own thread, so no
atomics and a deterministic result.

Large batches are processed in chunks so that the temporaries never exceed ``WORKSPACE_BYTES``;
the temporaries live in per-thread buffers reused across calls (a fresh large buffer on every
call costs a page fault per 4 KiB).

Pooling kernels run one ``(n, c)`` plane per parallel iteration.
"""
import threading
import time

import numba
import numpy as np
from numba import njit, prange

from .._shapes import conv_output_hw, pool_output_hw
from .naive import (  # NumPy's ufuncs are already vectorised: the cpu tier shares them
    dropout, dropout_backward, sigmoid, sigmoid_backward, softmax_cross_entropy, tanh,
    tanh_backward)

__all__ = ["batch_norm", "batch_norm_backward", "conv2d", "conv2d_backward", "im2col", "col2im",
           "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "relu", "relu_backward", "sigmoid", "sigmoid_backward",
           "tanh", "tanh_backward", "linear", "linear_backward", "dropout", "dropout_backward",
           "softmax_cross_entropy"]

#: Upper bound, in bytes, of the temporaries one conv forward or backward call may hold.
WORKSPACE_BYTES = 192 * 2**20

#: Input-gradient columns are computed this many bytes at a time, so col2im reads them from cache.
DCOLS_BLOCK_BYTES = 4 * 2**20

#: How long OpenBLAS's idle workers busy-spin after a threaded GEMM (its default timeout is
#: about 0.1 s). A parallel Numba kernel launched inside that window would share a core with a
#: spinning BLAS thread and stall for a scheduler tick (4-8 ms), so it runs on one thread instead.
#: Measured on shape B (64x32x14x14 -> 64, 3x3): forward + backward 12 ms this way, 23 ms with
#: every kernel on two threads; calling openblas_set_num_threads(1) after a GEMM does not stop
#: the spinning. Set it to 0 to always use every thread (e.g. with OPENBLAS_THREAD_TIMEOUT low).
BLAS_SPIN_SECONDS = 0.12

_local = threading.local()
_last_gemm = [-1.0]


def _gemm(a, b, out):
    """``out = a @ b`` through NumPy's BLAS, remembering when BLAS last ran."""
    np.matmul(a, b, out=out)
    _last_gemm[0] = time.perf_counter()
    return out


def _launch(kernel, *args):
    """Run a parallel kernel on all Numba threads, or on one while BLAS workers are still spinning.

    One owner of the cores at a time: the results do not depend on the thread count.
    """
    if time.perf_counter() - _last_gemm[0] > BLAS_SPIN_SECONDS:
        return kernel(*args)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)


def _buffer(slot, shape, dtype):
    """A reusable temporary of ``shape`` for this thread; its contents are undefined."""
    size = int(np.prod(shape))
    pool = _local.__dict__.setdefault("pool", {})
    buf = pool.get((slot, np.dtype(dtype)))
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        pool[(slot, np.dtype(dtype))] = buf
    return buf[:size].reshape(shape)


# ---------------------------------------------------------------------------------------------
# Numba kernels. Each takes its output preallocated.

@njit(inline="always")
def _valid_range(fx, left, stride, width, out_width):
    """Output columns ``[lo, hi)`` whose input column ``ow*stride + fx - left`` is inside [0, width)."""
    lo = 0
    off = left - fx
    if off > 0:
        lo = (off + stride - 1) // stride
    hi = (width - 1 + off) // stride + 1 if width - 1 + off >= 0 else 0
    return min(lo, out_width), max(min(hi, out_width), min(lo, out_width))


@njit(parallel=True, cache=True)
def _im2col_kernel(x, fh, fw, sh, sw, top, left, cols):
    """x (N, C, H, W) -> cols (C*fh*fw, N, Ho, Wo).

    Plain indexing with a select in the inner loop (no per-row views, no split loops) lets LLVM
    emit masked vector copies over each output row.
    """
    n_img, c_in, h, wd = x.shape
    rows, _, ho, wo = cols.shape
    for t in prange(rows * n_img):
        q = t // n_img
        n = t - q * n_img
        c = q // (fh * fw)
        fy = (q // fw) % fh
        fx = q % fw
        lo, hi = _valid_range(fx, left, sw, wd, wo)
        off = fx - left
        for oh in range(ho):
            y = oh * sh + fy - top
            if y < 0 or y >= h:
                for ow in range(wo):
                    cols[q, n, oh, ow] = 0
            else:
                for ow in range(wo):
                    cols[q, n, oh, ow] = x[n, c, y, ow * sw + off] if lo <= ow < hi else 0


@njit(parallel=True, cache=True)
def _col2im_kernel(cols, fh, fw, sh, sw, top, left, dx):
    """cols (C*fh*fw, N, Ho, Wo) -> dx (N, C, H, W), each (n, c) plane gathered by one thread."""
    n_img, c_in, h, wd = dx.shape
    _, _, ho, wo = cols.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        plane = dx[n, c]
        plane[:, :] = 0
        for fy in range(fh):
            for fx in range(fw):
                q = (c * fh + fy) * fw + fx
                lo, hi = _valid_range(fx, left, sw, wd, wo)
                for oh in range(ho):
                    y = oh * sh + fy - top
                    if y < 0 or y >= h:
                        continue
                    src = cols[q, n, oh]
                    dst = plane[y]
                    for ow in range(lo, hi):
                        dst[ow * sw + fx - left] += src[ow]


@njit(parallel=True, cache=True)
def _knp_to_nkp_bias(src, b, out):
    """src (K, N, P) -> out (N, K, P) plus b[k]."""
    k_out, n_img, p = src.shape
    for t in prange(n_img * k_out):
        n = t // k_out
        k = t - n * k_out
        s = src[k, n]
        d = out[n, k]
        bias = b[k]
        for i in range(p):
            d[i] = s[i] + bias


@njit(parallel=True, cache=True)
def _nkp_to_knp_sum(src, out, sums):
    """src (N, K, P) -> out (K, N, P); sums[k] = the sum of src[:, k, :]."""
    n_img, k_out, p = src.shape
    for k in prange(k_out):
        acc = sums[k]
        for n in range(n_img):
            s = src[n, k]
            d = out[k, n]
            d[0] = s[0]
            part = s[0]  # a partial sum per row keeps float32 rounding small
            for i in range(1, p):
                d[i] = s[i]
                part += s[i]
            acc += part
        sums[k] = acc


@njit(parallel=True, cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, out, switches):
    """Max and its flat in-plane index per window; the first maximum wins, and the first NaN.

    The hot loop tests only ``v > best`` and notes whether a NaN went by; the rare window that
    held one is scanned again by the NaN rule (a NaN test inside the hot loop cost 3x).
    """
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        for oh in range(ho):
            y0 = oh * sh
            for ow in range(wo):
                x0 = ow * sw
                best = x[n, c, y0, x0]
                arg = y0 * wd + x0
                nan = False
                for i in range(kh):
                    for j in range(kw):
                        v = x[n, c, y0 + i, x0 + j]
                        nan |= v != v
                        if v > best:
                            best = v
                            arg = (y0 + i) * wd + x0 + j
                if nan:
                    for i in range(kh):
                        for j in range(kw):
                            v = x[n, c, y0 + i, x0 + j]
                            if v != v and best == best:
                                best = v
                                arg = (y0 + i) * wd + x0 + j
                out[n, c, oh, ow] = best
                switches[n, c, oh, ow] = arg


@njit(parallel=True, cache=True)
def _max_pool_2x2_kernel(x, out, switches):
    """The common 2x2, stride-2 window unrolled (4.5x faster than the general loop); same rules."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        plane = x[n, c]
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
                out[n, c, oh, ow] = best
                switches[n, c, oh, ow] = arg


@njit(parallel=True, cache=True)
def _max_pool_backward_kernel(dout, switches, dx):
    """dx (N, C, H*W) gets dout routed by switches; returns the count of out-of-range switches."""
    n_img, c_in, hw = dx.shape
    m = dout.shape[2]
    bad = 0
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        for j in range(hw):
            dx[n, c, j] = 0
        for i in range(m):
            j = switches[n, c, i]
            if j < 0 or j >= hw:
                bad += 1
            else:
                dx[n, c, j] += dout[n, c, i]
    return bad


@njit(parallel=True, cache=True)
def _avg_pool_kernel(x, kh, kw, sh, sw, scale, out):
    n_img, c_in, _, _ = x.shape
    _, _, ho, wo = out.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        for oh in range(ho):
            for ow in range(wo):
                acc = x[n, c, oh * sh, ow * sw]
                for i in range(kh):
                    for j in range(kw):
                        if i > 0 or j > 0:
                            acc += x[n, c, oh * sh + i, ow * sw + j]
                out[n, c, oh, ow] = acc * scale


@njit(parallel=True, cache=True)
def _avg_pool_backward_kernel(dout, kh, kw, sh, sw, scale, dx):
    n_img, c_in, h, wd = dx.shape
    _, _, ho, wo = dout.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        for y in range(h):
            for xx in range(wd):
                dx[n, c, y, xx] = 0
        for oh in range(ho):
            for ow in range(wo):
                g = dout[n, c, oh, ow] * scale
                for i in range(kh):
                    for j in range(kw):
                        dx[n, c, oh * sh + i, ow * sw + j] += g


@njit(parallel=True, cache=True)
def _relu_kernel(x, out):
    for i in prange(x.size):
        v = x[i]
        out[i] = 0 if v < 0 else v


@njit(parallel=True, cache=True)
def _relu_backward_kernel(dout, y, dx):
    for i in prange(dout.size):
        dx[i] = dout[i] if y[i] > 0 else 0


# ---------------------------------------------------------------------------------------------
# The tier contract (see fastconv.kernels.naive for the shapes).

def _chunk(n_img, per_image_bytes):
    return max(1, min(n_img, WORKSPACE_BYTES // max(per_image_bytes, 1)))


def _im2col_into(x, kernel, stride, pads, cols):
    (fh, fw), (sh, sw) = kernel, stride
    _launch(_im2col_kernel, x, fh, fw, sh, sw, pads[0], pads[2], cols)


def im2col(x, kernel, stride, pads):
    """x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout); layout as :func:`fastconv.kernels.naive.im2col`."""
    n_img, c, h, wd = x.shape
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads)
    cols = np.empty((c * kernel[0] * kernel[1], n_img, ho, wo), dtype=x.dtype)
    _im2col_into(x, kernel, stride, pads, cols)
    return cols.reshape(cols.shape[0], -1)


def col2im(cols, x_shape, kernel, stride, pads):
    """cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlapping contributions summed."""
    n_img, c, h, wd = x_shape
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads)
    dx = np.empty(x_shape, dtype=cols.dtype)
    (fh, fw), (sh, sw) = kernel, stride
    _launch(_col2im_kernel, cols.reshape(-1, n_img, ho, wo), fh, fw, sh, sw, pads[0], pads[2], dx)
    return dx


def conv2d(x, w, b, stride, pads):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` is the column matrix when the whole batch fit in one chunk, so backward need not
    unfold x again; otherwise None.
    """
    n_img, c, h, wd = x.shape
    k = w.shape[0]
    kernel = w.shape[2:]
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads)
    rows, p = c * kernel[0] * kernel[1], ho * wo
    out = np.empty((n_img, k, ho, wo), dtype=x.dtype)
    w2 = w.reshape(k, rows)
    bias = b if b is not None else np.zeros(k, dtype=x.dtype)
    step = _chunk(n_img, (2 * rows + k) * p * x.itemsize)
    saved = None
    for n0 in range(0, n_img, step):
        nc = min(step, n_img - n0)
        if step == n_img:
            cols = saved = np.empty((rows, nc, ho, wo), dtype=x.dtype)
        else:
            cols = _buffer("cols", (rows, nc, ho, wo), x.dtype)
        _im2col_into(x[n0:n0 + nc], kernel, stride, pads, cols)
        out_t = _buffer("out_t", (k, nc * p), x.dtype)
        _gemm(w2, cols.reshape(rows, nc * p), out_t)
        _launch(_knp_to_nkp_bias, out_t.reshape(k, nc, p), bias, out[n0:n0 + nc].reshape(nc, k, p))
    return out, saved


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); see :func:`conv2d`."""
    n_img, k, ho, wo = dout.shape
    c = x.shape[1]
    kernel = w.shape[2:]
    rows, p = c * kernel[0] * kernel[1], ho * wo
    w2 = w.reshape(k, rows)
    dw = np.empty((k, rows), dtype=w.dtype)
    db = np.zeros(k, dtype=w.dtype)
    dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
    step = n_img if saved is not None else _chunk(n_img, (2 * rows + k) * p * x.itemsize)
    dw_part = None
    for n0 in range(0, n_img, step):
        nc = min(step, n_img - n0)
        if saved is not None:
            cols = saved
        else:
            cols = _buffer("cols", (rows, nc, ho, wo), x.dtype)
            _im2col_into(x[n0:n0 + nc], kernel, stride, pads, cols)
        cols2 = cols.reshape(rows, nc * p)
        dout_t = _buffer("dout_t", (k, nc, p), dout.dtype)
        _launch(_nkp_to_knp_sum, dout[n0:n0 + nc].reshape(nc, k, p), dout_t, db)
        dout_t2 = dout_t.reshape(k, nc * p)
        if n0 == 0:
            _gemm(dout_t2, cols2.T, dw)
        else:
            if dw_part is None:
                dw_part = np.empty_like(dw)
            _gemm(dout_t2, cols2.T, dw_part)
            dw += dw_part
        if need_dx:
            # dcols in blocks of images small enough to stay in cache until col2im reads them
            (fh, fw), (sh, sw) = kernel, stride
            block = max(1, min(nc, DCOLS_BLOCK_BYTES // (rows * p * dout.itemsize)))
            for b0 in range(0, nc, block):
                nb = min(block, nc - b0)
                dcols = _buffer("dcols", (rows, nb, ho, wo), dout.dtype)
                _gemm(w2.T, dout_t[:, b0:b0 + nb].reshape(k, nb * p), dcols.reshape(rows, nb * p))
                _launch(_col2im_kernel, dcols, fh, fw, sh, sw, pads[0], pads[2],
                        dx[n0 + b0:n0 + b0 + nb])
    return dx, dw.reshape(w.shape), (db if has_bias else None)


def max_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (out, switches int64); switches are flat ``h * W + w`` indices per plane."""
    n_img, c, h, wd = x.shape
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = np.empty((n_img, c, ho, wo), dtype=x.dtype)
    switches = np.empty((n_img, c, ho, wo), dtype=np.int64)
    if tuple(kernel) == (2, 2) and tuple(stride) == (2, 2):
        _launch(_max_pool_2x2_kernel, x, out, switches)
    else:
        _launch(_max_pool_kernel, x, kernel[0], kernel[1], stride[0], stride[1], out, switches)
    return out, switches


def max_pool2d_backward(dout, switches, input_shape):
    """Route dout (N, C, Hout, Wout) by switches into dx (input_shape) -> (dx, ok)."""
    n_img, c, h, wd = input_shape
    dx = np.empty((n_img, c, h * wd), dtype=dout.dtype)
    bad = _launch(_max_pool_backward_kernel, dout.reshape(n_img, c, -1), switches.reshape(n_img, c, -1), dx)
    return dx.reshape(input_shape), bad == 0


def avg_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (N, C, Hout, Wout), the mean of each window."""
    n_img, c, h, wd = x.shape
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = np.empty((n_img, c, ho, wo), dtype=x.dtype)
    scale = x.dtype.type(1.0 / (kernel[0] * kernel[1]))
    _launch(_avg_pool_kernel, x, kernel[0], kernel[1], stride[0], stride[1], scale, out)
    return out


def avg_pool2d_backward(dout, input_shape, kernel, stride):
    """dout (N, C, Hout, Wout) -> dx (input_shape), each gradient spread evenly over its window."""
    dx = np.empty(input_shape, dtype=dout.dtype)
    scale = dout.dtype.type(1.0 / (kernel[0] * kernel[1]))
    _launch(_avg_pool_backward_kernel, dout, kernel[0], kernel[1], stride[0], stride[1], scale, dx)
    return dx


def relu(x):
    """max(x, 0), NaN propagating; one fused parallel pass."""
    out = np.empty_like(x)
    _launch(_relu_kernel, x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    dx = np.empty_like(dout)
    _launch(_relu_backward_kernel, dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


def linear(x, w, b):
    """x (N, in) @ w.T + b -> (N, out), through BLAS."""
    out = _gemm(x, w.T, np.empty((x.shape[0], w.shape[0]), dtype=x.dtype))
    if b is not None:
        out += b
    return out


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None)."""
    dx = _gemm(dout, w, np.empty(x.shape, dtype=x.dtype)) if need_dx else None
    dw = _gemm(dout.T, x, np.empty(w.shape, dtype=w.dtype))
    return dx, dw, (dout.sum(axis=0) if has_bias else None)


@njit(parallel=True, cache=True)
def _bn_forward_kernel(x, weight, bias, mean, var, inv_std, training, eps, one, out):
    """x (N, C, L): per channel, batch statistics (two passes) when training, then the affine map.

    ``one`` (1 in x's dtype) and ``eps`` keep the arithmetic in x's dtype.
    """
    n_img, c_in, length = x.shape
    inv_count = one / (n_img * length)
    for c in prange(c_in):
        if training:
            acc = x[0, c, 0] - x[0, c, 0]
            for n in range(n_img):
                part = x[n, c, 0]
                for i in range(1, length):
                    part += x[n, c, i]
                acc += part
            mu = acc * inv_count
            acc = acc - acc
            for n in range(n_img):
                d = x[n, c, 0] - mu
                part = d * d
                for i in range(1, length):
                    d = x[n, c, i] - mu
                    part += d * d
                acc += part
            mean[c] = mu
            var[c] = acc * inv_count
            inv_std[c] = one / np.sqrt(var[c] + eps)
        scale = weight[c] * inv_std[c]
        shift = bias[c] - mean[c] * scale
        for n in range(n_img):
            for i in range(length):
                out[n, c, i] = x[n, c, i] * scale + shift


@njit(parallel=True, cache=True)
def _bn_backward_kernel(dout, x, weight, mean, inv_std, training, need_dx, inv_count, dweight, dbias,
                        dx):
    n_img, c_in, length = x.shape
    for c in prange(c_in):
        mu = mean[c]
        s = inv_std[c]
        sum_g = dout[0, c, 0] - dout[0, c, 0]
        sum_gx = sum_g
        for n in range(n_img):
            pg = dout[n, c, 0]
            pgx = dout[n, c, 0] * (x[n, c, 0] - mu)
            for i in range(1, length):
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


def batch_norm(x, weight, bias, mean, var, training, eps):
    """Batch normalisation of x (N, C, L); see :func:`fastconv.kernels.naive.batch_norm`."""
    c = x.shape[1]
    out = np.empty_like(x)
    eps = x.dtype.type(eps)
    if training:
        mean, var = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
        inv_std = np.empty(c, dtype=x.dtype)
    else:
        inv_std = 1 / np.sqrt(var + eps)
    _launch(_bn_forward_kernel, x, weight, bias, mean, var, inv_std, training, eps, x.dtype.type(1), out)
    if not training:
        return out, None, None, (mean, inv_std)
    return out, mean, var, (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,))."""
    mean, inv_std = saved
    c = x.shape[1]
    dweight = np.empty(c, dtype=x.dtype)
    dbias = np.empty(c, dtype=x.dtype)
    dx = np.empty_like(x) if need_dx else np.empty((1, 1, 1), dtype=x.dtype)
    inv_count = x.dtype.type(1.0 / (x.shape[0] * x.shape[2]))
    _launch(_bn_backward_kernel, dout, x, weight, mean, inv_std, training, need_dx, inv_count,
            dweight, dbias, dx)
    return (dx if need_dx else None), dweight, dbias
