"""cpu convolution on a blocked channel layout with the generated micro-kernels of
:mod:`.microkernel`: forward, input gradient and weight gradient.

Layout ``NCHWc``: an image's channels are cut into blocks of ``V`` (the target's vector lanes of
the dtype, the last block zero-padded), each block a zero-padded plane of pixels with the ``V``
channels innermost: value ``(c, y, x)`` at ``((c // V)*Hp + y + top)*Wp + x + left)*V + c % V``.
Each image is packed into that layout once per call (:func:`_pack`, V x V transposes in
registers), in the thread that uses it, so it stays in cache; the weights are reordered once
per call, in NumPy. On B (32 -> 64 channels, 14x14, batch 64, one Zen 4 thread) packing x and
dout and unpacking the output and dx take 0.2, 0.35 (with db's sums), 0.3 and 0.2 ms of the
16.6 ms forward + backward (scalar loops took 0.4, 0.7, 0.7 and 0.4).

- Forward: a tile of ``R`` output pixels x ``NB`` blocks of ``V`` output channels is one call of
  the ``R x NB`` kernel over every (input channel block, tap) ``t`` and input channel ``l`` of
  the block: ``a`` is the packed input (``r`` steps ``stride*V``), ``b`` the weights as
  ``(K/V, C/V, FH, FW, V in, V out)``. Stride 1 runs over the output plane in rows of the
  padded width (``Wq = Wp``, one run of ``(Ho-1)*Wp + Wo`` positions, so tiles cross rows and
  the last ``FW-1`` columns of each row are computed and dropped); strided layers run row by
  row (``Wq = Wo``). The last tile of a run starts ``R`` before its end (it recomputes a few
  pixels, storing the same values); runs shorter than ``R`` read into zeroed slack past the
  planes and write into slack past each output plane. The blocked output is then moved to
  NCHW with the bias added (:func:`_unpack`).
- Input gradient (stride 1): the forward pass again, over dout packed into planes padded by
  ``dil*(F-1) - pad`` on each side, with the weights flipped and transposed; dx is the output
  without the padding.
- Weight gradient: tile of ``V`` input channels x ``V`` output channels of one tap
  (``"lanes"`` rows); ``t`` runs over the output rows and ``l`` over the pixels of a row (only
  valid pixels, so inf or NaN in x never meets a dropped column), ``a`` the packed input
  (broadcast channel by channel), ``b`` the packed dout.

Threads: the forward pass splits the images in contiguous runs (nothing to add up). Backward
cuts the batch into ``chunks`` that depend on the shapes only; each sums its images' dW (each
image's sum starts from zero and is then added) and db, and the chunks' sums are added in chunk
order, so every thread count gives the same bits.
"""
import numpy as np
from numba import njit

from ..._shapes import conv_output_hw
from .._memory import empty
from .._workers import split
from . import _common
from ._common import _buffer, _zeroed_buffer
from .microkernel import kernel, lanes, target, transpose


def _tile():
    """``(R, NB)`` of the forward tile for the target: R output pixels x NB channel blocks,
    ``R*NB`` accumulators plus ``NB`` weight vectors and a broadcast within the registers."""
    return (24, 1) if target()[1] >= 32 else (6, 2)


ROWS, NVEC = _tile()
#: Forward and dx: rows are pixels (V apart in a), steps the V channels of a block (all
#: 4 steps unrolled), b the weights' V-wide rows.
_FORWARD = kernel(ROWS, NVEC, "lanes", 1, "lanes", 4)
#: dW: rows are the V channels of a pixel, steps the pixels of a row (4 unrolled).
_WEIGHTS = kernel("lanes", 1, 1, "lanes", "lanes", 4)


