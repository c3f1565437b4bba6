"""cpu convolution by im2col + GEMM, with the layout passes fused around the products: the path
:func:`.conv.algorithm` takes where no other applies, and the public ``im2col``/``col2im``.

The column layout is ``cols[(c, fy, fx), n, oh, :]``, and ``w.reshape(K, -1) @ cols`` yields
``(K, n, Hout, Wq)``; one kernel then moves that to NCHW and adds the bias. Backward moves
``dout`` to ``(K, n, Hout, Wq)`` while summing ``db``, then ``dw += dout_t @ cols.T`` and
``dcols = w.T @ dout_t``, and col2im adds dcols back into the planes (no atomics, a deterministic
result). Three layouts of the rows (``_Geometry``): stride 1 with a padded width at most 5/4 of
``Wout`` uses rows ``Wq`` = the padded width (the last ``FW - 1`` columns of each row are
computed and dropped), so every row of cols is one contiguous run of a zero-padded plane; other
stride-1 layers copy rows of ``Wout`` from padded planes; strided and dilated layers index x
directly (dilation ``(dil_h, dil_w)`` spaces the kernel taps: tap (fy, fx) reads input row
``oh*sh + fy*dil_h - top``; the padded layouts serve dilation 1 only).

Threads: the batch is split across the Python threads of :mod:`fastconv.kernels._workers`,
each running single-threaded BLAS and ``nogil`` kernels on a block of images at a time, so the
block stays in cache from im2col to GEMM to layout and BLAS never spins against Numba.
"""
import numpy as np
from numba import njit

from ..._shapes import conv_output_hw
from .._memory import empty
from .._workers import one_blas_thread, split
from . import _common
from ._common import _buffer, _zeroed_buffer

__all__ = ["im2col", "col2im", "conv2d", "conv2d_backward", "memory"]


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
def _im2col_kernel(x, fh, fw, sh, sw, top, left, layout, cols, j0, dil_h=1, dil_w=1):
    """x (n, C, H, W) -> cols[:, j0:j0+n] of cols (C*fh*fw, N, Ho, Wq).

    ``PADDED`` and ``WIDE`` (stride 1): the block's images are first zero-padded to planes of
    ``Wp`` columns, so every output row is a plain run of a padded row. ``WIDE`` makes the rows
    of cols the padded width, ``Wq = Wp``: then each row of cols is one contiguous run of the
    padded plane (``Ho*Wp`` values) copied by one vectorised ufunc call, and the last ``fw-1``
    columns of each output row are computed and dropped. Otherwise ``Wq = Wo``. ``GENERAL``
    (any stride and dilation ``dil_h, dil_w``): plain indexing with a select in the inner loop.
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
        lo, hi = _valid_range(fx * dil_w, left, sw, wd, wq)
        off = fx * dil_w - left
        for n in range(n_img):
            for oh in range(ho):
                y = oh * sh + fy * dil_h - top
                if y < 0 or y >= h:
                    for ow in range(wq):
                        cols[q, j0 + n, oh, ow] = 0
                else:
                    for ow in range(wq):
                        cols[q, j0 + n, oh, ow] = x[n, c, y, ow * sw + off] if lo <= ow < hi else 0


@njit(nogil=True, cache=True)
def _col2im_kernel(cols, j0, fh, fw, sh, sw, top, left, layout, dx, dil_h=1, dil_w=1):
    """cols[:, j0:j0+n] of (C*fh*fw, N, Ho, Wq) -> dx (n, C, H, W), no atomics.

    ``PADDED``/``WIDE``: the layouts of :func:`_im2col_kernel`; each row of cols is added to a
    zero-padded plane by vectorised ufunc calls (the dropped columns of ``WIDE`` hold zeros),
    then the planes are cropped. ``GENERAL`` (any stride and dilation): one plane at a time.
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
                lo, hi = _valid_range(fx * dil_w, left, sw, wd, wq)
                for oh in range(ho):
                    y = oh * sh + fy * dil_h - top
                    if y < 0 or y >= h:
                        continue
                    src = cols[q, j0 + n, oh]
                    dst = out[y]
                    for ow in range(lo, hi):
                        dst[ow * sw + fx * dil_w - left] += src[ow]


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
            # vectorise it (a serial chain of adds runs far below memory speed); it starts
            # from a typed zero (``v - v`` of an inf is NaN)
            part = sums.dtype.type(0)
            for oh in range(ho):
                for ow in range(wo):
                    v = src[n, k, oh, ow]
                    out[k, n, oh, ow] = v
                    part += v
            acc += part
        sums[k] = acc



