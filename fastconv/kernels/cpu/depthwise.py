"""cpu depthwise convolution (``groups == C``, K = m*C output channels, output channel k reads
input channel ``k // m``): direct Numba kernels over whole (n, c) planes.

A depthwise layer has only FH*FW multiply-adds per output, too few for a GEMM. Each input plane
is copied once into zero-padded phase planes (one per stride phase, :class:`_Phases`), so every
kernel tap reads one contiguous run for any stride, padding and dilation, and each pass is a
long unit-stride loop that LLVM vectorises (rows of 7 to 28 outputs leave most lanes idle).
Passes take up to six taps at a time, so the output run is loaded and stored once per pass.
The input gradient is the same gather run backwards (a correlation of dout, laid out in the
phase planes' width, with the taps of each phase), so it vectorises alike.

Layers with one filter per channel and at least a vector of channels (V lanes: 16 float32
with AVX-512) run on the blocked layout instead, forward and backward (:mod:`.depthwise_blocked`:
a tap is a vector FMA across channels, the sums in registers; per-layer timings against these
kernels: ``benchmarks/results-2026-12-07-depthwise-blocked.md``).

The planes are split across the threads of :mod:`fastconv.kernels._workers`; backward gives
each plane its own partial dW and db, summed over the images in a fixed order afterwards, so
results do not depend on the thread count.
"""
import functools

import numpy as np
from numba import njit

from ..._shapes import conv_output_hw
from .. import naive
from .._memory import empty
from .._workers import split
from . import _common, depthwise_blocked
from .depthwise_flat import (Flat, _gather, _store, _tap_dots, _unit, flat_backward_kernel,
                             flat_forward_kernel)


#: Images of one channel are stacked into one run of about this many values, so that each pass
#: runs long (planes of 7x7 are 63 values a phase) and its setup is paid once per stack.
STACK_VALUES = 2**14


