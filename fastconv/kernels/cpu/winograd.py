"""cpu convolution by Winograd F(2x2, 3x3) for stride-1 3x3 layers, forward and backward.

Each 2x2 block of outputs ("tile") of image n and output channel k comes from the 4x4 patch of
the zero-padded input under it: ``Y = A^T [sum_c (G g_kc G^T) * (B^T d_c B)] A``, 16
multiplications per channel pair and tile instead of 36. In matrix form, with the 16 positions
``xi`` of the 4x4 transformed tile outermost:

- ``U[xi] (K, C)`` is the transformed weights (:func:`_weight_transform`),
- ``V[xi] (C, T)`` the transformed input patches of the T tiles of a block of images
  (:func:`_input_transform`),
- ``M[xi] = U[xi] @ V[xi]`` (16 GEMMs through NumPy's BLAS), and
- :func:`_output_transform` turns ``M`` into the 2x2 tiles, adds the bias and writes NCHW,
  dropping the row/column of the last tiles that overhang the output.

Backward runs the adjoint of each step: ``dM = A dY A^T`` (:func:`_output_adjoint`, which also
sums db), ``dU[xi] = dM[xi] @ V[xi].T`` (inner dimension T, the tiles of a whole block), ``dV[xi]
= U[xi].T @ dM[xi]``, and :func:`_input_adjoint` adds ``B dV B^T`` of the overlapping 4x4 patches
back into a padded plane and crops it (no atomics); ``dw = G^T dU G``. All of it is exact in
exact arithmetic; the transforms of F(2x2, 3x3) only add, subtract and halve, so float32 stays
within a few ulps of the direct sum (the tests check 2e-5 relative at C, K = 256).

Threads: the batch is cut into blocks of :func:`_Plan` ``block`` images, a number that depends on
the layer's sizes only; :func:`fastconv.kernels._workers.split` hands contiguous runs of blocks
to the threads, each running single-threaded BLAS. Every block writes its own partial dU and db,
which are added in block order afterwards, so the gradients are bitwise the same for any thread
count.
"""
import numpy as np
from numba import njit

from ..._shapes import conv_output_hw
from .. import _workers
from .._memory import empty
from .._workers import one_blas_thread, split
from . import _common
from ._common import _buffer

#: A block of images has its transformed input and products (``16 * (C + K) * tiles`` values)
#: in at most this many bytes (at least one image), so they stay in cache between the kernels.
BLOCK_BYTES = 4 * 2**20


@njit(nogil=True, cache=True)
def _weight_transform(w, u):
    """w (K, C, 3, 3) -> u (16, K, C): ``u[4*a + b, k, c] = (G w[k, c] G^T)[a, b]``."""
    k_out, c_in = w.shape[0], w.shape[1]
    half = u.dtype.type(0.5)
    t = np.empty((4, 3), dtype=u.dtype)
    for k in range(k_out):
        for c in range(c_in):
            g = w[k, c]
            for s in range(3):  # G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2
                t[0, s] = g[0, s]
                t[1, s] = half * (g[0, s] + g[1, s] + g[2, s])
                t[2, s] = half * (g[0, s] - g[1, s] + g[2, s])
                t[3, s] = g[2, s]
            for a in range(4):  # (G g) G^T: the same on the columns
                u[4 * a, k, c] = t[a, 0]
                u[4 * a + 1, k, c] = half * (t[a, 0] + t[a, 1] + t[a, 2])
                u[4 * a + 2, k, c] = half * (t[a, 0] - t[a, 1] + t[a, 2])
                u[4 * a + 3, k, c] = t[a, 2]


@njit(nogil=True, cache=True)
def _weight_adjoint(du, dw):
    """du (16, K, C) -> dw (K, C, 3, 3) = ``G^T du[:, k, c] G`` (the adjoint of :func:`_weight_transform`)."""
    k_out, c_in = dw.shape[0], dw.shape[1]
    half = dw.dtype.type(0.5)
    t = np.empty((3, 4), dtype=dw.dtype)
    for k in range(k_out):
        for c in range(c_in):
            for b in range(4):  # G^T du: rows d0 + (d1+d2)/2, (d1-d2)/2, (d1+d2)/2 + d3
                d0, d1, d2, d3 = du[b, k, c], du[4 + b, k, c], du[8 + b, k, c], du[12 + b, k, c]
                t[0, b] = d0 + half * (d1 + d2)
                t[1, b] = half * (d1 - d2)
                t[2, b] = half * (d1 + d2) + d3
            for r in range(3):  # (G^T du) G: the same on the columns
                dw[k, c, r, 0] = t[r, 0] + half * (t[r, 1] + t[r, 2])
                dw[k, c, r, 1] = half * (t[r, 1] - t[r, 2])
                dw[k, c, r, 2] = half * (t[r, 1] + t[r, 2]) + t[r, 3]