def _standard_layout(stride, dilation=(1, 1)):
    """The layout with rows of Wout (the public im2col/col2im contract) for ``stride``."""
    return PADDED if tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) else GENERAL


def im2col(x, kernel, stride, pads, dilation=(1, 1)):
    """x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout); layout as :func:`fastconv.kernels.naive.im2col`."""
    n_img, c, h, wd = x.shape
    (fh, fw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads, dilation)
    cols = empty((c * fh * fw, n_img, ho, wo), dtype=x.dtype)
    layout = _standard_layout(stride, dilation)
    split(lambda a, b: _im2col_kernel(x[a:b], fh, fw, sh, sw, pads[0], pads[2], layout, cols, a,
                                      dh, dw), n_img)
    return cols.reshape(cols.shape[0], n_img * ho * wo)


def col2im(cols, x_shape, kernel, stride, pads, dilation=(1, 1)):
    """cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlapping contributions summed."""
    n_img, c, h, wd = x_shape
    (fh, fw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads, dilation)
    dx = empty(x_shape, dtype=cols.dtype)
    c4 = np.ascontiguousarray(cols).reshape(c * fh * fw, n_img, ho, wo)
    layout = _standard_layout(stride, dilation)
    split(lambda a, b: _col2im_kernel(c4, a, fh, fw, sh, sw, pads[0], pads[2], layout, dx[a:b],
                                      dh, dw), n_img)
    return dx


