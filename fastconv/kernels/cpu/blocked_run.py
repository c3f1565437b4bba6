"""A run of convolutions kept on the blocked layout from one to the next, for
:func:`fastconv.compile`'s plans: mobilenet's depthwise and pointwise layers, the conv pairs of
a VGG-like network.

Each layer's tiles write its blocked output, rows of its input's phase-plane width (as the
forward of :mod:`.blocked` and :mod:`.depthwise_blocked`). Instead of moving that output to
NCHW and packing it again for the next layer, each pixel's vector of V channels, plus the bias
and then ReLU, is written straight to where the next layer's packing would put it (its padding
and stride phases; :func:`.microkernel.move`), or, where a 2x2 max pool follows the layer,
the maximum of each window (:func:`.microkernel.move_max`). Only the run's input is packed
from NCHW and only its last output is unpacked to NCHW (pooled first, or reduced to each
channel's mean, where the network does that next). The arithmetic is the layers' own: the
result is the same, bit for bit, as running each layer on the blocked path alone (and the
plans' max pool after it).

Each thread takes its images one at a time through every layer of the run in one compiled
call, so an image's packed inputs of every layer (a buffer of this thread, zeroed once: padding
is never written) stay in the core's cache.
"""
import numpy as np
from numba import njit

from .._memory import empty
from .._workers import split
from . import _common
from ._common import _buffer, _zeroed_buffer
from .blocked import Plan
from .blocked_kernels import _epilogue, _offsets, _pack, _tiles, _unpack
from .depthwise_blocked import depthwise_weights
from .depthwise_blocked import tiles as depthwise_tiles
from .microkernel import move, move_max

__all__ = ["Conv", "Run"]


#: What follows a layer of a run: nothing, a 2x2 stride-2 max pool, or (the last layer only)
#: the mean of each channel (``AdaptiveAvgPool2d(1)``).
POOLS = (None, "max", "mean")


class Conv:
    """One layer of a run: weights (K, C, FH, FW), or (C, 1, FH, FW) with ``depthwise``;
    bias (K,) or None; its geometry; ReLU after it; then ``pool``, one of :data:`POOLS`."""

    def __init__(self, w, b, stride, pads, dilation, relu, depthwise=False, pool=None):
        self.w, self.b, self.relu, self.depthwise = w, b, bool(relu), bool(depthwise)
        self.pool = "max" if pool is True else (pool or None)
        self.stride, self.pads, self.dilation = tuple(stride), tuple(pads), tuple(dilation)

    def __repr__(self):
        return (f"Conv(w {self.w.shape}, bias {self.b is not None}, stride {self.stride}, "
                f"pads {self.pads}, dilation {self.dilation}, relu {self.relu}, depthwise "
                f"{self.depthwise}, pool {self.pool})")


