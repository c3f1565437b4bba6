"""cpu convolution on a blocked channel layout with the generated micro-kernels of
:mod:`.microkernel`: forward, input gradient and weight gradient, any stride, padding and
dilation (the loop nests are in :mod:`.blocked_kernels`).

Layout ``NCHWc``: an image's channels are cut into blocks of ``V`` (the target's vector lanes of
the dtype, the last block zero-padded), each block zero-padded planes of pixels with the ``V``
channels innermost; at stride ``(sh, sw)`` each block holds ``sh*sw`` phase planes, padded pixel
``(Y, X)`` in plane ``(Y % sh, X % sw)`` at ``(Y // sh, X // sw)``, so that every tap reads its
plane at unit stride. Each image is packed into that layout once per call (V x V transposes in
registers), in the thread that uses it, so it stays in cache; the weights are reordered once per
call, in NumPy. Packing and unpacking are a small part of a forward + backward (the shares on
B: ``benchmarks/results-2026-12-thresholds.md``).

- Forward: a tile of ``R`` output pixels x ``NB`` blocks of ``V`` output channels is one call of
  the ``R x NB`` kernel over every (input channel block, tap) ``t`` and input channel ``l`` of
  the block: ``a`` is the packed input, ``b`` the weights as ``(K/V, C/V, FH, FW, V in, V
  out)``. The tiles run over the output plane in rows of the phase plane's width (one run of
  ``(Ho-1)*Wd + Wo`` positions, so tiles cross rows and the last columns of each row are
  computed and dropped). The last tile of a run starts ``R`` before its end (it recomputes a
  few pixels, storing the same values); runs shorter than ``R`` read into zeroed slack past the
  planes and write into slack past each output plane. Where that computes more positions than
  segment tiles would (7x7 outputs in a 9-wide plane: 72 positions for 49), a tile is instead
  a few segments of a few outputs of a row, wherever they start (``SEGMENTS`` x ``SEG_LEN`` in
  :mod:`.blocked_kernels`), each row's last segment ending at its last output. The blocked
  output is then moved to NCHW with the bias added.
- Input gradient: dx pixel ``(y, x)`` gets ``w[k, c, fy, fx] * dout[k, oh, ow]`` where
  ``oh*sh + fy*dh = y + top`` (and the same across). Pixels with the same ``(y % sh, x % sw)``
  (a phase) take the same taps, each at a fixed offset ``(oh - y // sh, ow - x // sw)``, so a
  phase of dx is a unit-stride correlation of dout, zero-padded around, with its taps: the
  forward tiles again, with the weights transposed (stride 1: one phase, the kernel flipped).
- Weight gradient: tile of ``V`` input channels x ``V`` output channels of one tap
  (``"lanes"`` rows); ``t`` runs over the output rows and ``l`` over the pixels of a row (only
  valid pixels, so inf or NaN in x never meets a dropped column), ``a`` the packed input
  (broadcast channel by channel), ``b`` the packed dout.

Where :func:`.conv.algorithm` sends layers here: stride 1 or 2 with enough channels to fill
whole channel blocks, and a padded width close to the output width (these kernels compute rows
of that width). It keeps Winograd for 3x3 layers of 32+ input and 64+ output channels, where
F(2x2, 3x3)'s 2.25x fewer multiplications beat kernels that run at the FMA ceiling, and im2col
for few channels, strided 1x1 layers and wide padding. The per-layer timings (native and AVX2)
that set the rule: ``benchmarks/results-2026-12-thresholds.md``; the passes section of
``python -m benchmarks.report`` (``benchmarks/passes.py``) measures forward, dx and dW of B and
D on one thread beside SGEMM.

Threads: the forward pass splits the images in contiguous runs (nothing to add up). Backward
cuts the batch into ``chunks`` that depend on the shapes only; each sums its images' dW (each
image's sum starts from zero and is then added) and db, and the chunks' sums are added in chunk
order, so every thread count gives the same bits.
"""
import functools
import math

import numpy as np

from ..._shapes import conv_output_hw
from .. import _workers
from .._memory import empty
from .._workers import split
from . import _common
from ._common import _buffer, _zeroed_buffer
from .blocked_kernels import (_FORWARD, _WEIGHTS, NVEC, ROWS, WIDE_ROWS,  # noqa: F401
                              WIDE_VEC, _backward_images, _forward_images)
from .microkernel import lanes

__all__ = ["conv2d", "conv2d_backward", "memory", "Forward", "Plan", "plan"]


