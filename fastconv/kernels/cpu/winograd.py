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
within a few ulps of the direct sum (the tests check 2e-5 relative at C, K = 256). Backward
transforms x again rather than keeping V from forward: keeping it saved nothing measurable
(``benchmarks/results-2026-12-thresholds.md``), since forward then writes V to memory that is
not in cache. Inputs or weights holding inf or NaN give NaN where the direct sum may give inf:
the transforms subtract (inf - inf), and the weight transform, one GEMM with ``G (x) G``,
multiplies zeros by every tap.

Threads: the batch is cut into blocks of :func:`_Plan` ``block`` images, a number that depends on
the layer's sizes only; :func:`fastconv.kernels._workers.split` hands contiguous runs of blocks
to the threads, each running single-threaded BLAS. Every block writes its own partial dU and db,
which are added in block order afterwards, so the gradients are bitwise the same for any thread
count.
"""
import numpy as np
from numba import njit

from ..._shapes import conv_output_hw
from .._memory import empty
from .._workers import one_blas_thread, split
from . import _common
from ._common import _buffer

#: A block of images has its transformed input and products (``16 * (C + K) * tiles`` values)
#: in at most this many bytes (at least one image), so they stay in cache between the kernels.
BLOCK_BYTES = 4 * 2**20



#: F(2x2, 3x3)'s weight transform: ``G g G^T`` turns a 3x3 kernel into the 4x4 tile; on the
#: row-major flattened kernel that is the (16, 9) matrix ``G (x) G`` (a Kronecker product).
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
GG = np.kron(G, G)


def _weight_transform(w):
    """w (K, C, 3, 3) -> u (16, K, C): ``u[4*a + b, k, c] = (G w[k, c] G^T)[a, b]``, one GEMM
    ``(16, 9) @ (9, K*C)`` (a Numba kernel here compiles slowly on first call, and many small
    products through NumPy's batched matmul run slower). On one BLAS thread: on two, OpenBLAS's
    idle worker spins against the conv's threads (figures:
    ``benchmarks/results-2026-12-thresholds.md``)."""
    k_out, c_in = w.shape[:2]
    with one_blas_thread():  # a threaded OpenBLAS call leaves its workers spinning against ours
        u = GG.astype(w.dtype) @ np.ascontiguousarray(w).reshape(k_out * c_in, 9).T
    return u.reshape(16, k_out, c_in)


def _weight_adjoint(du, dw_shape):
    """du (16, K, C) -> dw (K, C, 3, 3) = ``G^T du[:, k, c] G``, the adjoint of
    :func:`_weight_transform`."""
    with one_blas_thread():
        return (du.reshape(16, -1).T @ GG.astype(du.dtype)).reshape(dw_shape)


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
def _lin3(a, b, c, sb, sc, out, n):
    """``out[t] = a[t] + sb*b[t] + sc*c[t]`` for ``t < n`` (signs +1 or -1: never a product
    with zero, which would turn an inf into NaN)."""
    for t in range(n):
        out[t] = a[t] + sb * b[t] + sc * c[t]


@njit(nogil=True, cache=True)
def _pair(a, b, c, d, out, n):
    """``out[2t] = a[t] + b[t] + c[t]`` and ``out[2t+1] = b[t] - c[t] - d[t]``: the two
    outputs of a tile row of ``A^T m A``, interleaved as they lie in an output row."""
    for t in range(n):
        out[2 * t] = a[t] + b[t] + c[t]
        out[2 * t + 1] = b[t] - c[t] - d[t]


@njit(nogil=True, cache=True)
def _output_transform(mm, plane, bias, th, tw, out):
    """mm (position ``xi`` of tile t, channel k at ``mm[xi*plane + k*T + t]``) -> out (n, K, Ho,
    Wo): ``A^T m A + bias[k]`` per tile, cropped.

    Per channel k, over all T tiles of the block at once: ``A^T m`` (8 rows of T, each from 3 of
    the 16 streams), then ``(A^T m) A`` into two buffers that hold the even and the odd output
    rows of every tile row side by side, then one contiguous copy per output row. Every loop reads
    at most four streams and writes one, so LLVM vectorises it (a loop over the 16 streams at
    once needs more run-time alias checks than it makes and stays scalar, several times slower:
    ``benchmarks/results-2026-12-thresholds.md``).
    """
    n_img, k_out, ho, wo = out.shape
    n_t = n_img * th * tw
    m2 = mm[:16 * plane].reshape(16, plane)
    sd = np.empty((8, n_t), dtype=out.dtype)
    z = np.empty((2, 2 * n_t), dtype=out.dtype)
    one = out.dtype.type(1)
    for k in range(k_out):
        o = k * n_t
        for b in range(4):  # A^T m: rows m0 + m1 + m2 and m1 - m2 - m3 of each 4x4 m
            _lin3(m2[b, o:o + n_t], m2[4 + b, o:o + n_t], m2[8 + b, o:o + n_t], one, one, sd[b],
                  n_t)
            _lin3(m2[4 + b, o:o + n_t], m2[8 + b, o:o + n_t], m2[12 + b, o:o + n_t], -one, -one,
                  sd[4 + b], n_t)
        _pair(sd[0], sd[1], sd[2], sd[3], z[0], n_t)  # (A^T m) A: the same on the columns
        _pair(sd[4], sd[5], sd[6], sd[7], z[1], n_t)
        bk = bias[k]
        for n in range(n_img):
            planes = out[n, k]
            for oh in range(ho):
                r0 = (n * th + (oh >> 1)) * 2 * tw
                src = z[oh & 1, r0:r0 + wo]
                row = planes[oh]
                for ow in range(wo):
                    row[ow] = src[ow] + bk


@njit(nogil=True, cache=True)
def _combine(a, b, sign, out, n):
    """``out[t] = a[t] + sign*b[t]`` (sign +1 or -1; never a product with zero, which would turn
    an inf into NaN)."""
    for t in range(n):
        out[t] = a[t] + sign * b[t]


@njit(nogil=True, cache=True)
def _scaled(a, sign, out, n):
    """``out[t] = sign*a[t]``."""
    for t in range(n):
        out[t] = sign * a[t]


@njit(nogil=True, cache=True)
def _output_adjoint(dout, th, tw, dm, plane, db):
    """dout (n, K, Ho, Wo) -> dm (laid out as mm of :func:`_output_transform`) = ``A dy A^T``
    per tile (zeros past the output); ``db[k] += `` the sum of ``dout[:, k]`` (a partial sum per
    plane).

    Per channel k, over all T tiles of the block at once: the output rows are copied into two
    buffers of the even and the odd rows of every tile row (zeros where a tile overhangs the
    output), split into the four values ``y_ab`` of each tile, and each of the 16 streams of dm
    is one vectorised loop over T (see :func:`_output_transform`).
    """
    n_img, k_out, ho, wo = dout.shape
    n_t = n_img * th * tw
    m2 = dm[:16 * plane].reshape(16, plane)
    q = np.zeros((2, 2 * n_t), dtype=dm.dtype)  # the parts past the output stay zero
    y = np.empty((4, n_t), dtype=dm.dtype)
    pr = np.empty((2, n_t), dtype=dm.dtype)
    one = dm.dtype.type(1)
    for k in range(k_out):
        total = db[k]
        for n in range(n_img):
            part = db.dtype.type(0)
            for oh in range(ho):
                src = dout[n, k, oh]
                r0 = (n * th + (oh >> 1)) * 2 * tw
                dst = q[oh & 1, r0:r0 + wo]
                for ow in range(wo):
                    v = src[ow]
                    dst[ow] = v
                    part += v
            total += part
        db[k] = total
        for a in range(2):  # y_a0, y_a1 of every tile
            qa = q[a]
            ya0, ya1 = y[2 * a], y[2 * a + 1]
            for t in range(n_t):
                ya0[t] = qa[2 * t]
                ya1[t] = qa[2 * t + 1]
        o = k * n_t
        p, r = pr[0], pr[1]
        for a in range(4):  # A dy: rows y0, y0 + y1, y0 - y1, -y1; then (A dy) A^T on each row
            if a == 0:
                p, r = y[0], y[1]
            elif a == 3:
                p, r = pr[0], pr[1]
                _scaled(y[2], -one, p, n_t)
                _scaled(y[3], -one, r, n_t)
            else:
                p, r = pr[0], pr[1]
                sign = one if a == 1 else -one
                _combine(y[0], y[2], sign, p, n_t)
                _combine(y[1], y[3], sign, r, n_t)
            _scaled(p, one, m2[4 * a, o:o + n_t], n_t)
            _combine(p, r, one, m2[4 * a + 1, o:o + n_t], n_t)
            _combine(p, r, -one, m2[4 * a + 2, o:o + n_t], n_t)
            _scaled(r, -one, m2[4 * a + 3, o:o + n_t], n_t)


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
        # at most BLOCK_BYTES a block, and a multiple of 4 blocks where there are images enough
        # (B: 8 blocks of 8 images, not 5 of 13, whose 3 + 2 split left one of two threads idle
        # for a fifth of the time)
        macs = self.n * self.k * self.c * 9 * self.ho * self.wo
        split = 2 * macs >= _common.SPLIT_FLOPS
        most = max(1, min(self.n, BLOCK_BYTES // per_image))
        self.block = max(1, -(-self.n // _common.block_count(self.n, most, split)))
        self.blocks = -(-self.n // self.block)
        self.parts = _common.conv_parts(macs, self.n, self.blocks)

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
    the 16 streams that a transform reads or writes at once do not share the same L1 sets
    (unpadded planes at D's sizes: ``benchmarks/results-2026-12-thresholds.md``)."""
    itemsize = np.dtype(dtype).itemsize
    page = 4096 // itemsize
    plane = -(-rows * t // page) * page + 64 // itemsize
    flat = _buffer(slot, (16 * plane,), dtype)
    view = flat.reshape(16, plane)[:, :rows * t].reshape(16, rows, t)
    return flat, plane, view


def conv2d(x, w, b, pads):
    """x (N, C, H, W), w (K, C, 3, 3), b (K,) or None, stride 1 -> (out (N, K, Hout, Wout), None).

    Per block of images: input transform -> 16 GEMMs -> output transform with the bias, to NCHW.
    """
    g = _Plan(x.shape, w.shape, pads, x.itemsize)
    u = _weight_transform(w)
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
    ut = np.ascontiguousarray(_weight_transform(w).transpose(0, 2, 1)) if need_dx else None
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
    dw = _weight_adjoint(du, w.shape)
    return dx, dw, (db.copy() if has_bias else None)