class _Phases:
    """Where a depthwise layer's taps read. Each input plane, zero-padded, is split into
    ``sh*sw`` phase planes of ``hq`` rows of ``wq`` (phase (py, px) holds the padded rows
    ``py::sh`` and columns ``px::sw``), and the planes of ``stack`` images of one channel follow
    each other in one run. An output plane is computed ``hq`` rows of ``wq`` wide at the same
    place (its spare rows and columns dropped), so tap t = (fy, fx) reads phase ``ph[t]`` from
    flat offset ``off[t]`` on: one contiguous run for any stride, padding and dilation. A valid
    output never reads past its own image's rows; ``pre`` (the largest offset) spare values end
    the run.

    For the input gradient, dout sits ``pre`` values into a zeroed run laid out the same way, and
    phase ``p`` gathers the taps ``order[starts[p]:starts[p + 1]]`` from ``back[t] = pre - off[t]``.
    """

    def __init__(self, x_shape, w_shape, stride, pads, dilation, stack_values):
        n, _, h, wd = x_shape
        fh, fw = w_shape[2:]
        (sh, sw), (dh, dw) = stride, dilation
        self.ho, self.wo = conv_output_hw((h, wd), (fh, fw), stride, pads, dilation)
        hq = -(-(h + pads[0] + pads[1]) // sh)
        wq = -(-(wd + pads[2] + pads[3]) // sw)
        taps = [(fy * dh, fx * dw) for fy in range(fh) for fx in range(fw)]
        ph = np.array([(a % sh) * sw + b % sw for a, b in taps], dtype=np.int64)
        off = np.array([(a // sh) * wq + b // sw for a, b in taps], dtype=np.int64)
        order = np.argsort(ph, kind="stable")
        starts = np.searchsorted(ph[order], np.arange(sh * sw + 1))
        pre = int(off.max())
        stack = max(1, min(n, stack_values // max(sh * sw * hq * wq, 1)))
        self.stacks = -(-n // stack) if n else 0
        self.args = (sh, sw, pads[0], pads[2], hq, wq, stack, pre, ph, off)
        self.back = (pre - off, order, starts)


@njit(nogil=True, cache=True)
def _pack(x, n0, n1, c, sh, sw, top, left, hq, wq, q):
    """Place the planes x[n0:n1, c] (H, W) into the phase planes q (sh*sw, run) (see
    :class:`_Phases`); the padding around them is never written, so it stays as the caller
    zeroed it."""
    h, wd = x.shape[2], x.shape[3]
    for n in range(n0, n1):
        plane = (n - n0) * hq * wq
        for y in range(h):
            row = x[n, c, y]
            yy = y + top
            base = plane + (yy // sh) * wq
            for px in range(sw):
                x0 = (px - left) % sw
                dst = q[(yy % sh) * sw + px, base + (x0 + left) // sw:]
                if sw == 1:  # a contiguous copy (vectorised)
                    for j in range(wd):
                        dst[j] = row[j]
                else:
                    for j in range((wd - x0 + sw - 1) // sw):
                        dst[j] = row[x0 + j * sw]


@njit(inline="always")
def _unpack_rows(src, wq, dst, relu):
    """dst (Ho, Wo) = the first Wo values of each row of ``wq`` in src (ReLU applied when
    ``relu``). Every row but the last copies all ``wq`` values (a full vector for LLVM, no scalar
    tail): the spare ones land on the start of the next row, which its own copy then overwrites."""
    ho, wo = dst.shape
    flat = dst.reshape(ho * wo)
    for oh in range(ho):
        count = wq if oh < ho - 1 and wq <= 2 * wo else wo
        _store(flat[oh * wo:oh * wo + count], src[oh * wq:oh * wq + count], count, relu)


@njit(nogil=True, cache=True, fastmath={"contract"})
def _forward_kernel(x, w, b, sh, sw, top, left, hq, wq, stack, pre, ph, off, relu, out, u0, u1):
    """Units ``u0 <= c*S + s < u1`` (S stacks of ``stack`` images): out[n, c*m:(c+1)*m] of the
    stack's images n from x[n, c] (see :class:`_Phases`), then ReLU when ``relu``.

    x (N, C, H, W), w (m*C, T) with T = FH*FW taps, b (m*C,), out (N, m*C, Hout, Wout).
    """
    n_img, c_in = x.shape[0], x.shape[1]
    k_out = w.shape[0]
    ho, wo = out.shape[2], out.shape[3]
    m = k_out // c_in
    stacks = -(-n_img // stack)
    q = np.zeros((sh * sw, stack * hq * wq + pre), dtype=x.dtype)
    acc = np.empty(stack * hq * wq, dtype=x.dtype)
    taps = np.arange(w.shape[1])
    for u in range(u0, u1):
        c, _, n0, n1 = _unit(u, stacks, stack, n_img)
        _pack(x, n0, n1, c, sh, sw, top, left, hq, wq, q)
        for k in range(c * m, c * m + m):
            _gather(acc, (n1 - n0) * hq * wq, q, ph, off, w[k], taps, False, b[k])
            for n in range(n0, n1):
                _unpack_rows(acc[(n - n0) * hq * wq:], wq, out[n, k], relu)


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _backward_kernel(dout, x, w, sh, sw, top, left, hq, wq, stack, pre, ph, off, back, order,
                     starts, need_dx, dx, dwp, dbp, u0, u1):
    """Units ``u0 <= c*S + s < u1`` as :func:`_forward_kernel`: dx[n, c] (when ``need_dx``) and
    the stack's partial gradients dwp[s, k] (T,) and dbp[s, k] for its m output channels k.

    dout is laid out as the output, ``pre`` values into a zeroed run g, so each tap's dW is one
    dot product over its run and each phase of dx one :func:`_gather` of g. "reassoc" lets LLVM
    vectorise the dot products (a fixed order per build, whatever the thread count).
    """
    n_img, c_in, h, wd = x.shape
    k_out, n_taps = w.shape
    ho, wo = dout.shape[2], dout.shape[3]
    m = k_out // c_in
    stacks = -(-n_img // stack)
    size = stack * hq * wq
    zero = dwp.dtype.type(0)
    q = np.zeros((sh * sw, size + pre), dtype=x.dtype)
    dq = np.empty((sh * sw, size), dtype=x.dtype)
    g2 = np.zeros((1, pre + size), dtype=x.dtype)
    g = g2[0, pre:]
    rows = np.zeros(n_taps, dtype=np.int64)
    for u in range(u0, u1):
        c, s, n0, n1 = _unit(u, stacks, stack, n_img)
        length = (n1 - n0) * hq * wq
        _pack(x, n0, n1, c, sh, sw, top, left, hq, wq, q)
        for k in range(c * m, c * m + m):
            for n in range(n0, n1):
                for oh in range(ho):
                    row, part = dout[n, k, oh], g[((n - n0) * hq + oh) * wq:]
                    for j in range(wo):
                        part[j] = row[j]
            dbp[s, k] = _tap_dots(g2, rows, pre, length, q, ph, off, dwp[s, k])
            if need_dx:
                for pp in range(sh * sw):
                    _gather(dq[pp], length, g2, rows, back, w[k], order[starts[pp]:starts[pp + 1]],
                            k > c * m, zero)
        if need_dx:
            for n in range(n0, n1):
                plane = (n - n0) * hq * wq
                for y in range(h):
                    yy = y + top
                    base = plane + (yy // sh) * wq
                    row = dx[n, c, y]
                    for px in range(sw):
                        x0 = (px - left) % sw
                        src = dq[(yy % sh) * sw + px, base + (x0 + left) // sw:]
                        for j in range((wd - x0 + sw - 1) // sw):
                            row[x0 + j * sw] = src[j]


def _parts(work):
    """Thread shares for ``work`` multiply-adds: all the threads when a split pays, else one."""
    return None if work >= _common.SPLIT_ELEMENTS else 1


def _geometry(x_shape, w_shape, stride, pads, dilation):
    """The layout of the path that applies: :class:`.depthwise_flat.Flat` (output rows of W / sw),
    else :class:`_Phases`; kept per geometry (building one costs about 0.1 ms of NumPy, a
    training step asks twice per layer)."""
    return _layout(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(pads), tuple(dilation),
                   STACK_VALUES)


@functools.lru_cache(maxsize=256)
def _layout(x_shape, w_shape, stride, pads, dilation, stack_values):
    if Flat.applies(x_shape, w_shape, stride, pads, dilation):
        return Flat(x_shape, w_shape, stride, pads, dilation, stack_values)
    return _Phases(x_shape, w_shape, stride, pads, dilation, stack_values)


def depthwise_conv2d(x, w, b, stride, pads, dilation):
    """x (N, C, H, W), w (m*C, 1, FH, FW), b (m*C,) or None -> (out (N, m*C, Hout, Wout), None)."""
    return forward(x, w, b, stride, pads, dilation), None


def forward(x, w, b, stride, pads, dilation, relu=False):
    """:func:`depthwise_conv2d`'s output, with ReLU applied as each plane is stored when ``relu``
    (the fused store of :func:`fastconv.compile`'s plans)."""
    n_img, c = x.shape[:2]
    k, _, fh, fw = w.shape
    if depthwise_blocked.applies(x.shape, w.shape, x.dtype) and x.size and min(conv_output_hw(
            x.shape[2:], (fh, fw), stride, pads, dilation)) > 0:
        return depthwise_blocked.Forward(x.shape, w, b, stride, pads, dilation)(x, relu)
    geo = _geometry(x.shape, w.shape, stride, pads, dilation)
    out = empty((n_img, k, geo.ho, geo.wo), dtype=x.dtype)
    if out.size == 0:
        return out
    x, w2 = np.ascontiguousarray(x), np.ascontiguousarray(w.reshape(k, fh * fw))
    bias = b if b is not None else np.zeros(k, dtype=x.dtype)
    kernel = flat_forward_kernel if isinstance(geo, Flat) else _forward_kernel
    relu = bool(relu)
    split(lambda u0, u1: kernel(x, w2, bias, *geo.args, relu, out, u0, u1),
          c * geo.stacks, _parts(out.size * fh * fw))
    return out


def depthwise_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, saved, need_dx):
    """Gradients of :func:`depthwise_conv2d`: dout (N, m*C, Hout, Wout) -> (dx, dw, db).

    The kernels also multiply the zeros around dout (its spare columns and the zeroed run): an
    inf or NaN in w, or in x where only those zeros meet it, would give NaN where the sum over the
    valid positions has none. So an inf or NaN w, and a dW that is not finite (every value of x
    that a tap reads is in some dW sum), take the naive tier's gradients, which add only the
    valid positions.
    """
    if x.size == 0 or dout.size == 0 or not np.isfinite(w).all():
        return naive.depthwise_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, saved,
                                               need_dx)
    if depthwise_blocked.applies(x.shape, w.shape, x.dtype):
        dx, dw, db = depthwise_blocked.backward(dout, x, w, has_bias, stride, pads, dilation,
                                                need_dx)
    else:
        dx, dw, db = _plane_backward(dout, x, w, has_bias, stride, pads, dilation, need_dx)
    if not np.isfinite(dw).all():
        return naive.depthwise_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, saved,
                                               need_dx)
    return dx, dw, db


def _plane_backward(dout, x, w, has_bias, stride, pads, dilation, need_dx):
    """:func:`depthwise_conv2d_backward` on NCHW planes (either layout of :func:`_geometry`)."""
    c = x.shape[1]
    k, _, fh, fw = w.shape
    geo = _geometry(x.shape, w.shape, stride, pads, dilation)
    x, dout = np.ascontiguousarray(x), np.ascontiguousarray(dout)
    w2 = np.ascontiguousarray(w.reshape(k, fh * fw))
    dx = empty(x.shape, dtype=x.dtype) if need_dx else np.zeros((1, 1, 1, 1), dtype=x.dtype)
    dwp = empty((geo.stacks, k, fh * fw), dtype=w.dtype)
    dbp = empty((geo.stacks, k), dtype=w.dtype)
    if isinstance(geo, Flat):
        def run(u0, u1):
            flat_backward_kernel(dout, x, w2, *geo.args, need_dx, dx, dwp, dbp, u0, u1)
    else:
        def run(u0, u1):
            _backward_kernel(dout, x, w2, *geo.args, *geo.back, need_dx, dx, dwp, dbp, u0, u1)
    split(run, c * geo.stacks, _parts(dout.size * fh * fw))
    # per-stack partials summed in order (stacks depend on the shapes): the same bits for any
    # thread count
    db = dbp.sum(axis=0) if has_bias else None
    return (dx if need_dx else None), dwp.sum(axis=0).reshape(w.shape), db
