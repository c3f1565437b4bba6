"""cpu depthwise convolution (one filter per channel) on the blocked channel layout of
:mod:`.blocked`: forward (also :func:`fastconv.compile`'s plans) and both gradients.

Each image is packed into the blocked layout (blocks of V channels, V the vector lanes, each a
zero-padded plane of pixels with the V channels innermost, one phase plane per stride phase),
so a tap of one block is a vector: a tile of ``ROWS`` output pixels of a block keeps its sums in
registers (:func:`.microkernel_depthwise.depthwise_kernel`) and adds, tap by tap, the input
vectors at that tap's offset times the tap's V weights. The tiles run over the output plane in
rows of the phase plane's width, as the dense blocked forward does (the last columns of each
row are computed and dropped). The blocked output is moved back to NCHW with the bias added
(and ReLU applied) while it is in cache.

On NCHW (:mod:`.depthwise`) each plane is a run of short rows, packed as shifted copies, summed
tap by tap and copied out: three passes over memory where this is one pass of FMAs in registers
between a pack and an unpack of V x V register transposes.

Backward packs each image's x and dout (dout zero-padded around, as the dense blocked
backward lays it out). A tap's dW is x at the tap's offset times dout, summed over the valid
output pixels only (inf or NaN in x never meets a spare column):
:func:`.microkernel_depthwise.depthwise_weights_kernel` keeps ``DW_TAPS`` taps' sums in
registers through one pass over the pixels. The input gradient, phase by phase, is the forward
tiles on the packed dout with each phase's taps (:meth:`.blocked.Plan.dx_phases`' geometry, one
filter a channel). Determinism as in :mod:`.blocked`: each image's dW from zero, summed in image
order within ``chunks`` fixed by the shapes, the chunks in order.
"""
import functools

import numpy as np
from numba import njit

from .._memory import empty
from .._workers import split
from . import _common
from ._common import _buffer
from .blocked import Plan
from .blocked_kernels import ROWS, _epilogue, _pack, _sums, _unpack, dx_phase
from .microkernel import lanes
from .microkernel_depthwise import depthwise_kernel, depthwise_weights_kernel

__all__ = ["Forward", "applies", "backward", "depthwise_weights", "tiles"]

_TILE = depthwise_kernel(ROWS)
#: Taps whose weight gradients one pass over a block's pixels sums (a 3x3 kernel in one pass:
#: 9 accumulators, within AVX2's 16 vector registers). Fewer taps are padded with repeats of
#: the last; more take passes of DW_TAPS, the last one overlapping the one before.
DW_TAPS = 9
_WEIGHTS = depthwise_weights_kernel(DW_TAPS)


def applies(x_shape, w_shape, dtype):
    """Whether a depthwise conv (weights (K, 1, FH, FW)) runs here: one filter per channel
    (K == C) and at least a vector of channels (fewer would leave most lanes idle)."""
    return w_shape[0] == x_shape[1] >= lanes(dtype) and w_shape[1] == 1


@njit(nogil=True, cache=True)
def tiles(src, wts, out, taps, blocks, plane_o, length, v):
    """Every tile of one packed image: out (blocked, ``plane_o`` pixels a block) from src, the
    taps of block cb at ``taps[cb*T:(cb+1)*T]`` and its weights at ``wts[cb*T*V:]``. The tiles
    run over each block's ``length`` output positions, the last one ending at the last
    position (it recomputes a few, storing the same values)."""
    ntaps = taps.shape[0] // blocks
    for cb in range(blocks):
        block_taps = taps[cb * ntaps:(cb + 1) * ntaps]
        q0 = 0
        while q0 < length:
            q = q0 if q0 + ROWS <= length or length < ROWS else length - ROWS
            _TILE(src, q * v, block_taps, ntaps, wts, cb * ntaps * v, out,
                  (cb * plane_o + q) * v)
            q0 += ROWS


@njit(nogil=True, cache=True)
def _forward_images(x, s0, s1, wts, bias, out, xb, ob, taps, geo, lay_x, lay_o, relu):
    """Images [s0, s1) of x (N, C, H, W) -> out (N, C, Hout, Wout): packed into xb, the tiles
    of every block into ob, unpacked with the bias, then ReLU (NaN kept) with ``relu``.
    ``wts`` is (C/V, taps, V) flat; ``geo`` = (V, blocks, plane_o, length) as in
    :meth:`.blocked.Plan.forward_geometry`."""
    v, blocks, plane_o, length = geo[0], geo[1], geo[2], geo[3]
    none = np.empty((0, 1, 1, 1), dtype=x.dtype)
    for n in range(s0, s1):
        _pack(x[n], xb, v, lay_x)
        tiles(xb, wts, ob, taps, blocks, plane_o, length, v)
        _unpack(ob, plane_o * v, v, lay_o, bias, out[n])
        if relu:
            _epilogue(out[n], none, n, relu)