@njit(nogil=True, cache=True)
def _input_transform(x, top, left, th, tw, v, plane):
    """x (n, C, H, W) -> v: ``B^T d B`` of every 4x4 patch of the padded planes, position ``xi``
    of tile ``t`` and channel c at ``v[xi*plane + c*T + t]`` (T = n*th*tw; see :func:`_stack`).

    Tile ``t = (img*th + i)*tw + j`` reads padded rows ``2i..2i+3`` and columns ``2j..2j+3``.
    Each plane is first copied into a zero plane of ``2*th + 2`` by ``2*tw + 2`` (its padding,
    and the zeros under tiles that overhang the output); then each tile row's four padded rows
    are combined down the columns (contiguous, vectorised) and the tiles along the row.
    """
    n_img, c_in, h, wd = x.shape
    n_t = n_img * th * tw
    pw = 2 * tw + 2
    pad = np.zeros((2 * th + 2, pw), dtype=v.dtype)
    e = np.empty((4, pw), dtype=v.dtype)
    for n in range(n_img):
        for c in range(c_in):
            for y in range(h):
                for xx in range(wd):
                    pad[y + top, xx + left] = x[n, c, y, xx]
            for i in range(th):
                r = 2 * i
                for s in range(pw):  # B^T d
                    e[0, s] = pad[r, s] - pad[r + 2, s]
                    e[1, s] = pad[r + 1, s] + pad[r + 2, s]
                    e[2, s] = pad[r + 2, s] - pad[r + 1, s]
                    e[3, s] = pad[r + 1, s] - pad[r + 3, s]
                t0 = c * n_t + (n * th + i) * tw
                for a in range(4):  # (B^T d) B
                    o0 = 4 * a * plane + t0
                    for j in range(tw):
                        s = 2 * j
                        v[o0 + j] = e[a, s] - e[a, s + 2]
                        v[o0 + plane + j] = e[a, s + 1] + e[a, s + 2]
                        v[o0 + 2 * plane + j] = e[a, s + 2] - e[a, s + 1]
                        v[o0 + 3 * plane + j] = e[a, s + 1] - e[a, s + 3]


@njit(nogil=True, cache=True)
def _input_adjoint(dv, plane, top, left, th, tw, dx):
    """dv (laid out as v of :func:`_input_transform`) -> dx (n, C, H, W): ``B dv B^T`` of each
    tile added into its 4x4 patch
    of a zero padded plane (overlaps summed in a fixed order), then the plane cropped to dx."""
    n_img, c_in, h, wd = dx.shape
    n_t = n_img * th * tw
    pw = 2 * tw + 2
    pad = np.empty((2 * th + 2, pw), dtype=dx.dtype)
    f = np.empty((4, 4), dtype=dx.dtype)
    for n in range(n_img):
        for c in range(c_in):
            pad[:, :] = 0
            for i in range(th):
                t0 = c * n_t + (n * th + i) * tw
                for j in range(tw):
                    for a in range(4):  # dv B^T on each row
                        o = 4 * a * plane + t0 + j
                        d0, d1 = dv[o], dv[o + plane]
                        d2, d3 = dv[o + 2 * plane], dv[o + 3 * plane]
                        f[a, 0] = d0
                        f[a, 1] = d1 - d2 + d3
                        f[a, 2] = d1 + d2 - d0
                        f[a, 3] = -d3
                    r, s0 = 2 * i, 2 * j
                    for s in range(4):  # B (dv B^T) down each column
                        pad[r, s0 + s] += f[0, s]
                        pad[r + 1, s0 + s] += f[1, s] - f[2, s] + f[3, s]
                        pad[r + 2, s0 + s] += f[1, s] + f[2, s] - f[0, s]
                        pad[r + 3, s0 + s] -= f[3, s]
            for y in range(h):
                for xx in range(wd):
                    dx[n, c, y, xx] = pad[y + top, xx + left]


