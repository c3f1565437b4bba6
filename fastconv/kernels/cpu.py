"""The cpu tier: Numba kernels for the data movement, NumPy's BLAS for the products.

Convolution is im2col + GEMM. The column layout is ``cols[(c, fy, fx), n, oh, :]``, and
``w.reshape(K, -1) @ cols`` yields ``(K, n, Hout, Wq)``; one kernel then moves that to NCHW and
adds the bias. Backward moves ``dout`` to ``(K, n, Hout, Wq)`` while summing ``db``, then
``dw += dout_t @ cols.T`` and ``dcols = w.T @ dout_t``, and col2im adds dcols back into the
planes (no atomics, a deterministic result). Three layouts of the rows (``_Geometry``): stride
1 with a padded width at most 5/4 of ``Wout`` uses rows ``Wq`` = the padded width (the last
``FW - 1`` columns of each row are computed and dropped), so every row of cols is one
contiguous run of a zero-padded plane; other stride-1 layers copy rows of ``Wout`` from padded
planes; strided layers index x directly.

Threads: the conv and linear layers split the batch across Python threads that each run
single-threaded BLAS and ``nogil`` kernels on a block of images at a time (see
:mod:`fastconv.kernels._workers`), so the block stays in cache from im2col to GEMM to layout and
BLAS never spins against Numba. The other kernels run on the same threads, each on a range of
images, channels or elements. (They were ``parallel=True`` kernels; Numba's OpenMP workers then
busy-wait after each kernel on the core a pool thread needs next, and the lenet training step
took 50 ms instead of 33.) Large outputs come from :mod:`fastconv.kernels._memory`, so repeated
calls reuse memory that is already mapped instead of faulting in fresh pages.
"""
import math
import threading

import numpy as np
from numba import njit

from .._shapes import conv_output_hw, pool_output_hw
from ._memory import empty
from . import _workers
from ._workers import one_blas_thread, split
from .naive import (  # NumPy's ufuncs are already vectorised: the cpu tier shares them
    dropout, dropout_backward, sigmoid, sigmoid_backward, softmax_cross_entropy, tanh,
    tanh_backward)

__all__ = ["batch_norm", "batch_norm_backward", "conv2d", "conv2d_backward", "im2col", "col2im",
           "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "relu", "relu_backward", "sigmoid", "sigmoid_backward",
           "tanh", "tanh_backward", "linear", "linear_backward", "dropout", "dropout_backward",
           "softmax_cross_entropy"]

#: The column matrix of a whole batch (short-row layouts only) is kept for backward only up to
#: this many bytes; past it, and for wide rows, each block's columns are unfolded again.
WORKSPACE_BYTES = 192 * 2**20

#: Each thread works through its images in blocks whose columns take at most this many bytes,
#: so a block's columns, products and gradients stay in cache between the kernels and GEMMs.
BLOCK_BYTES = 2 * 2**20

#: A convolution is split across the threads only with at least this many forward FLOPs and
#: SPLIT_IMAGES images per thread; otherwise it runs in the calling thread. A split costs
#: ~0.15 ms, and shares of a few images scaled poorly here (E, 10x20x12x12 -> 40, 5x5:
#: fwd+bwd 1.9 ms in one thread, 2.9 ms in two shares of 5 images).
SPLIT_FLOPS = 2e7
SPLIT_IMAGES = 8

#: Elementwise kernels on fewer elements run in the calling thread: one thread streams about
#: 2**21 float32 values (ReLU) in the ~0.3 ms that a split must save to pay for itself.
SPLIT_ELEMENTS = 2**21

#: Pooling and batch-norm kernels (more work per element) split from this many input elements.
SPLIT_PLANE_ELEMENTS = 2**18

#: GEMMs of fewer multiply-adds than this run in the calling thread; bigger ones are split by
#: rows across the threads (a split costs ~0.15 ms).
SPLIT_GEMM = 2**23

#: OpenBLAS runs products of at least this many multiply-adds on all its threads, whose workers
#: then busy-spin for ~0.1 s against ours: below SPLIT_GEMM they run with BLAS at one thread.
BLAS_THREADED_GEMM = 2**18

_local = threading.local()