def depthwise_weights(w, plan):
    """w (C, 1, FH, FW) -> (C/V, taps, V) flat for the blocked :class:`~.blocked.Plan`
    ``plan`` (lanes past C zero)."""
    c, _, fh, fw = w.shape
    v, blocks = plan.v, plan.cb
    wpad = np.zeros((blocks * v, fh * fw), dtype=w.dtype)
    wpad[:c] = w.reshape(c, fh * fw)
    return np.ascontiguousarray(wpad.reshape(blocks, v, fh * fw).transpose(0, 2, 1)).ravel()


@functools.lru_cache(maxsize=64)
def _geometry(x_shape, fh, fw, stride, pads, dilation, dtype):
    """``(plan, taps, lay_x, lay_o, geo, parts)`` of a depthwise layer: what depends on the
    shapes only, computed once per shape (a training step calls :class:`Forward` anew)."""
    n, c = x_shape[:2]
    p = Plan(x_shape, (c, c, fh, fw), stride, pads, dilation, dtype)
    _, lay_x, lay_o = p.forward_geometry
    geo = np.array([p.v, p.cb, p.plane_o, p.length], dtype=np.int64)
    return p, p.taps(), lay_x, lay_o, geo, _common.conv_parts(n * c * fh * fw * p.ho * p.wo, n, n)


class Forward:
    """A depthwise conv (weights (C, 1, FH, FW)) prepared once for one input shape:
    ``forward(x, relu=False)`` -> out (N, C, Hout, Wout), bias added and ReLU applied to each
    image as it is stored. x must have the prepared shape and dtype (the caller checks)."""

    def __init__(self, x_shape, w, b, stride, pads, dilation=(1, 1)):
        fh, fw = w.shape[2], w.shape[3]
        self.plan, self.taps, self.lay_x, self.lay_o, self.geo, self.parts = _geometry(
            tuple(x_shape), fh, fw, tuple(stride), tuple(pads), tuple(dilation), w.dtype)
        self.wts = depthwise_weights(w, self.plan)
        self.bias = np.ascontiguousarray(b) if b is not None else np.zeros(x_shape[1], w.dtype)

    def __call__(self, x, relu=False):
        p = self.plan
        x = np.ascontiguousarray(x)
        out = empty((p.n, p.c, p.ho, p.wo), dtype=x.dtype)
        relu = bool(relu)

        def share(s0, s1):
            ob = _buffer("depthwise_blocked_out", (p.cb * p.plane_o * p.v,), x.dtype)
            _forward_images(x, s0, s1, self.wts, self.bias, out, p.x_buffer(), ob, self.taps,
                            self.geo, self.lay_x, self.lay_o, relu)

        split(share, p.n, self.parts)
        return out


@njit(nogil=True, cache=True)
def _backward_images(dout, x, s0, s1, need_dx, dx, xb, gb, dxb, dwb, part, db, taps, groups,
                     dx_taps, dx_tap_start, wt, dx_w_start, geo, lay_x, lay_g, lay_dx):
    """Images [s0, s1): dwb (C/V, Tp, V) += each image's dW (from zero in ``part``, dwb's
    size), db += each image's db and, with ``need_dx``, dx[n] from the depthwise tiles on the
    packed dout, phase by phase (phase i's taps ``dx_taps[dx_tap_start[i]:...]`` and weights
    ``wt[dx_w_start[i]:...]``, per block). ``taps`` (C/V, Tp): x's tap offsets padded to Tp,
    ``groups`` the first tap of each pass of DW_TAPS. ``geo``: see :func:`_backward_geometry`."""
    v, blocks, ho, wo, wd, hg, wg, gy, gx = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], \
        geo[6], geo[7], geo[8]
    plane_dx, length_dx, tp = geo[9], geo[10], geo[11]
    phases = lay_dx[0] * lay_dx[1]
    phase_size = blocks * plane_dx * v
    plane_g = hg * wg * v
    gsums = np.empty(dout.shape[1], dtype=x.dtype)
    zero = np.zeros(x.shape[1], dtype=x.dtype)
    for n in range(s0, s1):
        _pack(x[n], xb, v, lay_x)
        _pack(dout[n], gb, v, lay_g)
        _sums(dout[n], gsums)
        for k in range(gsums.shape[0]):
            db[k] += gsums[k]
        for cb in range(blocks):
            g_off = cb * plane_g + (gy * wg + gx) * v
            for g0 in groups:
                _WEIGHTS(xb, 0, taps[cb * tp + g0:], gb, g_off, ho, wo, wd * v, wg * v, part,
                         (cb * tp + g0) * v)
        for i in range(part.shape[0]):
            dwb[i] += part[i]
        if not need_dx:
            continue
        for ph in range(phases):
            out, t0, t1 = dx_phase(dxb, ph, phase_size, dx_tap_start)
            if t0 < t1:
                tiles(gb, wt[dx_w_start[ph]:dx_w_start[ph + 1]], out, dx_taps[t0:t1], blocks,
                      plane_dx, length_dx, v)
        _unpack(dxb, plane_dx * v, v, lay_dx, zero, dx[n])


