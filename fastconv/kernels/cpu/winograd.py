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
def _input_transform(x, top, left, th, tw, v):
    """x (n, C, H, W) -> v (16, C, n*th*tw): ``B^T d B`` of every 4x4 patch of the padded planes.

    Tile ``t = (img*th + i)*tw + j`` reads padded rows ``2i..2i+3`` and columns ``2j..2j+3``.
    Each plane is first copied into a zero plane of ``2*th + 2`` by ``2*tw + 2`` (its padding,
    and the zeros under tiles that overhang the output); then each tile row's four padded rows
    are combined down the columns (contiguous, vectorised) and the tiles along the row.
    """
    n_img, c_in, h, wd = x.shape
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
                t0 = (n * th + i) * tw
                for a in range(4):  # (B^T d) B
                    for j in range(tw):
                        s = 2 * j
                        v[4 * a, c, t0 + j] = e[a, s] - e[a, s + 2]
                        v[4 * a + 1, c, t0 + j] = e[a, s + 1] + e[a, s + 2]
                        v[4 * a + 2, c, t0 + j] = e[a, s + 2] - e[a, s + 1]
                        v[4 * a + 3, c, t0 + j] = e[a, s + 1] - e[a, s + 3]


@njit(nogil=True, cache=True)
def _input_adjoint(dv, top, left, th, tw, dx):
    """dv (16, C, n*th*tw) -> dx (n, C, H, W): ``B dv B^T`` of each tile added into its 4x4 patch
    of a zero padded plane (overlaps summed in a fixed order), then the plane cropped to dx."""
    n_img, c_in, h, wd = dx.shape
    pw = 2 * tw + 2
    pad = np.empty((2 * th + 2, pw), dtype=dx.dtype)
    f = np.empty((4, 4), dtype=dx.dtype)
    for n in range(n_img):
        for c in range(c_in):
            pad[:, :] = 0
            for i in range(th):
                t0 = (n * th + i) * tw
                for j in range(tw):
                    t = t0 + j
                    for a in range(4):  # dv B^T on each row
                        d0, d1 = dv[4 * a, c, t], dv[4 * a + 1, c, t]
                        d2, d3 = dv[4 * a + 2, c, t], dv[4 * a + 3, c, t]
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
def _output_transform(mm, bias, th, tw, out):
    """mm (16, K, n*th*tw) -> out (n, K, Ho, Wo): ``A^T m A + bias[k]`` per tile, cropped."""
    n_img, k_out, ho, wo = out.shape
    q = np.empty((2 * th, 2 * tw), dtype=out.dtype)
    s = np.empty((2, 4, tw), dtype=out.dtype)
    for n in range(n_img):
        for k in range(k_out):
            for i in range(th):
                t0 = (n * th + i) * tw
                for b in range(4):  # A^T m: rows m0 + m1 + m2, m1 - m2 - m3
                    for j in range(tw):
                        m1, m2 = mm[4 + b, k, t0 + j], mm[8 + b, k, t0 + j]
                        s[0, b, j] = mm[b, k, t0 + j] + m1 + m2
                        s[1, b, j] = m1 - m2 - mm[12 + b, k, t0 + j]
                for p in range(2):  # (A^T m) A
                    for j in range(tw):
                        q[2 * i + p, 2 * j] = s[p, 0, j] + s[p, 1, j] + s[p, 2, j]
                        q[2 * i + p, 2 * j + 1] = s[p, 1, j] - s[p, 2, j] - s[p, 3, j]
            bk = bias[k]
            for oh in range(ho):
                for ow in range(wo):
                    out[n, k, oh, ow] = q[oh, ow] + bk


@njit(nogil=True, cache=True)
def _output_adjoint(dout, th, tw, dm, db):
    """dout (n, K, Ho, Wo) -> dm (16, K, n*th*tw) = ``A dy A^T`` per tile (zeros past the output);
    ``db[k] += `` the sum of ``dout[:, k]`` (a partial sum per plane)."""
    n_img, k_out, ho, wo = dout.shape
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
                t0 = (n * th + i) * tw
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
                        dm[4 * a, k, t] = p
                        dm[4 * a + 1, k, t] = p + r
                        dm[4 * a + 2, k, t] = p - r
                        dm[4 * a + 3, k, t] = -r


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
            v = _buffer("wino_v", (16, g.c, t), x.dtype)
            _input_transform(x[s0:s1], g.top, g.left, g.th, g.tw, v)
            mm = _buffer("wino_m", (16, g.k, t), x.dtype)
            np.matmul(u, v, out=mm)
            _output_transform(mm, bias, g.th, g.tw, out[s0:s1])

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
            dm = _buffer("wino_m", (16, g.k, t), x.dtype)
            _output_adjoint(dout[s0:s1], g.th, g.tw, dm, db_parts[blk])
            v = _buffer("wino_v", (16, g.c, t), x.dtype)
            _input_transform(x[s0:s1], g.top, g.left, g.th, g.tw, v)
            np.matmul(dm, v.transpose(0, 2, 1), out=du_parts[blk])
            if need_dx:
                np.matmul(ut, dm, out=v)  # dV takes V's place
                _input_adjoint(v, g.top, g.left, g.th, g.tw, dx[s0:s1])

    g.run(share)
    du, db = du_parts[0], db_parts[0]
    for blk in range(1, g.blocks):  # block order: the same sums for every thread count
        du += du_parts[blk]
        db += db_parts[blk]
    dw = np.empty((g.k, g.c, 3, 3), dtype=w.dtype)
    _weight_adjoint(du, dw)
    return dx, dw, (db.copy() if has_bias else None)