def _matmul(a, b, out):
    """``out = a @ b`` for 2-D arrays through NumPy's BLAS, split by rows of ``a`` across threads."""
    m, k = a.shape
    macs = m * k * b.shape[1]
    if macs < BLAS_THREADED_GEMM:
        np.matmul(a, b, out=out)
    elif m < 2 or macs < SPLIT_GEMM:
        with one_blas_thread():
            np.matmul(a, b, out=out)
    else:
        split(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), m)
    return out


def _elements(fn, size):
    """``fn(lo, hi)`` over ``range(size)``: split across the threads when that pays."""
    return split(fn, size, None if size >= SPLIT_ELEMENTS else 1)


def _planes(fn, a, axis=0):
    """``fn(lo, hi)`` over the images (``axis=0``) or channels (``axis=1``) of ``a``, split when
    the array is large enough."""
    return split(fn, a.shape[axis], None if a.size >= SPLIT_PLANE_ELEMENTS else 1)


def _buffer(slot, shape, dtype):
    """A reusable temporary of ``shape`` for this thread; its contents are undefined."""
    size = math.prod(shape)
    pool = _local.__dict__.setdefault("pool", {})
    buf = pool.get((slot, np.dtype(dtype)))
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        pool[(slot, np.dtype(dtype))] = buf
    return buf[:size].reshape(shape)


def _zeroed_buffer(slot, shape, dtype):
    """A reusable temporary of exactly ``shape`` for this thread, zero when first made.

    Kernels that write only part of it (the valid columns of a wide layout) rely on the rest
    staying zero, so each shape has its own buffer.
    """
    pool = _local.__dict__.setdefault("zeroed", {})
    key = (slot, tuple(shape), np.dtype(dtype))
    buf = pool.get(key)
    if buf is None:
        if len(pool) >= 16:  # many layer shapes: start again rather than grow without bound
            pool.clear()
        buf = pool[key] = np.zeros(shape, dtype=dtype)
    return buf


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


#: Column layouts: any stride, rows of Wout; stride 1 from padded planes, rows of Wout; stride 1,
#: rows of the padded width (see :func:`_im2col_kernel`).
GENERAL, PADDED, WIDE = 0, 1, 2


@njit(inline="always")
def _padded_planes(layout, wq, ho, fh, fw):
    """``(Wo, Wp, Ho*Wp, plane length)`` of the padded planes of a PADDED or WIDE layout (stride
    1, so ``Wp = Wo + fw - 1``); the plane has ``Ho + fh - 1`` rows and a tail of ``fw`` for the
    last run."""
    wo = wq - fw + 1 if layout == WIDE else wq
    wp = wo + fw - 1
    return wo, wp, ho * wp, (ho + fh - 1) * wp + fw


