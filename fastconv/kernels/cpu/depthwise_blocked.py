"""cpu depthwise convolution (one filter per channel) on the blocked channel layout of
:mod:`.blocked`: forward, for :func:`fastconv.compile`'s plans.

Each image is packed into the blocked layout (blocks of V channels, V the vector lanes, each a
zero-padded plane of pixels with the V channels innermost, one phase plane per stride phase),
so a tap of one block is a vector: a tile of ``ROWS`` output pixels of a block keeps its sums in
registers (:func:`.microkernel.depthwise_kernel`) and adds, tap by tap, the input vectors at
that tap's offset times the tap's V weights. The tiles run over the output plane in rows of the
phase plane's width, as the dense blocked forward does (the last columns of each row are
computed and dropped). The blocked output is moved back to NCHW with the bias added (and ReLU
applied) while it is in cache.

On NCHW (:mod:`.depthwise`) each plane is a run of short rows, packed as shifted copies, summed
tap by tap and copied out: three passes over memory where this is one pass of FMAs in registers
between a pack and an unpack of V x V register transposes.
"""
import functools

import numpy as np
from numba import njit

from .._memory import empty
from .._workers import split
from . import _common
from ._common import _buffer
from .blocked import Plan
from .blocked_kernels import ROWS, _epilogue, _pack, _unpack
from .microkernel import depthwise_kernel, lanes

__all__ = ["Forward", "applies", "depthwise_weights", "tiles"]

_TILE = depthwise_kernel(ROWS)


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