@functools.lru_cache(maxsize=64)
def _backward_geometry(x_shape, fh, fw, stride, pads, dilation, dtype):
    """What backward needs of the shapes, once per shape: ``(plan, taps, groups, dx taps, dx
    tap bounds, the dx weights' order, geo, lay_x, lay_g, lay_dx)``. The dx weights are phase
    after phase, each (C/V, its taps, V): ``np.take`` of :func:`depthwise_weights`' (C/V, taps,
    V) at the order given."""
    c = x_shape[1]
    p = Plan(x_shape, (c, c, fh, fw), stride, pads, dilation, dtype)
    v, blocks, ntaps = p.v, p.cb, fh * fw
    tp = max(ntaps, DW_TAPS)
    taps = p.taps().reshape(blocks, ntaps)
    taps = np.concatenate([taps, np.repeat(taps[:, -1:], tp - ntaps, axis=1)], axis=1)
    groups = np.array(sorted(set(range(0, tp - DW_TAPS + 1, DW_TAPS)) | {tp - DW_TAPS}),
                      dtype=np.int64)
    plane_g = p.hg * p.wg * v
    dx_taps, bounds, order = [], [0], []
    cb, lane = np.arange(blocks)[:, None, None], np.arange(v)[None, None, :]
    for ytaps in p.ytaps:
        for xtaps in p.xtaps:
            offs = [(oy * p.wg + ox) * v for _, oy in ytaps for _, ox in xtaps]
            tap = np.array([fy * fw + fx for fy, _ in ytaps for fx, _ in xtaps], dtype=np.int64)
            dx_taps.append((np.arange(blocks)[:, None] * plane_g
                            + np.array(offs, dtype=np.int64)[None, :]).ravel())
            bounds.append(bounds[-1] + len(offs) * blocks)
            order.append(((cb * ntaps + tap[None, :, None]) * v + lane).ravel())
    plane_dx = p.hq * p.wg + ROWS
    geo = np.array([v, blocks, p.ho, p.wo, p.wd, p.hg, p.wg, p.gy, p.gx, plane_dx,
                    (p.hq - 1) * p.wg + p.wq, tp], dtype=np.int64)
    lay_g = p.backward_geometry[2]
    lay_dx = np.array([p.sh, p.sw, blocks * plane_dx * v, p.wg, 0, 0], dtype=np.int64)
    return (p, np.ascontiguousarray(taps.ravel()), groups,
            np.concatenate(dx_taps).astype(np.int64), np.array(bounds, dtype=np.int64),
            np.concatenate(order).astype(np.int64), geo, p.x_layout(), lay_g, lay_dx)


def backward(dout, x, w, has_bias, stride, pads, dilation, need_dx):
    """Gradients of a depthwise conv (w (C, 1, FH, FW), where :func:`applies`): dout (N, C,
    Hout, Wout) -> (dx or None, dw, db or None). The caller keeps inf or NaN weights away (the
    dx tiles multiply the zeros around dout by them)."""
    n, c = x.shape[:2]
    fh, fw = w.shape[2], w.shape[3]
    p, taps, groups, dx_taps, tap_bounds, order, geo, lay_x, lay_g, lay_dx = _backward_geometry(
        tuple(x.shape), fh, fw, tuple(stride), tuple(pads), tuple(dilation), x.dtype)
    macs = n * c * fh * fw * p.ho * p.wo
    # chunks from the shapes (and the split threshold) only, never the thread count
    chunks = max(1, min(n, 4)) if 2 * macs >= _common.SPLIT_FLOPS else 1
    x, dout = np.ascontiguousarray(x), np.ascontiguousarray(dout)
    v, blocks, tp = p.v, p.cb, int(geo[11])
    wt = np.take(depthwise_weights(w, p), order)
    w_bounds = np.asarray(tap_bounds) * v
    dx = empty(x.shape, dtype=x.dtype) if need_dx else np.empty((n, c, 0, 0), x.dtype)
    dw_size = blocks * tp * v

    def share(c0, c1):
        xb, gb = p.x_buffer(), p.g_buffer()
        dxb = _buffer("depthwise_blocked_dx", (int(lay_dx[2]) * p.sh * p.sw,), x.dtype)
        part = _buffer("depthwise_blocked_dw", (dw_size,), x.dtype)
        sums = []
        for chunk in range(c0, c1):
            s0, s1 = n * chunk // chunks, n * (chunk + 1) // chunks
            dwb = np.zeros(dw_size, x.dtype)
            db = np.zeros(c, dtype=x.dtype)
            _backward_images(dout, x, s0, s1, need_dx, dx, xb, gb, dxb, dwb, part, db, taps,
                             groups, dx_taps, tap_bounds, wt, w_bounds, geo, lay_x, lay_g,
                             lay_dx)
            sums.append((dwb, db))
        return sums

    results = [s for run in split(share, chunks, _common.conv_parts(macs, n, chunks))
               for s in run]
    dwb, db = results[0]
    for part_dw, part_db in results[1:]:  # chunk order
        dwb += part_dw
        db += part_db
    dw = dwb.reshape(blocks, tp, v)[:, :fh * fw].transpose(0, 2, 1).reshape(blocks * v, fh * fw)
    return (dx if need_dx else None), np.ascontiguousarray(dw[:c]).reshape(w.shape), \
        (db if has_bias else None)