@njit(inline="always")
def _run_start(q, fh, fw, wp):
    """Where row ``q = (c*fh + fy)*fw + fx`` of cols starts in its padded plane: ``fy*Wp + fx``."""
    return ((q // fw) % fh) * wp + q % fw


@njit(nogil=True, cache=True)
def _im2col_kernel(x, fh, fw, sh, sw, top, left, layout, cols, j0):
    """x (n, C, H, W) -> cols[:, j0:j0+n] of cols (C*fh*fw, N, Ho, Wq).

    ``PADDED`` and ``WIDE`` (stride 1): the block's images are first zero-padded to planes of
    ``Wp`` columns, so every output row is a plain run of a padded row. ``WIDE`` makes the rows
    of cols the padded width, ``Wq = Wp``: then each row of cols is one contiguous run of the
    padded plane (``Ho*Wp`` values) copied by one vectorised ufunc call, and the last ``fw-1``
    columns of each output row are computed and dropped. Otherwise ``Wq = Wo``. ``GENERAL``
    (any stride): plain indexing with a select in the inner loop.
    """
    n_img, c_in, h, wd = x.shape
    rows, _, ho, wq = cols.shape
    if layout != GENERAL:
        wo, wp, length, plane = _padded_planes(layout, wq, ho, fh, fw)
        xpad = np.zeros((n_img, c_in, plane), dtype=cols.dtype)  # the block's padded images
        probe = cols.dtype.type(0)
        for n in range(n_img):
            for c in range(c_in):
                for y in range(h):
                    base = (y + top) * wp + left
                    for xx in range(wd):
                        v = x[n, c, y, xx]
                        xpad[n, c, base + xx] = v
                        probe += v * 0  # NaN once any value is not finite
        for q in range(rows):  # cols written in order
            c = q // (fh * fw)
            start = _run_start(q, fh, fw, wp)
            for n in range(n_img):
                if layout == PADDED:
                    for oh in range(ho):
                        s0 = start + oh * wp
                        np.positive(xpad[n, c, s0:s0 + wo], cols[q, j0 + n, oh])
                    continue
                dst = cols[q, j0 + n].reshape(length)
                np.positive(xpad[n, c, start:start + length], dst)  # a ufunc copy vectorises
                if probe != 0:  # keep inf/NaN out of the dropped columns (0 * inf in dW)
                    for oh in range(ho):
                        for ow in range(wo, wq):
                            dst[oh * wq + ow] = 0
        return
    for q in range(rows):
        c = q // (fh * fw)
        fy = (q // fw) % fh
        fx = q % fw
        lo, hi = _valid_range(fx, left, sw, wd, wq)
        off = fx - left
        for n in range(n_img):
            for oh in range(ho):
                y = oh * sh + fy - top
                if y < 0 or y >= h:
                    for ow in range(wq):
                        cols[q, j0 + n, oh, ow] = 0
                else:
                    for ow in range(wq):
                        cols[q, j0 + n, oh, ow] = x[n, c, y, ow * sw + off] if lo <= ow < hi else 0


@njit(nogil=True, cache=True)
def _col2im_kernel(cols, j0, fh, fw, sh, sw, top, left, layout, dx):
    """cols[:, j0:j0+n] of (C*fh*fw, N, Ho, Wq) -> dx (n, C, H, W), no atomics.

    ``PADDED``/``WIDE``: the layouts of :func:`_im2col_kernel`; each row of cols is added to a
    zero-padded plane by vectorised ufunc calls (the dropped columns of ``WIDE`` hold zeros),
    then the planes are cropped. ``GENERAL``: one plane at a time.
    """
    n_img, c_in, h, wd = dx.shape
    rows, _, ho, wq = cols.shape
    if layout != GENERAL:
        wo, wp, length, plane = _padded_planes(layout, wq, ho, fh, fw)
        dpad = np.zeros((n_img, c_in, plane), dtype=dx.dtype)
        for q in range(rows):  # cols read in order, each run added to its padded plane
            c = q // (fh * fw)
            start = _run_start(q, fh, fw, wp)
            for n in range(n_img):
                if layout == PADDED:
                    for oh in range(ho):
                        run = dpad[n, c, start + oh * wp:start + oh * wp + wo]
                        np.add(run, cols[q, j0 + n, oh], run)
                    continue
                run = dpad[n, c, start:start + length]
                np.add(run, cols[q, j0 + n].reshape(length), run)  # a ufunc vectorises
        for n in range(n_img):
            for c in range(c_in):
                for y in range(h):
                    base = (y + top) * wp + left
                    for xx in range(wd):
                        dx[n, c, y, xx] = dpad[n, c, base + xx]
        return
    for t in range(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        out = dx[n, c]
        out[:, :] = 0
        for fy in range(fh):
            for fx in range(fw):
                q = (c * fh + fy) * fw + fx
                lo, hi = _valid_range(fx, left, sw, wd, wq)
                for oh in range(ho):
                    y = oh * sh + fy - top
                    if y < 0 or y >= h:
                        continue
                    src = cols[q, j0 + n, oh]
                    dst = out[y]
                    for ow in range(lo, hi):
                        dst[ow * sw + fx - left] += src[ow]


@njit(nogil=True, cache=True)
def _knp_to_nkp_bias(src, b, out):
    """src (K, n, Ho, Wq) -> out (n, K, Ho, Wo) plus b[k], dropping columns past Wo."""
    k_out, n_img, ho, _ = src.shape
    wo = out.shape[3]
    for n in range(n_img):
        for k in range(k_out):
            bias = b[k]
            for oh in range(ho):
                for ow in range(wo):
                    out[n, k, oh, ow] = src[k, n, oh, ow] + bias


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _nkp_to_knp_sum(src, out, sums):
    """src (n, K, Ho, Wo) -> out (K, n, Ho, Wq); sums[k] += the sum of src[:, k].

    Columns past Wo of ``out`` are left as they are: the caller keeps them zero.
    """
    n_img, k_out, ho, wo = src.shape
    for k in range(k_out):
        acc = sums[k]
        for n in range(n_img):
            # a partial sum per plane keeps float32 rounding small; "reassoc" lets LLVM
            # vectorise it (a serial chain of adds ran at a quarter of memory speed)
            part = src[n, k, 0, 0] - src[n, k, 0, 0]
            for oh in range(ho):
                for ow in range(wo):
                    v = src[n, k, oh, ow]
                    out[k, n, oh, ow] = v
                    part += v
            acc += part
        sums[k] = acc


@njit(nogil=True, cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, out, switches):
    """Max and its flat in-plane index per window; the first maximum wins, and the first NaN.

    The hot loop tests only ``v > best`` and notes whether a NaN went by; the rare window that
    held one is scanned again by the NaN rule (a NaN test inside the hot loop cost 3x).
    """
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(n_img * c_in):
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
    """3x3 windows, any stride, unrolled (3x faster than the general loop); same rules."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        plane = x[n, c]
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
                out[n, c, oh, ow] = best
                switches[n, c, oh, ow] = arg


@njit(nogil=True, cache=True)
def _max_pool_2x2_kernel(x, out, switches):
    """The common 2x2, stride-2 window unrolled (4.5x faster than the general loop); same rules."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(n_img * c_in):
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


@njit(nogil=True, cache=True)
def _max_pool_backward_kernel(dout, switches, dx):
    """dx (N, C, H*W) gets dout routed by switches; returns the count of out-of-range switches."""
    n_img, c_in, hw = dx.shape
    m = dout.shape[2]
    bad = 0
    for t in range(n_img * c_in):
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


@njit(nogil=True, cache=True)
def _avg_pool_kernel(x, kh, kw, sh, sw, scale, out):
    n_img, c_in, _, _ = x.shape
    _, _, ho, wo = out.shape
    for t in range(n_img * c_in):
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


@njit(nogil=True, cache=True)
def _avg_pool_backward_kernel(dout, kh, kw, sh, sw, scale, dx):
    n_img, c_in, h, wd = dx.shape
    _, _, ho, wo = dout.shape
    for t in range(n_img * c_in):
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


@njit(nogil=True, cache=True)
def _relu_kernel(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = 0 if v < 0 else v


@njit(nogil=True, cache=True)
def _relu_backward_kernel(dout, y, dx):
    for i in range(dout.size):
        dx[i] = dout[i] if y[i] > 0 else 0


# ---------------------------------------------------------------------------------------------
# The tier contract (see fastconv.kernels.naive for the shapes).

def _standard_layout(stride):
    """The layout with rows of Wout (the public im2col/col2im contract) for ``stride``."""
    return PADDED if tuple(stride) == (1, 1) else GENERAL


def im2col(x, kernel, stride, pads):
    """x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout); layout as :func:`fastconv.kernels.naive.im2col`."""
    n_img, c, h, wd = x.shape
    (fh, fw), (sh, sw) = kernel, stride
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads)
    cols = empty((c * fh * fw, n_img, ho, wo), dtype=x.dtype)
    layout = _standard_layout(stride)
    split(lambda a, b: _im2col_kernel(x[a:b], fh, fw, sh, sw, pads[0], pads[2], layout, cols, a),
          n_img)
    return cols.reshape(cols.shape[0], -1)


def col2im(cols, x_shape, kernel, stride, pads):
    """cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlapping contributions summed."""
    n_img, c, h, wd = x_shape
    (fh, fw), (sh, sw) = kernel, stride
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads)
    dx = empty(x_shape, dtype=cols.dtype)
    c4 = np.ascontiguousarray(cols).reshape(-1, n_img, ho, wo)
    layout = _standard_layout(stride)
    split(lambda a, b: _col2im_kernel(c4, a, fh, fw, sh, sw, pads[0], pads[2], layout, dx[a:b]),
          n_img)
    return dx


class _Geometry:
    """Sizes of one convolution on the cpu tier.

    ``wide`` (stride 1, and a padded width at most 5/4 of the output width): the column matrix
    and the products use rows of the padded width ``wq`` (see :func:`_im2col_kernel`);
    otherwise ``wq = wo``.
    """

    def __init__(self, x_shape, w_shape, stride, pads, itemsize):
        n, c, h, wd = x_shape
        self.k, _, self.fh, self.fw = w_shape
        self.sh, self.sw = stride
        self.top, self.left = pads[0], pads[2]
        self.ho, self.wo = conv_output_hw((h, wd), (self.fh, self.fw), stride, pads)
        wp = wd + pads[2] + pads[3]
        # wide rows only where the dropped columns cost little GEMM work (at most 25% more)
        if self.sh != 1 or self.sw != 1:
            self.layout = GENERAL
        else:
            self.layout = WIDE if 4 * wp <= 5 * self.wo else PADDED
        self.wq = wp if self.wide else self.wo
        self.rows = c * self.fh * self.fw
        self.p = self.ho * self.wq
        per_image = self.rows * self.p * itemsize
        self.block = max(1, min(n, BLOCK_BYTES // per_image))  # images per block
        # split across threads only when the work pays for it
        macs = n * self.k * self.rows * self.p
        self.parts = 1
        if 2 * macs >= SPLIT_FLOPS:
            self.parts = max(1, min(_workers.threads(), n // max(SPLIT_IMAGES, 1)))
        self.one_share_blas_limit = self.parts == 1 and macs >= BLAS_THREADED_GEMM
        # wide columns are unfolded again per block in backward (a fast copy from x, which is
        # in cache) rather than kept: writing and re-reading the whole batch's columns through
        # memory cost more (B fwd+bwd 20.7 -> 19.2 ms); short-row columns are kept
        self.save = not self.wide and self.rows * n * self.p * itemsize <= WORKSPACE_BYTES

    @property
    def wide(self):
        return self.layout == WIDE

    def run(self, share, n_img):
        """``split(share, n_img)``, or one share with BLAS at one thread when that is needed."""
        if self.one_share_blas_limit:
            with one_blas_thread():
                return [share(0, n_img)]
        return split(share, n_img, self.parts)

    def im2col(self, x, cols, j0):
        _im2col_kernel(x, self.fh, self.fw, self.sh, self.sw, self.top, self.left, self.layout,
                       cols, j0)

    def col2im(self, cols, dx):
        _col2im_kernel(cols, 0, self.fh, self.fw, self.sh, self.sw, self.top, self.left,
                       self.layout, dx)


def conv2d(x, w, b, stride, pads):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    Each thread takes a contiguous share of the images and runs, block by block, im2col ->
    GEMM -> transpose to NCHW with the bias added. ``saved`` is the whole column matrix
    (C*FH*FW, N, Hout, Wq) for the short-row layouts when it fits in :data:`WORKSPACE_BYTES`, so
    backward need not unfold x again; otherwise None: each block's columns live in a per-thread
    buffer and backward unfolds them again.
    """
    n_img = x.shape[0]
    g = _Geometry(x.shape, w.shape, stride, pads, x.itemsize)
    k, rows, p = g.k, g.rows, g.p
    out = empty((n_img, k, g.ho, g.wo), dtype=x.dtype)
    w2 = w.reshape(k, rows)
    bias = b if b is not None else np.zeros(k, dtype=x.dtype)
    saved = empty((rows, n_img, g.ho, g.wq), dtype=x.dtype) if g.save else None

    def share(a, b):
        for s0 in range(a, b, g.block):
            s1 = min(s0 + g.block, b)
            m = s1 - s0
            if saved is not None:
                cols, j = saved, s0
            else:
                cols, j = _buffer("cols", (rows, m, g.ho, g.wq), x.dtype), 0
            g.im2col(x[s0:s1], cols, j)
            out_t = _buffer("out_t", (k, m, g.ho, g.wq), x.dtype)
            np.matmul(w2, cols[:, j:j + m].reshape(rows, m * p), out=out_t.reshape(k, m * p))
            _knp_to_nkp_bias(out_t, bias, out[s0:s1])

    g.run(share, n_img)
    return out, saved


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); see :func:`conv2d`.

    Each thread takes a contiguous share of the images; per block it moves dout to (K, n, P)
    while summing db, adds ``dout_t @ cols.T`` to its partial dW and, for dx, computes
    ``dcols = w.T @ dout_t`` and gathers it into dx (col2im) while the block is in cache. The
    partial dW and db are added in share order.
    """
    n_img = dout.shape[0]
    g = _Geometry(x.shape, w.shape, stride, pads, x.itemsize)
    k, rows, p = g.k, g.rows, g.p
    w2t = w.reshape(k, rows).T
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    # dcols is zero in the dropped columns of a wide layout unless w holds inf or NaN (0 * inf)
    clean = need_dx and g.wq > g.wo and not np.isfinite(w).all()

    def share(a, b):
        dw = np.zeros((k, rows), dtype=w.dtype)
        db = np.zeros(k, dtype=w.dtype)
        part = _buffer("dw_part", (k, rows), w.dtype)
        for s0 in range(a, b, g.block):
            s1 = min(s0 + g.block, b)
            m = s1 - s0
            if saved is not None:
                cols = saved[:, s0:s1].reshape(rows, m * p)
            else:
                buf = _buffer("cols", (rows, m, g.ho, g.wq), x.dtype)
                g.im2col(x[s0:s1], buf, 0)
                cols = buf.reshape(rows, m * p)
            dout_t = _zeroed_buffer("dout_t", (k, m, g.ho, g.wq), dout.dtype)
            _nkp_to_knp_sum(dout[s0:s1], dout_t, db)
            dout_t2 = dout_t.reshape(k, m * p)
            np.matmul(dout_t2, cols.T, out=part)
            dw += part
            if need_dx:
                dcols = _buffer("dcols", (rows, m, g.ho, g.wq), dout.dtype)
                np.matmul(w2t, dout_t2, out=dcols.reshape(rows, m * p))
                if clean:
                    dcols[..., g.wo:] = 0
                g.col2im(dcols, dx[s0:s1])
        return dw, db

    parts = g.run(share, n_img)
    dw, db = parts[0]
    for dw_i, db_i in parts[1:]:
        dw += dw_i
        db += db_i
    return dx, dw.reshape(w.shape), (db if has_bias else None)


def max_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (out, switches int64); switches are flat ``h * W + w`` indices per plane."""
    n_img, c, h, wd = x.shape
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = empty((n_img, c, ho, wo), dtype=x.dtype)
    switches = empty((n_img, c, ho, wo), dtype=np.int64)
    if tuple(kernel) == (2, 2) and tuple(stride) == (2, 2):
        _planes(lambda a, b: _max_pool_2x2_kernel(x[a:b], out[a:b], switches[a:b]), x)
    elif tuple(kernel) == (3, 3):
        sh, sw = stride
        _planes(lambda a, b: _max_pool_3x3_kernel(x[a:b], sh, sw, out[a:b], switches[a:b]), x)
    else:
        (kh, kw), (sh, sw) = kernel, stride
        _planes(lambda a, b: _max_pool_kernel(x[a:b], kh, kw, sh, sw, out[a:b], switches[a:b]), x)
    return out, switches


def max_pool2d_backward(dout, switches, input_shape):
    """Route dout (N, C, Hout, Wout) by switches into dx (input_shape) -> (dx, ok)."""
    n_img, c, h, wd = input_shape
    dx = empty((n_img, c, h * wd), dtype=dout.dtype)
    d3, s3 = dout.reshape(n_img, c, -1), switches.reshape(n_img, c, -1)
    bad = _planes(lambda a, b: _max_pool_backward_kernel(d3[a:b], s3[a:b], dx[a:b]), dx)
    return dx.reshape(input_shape), sum(bad) == 0


def avg_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (N, C, Hout, Wout), the mean of each window."""
    n_img, c, h, wd = x.shape
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = empty((n_img, c, ho, wo), dtype=x.dtype)
    scale = x.dtype.type(1.0 / (kernel[0] * kernel[1]))
    (kh, kw), (sh, sw) = kernel, stride
    _planes(lambda a, b: _avg_pool_kernel(x[a:b], kh, kw, sh, sw, scale, out[a:b]), x)
    return out


def avg_pool2d_backward(dout, input_shape, kernel, stride):
    """dout (N, C, Hout, Wout) -> dx (input_shape), each gradient spread evenly over its window."""
    dx = empty(input_shape, dtype=dout.dtype)
    scale = dout.dtype.type(1.0 / (kernel[0] * kernel[1]))
    (kh, kw), (sh, sw) = kernel, stride
    _planes(lambda a, b: _avg_pool_backward_kernel(dout[a:b], kh, kw, sh, sw, scale, dx[a:b]), dx)
    return dx


def relu(x):
    """max(x, 0), NaN propagating; one fused pass."""
    out = empty(x.shape, x.dtype)
    xf, of = x.reshape(-1), out.reshape(-1)
    _elements(lambda a, b: _relu_kernel(xf[a:b], of[a:b]), xf.size)
    return out


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    dx = empty(dout.shape, dout.dtype)
    df, yf, xf = dout.reshape(-1), out.reshape(-1), dx.reshape(-1)
    _elements(lambda a, b: _relu_backward_kernel(df[a:b], yf[a:b], xf[a:b]), df.size)
    return dx


def linear(x, w, b):
    """x (N, in) @ w.T + b -> (N, out), through BLAS."""
    out = _matmul(x, w.T, empty((x.shape[0], w.shape[0]), dtype=x.dtype))
    if b is not None:
        out += b
    return out


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None).

    One split for both products: thread i computes its share of dx's rows and of dw's rows.
    """
    (n, k_in), k_out = x.shape, w.shape[0]
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    dw = np.empty(w.shape, dtype=w.dtype)
    dout_t = dout.T
    if n * k_in * k_out < SPLIT_GEMM or min(n, k_out) < 2:
        if need_dx:
            _matmul(dout, w, dx)
        _matmul(dout_t, x, dw)
    else:
        parts = _workers.threads()

        def share(i, _):
            lo, hi = n * i // parts, n * (i + 1) // parts
            if need_dx and hi > lo:
                np.matmul(dout[lo:hi], w, out=dx[lo:hi])
            lo, hi = k_out * i // parts, k_out * (i + 1) // parts
            if hi > lo:
                np.matmul(dout_t[lo:hi], x, out=dw[lo:hi])
        split(share, parts)
    return dx, dw, (dout.sum(axis=0) if has_bias else None)


@njit(nogil=True, cache=True)
def _bn_forward_kernel(x, weight, bias, mean, var, inv_std, training, eps, one, out, c0, c1):
    """x (N, C, L): per channel, batch statistics (two passes) when training, then the affine map.

    ``one`` (1 in x's dtype) and ``eps`` keep the arithmetic in x's dtype.
    """
    n_img, c_in, length = x.shape
    inv_count = one / (n_img * length)
    for c in range(c0, c1):
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


@njit(nogil=True, cache=True)
def _bn_backward_kernel(dout, x, weight, mean, inv_std, training, need_dx, inv_count, dweight, dbias,
                        dx, c0, c1):
    n_img, c_in, length = x.shape
    for c in range(c0, c1):
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
    out = empty(x.shape, x.dtype)
    eps = x.dtype.type(eps)
    if training:
        mean, var = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
        inv_std = np.empty(c, dtype=x.dtype)
    else:
        inv_std = 1 / np.sqrt(var + eps)
    one = x.dtype.type(1)
    _planes(lambda a, b: _bn_forward_kernel(x, weight, bias, mean, var, inv_std, training, eps,
                                            one, out, a, b), x, axis=1)
    if not training:
        return out, None, None, (mean, inv_std)
    return out, mean, var, (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,))."""
    mean, inv_std = saved
    c = x.shape[1]
    dweight = np.empty(c, dtype=x.dtype)
    dbias = np.empty(c, dtype=x.dtype)
    dx = empty(x.shape, x.dtype) if need_dx else empty((1, 1, 1), dtype=x.dtype)
    inv_count = x.dtype.type(1.0 / (x.shape[0] * x.shape[2]))
    _planes(lambda a, b: _bn_backward_kernel(dout, x, weight, mean, inv_std, training, need_dx,
                                             inv_count, dweight, dbias, dx, a, b), x, axis=1)
    return (dx if need_dx else None), dweight, dbias