@njit(nogil=True, cache=True)
def _move_image(ob, plane, wd, ho, wo, k_out, v, bias, relu, pool, dst, lay, offs):
    """ob (blocked output: block kb's pixel (oy, ox) at ``(kb*plane + oy*wd + ox)*v``) ->
    dst packed in the layout ``lay``, bias added and ReLU applied, a vector of V channels at
    a time; with ``pool``, the maximum of each 2x2 window (stride 2, the last odd row and
    column dropped) instead of each pixel."""
    block = lay[0] * lay[1] * lay[2]
    step = 2 if pool else 1
    hp, wp = ho // step, wo // step
    row = offs[:wp]
    for kb in range(-(-k_out // v)):
        for py in range(hp):
            _offsets(py * wp, wp, v, lay, kb * block, row)
            src = (kb * plane + step * py * wd) * v
            if pool:
                for px in range(wp):
                    move_max(ob, src + 2 * px * v, wd * v, dst, row[px], bias, kb * v, relu)
            else:
                for px in range(wp):
                    move(ob, src + px * v, dst, row[px], bias, kb * v, relu)


@njit(nogil=True, cache=True)
def _layer(src, depthwise, wts, taps, geo, ob, bias, relu, dst, lay_next, out, offs, tail,
           zeros):
    """One layer of a run for one packed image ``src``: the tiles into ob, then the output
    moved into ``dst`` packed in ``lay_next`` or, where dst is empty (the run's last layer),
    into ``out`` (K, Hout, Wout) NCHW (through ``tail``, scratch, when pooled; ``zeros`` a
    zero bias). ``geo`` = (v, kblocks, plane_o, length, rem, block_taps, wd, ho, wo, k_out,
    pool: an index of :data:`POOLS`)."""
    v, kblocks, plane_o, length, rem, block_taps = geo[0], geo[1], geo[2], geo[3], geo[4], \
        geo[5]
    wd, ho, wo, k_out, pool = geo[6], geo[7], geo[8], geo[9], geo[10]
    if depthwise:
        depthwise_tiles(src, wts, ob, taps, kblocks, plane_o, length, v)
    else:
        _tiles(src, wts, ob, taps, kblocks, plane_o * v, length, v, rem, block_taps)
    if dst.shape[0]:
        _move_image(ob, plane_o, wd, ho, wo, k_out, v, bias, relu, pool == 1, dst, lay_next,
                    offs)
    elif pool == 2:
        _mean_image(ob, plane_o, wd, ho, wo, k_out, v, bias, relu, out)
    elif pool == 1:  # pooled into ``tail`` (blocked, rows of wo // 2), then to NCHW
        hp, wp = ho // 2, wo // 2
        _move_image(ob, plane_o, wd, ho, wo, k_out, v, bias, relu, True, tail,
                    np.array([1, 1, hp * wp * v, wp, 0, 0], dtype=np.int64), offs)
        _unpack(tail, hp * wp * v, v, np.array([1, 1, 0, wp, 0, 0], dtype=np.int64),
                zeros, out)
    else:
        _unpack(ob, plane_o * v, v, np.array([1, 1, 0, wd, 0, 0], dtype=np.int64), bias, out)
        if relu:
            _epilogue(out, np.empty((0, 1, 1, 1), dtype=out.dtype), 0, relu)


@njit(nogil=True, cache=True)
def _mean_image(ob, plane, wd, ho, wo, k_out, v, bias, relu, out):
    """out (K, 1, 1) = each channel's mean over the pixels of ob plus the bias, ReLU'd, summed
    as the cpu global average pool sums a plane: four interleaved partial sums in row-major
    pixel order (the pixels past the last four into the first), ``((s0 + s1) + (s2 + s3)) /
    count``; fewer than four pixels one after the other."""
    length = ho * wo
    quads = length // 4
    count, zero = out.dtype.type(length), out.dtype.type(0)
    flat = out.reshape(out.size)
    sums = np.empty((4, v), dtype=out.dtype)
    for kb in range(-(-k_out // v)):
        for p in range(length):
            base = (kb * plane + (p // wo) * wd + p % wo) * v
            slot = p % 4 if p < 4 * quads else 0
            first = p < 4 if quads else p == 0
            part = sums[slot]
            for lane in range(v):
                value = ob[base + lane] + bias[kb * v + lane]
                if relu and value < zero:
                    value = zero
                part[lane] = value if first else part[lane] + value
        for lane in range(min(v, k_out - kb * v)):
            total = sums[0, lane] if not quads else \
                (sums[0, lane] + sums[1, lane]) + (sums[2, lane] + sums[3, lane])
            flat[kb * v + lane] = total / count


@njit(nogil=True, cache=True)
def _images(x, s0, s1, out, packed, ob, tail, kinds, geos, lays, wts, taps, biases, bounds):
    """Images [s0, s1) of x through every layer of a run, one image at a time (its packed
    inputs stay in cache). Layer i's arrays are slices of the flat ``packed`` (its packed
    input), ``wts``, ``taps`` and ``biases`` between ``bounds[i]`` and ``bounds[i + 1]`` (a
    row of four bounds each); ``kinds[i]`` = (depthwise, relu)."""
    layers = kinds.shape[0]
    offs = np.empty(geos[:, 8].max() + 16, dtype=np.int64)
    empty_dst = packed[:0]
    zeros = np.zeros(biases.shape[0], dtype=biases.dtype)
    for n in range(s0, s1):
        first = packed[bounds[0, 0]:bounds[1, 0]]
        _pack(x[n], first, geos[0, 0], lays[0])
        for i in range(layers):
            src = packed[bounds[i, 0]:bounds[i + 1, 0]]
            last = i == layers - 1
            dst = empty_dst if last else packed[bounds[i + 1, 0]:bounds[i + 2, 0]]
            _layer(src, kinds[i, 0] != 0, wts[bounds[i, 1]:bounds[i + 1, 1]],
                   taps[bounds[i, 2]:bounds[i + 1, 2]], geos[i], ob,
                   biases[bounds[i, 3]:bounds[i + 1, 3]], kinds[i, 1], dst,
                   lays[i + 1] if not last else lays[0], out[n], offs, tail, zeros)


class Run:
    """Consecutive convs (:class:`Conv`) prepared for inputs of ``x_shape`` (N, C, H, W):
    ``run(x)`` -> the last layer's output (N, K, Hout, Wout), NCHW."""

    def __init__(self, x_shape, convs, dtype):
        self.n, self.dtype = x_shape[0], np.dtype(dtype)
        shape, macs, rows = tuple(x_shape), 0, []
        wts, taps, biases, geos, lays, kinds, inputs, ob_size = [], [], [], [], [], [], [], 0
        for conv in convs:
            c = shape[1]
            k, _, fh, fw = conv.w.shape
            pool = "max" if conv.pool is True else (conv.pool or None)
            p = Plan(shape, (c, c, fh, fw) if conv.depthwise else conv.w.shape, conv.stride,
                     conv.pads, conv.dilation, dtype)
            v = p.v
            blocks = p.cb if conv.depthwise else p.kbp
            wts.append(np.asarray(depthwise_weights(conv.w, p) if conv.depthwise
                                  else p.weights(conv.w), dtype))
            bias = np.zeros(-(-k // v) * v, dtype=dtype)
            if conv.b is not None:
                bias[:k] = conv.b
            biases.append(bias)
            cblocks = -(-c // v)
            taps.append(p.taps())
            geos.append([v, blocks, p.plane_o, p.length, c - (cblocks - 1) * v,
                         taps[-1].shape[0] // cblocks, p.wd, p.ho, p.wo, k,
                         POOLS.index(pool)])
            lays.append(p.x_layout())
            inputs.append((p.c, p.h, p.w, p.x_size) + tuple(lays[-1]))
            kinds.append([int(conv.depthwise), int(conv.relu)])
            rows.append([p.x_size, wts[-1].size, taps[-1].size, bias.size])
            ob_size = max(ob_size, blocks * p.plane_o * v)
            macs += p.n * p.ho * p.wo * fh * fw * (c if conv.depthwise else c * k)
            if pool == "mean" and conv is not convs[-1]:
                raise ValueError("blocked_run.Run: only the last layer of a run takes means")
            shape = (shape[0], k) + ((1, 1) if pool == "mean" else
                                     (p.ho // 2, p.wo // 2) if pool else (p.ho, p.wo))
        self.tail_size = blocks * shape[2] * shape[3] * v
        self.out_shape = shape
        self.parts = _common.conv_parts(macs, self.n, self.n)
        self.bounds = np.zeros((len(rows) + 2, 4), dtype=np.int64)
        self.bounds[1:len(rows) + 1] = np.cumsum(rows, axis=0)
        self.bounds[-1] = self.bounds[-2]
        self.wts, self.taps, self.biases = (np.concatenate(a) for a in (wts, taps, biases))
        self.geos, self.lays = np.array(geos, dtype=np.int64), np.array(lays, dtype=np.int64)
        self.kinds, self.ob_size = np.array(kinds, dtype=np.int64), ob_size
        # what decides where the packed inputs are written (the rest stays zero): each
        # layer's input channels, size and layout
        self.key = ("blocked_run", tuple(inputs))

    def __call__(self, x):
        out = empty(self.out_shape, self.dtype)

        def share(s0, s1):
            # this thread's packed inputs of every layer: zero where nothing is written
            # (padding, lanes past the channels, the slack past the planes)
            packed = _zeroed_buffer(self.key, (self.bounds[-1, 0],), self.dtype)
            ob = _buffer("blocked_run_out", (self.ob_size,), self.dtype)
            tail = _buffer("blocked_run_tail", (self.tail_size,), self.dtype)
            _images(x, s0, s1, out, packed, ob, tail, self.kinds, self.geos, self.lays,
                    self.wts, self.taps, self.biases, self.bounds)

        split(share, self.n, self.parts)
        return out