class _Geometry:
    """Sizes of one convolution on the cpu tier.

    ``wide`` (stride 1, and a padded width at most 5/4 of the output width): the column matrix
    and the products use rows of the padded width ``wq`` (see :func:`_im2col_kernel`);
    otherwise ``wq = wo``.

    The batch is cut into ``blocks`` blocks of ``block`` images (the last may hold fewer),
    numbered from image 0, and backward groups consecutive blocks into ``chunks`` chunks, each
    with its own partial dW and db. Both cuts depend only on the shapes, never on the thread
    count, so every thread count runs the same products on the same blocks, adds the same
    partial sums in the same order and gets the same bits; the threads take contiguous runs of
    blocks (forward) or chunks (backward), at most ``parts`` runs.
    """

    def __init__(self, x_shape, w_shape, stride, pads, itemsize, dilation=(1, 1)):
        n, c, h, wd = x_shape
        self.k, _, self.fh, self.fw = w_shape
        self.sh, self.sw = stride
        self.dil_h, self.dil_w = dilation
        self.top, self.left = pads[0], pads[2]
        self.ho, self.wo = conv_output_hw((h, wd), (self.fh, self.fw), stride, pads, dilation)
        wp = wd + pads[2] + pads[3]
        # wide rows only where the dropped columns cost little GEMM work (at most 25% more)
        if self.sh != 1 or self.sw != 1 or self.dil_h != 1 or self.dil_w != 1:
            self.layout = GENERAL
        else:
            self.layout = WIDE if 4 * wp <= 5 * self.wo else PADDED
        self.wq = wp if self.wide else self.wo
        self.rows = c * self.fh * self.fw
        self.p = self.ho * self.wq
        per_image = self.rows * self.p * itemsize
        # at most BLOCK_BYTES of columns per block (all images when an image has no columns: no
        # input channels), then evened out: 64 images of at most 9 make 8 blocks of 8, not 7 of 9
        # and one of 1, so that the threads' runs of blocks are as even as the count allows
        most = max(1, min(n, _common.BLOCK_BYTES // per_image if per_image else n))
        macs = n * self.k * self.rows * self.p
        split = 2 * macs >= _common.SPLIT_FLOPS
        self.blocks = _common.block_count(n, most, split)
        self.block = -(-n // self.blocks) if n else 1
        self.blocks = -(-n // self.block)
        # as many chunks as blocks, but the partial dW sums kept take at most PARTIAL_BYTES
        dw_bytes = self.k * self.rows * itemsize
        self.chunks = min(self.blocks, max(1, _common.PARTIAL_BYTES // max(dw_bytes, 1)))
        # split across threads only when the work pays for it
        self.parts = _common.conv_parts(macs, n, self.blocks)
        self.blas_limit = macs >= _common.BLAS_THREADED_GEMM
        # wide columns are unfolded again per block in backward (a fast copy from x, which is
        # in cache) rather than kept: writing and re-reading the whole batch's columns through
        # memory costs more (benchmarks/results-2026-12-thresholds.md); short-row columns are
        # kept
        self.save = not self.wide and self.rows * n * self.p * itemsize <= _common.WORKSPACE_BYTES

    @property
    def wide(self):
        return self.layout == WIDE

    def images(self, j, n_img):
        """The images ``[s0, s1)`` of block ``j``."""
        return j * self.block, min((j + 1) * self.block, n_img)

    def chunk(self, c):
        """The blocks ``range(j0, j1)`` of chunk ``c``."""
        return range(self.blocks * c // self.chunks, self.blocks * (c + 1) // self.chunks)

    def run(self, share, units):
        """``share(u0, u1)`` over contiguous runs of ``units`` (blocks or chunks), at most
        ``parts`` runs, with BLAS at one thread when the products are large enough for BLAS to
        thread them."""
        if not self.blas_limit:
            return split(share, units, self.parts)
        with one_blas_thread():
            return split(share, units, self.parts)

    def im2col(self, x, cols, j0):
        _im2col_kernel(x, self.fh, self.fw, self.sh, self.sw, self.top, self.left, self.layout,
                       cols, j0, self.dil_h, self.dil_w)

    def col2im(self, cols, dx):
        _col2im_kernel(cols, 0, self.fh, self.fw, self.sh, self.sw, self.top, self.left,
                       self.layout, dx, self.dil_h, self.dil_w)


def memory(x_shape, w_shape, stride, pads, dilation, itemsize):
    """Bytes ``(kept for backward, workspace)`` that :func:`conv2d` and :func:`conv2d_backward`
    allocate beyond their inputs and outputs (see :func:`.conv.conv2d_memory`).

    Kept: the whole batch's columns when the layout keeps them (short rows, at most
    WORKSPACE_BYTES), else nothing. Workspace: the per-thread buffers of one block (columns,
    forward product, backward's dout in (K, n, P) order and column gradient) in each thread
    share, plus the chunks' partial dW.
    """
    g = _Geometry(x_shape, w_shape, stride, pads, itemsize, dilation)
    kept = g.rows * x_shape[0] * g.p * itemsize if g.save else 0
    block = g.block * g.p * itemsize
    cols = 0 if g.save else g.rows * block
    per_share = cols + 2 * g.k * block + g.rows * block  # columns, out_t, dout_t, dcols
    return kept, g.parts * per_share + (g.chunks + 2 * g.parts) * g.k * g.rows * itemsize


def conv2d(x, w, b, stride, pads, dilation=(1, 1)):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    Each thread takes a contiguous run of the blocks of images (see :class:`_Geometry`) and
    runs, block by block, im2col -> GEMM -> transpose to NCHW with the bias added. ``saved`` is
    the whole column matrix (C*FH*FW, N, Hout, Wq) for the short-row layouts when it fits in
    :data:`~._common.WORKSPACE_BYTES`, so backward need not unfold x again; otherwise None:
    each block's columns live in a per-thread buffer and backward unfolds them again.
    """
    n_img = x.shape[0]
    g = _Geometry(x.shape, w.shape, stride, pads, x.itemsize, dilation)
    k, rows, p = g.k, g.rows, g.p
    out = empty((n_img, k, g.ho, g.wo), dtype=x.dtype)
    w2 = w.reshape(k, rows)
    bias = b if b is not None else np.zeros(k, dtype=x.dtype)
    saved = empty((rows, n_img, g.ho, g.wq), dtype=x.dtype) if g.save else None

    def share(j0, j1):
        for block in range(j0, j1):
            s0, s1 = g.images(block, n_img)
            m = s1 - s0
            if saved is not None:
                cols, j = saved, s0
            else:
                cols, j = _buffer("cols", (rows, m, g.ho, g.wq), x.dtype), 0
            g.im2col(x[s0:s1], cols, j)
            out_t = _buffer("out_t", (k, m, g.ho, g.wq), x.dtype)
            np.matmul(w2, cols[:, j:j + m].reshape(rows, m * p), out=out_t.reshape(k, m * p))
            _knp_to_nkp_bias(out_t, bias, out[s0:s1])

    g.run(share, g.blocks)
    return out, saved


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True, dilation=(1, 1)):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); see :func:`conv2d`.

    Each thread takes a contiguous run of the chunks of blocks of images (see
    :class:`_Geometry`); per block it moves dout to (K, n, P) while summing the block's db,
    computes the block's ``dout_t @ cols.T`` and, for dx, ``dcols = w.T @ dout_t``, gathered
    into dx (col2im) while the block is in cache. A chunk adds its blocks' dW and db in block
    order, from zero; dW and db are the chunks' sums added in chunk order, from zero (the run
    starting at chunk 0 adds its chunks as they finish, the other runs keep theirs until it is
    done). So the result does not depend on the thread count.
    """
    n_img = dout.shape[0]
    g = _Geometry(x.shape, w.shape, stride, pads, x.itemsize, dilation)
    k, rows, p = g.k, g.rows, g.p
    w2t = w.reshape(k, rows).T
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    # dcols is zero in the dropped columns of a wide layout unless w holds inf or NaN (0 * inf)
    clean = need_dx and g.wq > g.wo and not np.isfinite(w).all()
    dw = np.zeros((k, rows), dtype=w.dtype)
    db = np.zeros(k, dtype=w.dtype)

    def share(c0, c1):
        kept = []
        for c in range(c0, c1):
            part_dw, part_db = block_sums(g.chunk(c))
            if c0 == 0:  # the first run: chunk c follows the chunks already added
                np.add(dw, part_dw, out=dw)
                np.add(db, part_db, out=db)
            else:
                kept.append((part_dw.copy(), part_db))
        return kept

    def block_sums(blocks):
        """dW and db of the images of ``blocks`` (added in block order, from zero); dx of them."""
        chunk_dw = _buffer("dw_chunk", (k, rows), w.dtype)
        chunk_dw[...] = 0
        chunk_db = np.zeros(k, dtype=w.dtype)
        part = _buffer("dw_part", (k, rows), w.dtype)
        for block in blocks:
            s0, s1 = g.images(block, n_img)
            m = s1 - s0
            if saved is not None:
                cols = saved[:, s0:s1].reshape(rows, m * p)
            else:
                buf = _buffer("cols", (rows, m, g.ho, g.wq), x.dtype)
                g.im2col(x[s0:s1], buf, 0)
                cols = buf.reshape(rows, m * p)
            # keyed by Wo too: another layer's dout_t of the same shape writes more columns
            dout_t = _zeroed_buffer(("dout_t", g.wo), (k, m, g.ho, g.wq), dout.dtype)
            block_db = np.zeros(k, dtype=w.dtype)
            _nkp_to_knp_sum(dout[s0:s1], dout_t, block_db)
            chunk_db += block_db
            dout_t2 = dout_t.reshape(k, m * p)
            np.matmul(dout_t2, cols.T, out=part)
            chunk_dw += part
            if need_dx:
                dcols = _buffer("dcols", (rows, m, g.ho, g.wq), dout.dtype)
                np.matmul(w2t, dout_t2, out=dcols.reshape(rows, m * p))
                if clean:
                    dcols[..., g.wo:] = 0
                g.col2im(dcols, dx[s0:s1])
        return chunk_dw, chunk_db

    for kept in g.run(share, g.chunks)[1:]:  # the later runs' chunks, in chunk order
        for part, part_db in kept:
            dw += part
            db += part_db
    return dx, dw.reshape(w.shape), (db if has_bias else None)