@njit(nogil=True, cache=True)
def _pack(src, dst, v, hd, wd, oy, ox):
    """src (C, H, W) contiguous -> dst flat: value (c, y, x) at ``(((c//v)*hd + y+oy)*wd +
    x+ox)*v + c%v``, lanes past C zero; the rest of dst is left as it is (zero). V pixels at a
    time through :func:`~.microkernel.transpose`, the last V of a plane again; planes of fewer
    than V pixels value by value."""
    c_in, h, w = src.shape
    size = h * w
    flat = src.reshape(c_in * size)
    if size < v:
        for c in range(c_in):
            for y in range(h):
                for x in range(w):
                    dst[(((c // v) * hd + y + oy) * wd + x + ox) * v + c % v] = src[c, y, x]
        return
    aoffs, coffs = np.empty(v, np.int64), np.empty(v, np.int64)
    zero = np.zeros(v, dtype=dst.dtype)
    for cb in range(-(-c_in // v)):
        p0 = 0
        while p0 < size:
            p = min(p0, size - v)
            y, x = p // w, p % w
            for i in range(v):  # row i: channel cb*v + i, pixels p..p+v-1 of its plane
                aoffs[i] = (cb * v + i) * size + p
                coffs[i] = ((cb * hd + y + oy) * wd + x + ox) * v  # pixel p + i
                x += 1
                if x == w:
                    x, y = 0, y + 1
            transpose(flat, aoffs, c_in - cb * v, dst, coffs, v, zero, 0)
            p0 += v


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _sums(src, sums):
    """sums[c] = the sum of plane c of src (C, H, W) contiguous, from a typed zero (for db;
    "reassoc" lets LLVM vectorise it)."""
    size = src.shape[1] * src.shape[2]
    flat = src.reshape(src.shape[0] * size)
    for c in range(src.shape[0]):
        plane = flat[c * size:(c + 1) * size]
        total = sums.dtype.type(0)
        for i in range(size):
            total += plane[i]
        sums[c] = total


@njit(nogil=True, cache=True)
def _unpack(src, plane, wq, v, bias, dst):
    """src flat (blocks of ``plane`` values, rows of ``wq`` pixels of ``v`` lanes) -> dst (K, H,
    W) contiguous, plus bias[k]; V pixels at a time as in :func:`_pack`."""
    k_out, h, w = dst.shape
    size = h * w
    if size < v:
        for k in range(k_out):
            for y in range(h):
                for x in range(w):
                    dst[k, y, x] = src[(k // v) * plane + (y * wq + x) * v + k % v] + bias[k]
        return
    flat = dst.reshape(k_out * size)
    aoffs, coffs = np.empty(v, np.int64), np.empty(v, np.int64)
    for kb in range(-(-k_out // v)):
        p0 = 0
        while p0 < size:
            p = min(p0, size - v)
            y, x = p // w, p % w
            for i in range(v):  # row i: pixel p + i; column j: channel kb*v + j
                aoffs[i] = kb * plane + (y * wq + x) * v
                coffs[i] = (kb * v + i) * size + p
                x += 1
                if x == w:
                    x, y = 0, y + 1
            transpose(src, aoffs, v, flat, coffs, k_out - kb * v, bias, kb * v)
            p0 += v


@njit(nogil=True, cache=True)
def _tiles(src, wts, out, taps, kblocks, plane_o, length, v, rem, block_taps):
    """All tiles of one image: out (blocked, ``plane_o`` values a channel block) from src
    (packed) and wts ((K/V, taps, V, V) flat). The ``block_taps`` taps of the last input block,
    which holds ``rem`` channels, take ``rem`` steps in a second call that adds to the first's
    result (no work on its zero lanes)."""
    ntaps = taps.shape[0]
    block_w = ntaps * v * v
    full = ntaps if rem == v else ntaps - block_taps
    last = taps[full:]
    for kb in range(0, kblocks, NVEC):
        q0 = 0
        while q0 < length:
            q = q0 if q0 + ROWS <= length or length < ROWS else length - ROWS
            for part in range(2):  # one call site: the kernel is inlined once
                if (full if part == 0 else ntaps - full) == 0:
                    continue
                _FORWARD(src, q * v, taps if part == 0 else last,
                         full if part == 0 else ntaps - full, v if part == 0 else rem, wts,
                         kb * block_w + part * full * v * v, v * v, block_w,
                         out, kb * plane_o + q * v, v, plane_o, part * full)
            q0 += ROWS


@njit(nogil=True, cache=True)
def _forward_images(x, s0, s1, wts, bias, out, xb, ob, taps, hp, wp, top, left, kblocks,
                    plane_o, length, v):
    """Images [s0, s1) of x -> out (NCHW, bias added)."""
    for n in range(s0, s1):
        _pack(x[n], xb, v, hp, wp, top, left)
        _tiles(xb, wts, ob, taps, kblocks, plane_o * v, length, v, x.shape[1] - (
            -(-x.shape[1] // v) - 1) * v, taps.shape[0] // -(-x.shape[1] // v))
        _unpack(ob, plane_o * v, wp, v, bias, out[n])


@njit(nogil=True, cache=True)
def _backward_images(dout, x, s0, s1, wt, need_dx, dx, xb, gb, dxb, dwb, db, rows, taps_dx,
                     fh, fw, dh, dw_, hp, wp, top, left, hg, wg, gy, gx, plane_o, v):
    """Images [s0, s1): dwb (K/V, C/V, FH, FW, V in, V out) += each image's dW (from zero),
    db += each image's db, and dx (stride 1) from the forward tiles on the packed dout."""
    c_in, k_out = x.shape[1], dout.shape[1]
    ho, wo = dout.shape[2], dout.shape[3]
    cblocks, kblocks = -(-c_in // v), -(-k_out // v)
    plane_x, plane_g = hp * wp * v, hg * wg * v
    gsums = np.empty(k_out, dtype=x.dtype)
    zero = np.zeros(c_in, dtype=x.dtype)
    tile = v * v
    part = np.empty(tile * fh * fw * cblocks * kblocks, dtype=x.dtype)
    for n in range(s0, s1):
        _pack(x[n], xb, v, hp, wp, top, left)
        _pack(dout[n], gb, v, hg, wg, gy, gx)
        _sums(dout[n], gsums)
        for k in range(k_out):
            db[k] += gsums[k]
        for kb in range(kblocks):
            g_off = kb * plane_g + (gy * wg + gx) * v
            for cb in range(cblocks):
                for fy in range(fh):
                    for fx in range(fw):
                        at = ((kb * cblocks + cb) * fh + fy) * fw + fx
                        _WEIGHTS(xb, cb * plane_x + (fy * dh * wp + fx * dw_) * v, rows, ho,
                                 wo, gb, g_off, wg * v, 0, part, at * tile, v, 0, 0)
        for i in range(part.shape[0]):
            dwb[i] += part[i]
        if need_dx:
            cpad = -(-cblocks // NVEC) * NVEC
            h, w = x.shape[2], x.shape[3]
            _tiles(gb, wt, dxb, taps_dx, cpad, plane_o * v, (h - 1) * wg + w, v,
                   k_out - (kblocks - 1) * v, fh * fw)
            _unpack(dxb, plane_o * v, wg, v, zero, dx[n])


def _round_up(a, b):
    return -(-a // b) * b


class Plan:
    """Sizes of one convolution on the blocked path (see the module docstring)."""

    def __init__(self, x_shape, w_shape, stride, pads, dilation, dtype):
        self.n, self.c, self.h, self.w = x_shape
        self.k, _, self.fh, self.fw = w_shape
        self.sh, self.sw = stride
        self.dh, self.dw = dilation
        self.top, self.bottom, self.left, self.right = pads
        self.dtype = np.dtype(dtype)
        self.v = v = lanes(dtype)
        self.vi = v
        self.ho, self.wo = conv_output_hw((self.h, self.w), (self.fh, self.fw), stride, pads,
                                          dilation)
        self.hp, self.wp = self.h + self.top + self.bottom, self.w + self.left + self.right
        self.cb, self.kb = -(-self.c // v), -(-self.k // v)
        self.kbp = _round_up(self.kb, NVEC)
        if (self.sh, self.sw) != (1, 1):
            raise ValueError(f"blocked convolution: stride {stride} is not 1")
        # one run over the plane in rows of the padded width
        self.length = (self.ho - 1) * self.wp + self.wo
        self.plane_o = self.ho * self.wp + ROWS  # slack: a run shorter than ROWS writes past
        self.x_size = self.cb * self.hp * self.wp * v + (ROWS + 1) * v
        # dout padded so that dx is a stride-1 correlation of it with the flipped kernel
        self.gy, self.gx = self.dh * (self.fh - 1) - self.top, self.dw * (self.fw - 1) - self.left
        self.hg, self.wg = self.h + self.dh * (self.fh - 1), self.w + self.dw * (self.fw - 1)
        self.macs = self.n * self.k * self.c * self.fh * self.fw * self.ho * self.wo
        self.parts = _common.conv_parts(self.macs, self.n, self.n)
        split_work = 2 * self.macs >= _common.SPLIT_FLOPS
        self.chunks = max(1, min(self.n, 4)) if split_work else 1

    def taps(self, planes, plane, hd, wd, vi):
        """Offsets of the (channel block, tap) steps in a packed image of ``hd x wd`` planes."""
        cb, fy, fx = np.meshgrid(np.arange(planes), np.arange(self.fh), np.arange(self.fw),
                                 indexing="ij")
        return ((cb * plane + (fy * self.dh * wd + fx * self.dw) * vi)).ravel().astype(np.int64)

    def weights(self, w):
        """w (K, C, FH, FW) -> (K/V, C/V, FH, FW, V in, V out) flat, blocks of K up to NB."""
        v, vi = self.v, self.vi
        wpad = np.zeros((self.kbp * v, self.cb * vi, self.fh, self.fw), dtype=w.dtype)
        wpad[:self.k, :self.c] = w
        return np.ascontiguousarray(wpad.reshape(self.kbp, v, self.cb, vi, self.fh, self.fw)
                                    .transpose(0, 2, 4, 5, 3, 1)).ravel()

    def flipped(self, w):
        """w (K, C, FH, FW) -> the dx weights (C/V, K/V, FH, FW, V of K, V of C) flat, kernel
        flipped, blocks of C up to NB."""
        v = self.v
        cbp = _round_up(self.cb, NVEC)
        wpad = np.zeros((cbp * v, self.kb * v, self.fh, self.fw), dtype=w.dtype)
        wpad[:self.c, :self.k] = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
        return np.ascontiguousarray(wpad.reshape(cbp, v, self.kb, v, self.fh, self.fw)
                                    .transpose(0, 2, 4, 5, 3, 1)).ravel()

    def x_buffer(self, vi):
        """This thread's packed image (zero wherever :func:`_pack` does not write)."""
        size = self.cb * self.hp * self.wp * vi + (ROWS + 1) * vi
        key = ("blocked_x", self.c, self.h, self.w, self.top, self.left, self.hp, self.wp, vi)
        return _zeroed_buffer(key, (size,), self.dtype)


def memory(x_shape, w_shape, stride, pads, dilation, itemsize):
    """Bytes ``(kept for backward, workspace)``: nothing kept; per thread share the packed input,
    packed dout, blocked output and dx, plus the weights in both orders and the chunks' dW."""
    dtype = np.float32 if itemsize == 4 else np.float64
    p = Plan(x_shape, w_shape, stride, pads, dilation, dtype)
    v = p.v
    dw_block = p.kb * p.cb * p.fh * p.fw * v * v
    per_share = (p.x_size + p.kb * p.hg * p.wg * v + ROWS * v
                 + max(p.kbp * p.plane_o, _round_up(p.cb, NVEC) * (p.h * p.wg + ROWS)) * v
                 + dw_block)
    weights = (p.kbp * p.cb + _round_up(p.cb, NVEC) * p.kb) * p.fh * p.fw * v * v
    return 0, (max(p.parts, 1) * per_share + weights + (p.chunks + 1) * dw_block) * itemsize


def conv2d(x, w, b, stride, pads, dilation=(1, 1)):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), None)."""
    x = np.ascontiguousarray(x)  # the packing reads planes as flat runs
    p = Plan(x.shape, w.shape, stride, pads, dilation, x.dtype)
    out = empty((p.n, p.k, p.ho, p.wo), dtype=x.dtype)
    bias = b if b is not None else np.zeros(p.k, dtype=x.dtype)
    wts = p.weights(w)
    taps = p.taps(p.cb, p.hp * p.wp * p.vi, p.hp, p.wp, p.vi)

    def share(s0, s1):
        xb = p.x_buffer(p.vi)
        ob = _buffer("blocked_out", (p.kbp * p.plane_o * p.v,), x.dtype)
        _forward_images(x, s0, s1, wts, bias, out, xb, ob, taps, p.hp, p.wp, p.top,
                        p.left, p.kbp, p.plane_o, p.length, p.v)

    split(share, p.n, p.parts)
    return out, None


def conv2d_backward(dout, x, w, has_bias, stride, pads, need_dx=True, dilation=(1, 1)):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); dx needs stride 1 and
    ``pad <= dil*(F-1)`` on each side."""
    x, dout = np.ascontiguousarray(x), np.ascontiguousarray(dout)
    p = Plan(x.shape, w.shape, stride, pads, dilation, x.dtype)
    v = p.v
    dx = empty(x.shape, dtype=x.dtype) if need_dx else np.empty((p.n, p.c, 0, 0), x.dtype)
    wt = p.flipped(w) if need_dx else np.zeros(1, dtype=x.dtype)
    taps_dx = p.taps(p.kb, p.hg * p.wg * v, p.hg, p.wg, v)
    rows = (np.arange(p.ho) * p.sh * p.wp * v).astype(np.int64)
    dw_size = p.kb * p.cb * p.fh * p.fw * v * v
    cpad = _round_up(p.cb, NVEC)
    plane_dx = p.h * p.wg + ROWS

    def share(c0, c1):
        xb = p.x_buffer(v)
        key = ("blocked_dout", p.k, p.ho, p.wo, p.gy, p.gx, p.hg, p.wg)
        gb = _zeroed_buffer(key, (p.kb * p.hg * p.wg * v + (ROWS + 1) * v,), x.dtype)
        dxb = _buffer("blocked_dx", (cpad * plane_dx * v,), x.dtype)
        sums = []
        for c in range(c0, c1):
            s0, s1 = p.n * c // p.chunks, p.n * (c + 1) // p.chunks
            dwb = np.zeros(dw_size, dtype=x.dtype)
            db = np.zeros(p.k, dtype=x.dtype)
            _backward_images(dout, x, s0, s1, wt, need_dx, dx, xb, gb, dxb, dwb, db, rows,
                             taps_dx, p.fh, p.fw, p.dh, p.dw, p.hp, p.wp, p.top,
                             p.left, p.hg, p.wg, p.gy, p.gx, plane_dx, v)
            sums.append((dwb, db))
        return sums

    parts = [s for run in split(share, p.chunks, min(p.parts, p.chunks)) for s in run]
    dwb, db = parts[0]
    for part_dw, part_db in parts[1:]:  # chunk order
        dwb += part_dw
        db += part_db
    dw = (dwb.reshape(p.kb, p.cb, p.fh, p.fw, v, v).transpose(0, 5, 1, 4, 2, 3)
          .reshape(p.kb * v, p.cb * v, p.fh, p.fw)[:p.k, :p.c])
    return (dx if need_dx else None), np.ascontiguousarray(dw), (db if has_bias else None)