@njit(nogil=True, cache=True)
def _output_transform(mm, plane, bias, th, tw, out):
    """mm (position ``xi`` of tile t, channel k at ``mm[xi*plane + k*T + t]``) -> out (n, K, Ho,
    Wo): ``A^T m A + bias[k]`` per tile, cropped.

    The loop over tiles runs over a whole plane's ``th*tw`` tiles (16 contiguous streams): a loop
    over one tile row (7 tiles on B) was too short for AVX-512 and took 1.7x as long.
    """
    n_img, k_out, ho, wo = out.shape
    n_p = th * tw
    n_t = n_img * n_p
    y = np.empty((4, n_p), dtype=out.dtype)
    for n in range(n_img):
        for k in range(k_out):
            o = k * n_t + n * n_p
            for t in range(n_p):
                r = o + t
                m0, m1, m2, m3 = mm[r], mm[r + plane], mm[r + 2 * plane], mm[r + 3 * plane]
                r += 4 * plane
                m4, m5, m6, m7 = mm[r], mm[r + plane], mm[r + 2 * plane], mm[r + 3 * plane]
                r += 4 * plane
                m8, m9, m10, m11 = mm[r], mm[r + plane], mm[r + 2 * plane], mm[r + 3 * plane]
                r += 4 * plane
                m12, m13, m14, m15 = mm[r], mm[r + plane], mm[r + 2 * plane], mm[r + 3 * plane]
                # A^T m: rows m0 + m1 + m2 and m1 - m2 - m3 (of the 4x4 m); then the same on columns
                s0, s1, s2, s3 = m0 + m4 + m8, m1 + m5 + m9, m2 + m6 + m10, m3 + m7 + m11
                d0, d1, d2, d3 = m4 - m8 - m12, m5 - m9 - m13, m6 - m10 - m14, m7 - m11 - m15
                y[0, t] = s0 + s1 + s2
                y[1, t] = s1 - s2 - s3
                y[2, t] = d0 + d1 + d2
                y[3, t] = d1 - d2 - d3
            bk = bias[k]
            for oh in range(ho):
                row = (oh >> 1) * tw
                p = 2 * (oh & 1)
                for ow in range(wo):
                    out[n, k, oh, ow] = y[p + (ow & 1), row + (ow >> 1)] + bk


@njit(nogil=True, cache=True)
def _output_adjoint(dout, th, tw, dm, plane, db):
    """dout (n, K, Ho, Wo) -> dm (laid out as mm of :func:`_output_transform`) = ``A dy A^T``
    per tile (zeros past the output);
    ``db[k] += `` the sum of ``dout[:, k]`` (a partial sum per plane)."""
    n_img, k_out, ho, wo = dout.shape
    n_t = n_img * th * tw
    q = np.zeros((2 * th, 2 * tw), dtype=dm.dtype)
    for n in range(n_img):
        for k in range(k_out):
            part = db.dtype.type(0)
            for oh in range(ho):
                for ow in range(wo):
                    val = dout[n, k, oh, ow]
                    q[oh, ow] = val
                    part += val
            db[k] += part
            for i in range(th):
                t0 = k * n_t + (n * th + i) * tw
                for j in range(tw):
                    t = t0 + j
                    y00, y01 = q[2 * i, 2 * j], q[2 * i, 2 * j + 1]
                    y10, y11 = q[2 * i + 1, 2 * j], q[2 * i + 1, 2 * j + 1]
                    # A dy: rows y0, y0 + y1, y0 - y1, -y1; then (A dy) A^T on each row
                    for a in range(4):
                        if a == 0:
                            p, r = y00, y01
                        elif a == 1:
                            p, r = y00 + y10, y01 + y11
                        elif a == 2:
                            p, r = y00 - y10, y01 - y11
                        else:
                            p, r = -y10, -y11
                        o = 4 * a * plane + t
                        dm[o] = p
                        dm[o + plane] = p + r
                        dm[o + 2 * plane] = p - r
                        dm[o + 3 * plane] = -r