def _round_up(a, b):
    return -(-a // b) * b


def _dx_axis(size, pad, f, dil, stride, out):
    """One axis of the input gradient's phases: ``(phase planes' size, zeros before dout, padded
    dout's size, [(taps' input index, offset in padded dout) per phase])``."""
    size_q = -(-size // stride)
    # tap f of phase q reaches dout at (position in the phase) - a, a = (f*dil - q - pad)/stride
    taps = [[(i, (i * dil - q - pad) // stride) for i in range(f)
             if (q + pad - i * dil) % stride == 0] for q in range(stride)]
    lead = max(0, max((a for tq in taps for _, a in tq), default=0))
    least = min((a for tq in taps for _, a in tq), default=0)
    padded = max(out, size_q - least) + lead
    return size_q, lead, padded, [[(i, lead - a) for i, a in tq] for tq in taps]


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
        self.ho, self.wo = conv_output_hw((self.h, self.w), (self.fh, self.fw), stride, pads,
                                          dilation)
        hp, wp = self.h + self.top + self.bottom, self.w + self.left + self.right
        self.hd, self.wd = -(-hp // self.sh), -(-wp // self.sw)  # phase planes of x
        self.cb, self.kb = -(-self.c // v), -(-self.k // v)
        self.kbp, self.cbp = _round_up(self.kb, NVEC), _round_up(self.cb, NVEC)
        self.length = (self.ho - 1) * self.wd + self.wo
        self.plane_o = self.ho * self.wd + ROWS  # slack: a run shorter than ROWS writes past
        self.x_size = self.cb * self.sh * self.sw * self.hd * self.wd * v + (ROWS + 1) * v
        self.hq, self.gy, self.hg, self.ytaps = _dx_axis(self.h, self.top, self.fh, self.dh,
                                                         self.sh, self.ho)
        self.wq, self.gx, self.wg, self.xtaps = _dx_axis(self.w, self.left, self.fw, self.dw,
                                                         self.sw, self.wo)
        self.plane_dx = self.hq * self.wg + ROWS
        self.g_size = self.kb * self.hg * self.wg * v + (ROWS + 1) * v
        self.macs = self.n * self.k * self.c * self.fh * self.fw * self.ho * self.wo
        self.parts = _common.conv_parts(self.macs, self.n, self.n)
        split_work = 2 * self.macs >= _common.SPLIT_FLOPS
        self.chunks = max(1, min(self.n, 4)) if split_work else 1

    @functools.cached_property
    def forward_geometry(self):
        """The forward loops' sizes, and the layouts of x and of the output (see
        :func:`.blocked_kernels._offsets`)."""
        geo = np.array([self.v, self.kbp, self.plane_o, self.length], dtype=np.int64)
        return geo, self.x_layout(), np.array([1, 1, 0, self.wd, 0, 0], dtype=np.int64)

    @functools.cached_property
    def backward_geometry(self):
        """The backward loops' sizes, and the layouts of x, dout and dx."""
        v = self.v
        # dW's wide tiles: tap fx + 1 is the next pixel of x, and whole groups of output blocks
        wide = self.sw == 1 and self.dw == 1 and self.fw * v >= WIDE_ROWS and \
            self.kb % WIDE_VEC == 0
        geo = np.array([v, self.hg, self.wg, self.gy, self.gx, self.fh, self.fw, self.cbp,
                        self.plane_dx, (self.hq - 1) * self.wg + self.wq, wide, self.wq],
                       dtype=np.int64)
        lay_g = np.array([1, 1, self.hg * self.wg * v, self.wg, self.gy, self.gx], np.int64)
        lay_dx = np.array([self.sh, self.sw, self.cbp * self.plane_dx * v, self.wg, 0, 0],
                          dtype=np.int64)
        return geo, self.x_layout(), lay_g, lay_dx

    def x_layout(self):
        return np.array([self.sh, self.sw, self.hd * self.wd * self.v, self.wd, self.top,
                         self.left], dtype=np.int64)

    def key(self):
        """The shapes that fix this plan's taps and weight orders (not its thread shares)."""
        return ((self.n, self.c, self.h, self.w), (self.k, self.c, self.fh, self.fw),
                (self.sh, self.sw), (self.top, self.bottom, self.left, self.right),
                (self.dh, self.dw), self.dtype)

    def taps(self):
        """Offsets of the (channel block, tap) steps in a packed image (computed once a shape)."""
        return _taps(*self.key())

    def _taps(self):
        v, plane = self.v, self.hd * self.wd * self.v
        cb, fy, fx = np.meshgrid(np.arange(self.cb), np.arange(self.fh), np.arange(self.fw),
                                 indexing="ij")
        yy, xx = fy * self.dh, fx * self.dw
        phase = (yy % self.sh) * self.sw + xx % self.sw
        return (cb * self.sh * self.sw * plane + phase * plane
                + ((yy // self.sh) * self.wd + xx // self.sw) * v).ravel().astype(np.int64)

    def weights(self, w):
        """w (K, C, FH, FW) -> (K/V, C/V, FH, FW, V in, V out) flat, blocks of K up to NB."""
        v = self.v
        wpad = np.zeros((self.kbp * v, self.cb * v, self.fh, self.fw), dtype=w.dtype)
        wpad[:self.k, :self.c] = w
        return np.ascontiguousarray(wpad.reshape(self.kbp, v, self.cb, v, self.fh, self.fw)
                                    .transpose(0, 2, 4, 5, 3, 1)).ravel()

    def dx_phases(self, w):
        """The input gradient's taps and weights, phase after phase: ``(taps, tap bounds,
        weights, weight bounds)``; phase ``(qy, qx)`` takes the taps ``(fy, fx)`` whose
        ``fy*dh - qy - top`` and ``fx*dw - qx - left`` divide by the stride, its weights as
        (C/V, K/V, taps, V of K, V of C). The order is found once a shape, as the positions
        (1 + flat index in w, 0 for a zero) that :meth:`_dx_phases` gives w's indices."""
        taps, tap_bounds, order, w_bounds = _dx_order(*self.key())
        flat = np.empty(w.size + 1, dtype=w.dtype)
        flat[0] = 0
        flat[1:] = w.ravel()
        return taps, tap_bounds, np.take(flat, order), w_bounds

    def _dx_phases(self, w):
        v = self.v
        wpad = np.zeros((self.cbp * v, self.kb * v, self.fh, self.fw), dtype=w.dtype)
        wpad[:self.c, :self.k] = w.transpose(1, 0, 2, 3)
        taps, tap_bounds, wts, w_bounds = [], [0], [], [0]
        plane = self.hg * self.wg * v
        for ytaps in self.ytaps:
            for xtaps in self.xtaps:
                fys, oys = [t[0] for t in ytaps], [t[1] for t in ytaps]
                fxs, oxs = [t[0] for t in xtaps], [t[1] for t in xtaps]
                offs = (np.arange(self.kb)[:, None, None] * plane
                        + (np.array(oys, dtype=np.int64)[None, :, None] * self.wg
                           + np.array(oxs, dtype=np.int64)[None, None, :]) * v)
                taps.append(offs.ravel().astype(np.int64))
                tap_bounds.append(tap_bounds[-1] + offs.size)
                sub = wpad[:, :, fys][:, :, :, fxs].reshape(self.cbp, v, self.kb, v, len(fys),
                                                            len(fxs))
                wts.append(np.ascontiguousarray(sub.transpose(0, 2, 4, 5, 3, 1)).ravel())
                w_bounds.append(w_bounds[-1] + wts[-1].size)
        return (np.concatenate(taps), np.array(tap_bounds, dtype=np.int64),
                np.concatenate(wts), np.array(w_bounds, dtype=np.int64))

    def x_buffer(self):
        """This thread's packed image (zero wherever packing does not write)."""
        key = ("blocked_x", self.c, self.h, self.w, self.top, self.left, self.sh, self.sw,
               self.hd, self.wd)
        return _zeroed_buffer(key, (self.x_size,), self.dtype)

    def g_buffer(self):
        """This thread's packed dout (zero wherever packing does not write)."""
        key = ("blocked_dout", self.k, self.ho, self.wo, self.gy, self.gx, self.hg, self.wg)
        return _zeroed_buffer(key, (self.g_size,), self.dtype)


def plan(x_shape, w_shape, stride, pads, dilation, dtype):
    """The :class:`Plan` of these shapes, made once per shape and thread count (its shares
    depend on the threads): the training step's calls skip its arithmetic (14 us a call)."""
    return _plan(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(pads), tuple(dilation),
                 np.dtype(dtype), _workers.threads())


@functools.lru_cache(maxsize=256)
def _plan(x_shape, w_shape, stride, pads, dilation, dtype, threads):
    return Plan(x_shape, w_shape, stride, pads, dilation, dtype)


@functools.lru_cache(maxsize=256)
def _taps(x_shape, w_shape, stride, pads, dilation, dtype):
    return Plan(x_shape, w_shape, stride, pads, dilation, dtype)._taps()


@functools.lru_cache(maxsize=256)
def _dx_order(x_shape, w_shape, stride, pads, dilation, dtype):
    """:meth:`Plan.dx_phases` of the array of w's flat indices plus one."""
    index = np.arange(1, math.prod(w_shape) + 1, dtype=np.int64).reshape(w_shape)
    return Plan(x_shape, w_shape, stride, pads, dilation, dtype)._dx_phases(index)


def memory(x_shape, w_shape, stride, pads, dilation, itemsize):
    """Bytes ``(kept for backward, workspace)``: nothing kept; per thread share the packed input,
    packed dout, blocked output and dx, plus the weights in both orders and the chunks' dW."""
    dtype = np.float32 if itemsize == 4 else np.float64
    p = Plan(x_shape, w_shape, stride, pads, dilation, dtype)
    v = p.v
    dw_block = p.kb * p.cb * p.fh * p.fw * v * v
    per_share = (p.x_size + p.g_size + max(p.kbp * p.plane_o,
                                           p.sh * p.sw * p.cbp * p.plane_dx) * v + dw_block)
    weights = (p.kbp * p.cb + p.cbp * p.kb) * p.fh * p.fw * v * v
    return 0, (max(p.parts, 1) * per_share + weights + (p.chunks + 1) * dw_block) * itemsize


class Forward:
    """A forward convolution prepared once for one input shape: the weights reordered, the taps
    and loop sizes computed (what :func:`conv2d` does on every call), for callers that run the
    same layer many times (:func:`fastconv.compile`'s plans).

    ``forward(x, residual=None, relu=False)`` -> out (N, K, Hout, Wout): the convolution plus
    bias, then ``residual`` (same shape as out) added and ReLU applied, each image as soon as it
    is stored (the fused store of a residual block's last conv). x must have the prepared shape
    and dtype (the caller checks it once).
    """

    def __init__(self, x_shape, w, b, stride, pads, dilation=(1, 1)):
        self.plan = p = plan(x_shape, w.shape, stride, pads, dilation, w.dtype)
        self.wts, self.taps, self.geo = p.weights(w), p.taps(), p.forward_geometry
        self.bias = np.ascontiguousarray(b) if b is not None else np.zeros(p.k, dtype=w.dtype)
        self.none = np.empty((0, 1, 1, 1), dtype=w.dtype)

    def __call__(self, x, residual=None, relu=False):
        p = self.plan
        x = np.ascontiguousarray(x)  # the packing reads planes as flat runs
        out = empty((p.n, p.k, p.ho, p.wo), dtype=x.dtype)
        res = self.none if residual is None else np.ascontiguousarray(residual)
        relu = bool(relu)

        def share(s0, s1):
            ob = _buffer("blocked_out", (p.kbp * p.plane_o * p.v,), x.dtype)
            _forward_images(x, s0, s1, self.wts, self.bias, out, p.x_buffer(), ob, self.taps,
                            *self.geo, res, relu)

        split(share, p.n, p.parts)
        return out


def conv2d(x, w, b, stride, pads, dilation=(1, 1)):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), None)."""
    return Forward(x.shape, w, b, stride, pads, dilation)(x), None


def conv2d_backward(dout, x, w, has_bias, stride, pads, need_dx=True, dilation=(1, 1)):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None)."""
    x, dout = np.ascontiguousarray(x), np.ascontiguousarray(dout)
    p = plan(x.shape, w.shape, stride, pads, dilation, x.dtype)
    v = p.v
    dx = empty(x.shape, dtype=x.dtype) if need_dx else np.empty((p.n, p.c, 0, 0), x.dtype)
    dx_taps, tap_bounds, wt, w_bounds = p.dx_phases(w)
    taps, geo = p.taps(), p.backward_geometry
    rows = (np.arange(p.ho) * p.wd * v).astype(np.int64)
    dw_size = p.kb * p.cb * p.fh * p.fw * v * v

    def share(c0, c1):
        xb, gb = p.x_buffer(), p.g_buffer()
        dxb = _buffer("blocked_dx", (p.sh * p.sw * p.cbp * p.plane_dx * v,), x.dtype)
        part = _buffer("blocked_dw", (dw_size,), x.dtype)
        sums = []
        for c in range(c0, c1):
            s0, s1 = p.n * c // p.chunks, p.n * (c + 1) // p.chunks
            dwb = empty((dw_size,), x.dtype)  # reused memory: no page faults each step
            dwb[:] = 0
            db = np.zeros(p.k, dtype=x.dtype)
            _backward_images(dout, x, s0, s1, need_dx, dx, xb, gb, dxb, dwb, part, db, taps,
                             rows, wt, dx_taps, tap_bounds, w_bounds, *geo)
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
