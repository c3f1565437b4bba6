"""A run of convolutions kept on the blocked layout from one to the next, for
:func:`fastconv.compile`'s plans: mobilenet's depthwise and pointwise layers, the conv pairs of
a VGG-like network with the pools between them, a ResNet's residual blocks.

Each layer's tiles write its blocked output, rows of its input's phase-plane width (as the
forward of :mod:`.blocked` and :mod:`.depthwise_blocked`). Instead of moving that output to
NCHW and packing it again for the next layer, each pixel's vector of V channels, plus the bias
and then ReLU, is written straight to where the next layer's packing would put it (its padding
and stride phases; :func:`.microkernel.move`), or, where a 2x2 max pool follows the layer,
the maximum of each window (:func:`.microkernel.move_max`). Only the run's input is packed
from NCHW and only its last output is unpacked to NCHW (pooled first, or reduced to each
channel's mean, where the network does that next). A residual block's last conv adds the
shortcut in that move: the block's packed input, or a 1x1 projection of it computed by the
tiles from the first conv's packed input (:func:`.microkernel.move_add`). The arithmetic is the
layers' own: the result is the same, bit for bit, as running each layer on the blocked path
alone (and the plans' pools and residual adds after it).

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
from .microkernel import move, move_add, move_add_shifted, move_max

__all__ = ["Conv", "Run", "Shortcut"]


#: What follows a layer of a run: nothing, a 2x2 stride-2 max pool, or (the last layer only)
#: the mean of each channel (``AdaptiveAvgPool2d(1)``).
POOLS = (None, "max", "mean")


class Shortcut:
    """The shortcut of a residual block whose body's first conv is ``back`` layers before the
    conv that adds it: the first conv's input itself (``w`` None), or a 1x1 conv of that input
    (weights (K, C, 1, 1), bias (K,) or None) at the first conv's stride, which must then be a
    3x3 conv with padding 1 (the 1x1 conv reads the pixels under its centre tap)."""

    def __init__(self, back, w=None, b=None):
        self.back, self.w, self.b = int(back), w, b


class Conv:
    """One layer of a run: weights (K, C, FH, FW), or (C, 1, FH, FW) with ``depthwise``;
    bias (K,) or None; its geometry; ReLU after it; then ``pool``, one of :data:`POOLS`.
    ``residual`` (a :class:`Shortcut`): the output, before the ReLU, gets a residual block's
    shortcut added."""

    def __init__(self, w, b, stride, pads, dilation, relu, depthwise=False, pool=None,
                 residual=None):
        self.w, self.b, self.relu, self.depthwise = w, b, bool(relu), bool(depthwise)
        self.pool = "max" if pool is True else (pool or None)
        self.residual = residual
        self.stride, self.pads, self.dilation = tuple(stride), tuple(pads), tuple(dilation)

    def __repr__(self):
        return (f"Conv(w {self.w.shape}, bias {self.b is not None}, stride {self.stride}, "
                f"pads {self.pads}, dilation {self.dilation}, relu {self.relu}, depthwise "
                f"{self.depthwise}, pool {self.pool}, shortcut "
                f"{None if self.residual is None else self.residual.back})")


@njit(nogil=True, cache=True)
def _move_image(ob, plane, wd, ho, wo, k_out, v, bias, relu, pool, dst, lay, offs, res):
    """ob (blocked output: block kb's pixel (oy, ox) at ``(kb*plane + oy*wd + ox)*v``) ->
    dst packed in the layout ``lay``, bias added and ReLU applied, a vector of V channels at
    a time; with ``pool``, the maximum of each 2x2 window (stride 2, the last odd row and
    column dropped) instead of each pixel. ``res`` = (mode, source, layout, plane, width,
    bias): mode 1 adds the pixel of ``source`` packed in ``layout``, mode 2 that of a blocked
    output (``plane``, ``width``) plus ``bias``, before the ReLU."""
    mode, rsrc, rlay, rplane, rwd, rbias = res
    block = lay[0] * lay[1] * lay[2]
    rblock = rlay[0] * rlay[1] * rlay[2]
    step = 2 if pool else 1
    hp, wp = ho // step, wo // step
    row, rrow = offs[:wp], offs[wp:2 * wp]
    for kb in range(-(-k_out // v)):
        for py in range(hp):
            _offsets(py * wp, wp, v, lay, kb * block, row)
            src = (kb * plane + step * py * wd) * v
            if pool:
                for px in range(wp):
                    move_max(ob, src + 2 * px * v, wd * v, dst, row[px], bias, kb * v, relu)
            elif mode == 1:
                _offsets(py * wp, wp, v, rlay, kb * rblock, rrow)
                for px in range(wp):
                    move_add(ob, src + px * v, rsrc, rrow[px], rbias, 0, dst, row[px], bias,
                             kb * v, relu)
            elif mode == 2:
                r0 = (kb * rplane + py * rwd) * v
                for px in range(wp):
                    move_add_shifted(ob, src + px * v, rsrc, r0 + px * v, rbias, kb * v, dst,
                                     row[px], bias, kb * v, relu)
            else:
                for px in range(wp):
                    move(ob, src + px * v, dst, row[px], bias, kb * v, relu)


@njit(nogil=True, cache=True)
def _layer(src, depthwise, wts, taps, geo, ob, bias, relu, dst, lay_next, out, offs, tail,
           zeros, res):
    """One layer of a run for one packed image ``src``: the tiles into ob, then the output
    moved into ``dst`` packed in ``lay_next`` or, where dst is empty (the run's last layer),
    into ``out`` (K, Hout, Wout) NCHW (through ``tail``, scratch, when pooled or added to;
    ``zeros`` a zero bias); ``res`` as in :func:`_move_image`. ``geo`` = (v, kblocks,
    plane_o, length, rem, block_taps, wd, ho, wo, k_out, pool: an index of :data:`POOLS`)."""
    v, kblocks, plane_o, length, rem, block_taps = geo[0], geo[1], geo[2], geo[3], geo[4], \
        geo[5]
    wd, ho, wo, k_out, pool = geo[6], geo[7], geo[8], geo[9], geo[10]
    if depthwise:
        depthwise_tiles(src, wts, ob, taps, kblocks, plane_o, length, v)
    else:
        _tiles(src, wts, ob, taps, kblocks, plane_o * v, wd, wo, length, v, rem, block_taps)
    if dst.shape[0]:
        _move_image(ob, plane_o, wd, ho, wo, k_out, v, bias, relu, pool == 1, dst, lay_next,
                    offs, res)
        return
    if res[0]:  # the residual added (and ReLU applied) into ``tail``, rows of wo, first
        _move_image(ob, plane_o, wd, ho, wo, k_out, v, bias, relu, False, tail,
                    np.array([1, 1, ho * wo * v, wo, 0, 0], dtype=np.int64), offs, res)
        ob, plane_o, wd, bias, relu = tail, ho * wo, wo, zeros, False
    if pool == 2:
        _mean_image(ob, plane_o, wd, ho, wo, k_out, v, bias, relu, out)
    elif pool == 1:  # pooled into ``tail`` (blocked, rows of wo // 2), then to NCHW
        hp, wp = ho // 2, wo // 2
        _move_image(ob, plane_o, wd, ho, wo, k_out, v, bias, relu, True, tail,
                    np.array([1, 1, hp * wp * v, wp, 0, 0], dtype=np.int64), offs,
                    (0, ob, lay_next, 0, 0, zeros))
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
def _images(x, s0, s1, out, packed, ob, tail, short, kinds, geos, lays, wts, taps, biases,
            bounds):
    """Images [s0, s1) of x through every layer of a run, one image at a time (its packed
    inputs stay in cache). Layer i's arrays are slices of the flat ``packed`` (its packed
    input), ``wts``, ``taps`` and ``biases`` between ``bounds[i]`` and ``bounds[i + 1]``
    (columns 0-3; columns 4-6 bound its shortcut's weights, taps and bias, in the same
    arrays after the layers'). ``kinds[i]`` = (depthwise, relu, residual mode (0 none, 1 the
    input of layer ``kinds[i, 3]``, 2 a 1x1 conv of it, into ``short``), that layer, the
    shortcut's output blocks)."""
    layers = kinds.shape[0]
    offs = np.empty(2 * geos[:, 8].max() + 16, dtype=np.int64)
    empty_dst = packed[:0]
    zeros = np.zeros(biases.shape[0], dtype=biases.dtype)
    for n in range(s0, s1):
        first = packed[bounds[0, 0]:bounds[1, 0]]
        _pack(x[n], first, geos[0, 0], lays[0])
        for i in range(layers):
            src = packed[bounds[i, 0]:bounds[i + 1, 0]]
            last = i == layers - 1
            dst = empty_dst if last else packed[bounds[i + 1, 0]:bounds[i + 2, 0]]
            mode, j = kinds[i, 2], kinds[i, 3]
            block_in = packed[bounds[j, 0]:bounds[j + 1, 0]]
            res = (mode, block_in, lays[j], 0, 0, zeros)
            if mode == 2:  # the shortcut's tiles from the block's packed input
                g = geos[j]
                v = g[0]
                _tiles(block_in, wts[bounds[i, 4]:bounds[i + 1, 4]], short,
                       taps[bounds[i, 5]:bounds[i + 1, 5]], kinds[i, 4], g[2] * v, g[6], g[8],
                       g[3], v, g[4], 1)
                res = (mode, short, lays[j], g[2], g[6], biases[bounds[i, 6]:bounds[i + 1, 6]])
            _layer(src, kinds[i, 0] != 0, wts[bounds[i, 1]:bounds[i + 1, 1]],
                   taps[bounds[i, 2]:bounds[i + 1, 2]], geos[i], ob,
                   biases[bounds[i, 3]:bounds[i + 1, 3]], kinds[i, 1], dst,
                   lays[i + 1] if not last else lays[0], out[n], offs, tail, zeros, res)


class Run:
    """Consecutive convs (:class:`Conv`) prepared for inputs of ``x_shape`` (N, C, H, W):
    ``run(x)`` -> the last layer's output (N, K, Hout, Wout), NCHW."""

    def __init__(self, x_shape, convs, dtype):
        self.n, self.dtype = x_shape[0], np.dtype(dtype)
        shape, macs, rows, plans, ins = tuple(x_shape), 0, [], [], []
        wts, taps, biases, geos, lays, kinds, inputs = [], [], [], [], [], [], []
        ob_size, tail_size, short_size, extra = 0, 0, 0, []
        for i, conv in enumerate(convs):
            c = shape[1]
            k, _, fh, fw = conv.w.shape
            pool = "max" if conv.pool is True else (conv.pool or None)
            p = Plan(shape, (c, c, fh, fw) if conv.depthwise else conv.w.shape, conv.stride,
                     conv.pads, conv.dilation, dtype)
            plans.append(p)
            ins.append(shape)
            v = p.v
            blocks = p.cb if conv.depthwise else p.kbp
            wts.append(np.asarray(depthwise_weights(conv.w, p) if conv.depthwise
                                  else p.weights(conv.w), dtype))
            biases.append(_padded(conv.b, k, v, dtype))
            cblocks = -(-c // v)
            taps.append(p.taps())
            geos.append([v, blocks, p.plane_o, p.length, c - (cblocks - 1) * v,
                         taps[-1].shape[0] // cblocks, p.wd, p.ho, p.wo, k,
                         POOLS.index(pool)])
            lays.append(p.x_layout())
            inputs.append((p.c, p.h, p.w, p.x_size) + tuple(lays[-1]))
            kind = [int(conv.depthwise), int(conv.relu), 0, 0, 0]
            if conv.residual is not None:
                kind[2:], more = self._shortcut(i, conv, plans, ins, (p.ho, p.wo, k), dtype)
                extra.append(more)
                if more:
                    short_size = max(short_size, kind[4] * plans[kind[3]].plane_o * v)
                if pool and (pool == "max" or i < len(convs) - 1):
                    raise ValueError("blocked_run.Run: a layer that adds a shortcut cannot pool")
            else:
                extra.append(())
            kinds.append(kind)
            rows.append([p.x_size, wts[-1].size, taps[-1].size, biases[-1].size])
            ob_size = max(ob_size, blocks * p.plane_o * v)
            tail_size = max(tail_size, blocks * p.ho * p.wo * v)
            macs += p.n * p.ho * p.wo * fh * fw * (c if conv.depthwise else c * k)
            if pool == "mean" and conv is not convs[-1]:
                raise ValueError("blocked_run.Run: only the last layer of a run takes means")
            shape = (shape[0], k) + ((1, 1) if pool == "mean" else
                                     (p.ho // 2, p.wo // 2) if pool else (p.ho, p.wo))
        self.out_shape, self.tail_size, self.short_size = shape, tail_size, max(short_size, 1)
        self.parts = _common.conv_parts(macs, self.n, self.n)
        # columns 4-6: each layer's shortcut weights, taps and bias, after all the layers'
        short_rows = [[a.size for a in more] if more else [0, 0, 0] for more in extra]
        self.bounds = np.zeros((len(rows) + 2, 7), dtype=np.int64)
        self.bounds[1:len(rows) + 1, :4] = np.cumsum(rows, axis=0)
        self.bounds[0, 4:] = self.bounds[len(rows), 1:4]
        self.bounds[1:len(rows) + 1, 4:] = self.bounds[0, 4:] + np.cumsum(short_rows, axis=0)
        self.bounds[-1] = self.bounds[-2]
        for more in extra:
            for arrays, a in zip((wts, taps, biases), more):
                arrays.append(a)
        self.wts, self.taps, self.biases = (np.concatenate(a) for a in (wts, taps, biases))
        self.geos, self.lays = np.array(geos, dtype=np.int64), np.array(lays, dtype=np.int64)
        self.kinds, self.ob_size = np.array(kinds, dtype=np.int64), ob_size
        # what decides where the packed inputs are written (the rest stays zero): each
        # layer's input channels, size and layout
        self.key = ("blocked_run", tuple(inputs))

    @staticmethod
    def _shortcut(i, conv, plans, ins, out, dtype):
        """``([mode, source layer, shortcut blocks], (weights, taps, bias) or ())`` of layer
        i's residual add (see :func:`_images`)."""
        short, j = conv.residual, i - conv.residual.back
        if not 0 <= j <= i:
            raise ValueError(f"blocked_run.Run: layer {i}'s shortcut starts outside the run")
        src, shape = plans[j], ins[j]
        if short.w is None:
            if (shape[1], src.h, src.w) != (out[2], out[0], out[1]):
                raise ValueError(f"blocked_run.Run: layer {i}'s output {out} does not match "
                                 f"its block's input {shape}")
            return [1, j, 0], ()
        k = short.w.shape[0]
        if (src.fh, src.fw, src.top, src.left, src.dh, src.dw) != (3, 3, 1, 1, 1, 1) or \
                tuple(short.w.shape[1:]) != (shape[1], 1, 1) or (src.ho, src.wo, k) != out:
            raise ValueError(f"blocked_run.Run: layer {i}'s 1x1 shortcut does not read the "
                             "centre taps of its block's first conv")
        p1 = Plan(shape, short.w.shape, (src.sh, src.sw), (0, 0, 0, 0), (1, 1), dtype)
        centre = src.taps().reshape(src.cb, 3, 3)[:, 1, 1].copy()
        weights = np.asarray(p1.weights(short.w), dtype)
        return [2, j, p1.kbp], (weights, centre, _padded(short.b, k, src.v, dtype))

    def __call__(self, x):
        out = empty(self.out_shape, self.dtype)

        def share(s0, s1):
            # this thread's packed inputs of every layer: zero where nothing is written
            # (padding, lanes past the channels, the slack past the planes)
            packed = _zeroed_buffer(self.key, (self.bounds[-1, 0],), self.dtype)
            ob = _buffer("blocked_run_out", (self.ob_size,), self.dtype)
            tail = _buffer("blocked_run_tail", (self.tail_size,), self.dtype)
            short = _buffer("blocked_run_short", (self.short_size,), self.dtype)
            _images(x, s0, s1, out, packed, ob, tail, short, self.kinds, self.geos,
                    self.lays, self.wts, self.taps, self.biases, self.bounds)

        split(share, self.n, self.parts)
        return out


def _padded(b, k, v, dtype):
    """A bias (K,) or None as K rounded up to V values, zeros past K."""
    bias = np.zeros(-(-k // v) * v, dtype=dtype)
    if b is not None:
        bias[:k] = b
    return bias