class _Plan:
    """Sizes of one Winograd convolution: tiles ``th x tw`` per plane, blocks of ``block`` images
    (from the layer's sizes only: the same for every thread count), ``parts`` thread shares."""

    def __init__(self, x_shape, w_shape, pads, itemsize):
        self.n, self.c, h, wd = x_shape
        self.k = w_shape[0]
        self.top, self.left = pads[0], pads[2]
        self.ho, self.wo = conv_output_hw((h, wd), (3, 3), (1, 1), pads)
        self.th, self.tw = (self.ho + 1) // 2, (self.wo + 1) // 2
        tiles = self.th * self.tw
        per_image = 16 * (self.c + self.k) * tiles * itemsize
        self.block = max(1, min(self.n, BLOCK_BYTES // per_image))
        self.blocks = -(-self.n // self.block)
        macs = self.n * self.k * self.c * 9 * self.ho * self.wo
        self.parts = 1
        if 2 * macs >= _common.SPLIT_FLOPS:
            self.parts = max(1, min(_workers.threads(), self.blocks,
                                    self.n // max(_common.SPLIT_IMAGES, 1)))

    def images(self, blk):
        """``(first, end)`` image of block ``blk``."""
        s0 = blk * self.block
        return s0, min(s0 + self.block, self.n)

    def run(self, share):
        """``share(b0, b1)`` over runs of blocks, one per thread, BLAS at one thread throughout."""
        with one_blas_thread():
            split(share, self.blocks, self.parts)


def memory(x_shape, w_shape, pads, itemsize):
    """Bytes ``(kept for backward, workspace)`` of a forward + backward on this path: nothing is
    kept (backward transforms x again); each thread share holds one block's transformed input V
    (16, C, T) and products M (16, K, T) (their gradients reuse the same buffers), and backward
    the blocks' partial dU (16, K, C)."""
    g = _Plan(x_shape, w_shape, pads, itemsize)
    t = g.block * g.th * g.tw
    per_share = 16 * (g.c + g.k) * t * itemsize
    return 0, g.parts * per_share + g.blocks * 16 * g.k * g.c * itemsize


def _stack(slot, rows, t, dtype):
    """A per-thread ``(flat, plane, view)``: 16 matrices ``view[xi]`` (rows, t), C-contiguous each,
    ``plane`` elements apart in ``flat``. The plane stride is padded past a multiple of 4 KiB, so
    the 16 streams that a transform reads or writes at once do not share the same L1 sets (at
    D's sizes, 16*128*320 floats, unpadded planes made the dout transform 13x slower)."""
    itemsize = np.dtype(dtype).itemsize
    page = 4096 // itemsize
    plane = -(-rows * t // page) * page + 64 // itemsize
    flat = _buffer(slot, (16 * plane,), dtype)
    view = flat.reshape(16, plane)[:, :rows * t].reshape(16, rows, t)
    return flat, plane, view


def _weights(w):
    """The transformed weights (16, K, C) of w (K, C, 3, 3)."""
    u = np.empty((16, w.shape[0], w.shape[1]), dtype=w.dtype)
    _weight_transform(w, u)
    return u


def conv2d(x, w, b, pads):
    """x (N, C, H, W), w (K, C, 3, 3), b (K,) or None, stride 1 -> (out (N, K, Hout, Wout), None).

    Per block of images: input transform -> 16 GEMMs -> output transform with the bias, to NCHW.
    """
    g = _Plan(x.shape, w.shape, pads, x.itemsize)
    u = _weights(w)
    out = empty((g.n, g.k, g.ho, g.wo), dtype=x.dtype)
    bias = b if b is not None else np.zeros(g.k, dtype=x.dtype)

    def share(b0, b1):
        for blk in range(b0, b1):
            s0, s1 = g.images(blk)
            t = (s1 - s0) * g.th * g.tw
            v, vp, v3 = _stack("wino_v", g.c, t, x.dtype)
            _input_transform(x[s0:s1], g.top, g.left, g.th, g.tw, v, vp)
            mm, mp, m3 = _stack("wino_m", g.k, t, x.dtype)
            np.matmul(u, v3, out=m3)
            _output_transform(mm, mp, bias, g.th, g.tw, out[s0:s1])

    g.run(share)
    return out, None


def conv2d_backward(dout, x, w, has_bias, pads, need_dx=True):
    """dout (N, K, Hout, Wout) -> (dx (N, C, H, W) or None, dw (K, C, 3, 3), db (K,) or None).

    Per block: ``dM`` from dout (and the block's db), the input transform of x again, the block's
    ``dU = dM @ V.T`` and, for dx, ``dV = U.T @ dM`` gathered into dx. The blocks' partial dU and
    db are added in block order.
    """
    g = _Plan(x.shape, w.shape, pads, x.itemsize)
    ut = np.ascontiguousarray(_weights(w).transpose(0, 2, 1)) if need_dx else None
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    du_parts = empty((g.blocks, 16, g.k, g.c), dtype=w.dtype)
    db_parts = np.zeros((g.blocks, g.k), dtype=w.dtype)

    def share(b0, b1):
        for blk in range(b0, b1):
            s0, s1 = g.images(blk)
            t = (s1 - s0) * g.th * g.tw
            dm, mp, dm3 = _stack("wino_m", g.k, t, x.dtype)
            _output_adjoint(dout[s0:s1], g.th, g.tw, dm, mp, db_parts[blk])
            v, vp, v3 = _stack("wino_v", g.c, t, x.dtype)
            _input_transform(x[s0:s1], g.top, g.left, g.th, g.tw, v, vp)
            np.matmul(dm3, v3.transpose(0, 2, 1), out=du_parts[blk])
            if need_dx:
                np.matmul(ut, dm3, out=v3)  # dV takes V's place
                _input_adjoint(v, vp, g.top, g.left, g.th, g.tw, dx[s0:s1])

    g.run(share)
    du, db = du_parts[0], db_parts[0]
    for blk in range(1, g.blocks):  # block order: the same sums for every thread count
        du += du_parts[blk]
        db += db_parts[blk]
    dw = np.empty((g.k, g.c, 3, 3), dtype=w.dtype)
    _weight_adjoint(du, dw)
    return dx, dw, (db.copy() if has_bias else None)
